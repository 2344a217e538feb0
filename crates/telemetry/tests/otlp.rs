//! OTLP export end to end: a child process (this test binary again, so that it owns its global
//! subscriber) sets up tracing with `OTEL_EXPORTER_OTLP_ENDPOINT` pointing at a fake OTLP/HTTP
//! receiver, records a span and drops the guard; the receiver must then hold the span.

use std::process::Command;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode, header};
use axum::routing::post;
use spillway_telemetry::{TracingOptions, init_tracing};
use tokio::sync::Mutex;

/// What the receiver got: one `(content type, body)` per `POST /v1/traces`.
type Received = Arc<Mutex<Vec<(String, Vec<u8>)>>>;

const CHILD_MARKER: &str = "SPILLWAY_OTLP_TEST_CHILD";

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

/// Runs `child_exports_one_span` in a child process with `envs`; returns its stderr.
fn run_child(envs: &[(&str, String)]) -> String {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args([
        "--exact",
        "child_exports_one_span",
        "--ignored",
        "--nocapture",
        "--test-threads=1",
    ]);
    for var in [
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
        "OTEL_EXPORTER_OTLP_PROTOCOL",
        "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
        "OTEL_SERVICE_NAME",
        "OTEL_RESOURCE_ATTRIBUTES",
        "OTEL_SDK_DISABLED",
        "OTEL_TRACES_EXPORTER",
        "SPILLWAY_TRACE_FILTER",
    ] {
        cmd.env_remove(var);
    }
    cmd.env(CHILD_MARKER, "1");
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("the test binary runs again");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "child failed: {}\nstdout:\n{stdout}\nstderr:\n{stderr}",
        out.status
    );
    assert!(stdout.contains("1 passed"), "the child test ran: {stdout}");
    stderr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_reach_an_otlp_http_receiver() {
    let received: Received = Arc::default();
    let sink = received.clone();
    let app = Router::new().route(
        "/v1/traces",
        post(move |headers: HeaderMap, body: Bytes| {
            let sink = sink.clone();
            async move {
                let content_type = headers
                    .get(header::CONTENT_TYPE)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("")
                    .to_string();
                sink.lock().await.push((content_type, body.to_vec()));
                // An empty ExportTraceServiceResponse: full success.
                (
                    StatusCode::OK,
                    [(header::CONTENT_TYPE, "application/x-protobuf")],
                    Vec::<u8>::new(),
                )
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    let endpoint = format!("http://{addr}");

    // 1: the service named by OTEL_SERVICE_NAME.
    let env = [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.clone()),
        ("OTEL_SERVICE_NAME", "spillway-from-env".to_string()),
    ];
    let stderr = tokio::task::spawn_blocking(move || run_child(&env))
        .await
        .unwrap();
    let bodies = std::mem::take(&mut *received.lock().await);
    assert!(
        !bodies.is_empty(),
        "no export reached the receiver; child stderr:\n{stderr}"
    );
    for (content_type, _) in &bodies {
        assert_eq!(content_type, "application/x-protobuf");
    }
    let all: Vec<u8> = bodies.iter().flat_map(|(_, b)| b.clone()).collect();
    assert!(
        contains(&all, "export_shard"),
        "the span's name is exported"
    );
    assert!(
        contains(&all, "shard-0007"),
        "the span's fields are exported"
    );
    assert!(
        contains(&all, "spillway-from-env"),
        "OTEL_SERVICE_NAME names the service"
    );
    assert!(!contains(&all, "the-default-name"));

    // 2: no service name in the environment: the caller's default.
    let env = [("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.clone())];
    let stderr = tokio::task::spawn_blocking(move || run_child(&env))
        .await
        .unwrap();
    let bodies = std::mem::take(&mut *received.lock().await);
    let all: Vec<u8> = bodies.iter().flat_map(|(_, b)| b.clone()).collect();
    assert!(contains(&all, "export_shard"), "child stderr:\n{stderr}");
    assert!(contains(&all, "the-default-name"));

    // 3: no endpoint: nothing is exported (the child asserts it is not exporting).
    let stderr = tokio::task::spawn_blocking(|| run_child(&[("EXPECT_NO_EXPORT", "1".into())]))
        .await
        .unwrap();
    assert!(received.lock().await.is_empty(), "child stderr:\n{stderr}");
    server.abort();
}

/// The child half of [`spans_reach_an_otlp_http_receiver`]; meaningless on its own.
#[test]
#[ignore = "run as a child process by spans_reach_an_otlp_http_receiver"]
fn child_exports_one_span() {
    assert!(
        std::env::var_os(CHILD_MARKER).is_some(),
        "only run by spans_reach_an_otlp_http_receiver"
    );
    let guard = init_tracing(TracingOptions {
        filter: "warn".into(),
        json: false,
        service_name: "the-default-name".into(),
    });
    let expect_export = std::env::var_os("EXPECT_NO_EXPORT").is_none();
    assert_eq!(guard.exporting(), expect_export);
    {
        let span = tracing::info_span!(target: "spillway_engine::worker", "export_shard", shard = "shard-0007");
        let _entered = span.enter();
        tracing::info!(target: "spillway_engine::worker", docs = 10, "exported");
    }
    // Dropping the guard exports what is buffered before the process ends.
    drop(guard);
}
