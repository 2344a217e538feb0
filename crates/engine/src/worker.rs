//! The worker loop: consume tasks, execute them, publish the result, then answer the delivery.
//!
//! Acking last means a worker that dies mid-shard leaves the task to be redelivered; the shard's
//! deterministic key and marker make the re-run rewrite identical content (guarantee 3).
//!
//! Retries go through the queue: a retryable failure is reported (so the coordinator can show
//! it) and the task is given back after a backoff, so any worker may take the next attempt. The
//! queue's delivery count is the attempt number; once it reaches the job's `retry.maxAttempts`,
//! or the error is not retryable, the task is rejected into the dead-letter queue and the
//! coordinator fails the job naming the shard. A snapshot loss is answered by acking: the
//! coordinator re-publishes the shard under a new snapshot.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use spillway_api::{MESSAGE_VERSION, ShardOutcome, ShardResult, ShardTask};
use spillway_queue::{Delivery, ShardQueue};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::EngineError;
use crate::executor::Executor;
use crate::progress::Progress;

/// How long a worker waits before giving a failed task back for its `attempt + 1`-th try.
pub fn retry_backoff(attempt: u32) -> Duration {
    let base = 500u64.saturating_mul(1 << attempt.saturating_sub(1).min(6));
    let capped = base.min(30_000);
    // ±20% jitter so workers that failed together do not retry together.
    let jitter = (capped / 5).max(1);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos() as u64)
        .unwrap_or(0);
    Duration::from_millis(capped - jitter + nanos % (2 * jitter))
}

/// What the worker does with a delivery once its result is known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Answer {
    Ack,
    RetryLater,
    DeadLetter,
}

fn decide(outcome: &mut ShardOutcome, attempt: u32, max_attempts: u32) -> Answer {
    match outcome {
        ShardOutcome::Completed { .. } | ShardOutcome::DeadLettered { .. } => Answer::Ack,
        ShardOutcome::Failed {
            snapshot_lost: true,
            ..
        } => Answer::Ack,
        ShardOutcome::Failed {
            retryable,
            will_retry,
            ..
        } => {
            if *retryable && attempt < max_attempts {
                *will_retry = true;
                Answer::RetryLater
            } else {
                *will_retry = false;
                Answer::DeadLetter
            }
        }
    }
}

/// Runs `concurrency` shard slots until the queue closes or `cancel` fires. Shards in flight
/// when `cancel` fires are given back to the queue.
pub async fn run_worker(
    queue: Arc<dyn ShardQueue>,
    executor: Arc<Executor>,
    concurrency: u16,
    cancel: CancellationToken,
) -> Result<(), EngineError> {
    let mut tasks = queue.consume_tasks(concurrency.max(1)).await?;
    let mut running = JoinSet::new();
    loop {
        let next = tokio::select! {
            _ = cancel.cancelled() => break,
            n = tasks.next() => n,
        };
        let Some(delivery) = next else { break };
        let delivery = match delivery {
            Ok(d) => d,
            Err(e) => {
                tracing::error!(error = %e, "dead-lettered an undecodable task");
                continue;
            }
        };
        let (queue, executor, cancel) = (queue.clone(), executor.clone(), cancel.clone());
        running.spawn(async move { handle(queue, executor, delivery, cancel).await });
        // Reap finished slots so the set does not grow without bound.
        while let Some(r) = running.try_join_next() {
            if let Err(e) = r {
                tracing::error!(error = %e, "a shard slot panicked");
            }
        }
    }
    while running.join_next().await.is_some() {}
    Ok(())
}

async fn handle(
    queue: Arc<dyn ShardQueue>,
    executor: Arc<Executor>,
    delivery: Delivery<ShardTask>,
    cancel: CancellationToken,
) {
    let mut task = delivery.message.clone();
    // A redelivery after a crash or a retry counts as another attempt.
    task.attempt = task.attempt.max(delivery.delivery_count);
    let max_attempts = task.spec.retry.max_attempts.max(1);
    let span = tracing::info_span!("export_shard", job = %task.job, shard = %task.shard.id, attempt = task.attempt);

    if task.version != MESSAGE_VERSION {
        tracing::error!(parent: &span, version = task.version, "task message version is not understood by this worker; dead-lettering it");
        answer(delivery, Answer::DeadLetter, &task).await;
        return;
    }
    if task.attempt > max_attempts {
        // Delivered again after workers died on it: the attempts are used up.
        let result = executor.result_of(
            &task,
            ShardOutcome::Failed {
                error: format!(
                    "shard {} was delivered {} times without finishing (workers stopped while exporting it); retry.maxAttempts is {max_attempts}",
                    task.shard.id, task.attempt
                ),
                retryable: false,
                snapshot_lost: false,
                will_retry: false,
            },
        );
        let _ = queue.publish_result(&task.reply_to, &result).await;
        answer(delivery, Answer::DeadLetter, &task).await;
        return;
    }

    match queue.results_exist(&task.reply_to).await {
        Ok(false) => {
            // The run is over (finished, failed, cancelled or its ExportJob deleted).
            tracing::info!(parent: &span, "the shard's run is over; dropping the task");
            answer(delivery, Answer::Ack, &task).await;
            return;
        }
        Ok(true) => {}
        Err(e) => {
            tracing::warn!(parent: &span, error = %e, "could not check whether the shard's run is still on; exporting it anyway")
        }
    }

    let progress = executor.progress();
    if let Some(p) = &progress {
        p.shards_in_flight.fetch_add(1, Relaxed);
    }
    let started = Instant::now();
    let result = tokio::select! {
        r = executor.execute(&task, &cancel).instrument(span.clone()) => Some(r),
        _ = cancel.cancelled() => None,
    };
    if let Some(p) = &progress {
        p.shards_in_flight.fetch_sub(1, Relaxed);
    }
    let Some(mut result) = result else {
        // Shutting down: hand the shard to another worker without counting it against anyone.
        let _ = delivery.requeue().await;
        return;
    };
    let took = started.elapsed();
    record(&progress, &result, took);
    if let ShardOutcome::Completed { marker } = &result.outcome {
        tracing::info!(parent: &span, docs = marker.docs, bytes = marker.bytes, took_ms = took.as_millis() as u64, "shard committed");
    }
    let decision = decide(&mut result.outcome, task.attempt, max_attempts);
    if let Err(e) = queue.publish_result(&task.reply_to, &result).await {
        tracing::warn!(parent: &span, error = %e, "could not publish the shard's result; giving the task back");
        let _ = delivery.requeue().await;
        return;
    }
    if decision == Answer::RetryLater {
        let wait = retry_backoff(task.attempt);
        tracing::info!(parent: &span, wait_ms = wait.as_millis() as u64, "shard failed; giving it back for another attempt");
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = cancel.cancelled() => {}
        }
    }
    answer(delivery, decision, &task).await;
}

fn record(progress: &Option<Arc<Progress>>, result: &ShardResult, took: Duration) {
    let Some(p) = progress else { return };
    let outcome = match &result.outcome {
        ShardOutcome::Completed { .. } => "completed",
        ShardOutcome::Failed { .. } => "failed",
        ShardOutcome::DeadLettered { .. } => "dead_lettered",
    };
    p.record_shard(outcome, took);
}

async fn answer(delivery: Delivery<ShardTask>, how: Answer, task: &ShardTask) {
    let r = match how {
        Answer::Ack => delivery.ack().await,
        Answer::RetryLater => delivery.requeue().await,
        Answer::DeadLetter => delivery.reject().await,
    };
    if let Err(e) = r {
        tracing::warn!(job = %task.job, shard = %task.shard.id, error = %e, "could not answer the delivery; the broker will redeliver it and its marker is reused");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failed(retryable: bool, snapshot_lost: bool) -> ShardOutcome {
        ShardOutcome::Failed {
            error: "x".into(),
            retryable,
            snapshot_lost,
            will_retry: false,
        }
    }

    #[test]
    fn retryable_failures_go_back_until_attempts_run_out() {
        let mut o = failed(true, false);
        assert_eq!(decide(&mut o, 1, 3), Answer::RetryLater);
        assert!(matches!(
            o,
            ShardOutcome::Failed {
                will_retry: true,
                ..
            }
        ));
        let mut o = failed(true, false);
        assert_eq!(decide(&mut o, 3, 3), Answer::DeadLetter);
        assert!(matches!(
            o,
            ShardOutcome::Failed {
                will_retry: false,
                ..
            }
        ));
        assert_eq!(decide(&mut failed(false, false), 1, 3), Answer::DeadLetter);
        assert_eq!(decide(&mut failed(true, true), 1, 3), Answer::Ack);
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        let first = retry_backoff(1);
        assert!(first >= Duration::from_millis(400) && first <= Duration::from_millis(600));
        let later = retry_backoff(4);
        assert!(later >= Duration::from_millis(3_200) && later <= Duration::from_millis(4_800));
        assert!(retry_backoff(40) <= Duration::from_millis(36_000));
    }
}
