//! Where a run's files live, relative to the destination root:
//!
//! ```text
//! <prefix>/<job>/<run id>/
//!   _spillway/plan.json
//!   _spillway/shards/<shard>.json
//!   data/dt=2024-03-15/part-<shard>.parquet
//!   _manifest.json
//!   _SUCCESS
//! ```

use crate::plan::ShardSpec;
use crate::spec::{Compression, Format};

/// The run directory, relative to the destination root (no leading or trailing slash).
pub fn run_dir(prefix: &str, job: &str, run_id: &str) -> String {
    let prefix = prefix.trim_matches('/');
    if prefix.is_empty() {
        format!("{job}/{run_id}")
    } else {
        format!("{prefix}/{job}/{run_id}")
    }
}

pub const PLAN: &str = "_spillway/plan.json";
pub const MANIFEST: &str = "_manifest.json";
pub const SUCCESS: &str = "_SUCCESS";

pub fn marker(shard_id: &str) -> String {
    format!("_spillway/shards/{shard_id}.json")
}

pub const MARKER_DIR: &str = "_spillway/shards/";

/// Data file key of a shard, relative to the run directory.
pub fn data_file(shard: &ShardSpec, format: Format, compression: Compression) -> String {
    let name = format!(
        "part-{}.{}{}",
        shard.id,
        format.extension(),
        if format == Format::Parquet {
            ""
        } else {
            compression.file_suffix()
        }
    );
    match &shard.partition {
        Some(p) => format!("data/{p}/{name}"),
        None => format!("data/{name}"),
    }
}
