//! `_manifest.json`: written last (before `_SUCCESS`), it lists every data file with rows,
//! bytes and checksum, and the totals a reader can verify against.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::messages::{JobRef, OutputFile};
use crate::spec::{Compression, Flavor, Format};

pub const MANIFEST_VERSION: u32 = 1;

#[derive(Deserialize, Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    pub version: u32,
    pub job: JobRef,
    pub run_id: String,
    pub format: Format,
    pub compression: Compression,
    pub source: ManifestSource,
    pub started_at: DateTime<Utc>,
    pub completed_at: DateTime<Utc>,
    pub shards: u64,
    /// Documents the snapshot held for the query.
    pub expected_documents: u64,
    /// Documents in the files; equal to `expectedDocuments` or the job would have failed.
    pub documents: u64,
    pub bytes: u64,
    pub files: Vec<OutputFile>,
    /// Columns of Parquet/CSV files, in order, with their types.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub schema: Vec<ManifestColumn>,
}

#[derive(Deserialize, Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ManifestSource {
    /// The URL without credentials.
    pub url: String,
    pub indices: Vec<String>,
    pub flavor: Flavor,
    pub version: String,
}

#[derive(Deserialize, Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ManifestColumn {
    pub name: String,
    /// Arrow/Parquet logical type, e.g. `Utf8`, `Int64`, `Timestamp(ms, UTC)`.
    pub data_type: String,
    pub nullable: bool,
}
