//! An OpenSearch/Elasticsearch-compatible test cluster: in-memory indices, PIT, scroll, slices,
//! faults, a data generator.
//!
//! `searchsim` serves the REST subset that spillway and its peers (opensearch-py `helpers.scan`,
//! elasticdump, the elasticsearch Python client) use, with the servers' routing, slicing,
//! `_shard_doc`, snapshot and error semantics (see `shared/OPENSEARCH-API.md`). It runs as a
//! binary (`searchsim --port 0`), or in-process through [`SearchSim::start`], which returns a
//! [`RunningSim`] with direct access to the [`Cluster`] for loading data and injecting faults.
//!
//! Layout: `routing` (murmur3, `_id` encoding, shard and slice selection), `timeval` (time
//! values, dates, date math), `mapping` (mappings and doc values), `query` (query DSL),
//! `search` (search, PIT, scroll, rendering), `aggs`, `cluster` (state and writes), `docs`
//! (document and bulk APIs), `admin` (index, alias, settings, cat, info APIs), `faults`,
//! `auth`, `tls`, `server` (HTTP transport, SigV4 verification, dispatch), `datagen`
//! (deterministic events).

pub mod admin;
pub mod aggs;
pub mod auth;
pub mod bulkload;
pub mod cluster;
pub mod datagen;
pub mod docs;
pub mod error;
pub mod faults;
pub mod mapping;
pub mod query;
pub mod routing;
pub mod search;
pub mod server;
pub mod timeval;
pub mod tls;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

pub use auth::{ApiKey, Auth, User};
pub use cluster::Cluster;
pub use error::{ApiError, Error};
pub use faults::Faults;

/// Which server the simulator imitates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Flavor {
    /// OpenSearch (`/_search/point_in_time`, `rejected_execution_exception`).
    OpenSearch,
    /// Elasticsearch (`/_pit`, implicit `_shard_doc`, `es_rejected_execution_exception`).
    Elasticsearch,
}

impl std::str::FromStr for Flavor {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "opensearch" | "os" => Ok(Self::OpenSearch),
            "elasticsearch" | "es" => Ok(Self::Elasticsearch),
            other => Err(format!(
                "unknown flavor [{other}]; use opensearch or elasticsearch"
            )),
        }
    }
}

/// TLS settings: a CA and server certificate are generated at start; `ca.pem` goes to `dir`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tls {
    /// Directory that receives `ca.pem` (created if missing).
    pub dir: PathBuf,
}

/// An AWS SigV4 access key accepted when signature verification is on. `Debug` redacts the
/// secret.
#[derive(Clone, PartialEq, Eq)]
pub struct SigV4Key {
    /// Access key id.
    pub access_key_id: String,
    secret_access_key: String,
}

impl SigV4Key {
    /// A key pair.
    pub fn new(access_key_id: impl Into<String>, secret_access_key: impl Into<String>) -> Self {
        Self {
            access_key_id: access_key_id.into(),
            secret_access_key: secret_access_key.into(),
        }
    }

    pub(crate) fn secret(&self) -> &str {
        &self.secret_access_key
    }
}

impl std::fmt::Debug for SigV4Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigV4Key")
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"<redacted>")
            .finish()
    }
}

/// Simulator configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Server flavor.
    pub flavor: Flavor,
    /// Version reported by `GET /` and used for version-gated behaviour (`_shard_doc` on OS 3.3+).
    pub version: String,
    /// Listen address (`127.0.0.1:0` picks a free port).
    pub bind: SocketAddr,
    /// Fault knobs at start.
    pub faults: Faults,
    /// Authentication; `None` accepts every request.
    pub auth: Option<Auth>,
    /// HTTPS; `None` serves plain HTTP.
    pub tls: Option<Tls>,
    /// Periodic refresh like `index.refresh_interval` (default 1s); `None` refreshes only on request.
    pub refresh_interval: Option<Duration>,
    /// Cluster name reported by `GET /` and `_cluster/health`.
    pub cluster_name: String,
    /// When non-empty, every request must carry a valid AWS SigV4 signature by one of these keys
    /// (Amazon OpenSearch Service style, service `es` or `aoss`).
    pub sigv4: Vec<SigV4Key>,
}

impl Default for Config {
    fn default() -> Self {
        Self::opensearch()
    }
}

impl Config {
    fn base(flavor: Flavor, version: &str) -> Self {
        Self {
            flavor,
            version: version.to_string(),
            bind: SocketAddr::from(([127, 0, 0, 1], 0)),
            faults: Faults::default(),
            auth: None,
            tls: None,
            refresh_interval: Some(Duration::from_secs(1)),
            cluster_name: "searchsim".to_string(),
            sigv4: Vec::new(),
        }
    }

    /// OpenSearch 2.19.0.
    pub fn opensearch() -> Self {
        Self::base(Flavor::OpenSearch, "2.19.0")
    }

    /// OpenSearch 3.3.0 (explicit `_shard_doc`).
    pub fn opensearch_3() -> Self {
        Self::base(Flavor::OpenSearch, "3.3.0")
    }

    /// Elasticsearch 8.15.0.
    pub fn elasticsearch() -> Self {
        Self::base(Flavor::Elasticsearch, "8.15.0")
    }

    /// Sets the version string.
    pub fn with_version(mut self, version: impl Into<String>) -> Self {
        self.version = version.into();
        self
    }

    /// Sets the listen address.
    pub fn with_bind(mut self, bind: SocketAddr) -> Self {
        self.bind = bind;
        self
    }

    /// Sets the fault knobs.
    pub fn with_faults(mut self, faults: Faults) -> Self {
        self.faults = faults;
        self
    }

    /// Enables authentication.
    pub fn with_auth(mut self, auth: Auth) -> Self {
        self.auth = Some(auth);
        self
    }

    /// Enables HTTPS, writing `ca.pem` into `dir`.
    pub fn with_tls(mut self, dir: impl Into<PathBuf>) -> Self {
        self.tls = Some(Tls { dir: dir.into() });
        self
    }

    /// Requires SigV4-signed requests and accepts this key (may be called repeatedly).
    pub fn with_sigv4(
        mut self,
        access_key_id: impl Into<String>,
        secret_access_key: impl Into<String>,
    ) -> Self {
        self.sigv4
            .push(SigV4Key::new(access_key_id, secret_access_key));
        self
    }

    /// Sets (or disables with `None`) the periodic refresh.
    pub fn with_refresh_interval(mut self, interval: Option<Duration>) -> Self {
        self.refresh_interval = interval;
        self
    }
}

/// Entry point: starts a simulator.
#[derive(Debug)]
pub struct SearchSim;

impl SearchSim {
    /// Binds, starts serving, and returns the running simulator.
    pub async fn start(config: Config) -> Result<RunningSim, Error> {
        server::start(config).await
    }
}

/// A running simulator.
pub struct RunningSim {
    pub(crate) addr: SocketAddr,
    pub(crate) https: bool,
    pub(crate) cluster: Cluster,
    pub(crate) shutdown: tokio::sync::watch::Sender<bool>,
    pub(crate) tasks: Vec<tokio::task::JoinHandle<()>>,
    pub(crate) ca_pem: Option<String>,
}

impl std::fmt::Debug for RunningSim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunningSim")
            .field("addr", &self.addr)
            .field("https", &self.https)
            .finish_non_exhaustive()
    }
}

impl RunningSim {
    /// Bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Base URL, `http://127.0.0.1:PORT` (`https://` with TLS).
    pub fn url(&self) -> String {
        format!(
            "{}://{}",
            if self.https { "https" } else { "http" },
            self.addr
        )
    }

    /// In-process access to the cluster.
    pub fn cluster(&self) -> &Cluster {
        &self.cluster
    }

    /// PEM of the generated CA when TLS is on.
    pub fn ca_pem(&self) -> Option<&str> {
        self.ca_pem.as_deref()
    }

    /// Stops accepting, closes connections and background tasks.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        for t in self.tasks {
            let _ = t.await;
        }
    }
}
