//! One output file end to end: an [`Encoder`] fed page by page, its bytes streamed into a
//! storage upload as they are produced, and the committed file described for the shard
//! marker (rows, bytes, digest) and the manifest (columns).

use spillway_api::manifest::ManifestColumn;
use spillway_api::{DocRef, OutputFile};

use crate::encode::Encoder;
use crate::error::SinkError;
use crate::storage::{HashingUpload, Storage};

/// A file being written: encoder + upload. Dropping it discards the upload.
pub struct FileWriter {
    encoder: Box<dyn Encoder>,
    upload: HashingUpload,
    /// Key relative to the run directory, as recorded in the marker.
    relative_key: String,
}

impl std::fmt::Debug for FileWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileWriter")
            .field("key", &self.relative_key)
            .field("rows", &self.encoder.rows())
            .finish()
    }
}

/// A committed file with the columns the manifest lists.
#[derive(Clone, Debug, PartialEq)]
pub struct WrittenFile {
    pub file: OutputFile,
    pub columns: Vec<ManifestColumn>,
}

impl FileWriter {
    /// Starts the upload of `run_dir/relative_key`.
    pub async fn create(
        storage: &dyn Storage,
        run_dir: &str,
        relative_key: &str,
        encoder: Box<dyn Encoder>,
    ) -> Result<FileWriter, SinkError> {
        let run_dir = run_dir.trim_matches('/');
        let key = if run_dir.is_empty() {
            relative_key.to_string()
        } else {
            format!("{run_dir}/{relative_key}")
        };
        let upload = HashingUpload::new(storage.begin_upload(&key).await?);
        Ok(FileWriter {
            encoder,
            upload,
            relative_key: relative_key.to_string(),
        })
    }

    /// Encodes a page and uploads the bytes it completed.
    pub async fn write_page(&mut self, docs: &[DocRef<'_>]) -> Result<(), SinkError> {
        self.encoder.write_page(docs)?;
        let out = self.encoder.take_output();
        if !out.is_empty() {
            self.upload.write(out).await?;
        }
        Ok(())
    }

    pub fn rows(&self) -> u64 {
        self.encoder.rows()
    }

    /// Bytes handed to the upload so far.
    pub fn bytes_written(&self) -> u64 {
        self.upload.bytes_written()
    }

    /// Ends the file and makes it appear under its key.
    pub async fn finish(self) -> Result<WrittenFile, SinkError> {
        let FileWriter {
            encoder,
            mut upload,
            relative_key,
        } = self;
        let rows = encoder.rows();
        let columns = encoder.columns();
        let rest = match encoder.finish() {
            Ok(r) => r,
            Err(e) => {
                let _ = upload.abort().await;
                return Err(e);
            }
        };
        if let Err(e) = upload.write(rest).await {
            let _ = upload.abort().await;
            return Err(e);
        }
        let done = upload.complete().await?;
        Ok(WrittenFile {
            file: OutputFile {
                key: relative_key,
                rows,
                bytes: done.bytes,
                digest: done.digest,
            },
            columns,
        })
    }

    /// Discards the file.
    pub async fn abort(self) -> Result<(), SinkError> {
        self.upload.abort().await
    }
}
