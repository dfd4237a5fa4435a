//! The copy engine: walks manifests from roots in a source store and moves what the
//! destination lacks — blobs first (concurrently, streaming, verified, resumable), then
//! manifests children-first, then tags. Every transfer in the tool is this one engine.

mod plan;
mod transfer;

pub use transfer::{BlobJob, Outcome, copy_blobs};

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

pub use plan::{ImagePlan, PlatformImage};

use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::oci::{Descriptor, Platform};
use crate::progress::Progress;
use crate::retry::RetryPolicy;
use crate::store::{BlobScope, ImageSource, ReadWrite, Tag};

/// One image to copy: where it comes from and under which name it lands.
#[derive(Clone)]
pub struct Root {
    pub source: Arc<dyn ImageSource>,
    pub source_repo: String,
    /// Tag or digest in the source.
    pub reference: String,
    pub dest_repo: String,
    pub tag: Option<Tag>,
    /// How to name this image in messages (`api (docker.io/langgenius/dify-api:1.13.3)`).
    pub label: String,
}

#[derive(Clone, Debug)]
pub struct CopyOptions {
    /// Platforms to keep from multi-platform indexes; empty keeps all.
    pub platforms: Vec<Platform>,
    /// Blobs moved at once.
    pub concurrency: usize,
    pub retry: RetryPolicy,
}

impl Default for CopyOptions {
    fn default() -> Self {
        CopyOptions {
            platforms: Vec::new(),
            concurrency: 8,
            retry: RetryPolicy::default(),
        }
    }
}

/// What a copy did.
#[derive(Clone, Debug, Default, Serialize)]
pub struct CopyReport {
    pub images: Vec<ImagePlan>,
    /// Distinct blobs (configs and layers) the images need.
    pub blobs: usize,
    /// Their total size.
    pub blob_bytes: u64,
    /// Blobs the destination already held whole.
    pub blobs_present: usize,
    pub bytes_present: u64,
    /// Bytes of partial blobs kept from an earlier, interrupted run.
    pub bytes_resumed: u64,
    /// Bytes that crossed the wire.
    pub bytes_transferred: u64,
    /// Blobs mounted from another repository of the destination instead of sent again.
    pub blobs_mounted: usize,
    pub bytes_mounted: u64,
    /// Manifests and tags written (those already there are skipped).
    pub manifests_written: usize,
    pub seconds: f64,
}

/// Copies every root from its source to `destination`.
pub async fn copy(
    roots: &[Root],
    destination: Arc<dyn ReadWrite>,
    options: &CopyOptions,
    progress: Arc<dyn Progress>,
) -> Result<CopyReport> {
    let started = Instant::now();
    progress.step(&format!("resolving {} images", roots.len()));
    let plans = futures::future::try_join_all(
        roots
            .iter()
            .map(|root| plan::plan_image(root, destination.as_ref(), &options.platforms)),
    )
    .await?;

    // Every blob once per destination (once per repository in a registry), however many
    // images share it; remember who needs it for messages.
    let per_repository = destination.scope() == BlobScope::PerRepository;
    let mut blobs: BTreeMap<(String, Digest), BlobJob> = BTreeMap::new();
    for (root, plan) in roots.iter().zip(&plans) {
        let repo = if per_repository {
            root.dest_repo.clone()
        } else {
            String::new()
        };
        for blob in &plan.blobs {
            blobs
                .entry((repo.clone(), blob.digest.clone()))
                .or_insert_with(|| BlobJob {
                    blob: blob.clone(),
                    source: root.source.clone(),
                    source_repo: root.source_repo.clone(),
                    dest_repo: root.dest_repo.clone(),
                    label: root.label.clone(),
                });
        }
    }
    let jobs: Vec<BlobJob> = blobs.into_values().collect();
    let mut report = CopyReport {
        blobs: jobs.len(),
        blob_bytes: jobs.iter().map(|j| j.blob.size).sum(),
        ..CopyReport::default()
    };
    progress.step(&format!(
        "copying {} blobs ({}) to {}",
        jobs.len(),
        crate::units::bytes(report.blob_bytes),
        destination.describe()
    ));
    let outcome = transfer::copy_blobs(jobs, destination.clone(), options, &progress).await?;
    report.blobs_present = outcome.present;
    report.bytes_present = outcome.bytes_present;
    report.bytes_resumed = outcome.bytes_resumed;
    report.bytes_transferred = outcome.bytes_transferred;
    report.blobs_mounted = outcome.mounted;
    report.bytes_mounted = outcome.bytes_mounted;

    // Images at once; within one, children before the manifest that names them, the tag last.
    progress.step("writing manifests");
    let written = futures::future::try_join_all(
        roots
            .iter()
            .zip(&plans)
            .map(|(root, plan)| write_manifests(destination.as_ref(), root, plan)),
    )
    .await?;
    report.manifests_written = written.iter().sum();
    report.images = plans.into_iter().map(|p| p.into_plan()).collect();
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

/// Writes an image's manifests the destination lacks, children first, then its tag; how many
/// were written.
async fn write_manifests(
    destination: &dyn ReadWrite,
    root: &Root,
    plan: &plan::ResolvedImage,
) -> Result<usize> {
    let mut written = 0;
    for manifest in plan.manifests.iter().chain([&plan.root_manifest]) {
        if !holds(
            destination,
            &root.dest_repo,
            &manifest.digest().to_string(),
            manifest,
        )
        .await
        {
            destination
                .put_manifest(&root.dest_repo, manifest, None)
                .await
                .map_err(|e| in_image(e, root))?;
            written += 1;
        }
    }
    if let Some(tag) = &root.tag
        && !holds(destination, &root.dest_repo, &tag.name, &plan.root_manifest).await
    {
        destination
            .put_manifest(&root.dest_repo, &plan.root_manifest, Some(tag))
            .await
            .map_err(|e| in_image(e, root))?;
        written += 1;
    }
    Ok(written)
}

/// Whether `reference` (a digest or a tag) already names exactly `manifest` in the destination.
async fn holds(
    destination: &dyn ReadWrite,
    repo: &str,
    reference: &str,
    manifest: &crate::oci::RawManifest,
) -> bool {
    destination
        .resolve(repo, reference)
        .await
        .is_ok_and(|d| d.digest == manifest.digest())
}

/// Resolves every root to the manifests and blobs it needs, without copying anything.
pub async fn plan(
    roots: &[Root],
    destination: &dyn ReadWrite,
    platforms: &[Platform],
) -> Result<Vec<ImagePlan>> {
    let plans = futures::future::try_join_all(
        roots
            .iter()
            .map(|root| plan::plan_image(root, destination, platforms)),
    )
    .await?;
    Ok(plans.into_iter().map(|p| p.into_plan()).collect())
}

pub(crate) fn in_image(error: Error, root: &Root) -> Error {
    Error::Context {
        context: root.label.clone(),
        inner: Box::new(error),
    }
}

/// Bytes per second, for summaries.
pub fn rate(bytes: u64, seconds: f64) -> f64 {
    bytes as f64 / seconds.max(Duration::from_millis(1).as_secs_f64())
}

/// Descriptors of blobs grouped by digest, for sharing statistics.
pub fn unique_size<'a>(blobs: impl Iterator<Item = &'a Descriptor>) -> u64 {
    let unique: BTreeMap<&Digest, u64> = blobs.map(|b| (&b.digest, b.size)).collect();
    unique.values().sum()
}
