//! Live counters of a running job, read by the progress bar and by metrics.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use parking_lot::Mutex;
use spillway_source::{RetryReason, StatsSnapshot};

#[derive(Debug, Default)]
pub struct Progress {
    pub shards_total: AtomicU64,
    pub shards_done: AtomicU64,
    pub shards_skipped: AtomicU64,
    pub docs_expected: AtomicU64,
    pub docs_exported: AtomicU64,
    pub bytes: AtomicU64,
    /// Shard attempts that were retried.
    pub retries: AtomicU64,
    /// Requests to the cluster and their retries by reason (cumulative per client).
    requests: Mutex<BTreeMap<String, StatsSnapshot>>,
}

impl Progress {
    pub fn add_docs(&self, n: u64) {
        self.docs_exported.fetch_add(n, Relaxed);
    }
    pub fn sub_docs(&self, n: u64) {
        let _ = self
            .docs_exported
            .fetch_update(Relaxed, Relaxed, |v| Some(v.saturating_sub(n)));
    }
    pub fn add_bytes(&self, n: u64) {
        self.bytes.fetch_add(n, Relaxed);
    }
    /// Records the cumulative request statistics of one source client.
    pub fn record_client(&self, client_key: &str, stats: StatsSnapshot) {
        self.requests.lock().insert(client_key.to_string(), stats);
    }

    /// Requests sent to the cluster, summed over clients.
    pub fn requests(&self) -> u64 {
        self.requests.lock().values().map(|s| s.requests).sum()
    }

    /// Request retries by reason (`rejected`, `breaker`, `unavailable_5xx`, ...), summed over clients.
    pub fn request_retries(&self) -> BTreeMap<&'static str, u64> {
        let mut out = BTreeMap::new();
        for s in self.requests.lock().values() {
            for (reason, n) in [
                (RetryReason::Rejected, s.retries_rejected),
                (RetryReason::Breaker, s.retries_breaker),
                (RetryReason::Unavailable5xx, s.retries_unavailable_5xx),
                (RetryReason::Connection, s.retries_connection),
                (RetryReason::Timeout, s.retries_timeout),
            ] {
                *out.entry(reason.as_str()).or_insert(0) += n;
            }
        }
        out
    }

    pub fn get(&self) -> ProgressView {
        ProgressView {
            shards_total: self.shards_total.load(Relaxed),
            shards_done: self.shards_done.load(Relaxed),
            shards_skipped: self.shards_skipped.load(Relaxed),
            docs_expected: self.docs_expected.load(Relaxed),
            docs_exported: self.docs_exported.load(Relaxed),
            bytes: self.bytes.load(Relaxed),
            retries: self.retries.load(Relaxed),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProgressView {
    pub shards_total: u64,
    pub shards_done: u64,
    pub shards_skipped: u64,
    pub docs_expected: u64,
    pub docs_exported: u64,
    pub bytes: u64,
    pub retries: u64,
}
