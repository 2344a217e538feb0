//! The controller's own counters, exported as Prometheus metrics by the coordinator process.

use std::collections::BTreeMap;
use std::sync::atomic::AtomicU64;

use parking_lot::Mutex;

#[derive(Debug, Default)]
pub struct ControllerStats {
    pub reconciles: AtomicU64,
    errors: Mutex<BTreeMap<&'static str, u64>>,
}

impl ControllerStats {
    pub fn record_error(&self, reason: &'static str) {
        *self.errors.lock().entry(reason).or_insert(0) += 1;
    }

    /// Reconcile errors by reason.
    pub fn errors(&self) -> BTreeMap<&'static str, u64> {
        self.errors.lock().clone()
    }
}
