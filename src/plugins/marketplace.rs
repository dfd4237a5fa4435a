//! Downloading plugin packages from the Dify marketplace (build side only). The base URL is
//! configurable for mirrors and tests; whatever comes back is verified like any package.

use std::time::Duration;

use crate::error::{Error, Result};
use crate::net::http::{client, status_error, transport_error};
use crate::retry::RetryPolicy;

pub const DEFAULT_URL: &str = "https://marketplace.dify.ai";

/// Where a marketplace serves `author/name` at `version`.
pub fn download_url(base: &str, id: &str, version: &str) -> String {
    format!(
        "{}/api/v1/plugins/{id}/{version}/download",
        base.trim_end_matches('/')
    )
}

/// Fetches one package, retrying what can be retried.
pub async fn fetch(base: &str, id: &str, version: &str, retry: RetryPolicy) -> Result<Vec<u8>> {
    if id.split('/').count() != 2 || id.split('/').any(str::is_empty) {
        return Err(Error::invalid(format!(
            "plugin `{id}`: expected AUTHOR/NAME, e.g. langgenius/bedrock"
        )));
    }
    let url = download_url(base, id, version);
    let http = client(Duration::from_secs(120))?;
    let what = format!("plugin {id} {version} ({url})");
    retry
        .run(|| async {
            let response = http
                .get(&url)
                .send()
                .await
                .map_err(|e| transport_error(&what, &e))?;
            if !response.status().is_success() {
                return Err(status_error(&what, "marketplace", response).await);
            }
            let bytes = response
                .bytes()
                .await
                .map_err(|e| transport_error(&what, &e))?;
            Ok(bytes.to_vec())
        })
        .await
}
