//! The planner's one error type: what [`crate::validate_plan`] and
//! [`crate::validate_slice_plan`] find wrong with a plan. Times are shown as RFC 3339
//! with the epoch milliseconds beside them.

use chrono::{DateTime, SecondsFormat, Utc};

/// `2024-03-15T07:00:00.000Z (1710486000000 ms)`, or just the milliseconds when out of
/// the calendar's range.
pub(crate) fn show_ms(t_ms: i64) -> String {
    match DateTime::<Utc>::from_timestamp_millis(t_ms) {
        Some(at) => format!(
            "{} ({t_ms} ms)",
            at.to_rfc3339_opts(SecondsFormat::Millis, true)
        ),
        None => format!("{t_ms} ms"),
    }
}

/// Why a plan does not cover its job exactly once.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    #[error(
        "the job window [{}, {}) is empty: timeRange.lt must be after timeRange.gte; fix the ExportJob's timeRange",
        show_ms(*gte_ms),
        show_ms(*lt_ms)
    )]
    EmptyJobWindow { gte_ms: i64, lt_ms: i64 },

    #[error("the plan has no shards, so it would export nothing; re-plan the job")]
    NoShards,

    #[error("shard id {id} appears more than once in the plan; re-plan the job")]
    DuplicateId { id: String },

    #[error("shard {id} has no time window in a plan over a time range; re-plan the job")]
    MissingWindow { id: String },

    #[error("shard {id} has a time window in a slice-only plan (no time field); re-plan the job")]
    UnexpectedWindow { id: String },

    #[error(
        "shard {id} has an empty time window [{}, {}); re-plan the job",
        show_ms(*gte_ms),
        show_ms(*lt_ms)
    )]
    EmptyShardWindow { id: String, gte_ms: i64, lt_ms: i64 },

    #[error(
        "the plan leaves [{}, {}) uncovered (before shard {id}); documents there would not be exported; re-plan the job",
        show_ms(*from_ms),
        show_ms(*to_ms)
    )]
    Gap {
        id: String,
        from_ms: i64,
        to_ms: i64,
    },

    #[error(
        "shard {id} starts at {} but [{}, {}) is already covered (or lies before the job window); documents there would be exported twice; re-plan the job",
        show_ms(*gte_ms),
        show_ms(*gte_ms),
        show_ms(*covered_to_ms)
    )]
    Overlap {
        id: String,
        gte_ms: i64,
        covered_to_ms: i64,
    },

    #[error(
        "the last shard {id} ends at {} but the job window ends at {}; re-plan the job",
        show_ms(*shard_lt_ms),
        show_ms(*job_lt_ms)
    )]
    WrongEnd {
        id: String,
        shard_lt_ms: i64,
        job_lt_ms: i64,
    },

    #[error("shard {id} has slice max {max}; a slice needs 2 <= max <= 1024; re-plan the job")]
    SliceMaxOutOfRange { id: String, max: u32 },

    #[error(
        "the shards of {what} do not form one slice set (all sliced with one max, or a single unsliced shard): {detail}; re-plan the job"
    )]
    BadSliceSet { what: String, detail: String },

    #[error(
        "cannot plan the export one index shard at a time: {detail}; re-run the job, or set source.tiebreakerField to a unique doc-values field"
    )]
    WalkCounts { detail: String },
}
