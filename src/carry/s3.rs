//! Carrying a bundle through S3: `upload` sends the blobs the prefix lacks (shared by every
//! bundle there) and then the bundle's own files; `download` checks the signature first and
//! fetches every blob with its sha256 checked while writing, resuming with Range.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;

use serde::Serialize;

use crate::bundle::format::{BUNDLE_FILE, BundleManifest, SIGNATURE_FILE, is_safe_relative};
use crate::bundle::trust::{self, SignatureStatus, TrustPolicy};
use crate::bundle::{Bundle, Location};
use crate::copy::{BlobJob, CopyOptions, copy_blobs};
use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::oci::Descriptor;
use crate::progress::Progress;
use crate::store::layout::{BLOBS_DIR, write_atomically};
use crate::store::s3::S3Store;
use crate::store::{BlobSource, LayoutStore};

#[derive(Debug, Serialize)]
pub struct TransferReport {
    pub bundle: String,
    pub location: String,
    pub signature: SignatureStatus,
    pub blobs: usize,
    /// Bytes that crossed the wire.
    pub bytes_sent: u64,
    /// Bytes the other side already had.
    pub bytes_skipped: u64,
    /// Bytes kept from an interrupted transfer.
    pub bytes_resumed: u64,
    pub seconds: f64,
}

/// A copy job for each blob the bundle carries (a delta's left-out layers stay behind).
fn blob_jobs(manifest: &BundleManifest, source: Arc<dyn BlobSource>) -> Result<Vec<BlobJob>> {
    manifest
        .carried()
        .filter_map(|f| {
            f.path
                .strip_prefix(&format!("{BLOBS_DIR}/"))
                .map(|hex| (f, hex))
        })
        .map(|(file, hex)| {
            Ok(BlobJob {
                blob: Descriptor::new(
                    "application/octet-stream",
                    Digest::from_hex(hex)?,
                    file.size,
                ),
                source: source.clone(),
                source_repo: String::new(),
                dest_repo: String::new(),
                label: format!("{} of bundle {}", file.path, manifest.name),
            })
        })
        .collect()
}

/// Uploads the bundle at `dir` to `store`.
pub async fn upload(
    dir: &Path,
    store: Arc<S3Store>,
    policy: &TrustPolicy,
    options: &CopyOptions,
    progress: Arc<dyn Progress>,
) -> Result<TransferReport> {
    let started = std::time::Instant::now();
    let bundle = Bundle::open(&Location::Dir(dir.to_owned()), policy).await?;
    let manifest = &bundle.manifest;
    let layout: Arc<dyn BlobSource> = Arc::new(LayoutStore::open(dir)?);
    store.set_local_bundle(dir);
    // Blobs from the directory as a layout: S3 uploads a local file in parts, in parallel.
    let jobs = blob_jobs(manifest, layout)?;
    for job in &jobs {
        store.check_part_count(&job.label, job.blob.size)?;
    }
    let keep: Vec<String> = jobs
        .iter()
        .map(|j| store.location().blob_key(&j.blob.digest))
        .collect();
    let aborted = store.abort_stale_uploads(&keep).await?;
    if aborted > 0 {
        progress.note(&format!("aborted {aborted} stale multipart uploads"));
    }
    progress.step(&format!(
        "uploading {} to {}",
        manifest.name,
        store.location()
    ));
    let blobs = jobs.len();
    let outcome = copy_blobs(jobs, store.clone(), options, &progress).await?;

    // The bundle's own files; bundle.json and its signature last, so a bundle is only
    // visible in S3 once everything it names is there.
    let mut sent = outcome.bytes_transferred;
    let own: Vec<&str> = manifest
        .files
        .iter()
        .map(|f| f.path.as_str())
        .filter(|p| !p.starts_with(BLOBS_DIR))
        .chain([BUNDLE_FILE, SIGNATURE_FILE])
        .collect();
    for path in own {
        let Some(bytes) = bundle.read(path).await? else {
            continue;
        };
        let key = store.location().bundle_key(&manifest.name, path);
        if store.get_small(&key).await?.as_deref() == Some(bytes.as_slice()) {
            continue;
        }
        store.put_small(&key, &bytes).await?;
        sent += bytes.len() as u64;
    }
    Ok(TransferReport {
        bundle: manifest.name.clone(),
        location: store.location().to_string(),
        signature: bundle.signature.clone(),
        blobs,
        bytes_sent: sent,
        bytes_skipped: outcome.bytes_present,
        bytes_resumed: outcome.bytes_resumed,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// Downloads bundle `name` from `store` into `dir`: signature first, then every file.
pub async fn download(
    store: Arc<S3Store>,
    name: &str,
    dir: &Path,
    policy: &TrustPolicy,
    options: &CopyOptions,
    progress: Arc<dyn Progress>,
) -> Result<TransferReport> {
    let started = std::time::Instant::now();
    let origin = format!("{}/bundles/{name}", store.location());
    let bytes = store
        .get_small(&store.location().bundle_key(name, BUNDLE_FILE))
        .await?
        .ok_or_else(|| Error::invalid(format!("{origin}: no such bundle (no {BUNDLE_FILE})")))?;
    let signature = store
        .get_small(&store.location().bundle_key(name, SIGNATURE_FILE))
        .await?;
    let (manifest, status) = trust::check(&bytes, signature.clone(), policy, &origin)?;
    let _lock = crate::lock::exclusive(dir, "download into")?;
    let layout = Arc::new(LayoutStore::create(dir)?);
    layout.clean_leftovers()?;
    let jobs = blob_jobs(&manifest, store.clone())?;
    let blobs = jobs.len();
    progress.step(&format!(
        "downloading {} from {}",
        manifest.name,
        store.location()
    ));
    let outcome = copy_blobs(jobs, layout.clone(), options, &progress).await?;
    let mut sent = outcome.bytes_transferred;
    let blob_paths: BTreeSet<&str> = manifest
        .files
        .iter()
        .map(|f| f.path.as_str())
        .filter(|p| p.starts_with(BLOBS_DIR))
        .collect();
    for file in manifest
        .files
        .iter()
        .filter(|f| !blob_paths.contains(f.path.as_str()))
    {
        if !is_safe_relative(&file.path) {
            return Err(Error::invalid(format!(
                "{origin}: unsafe path `{}`",
                file.path
            )));
        }
        let data = store
            .get_small(&store.location().bundle_key(name, &file.path))
            .await?
            .ok_or_else(|| Error::invalid(format!("{origin}: {} is missing", file.path)))?;
        Digest::from_hex(&file.sha256)?.verify(&data, || format!("{origin}/{}", file.path))?;
        let target = dir.join(&file.path);
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
        }
        write_atomically(&target, &data)?;
        sent += data.len() as u64;
    }
    layout.clean_partials()?;
    if let Some(signature) = &signature {
        write_atomically(&dir.join(SIGNATURE_FILE), signature)?;
    }
    write_atomically(&dir.join(BUNDLE_FILE), &bytes)?;
    Ok(TransferReport {
        bundle: manifest.name,
        location: origin,
        signature: status,
        blobs,
        bytes_sent: sent,
        bytes_skipped: outcome.bytes_present,
        bytes_resumed: outcome.bytes_resumed,
        seconds: started.elapsed().as_secs_f64(),
    })
}
