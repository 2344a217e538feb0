//! The S3 client against a scripted in-process server: retries on 5xx/SlowDown and
//! connection errors, S3 error XML in errors, and multipart uploads that abort themselves on
//! failure. The server also checks every request's SigV4 signature with our verifier.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes as AxumBytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use spillway_sigv4::Credentials;
use spillway_sink::storage::s3::{S3Config, S3Storage};
use spillway_sink::{SinkError, Storage};

type Script = dyn Fn(&Method, &Uri, usize) -> (u16, String) + Send + Sync;

struct Mock {
    log: Mutex<Vec<String>>,
    script: Box<Script>,
}

async fn handler(
    State(m): State<Arc<Mock>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: AxumBytes,
) -> Response {
    let full: http::Uri = format!(
        "http://{}{}",
        headers["host"].to_str().unwrap(),
        uri.path_and_query().unwrap()
    )
    .parse()
    .unwrap();
    if let Err(e) = spillway_sigv4::verify(
        &method,
        &full,
        &headers,
        &body,
        |id| (id == "AKIDTEST").then(|| "SKTEST".to_string()),
        chrono::Utc::now(),
        chrono::Duration::minutes(5),
    ) {
        return (
            StatusCode::FORBIDDEN,
            format!("<Error><Code>SignatureDoesNotMatch</Code><Message>{e}</Message></Error>"),
        )
            .into_response();
    }
    let n = {
        let mut log = m.log.lock().unwrap();
        log.push(format!("{method} {}", uri.path_and_query().unwrap()));
        log.len()
    };
    let (status, body) = (m.script)(&method, &uri, n);
    let mut resp = (StatusCode::from_u16(status).unwrap(), body).into_response();
    resp.headers_mut()
        .insert("etag", "\"abc\"".parse().unwrap());
    resp
}

async fn serve(script: Box<Script>) -> (Arc<Mock>, String) {
    let mock = Arc::new(Mock {
        log: Mutex::new(Vec::new()),
        script,
    });
    let app = axum::Router::new()
        .fallback(handler)
        .layer(axum::extract::DefaultBodyLimit::disable())
        .with_state(mock.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    (mock, format!("http://{addr}"))
}

fn client(endpoint: &str) -> S3Storage {
    let mut cfg = S3Config::new(endpoint, "bucket");
    cfg.part_size = 5 << 20;
    cfg.max_attempts = 4;
    cfg.base_backoff = Duration::from_millis(1);
    cfg.max_backoff = Duration::from_millis(5);
    S3Storage::new(cfg, Credentials::new("AKIDTEST", "SKTEST", None)).unwrap()
}

fn log(m: &Mock) -> Vec<String> {
    m.log.lock().unwrap().clone()
}

const SLOW_DOWN: &str =
    "<Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>";

#[tokio::test]
async fn retries_slow_down_then_succeeds() {
    let (m, ep) = serve(Box::new(|_, _, n| {
        if n <= 2 {
            (503, SLOW_DOWN.into())
        } else {
            (200, String::new())
        }
    }))
    .await;
    client(&ep)
        .put("a/b", Bytes::from_static(b"x"))
        .await
        .unwrap();
    assert_eq!(
        log(&m),
        ["PUT /bucket/a/b", "PUT /bucket/a/b", "PUT /bucket/a/b"]
    );
}

#[tokio::test]
async fn gives_up_after_max_attempts_with_the_s3_error() {
    let (m, ep) = serve(Box::new(|_, _, _| {
        (500, "<Error><Code>InternalError</Code><Message>We encountered an internal error.</Message></Error>".into())
    }))
    .await;
    let err = client(&ep)
        .put("k", Bytes::from_static(b"x"))
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("HTTP 500 InternalError: We encountered an internal error."),
        "{text}"
    );
    assert!(text.contains("s3://bucket/k"), "{text}");
    assert!(err.is_retryable());
    assert_eq!(log(&m).len(), 4);
}

#[tokio::test]
async fn client_errors_are_not_retried() {
    let (m, ep) = serve(Box::new(|_, _, _| {
        (
            403,
            "<Error><Code>AccessDenied</Code><Message>Access Denied</Message></Error>".into(),
        )
    }))
    .await;
    let err = client(&ep).get("k").await.unwrap_err();
    assert!(
        matches!(err, SinkError::S3 { status: 403, ref code, .. } if code.as_deref() == Some("AccessDenied")),
        "{err}"
    );
    assert_eq!(log(&m).len(), 1);
}

#[tokio::test]
async fn connection_errors_are_retried_then_reported() {
    // Bind and drop a listener to get a port nothing listens on.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let err = client(&format!("http://127.0.0.1:{port}"))
        .put("k", Bytes::from_static(b"x"))
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(
        matches!(err, SinkError::S3Transport { attempts: 4, .. }),
        "{text}"
    );
    assert!(!text.contains("SKTEST"));
}

#[tokio::test]
async fn failed_part_aborts_the_upload() {
    let (m, ep) = serve(Box::new(|method, uri, _| {
        let q = uri.query().unwrap_or("");
        if method == Method::POST && q == "uploads" {
            (200, "<InitiateMultipartUploadResult><Bucket>bucket</Bucket><Key>k</Key><UploadId>U1</UploadId></InitiateMultipartUploadResult>".into())
        } else if method == Method::PUT && q.starts_with("partNumber=2") {
            (400, "<Error><Code>InvalidArgument</Code><Message>bad part</Message></Error>".into())
        } else {
            (200, String::new())
        }
    }))
    .await;
    let s = client(&ep);
    let mut up = s.begin_upload("k").await.unwrap();
    // Parts are sent in the background, so the failure shows at the next write or at
    // complete; either way the upload is aborted and closed.
    let err = match up.write(Bytes::from(vec![7u8; 11 << 20])).await {
        Err(e) => {
            assert!(up.write(Bytes::from_static(b"x")).await.is_err());
            e
        }
        Ok(()) => up.complete().await.unwrap_err(),
    };
    assert!(err.to_string().contains("InvalidArgument"), "{err}");
    let mut l = log(&m);
    assert_eq!(l.first().unwrap(), "POST /bucket/k?uploads");
    assert_eq!(l.last().unwrap(), "DELETE /bucket/k?uploadId=U1", "{l:?}");
    l.sort();
    assert!(
        l.contains(&"PUT /bucket/k?partNumber=2&uploadId=U1".to_string()),
        "{l:?}"
    );
    assert!(
        !l.iter().any(|r| r == "POST /bucket/k?uploadId=U1"),
        "never completed: {l:?}"
    );
}

#[tokio::test]
async fn complete_answering_an_error_body_aborts() {
    let (m, ep) = serve(Box::new(|method, uri, _| {
        let q = uri.query().unwrap_or("");
        if method == Method::POST && q == "uploads" {
            (200, "<InitiateMultipartUploadResult><UploadId>U2</UploadId></InitiateMultipartUploadResult>".into())
        } else if method == Method::POST {
            (200, "<Error><Code>InternalError</Code><Message>try again</Message></Error>".into())
        } else {
            (200, String::new())
        }
    }))
    .await;
    let s = client(&ep);
    let mut up = s.begin_upload("k").await.unwrap();
    up.write(Bytes::from(vec![1u8; (5 << 20) + 10]))
        .await
        .unwrap();
    let err = up.complete().await.unwrap_err();
    assert!(err.to_string().contains("CompleteMultipartUpload"), "{err}");
    let l = log(&m);
    assert_eq!(l.last().unwrap(), "DELETE /bucket/k?uploadId=U2", "{l:?}");
    assert!(
        l.contains(&"PUT /bucket/k?partNumber=2&uploadId=U2".to_string()),
        "{l:?}"
    );
    let completes = l
        .iter()
        .filter(|r| *r == "POST /bucket/k?uploadId=U2")
        .count();
    assert_eq!(completes, 4, "a 200 with InternalError is retried: {l:?}");
}
