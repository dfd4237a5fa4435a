//! Any bundle source as an [`ImageSource`] (it is only read from), so the copy engine
//! pushes from a directory, parts or S3 alike.

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

    fn read_small(&self, digest: &Digest) -> Result<Vec<u8>> {
        let path = format!("{BLOBS_DIR}/{}", digest.hex());
        read_all(self.source.as_ref(), &path)?.ok_or_else(|| Error::NotFound {
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
        let source = self.clone_handle();
        let bytes = tokio::task::spawn_blocking(move || source.read_small(&digest))
            .await
            .map_err(|e| Error::invalid(format!("reader thread failed: {e}")))??;
        Ok(Descriptor::new(
            oci::sniff_media_type(&bytes),
            Digest::of(&bytes),
            bytes.len() as u64,
        ))
    }

    async fn get_manifest(&self, _repo: &str, manifest: &Descriptor) -> Result<RawManifest> {
        let source = self.clone_handle();
        let digest = manifest.digest.clone();
        let bytes = tokio::task::spawn_blocking(move || source.read_small(&digest))
            .await
            .map_err(|e| Error::invalid(format!("reader thread failed: {e}")))??;
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
        let source = self.source.clone();
        let path = format!("{BLOBS_DIR}/{}", blob.digest.hex());
        let blob = blob.clone();
        // Hashed as it streams out, the last chunk held until the digest matched: what leaves
        // the bundle is checked even if the bundle changed after it was verified.
        let stream = crate::store::blocking_stream(move |emit| {
            let what = format!("{path} in {}", source.describe());
            let mut reader = source
                .open(&path)?
                .ok_or_else(|| Error::NotFound { what: what.clone() })?;
            crate::store::pump_verified(&mut reader, offset, &blob, &what, emit)
        });
        Ok((offset, stream))
    }
}

impl SourceStore {
    fn clone_handle(&self) -> SourceStore {
        SourceStore {
            source: self.source.clone(),
        }
    }
}
