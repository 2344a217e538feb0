//! The probe and scrape endpoint of a long-running process:
//!
//! - `GET /healthz`: 200 while the process serves requests at all (liveness);
//! - `GET /readyz`: 200 when the process's readiness check passes (a worker: connected to
//!   the broker and consuming), else 503 with a one-line reason (readiness);
//! - `GET /metrics`: the registry in the OpenMetrics text format.

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use prometheus_client::registry::Registry;
use tokio::task::JoinHandle;

use crate::TelemetryError;
use crate::metrics::encode_metrics;

/// The content type of `/metrics`.
pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";

type Check = dyn Fn() -> Result<(), String> + Send + Sync;

/// The readiness check of a process: `Ok(())` when it should receive work, else why not.
#[derive(Clone)]
pub struct Health {
    ready: Arc<Check>,
}

impl Health {
    /// Ready when `check` returns `Ok(())`; its `Err` text is the 503 body (one line).
    pub fn new(check: impl Fn() -> Result<(), String> + Send + Sync + 'static) -> Self {
        Health {
            ready: Arc::new(check),
        }
    }

    /// Always ready (a process with nothing to wait for).
    pub fn always_ready() -> Self {
        Health::new(|| Ok(()))
    }

    /// Runs the check.
    pub fn readiness(&self) -> Result<(), String> {
        (self.ready)()
    }
}

impl fmt::Debug for Health {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Health")
            .field("ready", &self.readiness().is_ok())
            .finish()
    }
}

#[derive(Clone)]
struct AppState {
    health: Health,
    registry: Arc<Registry>,
}

/// The router alone (for embedding or for tests that drive it without a socket).
pub fn router(health: Health, registry: Registry) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(AppState {
            health,
            registry: Arc::new(registry),
        })
}

/// Listens on `addr` (port 0 picks a free port) and serves the three endpoints until the
/// returned task is aborted. Returns the address actually bound.
pub async fn serve(
    addr: SocketAddr,
    health: Health,
    registry: Registry,
) -> Result<(SocketAddr, JoinHandle<()>), TelemetryError> {
    let bind = |source| TelemetryError::Bind { addr, source };
    let listener = tokio::net::TcpListener::bind(addr).await.map_err(bind)?;
    let local = listener.local_addr().map_err(bind)?;
    let app = router(health, registry);
    let handle = tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(addr = %local, error = %e, "the health and metrics endpoint stopped");
        }
    });
    Ok((local, handle))
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(state): State<AppState>) -> Response {
    match state.health.readiness() {
        Ok(()) => (StatusCode::OK, "ready\n").into_response(),
        Err(reason) => {
            let line = reason.replace(['\n', '\r'], " ");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                format!("not ready: {line}\n"),
            )
                .into_response()
        }
    }
}

async fn metrics(State(state): State<AppState>) -> Response {
    match encode_metrics(&state.registry) {
        Ok(text) => ([(header::CONTENT_TYPE, OPENMETRICS_CONTENT_TYPE)], text).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")).into_response(),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};

    use spillway_engine::Progress;

    use super::*;
    use crate::metrics::worker_registry;

    async fn get(addr: SocketAddr, path: &str) -> (u16, String, String) {
        let resp = reqwest::get(format!("http://{addr}{path}")).await.unwrap();
        let status = resp.status().as_u16();
        let content_type = resp
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        (status, content_type, resp.text().await.unwrap())
    }

    #[tokio::test]
    async fn probes_and_metrics_over_http() {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let ready = Arc::new(AtomicBool::new(false));
        let flag = ready.clone();
        let health = Health::new(move || {
            if flag.load(Ordering::SeqCst) {
                Ok(())
            } else {
                Err("not connected to the broker\nyet".into())
            }
        });
        let progress = Arc::new(Progress::default());
        let (addr, server) = serve(
            "127.0.0.1:0".parse().unwrap(),
            health,
            worker_registry(progress.clone()),
        )
        .await
        .unwrap();
        assert_ne!(addr.port(), 0);

        assert_eq!(get(addr, "/healthz").await.0, 200);
        let (status, _, body) = get(addr, "/readyz").await;
        assert_eq!(status, 503);
        assert_eq!(body, "not ready: not connected to the broker yet\n");

        ready.store(true, Ordering::SeqCst);
        assert_eq!(get(addr, "/readyz").await.0, 200);
        assert_eq!(get(addr, "/healthz").await.0, 200);

        progress.add_docs(77);
        let (status, content_type, body) = get(addr, "/metrics").await;
        assert_eq!(status, 200);
        assert_eq!(content_type, OPENMETRICS_CONTENT_TYPE);
        assert!(
            body.lines()
                .any(|l| l == "spillway_documents_exported_total 77"),
            "{body}"
        );
        assert!(body.ends_with("# EOF\n"));
        assert_eq!(get(addr, "/nope").await.0, 404);

        server.abort();
    }

    #[tokio::test]
    async fn a_taken_port_is_a_clear_error() {
        let taken = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = taken.local_addr().unwrap();
        let e = serve(
            addr,
            Health::always_ready(),
            worker_registry(Arc::default()),
        )
        .await
        .unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains(&addr.to_string()) && msg.contains("--listen"),
            "{msg}"
        );
    }
}
