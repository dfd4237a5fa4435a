//! A bundle directory as the build writes it and `download` restores it. Files stream from a
//! blocking thread ([`super::stream_ranges`]); listing walks the tree on one too.

use std::path::{Path, PathBuf};

use super::BundleSource;
use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::oci::Descriptor;
use crate::store::BlobStream;

/// Every file with its size, and every directory, below a root.
type Tree = (Vec<(String, u64)>, Vec<String>);

/// A bundle directory.
pub struct DirSource {
    root: PathBuf,
}

impl DirSource {
    pub fn new(root: &Path) -> Self {
        DirSource {
            root: root.to_owned(),
        }
    }

    /// Walks the tree below the root: every file with its size (`u64::MAX` for what is not a
    /// regular file), and every directory.
    fn walk(root: &Path) -> Result<Tree> {
        let mut files = Vec::new();
        let mut dirs = Vec::new();
        let mut pending = vec![(root.to_owned(), String::new())];
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
                    dirs.push(relative.clone());
                    pending.push((entry.path(), relative));
                } else {
                    // Symlinks and other odd entries are listed too; they are never part of a bundle.
                    files.push((relative, if meta.is_file() { meta.len() } else { u64::MAX }));
                }
            }
        }
        files.sort();
        dirs.sort();
        Ok((files, dirs))
    }

    /// The file at `path`, `None` if there is none; anything but a regular file is an error.
    async fn regular_file(&self, path: &str) -> Result<Option<PathBuf>> {
        let full = self.root.join(path);
        match tokio::fs::symlink_metadata(&full).await {
            Ok(meta) if !meta.is_file() => Err(Error::invalid(format!(
                "{}: not a regular file",
                full.display()
            ))),
            Ok(_) => Ok(Some(full)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io(&full, e)),
        }
    }

    async fn walk_off_runtime(&self) -> Result<Tree> {
        let root = self.root.clone();
        tokio::task::spawn_blocking(move || Self::walk(&root))
            .await
            .map_err(|e| Error::invalid(format!("listing {}: {e}", self.root.display())))?
    }
}

#[async_trait::async_trait]
impl BundleSource for DirSource {
    fn describe(&self) -> String {
        self.root.display().to_string()
    }

    async fn list(&self) -> Result<Vec<(String, u64)>> {
        Ok(self.walk_off_runtime().await?.0)
    }

    async fn directories(&self) -> Result<Vec<String>> {
        Ok(self.walk_off_runtime().await?.1)
    }

    async fn hash(&self, path: &str, advanced: super::Advanced) -> Result<Option<Digest>> {
        match self.regular_file(path).await? {
            Some(full) => Ok(Some(
                super::hash_ranges(vec![(full, 0, u64::MAX)], advanced).await?,
            )),
            None => Ok(None),
        }
    }

    async fn open(&self, path: &str) -> Result<Option<BlobStream>> {
        Ok(self.regular_file(path).await?.map(|full| {
            super::stream_ranges(
                vec![(full, 0, u64::MAX)],
                format!("{path} in {}", self.describe()),
            )
        }))
    }

    async fn open_verified(
        &self,
        path: &str,
        blob: &Descriptor,
        skip: u64,
        what: String,
    ) -> Result<Option<BlobStream>> {
        Ok(self.regular_file(path).await?.map(|full| {
            super::stream_ranges_verified(vec![(full, 0, u64::MAX)], skip, blob.clone(), what)
        }))
    }
}
