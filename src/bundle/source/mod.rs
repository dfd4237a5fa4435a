//! Where a bundle is read from: a bundle directory, media parts read in place, or S3.
//! Verification, inspection and every consumer read through this one asynchronous interface
//! (through [`crate::bundle::Bundle`]); a file comes out as a stream of chunks, as a store's
//! blob does.

pub mod dir;
pub mod parts;
pub mod s3;
pub mod store;

pub use dir::DirSource;
pub use parts::PartsSource;
pub use s3::S3BundleSource;
pub use store::SourceStore;

use std::io::{Read, Seek, SeekFrom};
use std::path::PathBuf;

use bytes::Bytes;
use futures::TryStreamExt;

use crate::digest::{Digest, Hasher};
use crate::error::{Error, Result};
use crate::store::BlobStream;

/// Told how many more bytes were read, as a file is hashed.
pub type Advanced = std::sync::Arc<dyn Fn(u64) + Send + Sync>;

#[async_trait::async_trait]
pub trait BundleSource: Send + Sync {
    /// How to name the source in messages.
    fn describe(&self) -> String;

    /// Every file the source holds, with its size, as bundle paths (`blobs/sha256/<hex>`),
    /// bundle.json and its signature included.
    async fn list(&self) -> Result<Vec<(String, u64)>>;

    /// Opens a file as a stream of its bytes, from the start; `None` when the source does not
    /// hold it.
    async fn open(&self, path: &str) -> Result<Option<BlobStream>>;

    /// Hashes a file, calling `advanced` with each amount read; `None` when the source does not
    /// hold it. Sources of local files hash on a blocking thread with one buffer, as fast as
    /// a file can be hashed; others hash their stream.
    async fn hash(&self, path: &str, advanced: Advanced) -> Result<Option<Digest>> {
        let Some(mut stream) = self.open(path).await? else {
            return Ok(None);
        };
        let mut hasher = Hasher::new();
        while let Some(chunk) = stream.try_next().await? {
            hasher.update(&chunk);
            advanced(chunk.len() as u64);
        }
        Ok(Some(hasher.finish()))
    }

    /// Every directory the source holds (bundle paths, no trailing `/`); sources without
    /// directories of their own have none.
    async fn directories(&self) -> Result<Vec<String>> {
        Ok(Vec::new())
    }
}

/// Reads a whole (small) file of a bundle.
pub async fn read_all(source: &dyn BundleSource, path: &str) -> Result<Option<Vec<u8>>> {
    let Some(stream) = source.open(path).await? else {
        return Ok(None);
    };
    let bytes = stream
        .try_fold(Vec::new(), |mut all, chunk| async move {
            all.extend_from_slice(&chunk);
            Ok(all)
        })
        .await
        .map_err(|e| Error::invalid(format!("{}: {path}: {e}", source.describe())))?;
    Ok(Some(bytes))
}

/// Reads a whole (small) blob of a bundle and checks it against its digest; `what` names
/// it in errors.
pub async fn read_blob_checked(
    source: &dyn BundleSource,
    digest: &crate::digest::Digest,
    what: &str,
) -> Result<Vec<u8>> {
    let path = format!("{}/{}", crate::store::layout::BLOBS_DIR, digest.hex());
    let bytes = read_all(source, &path).await?.ok_or_else(|| {
        Error::invalid(format!("{}: {what} ({path}) is missing", source.describe()))
    })?;
    digest.verify(&bytes, || format!("{what} {path} in {}", source.describe()))?;
    Ok(bytes)
}

/// Streams byte ranges of local files, `(file, offset, length)`, one after the other from a
/// blocking thread ([`crate::store::blocking_stream`]), in chunks of up to 1 MiB read
/// straight into fresh buffers (never zeroed first).
pub fn stream_ranges(ranges: Vec<(PathBuf, u64, u64)>) -> BlobStream {
    const CHUNK: u64 = 1 << 20;
    crate::store::blocking_stream(move |emit| {
        for (path, offset, length) in ranges {
            let mut file = std::fs::File::open(&path).map_err(|e| Error::io(&path, e))?;
            if offset > 0 {
                file.seek(SeekFrom::Start(offset))
                    .map_err(|e| Error::io(&path, e))?;
            }
            let mut left = length;
            while left > 0 {
                let mut chunk = Vec::with_capacity(left.min(CHUNK) as usize);
                let n = (&mut file)
                    .take(left.min(CHUNK))
                    .read_to_end(&mut chunk)
                    .map_err(|e| Error::io(&path, e))?;
                if n == 0 {
                    break;
                }
                left -= n as u64;
                if !emit(Bytes::from(chunk)) {
                    return Ok(());
                }
            }
        }
        Ok(())
    })
}

/// Hashes byte ranges of local files, `(file, offset, length)`, one after the other, on a
/// blocking thread with one reused buffer; `advanced` is told each amount read.
pub async fn hash_ranges(ranges: Vec<(PathBuf, u64, u64)>, advanced: Advanced) -> Result<Digest> {
    tokio::task::spawn_blocking(move || {
        let mut hasher = Hasher::new();
        let mut buf = vec![0u8; 1 << 20];
        for (path, offset, length) in ranges {
            let mut file = std::fs::File::open(&path).map_err(|e| Error::io(&path, e))?;
            if offset > 0 {
                file.seek(SeekFrom::Start(offset))
                    .map_err(|e| Error::io(&path, e))?;
            }
            let mut file = file.take(length);
            loop {
                let n = file.read(&mut buf).map_err(|e| Error::io(&path, e))?;
                if n == 0 {
                    break;
                }
                hasher.update(&buf[..n]);
                advanced(n as u64);
            }
        }
        Ok(hasher.finish())
    })
    .await
    .map_err(|e| Error::internal(format!("a hashing thread failed: {e}")))?
}
