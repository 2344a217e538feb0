//! The shard planner: tiles a time range into half-open shards sized from one
//! histogram, split further by PIT slices. Pure: no IO, no clock, no randomness.
//!
//! The coordinator opens one PIT, picks an interval with [`choose_interval`], asks the
//! cluster one `date_histogram` (size 0) over the job's `[gte, lt)`, and hands the
//! buckets to [`plan_time`]. A job without a time field is planned by [`plan_slices`]
//! from its total count. Before publishing, [`validate_plan`] (or
//! [`validate_slice_plan`]) proves the plan covers the job exactly once: time windows
//! tile the job window with no gap and no overlap, and the slices of a window form one
//! complete set (guarantee 2 of the design). Shards never cross an output partition
//! ([`partition_label`]), so each shard's files belong to exactly one partition.

mod error;
mod interval;
mod partition;
mod slices;
mod time;
mod validate;
mod walk;

pub use error::PlanError;
pub use interval::{AIM_BUCKETS, MAX_BUCKETS, bucket_count, choose_interval};
pub use partition::{DAY_MS, HOUR_MS, SECOND_MS, partition_label, partition_unit_ms};
pub use slices::{MAX_PIT_SLICES, plan_slices};
pub use time::{HistogramInput, plan_time};
pub use validate::{validate_plan, validate_slice_plan};
pub use walk::{plan_shard_walk, plan_windows};
