//! Logging and distributed tracing of one process.
//!
//! Log lines go to stderr as text or JSON, filtered by the user's filter (`--log`). When
//! `OTEL_EXPORTER_OTLP_ENDPOINT` (or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is set, spans are
//! also exported over OTLP/HTTP with protobuf bodies to `<endpoint>/v1/traces`, batched in
//! the background. The standard variables apply: `OTEL_SERVICE_NAME` and
//! `OTEL_RESOURCE_ATTRIBUTES` name the service (else the caller's default name),
//! `OTEL_EXPORTER_OTLP_HEADERS` adds headers (e.g. an API key), `OTEL_EXPORTER_OTLP_TIMEOUT`
//! bounds one export, `OTEL_SDK_DISABLED=true` or `OTEL_TRACES_EXPORTER=none` turn export off.
//! Which spans are exported is chosen by `SPILLWAY_TRACE_FILTER` (default `warn,spillway=info`),
//! independently of the log filter, so a quiet log still yields complete traces.
//!
//! Exports run on a small runtime of their own (one thread), so they work before, during and
//! after the application's runtime and never compete with its tasks. The returned
//! [`TracingGuard`] flushes the spans still buffered and shuts the exporter down on drop.

use std::io::IsTerminal;
use std::time::Duration;

use async_trait::async_trait;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry::{Key, KeyValue};
use opentelemetry_http::{Bytes, HttpClient, HttpError, Request, Response};
use opentelemetry_otlp::{Protocol, SpanExporter, WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::resource::{EnvResourceDetector, ResourceDetector};
use opentelemetry_sdk::trace::SdkTracerProvider;
use spillway_source::redact_url;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer, Registry, fmt};

use crate::TelemetryError;

/// Spans exported over OTLP when `SPILLWAY_TRACE_FILTER` is not set.
pub const DEFAULT_TRACE_FILTER: &str = "warn,spillway=info";

/// How to log and trace.
#[derive(Clone, Debug)]
pub struct TracingOptions {
    /// Log filter in `EnvFilter` syntax, e.g. `info` or `spillway_engine=debug`.
    pub filter: String,
    /// Log as JSON lines instead of text.
    pub json: bool,
    /// `service.name` of exported spans unless `OTEL_SERVICE_NAME` or
    /// `OTEL_RESOURCE_ATTRIBUTES` names the service.
    pub service_name: String,
}

/// Keeps the trace exporter alive; dropping it exports the spans still buffered and shuts
/// the exporter down. Hold it until the process ends.
#[must_use = "dropping the guard shuts the trace exporter down"]
pub struct TracingGuard {
    otlp: Option<Otlp>,
}

impl TracingGuard {
    /// True when spans are exported over OTLP.
    pub fn exporting(&self) -> bool {
        self.otlp.is_some()
    }
}

impl std::fmt::Debug for TracingGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TracingGuard")
            .field("exporting", &self.exporting())
            .finish()
    }
}

impl Drop for TracingGuard {
    fn drop(&mut self) {
        if let Some(otlp) = self.otlp.take() {
            otlp.shutdown();
        }
    }
}

/// Installs the global subscriber: logs to stderr and, when the OTLP endpoint variables are
/// set, span export. Problems with the exporter's configuration are logged, never fatal.
pub fn init_tracing(opts: TracingOptions) -> TracingGuard {
    let mut notes: Vec<String> = Vec::new();
    let filter = EnvFilter::try_new(&opts.filter).unwrap_or_else(|e| {
        notes.push(format!(
            "log filter [{}] is not valid ({e}); logging warnings only",
            opts.filter
        ));
        EnvFilter::new("warn")
    });

    let mut otlp = None;
    if let Some(endpoint) = otlp_endpoint() {
        match Otlp::start(&opts.service_name) {
            Ok(o) => otlp = Some(o),
            Err(e) => notes.push(format!(
                "{e}; spans of {} are not exported",
                opts.service_name
            )),
        }
        if otlp.is_some() {
            notes.push(format!(
                "exporting spans over OTLP/HTTP to {}",
                redact_url(&endpoint)
            ));
        }
    }

    let fmt_layer = if opts.json {
        fmt::layer().json().with_writer(std::io::stderr).boxed()
    } else {
        // Colours only on a terminal: log collectors and pipes get plain text.
        let ansi = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
        fmt::layer()
            .with_ansi(ansi)
            .with_writer(std::io::stderr)
            .boxed()
    }
    .with_filter(filter);
    let otel_layer = otlp.as_ref().map(|o: &Otlp| {
        let trace_filter = std::env::var("SPILLWAY_TRACE_FILTER")
            .ok()
            .filter(|s| !s.trim().is_empty())
            .and_then(|s| EnvFilter::try_new(s).ok())
            .unwrap_or_else(|| EnvFilter::new(DEFAULT_TRACE_FILTER));
        tracing_opentelemetry::layer()
            .with_tracer(o.provider.tracer("spillway"))
            .with_filter(trace_filter)
    });
    let installed = Registry::default()
        .with(fmt_layer)
        .with(otel_layer)
        .try_init();
    if let Err(e) = installed {
        // Another subscriber owns this process (tests, embedding): it keeps logging.
        eprintln!("warning: logging was already set up ({e}); spans are not exported from here");
        if let Some(o) = otlp.take() {
            o.shutdown();
        }
        return TracingGuard { otlp: None };
    }
    for note in notes {
        if otlp.is_some() && note.starts_with("exporting") {
            tracing::info!("{note}");
        } else {
            tracing::warn!("{note}");
        }
    }
    TracingGuard { otlp }
}

/// The configured OTLP endpoint, unless export is switched off.
fn otlp_endpoint() -> Option<String> {
    let var = |name: &str| {
        std::env::var(name)
            .ok()
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
    };
    if var("OTEL_SDK_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true"))
        || var("OTEL_TRACES_EXPORTER").is_some_and(|v| v.eq_ignore_ascii_case("none"))
    {
        return None;
    }
    var("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").or_else(|| var("OTEL_EXPORTER_OTLP_ENDPOINT"))
}

/// The running exporter: the tracer provider and the runtime its requests run on.
struct Otlp {
    provider: SdkTracerProvider,
    runtime: ExportRuntime,
}

impl Otlp {
    fn start(default_service_name: &str) -> Result<Otlp, TelemetryError> {
        let endpoint = otlp_endpoint().unwrap_or_default();
        let fail = |reason: String| TelemetryError::Exporter {
            endpoint: redact_url(&endpoint),
            reason,
        };
        let protocol = std::env::var("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
            .or_else(|_| std::env::var("OTEL_EXPORTER_OTLP_PROTOCOL"))
            .unwrap_or_default();
        let protocol = protocol.trim();
        if !protocol.is_empty() && protocol != "http/protobuf" {
            return Err(fail(format!(
                "OTEL_EXPORTER_OTLP_PROTOCOL is [{protocol}] but only http/protobuf is supported \
                 (point the endpoint at the collector's OTLP/HTTP port, usually 4318)"
            )));
        }
        // reqwest is built without a default TLS provider; spillway uses ring everywhere.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let timeout = export_timeout();
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .build()
            .map_err(|e| fail(format!("cannot build the HTTP client: {e}")))?;
        let runtime = ExportRuntime::start()
            .map_err(|e| fail(format!("cannot start the export thread: {e}")))?;
        let exporter = SpanExporter::builder()
            .with_http()
            .with_protocol(Protocol::HttpBinary)
            .with_timeout(timeout)
            .with_http_client(SpawningClient {
                client,
                runtime: runtime.handle.clone(),
            })
            .build()
            .map_err(|e| fail(e.to_string()))?;
        let provider = SdkTracerProvider::builder()
            .with_resource(resource(default_service_name))
            .with_batch_exporter(exporter)
            .build();
        Ok(Otlp { provider, runtime })
    }

    /// Exports what is buffered, then stops the exporter and its thread.
    fn shutdown(mut self) {
        if let Err(e) = self.provider.shutdown() {
            eprintln!("warning: could not export the last spans over OTLP: {e}");
        }
        self.runtime.stop();
    }
}

/// `service.name` from the environment if it names one, else `default_service_name`; plus
/// every attribute of `OTEL_RESOURCE_ATTRIBUTES`.
fn resource(default_service_name: &str) -> Resource {
    let env_names_service = std::env::var("OTEL_SERVICE_NAME").is_ok_and(|s| !s.trim().is_empty())
        || EnvResourceDetector::new()
            .detect()
            .get(&Key::new("service.name"))
            .is_some();
    let mut builder = Resource::builder();
    if !env_names_service {
        builder = builder.with_service_name(default_service_name.to_string());
    }
    builder
        .with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")))
        .build()
}

/// `OTEL_EXPORTER_OTLP_TRACES_TIMEOUT` / `OTEL_EXPORTER_OTLP_TIMEOUT` in milliseconds, else 10 s.
fn export_timeout() -> Duration {
    std::env::var("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT")
        .or_else(|_| std::env::var("OTEL_EXPORTER_OTLP_TIMEOUT"))
        .ok()
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_millis)
        .unwrap_or(Duration::from_secs(10))
}

/// A one-thread runtime that runs the exporter's HTTP requests.
struct ExportRuntime {
    handle: tokio::runtime::Handle,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl ExportRuntime {
    fn start() -> std::io::Result<ExportRuntime> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let handle = runtime.handle().clone();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("otlp-export".into())
            .spawn(move || {
                runtime.block_on(async {
                    let _ = stopped.await;
                });
            })?;
        Ok(ExportRuntime {
            handle,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for ExportRuntime {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The async `reqwest` client, each request spawned onto the export runtime: the SDK's batch
/// processor waits for exports on a plain thread, where a tokio-based client cannot run.
#[derive(Debug)]
struct SpawningClient {
    client: reqwest::Client,
    runtime: tokio::runtime::Handle,
}

#[async_trait]
impl HttpClient for SpawningClient {
    async fn send_bytes(&self, request: Request<Bytes>) -> Result<Response<Bytes>, HttpError> {
        let client = self.client.clone();
        self.runtime
            .spawn(async move { client.send_bytes(request).await })
            .await?
    }
}
