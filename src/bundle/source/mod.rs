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
use futures::{StreamExt, TryStreamExt};

use crate::digest::{Digest, Hasher};
use crate::error::{Error, Result};
use crate::oci::Descriptor;
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

    /// Opens a blob as a checked stream of its bytes from `skip` on: every byte is hashed
    /// (the skipped ones too) and the last chunk is held back until the blob matched `blob`,
    /// so bytes that are not the blob end in an error before a destination has all of them;
    /// `what` names it in errors; `None` when the source does not hold it. Sources of local
    /// files hash each chunk on their reading thread, right after the read; others hash
    /// their stream.
    async fn open_verified(
        &self,
        path: &str,
        blob: &Descriptor,
        skip: u64,
        what: String,
    ) -> Result<Option<BlobStream>> {
        Ok(self
            .open(path)
            .await?
            .map(|stream| verified(stream, skip, blob.clone(), what)))
    }

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

/// Byte ranges of local files, `(file, offset, length)`, read one after the other as one
/// stream of bytes.
struct RangesReader {
    ranges: std::vec::IntoIter<(PathBuf, u64, u64)>,
    /// The file being read, or the last one opened: the one an error came from.
    path: PathBuf,
    file: Option<std::io::Take<std::fs::File>>,
}

impl RangesReader {
    fn new(ranges: Vec<(PathBuf, u64, u64)>) -> Self {
        RangesReader {
            ranges: ranges.into_iter(),
            path: PathBuf::new(),
            file: None,
        }
    }
}

impl Read for RangesReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        loop {
            let file = match &mut self.file {
                Some(file) => file,
                None => {
                    let Some((path, offset, length)) = self.ranges.next() else {
                        return Ok(0);
                    };
                    self.path = path;
                    let mut file = std::fs::File::open(&self.path)?;
                    if offset > 0 {
                        file.seek(SeekFrom::Start(offset))?;
                    }
                    self.file.insert(file.take(length))
                }
            };
            let n = file.read(buf)?;
            if n > 0 || buf.is_empty() {
                return Ok(n);
            }
            self.file = None;
        }
    }
}

/// Streams byte ranges of local files, `(file, offset, length)`, one after the other from a
/// blocking thread ([`crate::store::blocking_stream`]).
pub fn stream_ranges(ranges: Vec<(PathBuf, u64, u64)>, what: String) -> BlobStream {
    crate::store::blocking_stream(move |emit| {
        crate::store::pump(&mut RangesReader::new(ranges), &what, emit)
    })
}

/// [`stream_ranges`] checked as [`BundleSource::open_verified`] says, each chunk hashed on
/// the reading thread right after it was read ([`crate::store::pump_verified`]).
pub fn stream_ranges_verified(
    ranges: Vec<(PathBuf, u64, u64)>,
    skip: u64,
    blob: Descriptor,
    what: String,
) -> BlobStream {
    crate::store::blocking_stream(move |emit| {
        crate::store::pump_verified(&mut RangesReader::new(ranges), skip, &blob, &what, emit)
    })
}

/// Hashes byte ranges of local files, `(file, offset, length)`, one after the other, on a
/// blocking thread with one reused buffer; `advanced` is told each amount read.
pub async fn hash_ranges(ranges: Vec<(PathBuf, u64, u64)>, advanced: Advanced) -> Result<Digest> {
    tokio::task::spawn_blocking(move || {
        let mut hasher = Hasher::new();
        let mut buf = vec![0u8; crate::store::READ_CHUNK];
        let mut reader = RangesReader::new(ranges);
        loop {
            let n = reader
                .read(&mut buf)
                .map_err(|e| Error::io(&reader.path, e))?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            advanced(n as u64);
        }
        Ok(hasher.finish())
    })
    .await
    .map_err(|e| Error::internal(format!("a hashing thread failed: {e}")))?
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

    #[tokio::test]
    async fn ranges_of_local_files_stream_as_one_blob_checked_on_the_reading_thread() {
        // A blob split over two files, each with bytes around its piece, as media parts hold
        // it; longer than one read chunk so the last-chunk hold-back is exercised.
        let data: Vec<u8> = (0..(crate::store::READ_CHUNK * 2 + 12_345))
            .map(|i| (i % 251) as u8)
            .collect();
        let dir = tempfile::tempdir().unwrap();
        let cut = crate::store::READ_CHUNK + 777;
        let (first, second) = (dir.path().join("one"), dir.path().join("two"));
        std::fs::write(&first, [b"xx".as_slice(), &data[..cut], b"yy"].concat()).unwrap();
        std::fs::write(&second, [b"zzz".as_slice(), &data[cut..]].concat()).unwrap();
        let ranges = vec![
            (first.clone(), 2, cut as u64),
            (second.clone(), 3, (data.len() - cut) as u64),
        ];
        let right = blob(&data);
        for skip in [0, 5, cut as u64, data.len() as u64] {
            let stream = stream_ranges_verified(ranges.clone(), skip, right.clone(), "b".into());
            let (out, error) = collect(stream).await;
            assert!(error.is_none(), "skip {skip}: {error:?}");
            assert_eq!(out, &data[skip as usize..], "skip {skip}");
        }
        let (out, error) = collect(stream_ranges(ranges.clone(), "b".into())).await;
        assert!(error.is_none());
        assert_eq!(out, data);
        let advanced: Advanced = std::sync::Arc::new(|_| {});
        assert_eq!(
            hash_ranges(ranges.clone(), advanced).await.unwrap(),
            right.digest
        );

        // One byte changed on disk: the stream ends in a mismatch, its last chunk held back.
        let mut bytes = std::fs::read(&second).unwrap();
        bytes[10] ^= 1;
        std::fs::write(&second, bytes).unwrap();
        let stream = stream_ranges_verified(ranges.clone(), 0, right.clone(), "b".into());
        let (out, error) = collect(stream).await;
        assert!(
            matches!(error, Some(Error::DigestMismatch { .. })),
            "{error:?}"
        );
        assert!(out.len() < data.len());

        // A file gone: an I/O error naming it.
        std::fs::remove_file(&second).unwrap();
        let advanced: Advanced = std::sync::Arc::new(|_| {});
        match hash_ranges(ranges, advanced).await {
            Err(Error::Io { path, .. }) => assert_eq!(path, second),
            other => panic!("{other:?}"),
        }
    }
}
