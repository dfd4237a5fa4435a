//! Where a bundle is read from: a bundle directory or a folder of media parts (read in place).
//! Verification, inspection and every consumer read through this one interface.

use std::io::Read;
use std::path::Path;

use super::format::BUNDLE_FILE;
use super::parts::PartsSource;
use crate::error::{Error, Result};

pub trait BundleSource: Send + Sync {
    /// How to name the source in messages.
    fn describe(&self) -> String;

    /// Every file the source holds, with its size, as bundle paths (`blobs/sha256/<hex>`),
    /// bundle.json and its signature included.
    fn list(&self) -> Result<Vec<(String, u64)>>;

    /// Opens a file for reading; `None` when the source does not hold it.
    fn open(&self, path: &str) -> Result<Option<Box<dyn Read + Send + '_>>>;
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
