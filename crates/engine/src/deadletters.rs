//! Turns dead-lettered tasks into results for the coordinator that published them.
//!
//! The dead-letter queue is shared by every job, but each run reads its own results queue.
//! Every coordinator process runs this forwarder: it takes a dead task, publishes a
//! `DeadLettered` result to the task's `reply_to`, and only then acks it, so a dead letter is
//! never lost between the two queues and nothing stays in the dead-letter queue unaccounted for.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use spillway_api::{MESSAGE_VERSION, ShardOutcome, ShardResult};
use spillway_queue::ShardQueue;
use tokio_util::sync::CancellationToken;

use crate::EngineError;

/// Forwards dead letters until `cancel` fires or the queue closes; counts what it forwarded.
pub async fn forward_dead_letters(
    queue: Arc<dyn ShardQueue>,
    forwarded: Arc<AtomicU64>,
    cancel: CancellationToken,
) -> Result<(), EngineError> {
    let mut dead = queue.consume_dead_tasks().await?;
    loop {
        let next = tokio::select! {
            _ = cancel.cancelled() => return Ok(()),
            n = dead.next() => n,
        };
        let Some(d) = next else { return Ok(()) };
        let d = match d {
            Ok(d) => d,
            Err(e) => {
                tracing::error!(error = %e, "dropped an undecodable dead letter");
                continue;
            }
        };
        let task = &d.message;
        let reason = d
            .dead_letter_reason
            .clone()
            .unwrap_or_else(|| "unknown".to_string());
        tracing::warn!(job = %task.job, shard = %task.shard.id, %reason, "shard task was dead-lettered");
        let result = ShardResult {
            version: MESSAGE_VERSION,
            job: task.job.clone(),
            run_id: task.run_id.clone(),
            shard_id: task.shard.id.clone(),
            attempt: task.attempt,
            snapshot_generation: task.snapshot.generation,
            outcome: ShardOutcome::DeadLettered { reason },
        };
        match queue.publish_result(&task.reply_to, &result).await {
            Ok(()) => {
                // A failed ack (the broker restarted) means it is delivered again and
                // forwarded twice; the coordinator ignores the second copy.
                if let Err(e) = d.ack().await {
                    tracing::warn!(error = %e, "could not ack a forwarded dead letter; it will be forwarded again");
                }
                forwarded.fetch_add(1, Relaxed);
            }
            Err(e) => {
                tracing::warn!(error = %e, "could not forward a dead letter; leaving it in the dead-letter queue");
                if let Err(e) = d.requeue().await {
                    tracing::warn!(error = %e, "could not give a dead letter back; the broker redelivers it");
                }
            }
        }
    }
}
