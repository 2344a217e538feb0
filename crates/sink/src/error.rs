//! The one error type of the sink crate. Messages name the operation, the key or path and
//! what to do; they never contain credentials.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("the index mapping is not usable: {0}; pass the JSON of GET /<indices>/_mapping")]
    Mapping(String),
    #[error("document {index}/{id}: _source is not a JSON object ({reason})")]
    BadSource {
        index: String,
        id: String,
        reason: String,
    },
    #[error("{format} encoding failed: {reason}")]
    Encode {
        format: &'static str,
        reason: String,
    },
    #[error(
        "compression {compression} is not available for {format}; use gzip, zstd or none (snappy is Parquet only)"
    )]
    UnsupportedCompression {
        compression: &'static str,
        format: &'static str,
    },
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "the disk holding {path} is full while trying to {op}; free space on the volume or give it more capacity, then retry"
    )]
    DiskFull { op: &'static str, path: PathBuf },
    #[error(
        "the output directory {path} does not exist or cannot be created ({source}); create it or mount the volume there"
    )]
    MissingDirectory {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "the output directory {path} is not writable ({source}); fix its permissions or the pod's fsGroup/securityContext"
    )]
    NotWritable {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid object key {key:?}: {reason}")]
    InvalidKey { key: String, reason: &'static str },
    #[error("invalid destination: {0}")]
    Destination(String),
    #[error("credentials for {what} are missing: {reason}")]
    Credentials { what: String, reason: String },
    #[error(
        "S3 {op} s3://{bucket}/{key} failed with HTTP {status}{code_part}: {message}",
        code_part = code.as_deref().map(|c| format!(" {c}")).unwrap_or_default()
    )]
    S3 {
        op: &'static str,
        bucket: String,
        key: String,
        status: u16,
        code: Option<String>,
        message: String,
    },
    #[error(
        "S3 {op} s3://{bucket}/{key} could not reach {endpoint} after {attempts} attempts: {reason}; check the endpoint and the network"
    )]
    S3Transport {
        op: &'static str,
        bucket: String,
        key: String,
        endpoint: String,
        attempts: u32,
        reason: String,
    },
    #[error("S3 {op} answered a response that could not be read: {reason}")]
    S3Response { op: &'static str, reason: String },
    #[error("{what} at {key} is not valid JSON: {source}")]
    Json {
        what: &'static str,
        key: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("the upload of {key} was already finished or aborted")]
    UploadClosed { key: String },
}

impl SinkError {
    /// Maps an IO error on `path`, turning "no space left" into [`SinkError::DiskFull`].
    pub fn from_io(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::io(op, path, source)
    }

    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        let path = path.into();
        if source.kind() == std::io::ErrorKind::StorageFull || source.raw_os_error() == Some(28) {
            SinkError::DiskFull { op, path }
        } else {
            SinkError::Io { op, path, source }
        }
    }

    /// Whether retrying the same operation later may succeed.
    pub fn is_retryable(&self) -> bool {
        match self {
            SinkError::S3 { status, code, .. } => {
                *status >= 500
                    || *status == 429
                    || matches!(
                        code.as_deref(),
                        Some(
                            "SlowDown" | "InternalError" | "RequestTimeout" | "ServiceUnavailable"
                        )
                    )
            }
            SinkError::S3Transport { .. } | SinkError::DiskFull { .. } => true,
            SinkError::Io { .. } => true,
            _ => false,
        }
    }
}
