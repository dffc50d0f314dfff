//! Where recordings are kept: a [`Storage`] trait (keys are relative paths such as
//! `2026/11/25/<recording-id>.lcr`) and its local-directory implementation
//! ([`LocalStorage`]). The object-store backend ([`crate::storage_object::ObjectStorage`])
//! implements the same trait with the same keys.
//!
//! Derived files had keys of their own next to the recording: `2026/11/25/cache/<id>.wav`
//! ([`wav_cache_key`]). WAV audio is now generated for each request and never stored;
//! the key is kept so that deleting a recording also removes a cache file an older
//! version left.

use std::fs::{self, File};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// Why a storage operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// A file-system operation failed.
    #[error("{op} {}: {source}", path.display())]
    Io {
        /// What was done.
        op: &'static str,
        /// On which path.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// A key that is not a safe relative path.
    #[error("invalid storage key {0:?}")]
    InvalidKey(String),
    /// The object store failed (or its URL or settings are unusable).
    #[error("object storage: {0}")]
    Backend(String),
}

fn io_err(op: &'static str, path: &Path) -> impl FnOnce(io::Error) -> StorageError {
    let path = path.to_owned();
    move |source| StorageError::Io { op, path, source }
}

/// Whether `id` can be used as a file name stem: 1..=200 bytes of `[A-Za-z0-9._@+-]`, not
/// starting with a dot (the rule of spool job names).
pub fn is_safe_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 200
        && !id.starts_with('.')
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._@+-".contains(&b))
}

/// The key of a recording: `YYYY/MM/DD/<recording_id>.lcr` by its start (UTC).
pub fn recording_key(recording_id: &str, start_unix_ms: u64) -> Result<String, StorageError> {
    if !is_safe_id(recording_id) {
        return Err(StorageError::InvalidKey(recording_id.to_owned()));
    }
    let (y, m, d) = crate::time::ymd(start_unix_ms);
    Ok(format!("{y:04}/{m:02}/{d:02}/{recording_id}.lcr"))
}

/// The key of the cached WAV of the recording stored under `key`:
/// `<dir>/cache/<stem>.wav`.
pub fn wav_cache_key(key: &str) -> String {
    let (dir, file) = key.rsplit_once('/').unwrap_or(("", key));
    let stem = file.strip_suffix(".lcr").unwrap_or(file);
    if dir.is_empty() {
        format!("cache/{stem}.wav")
    } else {
        format!("{dir}/cache/{stem}.wav")
    }
}

/// Recording storage. Methods block; async callers run them on a blocking thread.
pub trait Storage: Send + Sync {
    /// Stores the file at `source` under `key` (replacing what is there) and returns its
    /// size. Idempotent: storing the same file again is cheap and gives the same result.
    fn store_file(&self, key: &str, source: &Path) -> Result<u64, StorageError>;
    /// Stores `bytes` under `key` atomically (readers see the old or the new object).
    fn put(&self, key: &str, bytes: &[u8]) -> Result<(), StorageError>;
    /// The object's size, `None` if there is none.
    fn size(&self, key: &str) -> Result<Option<u64>, StorageError>;
    /// Up to `len` bytes from `offset` (fewer at the end of the object).
    fn read_range(&self, key: &str, offset: u64, len: usize) -> Result<Vec<u8>, StorageError>;
    /// The whole object.
    fn read_all(&self, key: &str) -> Result<Vec<u8>, StorageError>;
    /// Removes the object; `false` if there was none.
    fn delete(&self, key: &str) -> Result<bool, StorageError>;
    /// A local file holding the object, if the backend has one (readers can then read it
    /// in place, block by block, instead of loading it whole).
    fn local_path(&self, key: &str) -> Option<PathBuf> {
        let _ = key;
        None
    }
}

/// Recordings in a local directory tree: `<root>/<key>`.
#[derive(Debug, Clone)]
pub struct LocalStorage {
    root: PathBuf,
}

impl LocalStorage {
    /// Storage rooted at `root` (created if missing).
    pub fn open(root: &Path) -> Result<LocalStorage, StorageError> {
        fs::create_dir_all(root).map_err(io_err("creating", root))?;
        Ok(LocalStorage {
            root: root.to_owned(),
        })
    }

    /// The path of `key`, refusing keys that would leave the root.
    pub fn path(&self, key: &str) -> Result<PathBuf, StorageError> {
        let ok = key.split('/').all(is_safe_id);
        if !ok {
            return Err(StorageError::InvalidKey(key.to_owned()));
        }
        Ok(self.root.join(key))
    }

    fn parent_dir(&self, path: &Path) -> Result<PathBuf, StorageError> {
        let dir = path.parent().unwrap_or(&self.root).to_owned();
        fs::create_dir_all(&dir).map_err(io_err("creating", &dir))?;
        Ok(dir)
    }
}

/// A temporary name beside `path` (unique per process and call).
fn tmp_beside(path: &Path) -> PathBuf {
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.{}.{n}.tmp", std::process::id()))
}

fn fsync_dir(dir: &Path) -> Result<(), StorageError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err("syncing", dir))
}

impl Storage for LocalStorage {
    /// Hard-links the file into place when `source` is on the same file system (no copy,
    /// no extra space), copies it otherwise; either way through a temporary name and a
    /// rename, then fsyncs.
    fn store_file(&self, key: &str, source: &Path) -> Result<u64, StorageError> {
        let dst = self.path(key)?;
        let dir = self.parent_dir(&dst)?;
        let src_meta = fs::metadata(source).map_err(io_err("reading", source))?;
        if let Ok(m) = fs::metadata(&dst) {
            if same_file(&m, &src_meta) {
                return Ok(m.len());
            }
        }
        let tmp = tmp_beside(&dst);
        if fs::hard_link(source, &tmp).is_err() {
            let mut out = File::create(&tmp).map_err(io_err("creating", &tmp))?;
            let mut inp = File::open(source).map_err(io_err("opening", source))?;
            let copied = io::copy(&mut inp, &mut out)
                .and_then(|n| out.sync_all().map(|()| n))
                .map_err(io_err("copying into", &tmp));
            if let Err(e) = copied {
                let _ = fs::remove_file(&tmp);
                return Err(e);
            }
        }
        if let Err(e) = fs::rename(&tmp, &dst) {
            let _ = fs::remove_file(&tmp);
            return Err(io_err("renaming into", &dst)(e));
        }
        fsync_dir(&dir)?;
        Ok(src_meta.len())
    }

    fn put(&self, key: &str, bytes: &[u8]) -> Result<(), StorageError> {
        let dst = self.path(key)?;
        let dir = self.parent_dir(&dst)?;
        let tmp = tmp_beside(&dst);
        let written = File::create(&tmp)
            .and_then(|mut f| f.write_all(bytes).and_then(|()| f.sync_all()))
            .map_err(io_err("writing", &tmp));
        if let Err(e) = written {
            let _ = fs::remove_file(&tmp);
            return Err(e);
        }
        fs::rename(&tmp, &dst).map_err(io_err("renaming into", &dst))?;
        fsync_dir(&dir)
    }

    fn size(&self, key: &str) -> Result<Option<u64>, StorageError> {
        let p = self.path(key)?;
        match fs::metadata(&p) {
            Ok(m) => Ok(Some(m.len())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_err("reading", &p)(e)),
        }
    }

    fn read_range(&self, key: &str, offset: u64, len: usize) -> Result<Vec<u8>, StorageError> {
        let p = self.path(key)?;
        let mut f = File::open(&p).map_err(io_err("opening", &p))?;
        f.seek(SeekFrom::Start(offset))
            .map_err(io_err("seeking in", &p))?;
        let mut buf = Vec::with_capacity(len);
        f.take(len as u64)
            .read_to_end(&mut buf)
            .map_err(io_err("reading", &p))?;
        Ok(buf)
    }

    fn read_all(&self, key: &str) -> Result<Vec<u8>, StorageError> {
        let p = self.path(key)?;
        fs::read(&p).map_err(io_err("reading", &p))
    }

    fn local_path(&self, key: &str) -> Option<PathBuf> {
        self.path(key).ok()
    }

    fn delete(&self, key: &str) -> Result<bool, StorageError> {
        let p = self.path(key)?;
        match fs::remove_file(&p) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(io_err("removing", &p)(e)),
        }
    }
}

#[cfg(unix)]
fn same_file(a: &fs::Metadata, b: &fs::Metadata) -> bool {
    use std::os::unix::fs::MetadataExt;
    a.dev() == b.dev() && a.ino() == b.ino()
}

#[cfg(not(unix))]
fn same_file(a: &fs::Metadata, b: &fs::Metadata) -> bool {
    a.len() == b.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys() {
        assert_eq!(
            recording_key("019a-x", 1_795_597_923_120).expect("key"),
            "2026/11/25/019a-x.lcr"
        );
        assert!(recording_key("../etc", 0).is_err());
        assert!(recording_key("a/b", 0).is_err());
        assert_eq!(wav_cache_key("2026/11/25/r.lcr"), "2026/11/25/cache/r.wav");
        assert_eq!(wav_cache_key("r.lcr"), "cache/r.wav");
    }

    #[test]
    fn store_read_delete() {
        let root = std::env::temp_dir().join(format!("linecord-storage-{}", std::process::id()));
        let _ = fs::remove_dir_all(&root);
        let s = LocalStorage::open(&root).expect("open");
        let src = root.join("src.lcr");
        fs::write(&src, b"0123456789").expect("write");
        assert_eq!(s.store_file("2026/01/02/r.lcr", &src).expect("store"), 10);
        assert_eq!(s.store_file("2026/01/02/r.lcr", &src).expect("again"), 10);
        assert_eq!(s.size("2026/01/02/r.lcr").expect("size"), Some(10));
        assert_eq!(
            s.read_range("2026/01/02/r.lcr", 3, 4).expect("range"),
            b"3456"
        );
        assert_eq!(
            s.read_range("2026/01/02/r.lcr", 8, 9).expect("range"),
            b"89"
        );
        s.put("2026/01/02/cache/r.wav", b"RIFF").expect("put");
        assert_eq!(s.read_all("2026/01/02/cache/r.wav").expect("all"), b"RIFF");
        assert!(s.delete("2026/01/02/r.lcr").expect("delete"));
        assert!(!s.delete("2026/01/02/r.lcr").expect("delete"));
        assert_eq!(s.size("2026/01/02/r.lcr").expect("size"), None);
        assert!(s.path("../x").is_err());
        assert!(s.path("a//b").is_err());
        let _ = fs::remove_dir_all(&root);
    }
}
