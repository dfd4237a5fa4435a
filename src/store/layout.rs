//! The OCI image layout directory store: `oci-layout`, `index.json`, `blobs/sha256/<hex>`.
//! Blobs are written under `.partial/` and renamed into place once their digest checks;
//! an interrupted download resumes from its partial file. A blob already in place counts
//! as present only once this process has hashed it; a damaged one is removed and fetched
//! again.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;

use super::{
    BlobScope, BlobSink, BlobSource, BlobState, BlobStream, ImageSink, ImageSource, Store, Tag,
};
use crate::digest::{Digest, Hasher};
use crate::error::{Error, Result};
use crate::oci::{self, ANNOTATION_REF_NAME, Descriptor, Index, RawManifest};

pub const OCI_LAYOUT_FILE: &str = "oci-layout";
pub const INDEX_FILE: &str = "index.json";
pub const BLOBS_DIR: &str = "blobs/sha256";
/// Where blobs live while they are being received.
pub const PARTIAL_DIR: &str = ".partial";

const CHUNK: usize = 1 << 20;

pub struct LayoutStore {
    root: PathBuf,
    index: Mutex<Index>,
    /// Blobs whose bytes this process has hashed (on arrival, or found in place and
    /// re-hashed). Only these count as present: a blob left by an earlier run may have been
    /// damaged since, keeping its size.
    hashed: Mutex<std::collections::HashSet<Digest>>,
}

fn empty_index() -> Index {
    Index {
        schema_version: 2,
        media_type: Some(oci::OCI_INDEX.to_owned()),
        manifests: Vec::new(),
        annotations: None,
    }
}

impl LayoutStore {
    /// Opens a layout, creating the directory and its skeleton when missing.
    pub fn create(root: &Path) -> Result<Self> {
        std::fs::create_dir_all(root.join(BLOBS_DIR)).map_err(|e| Error::io(root, e))?;
        let marker = root.join(OCI_LAYOUT_FILE);
        if !marker.exists() {
            write_atomically(&marker, br#"{"imageLayoutVersion":"1.0.0"}"#)?;
        }
        let index = if root.join(INDEX_FILE).exists() {
            read_index(root)?
        } else {
            empty_index()
        };
        Ok(LayoutStore {
            root: root.to_owned(),
            index: Mutex::new(index),
            hashed: Mutex::default(),
        })
    }

    /// Opens an existing layout for reading.
    pub fn open(root: &Path) -> Result<Self> {
        if !root.join(OCI_LAYOUT_FILE).is_file() {
            return Err(Error::invalid(format!(
                "{}: not an OCI image layout (no `{OCI_LAYOUT_FILE}` file)",
                root.display()
            )));
        }
        Ok(LayoutStore {
            root: root.to_owned(),
            index: Mutex::new(read_index(root)?),
            hashed: Mutex::default(),
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.root.join(BLOBS_DIR).join(digest.hex())
    }

    fn partial_path(&self, digest: &Digest) -> PathBuf {
        self.root.join(PARTIAL_DIR).join(digest.hex())
    }

    /// The entries of `index.json`.
    pub fn index(&self) -> Index {
        self.index
            .lock()
            .map(|i| i.clone())
            .unwrap_or_else(|p| p.into_inner().clone())
    }

    /// Replaces `index.json` with exactly these entries.
    pub fn set_index_entries(&self, entries: Vec<Descriptor>) -> Result<()> {
        let mut index = self.index.lock().unwrap_or_else(|p| p.into_inner());
        index.manifests = entries;
        write_json(&self.root.join(INDEX_FILE), &*index)
    }

    /// Removes what a failed or killed run left behind, for a run that holds the
    /// directory's lock: temporary files of interrupted writes in the root and among the
    /// blobs, and everything in `.partial/` but resumable downloads (named by digest).
    pub fn clean_leftovers(&self) -> Result<usize> {
        let mut removed = 0;
        for dir in [self.root.clone(), self.root.join(BLOBS_DIR)] {
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            for entry in entries.flatten() {
                if is_atomic_temp(&entry.file_name().to_string_lossy()) {
                    remove_any(&entry.path())?;
                    removed += 1;
                }
            }
        }
        if let Ok(entries) = std::fs::read_dir(self.root.join(PARTIAL_DIR)) {
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                let resumable =
                    Digest::from_hex(&name).is_ok() && entry.file_type().is_ok_and(|t| t.is_file());
                if !resumable {
                    remove_any(&entry.path())?;
                    removed += 1;
                }
            }
        }
        Ok(removed)
    }

    /// Removes what interrupted transfers left behind.
    pub fn clean_partials(&self) -> Result<()> {
        let dir = self.root.join(PARTIAL_DIR);
        match std::fs::remove_dir_all(&dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(Error::io(dir, e)),
            _ => Ok(()),
        }
    }

    /// A directory inside the layout for files being made (renamed into `blobs/` when done).
    pub fn scratch_dir(&self) -> Result<PathBuf> {
        let dir = self.root.join(PARTIAL_DIR);
        std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
        Ok(dir)
    }

    /// Moves a finished file (whose digest the caller computed while writing it) into place.
    pub fn import_file(&self, path: &Path, digest: &Digest) -> Result<()> {
        let target = self.blob_path(digest);
        std::fs::rename(path, &target).map_err(|e| Error::io(&target, e))?;
        self.mark_hashed(digest);
        Ok(())
    }

    fn mark_hashed(&self, digest: &Digest) {
        self.hashed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(digest.clone());
    }

    fn was_hashed(&self, digest: &Digest) -> bool {
        self.hashed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(digest)
    }

    /// Whether the blob file in place holds exactly `blob`: hashed once per process; a file
    /// whose bytes are not its name is removed, so it is fetched again.
    pub fn check_in_place(&self, blob: &Descriptor) -> Result<bool> {
        if self.was_hashed(&blob.digest) {
            return Ok(self.blob_path(&blob.digest).is_file());
        }
        let whole = blob_in_place(&self.blob_path(&blob.digest), blob)?;
        if whole {
            self.mark_hashed(&blob.digest);
        }
        Ok(whole)
    }

    /// Reads a whole (small) blob into memory.
    pub fn read_small_blob(&self, digest: &Digest) -> Result<Vec<u8>> {
        let path = self.blob_path(digest);
        std::fs::read(&path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => Error::NotFound {
                what: format!("blob {digest} in {}", self.root.display()),
            },
            _ => Error::io(path, e),
        })
    }

    /// Stores a small blob held in memory, after checking its digest.
    pub fn write_small_blob(&self, digest: &Digest, bytes: &[u8]) -> Result<()> {
        digest.verify(bytes, || format!("blob {digest}"))?;
        let path = self.blob_path(digest);
        if self.was_hashed(digest)
            || std::fs::read(&path).is_ok_and(|held| held.as_slice() == bytes)
        {
            self.mark_hashed(digest);
            return Ok(());
        }
        remove_any(&path)?;
        write_atomically(&path, bytes)?;
        self.mark_hashed(digest);
        Ok(())
    }
}

fn read_index(root: &Path) -> Result<Index> {
    let path = root.join(INDEX_FILE);
    let bytes = std::fs::read(&path).map_err(|e| Error::io(&path, e))?;
    serde_json::from_slice(&bytes)
        .map_err(|e| Error::invalid(format!("{}: malformed index: {e}", path.display())))
}

/// Writes `bytes` to a temporary file beside `path`, then renames it into place. The
/// temporary file is removed when either step fails (a full disk must not leave it behind).
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
    let result = std::fs::write(&tmp, bytes)
        .map_err(|e| Error::io(&tmp, e))
        .and_then(|()| std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e)));
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Whether `name` is a temporary file [`write_atomically`] makes (`<stem>.tmp-<pid>`).
pub fn is_atomic_temp(name: &str) -> bool {
    name.rsplit_once(".tmp-").is_some_and(|(stem, pid)| {
        !stem.is_empty() && !pid.is_empty() && pid.bytes().all(|b| b.is_ascii_digit())
    })
}

/// Serialises `value` as pretty JSON and writes it atomically.
pub fn write_json(path: &Path, value: &impl serde::Serialize) -> Result<()> {
    let mut bytes = serde_json::to_vec_pretty(value)
        .map_err(|e| Error::invalid(format!("{}: cannot serialise: {e}", path.display())))?;
    bytes.push(b'\n');
    write_atomically(path, &bytes)
}

impl Store for LayoutStore {
    fn describe(&self) -> String {
        format!("bundle {}", self.root.display())
    }
}

#[async_trait]
impl BlobSource for LayoutStore {
    async fn read_blob(
        &self,
        _repo: &str,
        blob: &Descriptor,
        offset: u64,
    ) -> Result<(u64, BlobStream)> {
        let path = self.blob_path(&blob.digest);
        let mut file = std::fs::File::open(&path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => Error::NotFound {
                what: format!("blob {} in {}", blob.digest, self.root.display()),
            },
            _ => Error::io(&path, e),
        })?;
        std::io::Seek::seek(&mut file, std::io::SeekFrom::Start(offset))
            .map_err(|e| Error::io(&path, e))?;
        let what = path.display().to_string();
        let stream = super::blocking_stream(move |emit| super::pump(&mut file, &what, emit));
        Ok((offset, stream))
    }

    fn local_file(&self, blob: &Descriptor) -> Option<PathBuf> {
        let path = self.blob_path(&blob.digest);
        path.is_file().then_some(path)
    }
}

#[async_trait]
impl ImageSource for LayoutStore {
    async fn resolve(&self, _repo: &str, reference: &str) -> Result<Descriptor> {
        if let Ok(digest) = reference.parse::<Digest>() {
            let bytes = self.read_small_blob(&digest)?;
            return Ok(Descriptor::new(
                oci::sniff_media_type(&bytes),
                digest,
                bytes.len() as u64,
            ));
        }
        self.index()
            .manifests
            .into_iter()
            .find(|d| d.annotation(ANNOTATION_REF_NAME) == Some(reference))
            .ok_or_else(|| Error::NotFound {
                what: format!("`{reference}` in {}", self.root.display()),
            })
    }

    async fn get_manifest(&self, _repo: &str, manifest: &Descriptor) -> Result<RawManifest> {
        let bytes = self.read_small_blob(&manifest.digest)?;
        RawManifest::checked(bytes, manifest, &self.root.display().to_string())
    }
}

#[async_trait]
impl BlobSink for LayoutStore {
    fn scope(&self) -> BlobScope {
        BlobScope::Shared
    }

    /// Present only when the blob in place was hashed by this process (see
    /// [`LayoutStore::check_in_place`]); the right size is not enough.
    async fn blob_state(&self, _repo: &str, blob: &Descriptor) -> Result<BlobState> {
        let present = if self.was_hashed(&blob.digest) {
            self.blob_path(&blob.digest).is_file()
        } else {
            let (path, wanted) = (self.blob_path(&blob.digest), blob.clone());
            let whole = tokio::task::spawn_blocking(move || blob_in_place(&path, &wanted))
                .await
                .map_err(|e| Error::internal(format!("hash thread failed: {e}")))??;
            if whole {
                self.mark_hashed(&blob.digest);
            }
            whole
        };
        if present {
            return Ok(BlobState::Present);
        }
        match std::fs::metadata(self.partial_path(&blob.digest)) {
            Ok(meta) if meta.len() > 0 && meta.len() < blob.size => {
                Ok(BlobState::Partial(meta.len()))
            }
            _ => Ok(BlobState::Absent),
        }
    }

    async fn write_blob(
        &self,
        _repo: &str,
        blob: &Descriptor,
        offset: u64,
        body: BlobStream,
    ) -> Result<()> {
        let partial = self.partial_path(&blob.digest);
        if let Some(parent) = partial.parent() {
            std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
        }
        let what = format!("blob {}", blob.digest);
        let hasher = receive(&partial, offset, blob.size, body, &what).await?;
        let checked = hasher.check(blob.size, &blob.digest, || what);
        if matches!(checked, Err(Error::DigestMismatch { .. })) {
            // A whole blob with the wrong bytes cannot be resumed: start over next time.
            let _ = std::fs::remove_file(&partial);
        }
        checked?;
        let target = self.blob_path(&blob.digest);
        std::fs::rename(&partial, &target).map_err(|e| Error::io(&target, e))?;
        self.mark_hashed(&blob.digest);
        Ok(())
    }
}

#[async_trait]
impl ImageSink for LayoutStore {
    async fn put_manifest(
        &self,
        _repo: &str,
        manifest: &RawManifest,
        tag: Option<&Tag>,
    ) -> Result<()> {
        let digest = manifest.digest();
        self.write_small_blob(&digest, &manifest.bytes)?;
        let Some(tag) = tag else { return Ok(()) };
        let mut descriptor = manifest.descriptor();
        let mut annotations = tag.annotations.clone();
        annotations.insert(ANNOTATION_REF_NAME.to_owned(), tag.name.clone());
        descriptor.annotations = Some(annotations);
        let mut index = self.index.lock().unwrap_or_else(|p| p.into_inner());
        index
            .manifests
            .retain(|d| d.annotation(ANNOTATION_REF_NAME) != Some(tag.name.as_str()));
        index.manifests.push(descriptor);
        write_json(&self.root.join(INDEX_FILE), &*index)
    }
}

/// Hashes the file at `path`: true when it is `blob`, byte for byte; a file of the right
/// size with other bytes, or anything but a regular file, is removed.
fn blob_in_place(path: &Path, blob: &Descriptor) -> Result<bool> {
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.is_file() && meta.len() == blob.size => {}
        Ok(meta) if meta.is_file() => return Ok(false),
        Ok(_) => {
            remove_any(path)?;
            return Ok(false);
        }
        Err(_) => return Ok(false),
    }
    let (actual, len) = crate::digest::hash_file(path)?;
    if actual == blob.digest && len == blob.size {
        Ok(true)
    } else {
        std::fs::remove_file(path).map_err(|e| Error::io(path, e))?;
        Ok(false)
    }
}

/// Removes whatever is at `path` (file, symlink or directory); nothing there is fine.
fn remove_any(path: &Path) -> Result<()> {
    let result = match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.is_dir() => std::fs::remove_dir_all(path),
        Ok(_) => std::fs::remove_file(path),
        Err(_) => return Ok(()),
    };
    result.map_err(|e| Error::io(path, e))
}

/// Appends `body` to the partial file (re-hashing the `offset` bytes already there) on a
/// blocking writer thread, so hashing and disk writes overlap with the network.
/// Returns the hash of the whole file. On a stream error the bytes received so far stay in
/// the partial file for the next attempt.
async fn receive(
    partial: &Path,
    offset: u64,
    size: u64,
    mut body: BlobStream,
    what: &str,
) -> Result<Hasher> {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Bytes>(8);
    let path = partial.to_owned();
    let writer = tokio::task::spawn_blocking(move || -> Result<Hasher> {
        let io = |e| Error::io(&path, e);
        let mut hasher = Hasher::new();
        let mut file = if offset > 0 {
            let mut existing = std::fs::File::open(&path).map_err(io)?;
            let mut buf = vec![0u8; CHUNK];
            let mut left = offset;
            while left > 0 {
                let want = left.min(CHUNK as u64) as usize;
                existing.read_exact(&mut buf[..want]).map_err(io)?;
                hasher.update(&buf[..want]);
                left -= want as u64;
            }
            let file = std::fs::OpenOptions::new()
                .write(true)
                .open(&path)
                .map_err(io)?;
            file.set_len(offset).map_err(io)?;
            let mut file = file;
            std::io::Seek::seek(&mut file, std::io::SeekFrom::Start(offset)).map_err(io)?;
            file
        } else {
            std::fs::File::create(&path).map_err(io)?
        };
        // Unbuffered: whatever arrived is on disk, so a killed run resumes from it.
        while let Some(chunk) = rx.blocking_recv() {
            hasher.update(&chunk);
            file.write_all(&chunk).map_err(io)?;
        }
        Ok(hasher)
    });
    let mut received = offset;
    let mut failure = None;
    while let Some(chunk) = body.next().await {
        match chunk {
            Ok(chunk) => {
                received += chunk.len() as u64;
                if received > size {
                    failure = Some(Error::SizeMismatch {
                        what: what.to_owned(),
                        expected: size,
                        actual: received,
                    });
                    break;
                }
                if tx.send(chunk).await.is_err() {
                    break;
                }
            }
            Err(e) => {
                failure = Some(e);
                break;
            }
        }
    }
    drop(tx);
    let written = writer
        .await
        .map_err(|e| Error::internal(format!("{what}: writer thread failed: {e}")))?;
    match failure {
        Some(e @ Error::SizeMismatch { .. }) => {
            let _ = std::fs::remove_file(partial);
            Err(e)
        }
        Some(e) => Err(e),
        None => written,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_atomic_write_leaves_no_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        // The rename fails: a non-empty directory holds the target name.
        let target = dir.path().join("index.json");
        std::fs::create_dir_all(target.join("x")).unwrap();
        assert!(write_atomically(&target, b"{}").is_err());
        let names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["index.json"]);
    }

    #[test]
    fn temporary_names_are_recognised() {
        assert!(is_atomic_temp("index.tmp-27583"));
        assert!(is_atomic_temp("bundle.json.tmp-1"));
        assert!(!is_atomic_temp("index.json"));
        assert!(!is_atomic_temp(".tmp-1"));
        assert!(!is_atomic_temp("a.tmp-"));
    }
}
