//! The export engine, shared by every mode (`spillway run`, `spillway worker`, the Kubernetes
//! coordinator):
//!
//! - [`coordinator`] plans a job under one snapshot, publishes shards, tracks results and
//!   writes the manifest;
//! - [`executor`] turns one shard task into one committed file plus its marker;
//! - [`worker`] is the consume → execute → report → ack loop;
//! - [`deadletters`] reports dead-lettered shards to the coordinator that owns them;
//! - [`local`] joins both in one process over the in-memory queue.

pub mod connect;
pub mod coordinator;
pub mod deadletters;
mod error;
pub mod executor;
pub mod local;
pub mod progress;
pub mod secrets;
pub mod worker;

pub use coordinator::{CoordinatorOptions, JobReport, run_job};
pub use error::EngineError;
pub use executor::Executor;
pub use local::{LocalOptions, run_local, run_with_queue};
pub use progress::{Progress, ProgressView};
pub use secrets::{LocalSecrets, SecretResolver};
