//! Downloading locked wheels into the content-addressed wheel cache, with the one copy
//! engine: concurrent, resumable, every byte checked against the lock's sha256.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use super::wheel::LockedWheel;
use crate::copy::{self, BlobJob, CopyOptions};
use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::net::http::{client, status_error, transport_error};
use crate::oci::Descriptor;
use crate::progress::Progress;
use crate::store::url::UrlStore;
use crate::store::{BlobSink, BlobSource, LayoutStore};

/// Downloads `wheels` into the content-addressed cache with the one copy engine, each
/// checked against the sha256 its lock gives; returns them with every size known.
pub async fn fetch_wheels(
    wheels: &[LockedWheel],
    cache: &Arc<LayoutStore>,
    options: &CopyOptions,
    progress: &Arc<dyn Progress>,
) -> Result<Vec<LockedWheel>> {
    let wheels = with_sizes(wheels, options).await?;
    let urls: HashMap<Digest, String> = wheels
        .iter()
        .map(|w| (w.sha256.clone(), w.url.clone()))
        .collect();
    let source: Arc<dyn BlobSource> = Arc::new(UrlStore::new(urls, options.retry)?);
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
    let cache: Arc<dyn BlobSink> = cache.clone();
    copy::copy_blobs(jobs, cache, options, progress).await?;
    Ok(wheels)
}

/// Fills in the sizes a lock lacks. uv writes a wheel's size into pylock.toml only when the
/// index gave it: PyPI's JSON simple API does (PEP 691 with PEP 700's `size`), while a mirror
/// serving the HTML simple API (PEP 503: links with a `#sha256=` fragment, no size) does not.
/// Such a wheel's size is what the server answers to HEAD (`Content-Length`).
async fn with_sizes(wheels: &[LockedWheel], options: &CopyOptions) -> Result<Vec<LockedWheel>> {
    let mut out = wheels.to_vec();
    if out.iter().all(|w| w.size > 0) {
        return Ok(out);
    }
    let http = client(Duration::from_secs(60))?;
    for wheel in out.iter_mut().filter(|w| w.size == 0) {
        let what = format!("wheel {}", wheel.filename);
        let response = options
            .retry
            .run(|| async {
                let response = http
                    .head(&wheel.url)
                    .send()
                    .await
                    .map_err(|e| transport_error(&what, &e))?;
                if response.status().is_success() {
                    Ok(response)
                } else {
                    Err(status_error(&what, "package index", response).await)
                }
            })
            .await?;
        wheel.size = response
            .headers()
            .get(reqwest::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
            .filter(|&n: &u64| n > 0)
            .ok_or_else(|| {
                Error::invalid(format!(
                    "{what}: neither the lock nor the server ({}) gives its size",
                    wheel.url
                ))
            })?;
    }
    Ok(out)
}
