//! A bundle directory as the build writes it and `download` restores it.

use std::io::Read;
use std::path::Path;

use super::BundleSource;
use crate::error::{Error, Result};

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
