//! The `ExportJob` custom resource: what to export (`source`, `timeRange`), how to split it
//! (`sharding`), where to write it (`output`) and how hard to push (`parallelism`, `retry`).
//!
//! The same YAML is applied to Kubernetes and run locally by `spillway run`. Every struct
//! refuses unknown fields so a typo fails loudly instead of being silently ignored; the CRD
//! generator (see [`crate::crd`]) turns that into API-server pruning plus strict validation.

// `printcolumn(...)` repeats `type_ = ...` by design; clippy reads that as a duplicated attribute.
#![allow(clippy::duplicated_attributes)]

use chrono::{DateTime, Utc};
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use crate::status::ExportJobStatus;

/// Desired state of one export.
#[derive(CustomResource, KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq)]
#[kube(
    group = "spillway.dev",
    version = "v1alpha1",
    kind = "ExportJob",
    plural = "exportjobs",
    singular = "exportjob",
    shortname = "ej",
    category = "spillway",
    namespaced,
    status = "ExportJobStatus",
    doc = "An export of documents out of an OpenSearch or Elasticsearch cluster into files on shared storage.",
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(name = "Progress", type_ = "string", json_path = ".status.progress"),
    printcolumn(
        name = "Docs",
        type_ = "integer",
        json_path = ".status.documents.exported"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[x_kube(validation = Rule::new("(has(self.source) == has(oldSelf.source)) && (!has(self.source) || self.source == oldSelf.source) && (has(self.timeRange) == has(oldSelf.timeRange)) && (!has(self.timeRange) || self.timeRange == oldSelf.timeRange) && (has(self.sharding) == has(oldSelf.sharding)) && (!has(self.sharding) || self.sharding == oldSelf.sharding) && (has(self.output) == has(oldSelf.output)) && (!has(self.output) || self.output == oldSelf.output) && (has(self.retry) == has(oldSelf.retry)) && (!has(self.retry) || self.retry == oldSelf.retry) && (has(self.onSnapshotLoss) == has(oldSelf.onSnapshotLoss)) && (!has(self.onSnapshotLoss) || self.onSnapshotLoss == oldSelf.onSnapshotLoss)").message("only spec.suspend, spec.parallelism and spec.ttlSecondsAfterFinished of an ExportJob may change; to export something else, create a new ExportJob"))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ExportJobSpec {
    /// The cluster, indices and query to export.
    pub source: SourceSpec,
    /// Restrict the export to `[gte, lt)` on a date field. Without it the job is planned
    /// with PIT slices only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_range: Option<TimeRange>,
    /// How the job is split into shards.
    #[serde(default)]
    pub sharding: Sharding,
    /// Format and destination of the files.
    pub output: OutputSpec,
    /// How much work may run at once.
    #[serde(default)]
    pub parallelism: Parallelism,
    /// How often a failing shard is retried before the job fails.
    #[serde(default)]
    pub retry: RetrySpec,
    /// Pause publishing new shards; shards already running finish.
    #[serde(default)]
    pub suspend: bool,
    /// Delete the ExportJob this many seconds after it finished (succeeded or failed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self >= 0").message("ttlSecondsAfterFinished must not be negative"))]
    pub ttl_seconds_after_finished: Option<i64>,
    /// What to do when the point-in-time snapshot is lost (expired or the node restarted).
    #[serde(default)]
    pub on_snapshot_loss: OnSnapshotLoss,
}

/// Where the documents come from.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SourceSpec {
    /// Base URL of the cluster, e.g. `https://search.example.com:9200`.
    #[x_kube(validation = Rule::new("self.startsWith('http://') || self.startsWith('https://')").message("source.url must start with http:// or https://"))]
    pub url: String,
    /// Index names, aliases or patterns (`logs-*`). At least one.
    #[x_kube(validation = Rule::new("size(self) > 0").message("source.indices needs at least one index, alias or pattern"))]
    pub indices: Vec<String>,
    /// An OpenSearch/Elasticsearch query (DSL), passed through unchanged. Default: match_all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::schema::preserve_unknown_object")]
    pub query: Option<serde_json::Value>,
    /// `_source` filtering.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fields: Option<FieldSelection>,
    /// Credentials. Secrets are only referenced, never copied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<SourceAuth>,
    /// TLS settings for `https` URLs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsSpec>,
    /// A unique, doc-values field used to order pages when the cluster has no `_shard_doc`
    /// (OpenSearch before 3.3). Unset, such clusters are read one index shard at a time in
    /// `_doc` order; `_id` works too but loads every `_id` into the cluster's fielddata.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tiebreaker_field: Option<String>,
    /// Force the cluster flavor instead of detecting it from `GET /`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flavor: Option<Flavor>,
    /// How long the point-in-time snapshot is kept alive between requests (e.g. `10m`).
    #[serde(default = "default_keep_alive")]
    pub keep_alive: String,
    /// Optional cap on search requests per second across the whole job.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requests_per_second: Option<u32>,
}

fn default_keep_alive() -> String {
    "10m".to_string()
}

/// `_source` includes and excludes (wildcards allowed).
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FieldSelection {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub includes: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub excludes: Vec<String>,
}

/// Cluster flavor.
#[derive(schemars::JsonSchema, Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[serde(rename_all = "lowercase")]
pub enum Flavor {
    Opensearch,
    Elasticsearch,
}

/// One way of authenticating to the source cluster.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[x_kube(validation = Rule::new("[has(self.basic), has(self.apiKey), has(self.awsSigV4)].filter(x, x).size() <= 1").message("source.auth takes one of basic, apiKey or awsSigV4"))]
pub struct SourceAuth {
    /// HTTP basic auth from a Secret with `username` and `password` keys.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub basic: Option<BasicAuth>,
    /// An API key (`Authorization: ApiKey <value>`) from a Secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key: Option<ApiKeyAuth>,
    /// AWS Signature Version 4 (Amazon OpenSearch Service `es` or Serverless `aoss`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aws_sig_v4: Option<AwsSigV4Auth>,
}

#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BasicAuth {
    /// Secret holding the username and password.
    pub secret_ref: SecretRef,
    #[serde(default = "default_username_key")]
    pub username_key: String,
    #[serde(default = "default_password_key")]
    pub password_key: String,
}

fn default_username_key() -> String {
    "username".into()
}
fn default_password_key() -> String {
    "password".into()
}

#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ApiKeyAuth {
    /// Secret holding the encoded API key (the value sent after `ApiKey `).
    pub secret_ref: SecretRef,
    #[serde(default = "default_api_key_key")]
    pub key: String,
}

fn default_api_key_key() -> String {
    "apiKey".into()
}

#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AwsSigV4Auth {
    /// AWS region of the domain or collection, e.g. `eu-west-1`.
    #[x_kube(validation = Rule::new("size(self) > 0").message("awsSigV4.region must not be empty"))]
    pub region: String,
    /// `es` for managed domains, `aoss` for OpenSearch Serverless.
    #[serde(default)]
    pub service: AwsService,
    /// Secret with `accessKeyId`, `secretAccessKey` and optionally `sessionToken`. Without it,
    /// the standard `AWS_*` environment variables of the worker are used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<SecretRef>,
}

#[derive(
    schemars::JsonSchema, Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, Default,
)]
#[serde(rename_all = "lowercase")]
pub enum AwsService {
    #[default]
    Es,
    Aoss,
}

impl AwsService {
    pub fn as_str(self) -> &'static str {
        match self {
            AwsService::Es => "es",
            AwsService::Aoss => "aoss",
        }
    }
}

/// A reference to a Secret in the job's namespace (locally: a directory or environment
/// variables, see `spillway run --help`).
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq, Eq, Hash)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SecretRef {
    #[x_kube(validation = Rule::new("size(self) > 0").message("secretRef.name must not be empty"))]
    pub name: String,
}

/// TLS options for the source connection.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TlsSpec {
    /// A Secret with a PEM CA bundle to trust in addition to the system roots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_secret_ref: Option<SecretRef>,
    /// Key of the CA bundle in that Secret.
    #[serde(default = "default_ca_key")]
    pub ca_key: String,
    /// Skip certificate verification. Never use in production: anyone on the path can read
    /// the data and the credentials.
    #[serde(default)]
    pub insecure_skip_verify: bool,
}

fn default_ca_key() -> String {
    "ca.crt".into()
}

/// The half-open time range `[gte, lt)` to export.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[x_kube(validation = Rule::new("timestamp(self.gte) < timestamp(self.lt)").message("timeRange.gte must be before timeRange.lt"))]
pub struct TimeRange {
    /// A `date` (or `date_nanos`) field of the index mapping, e.g. `@timestamp`.
    pub field: String,
    /// Inclusive start, RFC 3339 (`2024-03-01T00:00:00Z`).
    pub gte: DateTime<Utc>,
    /// Exclusive end, RFC 3339.
    pub lt: DateTime<Utc>,
}

/// How the job is cut into shards.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Sharding {
    /// Aim for shards of about this many documents.
    #[serde(default = "default_target_docs")]
    #[x_kube(validation = Rule::new("self >= 1").message("sharding.targetDocsPerShard must be at least 1"))]
    pub target_docs_per_shard: u64,
    /// Documents per search request (at most 10000, the default `index.max_result_window`).
    #[serde(default = "default_page_size")]
    #[x_kube(validation = Rule::new("self >= 1 && self <= 10000").message("sharding.pageSize must be between 1 and 10000"))]
    pub page_size: u32,
    /// Upper bound of PIT slices for one time interval (OpenSearch allows at most 1024).
    #[serde(default = "default_max_slices")]
    #[x_kube(validation = Rule::new("self >= 1 && self <= 1024").message("sharding.maxSlices must be between 1 and 1024"))]
    pub max_slices: u32,
}

fn default_target_docs() -> u64 {
    500_000
}
fn default_page_size() -> u32 {
    1000
}
fn default_max_slices() -> u32 {
    64
}

impl Default for Sharding {
    fn default() -> Self {
        Sharding {
            target_docs_per_shard: default_target_docs(),
            page_size: default_page_size(),
            max_slices: default_max_slices(),
        }
    }
}

/// File format and destination.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OutputSpec {
    #[serde(default)]
    pub format: Format,
    #[serde(default)]
    pub compression: Compression,
    pub destination: Destination,
    /// Hive-style partition directories by the time field (`dt=2024-03-15/`).
    #[serde(default)]
    pub partition_by: PartitionBy,
    /// NDJSON/CSV: add `_id` and `_index` to every record; Parquet always has them.
    #[serde(default)]
    pub include_metadata: bool,
    /// Parquet: close a row group after about this many bytes of encoded data. Each shard
    /// slot buffers one row group, so this bounds a worker's memory; 4 MiB of zstd-encoded
    /// data is about 20 MB of source documents.
    #[serde(default = "default_row_group_bytes")]
    pub row_group_bytes: u64,
    /// Upload part size for S3 multipart uploads (at least 5 MiB).
    #[serde(default = "default_part_size")]
    #[x_kube(validation = Rule::new("self >= 5242880").message("output.partSizeBytes must be at least 5 MiB (5242880), the S3 minimum"))]
    pub part_size_bytes: u64,
}

fn default_row_group_bytes() -> u64 {
    4 << 20
}
fn default_part_size() -> u64 {
    5 << 20
}

#[derive(
    schemars::JsonSchema, Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, Default, Hash,
)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    #[default]
    Parquet,
    Ndjson,
    Csv,
}

impl Format {
    /// File extension without compression suffix.
    pub fn extension(self) -> &'static str {
        match self {
            Format::Parquet => "parquet",
            Format::Ndjson => "ndjson",
            Format::Csv => "csv",
        }
    }
}

/// Compression. For Parquet it is the column codec; for NDJSON and CSV the whole file's.
#[derive(
    schemars::JsonSchema, Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, Default, Hash,
)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    None,
    Gzip,
    #[default]
    Zstd,
    /// Parquet only.
    Snappy,
}

impl Compression {
    /// Suffix appended to NDJSON/CSV file names (`.gz`, `.zst`); Parquet keeps `.parquet`.
    pub fn file_suffix(self) -> &'static str {
        match self {
            Compression::None | Compression::Snappy => "",
            Compression::Gzip => ".gz",
            Compression::Zstd => ".zst",
        }
    }
}

#[derive(
    schemars::JsonSchema, Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, Default, Hash,
)]
#[serde(rename_all = "lowercase")]
pub enum PartitionBy {
    #[default]
    Day,
    Hour,
    None,
}

/// Exactly one of `s3` or `volume`.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[x_kube(validation = Rule::new("has(self.s3) != has(self.volume)").message("output.destination takes exactly one of s3 or volume"))]
pub struct Destination {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub s3: Option<S3Destination>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume: Option<VolumeDestination>,
}

/// An S3-compatible bucket (AWS S3, MinIO, SeaweedFS, Ceph RGW, ...).
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct S3Destination {
    #[x_kube(validation = Rule::new("size(self) >= 3").message("output.destination.s3.bucket must be a bucket name"))]
    pub bucket: String,
    /// Key prefix under which `<job>/<run id>/` is written.
    #[serde(default)]
    pub prefix: String,
    /// Endpoint URL for S3-compatible stores; AWS S3 when empty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    #[serde(default = "default_region")]
    pub region: String,
    /// Path-style addressing (`endpoint/bucket/key`), needed by most S3-compatible stores.
    #[serde(default)]
    pub force_path_style: bool,
    /// Secret with `accessKeyId`, `secretAccessKey` and optionally `sessionToken`. Without it
    /// the standard `AWS_*` environment variables are used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<SecretRef>,
}

fn default_region() -> String {
    "us-east-1".into()
}

/// A directory on a volume every worker mounts at the same path.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct VolumeDestination {
    #[x_kube(validation = Rule::new("self.startsWith('/') || self.startsWith('.')").message("output.destination.volume.path must be an absolute path (or relative for local runs)"))]
    pub path: String,
}

#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Parallelism {
    /// Shards of this job in flight at once, across all workers.
    #[serde(default = "default_max_concurrent")]
    #[x_kube(validation = Rule::new("self >= 1").message("parallelism.maxConcurrentShards must be at least 1"))]
    pub max_concurrent_shards: u32,
}

fn default_max_concurrent() -> u32 {
    8
}

impl Default for Parallelism {
    fn default() -> Self {
        Parallelism {
            max_concurrent_shards: default_max_concurrent(),
        }
    }
}

#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RetrySpec {
    /// Attempts per shard before it is dead-lettered and the job fails.
    #[serde(default = "default_max_attempts")]
    #[x_kube(validation = Rule::new("self >= 1 && self <= 100").message("retry.maxAttempts must be between 1 and 100"))]
    pub max_attempts: u32,
}

fn default_max_attempts() -> u32 {
    5
}

impl Default for RetrySpec {
    fn default() -> Self {
        RetrySpec {
            max_attempts: default_max_attempts(),
        }
    }
}

#[derive(
    schemars::JsonSchema, Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, Default,
)]
pub enum OnSnapshotLoss {
    /// Fail the job, naming the lost snapshot.
    #[default]
    Fail,
    /// Open a new snapshot and re-run every unfinished shard (recorded in a condition).
    Renew,
}
