//! The OpenSearch/Elasticsearch client of spillway: connects and detects the flavor,
//! version and capabilities of a cluster (`GET /`), authenticates (Basic, API key, AWS
//! SigV4), opens and keeps alive the job's point-in-time snapshot (scroll where there is no
//! PIT), counts and histograms under it, and reads one shard of an export page by page
//! with `search_after` on a unique total order, proving completeness against
//! `hits.total`. Transient failures (429 rejections, transient circuit breakers, 5xx,
//! dropped connections, timeouts, cut-off bodies) are retried with exponential backoff and
//! full jitter and counted in [`ClientStats`]; everything else becomes a precise
//! [`SourceError`].
//!
//! Pages keep the response body and hand out documents as borrowed [`DocRef`]s: the raw
//! `_source` text reaches the encoders without a copy.

mod client;
mod config;
mod error;
mod info;
mod page;
mod reader;
mod tls;
mod transport;
mod walk;

pub use client::{Client, Snapshot, SnapshotKind, Target};
pub use config::{Auth, RetryPolicy, SourceConfig};
pub use error::{RetryReason, SourceError};
pub use info::{Capabilities, ClusterInfo, DetectError, Version, capabilities, detect};
pub use page::{Page, PageError, ShardFailures, Total};
pub use reader::{ShardReader, ShardRequest};
pub use spillway_api::{DocRef, Flavor, SliceRef, TimeWindow};
pub use transport::{
    ClientStats, LatencySnapshot, REQUEST_SECONDS_BUCKETS, StatsSnapshot, redact_url,
};
