//! Where files go: a small object-store trait with two backends, a shared volume
//! ([`volume::VolumeStorage`]) and S3 or an S3-compatible store ([`s3::S3Storage`]).
//!
//! Keys are `/`-separated paths relative to the destination root (the volume directory, or
//! the bucket: `spillway_api::layout::run_dir(prefix, ..)` already contains the S3 prefix).
//! Both backends make a file appear atomically under its final key: a reader sees either
//! nothing or the whole file, never a part of it.

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use spillway_api::{Destination, OutputSpec};
use spillway_sigv4::Credentials;

use crate::checksum::CountingDigest;
use crate::error::SinkError;

pub mod s3;
pub mod volume;

/// An object that exists in storage.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectInfo {
    pub key: String,
    pub size: u64,
}

#[async_trait]
pub trait Storage: Send + Sync {
    /// Writes a small object atomically, replacing any previous one.
    async fn put(&self, key: &str, body: Bytes) -> Result<(), SinkError>;
    /// Writes the object only if nothing exists under `key`; `false` if something did.
    async fn put_if_absent(&self, key: &str, body: Bytes) -> Result<bool, SinkError>;
    async fn get(&self, key: &str) -> Result<Option<Bytes>, SinkError>;
    /// Every object whose key starts with `prefix` (recursive), sorted by key.
    async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, SinkError>;
    /// Removes the object; removing a missing object is not an error.
    async fn delete(&self, key: &str) -> Result<(), SinkError>;
    /// Starts a streaming upload that appears under `key` only when completed.
    async fn begin_upload(&self, key: &str) -> Result<Box<dyn Upload>, SinkError>;
    /// Removes leftovers of uploads that never completed under `prefix` (S3 multipart
    /// uploads, temporary files on a volume); returns how many.
    async fn abort_incomplete_uploads(&self, prefix: &str) -> Result<usize, SinkError>;
    /// `s3://bucket/prefix` or the volume path; never credentials.
    fn describe(&self) -> String;
}

/// A file being written. Dropping it without [`Upload::complete`] discards it.
#[async_trait]
pub trait Upload: Send {
    /// Appends bytes; the backend buffers them up to its part size.
    async fn write(&mut self, bytes: Bytes) -> Result<(), SinkError>;
    /// Makes the file appear under its key.
    async fn complete(self: Box<Self>) -> Result<ObjectInfo, SinkError>;
    /// Discards everything written.
    async fn abort(self: Box<Self>) -> Result<(), SinkError>;
}

/// An upload that also counts bytes and computes the digest of what passes through.
pub struct HashingUpload {
    inner: Box<dyn Upload>,
    hash: CountingDigest,
}

impl std::fmt::Debug for HashingUpload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HashingUpload")
            .field("bytes", &self.hash.bytes())
            .finish()
    }
}

/// A completed file with its size and digest (`blake3:<hex>`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CompletedFile {
    pub info: ObjectInfo,
    pub bytes: u64,
    pub digest: String,
}

impl HashingUpload {
    pub fn new(inner: Box<dyn Upload>) -> Self {
        HashingUpload {
            inner,
            hash: CountingDigest::new(),
        }
    }

    pub async fn write(&mut self, bytes: Bytes) -> Result<(), SinkError> {
        if bytes.is_empty() {
            return Ok(());
        }
        self.hash.update(&bytes);
        self.inner.write(bytes).await
    }

    pub fn bytes_written(&self) -> u64 {
        self.hash.bytes()
    }

    pub async fn complete(self) -> Result<CompletedFile, SinkError> {
        let info = self.inner.complete().await?;
        let (bytes, digest) = self.hash.finish();
        Ok(CompletedFile {
            info,
            bytes,
            digest,
        })
    }

    pub async fn abort(self) -> Result<(), SinkError> {
        self.inner.abort().await
    }
}

/// Opens the storage of a destination with the default S3 part size (5 MiB). For S3,
/// `creds` (from the destination's secret) or, when `None`, the `AWS_*` environment
/// variables are used.
pub async fn open(
    dest: &Destination,
    creds: Option<Credentials>,
) -> Result<Arc<dyn Storage>, SinkError> {
    open_with_part_size(dest, creds, s3::DEFAULT_PART_SIZE).await
}

/// Opens the storage of an output spec: its destination, with `partSizeBytes` as the S3
/// multipart part size.
pub async fn open_output(
    output: &OutputSpec,
    creds: Option<Credentials>,
) -> Result<Arc<dyn Storage>, SinkError> {
    let part = usize::try_from(output.part_size_bytes).unwrap_or(usize::MAX);
    open_with_part_size(&output.destination, creds, part).await
}

async fn open_with_part_size(
    dest: &Destination,
    creds: Option<Credentials>,
    part_size: usize,
) -> Result<Arc<dyn Storage>, SinkError> {
    match (&dest.s3, &dest.volume) {
        (Some(s3), None) => {
            let creds = match creds {
                Some(c) => c,
                None => Credentials::from_env().map_err(|e| SinkError::Credentials {
                    what: format!("s3://{}", s3.bucket),
                    reason: e.to_string(),
                })?,
            };
            let mut cfg = s3::S3Config::from_destination(s3)?;
            cfg.part_size = part_size;
            Ok(Arc::new(s3::S3Storage::new(cfg, creds)?))
        }
        (None, Some(v)) => Ok(Arc::new(volume::VolumeStorage::open(&v.path).await?)),
        _ => Err(SinkError::Destination(
            "output.destination takes exactly one of s3 or volume".into(),
        )),
    }
}

/// Checks that a key is a relative `/`-separated path without `.`/`..` segments.
pub(crate) fn check_key(key: &str) -> Result<(), SinkError> {
    let bad = |reason| {
        Err(SinkError::InvalidKey {
            key: key.to_string(),
            reason,
        })
    };
    if key.is_empty() {
        return bad("it is empty");
    }
    if key.starts_with('/') {
        return bad("it starts with '/'; keys are relative to the destination root");
    }
    if key
        .split('/')
        .any(|s| s.is_empty() || s == "." || s == "..")
    {
        return bad("it has an empty, '.' or '..' segment");
    }
    if key.contains('\0') {
        return bad("it contains a NUL character");
    }
    Ok(())
}
