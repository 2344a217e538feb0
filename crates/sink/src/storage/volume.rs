//! A directory on a volume every worker mounts at the same path. Files are written to a
//! hidden temporary name in the target directory (`.<name>.tmp-<random>`), fsynced, then
//! renamed over the final name, so a crash never leaves a half-written file under a final
//! key; aborted or dropped uploads remove their temporary file.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use bytes::Bytes;
use tokio::io::AsyncWriteExt;

use super::{ObjectInfo, Storage, Upload, check_key};
use crate::error::SinkError;

const TMP_MARK: &str = ".tmp-";

/// Storage rooted at a directory.
#[derive(Debug, Clone)]
pub struct VolumeStorage {
    root: PathBuf,
}

impl VolumeStorage {
    /// Opens (creating it if needed) the root directory and checks it is writable.
    pub async fn open(root: impl AsRef<Path>) -> Result<Self, SinkError> {
        let root = root.as_ref().to_path_buf();
        tokio::fs::create_dir_all(&root)
            .await
            .map_err(|source| SinkError::MissingDirectory {
                path: root.clone(),
                source,
            })?;
        let probe = root.join(temp_name("write-probe"));
        match tokio::fs::write(&probe, b"probe").await {
            Ok(()) => {
                let _ = tokio::fs::remove_file(&probe).await;
            }
            Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
                return Err(SinkError::NotWritable {
                    path: root,
                    source: e,
                });
            }
            Err(e) => return Err(SinkError::io("write a probe file in", root, e)),
        }
        Ok(VolumeStorage { root })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn path_of(&self, key: &str) -> Result<PathBuf, SinkError> {
        check_key(key)?;
        Ok(self.root.join(key))
    }

    async fn ensure_parent(&self, path: &Path) -> Result<PathBuf, SinkError> {
        let parent = path.parent().unwrap_or(&self.root).to_path_buf();
        tokio::fs::create_dir_all(&parent).await.map_err(|e| {
            if e.kind() == std::io::ErrorKind::PermissionDenied {
                SinkError::NotWritable {
                    path: parent.clone(),
                    source: e,
                }
            } else {
                SinkError::io("create directory", parent.clone(), e)
            }
        })?;
        Ok(parent)
    }

    /// Writes `body` to a synced temporary file next to `path`, returning its path.
    async fn write_temp(&self, path: &Path, body: &[u8]) -> Result<PathBuf, SinkError> {
        let parent = self.ensure_parent(path).await?;
        let tmp = parent.join(temp_name(&file_name(path)));
        let res = async {
            let mut f = tokio::fs::File::create(&tmp)
                .await
                .map_err(|e| SinkError::io("create", tmp.clone(), e))?;
            f.write_all(body)
                .await
                .map_err(|e| SinkError::io("write", tmp.clone(), e))?;
            f.sync_all()
                .await
                .map_err(|e| SinkError::io("fsync", tmp.clone(), e))?;
            Ok::<_, SinkError>(())
        }
        .await;
        if let Err(e) = res {
            let _ = tokio::fs::remove_file(&tmp).await;
            return Err(e);
        }
        Ok(tmp)
    }
}

static COUNTER: AtomicU64 = AtomicU64::new(0);

fn temp_name(name: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!(".{name}{TMP_MARK}{:x}{nanos:x}{n:x}", std::process::id())
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "file".into())
}

fn is_temp(name: &str) -> bool {
    name.starts_with('.') && name.contains(TMP_MARK)
}

async fn sync_dir(dir: &Path) {
    // Persist the rename; some filesystems do not support fsync on directories.
    if let Ok(d) = tokio::fs::File::open(dir).await {
        let _ = d.sync_all().await;
    }
}

/// Lists files under `dir` recursively; `(relative key, size, is temp)`.
fn walk(root: &Path, dir: &Path, out: &mut Vec<(String, u64, bool)>) -> std::io::Result<()> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let entry = entry?;
        let ft = entry.file_type()?;
        let path = entry.path();
        if ft.is_dir() {
            walk(root, &path, out)?;
        } else if ft.is_file() {
            let rel = path
                .strip_prefix(root)
                .unwrap_or(&path)
                .to_string_lossy()
                .replace(std::path::MAIN_SEPARATOR, "/");
            let name = entry.file_name().to_string_lossy().into_owned();
            out.push((rel, entry.metadata()?.len(), is_temp(&name)));
        }
    }
    Ok(())
}

impl VolumeStorage {
    async fn scan(&self, prefix: &str) -> Result<Vec<(String, u64, bool)>, SinkError> {
        let dir_part = match prefix.rfind('/') {
            Some(i) => &prefix[..i],
            None => "",
        };
        let start = if dir_part.is_empty() {
            self.root.clone()
        } else {
            check_key(dir_part)?;
            self.root.join(dir_part)
        };
        let root = self.root.clone();
        let prefix = prefix.to_string();
        let start2 = start.clone();
        let mut found = tokio::task::spawn_blocking(move || {
            let mut out = Vec::new();
            walk(&root, &start2, &mut out).map(|_| out)
        })
        .await
        .map_err(|e| SinkError::io("list", start.clone(), std::io::Error::other(e)))?
        .map_err(|e| SinkError::io("list", start, e))?;
        found.retain(|(k, _, _)| k.starts_with(&prefix));
        found.sort();
        Ok(found)
    }
}

#[async_trait]
impl Storage for VolumeStorage {
    async fn put(&self, key: &str, body: Bytes) -> Result<(), SinkError> {
        let path = self.path_of(key)?;
        let tmp = self.write_temp(&path, &body).await?;
        if let Err(e) = tokio::fs::rename(&tmp, &path).await {
            let _ = tokio::fs::remove_file(&tmp).await;
            return Err(SinkError::io("rename into place", path, e));
        }
        if let Some(p) = path.parent() {
            sync_dir(p).await;
        }
        Ok(())
    }

    async fn put_if_absent(&self, key: &str, body: Bytes) -> Result<bool, SinkError> {
        let path = self.path_of(key)?;
        let tmp = self.write_temp(&path, &body).await?;
        // A hard link never replaces an existing file: atomic create-if-absent.
        let res = tokio::fs::hard_link(&tmp, &path).await;
        let _ = tokio::fs::remove_file(&tmp).await;
        match res {
            Ok(()) => {
                if let Some(p) = path.parent() {
                    sync_dir(p).await;
                }
                Ok(true)
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
            Err(e) => Err(SinkError::io("create", path, e)),
        }
    }

    async fn get(&self, key: &str) -> Result<Option<Bytes>, SinkError> {
        let path = self.path_of(key)?;
        match tokio::fs::read(&path).await {
            Ok(b) => Ok(Some(Bytes::from(b))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(SinkError::io("read", path, e)),
        }
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, SinkError> {
        Ok(self
            .scan(prefix)
            .await?
            .into_iter()
            .filter(|(_, _, tmp)| !tmp)
            .map(|(key, size, _)| ObjectInfo { key, size })
            .collect())
    }

    async fn delete(&self, key: &str) -> Result<(), SinkError> {
        let path = self.path_of(key)?;
        match tokio::fs::remove_file(&path).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(SinkError::io("delete", path, e)),
        }
    }

    async fn begin_upload(&self, key: &str) -> Result<Box<dyn Upload>, SinkError> {
        let path = self.path_of(key)?;
        let parent = self.ensure_parent(&path).await?;
        let tmp = parent.join(temp_name(&file_name(&path)));
        let create = tmp.clone();
        let created = blocking(move || std::fs::File::create(create))
            .await
            .and_then(|r| r);
        let file = created.map_err(|e| {
            if e.kind() == std::io::ErrorKind::PermissionDenied {
                SinkError::NotWritable {
                    path: parent.clone(),
                    source: e,
                }
            } else {
                SinkError::io("create", tmp.clone(), e)
            }
        })?;
        Ok(Box::new(VolumeUpload {
            key: key.to_string(),
            path,
            tmp: Some(tmp),
            file: Some(file),
            pending: Vec::new(),
            size: 0,
        }))
    }

    async fn abort_incomplete_uploads(&self, prefix: &str) -> Result<usize, SinkError> {
        let mut n = 0;
        for (key, _, tmp) in self.scan(prefix).await? {
            if tmp {
                let path = self.root.join(&key);
                match tokio::fs::remove_file(&path).await {
                    Ok(()) => n += 1,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(SinkError::io("remove", path, e)),
                }
            }
        }
        Ok(n)
    }

    fn describe(&self) -> String {
        self.root.display().to_string()
    }
}

/// A file being written under a temporary name. Writes run on the blocking pool with the
/// caller's `Bytes` moved in, so output is not copied into a second buffer on its way to
/// the kernel; writes under [`COALESCE_BYTES`] gather in `pending` first.
struct VolumeUpload {
    key: String,
    path: PathBuf,
    tmp: Option<PathBuf>,
    file: Option<std::fs::File>,
    pending: Vec<u8>,
    size: u64,
}

/// Small writes are gathered up to this size before they reach the file.
const COALESCE_BYTES: usize = 1 << 20;

/// Runs file IO on the blocking pool; a panic there becomes an IO error.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, std::io::Error> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| std::io::Error::other(format!("file IO task failed: {e}")))
}

impl VolumeUpload {
    async fn fail(&mut self, e: SinkError) -> SinkError {
        self.file = None;
        if let Some(tmp) = self.tmp.take() {
            let _ = tokio::fs::remove_file(&tmp).await;
        }
        e
    }

    /// Writes `pending` and then `bytes` to the file.
    async fn write_through(&mut self, bytes: Bytes) -> Result<(), SinkError> {
        let Some(mut file) = self.file.take() else {
            return Err(SinkError::UploadClosed {
                key: self.key.clone(),
            });
        };
        let mut pending = std::mem::take(&mut self.pending);
        let done = blocking(move || {
            let r = file
                .write_all(&pending)
                .and_then(|()| file.write_all(&bytes));
            pending.clear();
            (file, pending, r)
        })
        .await;
        let err = match done {
            Ok((file, pending, Ok(()))) => {
                self.file = Some(file);
                self.pending = pending;
                return Ok(());
            }
            Ok((_, _, Err(e))) | Err(e) => e,
        };
        let tmp = self.tmp.clone().unwrap_or_default();
        Err(self.fail(SinkError::io("write", tmp, err)).await)
    }
}

#[async_trait]
impl Upload for VolumeUpload {
    async fn write(&mut self, bytes: Bytes) -> Result<(), SinkError> {
        if self.file.is_none() {
            return Err(SinkError::UploadClosed {
                key: self.key.clone(),
            });
        }
        self.size += bytes.len() as u64;
        if self.pending.len() + bytes.len() < COALESCE_BYTES {
            self.pending.extend_from_slice(&bytes);
            return Ok(());
        }
        self.write_through(bytes).await
    }

    async fn complete(mut self: Box<Self>) -> Result<ObjectInfo, SinkError> {
        let Some(tmp) = self.tmp.clone() else {
            return Err(SinkError::UploadClosed {
                key: self.key.clone(),
            });
        };
        let res = async {
            self.write_through(Bytes::new()).await?;
            let file = self.file.take().ok_or_else(|| SinkError::UploadClosed {
                key: self.key.clone(),
            })?;
            blocking(move || file.sync_all())
                .await
                .and_then(|r| r)
                .map_err(|e| SinkError::io("fsync", tmp.clone(), e))?;
            tokio::fs::rename(&tmp, &self.path)
                .await
                .map_err(|e| SinkError::io("rename into place", self.path.clone(), e))
        }
        .await;
        if let Err(e) = res {
            return Err(self.fail(e).await);
        }
        self.tmp = None;
        if let Some(p) = self.path.parent() {
            sync_dir(p).await;
        }
        Ok(ObjectInfo {
            key: self.key.clone(),
            size: self.size,
        })
    }

    async fn abort(mut self: Box<Self>) -> Result<(), SinkError> {
        self.file = None;
        if let Some(tmp) = self.tmp.take() {
            match tokio::fs::remove_file(&tmp).await {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(SinkError::io("remove", tmp, e)),
            }
        }
        Ok(())
    }
}

impl Drop for VolumeUpload {
    fn drop(&mut self) {
        if let Some(tmp) = self.tmp.take() {
            let _ = std::fs::remove_file(tmp);
        }
    }
}
