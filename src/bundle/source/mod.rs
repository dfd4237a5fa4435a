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

use futures::TryStreamExt;

use crate::error::{Error, Result};
use crate::store::BlobStream;

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
    let actual = crate::digest::Digest::of(&bytes);
    if actual != *digest {
        return Err(Error::DigestMismatch {
            what: format!("{what} {path} in {}", source.describe()),
            expected: digest.to_string(),
            actual: actual.to_string(),
        });
    }
    Ok(bytes)
}
