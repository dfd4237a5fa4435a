//! A bundle in S3 read in place, for verify, inspect and install: its own files under
//! `bundles/NAME/` and the blobs it names from the prefix's shared pool.

use std::io::Read;
use std::sync::Arc;

use aws_sdk_s3::primitives::ByteStream;
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};

use super::BundleSource;
use crate::bundle::format::{BUNDLE_FILE, BundleManifest};
use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::store::s3::{S3Store, sdk_error};

/// A bundle in S3, read in place (blocking reads on top of the async client, for verify and
/// inspect, which run on blocking threads).
pub struct S3BundleSource {
    store: Arc<S3Store>,
    name: String,
    runtime: tokio::runtime::Handle,
}

impl S3BundleSource {
    pub fn new(store: Arc<S3Store>, name: String, runtime: tokio::runtime::Handle) -> Self {
        S3BundleSource {
            store,
            name,
            runtime,
        }
    }

    fn key(&self, path: &str) -> Result<String> {
        match path.strip_prefix("blobs/sha256/") {
            Some(hex) => Ok(self.store.location().blob_key(&Digest::from_hex(hex)?)),
            None => Ok(self.store.location().bundle_key(&self.name, path)),
        }
    }
}

impl BundleSource for S3BundleSource {
    fn describe(&self) -> String {
        format!("{}/bundles/{}", self.store.location(), self.name)
    }

    /// The bundle's own files, and the blobs bundle.json names that exist (the blob pool is
    /// shared by every bundle under the prefix, so other blobs are not this bundle's extras).
    fn list(&self) -> Result<Vec<(String, u64)>> {
        self.runtime.block_on(async {
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
        })
    }

    fn open(&self, path: &str) -> Result<Option<Box<dyn Read + Send + '_>>> {
        let key = self.key(path)?;
        let what = format!("s3://{}/{key}", self.store.location().bucket);
        let object = self.runtime.block_on(async {
            self.store
                .client
                .get_object()
                .bucket(&self.store.location().bucket)
                .key(&key)
                .send()
                .await
        });
        match object {
            Ok(object) => Ok(Some(Box::new(BlockingBody {
                body: object.body,
                runtime: self.runtime.clone(),
                pending: Bytes::new(),
            }))),
            Err(e) => match sdk_error(&what, e) {
                Error::NotFound { .. } => Ok(None),
                other => Err(other),
            },
        }
    }
}

struct BlockingBody {
    body: ByteStream,
    runtime: tokio::runtime::Handle,
    pending: Bytes,
}

impl Read for BlockingBody {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.pending.is_empty() {
            match self.runtime.block_on(self.body.try_next()) {
                Ok(Some(chunk)) => self.pending = chunk,
                Ok(None) => return Ok(0),
                Err(e) => return Err(std::io::Error::other(e.to_string())),
            }
        }
        let n = buf.len().min(self.pending.len());
        buf[..n].copy_from_slice(&self.pending.split_to(n));
        Ok(n)
    }
}
