//! Any bundle source as an [`ImageSource`] (it is only read from), so the copy engine
//! pushes from a directory, parts or S3 alike; every blob is hashed as it streams out.

use super::{BundleSource, read_all};
use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::oci::{self, Descriptor, RawManifest};
use crate::store::layout::BLOBS_DIR;
use crate::store::{BlobSource, BlobStream, ImageSource, Store};

/// Any bundle source as an [`ImageSource`], so the copy engine can push from a directory, a
/// folder of parts or S3 alike.
pub struct SourceStore {
    source: std::sync::Arc<dyn BundleSource>,
}

impl SourceStore {
    pub fn new(source: std::sync::Arc<dyn BundleSource>) -> Self {
        SourceStore { source }
    }

    /// The blobs the source holds (a delta bundle's left-out layers may be absent).
    pub async fn blob_digests(&self) -> Result<std::collections::BTreeSet<Digest>> {
        let prefix = format!("{BLOBS_DIR}/");
        Ok(self
            .source
            .list()
            .await?
            .into_iter()
            .filter_map(|(path, _)| {
                path.strip_prefix(&prefix)
                    .and_then(|hex| Digest::from_hex(hex).ok())
            })
            .collect())
    }

    async fn read_small(&self, digest: &Digest) -> Result<Vec<u8>> {
        let path = format!("{BLOBS_DIR}/{}", digest.hex());
        read_all(self.source.as_ref(), &path)
            .await?
            .ok_or_else(|| Error::NotFound {
                what: format!("{path} in {}", self.source.describe()),
            })
    }
}

impl Store for SourceStore {
    fn describe(&self) -> String {
        format!("bundle {}", self.source.describe())
    }
}

#[async_trait::async_trait]
impl ImageSource for SourceStore {
    async fn resolve(&self, _repo: &str, reference: &str) -> Result<Descriptor> {
        let digest: Digest = reference.parse()?;
        let bytes = self.read_small(&digest).await?;
        Ok(Descriptor::new(
            oci::sniff_media_type(&bytes),
            Digest::of(&bytes),
            bytes.len() as u64,
        ))
    }

    async fn get_manifest(&self, _repo: &str, manifest: &Descriptor) -> Result<RawManifest> {
        let bytes = self.read_small(&manifest.digest).await?;
        RawManifest::checked(bytes, manifest, &self.source.describe())
    }
}

#[async_trait::async_trait]
impl BlobSource for SourceStore {
    async fn read_blob(
        &self,
        _repo: &str,
        blob: &Descriptor,
        offset: u64,
    ) -> Result<(u64, BlobStream)> {
        let path = format!("{BLOBS_DIR}/{}", blob.digest.hex());
        let what = format!("{path} in {}", self.source.describe());
        // Hashed as it streams out, the last chunk held until the digest matched: what leaves
        // the bundle is checked even if the bundle changed after it was verified.
        let stream = self
            .source
            .open_verified(&path, blob, offset, what.clone())
            .await?
            .ok_or(Error::NotFound { what })?;
        Ok((offset, stream))
    }
}
