//! The HTTP layer: one `reqwest` client, authentication (Basic, API key, SigV4 signing of
//! every request), the shared requests-per-second limiter, and retries with exponential
//! backoff and full jitter. Each attempt's response is judged by the caller's handler, which
//! says "done", "retry for this reason" or "fail with this error"; the shared
//! [`classify_failure`] turns the cluster's error envelope into a precise [`SourceError`].

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, HeaderValue, Method};
use serde::Deserialize;
use tokio::time::Instant;

use crate::config::{Auth, RetryPolicy, SourceConfig};
use crate::error::{RetryReason, SourceError};

/// Request and retry counters of one client (shared by all its readers).
#[derive(Debug, Default)]
pub struct ClientStats {
    requests: AtomicU64,
    retries_rejected: AtomicU64,
    retries_breaker: AtomicU64,
    retries_unavailable_5xx: AtomicU64,
    retries_connection: AtomicU64,
    retries_timeout: AtomicU64,
    bytes_received: AtomicU64,
    request_seconds: LatencyStats,
}

/// Upper bounds (seconds) of the request-duration buckets of [`ClientStats`].
pub const REQUEST_SECONDS_BUCKETS: [f64; 13] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

/// Buckets of [`REQUEST_SECONDS_BUCKETS`] plus the `+Inf` bucket.
const LATENCY_SLOTS: usize = REQUEST_SECONDS_BUCKETS.len() + 1;

/// Lock-free request-duration histogram (one per client).
#[derive(Debug, Default)]
struct LatencyStats {
    counts: [AtomicU64; LATENCY_SLOTS],
    sum_micros: AtomicU64,
    count: AtomicU64,
}

impl LatencyStats {
    fn observe(&self, took: Duration) {
        let secs = took.as_secs_f64();
        let slot = REQUEST_SECONDS_BUCKETS
            .iter()
            .position(|b| secs <= *b)
            .unwrap_or(REQUEST_SECONDS_BUCKETS.len());
        self.counts[slot].fetch_add(1, Ordering::Relaxed);
        self.sum_micros.fetch_add(
            u64::try_from(took.as_micros()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    fn snapshot(&self) -> LatencySnapshot {
        LatencySnapshot {
            counts: std::array::from_fn(|i| self.counts[i].load(Ordering::Relaxed)),
            sum_micros: self.sum_micros.load(Ordering::Relaxed),
            count: self.count.load(Ordering::Relaxed),
        }
    }
}

/// Durations of the HTTP requests a client sent (every attempt, successful or not, from
/// sending the request to the end of the response body).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LatencySnapshot {
    /// Non-cumulative counts per bucket of [`REQUEST_SECONDS_BUCKETS`]; the last entry is
    /// the `+Inf` bucket.
    pub counts: [u64; LATENCY_SLOTS],
    /// Sum of the durations, in microseconds.
    pub sum_micros: u64,
    /// Number of requests observed.
    pub count: u64,
}

impl LatencySnapshot {
    /// Sum of the durations in seconds.
    pub fn sum_seconds(&self) -> f64 {
        self.sum_micros as f64 / 1e6
    }

    /// Adds `other`'s observations to these (to sum several clients).
    pub fn merge(&mut self, other: &LatencySnapshot) {
        for (a, b) in self.counts.iter_mut().zip(other.counts.iter()) {
            *a += b;
        }
        self.sum_micros = self.sum_micros.saturating_add(other.sum_micros);
        self.count += other.count;
    }
}

/// A copy of the counters at one moment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StatsSnapshot {
    pub requests: u64,
    pub retries_rejected: u64,
    pub retries_breaker: u64,
    pub retries_unavailable_5xx: u64,
    pub retries_connection: u64,
    pub retries_timeout: u64,
    pub bytes_received: u64,
    /// Request durations.
    pub request_seconds: LatencySnapshot,
}

impl StatsSnapshot {
    pub fn total_retries(&self) -> u64 {
        self.retries_rejected
            + self.retries_breaker
            + self.retries_unavailable_5xx
            + self.retries_connection
            + self.retries_timeout
    }
}

impl ClientStats {
    /// HTTP requests sent (every attempt counts).
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// Retries made for `reason`.
    pub fn retries(&self, reason: RetryReason) -> u64 {
        self.counter(reason).load(Ordering::Relaxed)
    }

    /// Response body bytes received.
    pub fn bytes_received(&self) -> u64 {
        self.bytes_received.load(Ordering::Relaxed)
    }

    /// Durations of the requests sent so far.
    pub fn request_seconds(&self) -> LatencySnapshot {
        self.request_seconds.snapshot()
    }

    pub fn snapshot(&self) -> StatsSnapshot {
        StatsSnapshot {
            requests: self.requests(),
            retries_rejected: self.retries(RetryReason::Rejected),
            retries_breaker: self.retries(RetryReason::Breaker),
            retries_unavailable_5xx: self.retries(RetryReason::Unavailable5xx),
            retries_connection: self.retries(RetryReason::Connection),
            retries_timeout: self.retries(RetryReason::Timeout),
            bytes_received: self.bytes_received(),
            request_seconds: self.request_seconds(),
        }
    }

    fn counter(&self, reason: RetryReason) -> &AtomicU64 {
        match reason {
            RetryReason::Rejected => &self.retries_rejected,
            RetryReason::Breaker => &self.retries_breaker,
            RetryReason::Unavailable5xx => &self.retries_unavailable_5xx,
            RetryReason::Connection => &self.retries_connection,
            RetryReason::Timeout => &self.retries_timeout,
        }
    }
}

/// A response as received.
pub(crate) struct Response {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Response {
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

/// A transient failure of one attempt.
#[derive(Debug)]
pub(crate) struct Transient {
    pub reason: RetryReason,
    pub status: Option<u16>,
    pub detail: String,
    /// The connection could not be established at all.
    pub connect: bool,
    /// The server's `Retry-After`, if it sent one.
    pub retry_after: Option<Duration>,
}

impl Transient {
    pub fn new(reason: RetryReason, status: Option<u16>, detail: impl Into<String>) -> Self {
        Transient {
            reason,
            status,
            detail: detail.into(),
            connect: false,
            retry_after: None,
        }
    }
}

/// What the handler decided about one attempt.
pub(crate) enum Verdict<T> {
    Done(T),
    Retry(Transient),
    Fail(SourceError),
}

/// Spaces requests evenly: at most `rate` per second across every user of the limiter.
struct Limiter {
    interval: Duration,
    next: Mutex<Option<Instant>>,
}

impl Limiter {
    async fn acquire(&self) {
        let at = {
            let mut next = self.next.lock().unwrap_or_else(|p| p.into_inner());
            let now = Instant::now();
            let at = match *next {
                Some(n) if n > now => n,
                _ => now,
            };
            *next = Some(at + self.interval);
            at
        };
        tokio::time::sleep_until(at).await;
    }
}

pub(crate) struct Transport {
    http: reqwest::Client,
    /// Base URL without user info and without a trailing slash.
    base: String,
    /// What errors and logs print (same as `base`: it never holds credentials).
    auth: Auth,
    retry: RetryPolicy,
    timeout: Duration,
    limiter: Option<Limiter>,
    pub stats: ClientStats,
}

/// Reads a whole body chunk by chunk into `recv` and splits it off; each chunk is dropped as
/// soon as it is copied. (hyper reads one chunk ahead, so its own read buffer is rarely free
/// to reuse; the page faults that remain come from there, see the allocator notes in the
/// `spillway` binary.)
async fn read_body(
    mut resp: reqwest::Response,
    status: u16,
    recv: &mut BytesMut,
) -> Result<Bytes, Attempt> {
    /// A body larger than this is not reserved up front from its `Content-Length`.
    const MAX_RESERVE: usize = 64 << 20;
    recv.clear();
    if let Some(len) = resp.content_length().and_then(|n| usize::try_from(n).ok()) {
        recv.reserve(len.min(MAX_RESERVE));
    }
    loop {
        match resp.chunk().await {
            Ok(Some(chunk)) => recv.extend_from_slice(&chunk),
            Ok(None) => return Ok(recv.split().freeze()),
            Err(e) => {
                recv.clear();
                return Err(Attempt::Transient(if e.is_timeout() {
                    Transient::new(
                        RetryReason::Timeout,
                        Some(status),
                        "timed out reading the body",
                    )
                } else {
                    Transient::new(
                        RetryReason::Connection,
                        Some(status),
                        format!("the response body was cut off: {}", error_chain(&e)),
                    )
                }));
            }
        }
    }
}

/// The URL with any `user:password@` removed, for messages and logs.
pub fn redact_url(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(mut u) => {
            let _ = u.set_username("");
            let _ = u.set_password(None);
            u.to_string().trim_end_matches('/').to_string()
        }
        Err(_) => match (url.find("://"), url.rfind('@')) {
            (Some(s), Some(at)) if at > s => format!("{}{}", &url[..s + 3], &url[at + 1..]),
            _ => url.to_string(),
        },
    }
}

impl Transport {
    pub fn new(config: &SourceConfig) -> Result<Transport, SourceError> {
        let mut url = reqwest::Url::parse(config.url.trim()).map_err(|e| {
            SourceError::Config(format!(
                "source.url [{}] is not a valid URL ({e}); use e.g. https://search.example:9200",
                redact_url(&config.url)
            ))
        })?;
        if url.scheme() != "http" && url.scheme() != "https" {
            return Err(SourceError::Config(format!(
                "source.url [{}] must start with http:// or https://",
                redact_url(&config.url)
            )));
        }
        let mut auth = config.auth.clone();
        if !url.username().is_empty() || url.password().is_some() {
            let decode = |s: &str| {
                percent_encoding::percent_decode_str(s)
                    .decode_utf8_lossy()
                    .into_owned()
            };
            if matches!(auth, Auth::None) {
                auth = Auth::Basic {
                    username: decode(url.username()),
                    password: decode(url.password().unwrap_or("")),
                };
            }
            let _ = url.set_username("");
            let _ = url.set_password(None);
        }
        url.set_query(None);
        url.set_fragment(None);
        let base = url.to_string().trim_end_matches('/').to_string();

        if let Auth::SigV4 { service, .. } = &auth
            && service != "es"
            && service != "aoss"
        {
            return Err(SourceError::Config(format!(
                "SigV4 service [{service}] is not supported; use `es` (managed domains) or `aoss` (Serverless)"
            )));
        }

        let tls = crate::tls::client_config(config.ca_pem.as_deref(), config.insecure_skip_verify)?;
        let http = reqwest::Client::builder()
            .tls_backend_preconfigured(tls)
            .timeout(config.request_timeout)
            .connect_timeout(config.request_timeout.min(Duration::from_secs(10)))
            .pool_idle_timeout(Duration::from_secs(50))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| SourceError::Config(format!("cannot build the HTTP client: {e}")))?;
        let limiter = match config.requests_per_second {
            Some(0) => {
                return Err(SourceError::Config(
                    "requestsPerSecond must be at least 1 (leave it unset for no limit)".into(),
                ));
            }
            Some(rps) => Some(Limiter {
                interval: Duration::from_secs(1) / rps,
                next: Mutex::new(None),
            }),
            None => None,
        };
        Ok(Transport {
            http,
            base,
            auth,
            retry: config.retry.clone(),
            timeout: config.request_timeout,
            limiter,
            stats: ClientStats::default(),
        })
    }

    /// The base URL for messages (never holds credentials).
    pub fn display(&self) -> &str {
        &self.base
    }

    pub fn is_aoss(&self) -> bool {
        matches!(&self.auth, Auth::SigV4 { service, .. } if service == "aoss")
    }

    /// `base + path` for messages.
    pub fn url_for(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// Sends `method path` with an optional JSON body, retrying transient failures; each
    /// attempt's response goes through `handle`.
    pub async fn execute<T>(
        &self,
        method: Method,
        path: &str,
        body: Option<Bytes>,
        handle: impl FnMut(Response) -> Verdict<T>,
    ) -> Result<T, SourceError> {
        self.execute_into(method, path, body, &mut BytesMut::new(), handle)
            .await
    }

    /// [`Transport::execute`], reading response bodies into `recv`. A caller that keeps
    /// `recv` across requests and drops each body before the next request gets the same
    /// allocation back every time, instead of a fresh one (and fresh pages) per response.
    pub async fn execute_into<T>(
        &self,
        method: Method,
        path: &str,
        body: Option<Bytes>,
        recv: &mut BytesMut,
        mut handle: impl FnMut(Response) -> Verdict<T>,
    ) -> Result<T, SourceError> {
        let url = self.url_for(path);
        let mut retries = 0u32;
        loop {
            let transient = match self.attempt(&method, &url, body.as_ref(), recv).await {
                Ok(resp) => match handle(resp) {
                    Verdict::Done(v) => return Ok(v),
                    Verdict::Fail(e) => return Err(e),
                    Verdict::Retry(t) => t,
                },
                Err(Attempt::Fatal(e)) => return Err(e),
                Err(Attempt::Transient(t)) => t,
            };
            if retries >= self.retry.max_retries {
                return Err(self.exhausted(&url, retries + 1, transient));
            }
            self.stats
                .counter(transient.reason)
                .fetch_add(1, Ordering::Relaxed);
            // Full jitter, but never sooner than the server asked (capped by max_backoff).
            let wait = match transient.retry_after {
                Some(after) => self
                    .retry
                    .backoff(retries)
                    .max(after.min(self.retry.max_backoff)),
                None => self.retry.backoff(retries),
            };
            tracing::debug!(
                url = %url,
                reason = transient.reason.as_str(),
                status = transient.status,
                detail = %transient.detail,
                retry = retries + 1,
                wait_ms = wait.as_millis() as u64,
                "retrying request"
            );
            retries += 1;
            tokio::time::sleep(wait).await;
        }
    }

    fn exhausted(&self, url: &str, attempts: u32, t: Transient) -> SourceError {
        let url = url.to_string();
        match t.reason {
            RetryReason::Rejected | RetryReason::Breaker => SourceError::Overloaded {
                url,
                reason: t.reason.as_str(),
                attempts,
                detail: t.detail,
            },
            RetryReason::Unavailable5xx => SourceError::ServerError {
                url,
                status: t.status.unwrap_or(500),
                attempts,
                detail: t.detail,
            },
            RetryReason::Timeout => SourceError::Timeout {
                url,
                attempts,
                timeout: self.timeout,
            },
            RetryReason::Connection if t.connect => SourceError::Unreachable {
                url: self.base.clone(),
                detail: t.detail,
            },
            RetryReason::Connection => SourceError::BrokenResponse {
                url,
                attempts,
                detail: t.detail,
            },
        }
    }

    async fn attempt(
        &self,
        method: &Method,
        url: &str,
        body: Option<&Bytes>,
        recv: &mut BytesMut,
    ) -> Result<Response, Attempt> {
        if let Some(l) = &self.limiter {
            l.acquire().await;
        }
        self.stats.requests.fetch_add(1, Ordering::Relaxed);
        let mut headers = HeaderMap::new();
        if body.is_some() {
            headers.insert(
                http::header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
        }
        headers.insert(
            http::header::ACCEPT,
            HeaderValue::from_static("application/json"),
        );
        self.authorize(method, url, body, &mut headers)?;
        let mut req = self.http.request(method.clone(), url).headers(headers);
        if let Some(b) = body {
            req = req.body(b.clone());
        }
        let started = Instant::now();
        let result = self.send(req, recv).await;
        self.stats.request_seconds.observe(started.elapsed());
        result
    }

    /// Sends one request and reads its whole body.
    async fn send(
        &self,
        req: reqwest::RequestBuilder,
        recv: &mut BytesMut,
    ) -> Result<Response, Attempt> {
        let resp = req.send().await.map_err(|e| {
            let t = send_error(&e);
            if t.connect && is_tls_verification_failure(&t.detail) {
                Attempt::Fatal(SourceError::Tls {
                    url: self.base.clone(),
                    detail: t.detail,
                })
            } else {
                Attempt::Transient(t)
            }
        })?;
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body = read_body(resp, status, recv).await?;
        self.stats
            .bytes_received
            .fetch_add(body.len() as u64, Ordering::Relaxed);
        Ok(Response {
            status,
            headers,
            body,
        })
    }

    fn authorize(
        &self,
        method: &Method,
        url: &str,
        body: Option<&Bytes>,
        headers: &mut HeaderMap,
    ) -> Result<(), Attempt> {
        match &self.auth {
            Auth::None => {}
            Auth::Basic { username, password } => {
                use base64::Engine;
                let token = base64::engine::general_purpose::STANDARD
                    .encode(format!("{username}:{password}"));
                let mut v = HeaderValue::from_str(&format!("Basic {token}")).map_err(|_| {
                    Attempt::Fatal(SourceError::Config(
                        "the basic-auth username or password contains characters not allowed in an HTTP header".into(),
                    ))
                })?;
                v.set_sensitive(true);
                headers.insert(http::header::AUTHORIZATION, v);
            }
            Auth::ApiKey(key) => {
                let mut v = HeaderValue::from_str(&format!("ApiKey {}", key.trim())).map_err(|_| {
                    Attempt::Fatal(SourceError::Config(
                        "the API key contains characters not allowed in an HTTP header; give the base64-encoded key".into(),
                    ))
                })?;
                v.set_sensitive(true);
                headers.insert(http::header::AUTHORIZATION, v);
            }
            Auth::SigV4 {
                credentials,
                region,
                service,
            } => {
                let uri: http::Uri = url.parse().map_err(|_| {
                    Attempt::Fatal(SourceError::Signing(format!("invalid request URI {url}")))
                })?;
                let payload = spillway_sigv4::Payload::Bytes(body.map(|b| &b[..]).unwrap_or(b""));
                spillway_sigv4::sign(
                    method,
                    &uri,
                    headers,
                    payload,
                    credentials,
                    region,
                    service,
                    chrono::Utc::now(),
                )
                .map_err(|e| Attempt::Fatal(SourceError::Signing(e.to_string())))?;
            }
        }
        Ok(())
    }
}

enum Attempt {
    Transient(Transient),
    Fatal(SourceError),
}

fn send_error(e: &reqwest::Error) -> Transient {
    if e.is_timeout() {
        return Transient::new(RetryReason::Timeout, None, "request timed out");
    }
    let mut t = Transient::new(RetryReason::Connection, None, error_chain(e));
    t.connect = e.is_connect();
    t
}

/// A certificate problem is permanent: retrying cannot fix it.
fn is_tls_verification_failure(detail: &str) -> bool {
    let d = detail.to_ascii_lowercase();
    d.contains("certificate") || d.contains("unknownissuer") || d.contains("notvalidforname")
}

/// The error and its sources, joined, e.g. `error sending request: connection refused`.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let m = c.to_string();
        if !s.contains(&m) {
            s.push_str(": ");
            s.push_str(&m);
        }
        cur = c.source();
    }
    s
}

// ---- error envelope -------------------------------------------------------------------

#[derive(Deserialize, Default)]
struct Envelope {
    #[serde(default)]
    error: Option<ErrorBody>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum ErrorBody {
    Cause(Box<Cause>),
    Text(String),
}

#[derive(Deserialize, Default, Clone)]
pub(crate) struct Cause {
    #[serde(default, rename = "type")]
    pub kind: Option<String>,
    #[serde(default)]
    pub reason: Option<String>,
    #[serde(default)]
    pub root_cause: Vec<Cause>,
    #[serde(default)]
    pub caused_by: Option<Box<Cause>>,
    #[serde(default)]
    pub failed_shards: Vec<ShardFailure>,
    #[serde(default)]
    pub durability: Option<String>,
    #[serde(default)]
    pub index: Option<String>,
    #[serde(default, rename = "resource.id")]
    pub resource_id: Option<String>,
}

#[derive(Deserialize, Default, Clone)]
pub(crate) struct ShardFailure {
    #[serde(default)]
    pub reason: Option<Cause>,
}

impl Cause {
    /// This cause and everything under it, depth first.
    fn walk<'a>(&'a self, out: &mut Vec<&'a Cause>) {
        out.push(self);
        for r in &self.root_cause {
            r.walk(out);
        }
        if let Some(c) = &self.caused_by {
            c.walk(out);
        }
        for f in &self.failed_shards {
            if let Some(r) = &f.reason {
                r.walk(out);
            }
        }
    }

    fn find(&self, kind: &str) -> Option<&Cause> {
        let mut all = Vec::new();
        self.walk(&mut all);
        all.into_iter().find(|c| c.kind.as_deref() == Some(kind))
    }

    /// The most specific reason: the first root cause's, else the top reason.
    fn best_reason(&self) -> String {
        self.root_cause
            .first()
            .and_then(|r| r.reason.clone())
            .or_else(|| self.reason.clone())
            .unwrap_or_default()
    }
}

/// The error object of a response, if the body is the JSON error envelope.
pub(crate) fn parse_error(body: &[u8]) -> Option<Cause> {
    let env: Envelope = serde_json::from_slice(body).ok()?;
    match env.error? {
        ErrorBody::Cause(c) => Some(*c),
        ErrorBody::Text(t) => Some(Cause {
            reason: Some(t),
            ..Cause::default()
        }),
    }
}

fn body_excerpt(body: &[u8]) -> String {
    let s = String::from_utf8_lossy(&body[..body.len().min(300)]);
    let s = s.trim();
    if s.is_empty() {
        "empty body".to_string()
    } else {
        s.to_string()
    }
}

/// Finds `[...]` after `marker` in `text`.
fn bracketed_after(text: &str, marker: &str) -> Option<String> {
    let at = text.find(marker)? + marker.len();
    let rest = &text[at..];
    let open = rest.find('[')?;
    let close = rest[open..].find(']')? + open;
    Some(rest[open + 1..close].to_string())
}

/// The standard judgement of a non-2xx response.
pub(crate) fn classify_failure<T>(url: &str, resp: &Response) -> Verdict<T> {
    match classify_status(url, resp) {
        Verdict::Retry(mut t) => {
            t.retry_after = resp
                .headers
                .get(http::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok())
                .map(Duration::from_secs);
            Verdict::Retry(t)
        }
        other => other,
    }
}

fn classify_status<T>(url: &str, resp: &Response) -> Verdict<T> {
    let status = resp.status;
    let cause = parse_error(&resp.body);
    let reason = cause
        .as_ref()
        .map(Cause::best_reason)
        .filter(|r| !r.is_empty())
        .unwrap_or_else(|| body_excerpt(&resp.body));
    let has = |kind: &str| cause.as_ref().and_then(|c| c.find(kind)).cloned();

    // A lost PIT or scroll context, whatever the status says.
    if let Some(c) = has("search_context_missing_exception") {
        return Verdict::Fail(SourceError::SnapshotLost {
            reason: c.reason.unwrap_or(reason),
        });
    }
    match status {
        401 => Verdict::Fail(SourceError::Authentication {
            url: url.to_string(),
        }),
        403 => {
            let action = bracketed_after(&reason, "no permissions for")
                .or_else(|| bracketed_after(&reason, "action"))
                .unwrap_or_else(|| "unknown".into());
            let user = reason
                .find("User [name=")
                .map(|at| {
                    let rest = &reason[at + "User [name=".len()..];
                    rest.split([',', ']']).next().unwrap_or("").to_string()
                })
                .or_else(|| bracketed_after(&reason, "for user"))
                .unwrap_or_else(|| "unknown".into());
            Verdict::Fail(SourceError::Forbidden {
                url: url.to_string(),
                action,
                user,
                reason,
            })
        }
        404 => {
            if let Some(c) = has("index_not_found_exception") {
                let index = c
                    .index
                    .or(c.resource_id)
                    .or_else(|| bracketed_after(c.reason.as_deref().unwrap_or(""), "no such index"))
                    .unwrap_or_else(|| "?".into());
                return Verdict::Fail(SourceError::IndexNotFound {
                    url: url.to_string(),
                    index,
                });
            }
            Verdict::Fail(SourceError::Http {
                url: url.to_string(),
                status,
                reason,
            })
        }
        429 => {
            if let Some(c) = has("circuit_breaking_exception") {
                if c.durability.as_deref() == Some("PERMANENT") {
                    return Verdict::Fail(SourceError::CircuitBreakerPermanent {
                        url: url.to_string(),
                        reason: c.reason.unwrap_or(reason),
                    });
                }
                return Verdict::Retry(Transient::new(RetryReason::Breaker, Some(status), reason));
            }
            Verdict::Retry(Transient::new(RetryReason::Rejected, Some(status), reason))
        }
        400 => Verdict::Fail(SourceError::BadRequest {
            url: url.to_string(),
            reason,
        }),
        500..=599 => Verdict::Retry(Transient::new(
            RetryReason::Unavailable5xx,
            Some(status),
            reason,
        )),
        _ => Verdict::Fail(SourceError::Http {
            url: url.to_string(),
            status,
            reason,
        }),
    }
}

/// Judges a JSON parse failure of a 2xx body: cut off / not JSON is retried as a broken
/// connection, a valid body of the wrong shape fails.
pub(crate) fn parse_failure<T>(url: &str, e: &serde_json::Error) -> Verdict<T> {
    if e.is_data() {
        Verdict::Fail(SourceError::Decode {
            url: url.to_string(),
            detail: e.to_string(),
        })
    } else {
        Verdict::Retry(Transient::new(
            RetryReason::Connection,
            None,
            format!("the response is cut off or not JSON: {e}"),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resp(status: u16, body: &str) -> Response {
        Response {
            status,
            headers: HeaderMap::new(),
            body: Bytes::copy_from_slice(body.as_bytes()),
        }
    }

    fn fail(status: u16, body: &str) -> SourceError {
        match classify_failure::<()>("http://h:9200/_search", &resp(status, body)) {
            Verdict::Fail(e) => e,
            Verdict::Retry(t) => panic!("retried: {t:?}"),
            Verdict::Done(_) => unreachable!(),
        }
    }

    fn retry(status: u16, body: &str) -> Transient {
        match classify_failure::<()>("http://h:9200/_search", &resp(status, body)) {
            Verdict::Retry(t) => t,
            Verdict::Fail(e) => panic!("failed: {e}"),
            Verdict::Done(_) => unreachable!(),
        }
    }

    #[test]
    fn search_context_missing_is_snapshot_lost() {
        let body = r#"{"error":{"root_cause":[{"type":"search_context_missing_exception","reason":"No search context found for id [123]"}],
        "type":"search_phase_execution_exception","reason":"all shards failed","phase":"query","grouped":true,
        "failed_shards":[{"shard":-1,"index":null,"reason":{"type":"search_context_missing_exception","reason":"No search context found for id [123]"}}]},"status":404}"#;
        let e = fail(404, body);
        assert!(e.is_snapshot_lost(), "{e}");
        assert!(!e.is_retryable());
        assert!(
            e.to_string()
                .contains("No search context found for id [123]")
        );
    }

    #[test]
    fn index_not_found_names_index() {
        let body = r#"{"error":{"root_cause":[{"type":"index_not_found_exception","reason":"no such index [nope]","index":"nope","resource.id":"nope","resource.type":"index_or_alias","index_uuid":"_na_"}],
        "type":"index_not_found_exception","reason":"no such index [nope]","index":"nope","resource.id":"nope","resource.type":"index_or_alias","index_uuid":"_na_"},"status":404}"#;
        let e = fail(404, body);
        assert!(
            matches!(&e, SourceError::IndexNotFound { index, .. } if index == "nope"),
            "{e}"
        );
        assert!(e.to_string().contains("[nope]"));
    }

    #[test]
    fn auth_errors() {
        let e = fail(401, "Unauthorized");
        assert!(
            e.to_string().starts_with(
                "authentication failed for http://h:9200/_search: check the credentials in"
            ),
            "{e}"
        );
        let e = fail(
            403,
            r#"{"error":{"root_cause":[{"type":"security_exception","reason":"no permissions for [indices:data/read/search] and User [name=reader, backend_roles=[], requestedTenant=null]"}],"type":"security_exception","reason":"no permissions for [indices:data/read/search] and User [name=reader, backend_roles=[], requestedTenant=null]"},"status":403}"#,
        );
        match &e {
            SourceError::Forbidden { action, user, .. } => {
                assert_eq!(action, "indices:data/read/search");
                assert_eq!(user, "reader");
            }
            other => panic!("{other}"),
        }
        let e = fail(
            403,
            r#"{"error":{"type":"security_exception","reason":"action [indices:data/read/search] is unauthorized for user [bob] with effective roles [viewer]"},"status":403}"#,
        );
        match &e {
            SourceError::Forbidden { action, user, .. } => {
                assert_eq!(action, "indices:data/read/search");
                assert_eq!(user, "bob");
            }
            other => panic!("{other}"),
        }
    }

    #[test]
    fn bad_request_reason_verbatim() {
        let e = fail(
            400,
            r#"{"error":{"root_cause":[{"type":"parsing_exception","reason":"[match_all] malformed query, expected [END_OBJECT] but found [FIELD_NAME]","line":1,"col":26}],"type":"parsing_exception","reason":"outer"},"status":400}"#,
        );
        assert!(
            e.to_string().ends_with(
                "[match_all] malformed query, expected [END_OBJECT] but found [FIELD_NAME]"
            ),
            "{e}"
        );
        assert!(!e.is_retryable());
    }

    #[test]
    fn overload_is_retried_by_reason() {
        let os = r#"{"error":{"root_cause":[{"type":"rejected_execution_exception","reason":"rejected execution of x on QueueResizingOpenSearchThreadPoolExecutor"}],"type":"search_phase_execution_exception","reason":"all shards failed"},"status":429}"#;
        assert_eq!(retry(429, os).reason, RetryReason::Rejected);
        let es = r#"{"error":{"root_cause":[{"type":"es_rejected_execution_exception","reason":"rejected"}],"type":"es_rejected_execution_exception","reason":"rejected"},"status":429}"#;
        assert_eq!(retry(429, es).reason, RetryReason::Rejected);
        let transient = r#"{"error":{"root_cause":[{"type":"circuit_breaking_exception","reason":"[parent] Data too large","bytes_wanted":1,"bytes_limit":1,"durability":"TRANSIENT"}],"type":"circuit_breaking_exception","reason":"[parent] Data too large","bytes_wanted":1,"bytes_limit":1,"durability":"TRANSIENT"},"status":429}"#;
        assert_eq!(retry(429, transient).reason, RetryReason::Breaker);
        let permanent = transient.replace("TRANSIENT", "PERMANENT");
        let e = fail(429, &permanent);
        assert!(e.to_string().contains("reduce pageSize"), "{e}");
        for s in [500, 502, 503, 504] {
            let t = retry(s, "<html>bad gateway</html>");
            assert_eq!(t.reason, RetryReason::Unavailable5xx);
            assert_eq!(t.status, Some(s));
        }
    }

    #[test]
    fn retry_after_is_read() {
        let mut r = resp(503, "busy");
        r.headers
            .insert(http::header::RETRY_AFTER, HeaderValue::from_static("2"));
        match classify_failure::<()>("u", &r) {
            Verdict::Retry(t) => assert_eq!(t.retry_after, Some(Duration::from_secs(2))),
            _ => panic!("503 is retried"),
        }
        assert!(retry(503, "busy").retry_after.is_none());
    }

    #[test]
    fn request_durations_land_in_their_buckets() {
        let stats = ClientStats::default();
        for ms in [1, 5, 7, 300, 120_000] {
            stats.request_seconds.observe(Duration::from_millis(ms));
        }
        let h = stats.request_seconds();
        assert_eq!(h.count, 5);
        assert_eq!(h.sum_micros, 120_313_000);
        assert_eq!(h.counts[0], 2, "1 ms and 5 ms are <= 0.005 s: {h:?}");
        assert_eq!(h.counts[1], 1, "7 ms is in (0.005, 0.01]: {h:?}");
        assert_eq!(h.counts[6], 1, "300 ms is in (0.25, 0.5]: {h:?}");
        assert_eq!(
            h.counts[LATENCY_SLOTS - 1],
            1,
            "2 min is past the last bound"
        );
        assert_eq!(h.counts.iter().sum::<u64>(), h.count);
        assert_eq!(stats.snapshot().request_seconds, h);

        let mut total = LatencySnapshot::default();
        total.merge(&h);
        total.merge(&h);
        assert_eq!(total.count, 10);
        assert_eq!(total.counts[0], 4);
        assert!((total.sum_seconds() - 240.626).abs() < 1e-9);
    }

    #[tokio::test]
    async fn every_attempt_is_timed() {
        use std::sync::atomic::AtomicU32;
        let _ = rustls::crypto::ring::default_provider().install_default();
        let calls = std::sync::Arc::new(AtomicU32::new(0));
        let seen = calls.clone();
        // The first answer is a 503 (retried), the second a 200.
        let app = axum::Router::new().route(
            "/_ping",
            axum::routing::get(move || {
                let seen = seen.clone();
                async move {
                    if seen.fetch_add(1, Ordering::SeqCst) == 0 {
                        (axum::http::StatusCode::SERVICE_UNAVAILABLE, "busy")
                    } else {
                        (axum::http::StatusCode::OK, "{}")
                    }
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });

        let mut config = SourceConfig::new(format!("http://{addr}"));
        config.retry.max_retries = 3;
        config.retry.initial_backoff = Duration::from_millis(1);
        config.retry.max_backoff = Duration::from_millis(2);
        let t = Transport::new(&config).unwrap();
        t.execute(Method::GET, "/_ping", None, |r| {
            if r.is_success() {
                Verdict::Done(())
            } else {
                classify_failure("u", &r)
            }
        })
        .await
        .unwrap();
        let h = t.stats.request_seconds();
        assert_eq!(calls.load(Ordering::SeqCst), 2);
        assert_eq!(t.stats.requests(), 2);
        assert_eq!(h.count, 2, "both attempts are observed: {h:?}");
        assert_eq!(h.counts.iter().sum::<u64>(), 2);
        assert!(h.sum_micros > 0);
    }

    #[test]
    fn redaction() {
        assert_eq!(redact_url("https://u:p%40ss@h:9200/x/"), "https://h:9200/x");
        assert_eq!(redact_url("https://h:9200"), "https://h:9200");
        assert_eq!(redact_url("not a url://u:pw@x"), "not a url://x");
    }
}
