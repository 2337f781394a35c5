//! Package bytes on `object_store`: a local directory by default, S3-compatible for scale-out.
//!
//! Uploads go through [`BlobWriter`]: bytes stream to a multipart upload under a fresh key
//! while the checksum is computed. A multipart upload is invisible until completed (S3), or
//! written to a staging file renamed on completion (local), and the key is referenced by no
//! package row until the row commits — so a reader never sees half-written bytes. On a
//! failed check the upload is aborted and nothing is stored.

use std::sync::Arc;

use bytes::Bytes;
use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, WriteMultipart};
use ota_core::checksum::{ChecksumAlgorithm, Digest, Hasher};

/// A blob storage failure.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    /// The blob URL is not `file://…`, `s3://…` or `memory:`.
    #[error("unsupported blob URL {url:?}: {reason}")]
    BadUrl {
        /// The URL.
        url: String,
        /// What is wrong.
        reason: String,
    },
    /// The upload is larger than the configured limit.
    #[error("upload exceeds the limit of {limit} bytes")]
    TooLarge {
        /// The limit.
        limit: u64,
    },
    /// The storage failed.
    #[error("blob storage error: {0}")]
    Storage(#[from] object_store::Error),
    /// Local directory could not be created.
    #[error("cannot create blob directory {path}: {source}")]
    Io {
        /// Directory.
        path: String,
        /// Cause.
        source: std::io::Error,
    },
}

/// Package bytes storage.
#[derive(Clone)]
pub struct BlobStore {
    inner: Arc<dyn ObjectStore>,
    description: String,
}

impl std::fmt::Debug for BlobStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "BlobStore({})", self.description)
    }
}

impl BlobStore {
    /// Opens a blob store from a URL:
    /// * `file:///abs/dir` — a local directory (created if missing);
    /// * `s3://bucket[?endpoint=http://host:port&region=…&allow_http=true]` — S3 or an
    ///   S3-compatible server; credentials from the usual `AWS_*` environment variables;
    /// * `memory:` — in memory (tests).
    pub fn from_url(url: &str) -> Result<Self, BlobError> {
        let bad = |reason: &str| BlobError::BadUrl {
            url: url.to_owned(),
            reason: reason.to_owned(),
        };
        if url == "memory:" {
            return Ok(Self {
                inner: Arc::new(InMemory::new()),
                description: url.to_owned(),
            });
        }
        let parsed = url::Url::parse(url).map_err(|e| bad(&e.to_string()))?;
        match parsed.scheme() {
            "file" => {
                let dir = parsed
                    .to_file_path()
                    .map_err(|()| bad("not an absolute local path"))?;
                Self::local(&dir)
            }
            "s3" => {
                let bucket = parsed
                    .host_str()
                    .filter(|b| !b.is_empty())
                    .ok_or_else(|| bad("missing bucket name"))?;
                let mut b = AmazonS3Builder::from_env().with_bucket_name(bucket);
                for (k, v) in parsed.query_pairs() {
                    b = match k.as_ref() {
                        "endpoint" => b.with_endpoint(v.as_ref()),
                        "region" => b.with_region(v.as_ref()),
                        "allow_http" => b.with_allow_http(v == "true"),
                        "access_key_id" => b.with_access_key_id(v.as_ref()),
                        "secret_access_key" => b.with_secret_access_key(v.as_ref()),
                        other => return Err(bad(&format!("unknown parameter {other:?}"))),
                    };
                }
                let store = b.build()?;
                Ok(Self {
                    inner: Arc::new(store),
                    description: format!("s3://{bucket}"),
                })
            }
            other => Err(bad(&format!("scheme {other:?} is not file, s3 or memory"))),
        }
    }

    /// A local directory (created if missing).
    pub fn local(dir: &std::path::Path) -> Result<Self, BlobError> {
        std::fs::create_dir_all(dir).map_err(|source| BlobError::Io {
            path: dir.display().to_string(),
            source,
        })?;
        let fs = LocalFileSystem::new_with_prefix(dir)?;
        Ok(Self {
            inner: Arc::new(fs),
            description: format!("file://{}", dir.display()),
        })
    }

    /// Starts an upload under `key` that hashes with `algorithm` and refuses more than
    /// `limit` bytes.
    pub async fn begin(
        &self,
        key: &str,
        algorithm: ChecksumAlgorithm,
        limit: u64,
    ) -> Result<BlobWriter, BlobError> {
        let upload = self.inner.put_multipart(&Path::from(key)).await?;
        Ok(BlobWriter {
            upload: Some(WriteMultipart::new(upload)),
            hasher: Hasher::new(algorithm),
            size: 0,
            limit,
            key: key.to_owned(),
        })
    }

    /// The whole blob.
    pub async fn get(&self, key: &str) -> Result<Bytes, BlobError> {
        Ok(self.inner.get(&Path::from(key)).await?.bytes().await?)
    }

    /// Deletes a blob (missing is fine).
    pub async fn delete(&self, key: &str) -> Result<(), BlobError> {
        match self.inner.delete(&Path::from(key)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Keys under a prefix (for checks and garbage collection).
    pub async fn keys(&self, prefix: &str) -> Result<Vec<String>, BlobError> {
        use futures_util::TryStreamExt;
        let prefix = Path::from(prefix);
        let metas: Vec<_> = self.inner.list(Some(&prefix)).try_collect().await?;
        Ok(metas.into_iter().map(|m| m.location.to_string()).collect())
    }

    /// Whether a blob exists.
    pub async fn exists(&self, key: &str) -> Result<bool, BlobError> {
        match self.inner.head(&Path::from(key)).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }
}

/// An upload in progress. Call [`BlobWriter::finish`] or [`BlobWriter::abort`]; dropping it
/// leaves an incomplete upload that is never visible.
pub struct BlobWriter {
    upload: Option<WriteMultipart>,
    hasher: Hasher,
    size: u64,
    limit: u64,
    key: String,
}

impl std::fmt::Debug for BlobWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "BlobWriter({}, {} bytes)", self.key, self.size)
    }
}

impl BlobWriter {
    /// Appends bytes; fails (and aborts the upload) past the size limit.
    pub async fn write(&mut self, data: Bytes) -> Result<(), BlobError> {
        let len = u64::try_from(data.len()).unwrap_or(u64::MAX);
        self.size = self.size.saturating_add(len);
        if self.size > self.limit {
            self.abort_inner().await;
            return Err(BlobError::TooLarge { limit: self.limit });
        }
        self.hasher.update(&data);
        if let Some(up) = self.upload.as_mut() {
            up.wait_for_capacity(4).await?;
            up.put(data);
        }
        Ok(())
    }

    /// Bytes written so far.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The digest of everything written, before completing (to check it first).
    pub fn digest(&self) -> Digest {
        self.hasher.clone().finalize()
    }

    /// Completes the upload: the blob becomes readable under its key.
    pub async fn finish(mut self) -> Result<(), BlobError> {
        if let Some(up) = self.upload.take() {
            up.finish().await?;
        }
        Ok(())
    }

    /// Abandons the upload; nothing is stored.
    pub async fn abort(mut self) {
        self.abort_inner().await;
    }

    async fn abort_inner(&mut self) {
        if let Some(up) = self.upload.take()
            && let Err(e) = up.abort().await
        {
            tracing::warn!(key = %self.key, error = %e, "aborting upload failed");
        }
    }
}
