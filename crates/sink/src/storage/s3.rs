//! A small S3 client for exactly what an export needs, on `reqwest` and our own SigV4
//! signer: PutObject (also conditional, `If-None-Match: *`), GetObject, HeadObject,
//! DeleteObject, ListObjectsV2, the multipart calls and ListMultipartUploads, CreateBucket.
//!
//! Uploads send fixed parts of `part_size` bytes (the last may be smaller); an upload that
//! never filled one part becomes a single PutObject. Written bytes are queued as they come
//! (no copy) and a part is cut from them only when it is full: a chunk that covers a whole
//! part is sent as a slice of itself, smaller chunks are copied once into a buffer of
//! exactly the part size. Parts in flight are capped per upload (`max_parts_in_flight`) and
//! across every upload of one storage (`max_parts_in_flight_total`), so several files
//! written at once hold at most `uploads + max_parts_in_flight_total` parts. Any failure aborts the multipart upload,
//! and so does dropping an upload without completing it (the abort is spawned on the
//! runtime). Requests are retried with exponential backoff and full jitter on 5xx, 429,
//! `SlowDown`/`RequestTimeout` and connection errors. Credentials never appear in errors or
//! logs.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use http::{HeaderMap, HeaderName, HeaderValue, Method};
use rand::Rng;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use spillway_api::S3Destination;
use spillway_sigv4::{Credentials, Payload, sign, uri_encode};

use super::{ObjectInfo, Storage, Upload, check_key};
use crate::error::SinkError;

/// The S3 minimum part size (except the last part).
pub const MIN_PART_SIZE: usize = 5 << 20;
/// Default part size when none is configured.
pub const DEFAULT_PART_SIZE: usize = 5 << 20;
/// Default cap on parts in flight across all uploads of one storage.
pub const DEFAULT_MAX_PARTS_IN_FLIGHT_TOTAL: usize = 4;

/// Where and how to reach a bucket.
#[derive(Clone, Debug)]
pub struct S3Config {
    /// `http(s)://host[:port]`; AWS S3 of `region` when built from a destination without one.
    pub endpoint: String,
    pub bucket: String,
    /// The destination's key prefix; only shown by `describe` (run keys already contain it).
    pub prefix: String,
    pub region: String,
    /// `endpoint/bucket/key` instead of `bucket.endpoint/key`.
    pub path_style: bool,
    /// Multipart part size in bytes (at least 5 MiB).
    pub part_size: usize,
    /// Parts of one upload sent concurrently.
    pub max_parts_in_flight: usize,
    /// Parts sent concurrently by all uploads of this storage together (a worker's shard
    /// slots share one storage). Upload memory is at most one filling part per upload plus
    /// this many parts in flight: `(uploads + max_parts_in_flight_total) * part_size`.
    pub max_parts_in_flight_total: usize,
    /// `max-keys` of ListObjectsV2 / `max-uploads` of ListMultipartUploads pages.
    pub list_page_size: Option<u32>,
    /// Attempts per request (first try included).
    pub max_attempts: u32,
    /// First backoff delay; doubled per retry up to `max_backoff`, with full jitter.
    pub base_backoff: Duration,
    pub max_backoff: Duration,
}

impl S3Config {
    pub fn new(endpoint: impl Into<String>, bucket: impl Into<String>) -> Self {
        S3Config {
            endpoint: endpoint.into(),
            bucket: bucket.into(),
            prefix: String::new(),
            region: "us-east-1".into(),
            path_style: true,
            part_size: DEFAULT_PART_SIZE,
            max_parts_in_flight: 2,
            max_parts_in_flight_total: DEFAULT_MAX_PARTS_IN_FLIGHT_TOTAL,
            list_page_size: None,
            max_attempts: 6,
            base_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(5),
        }
    }

    pub fn from_destination(d: &S3Destination) -> Result<Self, SinkError> {
        let endpoint = match d.endpoint.as_deref().filter(|e| !e.is_empty()) {
            Some(e) => e.to_string(),
            None => format!("https://s3.{}.amazonaws.com", d.region),
        };
        let mut c = S3Config::new(endpoint, d.bucket.clone());
        c.prefix = d.prefix.clone();
        c.region = d.region.clone();
        c.path_style = d.force_path_style;
        Ok(c)
    }
}

struct Inner {
    cfg: S3Config,
    creds: Credentials,
    http: reqwest::Client,
    scheme: String,
    authority: String,
    /// One permit per part that may be in flight across all uploads.
    part_budget: Arc<tokio::sync::Semaphore>,
    /// Parts currently waiting for a permit of `part_budget`.
    parts_waiting: AtomicUsize,
}

/// S3 or S3-compatible storage rooted at a bucket.
#[derive(Clone)]
pub struct S3Storage {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for S3Storage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Storage")
            .field("endpoint", &self.inner.cfg.endpoint)
            .field("bucket", &self.inner.cfg.bucket)
            .field("access_key_id", &self.inner.creds.access_key_id)
            .finish_non_exhaustive()
    }
}

struct RawResponse {
    status: u16,
    headers: HeaderMap,
    body: Bytes,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
struct ErrorXml {
    code: Option<String>,
    message: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ListBucketResult {
    #[serde(default)]
    contents: Vec<ContentsXml>,
    #[serde(default)]
    is_truncated: bool,
    next_continuation_token: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ContentsXml {
    key: String,
    size: u64,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct InitiateXml {
    upload_id: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ListUploadsResult {
    #[serde(default)]
    upload: Vec<UploadXml>,
    #[serde(default)]
    is_truncated: bool,
    next_key_marker: Option<String>,
    next_upload_id_marker: Option<String>,
}

/// What HeadObject tells about an object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectHead {
    pub size: u64,
    pub etag: String,
}

/// One unfinished multipart upload.
#[derive(Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "PascalCase")]
pub struct UploadXml {
    pub key: String,
    pub upload_id: String,
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

impl S3Storage {
    pub fn new(cfg: S3Config, creds: Credentials) -> Result<Self, SinkError> {
        // reqwest is built without a default crypto provider; the binary installs ring once.
        let _ = rustls::crypto::ring::default_provider().install_default();
        if cfg.part_size < MIN_PART_SIZE {
            return Err(SinkError::Destination(format!(
                "part size {} is below the S3 minimum of 5 MiB (5242880 bytes)",
                cfg.part_size
            )));
        }
        let url = reqwest::Url::parse(&cfg.endpoint).map_err(|e| {
            SinkError::Destination(format!(
                "S3 endpoint {:?} is not a URL ({e}); use e.g. http://127.0.0.1:8333",
                cfg.endpoint
            ))
        })?;
        let scheme = url.scheme().to_string();
        if scheme != "http" && scheme != "https" {
            return Err(SinkError::Destination(format!(
                "S3 endpoint {:?} must start with http:// or https://",
                cfg.endpoint
            )));
        }
        let host = url.host_str().ok_or_else(|| {
            SinkError::Destination(format!("S3 endpoint {:?} has no host", cfg.endpoint))
        })?;
        let authority = match url.port() {
            Some(p) => format!("{host}:{p}"),
            None => host.to_string(),
        };
        if cfg.bucket.is_empty() {
            return Err(SinkError::Destination("the S3 bucket name is empty".into()));
        }
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .read_timeout(Duration::from_secs(120))
            .build()
            .map_err(|e| SinkError::Destination(format!("cannot build the HTTP client: {e}")))?;
        let part_budget = Arc::new(tokio::sync::Semaphore::new(
            cfg.max_parts_in_flight_total.max(1),
        ));
        Ok(S3Storage {
            inner: Arc::new(Inner {
                cfg,
                creds,
                http,
                scheme,
                authority,
                part_budget,
                parts_waiting: AtomicUsize::new(0),
            }),
        })
    }

    pub fn config(&self) -> &S3Config {
        &self.inner.cfg
    }

    /// Parts being sent right now by all uploads of this storage.
    pub fn parts_in_flight(&self) -> usize {
        self.inner.cfg.max_parts_in_flight_total.max(1) - self.inner.part_budget.available_permits()
    }

    /// Full parts held back because `max_parts_in_flight_total` parts are in flight.
    pub fn parts_waiting(&self) -> usize {
        self.inner.parts_waiting.load(Ordering::Relaxed)
    }

    /// Creates the bucket; an existing bucket owned by the caller is fine.
    pub async fn create_bucket(&self) -> Result<(), SinkError> {
        let r = self
            .inner
            .send("CreateBucket", Method::PUT, None, &[], vec![], Bytes::new())
            .await?;
        match r.status {
            200..=299 => Ok(()),
            409 if error_code(&r.body).as_deref() == Some("BucketAlreadyOwnedByYou") => Ok(()),
            _ => Err(self.inner.error("CreateBucket", "", &r)),
        }
    }

    /// Size of the object, or `None` when it does not exist.
    pub async fn head(&self, key: &str) -> Result<Option<u64>, SinkError> {
        Ok(self.head_object(key).await?.map(|h| h.size))
    }

    /// Size and ETag of the object (a multipart object's ETag ends in `-<parts>`).
    pub async fn head_object(&self, key: &str) -> Result<Option<ObjectHead>, SinkError> {
        check_key(key)?;
        let r = self
            .inner
            .send(
                "HeadObject",
                Method::HEAD,
                Some(key),
                &[],
                vec![],
                Bytes::new(),
            )
            .await?;
        match r.status {
            200..=299 => Ok(Some(ObjectHead {
                size: r
                    .headers
                    .get(http::header::CONTENT_LENGTH)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0),
                etag: r
                    .headers
                    .get(http::header::ETAG)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_string(),
            })),
            404 => Ok(None),
            _ => Err(self.inner.error("HeadObject", key, &r)),
        }
    }

    /// Unfinished multipart uploads under `prefix` (all pages).
    pub async fn list_multipart_uploads(&self, prefix: &str) -> Result<Vec<UploadXml>, SinkError> {
        let mut out = Vec::new();
        let mut key_marker: Option<String> = None;
        let mut id_marker: Option<String> = None;
        loop {
            let mut q: Vec<(&str, String)> = vec![("uploads", String::new())];
            q.push(("prefix", prefix.to_string()));
            if let Some(n) = self.inner.cfg.list_page_size {
                q.push(("max-uploads", n.to_string()));
            }
            if let Some(k) = &key_marker {
                q.push(("key-marker", k.clone()));
            }
            if let Some(u) = &id_marker {
                q.push(("upload-id-marker", u.clone()));
            }
            let q: Vec<(&str, &str)> = q.iter().map(|(k, v)| (*k, v.as_str())).collect();
            let r = self
                .inner
                .send(
                    "ListMultipartUploads",
                    Method::GET,
                    None,
                    &q,
                    vec![],
                    Bytes::new(),
                )
                .await?;
            if !(200..300).contains(&r.status) {
                return Err(self.inner.error("ListMultipartUploads", prefix, &r));
            }
            let page: ListUploadsResult = parse_xml("ListMultipartUploads", &r.body)?;
            out.extend(page.upload);
            if !page.is_truncated {
                break;
            }
            match (page.next_key_marker, page.next_upload_id_marker) {
                (Some(k), u) if Some(&k) != key_marker.as_ref() || u != id_marker => {
                    key_marker = Some(k);
                    id_marker = u;
                }
                _ => break,
            }
        }
        Ok(out)
    }

    async fn abort_upload(&self, key: &str, upload_id: &str) -> Result<(), SinkError> {
        self.inner.abort_upload(key, upload_id).await
    }
}

fn error_code(body: &[u8]) -> Option<String> {
    quick_xml::de::from_reader::<_, ErrorXml>(body).ok()?.code
}

fn parse_xml<T: for<'de> Deserialize<'de>>(op: &'static str, body: &[u8]) -> Result<T, SinkError> {
    quick_xml::de::from_reader(body).map_err(|e| SinkError::S3Response {
        op,
        reason: format!("invalid XML ({e})"),
    })
}

impl Inner {
    fn url(&self, key: Option<&str>, query: &[(&str, &str)]) -> String {
        let mut url = if self.cfg.path_style {
            format!(
                "{}://{}/{}",
                self.scheme,
                self.authority,
                uri_encode(&self.cfg.bucket, false)
            )
        } else {
            format!("{}://{}.{}", self.scheme, self.cfg.bucket, self.authority)
        };
        match key {
            Some(k) => {
                url.push('/');
                url.push_str(&uri_encode(k, true));
            }
            None if !self.cfg.path_style => url.push('/'),
            None => {}
        }
        if !query.is_empty() {
            url.push('?');
            for (i, (k, v)) in query.iter().enumerate() {
                if i > 0 {
                    url.push('&');
                }
                url.push_str(&uri_encode(k, false));
                if !v.is_empty() || *k != "uploads" {
                    url.push('=');
                    url.push_str(&uri_encode(v, false));
                }
            }
        }
        url
    }

    fn error(&self, op: &'static str, key: &str, r: &RawResponse) -> SinkError {
        let parsed: ErrorXml = quick_xml::de::from_reader(&r.body[..]).unwrap_or_default();
        let code = parsed.code.or_else(|| match r.status {
            404 => Some("NotFound".into()),
            403 => Some("AccessDenied".into()),
            412 => Some("PreconditionFailed".into()),
            _ => None,
        });
        let message = parsed.message.unwrap_or_else(|| {
            if r.body.is_empty() {
                "no error details in the response".into()
            } else {
                String::from_utf8_lossy(&r.body[..r.body.len().min(300)]).into_owned()
            }
        });
        SinkError::S3 {
            op,
            bucket: self.cfg.bucket.clone(),
            key: key.to_string(),
            status: r.status,
            code,
            message,
        }
    }

    fn backoff(&self, attempt: u32) -> Duration {
        let exp = self
            .cfg
            .base_backoff
            .saturating_mul(1u32 << attempt.min(16))
            .min(self.cfg.max_backoff);
        let ms = exp.as_millis() as u64;
        Duration::from_millis(rand::rng().random_range(0..=ms.max(1)))
    }

    /// Sends a signed request, retrying transient failures. Non-retryable HTTP errors are
    /// returned as responses for the caller to interpret.
    async fn send(
        &self,
        op: &'static str,
        method: Method,
        key: Option<&str>,
        query: &[(&str, &str)],
        extra_headers: Vec<(HeaderName, HeaderValue)>,
        body: Bytes,
    ) -> Result<RawResponse, SinkError> {
        let url = self.url(key, query);
        let uri: http::Uri =
            url.parse()
                .map_err(|_: http::uri::InvalidUri| SinkError::InvalidKey {
                    key: key.unwrap_or_default().to_string(),
                    reason: "it cannot be part of a URL",
                })?;
        let payload_hash = hex::encode(Sha256::digest(&body));
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            let mut headers = HeaderMap::new();
            for (k, v) in &extra_headers {
                headers.insert(k.clone(), v.clone());
            }
            sign(
                &method,
                &uri,
                &mut headers,
                Payload::Precomputed(&payload_hash),
                &self.creds,
                &self.cfg.region,
                "s3",
                chrono::Utc::now(),
            )
            .map_err(|e| SinkError::Credentials {
                what: format!("s3://{}", self.cfg.bucket),
                reason: e.to_string(),
            })?;
            let req = self
                .http
                .request(method.clone(), &url)
                .headers(headers)
                .body(body.clone());
            let outcome = match req.send().await {
                Ok(resp) => {
                    let status = resp.status().as_u16();
                    let headers = resp.headers().clone();
                    match resp.bytes().await {
                        Ok(b) => Ok(RawResponse {
                            status,
                            headers,
                            body: b,
                        }),
                        Err(e) => Err(e),
                    }
                }
                Err(e) => Err(e),
            };
            match outcome {
                Ok(r) => {
                    let retryable = r.status >= 500
                        || r.status == 429
                        || (r.status == 400
                            && error_code(&r.body).as_deref() == Some("RequestTimeout"));
                    if retryable && attempt < self.cfg.max_attempts {
                        tracing::warn!(
                            op,
                            bucket = %self.cfg.bucket,
                            key = key.unwrap_or(""),
                            status = r.status,
                            attempt,
                            "S3 request failed, retrying"
                        );
                        tokio::time::sleep(self.backoff(attempt)).await;
                        continue;
                    }
                    return Ok(r);
                }
                Err(e) => {
                    if attempt < self.cfg.max_attempts {
                        tracing::warn!(
                            op,
                            bucket = %self.cfg.bucket,
                            key = key.unwrap_or(""),
                            attempt,
                            error = %e,
                            "S3 request could not be sent, retrying"
                        );
                        tokio::time::sleep(self.backoff(attempt)).await;
                        continue;
                    }
                    return Err(SinkError::S3Transport {
                        op,
                        bucket: self.cfg.bucket.clone(),
                        key: key.unwrap_or_default().to_string(),
                        endpoint: self.cfg.endpoint.clone(),
                        attempts: attempt,
                        reason: error_chain(&e),
                    });
                }
            }
        }
    }

    async fn put_object(
        &self,
        key: &str,
        body: Bytes,
        if_none_match: bool,
    ) -> Result<bool, SinkError> {
        let mut h = vec![];
        if if_none_match {
            h.push((http::header::IF_NONE_MATCH, HeaderValue::from_static("*")));
        }
        let r = self
            .send("PutObject", Method::PUT, Some(key), &[], h, body)
            .await?;
        match r.status {
            200..=299 => Ok(true),
            412 if if_none_match => Ok(false),
            _ => Err(self.error("PutObject", key, &r)),
        }
    }

    async fn create_multipart(&self, key: &str) -> Result<String, SinkError> {
        let r = self
            .send(
                "CreateMultipartUpload",
                Method::POST,
                Some(key),
                &[("uploads", "")],
                vec![],
                Bytes::new(),
            )
            .await?;
        if !(200..300).contains(&r.status) {
            return Err(self.error("CreateMultipartUpload", key, &r));
        }
        Ok(parse_xml::<InitiateXml>("CreateMultipartUpload", &r.body)?.upload_id)
    }

    async fn upload_part(
        &self,
        key: &str,
        upload_id: &str,
        n: u32,
        body: Bytes,
    ) -> Result<String, SinkError> {
        let n_s = n.to_string();
        let r = self
            .send(
                "UploadPart",
                Method::PUT,
                Some(key),
                &[("partNumber", &n_s), ("uploadId", upload_id)],
                vec![],
                body,
            )
            .await?;
        if !(200..300).contains(&r.status) {
            return Err(self.error("UploadPart", key, &r));
        }
        r.headers
            .get(http::header::ETAG)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
            .ok_or(SinkError::S3Response {
                op: "UploadPart",
                reason: "no ETag header in the response".into(),
            })
    }

    async fn complete_multipart(
        &self,
        key: &str,
        upload_id: &str,
        parts: &[(u32, String)],
    ) -> Result<(), SinkError> {
        let mut xml = String::from("<CompleteMultipartUpload>");
        for (n, etag) in parts {
            let _ = write!(
                xml,
                "<Part><PartNumber>{n}</PartNumber><ETag>{}</ETag></Part>",
                xml_escape(etag)
            );
        }
        xml.push_str("</CompleteMultipartUpload>");
        let body = Bytes::from(xml);
        let mut attempt = 0;
        loop {
            attempt += 1;
            let r = self
                .send(
                    "CompleteMultipartUpload",
                    Method::POST,
                    Some(key),
                    &[("uploadId", upload_id)],
                    vec![(
                        http::header::CONTENT_TYPE,
                        HeaderValue::from_static("application/xml"),
                    )],
                    body.clone(),
                )
                .await?;
            // S3 may answer 200 with an <Error> body; transient ones are retried.
            let code = error_code(&r.body)
                .filter(|_| std::str::from_utf8(&r.body).is_ok_and(|s| s.contains("<Error>")));
            if (200..300).contains(&r.status) && code.is_none() {
                return Ok(());
            }
            let transient = matches!(
                code.as_deref(),
                Some("InternalError" | "SlowDown" | "ServiceUnavailable")
            );
            if transient && attempt < self.cfg.max_attempts {
                tokio::time::sleep(self.backoff(attempt)).await;
                continue;
            }
            return Err(self.error("CompleteMultipartUpload", key, &r));
        }
    }

    async fn abort_upload(&self, key: &str, upload_id: &str) -> Result<(), SinkError> {
        let r = self
            .send(
                "AbortMultipartUpload",
                Method::DELETE,
                Some(key),
                &[("uploadId", upload_id)],
                vec![],
                Bytes::new(),
            )
            .await?;
        match r.status {
            200..=299 | 404 => Ok(()),
            _ => Err(self.error("AbortMultipartUpload", key, &r)),
        }
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(inner) = src {
        let _ = write!(s, ": {inner}");
        src = inner.source();
    }
    s
}

#[async_trait]
impl Storage for S3Storage {
    async fn put(&self, key: &str, body: Bytes) -> Result<(), SinkError> {
        check_key(key)?;
        self.inner.put_object(key, body, false).await.map(|_| ())
    }

    async fn put_if_absent(&self, key: &str, body: Bytes) -> Result<bool, SinkError> {
        check_key(key)?;
        self.inner.put_object(key, body, true).await
    }

    async fn get(&self, key: &str) -> Result<Option<Bytes>, SinkError> {
        check_key(key)?;
        let r = self
            .inner
            .send(
                "GetObject",
                Method::GET,
                Some(key),
                &[],
                vec![],
                Bytes::new(),
            )
            .await?;
        match r.status {
            200..=299 => Ok(Some(r.body)),
            404 => Ok(None),
            _ => Err(self.inner.error("GetObject", key, &r)),
        }
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, SinkError> {
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let mut q: Vec<(&str, String)> =
                vec![("list-type", "2".into()), ("prefix", prefix.to_string())];
            if let Some(n) = self.inner.cfg.list_page_size {
                q.push(("max-keys", n.to_string()));
            }
            if let Some(t) = &token {
                q.push(("continuation-token", t.clone()));
            }
            let q: Vec<(&str, &str)> = q.iter().map(|(k, v)| (*k, v.as_str())).collect();
            let r = self
                .inner
                .send("ListObjectsV2", Method::GET, None, &q, vec![], Bytes::new())
                .await?;
            if !(200..300).contains(&r.status) {
                return Err(self.inner.error("ListObjectsV2", prefix, &r));
            }
            let page: ListBucketResult = parse_xml("ListObjectsV2", &r.body)?;
            out.extend(page.contents.into_iter().map(|c| ObjectInfo {
                key: c.key,
                size: c.size,
            }));
            match (page.is_truncated, page.next_continuation_token) {
                (true, Some(t)) if Some(&t) != token.as_ref() => token = Some(t),
                _ => break,
            }
        }
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    async fn delete(&self, key: &str) -> Result<(), SinkError> {
        check_key(key)?;
        let r = self
            .inner
            .send(
                "DeleteObject",
                Method::DELETE,
                Some(key),
                &[],
                vec![],
                Bytes::new(),
            )
            .await?;
        match r.status {
            200..=299 | 404 => Ok(()),
            _ => Err(self.inner.error("DeleteObject", key, &r)),
        }
    }

    async fn begin_upload(&self, key: &str) -> Result<Box<dyn Upload>, SinkError> {
        check_key(key)?;
        Ok(Box::new(S3Upload {
            inner: self.inner.clone(),
            key: key.to_string(),
            pending: PendingBytes::default(),
            upload_id: None,
            next_part: 0,
            in_flight: tokio::task::JoinSet::new(),
            done_parts: Vec::new(),
            size: 0,
            closed: false,
        }))
    }

    async fn abort_incomplete_uploads(&self, prefix: &str) -> Result<usize, SinkError> {
        let uploads = self.list_multipart_uploads(prefix).await?;
        for u in &uploads {
            self.abort_upload(&u.key, &u.upload_id).await?;
        }
        Ok(uploads.len())
    }

    fn describe(&self) -> String {
        let prefix = self.inner.cfg.prefix.trim_matches('/');
        if prefix.is_empty() {
            format!("s3://{}", self.inner.cfg.bucket)
        } else {
            format!("s3://{}/{prefix}", self.inner.cfg.bucket)
        }
    }
}

/// Bytes written to an upload and not sent yet, as the chunks they were written in.
#[derive(Default)]
struct PendingBytes {
    chunks: VecDeque<Bytes>,
    len: usize,
}

impl PendingBytes {
    fn push(&mut self, b: Bytes) {
        if !b.is_empty() {
            self.len += b.len();
            self.chunks.push_back(b);
        }
    }

    /// Removes the first `n` bytes (at most `self.len`) as one contiguous buffer: a slice
    /// of the first chunk when it covers them, else one copy into a buffer of exactly `n`
    /// bytes, releasing each chunk as soon as it is copied.
    fn take(&mut self, n: usize) -> Bytes {
        let n = n.min(self.len);
        self.len -= n;
        match self.chunks.front_mut() {
            None => return Bytes::new(),
            Some(front) if front.len() > n => return front.split_to(n),
            Some(front) if front.len() == n => {
                return self.chunks.pop_front().unwrap_or_default();
            }
            Some(_) => {}
        }
        let mut out = BytesMut::with_capacity(n);
        while out.len() < n {
            let Some(front) = self.chunks.front_mut() else {
                break;
            };
            let want = n - out.len();
            if front.len() <= want {
                out.extend_from_slice(front);
                self.chunks.pop_front();
            } else {
                out.extend_from_slice(&front.split_to(want));
            }
        }
        out.freeze()
    }

    fn clear(&mut self) {
        self.chunks.clear();
        self.len = 0;
    }
}

struct S3Upload {
    inner: Arc<Inner>,
    key: String,
    pending: PendingBytes,
    upload_id: Option<String>,
    /// Parts sent so far (also those still in flight).
    next_part: u32,
    /// Part uploads in flight, at most `max_parts_in_flight`.
    in_flight: tokio::task::JoinSet<Result<(u32, String), SinkError>>,
    done_parts: Vec<(u32, String)>,
    size: u64,
    closed: bool,
}

impl S3Upload {
    /// Sends a part in the background, first waiting for a slot when too many parts of this
    /// upload, or of all uploads of the storage, are in flight.
    async fn send_part(&mut self, part: Bytes) -> Result<(), SinkError> {
        if self.upload_id.is_none() {
            self.upload_id = Some(self.inner.create_multipart(&self.key).await?);
        }
        while self.in_flight.len() >= self.inner.cfg.max_parts_in_flight.max(1) {
            self.join_one().await?;
        }
        // Finished parts of this upload give their permits back; collect them first.
        while let Some(done) = self.in_flight.try_join_next() {
            self.record(Some(done))?;
        }
        let permit = match self.inner.part_budget.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(_) => {
                self.inner.parts_waiting.fetch_add(1, Ordering::Relaxed);
                let p = self.inner.part_budget.clone().acquire_owned().await;
                self.inner.parts_waiting.fetch_sub(1, Ordering::Relaxed);
                p.map_err(|_| SinkError::S3Response {
                    op: "UploadPart",
                    reason: "the storage's part budget was closed".into(),
                })?
            }
        };
        let id = self.upload_id.clone().unwrap_or_default();
        self.next_part += 1;
        let n = self.next_part;
        let inner = self.inner.clone();
        let key = self.key.clone();
        self.in_flight.spawn(async move {
            let etag = inner.upload_part(&key, &id, n, part).await;
            drop(permit);
            Ok((n, etag?))
        });
        Ok(())
    }

    #[allow(clippy::type_complexity)]
    fn record(
        &mut self,
        joined: Option<Result<Result<(u32, String), SinkError>, tokio::task::JoinError>>,
    ) -> Result<(), SinkError> {
        match joined {
            Some(Ok(Ok(done))) => {
                self.done_parts.push(done);
                Ok(())
            }
            Some(Ok(Err(e))) => Err(e),
            Some(Err(join)) => Err(SinkError::S3Response {
                op: "UploadPart",
                reason: format!("the part upload task failed: {join}"),
            }),
            None => Ok(()),
        }
    }

    async fn join_one(&mut self) -> Result<(), SinkError> {
        let joined = self.in_flight.join_next().await;
        self.record(joined)
    }

    async fn join_all(&mut self) -> Result<(), SinkError> {
        while !self.in_flight.is_empty() {
            self.join_one().await?;
        }
        Ok(())
    }

    /// Aborts the multipart upload (if one was started) after a failure.
    async fn fail(&mut self, e: SinkError) -> SinkError {
        self.closed = true;
        self.pending.clear();
        self.in_flight.abort_all();
        while self.in_flight.join_next().await.is_some() {}
        if let Some(id) = self.upload_id.take()
            && let Err(abort_err) = self.inner.abort_upload(&self.key, &id).await
        {
            tracing::warn!(key = %self.key, error = %abort_err, "could not abort the failed multipart upload; abort_incomplete_uploads will remove it");
        }
        e
    }
}

#[async_trait]
impl Upload for S3Upload {
    async fn write(&mut self, bytes: Bytes) -> Result<(), SinkError> {
        if self.closed {
            return Err(SinkError::UploadClosed {
                key: self.key.clone(),
            });
        }
        self.size += bytes.len() as u64;
        self.pending.push(bytes);
        let part_size = self.inner.cfg.part_size;
        while self.pending.len >= part_size {
            let part = self.pending.take(part_size);
            if let Err(e) = self.send_part(part).await {
                return Err(self.fail(e).await);
            }
        }
        Ok(())
    }

    async fn complete(mut self: Box<Self>) -> Result<ObjectInfo, SinkError> {
        if self.closed {
            return Err(SinkError::UploadClosed {
                key: self.key.clone(),
            });
        }
        let rest = self.pending.take(usize::MAX);
        let res = match self.upload_id.clone() {
            None => self
                .inner
                .put_object(&self.key, rest, false)
                .await
                .map(|_| ()),
            Some(id) => {
                let mut sent = Ok(());
                if !rest.is_empty() {
                    sent = self.send_part(rest).await;
                }
                if sent.is_ok() {
                    sent = self.join_all().await;
                }
                match sent {
                    Ok(()) => {
                        let mut parts = std::mem::take(&mut self.done_parts);
                        parts.sort_by_key(|(n, _)| *n);
                        self.inner.complete_multipart(&self.key, &id, &parts).await
                    }
                    Err(e) => Err(e),
                }
            }
        };
        if let Err(e) = res {
            return Err(self.fail(e).await);
        }
        self.closed = true;
        self.upload_id = None;
        Ok(ObjectInfo {
            key: self.key.clone(),
            size: self.size,
        })
    }

    async fn abort(mut self: Box<Self>) -> Result<(), SinkError> {
        self.closed = true;
        self.pending.clear();
        self.in_flight.abort_all();
        while self.in_flight.join_next().await.is_some() {}
        match self.upload_id.take() {
            Some(id) => self.inner.abort_upload(&self.key, &id).await,
            None => Ok(()),
        }
    }
}

impl Drop for S3Upload {
    fn drop(&mut self) {
        self.in_flight.abort_all();
        if let Some(id) = self.upload_id.take() {
            let inner = self.inner.clone();
            let key = std::mem::take(&mut self.key);
            match tokio::runtime::Handle::try_current() {
                Ok(h) => {
                    h.spawn(async move {
                        if let Err(e) = inner.abort_upload(&key, &id).await {
                            tracing::warn!(%key, error = %e, "could not abort a dropped multipart upload; abort_incomplete_uploads will remove it");
                        }
                    });
                }
                Err(_) => {
                    tracing::warn!(%key, "a multipart upload was dropped outside a runtime; abort_incomplete_uploads will remove it")
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn storage(endpoint: &str, path_style: bool) -> S3Storage {
        let mut cfg = S3Config::new(endpoint, "my-bucket");
        cfg.path_style = path_style;
        S3Storage::new(cfg, Credentials::new("AKID", "SECRET", None)).unwrap()
    }

    #[test]
    fn builds_path_style_and_virtual_hosted_urls() {
        let p = storage("http://127.0.0.1:8333", true);
        assert_eq!(
            p.inner.url(Some("run/data/a b+é.csv"), &[]),
            "http://127.0.0.1:8333/my-bucket/run/data/a%20b%2B%C3%A9.csv"
        );
        assert_eq!(
            p.inner.url(None, &[("list-type", "2"), ("prefix", "a/b")]),
            "http://127.0.0.1:8333/my-bucket?list-type=2&prefix=a%2Fb"
        );
        let v = storage("https://s3.eu-west-1.amazonaws.com", false);
        assert_eq!(
            v.inner.url(Some("k"), &[("uploads", "")]),
            "https://my-bucket.s3.eu-west-1.amazonaws.com/k?uploads"
        );
        assert_eq!(
            v.inner.url(None, &[]),
            "https://my-bucket.s3.eu-west-1.amazonaws.com/"
        );
    }

    #[test]
    fn rejects_small_parts_and_bad_endpoints() {
        let mut cfg = S3Config::new("http://127.0.0.1:1", "b");
        cfg.part_size = 1 << 20;
        assert!(S3Storage::new(cfg, Credentials::new("a", "b", None)).is_err());
        let cfg = S3Config::new("ftp://x", "b");
        assert!(S3Storage::new(cfg, Credentials::new("a", "b", None)).is_err());
    }

    #[test]
    fn pending_bytes_cut_parts_without_copying_whole_chunks() {
        let big = Bytes::from((0..=255u8).cycle().take(10_000).collect::<Vec<u8>>());
        let mut p = PendingBytes::default();
        p.push(big.clone());
        p.push(Bytes::new());
        let first = p.take(4_000);
        assert_eq!(
            first.as_ptr(),
            big.as_ptr(),
            "a covered part is a slice, not a copy"
        );
        assert_eq!(&first[..], &big[..4_000]);
        p.push(Bytes::from_static(b"abc"));
        p.push(Bytes::from_static(b"defgh"));
        assert_eq!(p.len, 6_008);
        // Spans three chunks: one buffer of exactly the part size.
        let second = p.take(6_004);
        assert_eq!(second.len(), 6_004);
        assert_eq!(&second[..6_000], &big[4_000..]);
        assert_eq!(&second[6_000..], b"abcd");
        assert_eq!(&p.take(usize::MAX)[..], b"efgh");
        assert_eq!(p.len, 0);
        assert!(p.take(10).is_empty());
    }

    /// An S3 endpoint that holds every UploadPart until the test releases it, recording how
    /// many were held at once.
    struct HeldParts {
        active: AtomicUsize,
        max_active: AtomicUsize,
        arrived: AtomicUsize,
        finished: AtomicUsize,
        gate: tokio::sync::Semaphore,
    }

    async fn held_parts_server() -> (Arc<HeldParts>, String) {
        use axum::extract::{RawQuery, State};
        let state = Arc::new(HeldParts {
            active: AtomicUsize::new(0),
            max_active: AtomicUsize::new(0),
            arrived: AtomicUsize::new(0),
            finished: AtomicUsize::new(0),
            gate: tokio::sync::Semaphore::new(0),
        });
        let handler = |State(st): State<Arc<HeldParts>>,
                       method: Method,
                       RawQuery(q): RawQuery,
                       _body: axum::body::Bytes| async move {
            let q = q.unwrap_or_default();
            if method == Method::PUT && q.contains("partNumber=") {
                let now = st.active.fetch_add(1, Ordering::SeqCst) + 1;
                st.max_active.fetch_max(now, Ordering::SeqCst);
                st.arrived.fetch_add(1, Ordering::SeqCst);
                st.gate.acquire().await.unwrap().forget();
                st.active.fetch_sub(1, Ordering::SeqCst);
                st.finished.fetch_add(1, Ordering::SeqCst);
                return (http::StatusCode::OK, [("etag", "\"p\"")], String::new());
            }
            let body = if method == Method::POST && q.starts_with("uploads") {
                "<InitiateMultipartUploadResult><UploadId>u1</UploadId></InitiateMultipartUploadResult>"
            } else if method == Method::POST {
                "<CompleteMultipartUploadResult></CompleteMultipartUploadResult>"
            } else {
                ""
            };
            (http::StatusCode::OK, [("etag", "\"o\"")], body.to_string())
        };
        let app = axum::Router::new()
            .fallback(handler)
            .layer(axum::extract::DefaultBodyLimit::disable())
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (state, format!("http://{addr}"))
    }

    async fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        while !cond() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out waiting until {what}"
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn parts_in_flight_stay_within_the_storage_budget() {
        const BUDGET: usize = 2;
        const UPLOADS: usize = 4;
        const PARTS: usize = 3;
        let (srv, url) = held_parts_server().await;
        let mut cfg = S3Config::new(url, "b");
        cfg.part_size = MIN_PART_SIZE;
        // Only the storage-wide budget limits this test.
        cfg.max_parts_in_flight = PARTS * UPLOADS;
        cfg.max_parts_in_flight_total = BUDGET;
        let storage = S3Storage::new(cfg, Credentials::new("AKID", "SECRET", None)).unwrap();
        let mut uploads = tokio::task::JoinSet::new();
        for u in 0..UPLOADS {
            let st = storage.clone();
            uploads.spawn(async move {
                let mut up = st.begin_upload(&format!("k/{u}")).await?;
                let chunk = Bytes::from(vec![u as u8; 1 << 20]);
                for _ in 0..PARTS * (MIN_PART_SIZE >> 20) {
                    up.write(chunk.clone()).await?;
                }
                up.complete().await
            });
        }
        let total = UPLOADS * PARTS;
        let mut saw_waiting = false;
        for released in 0..total {
            // Hold until the budget is full with parts waiting behind it, or every part
            // that is left has reached the server.
            wait_until("the part budget is full or every part arrived", || {
                let full =
                    srv.active.load(Ordering::SeqCst) >= BUDGET && storage.parts_waiting() >= 1;
                saw_waiting |= full;
                full || srv.arrived.load(Ordering::SeqCst) == total
            })
            .await;
            assert!(storage.parts_in_flight() <= BUDGET);
            srv.gate.add_permits(1);
            wait_until("a released part finished", || {
                srv.finished.load(Ordering::SeqCst) > released
            })
            .await;
        }
        while let Some(done) = uploads.join_next().await {
            let info = done.unwrap().unwrap();
            assert_eq!(info.size, (PARTS * MIN_PART_SIZE) as u64);
        }
        assert_eq!(srv.arrived.load(Ordering::SeqCst), total);
        assert_eq!(
            srv.max_active.load(Ordering::SeqCst),
            BUDGET,
            "parts in flight at once across {UPLOADS} uploads"
        );
        assert!(saw_waiting, "no part ever waited for the budget");
        assert_eq!(storage.parts_in_flight(), 0);
        assert_eq!(storage.parts_waiting(), 0);
    }

    #[test]
    fn debug_hides_the_secret() {
        let s = storage("http://127.0.0.1:1", true);
        assert!(!format!("{s:?}").contains("SECRET"));
    }
}
