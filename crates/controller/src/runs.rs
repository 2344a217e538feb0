//! The runs this coordinator drives: one engine task per ExportJob (by uid), its live
//! counters, and its outcome once it ends (picked up by the job's next periodic reconcile).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use chrono::{DateTime, Utc};
use parking_lot::Mutex;
use spillway_api::ExportJob;
use spillway_engine::{
    EngineError, JobReport, LocalOptions, Progress, SecretResolver, run_with_queue,
};
use spillway_queue::ShardQueue;
use tokio_util::sync::CancellationToken;

/// How a run ended.
#[derive(Debug, Clone)]
pub enum Outcome {
    Succeeded(Box<JobReport>),
    /// Reason (CamelCase) and sanitised message.
    Failed {
        reason: String,
        message: String,
    },
    /// Stopped by the controller (suspend or deletion).
    Stopped,
}

/// A run in progress (or just ended, until its outcome is taken).
#[derive(Clone)]
pub struct Run {
    pub run_id: String,
    pub started: DateTime<Utc>,
    pub progress: Arc<Progress>,
    pub cancel: CancellationToken,
    outcome: Arc<Mutex<Option<Outcome>>>,
    done: Arc<tokio::sync::Notify>,
}

impl Run {
    pub fn outcome(&self) -> Option<Outcome> {
        self.outcome.lock().clone()
    }

    /// Shards published and not yet answered.
    pub fn in_flight(&self) -> u64 {
        let v = self.progress.get();
        self.progress
            .shards_published
            .load(Relaxed)
            .saturating_sub(v.shards_done.saturating_sub(v.shards_skipped))
            .min(v.shards_total.saturating_sub(v.shards_done))
    }
}

/// All runs of this coordinator, by ExportJob uid.
pub struct Runs {
    queue: Arc<dyn ShardQueue>,
    runs: Mutex<HashMap<String, Run>>,
}

impl Runs {
    pub fn new(queue: Arc<dyn ShardQueue>) -> Arc<Runs> {
        Arc::new(Runs {
            queue,
            runs: Mutex::new(HashMap::new()),
        })
    }

    pub fn queue(&self) -> Arc<dyn ShardQueue> {
        self.queue.clone()
    }

    pub fn get(&self, uid: &str) -> Option<Run> {
        self.runs.lock().get(uid).cloned()
    }

    /// Runs whose ExportJob is still being exported.
    pub fn active(&self) -> usize {
        self.runs
            .lock()
            .values()
            .filter(|r| r.outcome().is_none())
            .count()
    }

    /// Starts `job`'s run unless one is already there; returns it.
    pub fn ensure(
        self: &Arc<Self>,
        job: &ExportJob,
        uid: &str,
        run_id: &str,
        secrets: Arc<dyn SecretResolver>,
    ) -> Run {
        let mut runs = self.runs.lock();
        if let Some(r) = runs.get(uid) {
            return r.clone();
        }
        let run = Run {
            run_id: run_id.to_string(),
            started: Utc::now(),
            progress: Arc::new(Progress::default()),
            cancel: CancellationToken::new(),
            outcome: Arc::new(Mutex::new(None)),
            done: Arc::new(tokio::sync::Notify::new()),
        };
        runs.insert(uid.to_string(), run.clone());
        drop(runs);
        let (job, this, r) = (job.clone(), self.clone(), run.clone());
        tokio::spawn(async move {
            let opts = LocalOptions {
                workers: 0,
                secrets,
                progress: r.progress.clone(),
                cancel: r.cancel.clone(),
                run_id: Some(r.run_id.clone()),
            };
            let result = run_with_queue(&job, this.queue.clone(), opts).await;
            let outcome = match result {
                Ok(report) => Outcome::Succeeded(Box::new(report)),
                Err(EngineError::Cancelled) => Outcome::Stopped,
                Err(e) => Outcome::Failed {
                    reason: crate::status::reason_of(&e).to_string(),
                    message: e.to_string(),
                },
            };
            *r.outcome.lock() = Some(outcome);
            r.done.notify_waiters();
        });
        run
    }

    /// Stops `uid`'s run (if any) and waits until it has ended: its PIT is closed and its
    /// uploads aborted by the engine. With `discard`, its results queue is deleted too, so
    /// workers drop the run's tasks that are still queued.
    pub async fn stop(&self, uid: &str, discard: Option<&str>) {
        let run = self.get(uid);
        if let Some(run) = &run {
            let done = run.done.notified();
            run.cancel.cancel();
            if run.outcome().is_none() {
                done.await;
            }
        }
        if let Some(results) = discard
            && let Err(e) = self.queue.delete_results(results).await
        {
            tracing::warn!(queue = results, error = %e, "could not delete a stopped run's results queue");
        }
    }

    /// The counters of every run held, summed (for the coordinator's metrics).
    pub fn totals(&self) -> Vec<Arc<Progress>> {
        self.runs
            .lock()
            .values()
            .map(|r| r.progress.clone())
            .collect()
    }

    /// Uids of every run held.
    pub fn uids(&self) -> Vec<String> {
        self.runs.lock().keys().cloned().collect()
    }

    /// Forgets an ended run.
    pub fn remove(&self, uid: &str) {
        self.runs.lock().remove(uid);
    }
}
