//! Any bundle source as an [`ImageSource`] (it is only read from), so the copy engine
//! pushes from a directory, parts or S3 alike; every blob is hashed as it streams out.

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};

use super::{BundleSource, read_all};
use crate::digest::{Digest, Hasher};
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
        let stream = self
            .source
            .open(&path)
            .await?
            .ok_or_else(|| Error::NotFound { what: what.clone() })?;
        // Hashed as it streams out, the last chunk held until the digest matched: what leaves
        // the bundle is checked even if the bundle changed after it was verified.
        Ok((offset, verified(stream, offset, blob.clone(), what)))
    }
}

/// A blob's whole stream, checked: every byte is hashed (the `skip` bytes before those passed
/// on too), and the last chunk is held back until the blob matched its descriptor's size and
/// digest, so bytes that are not the blob end the stream with an error before its last chunk
/// and a destination never receives a whole wrong blob.
fn verified(stream: BlobStream, skip: u64, blob: Descriptor, what: String) -> BlobStream {
    struct State {
        stream: Option<BlobStream>,
        hasher: Hasher,
        seen: u64,
        pending: Option<Bytes>,
        checked: bool,
    }
    let state = State {
        stream: Some(stream),
        hasher: Hasher::new(),
        seen: 0,
        pending: None,
        checked: false,
    };
    futures::stream::try_unfold(state, move |mut state| {
        let (skip, blob, what) = (skip, blob.clone(), what.clone());
        async move {
            while let Some(stream) = state.stream.as_mut() {
                let Some(chunk) = stream.try_next().await? else {
                    state.stream = None;
                    break;
                };
                state.hasher.update(&chunk);
                let start = state.seen;
                state.seen += chunk.len() as u64;
                if state.seen <= skip {
                    continue;
                }
                let chunk = chunk.slice(skip.saturating_sub(start) as usize..);
                if let Some(previous) = state.pending.replace(chunk) {
                    return Ok(Some((previous, state)));
                }
            }
            if state.checked {
                return Ok(None);
            }
            state.checked = true;
            std::mem::take(&mut state.hasher).check(blob.size, &blob.digest, || what)?;
            let Some(last) = state.pending.take() else {
                return Ok(None);
            };
            Ok(Some((last, state)))
        }
    })
    .boxed()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunks(parts: &[&'static [u8]]) -> BlobStream {
        let parts: Vec<Result<Bytes>> = parts.iter().map(|p| Ok(Bytes::from_static(p))).collect();
        futures::stream::iter(parts).boxed()
    }

    async fn collect(stream: BlobStream) -> (Vec<u8>, Option<Error>) {
        let mut out = Vec::new();
        let mut stream = stream;
        loop {
            match stream.try_next().await {
                Ok(Some(chunk)) => out.extend_from_slice(&chunk),
                Ok(None) => return (out, None),
                Err(e) => return (out, Some(e)),
            }
        }
    }

    fn blob(bytes: &[u8]) -> Descriptor {
        Descriptor::new(
            "application/octet-stream",
            Digest::of(bytes),
            bytes.len() as u64,
        )
    }

    #[tokio::test]
    async fn a_blob_streams_whole_or_from_an_offset_inside_a_chunk() {
        let parts: &[&'static [u8]] = &[b"hello ", b"wide ", b"world"];
        let d = blob(b"hello wide world");
        for skip in [0u64, 3, 6, 8, 16] {
            let (out, error) = collect(verified(chunks(parts), skip, d.clone(), "b".into())).await;
            assert!(error.is_none(), "{error:?}");
            assert_eq!(out, &b"hello wide world"[skip as usize..], "skip {skip}");
        }
    }

    #[tokio::test]
    async fn a_wrong_blob_ends_in_an_error_before_its_last_chunk() {
        let d = blob(b"hello wide world");
        let (out, error) = collect(verified(
            chunks(&[b"hello ", b"wide ", b"WORLD"]),
            0,
            d.clone(),
            "b".into(),
        ))
        .await;
        assert!(
            matches!(error, Some(Error::DigestMismatch { .. })),
            "{error:?}"
        );
        assert_eq!(out, b"hello wide ");
        // Short, and checked even when every byte was skipped.
        let (_, error) = collect(verified(chunks(&[b"hello "]), 6, d, "b".into())).await;
        assert!(
            matches!(error, Some(Error::SizeMismatch { .. })),
            "{error:?}"
        );
    }
}
