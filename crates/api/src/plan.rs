//! The plan of a run: the shards that tile the job exactly, persisted as
//! `_spillway/plan.json` so a restarted coordinator resumes from plan + markers.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::messages::JobRef;

pub const PLAN_VERSION: u32 = 1;

/// A half-open interval `[gte_ms, lt_ms)` in epoch milliseconds.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[serde(rename_all = "camelCase")]
pub struct TimeWindow {
    pub gte_ms: i64,
    pub lt_ms: i64,
}

impl TimeWindow {
    pub fn len_ms(&self) -> i64 {
        self.lt_ms - self.gte_ms
    }
    pub fn contains(&self, t_ms: i64) -> bool {
        self.gte_ms <= t_ms && t_ms < self.lt_ms
    }
}

/// A PIT slice `{id, max}`; `max > 1` always (a single slice is no slice).
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SliceRef {
    pub id: u32,
    pub max: u32,
}

/// One shard: a time window (or the whole range) and optionally one PIT slice of it.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, Hash)]
#[serde(rename_all = "camelCase")]
pub struct ShardSpec {
    /// Stable name, zero-padded ordinal (`000017`); used in file and marker keys.
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<TimeWindow>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slice: Option<SliceRef>,
    /// Documents the planner expects (from the histogram); the real count is checked later.
    pub estimated_docs: u64,
    /// Hive partition value (`dt=2024-03-15`, `dt=2024-03-15/hr=07`), if partitioned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partition: Option<String>,
    /// The one index this shard reads (a `term` filter on `_index`), set when the plan walks
    /// the cluster's shards: with its slice (`id % max` is the shard number) it names one
    /// shard of the index, or a part of one, so `_doc` is a unique page order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index: Option<String>,
}

impl ShardSpec {
    pub fn id_for(ordinal: usize) -> String {
        format!("{ordinal:06}")
    }
}

#[derive(Deserialize, Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Plan {
    pub version: u32,
    pub job: JobRef,
    pub run_id: String,
    pub created_at: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_field: Option<String>,
    /// Documents of the job's query under the snapshot (`_count` / `hits.total`).
    pub expected_docs: u64,
    pub shards: Vec<ShardSpec>,
}
