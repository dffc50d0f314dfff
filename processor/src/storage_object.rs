//! Recordings in object storage: [`ObjectStorage`], the scale-out implementation of
//! [`Storage`] over the `object_store` crate.
//!
//! `storage = "s3://bucket/prefix"` keeps the objects in an S3-compatible store (AWS S3,
//! MinIO, Ceph RGW, Garage, …; endpoint and credentials from [`S3Options`] or the usual
//! `AWS_*` environment variables); `storage = "file:///srv/linecord/store"` keeps them in
//! a local directory through `object_store`'s `LocalFileSystem` — the same code path,
//! which is how it is tested here (no S3 server is available on the test machines).
//!
//! Keys are the same as [`crate::storage::LocalStorage`]'s (`YYYY/MM/DD/<id>.lcr`,
//! `YYYY/MM/DD/cache/<id>.wav`), below the prefix. Puts are atomic (a reader sees the old
//! or the new object); a recording file above [`MULTIPART_THRESHOLD`] is uploaded in parts.
//! Range reads are ranged GETs, so the API's `Range` support works unchanged.

use std::fs::File;
use std::io::Read;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload, WriteMultipart};

use crate::blocking::BlockingRuntime;
use crate::storage::{is_safe_id, Storage, StorageError};

/// Files larger than this are uploaded with a multipart upload, in parts of this size.
pub const MULTIPART_THRESHOLD: usize = 8 * 1024 * 1024;

/// Endpoint and credentials of an S3-compatible store. Absent values fall back to the
/// `AWS_*` environment variables (`AWS_ENDPOINT`, `AWS_REGION`, `AWS_ACCESS_KEY_ID`,
/// `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`, `AWS_ALLOW_HTTP`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct S3Options {
    /// Endpoint URL, e.g. `http://127.0.0.1:9000` (absent: AWS).
    pub endpoint: Option<String>,
    /// Region (default `us-east-1`).
    pub region: Option<String>,
    /// Access key id.
    pub access_key_id: Option<String>,
    /// Secret access key.
    pub secret_access_key: Option<String>,
    /// Allow plain `http://` endpoints.
    pub allow_http: bool,
}

/// Recording storage in an object store.
#[derive(Clone)]
pub struct ObjectStorage {
    store: Arc<dyn ObjectStore>,
    prefix: String,
    rt: Arc<BlockingRuntime>,
    url: String,
}

impl std::fmt::Debug for ObjectStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ObjectStorage")
            .field("url", &self.url)
            .finish()
    }
}

/// Whether `storage` is an object-storage URL this build understands.
pub fn is_object_url(storage: &str) -> bool {
    storage.starts_with("s3://") || storage.starts_with("file://")
}

fn backend(url: &str, e: impl std::fmt::Display) -> StorageError {
    StorageError::Backend(format!("{url}: {e}"))
}

impl ObjectStorage {
    /// Opens the store named by `url` (`s3://bucket[/prefix]` or `file:///abs/dir`; the
    /// directory is created if missing). `s3` is used for `s3://` only.
    pub fn open(url: &str, s3: &S3Options) -> Result<ObjectStorage, StorageError> {
        let (store, prefix): (Arc<dyn ObjectStore>, String) =
            if let Some(rest) = url.strip_prefix("s3://") {
                let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
                if bucket.is_empty() {
                    return Err(StorageError::Backend(format!("{url}: no bucket")));
                }
                let mut b = object_store::aws::AmazonS3Builder::from_env().with_bucket_name(bucket);
                if let Some(v) = &s3.endpoint {
                    b = b.with_endpoint(v);
                }
                if let Some(v) = &s3.region {
                    b = b.with_region(v);
                }
                if let Some(v) = &s3.access_key_id {
                    b = b.with_access_key_id(v);
                }
                if let Some(v) = &s3.secret_access_key {
                    b = b.with_secret_access_key(v);
                }
                if s3.allow_http {
                    b = b.with_allow_http(true);
                }
                (
                    Arc::new(b.build().map_err(|e| backend(url, e))?),
                    prefix.to_owned(),
                )
            } else if let Some(dir) = url.strip_prefix("file://") {
                let dir = PathBuf::from(dir);
                if !dir.is_absolute() {
                    return Err(StorageError::Backend(format!(
                        "{url}: a file:// URL needs an absolute path (file:///dir)"
                    )));
                }
                std::fs::create_dir_all(&dir).map_err(|source| StorageError::Io {
                    op: "creating",
                    path: dir.clone(),
                    source,
                })?;
                let fs = object_store::local::LocalFileSystem::new_with_prefix(&dir)
                    .map_err(|e| backend(url, e))?
                    .with_automatic_cleanup(true);
                (Arc::new(fs), String::new())
            } else {
                return Err(StorageError::Backend(format!(
                    "{url}: unsupported storage URL (s3://bucket/prefix or file:///dir)"
                )));
            };
        let prefix = prefix.trim_matches('/').to_owned();
        if !prefix.is_empty() && !prefix.split('/').all(is_safe_id) {
            return Err(StorageError::InvalidKey(prefix));
        }
        let rt = BlockingRuntime::new("object-store")
            .map_err(|e| StorageError::Backend(format!("starting a runtime: {e}")))?;
        Ok(ObjectStorage {
            store,
            prefix,
            rt: Arc::new(rt),
            url: url.to_owned(),
        })
    }

    /// The object path of `key`, refusing keys that are not safe relative paths.
    pub fn location(&self, key: &str) -> Result<ObjectPath, StorageError> {
        if !key.split('/').all(is_safe_id) {
            return Err(StorageError::InvalidKey(key.to_owned()));
        }
        let full = if self.prefix.is_empty() {
            key.to_owned()
        } else {
            format!("{}/{key}", self.prefix)
        };
        ObjectPath::parse(&full).map_err(|_| StorageError::InvalidKey(key.to_owned()))
    }

    fn err(&self, key: &str, e: object_store::Error) -> StorageError {
        StorageError::Backend(format!("{} {key}: {e}", self.url))
    }

    async fn head(&self, loc: &ObjectPath, key: &str) -> Result<Option<u64>, StorageError> {
        match self.store.head(loc).await {
            Ok(m) => Ok(Some(m.size)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(self.err(key, e)),
        }
    }

    async fn upload_file(
        &self,
        loc: &ObjectPath,
        key: &str,
        source: &Path,
    ) -> Result<u64, StorageError> {
        let io = |op: &'static str| {
            let path = source.to_owned();
            move |source| StorageError::Io { op, path, source }
        };
        let mut file = File::open(source).map_err(io("opening"))?;
        let size = file.metadata().map_err(io("reading"))?.len();
        if size <= MULTIPART_THRESHOLD as u64 {
            let mut buf = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
            file.read_to_end(&mut buf).map_err(io("reading"))?;
            let n = buf.len() as u64;
            self.store
                .put(loc, PutPayload::from(buf))
                .await
                .map_err(|e| self.err(key, e))?;
            return Ok(n);
        }
        let upload = self
            .store
            .put_multipart(loc)
            .await
            .map_err(|e| self.err(key, e))?;
        let mut writer = WriteMultipart::new_with_chunk_size(upload, MULTIPART_THRESHOLD);
        let mut buf = vec![0u8; 1024 * 1024];
        let mut n = 0u64;
        loop {
            let got = match file.read(&mut buf) {
                Ok(0) => break,
                Ok(got) => got,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    writer.abort().await.ok();
                    return Err(io("reading")(e));
                }
            };
            // At most two parts in flight.
            if let Err(e) = writer.wait_for_capacity(2).await {
                return Err(self.err(key, e));
            }
            writer.write(&buf[..got]);
            n += got as u64;
        }
        writer.finish().await.map_err(|e| self.err(key, e))?;
        Ok(n)
    }

    async fn range(
        &self,
        loc: &ObjectPath,
        key: &str,
        r: Range<u64>,
    ) -> Result<Vec<u8>, StorageError> {
        match self.store.get_range(loc, r.clone()).await {
            Ok(b) => Ok(b.to_vec()),
            Err(e @ object_store::Error::NotFound { .. }) => Err(self.err(key, e)),
            Err(first) => {
                // A range past the end is an error for some stores: clamp it and retry.
                let Some(size) = self.head(loc, key).await? else {
                    return Err(self.err(key, first));
                };
                if r.start >= size {
                    return Ok(Vec::new());
                }
                let end = r.end.min(size);
                if end >= r.end {
                    return Err(self.err(key, first));
                }
                let b = self
                    .store
                    .get_range(loc, r.start..end)
                    .await
                    .map_err(|e| self.err(key, e))?;
                Ok(b.to_vec())
            }
        }
    }
}

impl Storage for ObjectStorage {
    fn store_file(&self, key: &str, source: &Path) -> Result<u64, StorageError> {
        let loc = self.location(key)?;
        self.rt.block_on(self.upload_file(&loc, key, source))
    }

    fn put(&self, key: &str, bytes: &[u8]) -> Result<(), StorageError> {
        let loc = self.location(key)?;
        let payload = PutPayload::from(bytes.to_vec());
        self.rt.block_on(async {
            self.store
                .put(&loc, payload)
                .await
                .map(|_| ())
                .map_err(|e| self.err(key, e))
        })
    }

    fn size(&self, key: &str) -> Result<Option<u64>, StorageError> {
        let loc = self.location(key)?;
        self.rt.block_on(self.head(&loc, key))
    }

    fn read_range(&self, key: &str, offset: u64, len: usize) -> Result<Vec<u8>, StorageError> {
        let loc = self.location(key)?;
        if len == 0 {
            return Ok(Vec::new());
        }
        let end = offset.saturating_add(len as u64);
        self.rt.block_on(self.range(&loc, key, offset..end))
    }

    fn read_all(&self, key: &str) -> Result<Vec<u8>, StorageError> {
        let loc = self.location(key)?;
        self.rt.block_on(async {
            let got = self.store.get(&loc).await.map_err(|e| self.err(key, e))?;
            let b = got.bytes().await.map_err(|e| self.err(key, e))?;
            Ok(b.to_vec())
        })
    }

    fn delete(&self, key: &str) -> Result<bool, StorageError> {
        let loc = self.location(key)?;
        self.rt.block_on(async {
            if self.head(&loc, key).await?.is_none() {
                return Ok(false);
            }
            match self.store.delete(&loc).await {
                Ok(()) => Ok(true),
                Err(object_store::Error::NotFound { .. }) => Ok(false),
                Err(e) => Err(self.err(key, e)),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_and_keys() {
        assert!(is_object_url("s3://b/p"));
        assert!(is_object_url("file:///x"));
        assert!(!is_object_url("/var/lib/x"));
        let none = S3Options::default();
        assert!(ObjectStorage::open("ftp://x", &none).is_err());
        assert!(ObjectStorage::open("file://relative/dir", &none).is_err());
        assert!(ObjectStorage::open("s3:///prefix", &none).is_err());
        let s3 = S3Options {
            endpoint: Some("http://127.0.0.1:9".into()),
            region: Some("us-east-1".into()),
            access_key_id: Some("k".into()),
            secret_access_key: Some("s".into()),
            allow_http: true,
        };
        let s = ObjectStorage::open("s3://bucket/pre/fix/", &s3).expect("builds offline");
        assert_eq!(
            s.location("2026/01/02/r.lcr").expect("key").as_ref(),
            "pre/fix/2026/01/02/r.lcr"
        );
        assert!(s.location("../x").is_err());
        assert!(s.location("a//b").is_err());
    }
}
