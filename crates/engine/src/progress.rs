//! Live counters of a running job, read by the progress bar and by metrics.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

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
    /// Shard tasks published (first attempts and re-publications after a snapshot loss).
    pub shards_published: AtomicU64,
    /// Successful snapshot keep-alive calls.
    pub keep_alives: AtomicU64,
    /// Shards being exported by this process right now.
    pub shards_in_flight: AtomicU64,
    /// Shard attempts finished in this process, by outcome, with their durations.
    shard_seconds: Mutex<BTreeMap<&'static str, Histogram>>,
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

    /// Records one finished shard attempt (`completed`, `failed`, `dead_lettered`).
    pub fn record_shard(&self, outcome: &'static str, took: Duration) {
        self.shard_seconds
            .lock()
            .entry(outcome)
            .or_insert_with(|| Histogram::new(SHARD_SECONDS_BUCKETS))
            .observe(took.as_secs_f64());
    }

    /// Shard durations by outcome.
    pub fn shard_seconds(&self) -> BTreeMap<&'static str, Histogram> {
        self.shard_seconds.lock().clone()
    }

    /// Per-client request statistics, keyed by `<job uid>/<run id>`.
    pub fn clients(&self) -> BTreeMap<String, StatsSnapshot> {
        self.requests.lock().clone()
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

/// Upper bounds (seconds) of the shard-duration buckets.
pub const SHARD_SECONDS_BUCKETS: &[f64] =
    &[1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0];

/// A cumulative histogram: `counts[i]` observations ≤ `bounds[i]`, plus `+Inf` in `count`.
#[derive(Clone, Debug, PartialEq)]
pub struct Histogram {
    pub bounds: &'static [f64],
    /// Non-cumulative counts per bucket; the last entry is the `+Inf` bucket.
    pub counts: Vec<u64>,
    pub sum: f64,
    pub count: u64,
}

impl Histogram {
    pub fn new(bounds: &'static [f64]) -> Self {
        Histogram {
            bounds,
            counts: vec![0; bounds.len() + 1],
            sum: 0.0,
            count: 0,
        }
    }

    pub fn observe(&mut self, v: f64) {
        let i = self
            .bounds
            .iter()
            .position(|b| v <= *b)
            .unwrap_or(self.bounds.len());
        self.counts[i] += 1;
        self.sum += v;
        self.count += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_by_upper_bound() {
        let mut h = Histogram::new(&[1.0, 5.0]);
        for v in [0.5, 1.0, 3.0, 9.0] {
            h.observe(v);
        }
        assert_eq!(h.counts, vec![2, 1, 1]);
        assert_eq!(h.count, 4);
        assert!((h.sum - 13.5).abs() < 1e-9);
    }
}
