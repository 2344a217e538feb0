//! `spillway run`: the coordinator and a pool of workers in one process, joined by the
//! in-memory queue ([`run_local`]); or the coordinator alone against a broker that external
//! `spillway worker` processes consume ([`run_with_queue`]). The same engine either way.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use spillway_api::ExportJob;
use spillway_queue::ShardQueue;
use spillway_queue::memory::MemoryQueue;
use tokio_util::sync::CancellationToken;

use crate::EngineError;
use crate::coordinator::{CoordinatorOptions, JobReport, run_job};
use crate::deadletters::forward_dead_letters;
use crate::executor::Executor;
use crate::progress::Progress;
use crate::secrets::SecretResolver;
use crate::worker::run_worker;

#[derive(Clone)]
pub struct LocalOptions {
    /// Shards exported at once.
    pub workers: u16,
    pub secrets: Arc<dyn SecretResolver>,
    pub progress: Arc<Progress>,
    pub cancel: CancellationToken,
    /// Overrides the run id derived from the job.
    pub run_id: Option<String>,
}

pub async fn run_local(job: &ExportJob, opts: LocalOptions) -> Result<JobReport, EngineError> {
    let max_deliveries = job.spec.retry.max_attempts.saturating_add(1);
    let memq = MemoryQueue::new(max_deliveries);
    let queue: Arc<dyn ShardQueue> = Arc::new(memq.clone());
    let executor = Arc::new(Executor::new(
        opts.secrets.clone(),
        Some(opts.progress.clone()),
    ));
    let workers_cancel = opts.cancel.child_token();
    let worker = tokio::spawn(run_worker(
        queue.clone(),
        executor,
        opts.workers.max(1),
        workers_cancel.clone(),
    ));
    let report = coordinate(job, queue, &opts, false).await;
    workers_cancel.cancel();
    memq.close();
    match worker.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::warn!(error = %e, "worker pool ended with an error"),
        Err(e) => tracing::error!(error = %e, "worker pool panicked"),
    }
    report
}

/// Runs `job`'s coordinator against `queue`, whose workers run elsewhere (`spillway worker`
/// processes on a broker).
pub async fn run_with_queue(
    job: &ExportJob,
    queue: Arc<dyn ShardQueue>,
    opts: LocalOptions,
) -> Result<JobReport, EngineError> {
    coordinate(job, queue, &opts, true).await
}

/// How long a coordinator whose job failed waits at most for the failed shards' dead letters
/// (it stops waiting as soon as they are forwarded). 5 s was too short on a loaded 2-core CI
/// machine: the worker's reject reached the queue after the coordinator had gone, and the
/// dead letter stayed behind.
const DEAD_LETTER_GRACE: Duration = Duration::from_secs(20);

/// The coordinator of one job, with dead letters forwarded to their runs while it runs.
async fn coordinate(
    job: &ExportJob,
    queue: Arc<dyn ShardQueue>,
    opts: &LocalOptions,
    count_docs_on_completion: bool,
) -> Result<JobReport, EngineError> {
    let forwarder_cancel = opts.cancel.child_token();
    let forwarded = Arc::new(AtomicU64::new(0));
    let forwarder = tokio::spawn(forward_dead_letters(
        queue.clone(),
        forwarded.clone(),
        forwarder_cancel.clone(),
    ));
    let report = run_job(
        job,
        queue,
        opts.secrets.clone(),
        opts.progress.clone(),
        opts.cancel.clone(),
        CoordinatorOptions {
            run_id: opts.run_id.clone(),
            count_docs_on_completion,
        },
    )
    .await;
    // A worker rejects a shard that failed for good into the dead-letter queue right after it
    // reports the failure. Keep forwarding until those dead letters are out (briefly), so
    // this process does not leave them behind for the next coordinator to find.
    if let Err(e) = &report {
        let expected = match e {
            EngineError::ShardFailed { others, .. } | EngineError::DeadLettered { others, .. } => {
                1 + *others as u64
            }
            _ => 0,
        };
        let deadline = tokio::time::Instant::now() + DEAD_LETTER_GRACE;
        while forwarded.load(Relaxed) < expected
            && tokio::time::Instant::now() < deadline
            && !opts.cancel.is_cancelled()
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    forwarder_cancel.cancel();
    match forwarder.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::warn!(error = %e, "the dead-letter forwarder ended with an error"),
        Err(e) => tracing::error!(error = %e, "the dead-letter forwarder panicked"),
    }
    report
}
