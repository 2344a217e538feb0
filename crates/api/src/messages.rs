//! Versioned messages between the coordinator and workers. They carry references (job,
//! shard, snapshot id, secret *names*), never credentials.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::plan::ShardSpec;
use crate::spec::{ExportJobSpec, Flavor};

/// Bumped on incompatible message changes; receivers reject versions they do not know.
pub const MESSAGE_VERSION: u32 = 1;

/// Which job a message belongs to.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, Hash)]
#[serde(rename_all = "camelCase")]
pub struct JobRef {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    pub name: String,
    /// The object's uid in Kubernetes; a generated id for local runs.
    pub uid: String,
}

impl std::fmt::Display for JobRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.namespace {
            Some(ns) => write!(f, "{ns}/{}", self.name),
            None => f.write_str(&self.name),
        }
    }
}

/// The point-in-time snapshot every shard of a run reads.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct SnapshotRef {
    /// PIT id (OpenSearch `pit_id`, Elasticsearch `id`), or empty for scroll-only clusters.
    pub pit_id: String,
    pub flavor: Flavor,
    /// Server version string from `GET /`, e.g. `2.19.0`.
    pub version: String,
    /// Incremented each time the snapshot is renewed; results of older generations are ignored.
    pub generation: u32,
}

/// One unit of work: export `shard` of `job` under `snapshot`.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ShardTask {
    pub version: u32,
    pub job: JobRef,
    pub run_id: String,
    pub snapshot: SnapshotRef,
    /// The job's spec at planning time (secret references only).
    pub spec: ExportJobSpec,
    pub shard: ShardSpec,
    /// 1 for the first delivery; the queue's delivery count is authoritative when larger.
    pub attempt: u32,
    /// The queue the result goes to: one per run, owned by the coordinator driving it, so
    /// coordinators sharing one worker pool never see each other's results.
    #[serde(default = "default_reply_to")]
    pub reply_to: String,
}

/// Results queue of messages that name none (the prefix of every per-run results queue).
pub const RESULTS_QUEUE: &str = "spillway.results";

fn default_reply_to() -> String {
    RESULTS_QUEUE.to_string()
}

/// The results queue of one run: `spillway.results.<job uid>.<run id>`.
pub fn results_queue(job: &JobRef, run_id: &str) -> String {
    format!("{RESULTS_QUEUE}.{}.{run_id}", job.uid)
}

/// What a worker reports after trying a shard.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ShardResult {
    pub version: u32,
    pub job: JobRef,
    pub run_id: String,
    pub shard_id: String,
    pub attempt: u32,
    pub snapshot_generation: u32,
    pub outcome: ShardOutcome,
}

#[derive(Deserialize, Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", tag = "status")]
pub enum ShardOutcome {
    /// Output and marker are committed.
    Completed { marker: ShardMarker },
    /// The attempt failed. `retryable` errors are retried up to `retry.maxAttempts`.
    Failed {
        /// Sanitised message: what failed and what to do.
        error: String,
        retryable: bool,
        /// The PIT was missing (`search_context_missing_exception`).
        snapshot_lost: bool,
        /// The worker gave the task back to the queue for another attempt; when false the task
        /// was dead-lettered (retries exhausted or not retryable) unless `snapshot_lost`.
        #[serde(default)]
        will_retry: bool,
    },
    /// The task reached the dead-letter queue without a worker's answer: it was delivered
    /// more often than the queue allows (workers died or were stopped while exporting it).
    DeadLettered {
        /// Why the broker dead-lettered it (`delivery_limit`, `rejected`, ...).
        reason: String,
    },
}

/// Written next to the output when a shard is committed; proof of what the file holds.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ShardMarker {
    pub shard_id: String,
    /// Documents written; always equal to `expectedDocs` (otherwise the shard fails).
    pub docs: u64,
    /// `hits.total` of the shard's first page (`track_total_hits: true`).
    pub expected_docs: u64,
    pub bytes: u64,
    pub files: Vec<OutputFile>,
    pub attempt: u32,
    pub completed_at: DateTime<Utc>,
}

/// One committed data file.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct OutputFile {
    /// Key relative to the run directory, e.g. `data/dt=2024-03-15/part-000017.parquet`.
    pub key: String,
    pub rows: u64,
    pub bytes: u64,
    /// The file's digest, `blake3:<64 hex digits>` (`b3sum FILE` prints the same hex).
    pub digest: String,
}
