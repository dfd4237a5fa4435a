//! Stores: anything that holds blobs and manifests addressed by digest, by role — a
//! [`BlobSource`] blobs are read from, a [`BlobSink`] they are written to, and on top of
//! each the image side ([`ImageSource`]: tags and manifests; [`ImageSink`]: manifests and
//! tags). What only some sinks can do (mount across repositories, take a local file) is a
//! capability a sink offers, not a method the others stub. The copy engine moves content
//! from any source to any sink; a new transport is a new store.

use std::collections::BTreeMap;

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;

use crate::error::Result;
use crate::oci::{Descriptor, RawManifest};

pub mod known;
pub mod layout;
pub mod registry;
pub mod s3;
pub mod url;

pub use layout::LayoutStore;
pub use registry::{RegistryOptions, RegistryStore};

/// A blob's bytes as they arrive, in chunks.
pub type BlobStream = BoxStream<'static, Result<Bytes>>;

/// Runs `read` on a blocking thread and yields what it emits as a stream. `read` gets an
/// `emit` callback (false once nobody listens) and usually hands it to [`pump`].
pub fn blocking_stream<F>(read: F) -> BlobStream
where
    F: FnOnce(&mut dyn FnMut(Bytes) -> bool) -> Result<()> + Send + 'static,
{
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Result<Bytes>>(4);
    tokio::task::spawn_blocking(move || {
        let mut emit = |chunk: Bytes| tx.blocking_send(Ok(chunk)).is_ok();
        if let Err(e) = read(&mut emit) {
            let _ = tx.blocking_send(Err(e));
        }
    });
    futures::StreamExt::boxed(futures::stream::poll_fn(move |cx| rx.poll_recv(cx)))
}

/// The most a local file is read in one chunk: small enough that a chunk is still in the
/// core's cache when it is hashed and sent right after the read (here a 1 GiB buffer hashed at
/// 1.2 GB/s from memory and at 1.9 GB/s from cache), large enough that system calls do not
/// count.
pub const READ_CHUNK: usize = 256 << 10;

/// Reads up to `max` bytes into a fresh buffer that is never zeroed first; short only at the
/// end of `reader`.
fn read_chunk(reader: &mut dyn std::io::Read, max: usize) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let mut chunk = Vec::with_capacity(max);
    reader.take(max as u64).read_to_end(&mut chunk)?;
    Ok(chunk)
}

/// Reads `reader` to its end in [`READ_CHUNK`]s, emitting each; `what` names it in errors.
pub fn pump(
    reader: &mut dyn std::io::Read,
    what: &str,
    emit: &mut dyn FnMut(Bytes) -> bool,
) -> Result<()> {
    loop {
        let chunk = read_chunk(reader, READ_CHUNK).map_err(|e| crate::error::Error::io(what, e))?;
        if chunk.is_empty() {
            return Ok(());
        }
        if !emit(Bytes::from(chunk)) {
            return Ok(());
        }
    }
}

/// Like [`pump`] for a blob, from `skip` on: hashes every byte — the `skip` bytes before
/// those emitted too — each chunk right after it was read, while it is in cache, and holds
/// the last chunk back until the whole blob matched its descriptor's size and digest. Bytes
/// that are not the blob end the stream with an error before its last chunk, so a
/// destination never receives a whole wrong blob.
pub fn pump_verified(
    reader: &mut dyn std::io::Read,
    skip: u64,
    blob: &Descriptor,
    what: &str,
    emit: &mut dyn FnMut(Bytes) -> bool,
) -> Result<()> {
    let mut hasher = crate::digest::Hasher::new();
    let mut skipped = 0u64;
    let mut pending: Option<Bytes> = None;
    loop {
        let want = if skipped < skip {
            ((skip - skipped) as usize).min(READ_CHUNK)
        } else {
            READ_CHUNK
        };
        let chunk = read_chunk(reader, want).map_err(|e| crate::error::Error::io(what, e))?;
        if chunk.is_empty() {
            break;
        }
        hasher.update(&chunk);
        if skipped < skip {
            skipped += chunk.len() as u64;
            continue;
        }
        if let Some(previous) = pending.replace(Bytes::from(chunk))
            && !emit(previous)
        {
            return Ok(());
        }
    }
    hasher.check(blob.size, &blob.digest, || what.to_owned())?;
    if let Some(last) = pending {
        emit(last);
    }
    Ok(())
}

/// What a store already holds of a blob.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BlobState {
    /// Complete and verified.
    Present,
    /// The first `n` bytes were received before an interruption.
    Partial(u64),
    Absent,
}

impl BlobState {
    /// `Present` when the store holds the blob whole, else `Absent` (for stores that keep
    /// no partial blobs).
    pub fn present(whole: bool) -> BlobState {
        if whole {
            BlobState::Present
        } else {
            BlobState::Absent
        }
    }
}

/// A name under which a manifest is stored, with annotations describing it.
#[derive(Clone, Debug, Default)]
pub struct Tag {
    pub name: String,
    pub annotations: BTreeMap<String, String>,
}

/// Whatever a store is used for, it names itself in messages.
pub trait Store: Send + Sync {
    /// A short description for messages: `registry 127.0.0.1:5000`, `bundle /data/b`.
    fn describe(&self) -> String;
}

/// A store blobs are read from.
#[async_trait]
pub trait BlobSource: Store {
    /// Streams a blob starting at `offset`. Returns where the stream really starts: a store
    /// that cannot seek starts at 0.
    async fn read_blob(
        &self,
        repo: &str,
        blob: &Descriptor,
        offset: u64,
    ) -> Result<(u64, BlobStream)>;

    /// Where the blob is as a local file, if it is one (lets a destination that can take a
    /// file, see [`BlobSink::file_upload`], read ranges itself).
    fn local_file(&self, _blob: &Descriptor) -> Option<std::path::PathBuf> {
        None
    }
}

/// A source of images: manifests found by tag or digest, and the blobs they name.
#[async_trait]
pub trait ImageSource: BlobSource {
    /// Resolves a tag or digest to the descriptor of the manifest it names (no body fetched).
    async fn resolve(&self, repo: &str, reference: &str) -> Result<Descriptor>;

    /// The manifest with this digest, bytes exactly as stored.
    async fn get_manifest(&self, repo: &str, manifest: &Descriptor) -> Result<RawManifest>;
}

/// Where a store keeps blobs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BlobScope {
    /// Blobs belong to a repository (a registry): one shared by two repositories is written
    /// to each, or mounted from one into the other (see [`BlobSink::mount`]).
    PerRepository,
    /// A blob is stored once, whatever the repository; the `repo` arguments are unused.
    Shared,
}

/// A store blobs are written to.
#[async_trait]
pub trait BlobSink: Store {
    fn scope(&self) -> BlobScope;

    async fn blob_state(&self, repo: &str, blob: &Descriptor) -> Result<BlobState>;

    /// Writes a blob, appending to the `offset` bytes already held: `offset` is 0 unless
    /// [`BlobSink::blob_state`] reported [`BlobState::Partial`]. The blob becomes visible only
    /// after its size and digest are checked.
    async fn write_blob(
        &self,
        repo: &str,
        blob: &Descriptor,
        offset: u64,
        body: BlobStream,
    ) -> Result<()>;

    /// The store's way to make a blob one repository holds part of another without sending
    /// it again, if it has one.
    fn mount(&self) -> Option<&dyn Mount> {
        None
    }

    /// The store's way to write a blob from a local file, if it does better than a stream
    /// (S3 reads parts straight from file ranges).
    fn file_upload(&self) -> Option<&dyn FileUpload> {
        None
    }
}

/// Mounting blobs between repositories of one store (see [`BlobSink::mount`]).
#[async_trait]
pub trait Mount: Send + Sync {
    /// Makes a blob that `from` (a repository of this store) holds part of `repo` without
    /// sending it again. `Ok(false)`: the store would not this time, and the blob must be
    /// written.
    async fn mount_blob(&self, repo: &str, blob: &Descriptor, from: &str) -> Result<bool>;
}

/// Writing a blob from a local file (see [`BlobSink::file_upload`]).
#[async_trait]
pub trait FileUpload: Send + Sync {
    /// Writes `blob` from the file at `path`, calling `progress` with the bytes sent as they
    /// go. Returns the bytes that were already there from an interrupted attempt.
    async fn write_blob_from_file(
        &self,
        repo: &str,
        blob: &Descriptor,
        path: &std::path::Path,
        progress: &(dyn Fn(u64) + Send + Sync),
    ) -> Result<u64>;
}

/// A destination of images: the blobs, then the manifests that name them.
#[async_trait]
pub trait ImageSink: BlobSink {
    /// Stores a manifest under its digest and, when given, a tag. Every blob it references
    /// must already be in the store.
    async fn put_manifest(
        &self,
        repo: &str,
        manifest: &RawManifest,
        tag: Option<&Tag>,
    ) -> Result<()>;
}

/// A destination the copy engine also reads from: planning fetches manifests and configs it
/// already holds, and a manifest or tag it already has is not written again.
pub trait ReadWrite: ImageSource + ImageSink {}

impl<T: ImageSource + ImageSink + ?Sized> ReadWrite for T {}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::digest::Digest;

    fn emitted(data: &[u8], skip: u64, blob: &Descriptor) -> (Vec<u8>, Result<()>) {
        let mut out = Vec::new();
        let mut reader = data;
        let result = pump_verified(&mut reader, skip, blob, "blob", &mut |chunk| {
            out.extend_from_slice(&chunk);
            true
        });
        (out, result)
    }

    #[test]
    fn a_verified_pump_never_lets_a_whole_wrong_blob_out() {
        let data: Vec<u8> = (0..3_500_000u32).map(|i| (i % 253) as u8).collect();
        let right = Descriptor::new(
            "application/octet-stream",
            Digest::of(&data),
            data.len() as u64,
        );
        let (out, result) = emitted(&data, 0, &right);
        assert!(result.is_ok());
        assert_eq!(out, data);
        // Resumed at an offset: only the rest goes out, but every byte is hashed.
        let (out, result) = emitted(&data, 1_048_581, &right);
        assert!(result.is_ok());
        assert_eq!(out, &data[1_048_581..]);

        let mut damaged = data.clone();
        damaged[10] ^= 1;
        let (out, result) = emitted(&damaged, 0, &right);
        assert!(matches!(
            result,
            Err(crate::error::Error::DigestMismatch { .. })
        ));
        assert!(out.len() < data.len(), "the last chunk was held back");
        // Damage inside the skipped prefix is caught too.
        let (_, result) = emitted(&damaged, 1_048_581, &right);
        assert!(matches!(
            result,
            Err(crate::error::Error::DigestMismatch { .. })
        ));
        let (out, result) = emitted(&data[..data.len() - 1], 0, &right);
        assert!(matches!(
            result,
            Err(crate::error::Error::SizeMismatch { .. })
        ));
        assert!(out.len() < data.len() - 1);
    }
}
