//! A bundle somebody handed you (the read side): its format (`bundle.json`), where it is read
//! from (a directory, media parts, S3), its signature, verification and description, and
//! the artefacts it carries. [`Bundle`] is the one handle every consumer reads through:
//! opened from a [`Location`] with its signature checked, whatever the location.
//! Making a bundle is the `build` module; moving one is `carry`.

pub mod artefacts;
pub mod format;
pub mod inspect;
pub mod location;
pub mod receipt;
pub mod source;
pub mod trust;
pub mod verify;

pub use format::{BUNDLE_FILE, BundleManifest, SIGNATURE_FILE};
pub use inspect::Inspection;
pub use location::Location;
pub use source::BundleSource;
pub use trust::{SignatureStatus, TrustPolicy, sign};
pub use verify::{Depth, Problem, VerifyReport};

use std::sync::Arc;

use location::Source;
use source::{PartsSource, SourceStore, read_all};

use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::progress::Progress;

/// An opened bundle: its bundle.json, parsed only after its signature was checked against the
/// trust policy, and the reader of its files.
pub struct Bundle {
    pub manifest: BundleManifest,
    pub signature: SignatureStatus,
    source: Arc<dyn BundleSource>,
    /// Set when the bundle is one part on its own: it is verified entry by entry.
    part: Option<Arc<PartsSource>>,
    /// bundle.json and its signature file, as read.
    json: Vec<u8>,
    minisig: Option<Vec<u8>>,
}

impl Bundle {
    /// Opens the bundle at `location`: reads bundle.json, checks its signature against
    /// `policy` (refusing the bundle as the policy says), and only then parses it.
    pub async fn open(location: &Location, policy: &TrustPolicy) -> Result<Bundle> {
        match location.open_source().await? {
            Source::Part(part) => {
                let mut bundle = Bundle::from_source(part.clone(), policy).await?;
                bundle.part = Some(part);
                Ok(bundle)
            }
            Source::Other(source) => Bundle::from_source(source, policy).await,
        }
    }

    /// Opens the bundle `source` reads, as [`Bundle::open`] does.
    pub async fn from_source(
        source: Arc<dyn BundleSource>,
        policy: &TrustPolicy,
    ) -> Result<Bundle> {
        let json = read_all(source.as_ref(), BUNDLE_FILE)
            .await?
            .ok_or_else(|| {
                Error::invalid(format!(
                    "{}: not a bundle (no {BUNDLE_FILE})",
                    source.describe()
                ))
                .with_hint("build one with `dify-bundle build --out DIR`")
            })?;
        let minisig = read_all(source.as_ref(), SIGNATURE_FILE).await?;
        let (manifest, signature) =
            trust::check(&json, minisig.clone(), policy, &source.describe())?;
        Ok(Bundle {
            manifest,
            signature,
            source,
            part: None,
            json,
            minisig,
        })
    }

    /// How to name the bundle's location in messages.
    pub fn describe(&self) -> String {
        self.source.describe()
    }

    /// The reader of the bundle's files.
    pub fn source(&self) -> &Arc<dyn BundleSource> {
        &self.source
    }

    /// bundle.json's bytes, as read and checked.
    pub fn json(&self) -> &[u8] {
        &self.json
    }

    /// The sha256 of bundle.json: what a deployment records of the bundle.
    pub fn json_digest(&self) -> Digest {
        Digest::of(&self.json)
    }

    /// The signature file's bytes, if the bundle has one.
    pub fn signature_file(&self) -> Option<&[u8]> {
        self.minisig.as_deref()
    }

    /// Checks every file against bundle.json to `depth`, in parallel. One part on its own,
    /// checked in full, is checked entry by entry (whole files against bundle.json, chunks
    /// against its packing list); to any other depth it is a bundle lacking the other parts'
    /// files.
    pub async fn verify(&self, depth: Depth, progress: Arc<dyn Progress>) -> Result<VerifyReport> {
        match &self.part {
            Some(part) if depth == Depth::Full => {
                verify::verify_part(part, &self.manifest, &self.signature, progress.as_ref()).await
            }
            _ => {
                verify::verify(
                    self.source.clone(),
                    &self.manifest,
                    &self.signature,
                    depth,
                    progress,
                )
                .await
            }
        }
    }

    /// Describes the bundle from its bundle.json (the signature checked only as the policy it
    /// was opened with said).
    pub fn inspect(&self) -> Inspection {
        inspect::inspect(&self.manifest, self.minisig.as_deref())
    }

    /// Reads a whole (small) file of the bundle.
    pub async fn read(&self, path: &str) -> Result<Option<Vec<u8>>> {
        read_all(self.source.as_ref(), path).await
    }

    /// The application stack's template, checked against the digest bundle.json names.
    pub async fn stack_template(&self) -> Result<Vec<u8>> {
        artefacts::stack_template(self.source.as_ref(), &self.manifest).await
    }

    /// The plugin packages, `(identifier, bytes)`, each checked against its digest.
    pub async fn plugin_packages(&self) -> Result<Vec<(String, Vec<u8>)>> {
        artefacts::plugin_packages(self.source.as_ref(), &self.manifest).await
    }

    /// The bundle as a read-only store, for the copy engine.
    pub fn store(&self) -> Arc<SourceStore> {
        Arc::new(SourceStore::new(self.source.clone()))
    }
}
