//! The shard queue between the coordinator and workers.
//!
//! Two directions: *tasks* (`ShardTask`, coordinator → workers, one shared queue) and *results*
//! (`ShardResult`, workers → coordinator, one queue per run named by the task's `reply_to`, so
//! several coordinators can share one worker pool). A delivery is acknowledged only after its effect is durable (for a
//! task: output, marker and result committed). A delivery dropped without an answer goes back to
//! the queue, as a crashed worker's unacked message does on a broker; a task delivered more than
//! `max_deliveries` times is dead-lettered so a poison shard cannot loop forever.
//!
//! [`memory::MemoryQueue`] serves `spillway run` in one process; a broker implementation sits
//! behind the same trait.

pub mod memory;
pub mod rabbit;

use async_trait::async_trait;
use serde::{Serialize, de::DeserializeOwned};
use spillway_api::{ShardResult, ShardTask};

#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("the queue is closed")]
    Closed,
    #[error("message on {queue} could not be decoded: {reason}")]
    Decode { queue: String, reason: String },
    #[error("broker error on {queue}: {reason}")]
    Broker { queue: String, reason: String },
}

/// How a consumer answers a delivery.
#[async_trait]
pub trait Acker: Send {
    /// Done: remove the message.
    async fn ack(self: Box<Self>) -> Result<(), QueueError>;
    /// Give it back for another consumer (counts as a delivery).
    async fn requeue(self: Box<Self>) -> Result<(), QueueError>;
    /// Dead-letter it now.
    async fn reject(self: Box<Self>) -> Result<(), QueueError>;
}

/// One received message.
pub struct Delivery<T> {
    pub message: T,
    /// 1 on the first delivery.
    pub delivery_count: u32,
    /// For a dead-lettered message: why it was dead-lettered (`delivery_limit`, `rejected`).
    pub dead_letter_reason: Option<String>,
    acker: Box<dyn Acker>,
}

impl<T> Delivery<T> {
    pub fn new(message: T, delivery_count: u32, acker: Box<dyn Acker>) -> Self {
        Delivery {
            message,
            delivery_count,
            dead_letter_reason: None,
            acker,
        }
    }
    pub fn with_dead_letter_reason(mut self, reason: impl Into<String>) -> Self {
        self.dead_letter_reason = Some(reason.into());
        self
    }
    pub async fn ack(self) -> Result<(), QueueError> {
        self.acker.ack().await
    }
    pub async fn requeue(self) -> Result<(), QueueError> {
        self.acker.requeue().await
    }
    pub async fn reject(self) -> Result<(), QueueError> {
        self.acker.reject().await
    }
}

impl<T: std::fmt::Debug> std::fmt::Debug for Delivery<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Delivery")
            .field("message", &self.message)
            .field("delivery_count", &self.delivery_count)
            .finish()
    }
}

/// A stream of deliveries; `None` once the queue is closed.
#[async_trait]
pub trait Consumer<T>: Send {
    async fn next(&mut self) -> Option<Result<Delivery<T>, QueueError>>;
}

/// The queue both sides talk to.
#[async_trait]
pub trait ShardQueue: Send + Sync {
    /// Publishes a task; returns once the queue has it durably (publisher confirm).
    async fn publish_task(&self, task: &ShardTask) -> Result<(), QueueError>;
    /// Consumes tasks with at most `prefetch` unanswered at once.
    async fn consume_tasks(
        &self,
        prefetch: u16,
    ) -> Result<Box<dyn Consumer<ShardTask>>, QueueError>;
    /// Publishes a result to the results queue `reply_to` (the task's). A result for a queue
    /// that no longer exists (its run is over) is dropped, not an error.
    async fn publish_result(&self, reply_to: &str, result: &ShardResult) -> Result<(), QueueError>;
    /// Declares the results queue `name` (durable; it outlives a coordinator restart) and
    /// consumes it.
    async fn consume_results(
        &self,
        name: &str,
    ) -> Result<Box<dyn Consumer<ShardResult>>, QueueError>;
    /// Deletes a run's results queue once the run is over.
    async fn delete_results(&self, name: &str) -> Result<(), QueueError>;
    /// Whether the results queue `name` exists. Its run is over (finished, failed or deleted)
    /// when it does not, and workers skip the run's remaining tasks.
    async fn results_exist(&self, name: &str) -> Result<bool, QueueError> {
        let _ = name;
        Ok(true)
    }
    /// Tasks that were dead-lettered: rejected by a worker (retries exhausted, not retryable)
    /// or delivered more often than the queue's delivery limit (workers died on them).
    async fn consume_dead_tasks(&self) -> Result<Box<dyn Consumer<ShardTask>>, QueueError>;
}

/// JSON encoding shared by every implementation, so messages are the same bytes everywhere.
pub fn encode<T: Serialize>(msg: &T) -> Vec<u8> {
    serde_json::to_vec(msg).expect("queue messages serialise")
}

pub fn decode<T: DeserializeOwned>(queue: &str, bytes: &[u8]) -> Result<T, QueueError> {
    serde_json::from_slice(bytes).map_err(|e| QueueError::Decode {
        queue: queue.to_string(),
        reason: e.to_string(),
    })
}
