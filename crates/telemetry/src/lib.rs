//! What a running spillway process tells the outside world about itself:
//!
//! - [`trace`] sets up logging to stderr (text or JSON) and, when
//!   `OTEL_EXPORTER_OTLP_ENDPOINT` is set, exports spans over OTLP/HTTP (protobuf);
//! - [`metrics`] exposes the engine's live counters ([`spillway_engine::Progress`]) as
//!   Prometheus/OpenMetrics families, read at scrape time (nothing is counted twice);
//! - [`server`] serves `/healthz`, `/readyz` and `/metrics` over HTTP for probes and scrapers.

mod error;
pub mod metrics;
pub mod server;
pub mod trace;

pub use error::TelemetryError;
pub use metrics::{
    QueueDepth, coordinator_registry, encode_metrics, poll_queue_depth, worker_registry,
};
pub use prometheus_client::registry::Registry;
pub use server::{Health, serve};
pub use trace::{TracingGuard, TracingOptions, init_tracing};
