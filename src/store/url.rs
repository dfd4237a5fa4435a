//! Files at HTTP(S) URLs, addressed by their sha256 (Python wheels from an index), as a
//! [`BlobSource`](super::BlobSource): blobs are only read from it. Reads resume with `Range`;
//! the copy engine checks every byte.

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;
use reqwest::{StatusCode, header};

use super::{BlobSource, BlobStream, Store};
use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::net::http::{body_stream, client, describe_reqwest, status_error};
use crate::oci::Descriptor;
use crate::retry::RetryPolicy;

pub struct UrlStore {
    http: reqwest::Client,
    urls: HashMap<Digest, String>,
    retry: RetryPolicy,
}

impl UrlStore {
    pub fn new(urls: HashMap<Digest, String>, retry: RetryPolicy) -> Result<Self> {
        let http = client(Duration::from_secs(60))?;
        Ok(UrlStore { http, urls, retry })
    }

    fn url(&self, digest: &Digest) -> Result<&str> {
        self.urls
            .get(digest)
            .map(String::as_str)
            .ok_or_else(|| Error::NotFound {
                what: format!("a URL for {digest}"),
            })
    }
}

impl Store for UrlStore {
    fn describe(&self) -> String {
        "package index".to_owned()
    }
}

#[async_trait]
impl BlobSource for UrlStore {
    async fn read_blob(
        &self,
        _repo: &str,
        blob: &Descriptor,
        offset: u64,
    ) -> Result<(u64, BlobStream)> {
        let url = self.url(&blob.digest)?.to_owned();
        let what = url.clone();
        let response = self
            .retry
            .run(|| async {
                let mut request = self.http.get(&url);
                if offset > 0 {
                    request = request.header(header::RANGE, format!("bytes={offset}-"));
                }
                let response = request.send().await.map_err(|e| Error::Http {
                    what: what.clone(),
                    message: describe_reqwest(&e),
                    status: None,
                    transient: true,
                    retry_after: None,
                })?;
                if response.status().is_success() {
                    Ok(response)
                } else {
                    Err(status_error(&what, "package index", response).await)
                }
            })
            .await?;
        let start = if response.status() == StatusCode::PARTIAL_CONTENT {
            offset
        } else {
            0
        };
        Ok((start, body_stream(response, what)))
    }
}
