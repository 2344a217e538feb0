//! spillway's shared vocabulary: the `ExportJob` custom resource (spec and status), the shard
//! plan, the messages between coordinator and workers, the shard markers and the job manifest,
//! and the output layout. Types only: nothing here does IO, so every other crate can depend
//! on it.

pub mod crd;
pub mod doc;
pub mod layout;
pub mod manifest;
pub mod messages;
pub mod plan;
mod schema;
pub mod spec;
pub mod status;
pub mod validate;

pub use doc::DocRef;
pub use messages::{
    JobRef, MESSAGE_VERSION, OutputFile, RESULTS_QUEUE, ShardMarker, ShardOutcome, ShardResult,
    ShardTask, SnapshotRef, results_queue,
};
pub use plan::{Plan, ShardSpec, SliceRef, TimeWindow};
pub use spec::*;
pub use status::{Condition, ExportJobStatus, Phase};
pub use validate::{SpecError, load_job_yaml};
