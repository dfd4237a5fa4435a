//! Where a bundle is read from: a bundle directory or a folder of media parts (read in place).
//! Verification, inspection and every consumer read through this one interface.

use std::io::Read;
use std::path::Path;

use super::format::BUNDLE_FILE;
use super::parts::PartsSource;
use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::oci::{self, Descriptor, RawManifest};
use crate::store::layout::BLOBS_DIR;
use crate::store::{BlobState, BlobStream, Store, Tag};

pub trait BundleSource: Send + Sync {
    /// How to name the source in messages.
    fn describe(&self) -> String;

    /// Every file the source holds, with its size, as bundle paths (`blobs/sha256/<hex>`),
    /// bundle.json and its signature included.
    fn list(&self) -> Result<Vec<(String, u64)>>;

    /// Opens a file for reading; `None` when the source does not hold it.
    fn open(&self, path: &str) -> Result<Option<Box<dyn Read + Send + '_>>>;

    /// Every directory the source holds (bundle paths, no trailing `/`); sources without
    /// directories of their own have none.
    fn directories(&self) -> Result<Vec<String>> {
        Ok(Vec::new())
    }
}

/// Reads a whole (small) file of a bundle.
pub fn read_all(source: &dyn BundleSource, path: &str) -> Result<Option<Vec<u8>>> {
    let Some(mut reader) = source.open(path)? else {
        return Ok(None);
    };
    let mut bytes = Vec::new();
    reader
        .read_to_end(&mut bytes)
        .map_err(|e| Error::invalid(format!("{}: {path}: {e}", source.describe())))?;
    Ok(Some(bytes))
}

/// Reads a whole (small) blob of a bundle and checks it against its digest; `what` names
/// it in errors.
pub fn read_blob_checked(
    source: &dyn BundleSource,
    digest: &crate::digest::Digest,
    what: &str,
) -> Result<Vec<u8>> {
    let path = format!("{}/{}", crate::store::layout::BLOBS_DIR, digest.hex());
    let bytes = read_all(source, &path)?.ok_or_else(|| {
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

/// A bundle directory.
pub struct DirSource {
    root: std::path::PathBuf,
}

impl DirSource {
    pub fn new(root: &Path) -> Self {
        DirSource {
            root: root.to_owned(),
        }
    }
}

impl BundleSource for DirSource {
    fn describe(&self) -> String {
        self.root.display().to_string()
    }

    fn list(&self) -> Result<Vec<(String, u64)>> {
        let mut out = Vec::new();
        let mut pending = vec![(self.root.clone(), String::new())];
        while let Some((path, prefix)) = pending.pop() {
            for entry in std::fs::read_dir(&path).map_err(|e| Error::io(&path, e))? {
                let entry = entry.map_err(|e| Error::io(&path, e))?;
                let name = entry.file_name().to_string_lossy().into_owned();
                let relative = if prefix.is_empty() {
                    name
                } else {
                    format!("{prefix}/{name}")
                };
                let meta = entry
                    .path()
                    .symlink_metadata()
                    .map_err(|e| Error::io(entry.path(), e))?;
                if meta.is_dir() {
                    pending.push((entry.path(), relative));
                } else {
                    // Symlinks and other odd entries are listed too; they are never part of a bundle.
                    out.push((relative, if meta.is_file() { meta.len() } else { u64::MAX }));
                }
            }
        }
        out.sort();
        Ok(out)
    }

    fn directories(&self) -> Result<Vec<String>> {
        let mut out = Vec::new();
        let mut pending = vec![(self.root.clone(), String::new())];
        while let Some((path, prefix)) = pending.pop() {
            for entry in std::fs::read_dir(&path).map_err(|e| Error::io(&path, e))? {
                let entry = entry.map_err(|e| Error::io(&path, e))?;
                let is_dir = entry
                    .path()
                    .symlink_metadata()
                    .map_err(|e| Error::io(entry.path(), e))?
                    .is_dir();
                if is_dir {
                    let name = entry.file_name().to_string_lossy().into_owned();
                    let relative = if prefix.is_empty() {
                        name
                    } else {
                        format!("{prefix}/{name}")
                    };
                    out.push(relative.clone());
                    pending.push((entry.path(), relative));
                }
            }
        }
        out.sort();
        Ok(out)
    }

    fn open(&self, path: &str) -> Result<Option<Box<dyn Read + Send + '_>>> {
        let full = self.root.join(path);
        match std::fs::symlink_metadata(&full) {
            Ok(meta) if !meta.is_file() => Err(Error::invalid(format!(
                "{}: not a regular file",
                full.display()
            ))),
            Ok(_) => {
                let file = std::fs::File::open(&full).map_err(|e| Error::io(&full, e))?;
                Ok(Some(Box::new(std::io::BufReader::with_capacity(
                    1 << 20,
                    file,
                ))))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io(&full, e)),
        }
    }
}

/// Opens what the user named: a bundle directory, a folder of media parts, or one part.
pub fn open_source(path: &Path) -> Result<Box<dyn BundleSource>> {
    if path.is_dir() {
        if path.join(BUNDLE_FILE).is_file() {
            return Ok(Box::new(DirSource::new(path)));
        }
        return Ok(Box::new(PartsSource::open_folder(path)?));
    }
    if path.is_file() {
        return Ok(Box::new(PartsSource::open_parts(&[path.to_owned()], true)?));
    }
    Err(Error::invalid(format!(
        "{}: no such bundle directory, folder of parts, or part",
        path.display()
    )))
}

/// Any bundle source as a read-only [`Store`], so the copy engine can push from a
/// directory, a folder of parts or S3 alike.
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

#[async_trait::async_trait]
impl Store for SourceStore {
    fn describe(&self) -> String {
        format!("bundle {}", self.source.describe())
    }

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

    async fn put_manifest(&self, _: &str, _: &RawManifest, _: Option<&Tag>) -> Result<()> {
        Err(Error::invalid("a bundle being installed is read-only"))
    }

    async fn blob_state(&self, _repo: &str, blob: &Descriptor) -> Result<BlobState> {
        let path = format!("{BLOBS_DIR}/{}", blob.digest.hex());
        // Listing blocks (an S3 source waits on its requests): never on a runtime thread.
        let source = self.source.clone();
        let listed = tokio::task::spawn_blocking(move || source.list())
            .await
            .map_err(|e| Error::invalid(format!("reader thread failed: {e}")))??;
        let present = listed
            .iter()
            .any(|(p, size)| *p == path && *size == blob.size);
        Ok(if present {
            BlobState::Present
        } else {
            BlobState::Absent
        })
    }

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

    async fn write_blob(&self, _: &str, _: &Descriptor, _: u64, _: BlobStream) -> Result<()> {
        Err(Error::invalid("a bundle being installed is read-only"))
    }
}

impl SourceStore {
    fn clone_handle(&self) -> SourceStore {
        SourceStore {
            source: self.source.clone(),
        }
    }
}
