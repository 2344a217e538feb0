//! Live counters of a running job, read by the progress bar and by metrics.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

#[derive(Debug, Default)]
pub struct Progress {
    pub shards_total: AtomicU64,
    pub shards_done: AtomicU64,
    pub shards_skipped: AtomicU64,
    pub docs_expected: AtomicU64,
    pub docs_exported: AtomicU64,
    pub bytes: AtomicU64,
    pub retries: AtomicU64,
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
