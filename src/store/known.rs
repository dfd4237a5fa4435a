//! A destination store that remembers, for one run, what it has learnt of its blobs: the
//! answer to each existence check, the repositories known to be empty (ones this run is
//! about to create), and every blob and manifest it wrote. Planning and then copying to it
//! ask the real store once per blob instead of once per step; every other call passes
//! through. On a registry each request costs an authentication check (a bcrypt comparison
//! on docker-registry with htpasswd), so the checks a run repeats are worth not sending.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;

use super::{
    BlobScope, BlobSink, BlobSource, BlobState, BlobStream, FileUpload, ImageSink, ImageSource,
    Mount, ReadWrite, Store, Tag,
};
use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::oci::{Descriptor, RawManifest};

/// A [`ReadWrite`] store with a memory of its blobs for one run (see the module comment).
pub struct KnownStates {
    inner: Arc<dyn ReadWrite>,
    memory: Mutex<Memory>,
}

#[derive(Default)]
struct Memory {
    /// Repositories that held nothing when the run began.
    empty: BTreeSet<String>,
    /// `(repository, digest)` of blobs known whole.
    present: BTreeSet<(String, Digest)>,
    /// `(repository, digest)` of blobs known missing.
    absent: BTreeSet<(String, Digest)>,
    /// `(repository, reference)` of manifests written in a repository that was empty.
    written: BTreeSet<(String, String)>,
}

impl KnownStates {
    pub fn new(inner: Arc<dyn ReadWrite>) -> Self {
        KnownStates {
            inner,
            memory: Mutex::new(Memory::default()),
        }
    }

    /// Records that `repository` holds nothing (it does not exist yet): its blobs and
    /// manifests are missing without asking, until this store writes them.
    pub fn empty_repository(&self, repository: &str) {
        self.memory().empty.insert(repository.to_owned());
    }

    /// Records blob states learnt elsewhere (existence checks made in bulk).
    pub fn learn(&self, repository: &str, digest: &Digest, state: BlobState) {
        self.memory().record(repository, digest, state);
    }

    fn memory(&self) -> std::sync::MutexGuard<'_, Memory> {
        self.memory.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Memory {
    fn record(&mut self, repository: &str, digest: &Digest, state: BlobState) {
        let key = (repository.to_owned(), digest.clone());
        match state {
            BlobState::Present => {
                self.absent.remove(&key);
                self.present.insert(key);
            }
            BlobState::Absent => {
                self.present.remove(&key);
                self.absent.insert(key);
            }
            // A partial upload is the real store's to describe: ask it again next time.
            BlobState::Partial(_) => self.forget(repository, digest),
        }
    }

    /// Forgets what was known of a blob: the real store is asked next time.
    fn forget(&mut self, repository: &str, digest: &Digest) {
        let key = (repository.to_owned(), digest.clone());
        self.present.remove(&key);
        self.absent.remove(&key);
    }

    fn state(&self, repository: &str, digest: &Digest) -> Option<BlobState> {
        let key = (repository.to_owned(), digest.clone());
        if self.present.contains(&key) {
            Some(BlobState::Present)
        } else if self.absent.contains(&key) || self.empty.contains(repository) {
            Some(BlobState::Absent)
        } else {
            None
        }
    }
}

impl Store for KnownStates {
    fn describe(&self) -> String {
        self.inner.describe()
    }
}

#[async_trait]
impl BlobSource for KnownStates {
    async fn read_blob(
        &self,
        repo: &str,
        blob: &Descriptor,
        offset: u64,
    ) -> Result<(u64, BlobStream)> {
        self.inner.read_blob(repo, blob, offset).await
    }

    fn local_file(&self, blob: &Descriptor) -> Option<std::path::PathBuf> {
        self.inner.local_file(blob)
    }
}

#[async_trait]
impl ImageSource for KnownStates {
    async fn resolve(&self, repo: &str, reference: &str) -> Result<Descriptor> {
        {
            let memory = self.memory();
            if memory.empty.contains(repo)
                && !memory
                    .written
                    .contains(&(repo.to_owned(), reference.to_owned()))
            {
                return Err(Error::NotFound {
                    what: format!("manifest {repo}:{reference} on {}", self.describe()),
                });
            }
        }
        self.inner.resolve(repo, reference).await
    }

    async fn get_manifest(&self, repo: &str, manifest: &Descriptor) -> Result<RawManifest> {
        self.inner.get_manifest(repo, manifest).await
    }
}

#[async_trait]
impl BlobSink for KnownStates {
    fn scope(&self) -> BlobScope {
        self.inner.scope()
    }

    async fn blob_state(&self, repo: &str, blob: &Descriptor) -> Result<BlobState> {
        if let Some(state) = self.memory().state(repo, &blob.digest) {
            return Ok(state);
        }
        let state = self.inner.blob_state(repo, blob).await?;
        self.memory().record(repo, &blob.digest, state);
        Ok(state)
    }

    async fn write_blob(
        &self,
        repo: &str,
        blob: &Descriptor,
        offset: u64,
        body: BlobStream,
    ) -> Result<()> {
        // Unless it succeeds, the real store is asked next time.
        self.memory().forget(repo, &blob.digest);
        self.inner.write_blob(repo, blob, offset, body).await?;
        self.memory().record(repo, &blob.digest, BlobState::Present);
        Ok(())
    }

    fn mount(&self) -> Option<&dyn Mount> {
        self.inner.mount().map(|_| self as &dyn Mount)
    }

    fn file_upload(&self) -> Option<&dyn FileUpload> {
        self.inner.file_upload().map(|_| self as &dyn FileUpload)
    }
}

#[async_trait]
impl Mount for KnownStates {
    async fn mount_blob(&self, repo: &str, blob: &Descriptor, from: &str) -> Result<bool> {
        let Some(mount) = self.inner.mount() else {
            return Ok(false);
        };
        let mounted = mount.mount_blob(repo, blob, from).await?;
        if mounted {
            self.memory().record(repo, &blob.digest, BlobState::Present);
        }
        Ok(mounted)
    }
}

#[async_trait]
impl FileUpload for KnownStates {
    async fn write_blob_from_file(
        &self,
        repo: &str,
        blob: &Descriptor,
        path: &std::path::Path,
        progress: &(dyn Fn(u64) + Send + Sync),
    ) -> Result<u64> {
        let Some(upload) = self.inner.file_upload() else {
            return Err(Error::internal(format!(
                "{} takes no local files",
                self.describe()
            )));
        };
        self.memory().forget(repo, &blob.digest);
        let resumed = upload
            .write_blob_from_file(repo, blob, path, progress)
            .await?;
        self.memory().record(repo, &blob.digest, BlobState::Present);
        Ok(resumed)
    }
}

#[async_trait]
impl ImageSink for KnownStates {
    async fn put_manifest(
        &self,
        repo: &str,
        manifest: &RawManifest,
        tag: Option<&Tag>,
    ) -> Result<()> {
        self.inner.put_manifest(repo, manifest, tag).await?;
        let mut memory = self.memory();
        if memory.empty.contains(repo) {
            memory
                .written
                .insert((repo.to_owned(), manifest.digest().to_string()));
            if let Some(tag) = tag {
                memory.written.insert((repo.to_owned(), tag.name.clone()));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::LayoutStore;

    fn blob(bytes: &[u8]) -> Descriptor {
        Descriptor::new(
            "application/octet-stream",
            Digest::of(bytes),
            bytes.len() as u64,
        )
    }

    fn body(bytes: &'static [u8]) -> BlobStream {
        Box::pin(futures::stream::iter([Ok(bytes::Bytes::from_static(
            bytes,
        ))]))
    }

    #[tokio::test]
    async fn remembers_answers_and_its_own_writes_and_never_a_failed_one() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Arc::new(LayoutStore::create(dir.path()).unwrap());
        let known = KnownStates::new(layout.clone());
        let (a, b) = (blob(b"alpha"), blob(b"beta"));

        // Asked once, then remembered: a blob written behind its back stays "absent".
        assert_eq!(known.blob_state("r", &a).await.unwrap(), BlobState::Absent);
        layout.write_blob("r", &a, 0, body(b"alpha")).await.unwrap();
        assert_eq!(known.blob_state("r", &a).await.unwrap(), BlobState::Absent);
        assert_eq!(
            layout.blob_state("r", &a).await.unwrap(),
            BlobState::Present
        );

        // Its own write is remembered as present.
        known.write_blob("r", &b, 0, body(b"beta")).await.unwrap();
        assert_eq!(known.blob_state("r", &b).await.unwrap(), BlobState::Present);

        // A write that failed is forgotten: the real store is asked again.
        let c = blob(b"gamma");
        known.learn("r", &c.digest, BlobState::Present);
        assert!(known.write_blob("r", &c, 0, body(b"GAMMA")).await.is_err());
        assert_eq!(known.blob_state("r", &c).await.unwrap(), BlobState::Absent);

        // An empty repository answers "missing" without asking, blobs and manifests alike.
        known.empty_repository("new");
        layout
            .write_blob("new", &c, 0, body(b"gamma"))
            .await
            .unwrap();
        assert_eq!(
            known.blob_state("new", &c).await.unwrap(),
            BlobState::Absent
        );
        let manifest = RawManifest {
            media_type: crate::oci::OCI_MANIFEST.to_owned(),
            bytes: bytes::Bytes::from_static(br#"{"schemaVersion":2}"#),
        };
        let tag = Tag {
            name: "latest".to_owned(),
            annotations: Default::default(),
        };
        layout
            .put_manifest("new", &manifest, Some(&tag))
            .await
            .unwrap();
        assert!(layout.resolve("new", "latest").await.is_ok());
        assert!(matches!(
            known.resolve("new", "latest").await,
            Err(Error::NotFound { .. })
        ));
        // What it wrote there itself is found, by tag and by digest.
        known
            .put_manifest("new", &manifest, Some(&tag))
            .await
            .unwrap();
        let digest = manifest.digest().to_string();
        assert_eq!(
            known.resolve("new", "latest").await.unwrap().digest,
            manifest.digest()
        );
        assert!(known.resolve("new", &digest).await.is_ok());
    }
}
