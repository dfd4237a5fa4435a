//! A bundle in S3 read in place, for verify, inspect and install: its own files under
//! `bundles/NAME/` and the blobs it names from the prefix's shared pool, read with the S3
//! client's own asynchronous calls.

use std::sync::Arc;

use futures::{StreamExt, TryStreamExt};

use super::BundleSource;
use crate::bundle::format::{BUNDLE_FILE, BundleManifest};
use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::store::BlobStream;
use crate::store::s3::{S3Store, sdk_error};

/// A bundle in S3, read in place.
pub struct S3BundleSource {
    store: Arc<S3Store>,
    name: String,
}

impl S3BundleSource {
    pub fn new(store: Arc<S3Store>, name: String) -> Self {
        S3BundleSource { store, name }
    }

    fn key(&self, path: &str) -> Result<String> {
        match path.strip_prefix("blobs/sha256/") {
            Some(hex) => Ok(self.store.location().blob_key(&Digest::from_hex(hex)?)),
            None => Ok(self.store.location().bundle_key(&self.name, path)),
        }
    }
}

#[async_trait::async_trait]
impl BundleSource for S3BundleSource {
    fn describe(&self) -> String {
        format!("{}/bundles/{}", self.store.location(), self.name)
    }

    /// The bundle's own files, and the blobs bundle.json names that exist (the blob pool is
    /// shared by every bundle under the prefix, so other blobs are not this bundle's extras).
    async fn list(&self) -> Result<Vec<(String, u64)>> {
        let location = &self.store.location();
        let mut out = Vec::new();
        let own = location.bundle_key(&self.name, "");
        let mut pages = self
            .store
            .client
            .list_objects_v2()
            .bucket(&location.bucket)
            .prefix(&own)
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| sdk_error(&self.describe(), e))?;
            for object in page.contents() {
                if let Some(key) = object.key() {
                    out.push((
                        key.trim_start_matches(&own).to_owned(),
                        object.size().unwrap_or(0) as u64,
                    ));
                }
            }
        }
        if let Some(bytes) = self
            .store
            .get_small(&location.bundle_key(&self.name, BUNDLE_FILE))
            .await?
            && let Ok(manifest) = BundleManifest::parse(&bytes, "bundle.json")
        {
            let blobs = futures::stream::iter(
                manifest
                    .files
                    .into_iter()
                    .filter(|f| f.path.starts_with("blobs/")),
            )
            .map(|file| async move {
                let key = self.key(&file.path)?;
                Ok::<_, Error>(
                    self.store
                        .head(&key)
                        .await?
                        .map(|h| (file.path, h.content_length().unwrap_or(0) as u64)),
                )
            })
            .buffer_unordered(16)
            .try_collect::<Vec<_>>()
            .await?;
            out.extend(blobs.into_iter().flatten());
        }
        out.sort();
        Ok(out)
    }

    async fn open(&self, path: &str) -> Result<Option<BlobStream>> {
        let key = self.key(path)?;
        let what = format!("s3://{}/{key}", self.store.location().bucket);
        let object = self
            .store
            .client
            .get_object()
            .bucket(&self.store.location().bucket)
            .key(&key)
            .send()
            .await;
        match object {
            Ok(object) => Ok(Some(
                futures::stream::try_unfold((object.body, what), |(mut body, what)| async move {
                    match body.try_next().await {
                        Ok(Some(chunk)) => Ok(Some((chunk, (body, what)))),
                        Ok(None) => Ok(None),
                        Err(e) => Err(Error::connection_lost(what, e)),
                    }
                })
                .boxed(),
            )),
            Err(e) => match sdk_error(&what, e) {
                Error::NotFound { .. } => Ok(None),
                other => Err(other),
            },
        }
    }
}
