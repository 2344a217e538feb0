//! The write side of an export: encoders that turn pages of search hits into NDJSON, CSV or
//! Parquet bytes ([`encode`]), storage backends that make those bytes appear atomically under
//! deterministic keys on S3 or a shared volume ([`storage`]), and the commit records a run
//! leaves beside its data: shard markers, the plan, the manifest and `_SUCCESS` ([`commit`]).
//!
//! Memory stays bounded: encoders hold at most one Parquet row group (or a compressor's
//! window) and hand out finished bytes after every page; an upload holds at most one filling
//! part, and all uploads of one S3 storage share a budget of parts in flight.

pub mod checksum;
pub mod commit;
pub mod encode;
mod error;
pub mod file;
pub mod storage;

pub use checksum::{CountingDigest, DIGEST_ALGORITHM, digest_of};
pub use encode::{DocSchema, Encoder, encoder_for};
pub use error::SinkError;
pub use file::{FileWriter, WrittenFile};
pub use storage::{ObjectInfo, Storage, Upload, open, open_output};
