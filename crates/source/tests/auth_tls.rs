//! Authentication and transport security: Basic and API-key auth against searchsim (401 and
//! 403 messages without secrets), TLS with an extra CA / without it / with verification
//! skipped, SigV4 signing checked by a small verifying server, and the rate limiter.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use searchsim::datagen::{self, DataSpec};
use searchsim::{ApiKey, Auth as SimAuth, Config, SearchSim, User};
use serde_json::json;
use spillway_source::{Auth, Client, Flavor, RetryPolicy, SourceConfig, SourceError, Target};

fn config(url: &str, auth: Auth) -> SourceConfig {
    let mut c = SourceConfig::new(url);
    c.auth = auth;
    c.retry = RetryPolicy {
        max_retries: 2,
        initial_backoff: Duration::from_millis(1),
        max_backoff: Duration::from_millis(5),
    };
    c
}

fn small() -> DataSpec {
    DataSpec {
        docs: 50,
        days: 1,
        shards: 2,
        large_every: 0,
        ..DataSpec::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn basic_auth_and_its_errors_on_opensearch() {
    let auth = SimAuth {
        users: vec![
            User::new("reader", "s3cret-pw"),
            User::new("narrow", "n4rrow-pw").with_indices(&["other-*"]),
        ],
        api_keys: vec![],
    };
    let sim = SearchSim::start(Config::opensearch().with_auth(auth))
        .await
        .unwrap();
    datagen::load(sim.cluster(), &small()).unwrap();

    let ok = Client::connect(config(
        &sim.url(),
        Auth::Basic {
            username: "reader".into(),
            password: "s3cret-pw".into(),
        },
    ))
    .await
    .unwrap();
    let n = ok
        .count(&Target::Indices(vec!["logs-*".into()]), &json!({}))
        .await
        .unwrap();
    assert_eq!(n, 50);

    // Credentials in the URL work too and never show up in messages.
    let (scheme, host) = sim
        .url()
        .split_once("://")
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .unwrap();
    let in_url = Client::connect(config(
        &format!("{scheme}://reader:s3cret-pw@{host}"),
        Auth::None,
    ))
    .await
    .unwrap();
    assert!(!in_url.url().contains("s3cret"));
    assert!(!format!("{in_url:?}").contains("s3cret"));

    // Wrong password: OpenSearch answers a plain-text 401.
    let err = Client::connect(config(
        &sim.url(),
        Auth::Basic {
            username: "reader".into(),
            password: "wrong-pw-123".into(),
        },
    ))
    .await
    .unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.starts_with(&format!("authentication failed for {}", sim.url())),
        "{msg}"
    );
    assert!(msg.contains("check the credentials in"), "{msg}");
    assert!(!msg.contains("wrong-pw-123") && !format!("{err:?}").contains("wrong-pw-123"));
    assert!(!err.is_retryable());

    // A user without access to the index: 403 names action and user.
    let narrow = Client::connect(config(
        &sim.url(),
        Auth::Basic {
            username: "narrow".into(),
            password: "n4rrow-pw".into(),
        },
    ))
    .await
    .unwrap();
    let err = narrow
        .open_snapshot(&["logs-*".into()], "1m")
        .await
        .unwrap_err();
    match &err {
        SourceError::Forbidden { user, action, .. } => {
            assert_eq!(user, "narrow");
            assert!(action.starts_with("indices:"), "{action}");
        }
        other => panic!("expected Forbidden, got {other}"),
    }
    assert!(!err.to_string().contains("n4rrow-pw"));
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_key_auth_on_elasticsearch() {
    let auth = SimAuth {
        users: vec![],
        api_keys: vec![ApiKey::new("key-1", "k3y-s3cret")],
    };
    let sim = SearchSim::start(Config::elasticsearch().with_auth(auth))
        .await
        .unwrap();
    datagen::load(sim.cluster(), &small()).unwrap();
    let key = base64::engine::general_purpose::STANDARD.encode("key-1:k3y-s3cret");
    let client = Client::connect(config(&sim.url(), Auth::ApiKey(key)))
        .await
        .unwrap();
    assert_eq!(client.info().flavor, Flavor::Elasticsearch);
    let snap = client
        .open_snapshot(&["logs-*".into()], "1m")
        .await
        .unwrap();
    assert_eq!(
        client
            .count(&Target::Snapshot(snap.clone()), &json!({"match_all": {}}))
            .await
            .unwrap(),
        50
    );
    client.close_snapshot(&snap).await.unwrap();

    let bad = base64::engine::general_purpose::STANDARD.encode("key-1:not-the-key");
    let err = Client::connect(config(&sim.url(), Auth::ApiKey(bad.clone())))
        .await
        .unwrap_err();
    assert!(matches!(err, SourceError::Authentication { .. }), "{err}");
    assert!(!err.to_string().contains(&bad));
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_extra_ca_without_it_and_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let sim = SearchSim::start(Config::opensearch().with_tls(dir.path()))
        .await
        .unwrap();
    let url = sim.url();
    assert!(url.starts_with("https://"));
    let ca = sim
        .ca_pem()
        .expect("the simulator made a CA")
        .as_bytes()
        .to_vec();

    let mut c = config(&url, Auth::None);
    c.ca_pem = Some(ca);
    let client = Client::connect(c).await.unwrap();
    assert_eq!(client.info().flavor, Flavor::Opensearch);

    let err = Client::connect(config(&url, Auth::None)).await.unwrap_err();
    assert!(matches!(err, SourceError::Tls { .. }), "{err}");
    assert!(err.to_string().contains("TLS handshake with"), "{err}");
    assert!(!err.is_retryable());

    let mut c = config(&url, Auth::None);
    c.insecure_skip_verify = true;
    Client::connect(c).await.unwrap();
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_per_second_is_enforced_across_clones() {
    let sim = SearchSim::start(Config::opensearch()).await.unwrap();
    datagen::load(sim.cluster(), &small()).unwrap();
    let mut c = config(&sim.url(), Auth::None);
    c.requests_per_second = Some(20);
    let client = Client::connect(c).await.unwrap();
    let other = client.clone();
    let started = tokio::time::Instant::now();
    let target = Target::Indices(vec!["logs-*".into()]);
    let (a, b) = tokio::join!(
        async {
            for _ in 0..5 {
                client.count(&target, &json!({})).await.unwrap();
            }
        },
        async {
            for _ in 0..5 {
                other.count(&target, &json!({})).await.unwrap();
            }
        }
    );
    let _ = (a, b);
    // 10 requests after the connect request, 50 ms apart at least.
    assert!(
        started.elapsed() >= Duration::from_millis(480),
        "{:?}",
        started.elapsed()
    );
    sim.shutdown().await;
}

// ---- SigV4 against a verifying stub ---------------------------------------------------

#[derive(Clone, Default)]
struct Seen {
    requests: Arc<Mutex<Vec<(String, bool, bool)>>>,
}

const OS_MAIN: &str = r#"{"name":"n","cluster_name":"c","version":{"distribution":"opensearch","number":"2.17.0","lucene_version":"9.11.1"},"tagline":"The OpenSearch Project: https://opensearch.org/"}"#;

async fn sigv4_stub(
    State((seen, serverless)): State<(Seen, bool)>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let full: http::Uri = format!(
        "http://{}{}",
        headers
            .get("host")
            .and_then(|h| h.to_str().ok())
            .unwrap_or("?"),
        uri.path_and_query().map(|p| p.as_str()).unwrap_or("/")
    )
    .parse()
    .unwrap();
    let verified = spillway_sigv4::verify(
        &method,
        &full,
        &headers,
        &body,
        |key| (key == "AKIDTEST").then(|| "sk-TEST-secret".to_string()),
        chrono::Utc::now(),
        chrono::Duration::minutes(5),
    );
    let has_hash = headers.contains_key("x-amz-content-sha256");
    seen.requests
        .lock()
        .unwrap()
        .push((uri.path().to_string(), verified.is_ok(), has_hash));
    match verified {
        Ok(id) => {
            assert_eq!(id.region, "eu-west-1");
        }
        Err(e) => {
            return (
                StatusCode::FORBIDDEN,
                json!({"message": e.to_string()}).to_string(),
            )
                .into_response();
        }
    }
    match (method.as_str(), uri.path()) {
        ("GET", "/") if serverless => (StatusCode::NOT_FOUND, "").into_response(),
        ("GET", "/") => (StatusCode::OK, OS_MAIN).into_response(),
        ("POST", "/logs/_search") => (
            StatusCode::OK,
            r#"{"took":1,"timed_out":false,"_shards":{"total":1,"successful":1,"skipped":0,"failed":0},"hits":{"total":{"value":7,"relation":"eq"},"max_score":null,"hits":[]}}"#,
        )
            .into_response(),
        _ => (StatusCode::NOT_FOUND, "{}").into_response(),
    }
}

async fn start_stub(serverless: bool) -> (SocketAddr, Seen) {
    let seen = Seen::default();
    let app = axum::Router::new()
        .fallback(sigv4_stub)
        .with_state((seen.clone(), serverless));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    (addr, seen)
}

fn sigv4(service: &str, secret: &str) -> Auth {
    Auth::SigV4 {
        credentials: spillway_sigv4::Credentials {
            access_key_id: "AKIDTEST".into(),
            secret_access_key: secret.into(),
            session_token: None,
        },
        region: "eu-west-1".into(),
        service: service.into(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigv4_signs_every_request() {
    let (addr, seen) = start_stub(false).await;
    let client = Client::connect(config(
        &format!("http://{addr}"),
        sigv4("es", "sk-TEST-secret"),
    ))
    .await
    .unwrap();
    assert_eq!(client.info().flavor, Flavor::Opensearch);
    let n = client
        .count(
            &Target::Indices(vec!["logs".into()]),
            &json!({"match_all": {}}),
        )
        .await
        .unwrap();
    assert_eq!(n, 7);
    let reqs = seen.requests.lock().unwrap().clone();
    assert_eq!(reqs.len(), 2);
    assert!(reqs.iter().all(|(_, ok, hash)| *ok && *hash), "{reqs:?}");

    // A wrong secret is rejected by the server's signature check.
    let err = Client::connect(config(
        &format!("http://{addr}"),
        sigv4("es", "wrong-secret"),
    ))
    .await
    .unwrap_err();
    assert!(matches!(err, SourceError::Forbidden { .. }), "{err}");
    assert!(err.to_string().contains("SignatureDoesNotMatch"), "{err}");
    assert!(!err.to_string().contains("wrong-secret"));
    assert!(!format!("{err:?}").contains("wrong-secret"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aoss_is_serverless_with_pit_and_no_scroll() {
    let (addr, seen) = start_stub(true).await;
    let client = Client::connect(config(
        &format!("http://{addr}"),
        sigv4("aoss", "sk-TEST-secret"),
    ))
    .await
    .unwrap();
    let info = client.info();
    assert!(info.serverless);
    assert!(info.capabilities.pit && !info.capabilities.scroll);
    assert_eq!(info.version_label(), "serverless");
    let reqs = seen.requests.lock().unwrap().clone();
    assert!(reqs.iter().all(|(_, ok, hash)| *ok && *hash), "{reqs:?}");

    let err = Client::connect(config(
        &format!("http://{addr}"),
        sigv4("s3", "sk-TEST-secret"),
    ))
    .await
    .unwrap_err();
    assert!(matches!(err, SourceError::Config(_)), "{err}");
}
