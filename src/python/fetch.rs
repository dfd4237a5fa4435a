//! Downloading locked wheels into the content-addressed wheel cache, with the one copy
//! engine: concurrent, resumable, every byte checked against the lock's sha256.

use std::collections::HashMap;
use std::sync::Arc;

use super::wheel::LockedWheel;
use crate::copy::{self, BlobJob, CopyOptions};
use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::oci::Descriptor;
use crate::progress::Progress;
use crate::store::url::UrlStore;
use crate::store::{LayoutStore, Store};

/// Downloads `wheels` into the content-addressed cache with the one copy engine, each
/// checked against the sha256 its lock gives.
pub async fn fetch_wheels(
    wheels: &[LockedWheel],
    cache: &Arc<LayoutStore>,
    options: &CopyOptions,
    progress: &Arc<dyn Progress>,
) -> Result<()> {
    if let Some(sizeless) = wheels.iter().find(|w| w.size == 0) {
        return Err(Error::invalid(format!(
            "{}: the lock gives no size",
            sizeless.filename
        )));
    }
    let urls: HashMap<Digest, String> = wheels
        .iter()
        .map(|w| (w.sha256.clone(), w.url.clone()))
        .collect();
    let source: Arc<dyn Store> = Arc::new(UrlStore::new(urls, options.retry)?);
    let jobs = wheels
        .iter()
        .map(|wheel| BlobJob {
            blob: Descriptor::new("application/zip", wheel.sha256.clone(), wheel.size),
            source: source.clone(),
            source_repo: String::new(),
            dest_repo: String::new(),
            label: format!("wheel {}", wheel.filename),
        })
        .collect();
    progress.step(&format!("downloading {} wheels", wheels.len()));
    let cache: Arc<dyn Store> = cache.clone();
    copy::copy_blobs(jobs, cache, options, progress).await?;
    Ok(())
}
