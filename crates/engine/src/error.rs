//! The engine's error: what failed, on which shard, and what to do about it.

use spillway_api::SpecError;
use spillway_queue::QueueError;
use spillway_sink::SinkError;
use spillway_source::SourceError;

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Spec(#[from] SpecError),
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error(transparent)]
    Sink(#[from] SinkError),
    #[error(transparent)]
    Queue(#[from] QueueError),
    #[error("{0}")]
    Secret(String),
    #[error(
        "shard {shard} is incomplete: the cluster reported {expected} documents but {got} were read (a truncated page); the shard is retried"
    )]
    Incomplete {
        shard: String,
        expected: u64,
        got: u64,
    },
    #[error("the point-in-time snapshot was lost: {0}")]
    SnapshotLost(String),
    #[error("shard {shard} failed after {attempts} attempt(s): {error}{}", others_note(*.others))]
    ShardFailed {
        shard: String,
        attempts: u32,
        error: String,
        /// Other shards of the run that failed too.
        others: usize,
    },
    #[error("shard {shard} was dead-lettered ({detail}){}", others_note(*.others))]
    DeadLettered {
        shard: String,
        detail: String,
        others: usize,
    },
    #[error(
        "the snapshot holds {expected} documents for the query but the shards exported {got}; nothing was marked successful, run the job again"
    )]
    CountMismatch { expected: u64, got: u64 },
    #[error("interrupted; run the same job again to resume from the finished shards")]
    Cancelled,
    #[error("{0}")]
    Internal(String),
}

impl EngineError {
    /// Whether re-running the shard may succeed.
    pub fn is_retryable(&self) -> bool {
        match self {
            EngineError::Source(e) => e.is_retryable(),
            EngineError::Sink(e) => e.is_retryable(),
            EngineError::Queue(_) | EngineError::Incomplete { .. } => true,
            _ => false,
        }
    }

    pub fn is_snapshot_lost(&self) -> bool {
        match self {
            EngineError::Source(e) => e.is_snapshot_lost(),
            EngineError::SnapshotLost(_) => true,
            _ => false,
        }
    }
}

fn others_note(others: usize) -> String {
    let more = match others {
        0 => String::new(),
        n => format!("; {n} other shard(s) failed too"),
    };
    format!("{more}; finished shards are committed, so running the job again redoes only the rest")
}
