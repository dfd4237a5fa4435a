//! The registry store: the OCI distribution API over HTTP(S), for Docker Hub, mirrors,
//! private registries and ECR. Handles authentication, mirrors, plain-HTTP registries and
//! retries (429 with `Retry-After`, 5xx, timeouts, resets).

pub mod auth;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::TryStreamExt;
use reqwest::header::{self, HeaderMap};
use reqwest::{Response, StatusCode};

use self::auth::{Challenge, Credentials, TokenCache};
use super::{
    BlobScope, BlobSink, BlobSource, BlobState, BlobStream, ImageSink, ImageSource, Mount, Store,
    Tag,
};
use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::net::http::{body_stream, status_error, transport_error};
use crate::oci::{Descriptor, MANIFEST_ACCEPT, RawManifest};
use crate::reference::DOCKER_HUB;
use crate::retry::RetryPolicy;

/// Manifests larger than this are refused (the distribution spec's own limit is 4 MiB).
const MAX_MANIFEST_BYTES: usize = 4 << 20;

/// How to reach registries: credentials, mirrors, plain-HTTP hosts, retries.
#[derive(Clone, Debug, Default)]
pub struct RegistryOptions {
    /// Credentials by registry host (`docker.io`, `127.0.0.1:5000`).
    pub credentials: HashMap<String, Credentials>,
    /// Docker credential helpers, asked when a registry without credentials above
    /// demands them.
    pub helpers: auth::CredentialHelpers,
    /// Registry name → mirror host to pull it through (`docker.io` → `mirror.local:5000`).
    pub mirrors: HashMap<String, String>,
    /// Hosts spoken to over plain HTTP.
    pub insecure: HashSet<String>,
    pub retry: RetryPolicy,
}

impl RegistryOptions {
    /// Parses `REGISTRY=HOST[:PORT]` as given to `--registry-mirror`.
    pub fn add_mirror_flag(&mut self, flag: &str) -> Result<()> {
        let (registry, mirror) = flag.split_once('=').ok_or_else(|| {
            Error::invalid(format!(
                "--registry-mirror `{flag}`: expected REGISTRY=HOST[:PORT], e.g. docker.io=mirror.local:5000"
            ))
        })?;
        let mirror = mirror
            .trim_start_matches("https://")
            .trim_start_matches("http://");
        if mirror.is_empty() || mirror.contains('/') {
            return Err(Error::invalid(format!(
                "--registry-mirror `{flag}`: the mirror must be HOST[:PORT]"
            )));
        }
        self.mirrors
            .insert(auth::normalise_host(registry), mirror.to_owned());
        Ok(())
    }
}

/// Hands out one [`RegistryStore`] per registry, sharing one HTTP client.
pub struct Registries {
    options: RegistryOptions,
    http: reqwest::Client,
    stores: Mutex<HashMap<String, Arc<RegistryStore>>>,
}

impl Registries {
    pub fn new(options: RegistryOptions) -> Result<Self> {
        let http = reqwest::Client::builder()
            .user_agent(concat!("dify-bundle/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(Duration::from_secs(20))
            .read_timeout(Duration::from_secs(60))
            .pool_max_idle_per_host(32)
            .build()
            .map_err(|e| Error::invalid(format!("cannot set up the HTTP client: {e}")))?;
        Ok(Registries {
            options,
            http,
            stores: Mutex::new(HashMap::new()),
        })
    }

    /// The store for a registry as named in an image reference (mirrors applied).
    pub fn store(&self, registry: &str) -> Arc<RegistryStore> {
        let mut stores = self.stores.lock().unwrap_or_else(|p| p.into_inner());
        stores
            .entry(registry.to_owned())
            .or_insert_with(|| Arc::new(self.build(registry)))
            .clone()
    }

    fn build(&self, registry: &str) -> RegistryStore {
        let name = auth::normalise_host(registry);
        let host = match self.options.mirrors.get(&name) {
            Some(mirror) => mirror.clone(),
            None if name == DOCKER_HUB => "registry-1.docker.io".to_owned(),
            None => name.clone(),
        };
        let scheme = if self.options.insecure.contains(&host) {
            "http"
        } else {
            "https"
        };
        let credentials = self
            .options
            .credentials
            .get(&host)
            .or_else(|| self.options.credentials.get(&name))
            .cloned();
        // Docker Hub itself is known to helpers by its index URL; a mirror by its host.
        let asked = if host == "registry-1.docker.io" {
            &name
        } else {
            &host
        };
        let helper = match credentials {
            Some(_) => None,
            None => self
                .options
                .helpers
                .per_host
                .get(&host)
                .or_else(|| self.options.helpers.per_host.get(&name))
                .map(String::as_str)
                .or_else(|| self.options.helpers.for_host(asked))
                .map(|helper| (helper.to_owned(), auth::helper_server(asked))),
        };
        RegistryStore {
            display: if host == name
                || name == DOCKER_HUB && !self.options.mirrors.contains_key(&name)
            {
                name.clone()
            } else {
                format!("{name} (mirror {host})")
            },
            base: format!("{scheme}://{host}"),
            http: self.http.clone(),
            credentials: Mutex::new(credentials),
            helper: tokio::sync::Mutex::new(helper),
            auth: tokio::sync::Mutex::new(AuthState::default()),
            retry: self.options.retry,
            mounting: std::sync::atomic::AtomicBool::new(true),
        }
    }
}

#[derive(Default)]
struct AuthState {
    challenge: Option<Challenge>,
    tokens: TokenCache,
}

/// One registry endpoint.
pub struct RegistryStore {
    display: String,
    base: String,
    http: reqwest::Client,
    /// Replaceable, so short-lived credentials (ECR tokens) can be renewed mid-run.
    credentials: Mutex<Option<Credentials>>,
    /// The credential helper to ask (and the server name to ask it about), until asked.
    helper: tokio::sync::Mutex<Option<(String, String)>>,
    auth: tokio::sync::Mutex<AuthState>,
    retry: RetryPolicy,
    /// Whether cross-repository mounts are tried (off when the registry is known to refuse).
    mounting: std::sync::atomic::AtomicBool,
}

fn scope(repo: &str, push: bool) -> String {
    format!(
        "repository:{repo}:{}",
        if push { "pull,push" } else { "pull" }
    )
}

/// The URL of the next page a `Link` header names (`<URL>; rel="next"`, RFC 8288), made
/// absolute against `base` (`scheme://host`) when it is a path.
fn next_page(headers: &HeaderMap, base: &str) -> Option<String> {
    headers
        .get_all(header::LINK)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .find_map(|link| {
            let (target, params) = link.trim().strip_prefix('<')?.split_once('>')?;
            let next = params.split(';').any(|p| {
                p.trim()
                    .strip_prefix("rel=")
                    .is_some_and(|rel| rel.trim_matches('"').split(' ').any(|r| r == "next"))
            });
            if !next || target.is_empty() {
                return None;
            }
            Some(
                if target.starts_with("http://") || target.starts_with("https://") {
                    target.to_owned()
                } else if target.starts_with('/') {
                    format!("{base}{target}")
                } else {
                    format!("{base}/{target}")
                },
            )
        })
}

fn content_type(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::CONTENT_TYPE)?.to_str().ok()?;
    let media_type = value.split(';').next()?.trim();
    (!media_type.is_empty()).then(|| media_type.to_owned())
}

impl RegistryStore {
    fn credentials(&self) -> Option<Credentials> {
        self.credentials
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Replaces the credentials (a renewed token); cached bearer tokens are dropped.
    /// Stops trying cross-repository mounts (a registry known to refuse them: one wasted
    /// request per shared blob saved).
    pub fn set_mounting(&self, on: bool) {
        self.mounting
            .store(on, std::sync::atomic::Ordering::Relaxed);
    }

    /// Sends the credentials as HTTP Basic from the first request, instead of after a 401
    /// challenge: for a registry known to take them so (ECR's authorization token is a user
    /// `AWS` and a password for Basic authentication, Amazon ECR User Guide, "Private registry
    /// authentication", https://docs.aws.amazon.com/AmazonECR/latest/userguide/registry_auth.html).
    /// A registry that wants something else still answers 401 and is asked as usual.
    pub async fn expect_basic(&self) {
        let mut state = self.auth.lock().await;
        if state.challenge.is_none() && self.credentials().is_some() {
            state.challenge = Some(Challenge::Basic);
        }
    }

    /// Proves the registry takes this store's credentials, with one request: `GET /v2/`, the
    /// API version check, which answers 200 to a client it accepts and 401 otherwise (Docker
    /// Registry HTTP API V2, "API Version Check",
    /// https://distribution.github.io/distribution/spec/api/). `repo` is the repository the
    /// credentials are for, where a token is scoped.
    pub async fn check_access(&self, repo: &str) -> Result<()> {
        let what = format!("access to {}", self.display);
        let url = format!("{}/v2/", self.base);
        self.retry
            .run(|| async {
                self.send(&scope(repo, true), &what, || self.http.get(&url))
                    .await
            })
            .await?;
        Ok(())
    }

    pub async fn set_credentials(&self, credentials: Credentials) {
        *self.credentials.lock().unwrap_or_else(|p| p.into_inner()) = Some(credentials);
        self.auth.lock().await.tokens = TokenCache::default();
    }

    fn url(&self, path: &str) -> String {
        format!("{}/v2/{path}", self.base)
    }

    /// The `Authorization` header to send for `scope`, fetching a token when needed.
    async fn authorization(&self, scope: &str) -> Result<Option<String>> {
        let mut state = self.auth.lock().await;
        match state.challenge.clone() {
            None => Ok(None),
            Some(Challenge::Basic) => {
                Ok(self.credentials().as_ref().map(Credentials::basic_header))
            }
            Some(Challenge::Bearer { realm, service }) => {
                if let Some(token) = state.tokens.get(scope) {
                    return Ok(Some(format!("Bearer {token}")));
                }
                let (token, lifetime) = auth::fetch_token(
                    &self.http,
                    &realm,
                    service.as_deref(),
                    scope,
                    self.credentials().as_ref(),
                )
                .await?;
                state.tokens.insert(scope, token.clone(), lifetime);
                Ok(Some(format!("Bearer {token}")))
            }
        }
    }

    /// Records the registry's challenge after a 401, so the next attempt authenticates.
    async fn learn(&self, response: &Response, scope: &str, what: &str) -> Result<()> {
        let challenge = response
            .headers()
            .get(header::WWW_AUTHENTICATE)
            .and_then(|v| v.to_str().ok())
            .and_then(Challenge::parse)
            .ok_or_else(|| Error::Auth {
                what: what.to_owned(),
                message: "the registry answered 401 without a usable WWW-Authenticate challenge"
                    .to_owned(),
            })?;
        if self.credentials().is_none()
            && let Some((helper, server)) = self.helper.lock().await.take()
            && let Some(credentials) = auth::helper_get(&helper, &server).await?
        {
            *self.credentials.lock().unwrap_or_else(|p| p.into_inner()) = Some(credentials);
        }
        if challenge == Challenge::Basic && self.credentials().is_none() {
            return Err(self.needs_credentials(what));
        }
        let mut state = self.auth.lock().await;
        state.tokens.insert(scope, String::new(), Duration::ZERO);
        state.challenge = Some(challenge);
        Ok(())
    }

    fn needs_credentials(&self, what: &str) -> Error {
        Error::Auth {
            what: what.to_owned(),
            message: format!("{} requires credentials", self.display),
        }
        .with_hint("pass --registry-auth HOST=USER:env:VARIABLE (or HOST=USER:stdin), or log in with `docker login` (~/.docker/config.json, credential helpers included)")
    }

    /// Sends a request built by `build`, authenticating on a 401 and mapping failures to
    /// errors that say whether a retry may help.
    async fn send(
        &self,
        scope: &str,
        what: &str,
        build: impl Fn() -> reqwest::RequestBuilder,
    ) -> Result<Response> {
        let mut authenticated_after_challenge = false;
        loop {
            let mut request = build();
            if let Some(value) = self.authorization(scope).await? {
                request = request.header(header::AUTHORIZATION, value);
            }
            let response = request
                .send()
                .await
                .map_err(|e| transport_error(what, &e))?;
            if response.status() == StatusCode::UNAUTHORIZED {
                if authenticated_after_challenge {
                    return Err(match &self.credentials() {
                        Some(c) => Error::Auth {
                            what: what.to_owned(),
                            message: format!(
                                "{} rejected the credentials for user `{}`",
                                self.display, c.username
                            ),
                        },
                        None => self.needs_credentials(what),
                    });
                }
                self.learn(&response, scope, what).await?;
                authenticated_after_challenge = true;
                continue;
            }
            if response.status().is_success() || response.status() == StatusCode::PARTIAL_CONTENT {
                return Ok(response);
            }
            return Err(status_error(what, "registry", response).await);
        }
    }

    /// Every tag of a repository: `GET /v2/<name>/tags/list`, page after page. A registry
    /// that paginates answers with a `Link: <URL>; rel="next"` header naming the next page,
    /// relative to the registry or absolute; the last page has none (Docker Registry HTTP API
    /// V2, "Listing Image Tags" and "Pagination",
    /// https://distribution.github.io/distribution/spec/api/). A repository the registry does
    /// not know is [`Error::NotFound`].
    pub async fn tags(&self, repo: &str) -> Result<Vec<String>> {
        #[derive(serde::Deserialize)]
        struct Page {
            /// `null` in some registries for a repository without tags.
            #[serde(default)]
            tags: Option<Vec<String>>,
        }
        let what = format!("tags of {repo} on {}", self.display);
        let mut url = self.url(&format!("{repo}/tags/list"));
        let mut visited = HashSet::new();
        let mut tags = Vec::new();
        loop {
            if !visited.insert(url.clone()) {
                return Err(Error::invalid(format!(
                    "{what}: the registry's next page ({url}) is one already read"
                )));
            }
            let (next, body) = self
                .retry
                .run(|| async {
                    let response = self
                        .send(&scope(repo, false), &what, || self.http.get(&url))
                        .await?;
                    let next = next_page(response.headers(), &self.base);
                    let body = response
                        .bytes()
                        .await
                        .map_err(|e| transport_error(&what, &e))?;
                    Ok((next, body))
                })
                .await?;
            let page: Page = serde_json::from_slice(&body)
                .map_err(|e| Error::invalid(format!("{what}: not a tag list: {e}")))?;
            tags.extend(page.tags.unwrap_or_default());
            match next {
                Some(next) => url = next,
                None => break,
            }
        }
        tags.sort();
        tags.dedup();
        Ok(tags)
    }

    async fn fetch_manifest(&self, repo: &str, reference: &str) -> Result<RawManifest> {
        let what = format!("manifest {repo}:{reference} on {}", self.display);
        let url = self.url(&format!("{repo}/manifests/{reference}"));
        let response = self
            .send(&scope(repo, false), &what, || {
                self.http.get(&url).header(header::ACCEPT, MANIFEST_ACCEPT)
            })
            .await?;
        let media_type = content_type(response.headers()).unwrap_or_default();
        if response
            .content_length()
            .is_some_and(|n| n as usize > MAX_MANIFEST_BYTES)
        {
            return Err(Error::invalid(format!("{what}: larger than 4 MiB")));
        }
        let bytes = response
            .bytes()
            .await
            .map_err(|e| transport_error(&what, &e))?;
        if bytes.len() > MAX_MANIFEST_BYTES {
            return Err(Error::invalid(format!("{what}: larger than 4 MiB")));
        }
        Ok(RawManifest { media_type, bytes })
    }
}

impl Store for RegistryStore {
    fn describe(&self) -> String {
        format!("registry {}", self.display)
    }
}

#[async_trait]
impl BlobSource for RegistryStore {
    async fn read_blob(
        &self,
        repo: &str,
        blob: &Descriptor,
        offset: u64,
    ) -> Result<(u64, BlobStream)> {
        let what = format!("blob {} in {repo} on {}", blob.digest, self.display);
        let url = self.url(&format!("{repo}/blobs/{}", blob.digest));
        let response = self
            .retry
            .run(|| async {
                self.send(&scope(repo, false), &what, || {
                    let request = self.http.get(&url);
                    if offset > 0 {
                        request.header(header::RANGE, format!("bytes={offset}-"))
                    } else {
                        request
                    }
                })
                .await
            })
            .await?;
        let start = if response.status() == StatusCode::PARTIAL_CONTENT {
            let range_start = response
                .headers()
                .get(header::CONTENT_RANGE)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("bytes "))
                .and_then(|v| v.split('-').next())
                .and_then(|v| v.parse::<u64>().ok());
            if range_start != Some(offset) {
                return Err(Error::Http {
                    what,
                    message: format!("asked for bytes from {offset}, got range {range_start:?}"),
                    status: Some(206),
                    transient: false,
                    retry_after: None,
                });
            }
            offset
        } else {
            0
        };
        Ok((start, body_stream(response, what)))
    }
}

#[async_trait]
impl ImageSource for RegistryStore {
    async fn resolve(&self, repo: &str, reference: &str) -> Result<Descriptor> {
        let what = format!("manifest {repo}:{reference} on {}", self.display);
        let url = self.url(&format!("{repo}/manifests/{reference}"));
        // HEAD first: it is free of Docker Hub's pull rate limit.
        let head = self
            .retry
            .run(|| async {
                self.send(&scope(repo, false), &what, || {
                    self.http.head(&url).header(header::ACCEPT, MANIFEST_ACCEPT)
                })
                .await
            })
            .await?;
        let headers = head.headers();
        let digest = headers
            .get("docker-content-digest")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<Digest>().ok());
        let media_type = content_type(headers);
        let size = head.content_length().filter(|n| *n > 0);
        if let (Some(digest), Some(media_type), Some(size)) = (digest, media_type, size) {
            if let Ok(pinned) = reference.parse::<Digest>() {
                pinned.check(&digest, || what)?;
            }
            return Ok(Descriptor::new(media_type, digest, size));
        }
        // The registry did not say; fetch the manifest and compute.
        let raw = self
            .retry
            .run(|| self.fetch_manifest(repo, reference))
            .await?;
        Ok(raw.descriptor())
    }

    async fn get_manifest(&self, repo: &str, manifest: &Descriptor) -> Result<RawManifest> {
        let reference = manifest.digest.to_string();
        let mut raw = self
            .retry
            .run(|| self.fetch_manifest(repo, &reference))
            .await?;
        manifest.digest.check(&raw.digest(), || {
            format!("manifest {repo}@{} on {}", manifest.digest, self.display)
        })?;
        // The digest matched, so a size that does not is the referrer's claim, not these
        // bytes: refused, or bundle.json would report it (a 418-byte manifest as 1 TiB).
        if raw.bytes.len() as u64 != manifest.size {
            return Err(Error::invalid(format!(
                "manifest {repo}@{} on {}: {} bytes, but the index that names it says {}; \
                 refusing the image",
                manifest.digest,
                self.display,
                raw.bytes.len(),
                manifest.size
            )));
        }
        if raw.media_type.is_empty() {
            raw.media_type = manifest.media_type.clone();
        }
        Ok(raw)
    }
}

#[async_trait]
impl BlobSink for RegistryStore {
    fn scope(&self) -> BlobScope {
        BlobScope::PerRepository
    }

    async fn blob_state(&self, repo: &str, blob: &Descriptor) -> Result<BlobState> {
        let what = format!("blob {} in {repo} on {}", blob.digest, self.display);
        let url = self.url(&format!("{repo}/blobs/{}", blob.digest));
        let found = self
            .retry
            .run(|| async {
                match self
                    .send(&scope(repo, false), &what, || self.http.head(&url))
                    .await
                {
                    Ok(_) => Ok(true),
                    Err(Error::NotFound { .. }) => Ok(false),
                    Err(e) => Err(e),
                }
            })
            .await?;
        Ok(BlobState::present(found))
    }

    async fn write_blob(
        &self,
        repo: &str,
        blob: &Descriptor,
        offset: u64,
        body: BlobStream,
    ) -> Result<()> {
        if offset != 0 {
            return Err(Error::invalid(format!(
                "{}: uploads cannot resume at an offset",
                self.describe()
            )));
        }
        let what = format!(
            "upload of blob {} to {repo} on {}",
            blob.digest, self.display
        );
        let scope = scope(repo, true);
        let start_url = self.url(&format!("{repo}/blobs/uploads/"));
        let started = self
            .retry
            .run(|| async {
                self.send(&scope, &what, || self.http.post(&start_url))
                    .await
            })
            .await?;
        let location = started
            .headers()
            .get(header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| {
                Error::invalid(format!("{what}: the registry gave no upload location"))
            })?;
        let mut upload_url = if location.starts_with("http://") || location.starts_with("https://")
        {
            location.to_owned()
        } else {
            format!("{}{location}", self.base)
        };
        upload_url.push(if upload_url.contains('?') { '&' } else { '?' });
        upload_url.push_str(&format!("digest={}", blob.digest));
        // A streaming body cannot be replayed, so this request is sent once; the copy
        // engine retries the whole blob. The token was fetched by the POST above.
        let mut request = self
            .http
            .put(&upload_url)
            .header(header::CONTENT_TYPE, "application/octet-stream")
            .header(header::CONTENT_LENGTH, blob.size)
            .body(reqwest::Body::wrap_stream(body.map_ok(Bytes::from)));
        if let Some(value) = self.authorization(&scope).await? {
            request = request.header(header::AUTHORIZATION, value);
        }
        let response = request
            .send()
            .await
            .map_err(|e| transport_error(&what, &e))?;
        if response.status() != StatusCode::CREATED && !response.status().is_success() {
            return Err(status_error(&what, "registry", response).await);
        }
        Ok(())
    }

    fn mount(&self) -> Option<&dyn Mount> {
        Some(self)
    }
}

#[async_trait]
impl Mount for RegistryStore {
    /// OCI distribution-spec v1.1.0, "Mounting a blob from another repository"
    /// (opencontainers/distribution-spec, spec.md): `POST /v2/REPO/blobs/uploads/?mount=DIGEST
    /// &from=OTHER` answers 201 Created when the blob was mounted, or 202 Accepted with an
    /// upload session when the registry would not mount it — that session is given up here
    /// (DELETE, spec.md "Cancel a blob upload") and the caller uploads as usual. ECR mounts only
    /// when the account's `BLOB_MOUNTING` setting is on and both repositories share their
    /// encryption (https://docs.aws.amazon.com/AmazonECR/latest/userguide/blob-mounting.html).
    /// A refusal of any kind is not an error: the blob is then sent.
    async fn mount_blob(&self, repo: &str, blob: &Descriptor, from: &str) -> Result<bool> {
        if !self.mounting.load(std::sync::atomic::Ordering::Relaxed) {
            return Ok(false);
        }
        let what = format!(
            "mount of blob {} from {from} into {repo} on {}",
            blob.digest, self.display
        );
        let url = self.url(&format!(
            "{repo}/blobs/uploads/?mount={}&from={from}",
            blob.digest
        ));
        let response = match self
            .send(&scope(repo, true), &what, || self.http.post(&url))
            .await
        {
            Ok(response) => response,
            Err(_) => return Ok(false),
        };
        if response.status() == StatusCode::CREATED {
            return Ok(true);
        }
        if let Some(location) = response
            .headers()
            .get(header::LOCATION)
            .and_then(|v| v.to_str().ok())
        {
            let session = if location.starts_with("http://") || location.starts_with("https://") {
                location.to_owned()
            } else {
                format!("{}{location}", self.base)
            };
            let _ = self
                .send(&scope(repo, true), &what, || self.http.delete(&session))
                .await;
        }
        Ok(false)
    }
}

#[async_trait]
impl ImageSink for RegistryStore {
    async fn put_manifest(
        &self,
        repo: &str,
        manifest: &RawManifest,
        tag: Option<&Tag>,
    ) -> Result<()> {
        let reference = match tag {
            Some(tag) => tag.name.clone(),
            None => manifest.digest().to_string(),
        };
        let what = format!("manifest {repo}:{reference} on {}", self.display);
        let url = self.url(&format!("{repo}/manifests/{reference}"));
        self.retry
            .run(|| async {
                self.send(&scope(repo, true), &what, || {
                    self.http
                        .put(&url)
                        .header(header::CONTENT_TYPE, &manifest.media_type)
                        .body(manifest.bytes.clone())
                })
                .await
            })
            .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[test]
    fn the_next_page_is_read_from_the_link_header() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::LINK,
            "</v2/a/tags/list?n=1&last=x>; rel=\"prev\", </v2/a/tags/list?n=1&last=y>; rel=\"next\""
                .parse()
                .unwrap(),
        );
        assert_eq!(
            next_page(&headers, "https://r.example").as_deref(),
            Some("https://r.example/v2/a/tags/list?n=1&last=y")
        );
        headers.insert(
            header::LINK,
            "<https://other.example/v2/a/tags/list?last=z>; rel=next"
                .parse()
                .unwrap(),
        );
        assert_eq!(
            next_page(&headers, "https://r.example").as_deref(),
            Some("https://other.example/v2/a/tags/list?last=z")
        );
        headers.insert(header::LINK, "</v2/a/x>; rel=\"prev\"".parse().unwrap());
        assert_eq!(next_page(&headers, "https://r.example"), None);
        assert_eq!(next_page(&HeaderMap::new(), "https://r.example"), None);
    }

    /// A registry on 127.0.0.1 serving `repo`'s tags in three pages: the first names the
    /// next by path, the second by absolute URL, the third has no tags (`null`) and no link.
    async fn paging_registry() -> (String, tokio::task::JoinHandle<()>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let host = listener.local_addr().unwrap().to_string();
        let base = format!("http://{host}");
        let server = tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                let mut request = Vec::new();
                let mut buf = [0u8; 1024];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    match socket.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => request.extend_from_slice(&buf[..n]),
                    }
                }
                let line = String::from_utf8_lossy(&request);
                let path = line.split(' ').nth(1).unwrap_or_default().to_owned();
                let (body, link) = match path.as_str() {
                    "/v2/team/app/tags/list" => (
                        r#"{"name":"team/app","tags":["b","a"]}"#,
                        Some("</v2/team/app/tags/list?n=2&last=b>; rel=\"next\"".to_owned()),
                    ),
                    "/v2/team/app/tags/list?n=2&last=b" => (
                        r#"{"name":"team/app","tags":["c"]}"#,
                        Some(format!(
                            "<{base}/v2/team/app/tags/list?n=2&last=c>; rel=\"next\""
                        )),
                    ),
                    "/v2/team/app/tags/list?n=2&last=c" => {
                        (r#"{"name":"team/app","tags":null}"#, None)
                    }
                    _ => ("", None),
                };
                let status = if body.is_empty() {
                    "404 Not Found"
                } else {
                    "200 OK"
                };
                let link = link.map(|l| format!("Link: {l}\r\n")).unwrap_or_default();
                let response = format!(
                    "HTTP/1.1 {status}\r\nContent-Type: application/json\r\n{link}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = socket.write_all(response.as_bytes()).await;
            }
        });
        (host, server)
    }

    #[tokio::test]
    async fn every_page_of_a_tag_list_is_read() {
        let (host, server) = paging_registry().await;
        let mut options = RegistryOptions {
            retry: RetryPolicy {
                retries: 0,
                ..RetryPolicy::default()
            },
            ..RegistryOptions::default()
        };
        options.insecure.insert(host.clone());
        let registries = Registries::new(options).unwrap();
        let store = registries.store(&host);
        assert_eq!(store.tags("team/app").await.unwrap(), ["a", "b", "c"]);
        assert!(matches!(
            store.tags("team/none").await,
            Err(Error::NotFound { .. })
        ));
        server.abort();
    }
}
