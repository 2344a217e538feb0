//! The telemetry crate's one error type.

use std::net::SocketAddr;

#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error(
        "cannot listen for health and metrics requests on {addr}: {source}; pick a free port with --listen"
    )]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot encode the metrics as OpenMetrics text: {0}")]
    Encode(#[from] std::fmt::Error),
    #[error(
        "cannot set up the OTLP trace exporter for {endpoint}: {reason}; check the OTEL_EXPORTER_OTLP_* variables"
    )]
    Exporter { endpoint: String, reason: String },
}
