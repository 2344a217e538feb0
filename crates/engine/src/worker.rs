//! The worker loop: consume tasks, execute them, publish the result, then ack. Acking last
//! means a worker that dies mid-shard leaves the task to be redelivered; the shard's
//! deterministic key and marker make the re-run rewrite identical content (guarantee 3).

use std::sync::Arc;

use spillway_queue::ShardQueue;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::EngineError;
use crate::executor::Executor;

/// Runs `concurrency` shard slots until the queue closes or `cancel` fires.
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
                tracing::error!(error = %e, "dropping an undecodable task");
                continue;
            }
        };
        let (queue, executor, cancel) = (queue.clone(), executor.clone(), cancel.clone());
        running.spawn(async move {
            let mut task = delivery.message.clone();
            // A redelivery after a crash counts as another attempt.
            task.attempt = task.attempt.max(delivery.delivery_count);
            let result = tokio::select! {
                r = executor.execute(&task, &cancel) => r,
                _ = cancel.cancelled() => {
                    let _ = delivery.requeue().await;
                    return;
                }
            };
            let mut result = result;
            result.attempt = delivery.message.attempt;
            match queue.publish_result(&result).await {
                Ok(()) => {
                    if let Err(e) = delivery.ack().await {
                        tracing::warn!(error = %e, "ack failed; the shard will be redelivered and its marker reused");
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "could not publish a result; requeueing the task");
                    let _ = delivery.requeue().await;
                }
            }
        });
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
