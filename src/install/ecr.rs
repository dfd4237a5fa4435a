//! The ECR step: where each image goes, what ECR already has, creating repositories, and
//! pushing through the copy engine (blobs ECR lacks with the monolithic streaming PUT ECR
//! needs, then per-platform manifests by digest, then tags).

use std::sync::Arc;

use serde::Serialize;

use super::config::EcrLayout;
use crate::aws::ecr::{Ecr, RegistryLogin};
use futures::{StreamExt, TryStreamExt};

use crate::bundle::BundleManifest;
use crate::bundle::format::Delta;
use crate::bundle::source::SourceStore;
use crate::copy::{self, CopyOptions, CopyReport, ImagePlan, Root};
use crate::error::{Error, Result};
use crate::reference::ImageRef;
use crate::retry::RetryPolicy;
use crate::store::known::KnownStates;
use crate::store::registry::{Registries, RegistryStore};
use crate::store::{BlobState, ImageSource, ReadWrite, RegistryOptions, Tag};

/// One image of the bundle and where it goes.
#[derive(Clone, Debug, Serialize)]
pub struct ImageTarget {
    pub role: String,
    pub digest: String,
    pub repository: String,
    pub tag: String,
}

/// Where every image goes. A derived image (the sandbox with packages) gets its content
/// digest in the tag, because tags are immutable and the packages may change.
pub fn targets(manifest: &BundleManifest, layout: &EcrLayout) -> Result<Vec<ImageTarget>> {
    manifest
        .images
        .iter()
        .map(|image| {
            let source: ImageRef = image.source.parse()?;
            let name = source
                .repository
                .rsplit('/')
                .next()
                .unwrap_or(&source.repository)
                .to_owned();
            let mut tag = source.tag.clone().unwrap_or_else(|| "latest".to_owned());
            if image.base_digest.is_some() {
                tag = format!("{tag}-{}", &image.digest.hex()[..12]);
            }
            let (repository, tag) = layout.place(&name, &tag);
            Ok(ImageTarget {
                role: image.role.clone(),
                digest: image.digest.to_string(),
                repository,
                tag,
            })
        })
        .collect()
}

pub struct EcrOptions {
    pub layout: EcrLayout,
    pub kms_key: Option<String>,
    /// Push here instead of the registry ECR names (`http://` for plain HTTP).
    pub endpoint: Option<String>,
    pub copy: CopyOptions,
}

/// What the ECR step would do.
#[derive(Debug, Serialize)]
pub struct EcrPlan {
    pub registry: String,
    pub repositories_to_create: Vec<String>,
    pub repositories_existing: Vec<String>,
    pub images: Vec<ImageTarget>,
    /// Blobs (by repository) the push needs, and how many ECR already has.
    pub blobs: usize,
    pub bytes: u64,
    pub blobs_present: usize,
    pub bytes_present: u64,
    /// Blobs needed by more than one repository: sent once and mounted into the others when
    /// ECR mounts (`blob_mounting`), sent to each otherwise.
    pub blobs_shared: usize,
    pub bytes_shared: u64,
    /// The account's `BLOB_MOUNTING` setting (`None`: unreadable; mounts are tried).
    pub blob_mounting: Option<bool>,
    /// For a delta bundle: the layers it left out, each found where it is needed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub left_out: Option<LeftOut>,
    /// `(repository, digest)` of every blob the plan found in ECR: the push does not ask again.
    #[serde(skip)]
    pub(super) found: std::collections::BTreeSet<(String, crate::digest::Digest)>,
}

/// A delta bundle's left-out layers, as the plan found them.
#[derive(Debug, Serialize)]
pub struct LeftOut {
    pub layers: usize,
    pub bytes: u64,
    /// Left-out layers the bundle holds after all (a full bundle given as a delta's source).
    pub in_bundle: usize,
}

/// How many blob-existence requests are in flight at once.
const BLOB_CHECKS_AT_ONCE: usize = 16;

/// Checks, before anything changes, that every layer the delta bundle left out is either in
/// the bundle after all or already in the repository of every role whose image has it;
/// refuses naming each one missing otherwise.
fn left_out(
    delta: &Delta,
    roots: &[Root],
    images: &[ImageTarget],
    carried: &std::collections::BTreeSet<crate::digest::Digest>,
    present: &std::collections::BTreeSet<(String, crate::digest::Digest)>,
) -> Result<LeftOut> {
    let mut missing = Vec::new();
    let mut in_bundle = 0;
    for layer in &delta.omitted {
        if carried.contains(&layer.digest) {
            in_bundle += 1;
            continue;
        }
        for role in &layer.roles {
            let repository = roots
                .iter()
                .zip(images)
                .find(|(_, image)| &image.role == role)
                .map(|(root, _)| root.dest_repo.as_str());
            let held = repository
                .is_some_and(|repo| present.contains(&(repo.to_owned(), layer.digest.clone())));
            if !held {
                missing.push(format!(
                    "  - {} ({}) of {role}, not in {}",
                    layer.digest,
                    crate::units::bytes(layer.size),
                    repository.unwrap_or("any repository of this bundle")
                ));
            }
        }
    }
    if !missing.is_empty() {
        let grounds = delta.since.describe();
        return Err(Error::invalid(format!(
            "refused: this delta bundle leaves out {} layers, built on the assumption that the destination holds what {grounds} brought, but {} are not there; nothing was changed:\n{}",
            delta.omitted.len(),
            missing.len(),
            missing.join("\n")
        ))
        .with_hint(format!(
            "install the bundle this delta was built on first ({grounds}), or build a full bundle (without --since), or one from a receipt taken here (`dify-bundle receipt`)"
        )));
    }
    Ok(LeftOut {
        layers: delta.omitted.len(),
        bytes: delta.omitted_bytes(),
        in_bundle,
    })
}

#[derive(Debug, Serialize)]
pub struct PushReport {
    pub repositories_created: Vec<String>,
    pub copy: CopyReport,
}

/// An ECR session: the control plane and a registry store logged in to the data plane.
pub struct Session {
    ecr: Ecr,
    login: RegistryLogin,
    registries: Registries,
    /// The registry store, remembering what it learnt of its blobs for this run: the plan's
    /// existence checks are not asked again by the push.
    destination: Arc<KnownStates>,
    /// The account's `BLOB_MOUNTING` setting, when it could be read.
    blob_mounting: Option<bool>,
}

impl Session {
    pub async fn open(config: &aws_config::SdkConfig, options: &EcrOptions) -> Result<Session> {
        let mut session =
            Session::connect(config, options.endpoint.as_deref(), options.copy.retry).await?;
        // Where ECR is known not to mount, shared blobs are sent to each repository at once.
        session.blob_mounting = session.ecr.blob_mounting().await;
        if session.blob_mounting == Some(false) {
            session.store_of_registry().set_mounting(false);
        }
        Ok(session)
    }

    /// Logs in to the account's registry and builds a store for it: at `endpoint` instead of
    /// the host ECR names when one is given (`http://` for plain HTTP), with the same token.
    pub async fn connect(
        config: &aws_config::SdkConfig,
        endpoint: Option<&str>,
        retry: RetryPolicy,
    ) -> Result<Session> {
        let ecr = Ecr::new(config);
        let login = ecr.login().await?;
        let mut registry = RegistryOptions {
            retry,
            ..RegistryOptions::default()
        };
        registry
            .credentials
            .insert(login.host.clone(), login.credentials.clone());
        if let Some(endpoint) = endpoint {
            let host = endpoint
                .trim_start_matches("https://")
                .trim_start_matches("http://")
                .trim_end_matches('/');
            registry.add_mirror_flag(&format!("{}={host}", login.host))?;
            registry
                .credentials
                .insert(host.to_owned(), login.credentials.clone());
            if endpoint.starts_with("http://") {
                registry.insecure.insert(host.to_owned());
            }
        }
        let registries = Registries::new(registry)?;
        let store = registries.store(&login.host);
        store.expect_basic().await;
        Ok(Session {
            ecr,
            destination: Arc::new(KnownStates::new(store)),
            registries,
            login,
            blob_mounting: None,
        })
    }

    /// The registry store the session is logged in to.
    pub(super) fn store_of_registry(&self) -> Arc<RegistryStore> {
        self.registries.store(&self.login.host)
    }

    pub fn registry(&self) -> &str {
        &self.login.host
    }

    fn store(&self) -> Arc<dyn ReadWrite> {
        self.destination.clone()
    }

    /// Renews the registry token before it expires, for as long as the returned task runs.
    pub(super) fn keep_credentials_fresh(&self) -> tokio::task::JoinHandle<()> {
        let ecr = self.ecr.clone();
        let store = self.registries.store(&self.login.host);
        let mut renew_at = self.login.renew_at;
        tokio::spawn(async move {
            loop {
                let wait = renew_at
                    .duration_since(std::time::SystemTime::now())
                    .unwrap_or_default();
                tokio::time::sleep(wait).await;
                match ecr.login().await {
                    Ok(login) => {
                        store.set_credentials(login.credentials).await;
                        renew_at = login.renew_at;
                    }
                    // Try again in a minute; the running token is still valid for a while.
                    Err(_) => {
                        renew_at = std::time::SystemTime::now() + std::time::Duration::from_secs(60)
                    }
                }
            }
        })
    }
}

fn roots(
    manifest: &BundleManifest,
    targets: &[ImageTarget],
    source: Arc<dyn ImageSource>,
) -> Vec<Root> {
    manifest
        .images
        .iter()
        .zip(targets)
        .map(|(image, target)| Root {
            source: source.clone(),
            source_repo: image.role.clone(),
            reference: image.digest.to_string(),
            dest_repo: target.repository.clone(),
            tag: Some(Tag {
                name: target.tag.clone(),
                ..Tag::default()
            }),
            label: format!("{} ({}:{})", image.role, target.repository, target.tag),
        })
        .collect()
}

/// Works out what pushing would change, changing nothing.
pub async fn plan(
    session: &Session,
    manifest: &BundleManifest,
    source: Arc<SourceStore>,
    options: &EcrOptions,
) -> Result<EcrPlan> {
    let images = targets(manifest, &options.layout)?;
    let mut wanted: Vec<String> = images.iter().map(|t| t.repository.clone()).collect();
    wanted.sort();
    wanted.dedup();
    let existing = session.ecr.existing(&wanted).await?;
    // The data plane takes the session's token, before anything changes.
    if let Some(first) = wanted.first() {
        session.store_of_registry().check_access(first).await?;
    }
    // A repository to be created holds nothing: nothing in it is asked of the registry.
    for repository in wanted.iter().filter(|r| !existing.contains(r)) {
        session.destination.empty_repository(repository);
    }
    let destination = session.store();
    let roots = roots(manifest, &images, source.clone());
    let plans: Vec<ImagePlan> = copy::plan(&roots, destination.as_ref(), &[]).await?;
    let mut plan = EcrPlan {
        registry: session.login.host.clone(),
        repositories_to_create: wanted
            .iter()
            .filter(|r| !existing.contains(r))
            .cloned()
            .collect(),
        repositories_existing: existing.clone(),
        images,
        blobs: 0,
        bytes: 0,
        blobs_present: 0,
        bytes_present: 0,
        blobs_shared: 0,
        bytes_shared: 0,
        blob_mounting: session.blob_mounting,
        left_out: None,
        found: Default::default(),
    };
    let mut repositories_of: std::collections::BTreeMap<
        _,
        (u64, std::collections::BTreeSet<&str>),
    > = std::collections::BTreeMap::new();
    for (root, image) in roots.iter().zip(&plans) {
        for blob in &image.blobs {
            repositories_of
                .entry(blob.digest.clone())
                .or_insert_with(|| (blob.size, Default::default()))
                .1
                .insert(root.dest_repo.as_str());
        }
    }
    for (size, repositories) in repositories_of.values() {
        if repositories.len() > 1 {
            plan.blobs_shared += 1;
            plan.bytes_shared += size * (repositories.len() as u64 - 1);
        }
    }
    // What each repository already holds, asked of the registry many blobs at once. The
    // registry API, not ECR's BatchCheckLayerAvailability: it answers for the same data
    // plane the push writes to (an --ecr-endpoint included), one HEAD per blob.
    let mut pairs = std::collections::BTreeMap::new();
    for (root, image) in roots.iter().zip(&plans) {
        if existing.contains(&root.dest_repo) {
            pairs.extend(
                image
                    .blobs
                    .iter()
                    .map(|blob| ((root.dest_repo.clone(), blob.digest.clone()), blob.clone())),
            );
        }
    }
    let present: std::collections::BTreeSet<(String, crate::digest::Digest)> =
        futures::stream::iter(pairs.into_iter().map(|((repo, _), blob)| {
            let destination = destination.clone();
            async move {
                let state = destination.blob_state(&repo, &blob).await?;
                Ok::<_, Error>((state == BlobState::Present).then_some((repo, blob.digest)))
            }
        }))
        .buffer_unordered(BLOB_CHECKS_AT_ONCE)
        .try_filter_map(|found| async move { Ok(found) })
        .try_collect()
        .await?;
    for (root, image) in roots.iter().zip(&plans) {
        let mut seen = std::collections::BTreeSet::new();
        for blob in image.blobs.iter().filter(|b| seen.insert(b.digest.clone())) {
            plan.blobs += 1;
            plan.bytes += blob.size;
            if present.contains(&(root.dest_repo.clone(), blob.digest.clone())) {
                plan.blobs_present += 1;
                plan.bytes_present += blob.size;
            }
        }
    }
    if let Some(delta) = &manifest.delta {
        let carried = source.blob_digests().await?;
        plan.left_out = Some(left_out(delta, &roots, &plan.images, &carried, &present)?);
    }
    plan.found = present;
    Ok(plan)
}

/// Creates the missing repositories and pushes every image.
pub async fn push(
    session: &Session,
    manifest: &BundleManifest,
    source: Arc<SourceStore>,
    plan: &EcrPlan,
    options: &EcrOptions,
    progress: Arc<dyn crate::progress::Progress>,
) -> Result<PushReport> {
    // What the plan learnt holds: the repositories it found missing are empty once created,
    // and the blobs it found are there.
    for repository in &plan.repositories_to_create {
        session.destination.empty_repository(repository);
    }
    for (repository, digest) in &plan.found {
        session
            .destination
            .learn(repository, digest, BlobState::Present);
    }
    futures::future::try_join_all(plan.repositories_to_create.iter().map(|repository| {
        progress.note(&format!("creating ECR repository {repository}"));
        session
            .ecr
            .create_repository(repository, options.kms_key.as_deref())
    }))
    .await?;
    let roots = roots(manifest, &plan.images, source);
    let renewal = session.keep_credentials_fresh();
    let copy = copy::copy(&roots, session.store(), &options.copy, progress).await;
    renewal.abort();
    let copy = copy.map_err(|e| {
        let damaged = matches!(
            e.root(),
            Error::DigestMismatch { .. } | Error::SizeMismatch { .. }
        );
        let e = Error::Context {
            context: format!("pushing to {}", session.login.host),
            inner: Box::new(e),
        };
        if damaged {
            // Blobs are hashed as they leave the bundle: a damaged one stops the push
            // before any manifest or tag, so nothing runs on it.
            Error::Context {
                context: "the bundle is damaged; no image was tagged and nothing was deployed (`dify-bundle verify` names every damaged file; carry those parts again)".to_owned(),
                inner: Box::new(e),
            }
        } else {
            e
        }
    })?;
    Ok(PushReport {
        repositories_created: plan.repositories_to_create.clone(),
        copy,
    })
}
