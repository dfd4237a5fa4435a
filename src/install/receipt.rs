//! `receipt`: what the destination already holds, taken inside the VPC for the next bundle's
//! build — the deployed bundle (the application stack's tags), every blob of every image in
//! each role's ECR repository (walked tag by tag over the registry API) and, when asked, the
//! blobs under an S3 bundle prefix. Read-only; the format is [`crate::bundle::receipt`].

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use futures::{StreamExt, TryStreamExt};

use super::ecr::Session;
use super::upgrade::{self, TAG_BUNDLE, TAG_DIFY_VERSION, TAG_MANIFEST};
use crate::aws::cloudformation::{CloudFormation, StackInfo};
use crate::bundle::receipt::{Deployed, PrefixBlobs, RECEIPT_FORMAT, Receipt, RepositoryBlobs};
use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::oci::{self, Descriptor, Manifest};
use crate::progress::Progress;
use crate::retry::RetryPolicy;
use crate::stack::app::{ROLES, params};
use crate::store::ImageSource;
use crate::store::registry::RegistryStore;
use crate::store::s3::S3Store;

pub struct ReceiptOptions {
    /// The application stack whose repositories and bundle are recorded.
    pub app_stack: String,
    /// Read the registry here instead of at the host ECR names (`http://` for plain HTTP).
    pub ecr_endpoint: Option<String>,
    /// The S3 bundle prefix whose blobs are recorded too.
    pub s3: Option<Arc<S3Store>>,
    pub retry: RetryPolicy,
    /// Manifests fetched at once.
    pub concurrency: usize,
}

/// The bundle a stack records it was deployed from: its tags, and where a tag is missing what
/// the stack's description says.
fn deployed(info: &StackInfo) -> Deployed {
    let described = upgrade::deployed(info, None);
    let tag = |key: &str| info.tags.get(key).filter(|v| !v.is_empty()).cloned();
    Deployed {
        bundle: tag(TAG_BUNDLE).or(described.bundle),
        dify_version: tag(TAG_DIFY_VERSION).or(described.dify_version),
        bundle_json: tag(TAG_MANIFEST).and_then(|d| d.parse::<Digest>().ok()),
    }
}

/// Takes the receipt. Fails when the application stack does not exist: there is then
/// nothing deployed to leave out of a bundle.
pub async fn take(
    config: &aws_config::SdkConfig,
    options: &ReceiptOptions,
    progress: Arc<dyn Progress>,
) -> Result<Receipt> {
    let region = config.region().map(|r| r.to_string()).unwrap_or_default();
    let info = CloudFormation::new(config)
        .info(&options.app_stack)
        .await?
        .ok_or_else(|| {
            Error::invalid(format!(
                "application stack `{}` does not exist in {region}: nothing is deployed there, \
                 so there is nothing to take a receipt of",
                options.app_stack
            ))
            .with_hint(
                "nothing deployed: build a full bundle and install it; or, if Dify runs under \
                 another stack name or region, name them with --app-stack and --region",
            )
        })?;
    let session = Session::connect(config, options.ecr_endpoint.as_deref(), options.retry).await?;
    let store = session.store_of_registry();
    let renewal = session.keep_credentials_fresh();
    let repositories = repositories(&info, &store, options, progress.as_ref()).await;
    renewal.abort();
    let repositories = repositories?;
    let s3 = match &options.s3 {
        Some(s3) => {
            progress.step(&format!("listing the blobs under {}", s3.location()));
            Some(PrefixBlobs {
                location: s3.location().to_string(),
                blobs: s3.blob_digests().await?,
            })
        }
        None => None,
    };
    Ok(Receipt {
        format: RECEIPT_FORMAT.to_owned(),
        created: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
        registry: session.registry().to_owned(),
        stack: Some(info.name.clone()),
        deployed: Some(deployed(&info)),
        repositories,
        s3,
    })
}

/// Each role's repository, as the stack's `<Role>Repository` parameter names it, and its
/// blobs; a repository several roles share (one-repository layout) is walked once.
async fn repositories(
    info: &StackInfo,
    store: &RegistryStore,
    options: &ReceiptOptions,
    progress: &dyn Progress,
) -> Result<Vec<RepositoryBlobs>> {
    let mut walked: BTreeMap<String, BTreeSet<Digest>> = BTreeMap::new();
    let mut out = Vec::new();
    for role in ROLES {
        let parameter = params::repository(role);
        let Some(repository) = info.parameters.get(&parameter).filter(|r| !r.is_empty()) else {
            progress.note(&format!(
                "stack {} has no {parameter} parameter: role {role} is left out of the receipt",
                info.name
            ));
            continue;
        };
        if !walked.contains_key(repository) {
            progress.step(&format!("reading the images in {repository}"));
            let blobs = repository_blobs(store, repository, options.concurrency, progress).await?;
            walked.insert(repository.clone(), blobs);
        }
        out.push(RepositoryBlobs {
            role: role.to_owned(),
            repository: repository.clone(),
            blobs: walked[repository].clone(),
        });
    }
    Ok(out)
}

/// Every config and layer of every image under every tag of `repository`, the children of an
/// index (every platform, attestations too) included. A repository the registry does not
/// know holds nothing; a tag or child that vanishes while walked is left out.
pub async fn repository_blobs(
    store: &RegistryStore,
    repository: &str,
    concurrency: usize,
    progress: &dyn Progress,
) -> Result<BTreeSet<Digest>> {
    let tags = match store.tags(repository).await {
        Ok(tags) => tags,
        Err(Error::NotFound { .. }) => {
            progress.note(&format!(
                "repository {repository} does not exist: it holds nothing"
            ));
            return Ok(BTreeSet::new());
        }
        Err(e) => return Err(e),
    };
    let concurrency = concurrency.max(1);
    let roots: Vec<Option<Descriptor>> = futures::stream::iter(&tags)
        .map(|tag| async move {
            match store.resolve(repository, tag).await {
                Ok(descriptor) => Ok(Some(descriptor)),
                Err(Error::NotFound { .. }) => Ok(None),
                Err(e) => Err(e),
            }
        })
        .buffer_unordered(concurrency)
        .try_collect()
        .await?;
    let mut seen: BTreeSet<Digest> = BTreeSet::new();
    let mut frontier: Vec<Descriptor> = roots
        .into_iter()
        .flatten()
        .filter(|d| seen.insert(d.digest.clone()))
        .collect();
    let mut blobs = BTreeSet::new();
    // Breadth first: the manifests of one level fetched at once, then the children they name.
    while !frontier.is_empty() {
        let manifests: Vec<Option<Manifest>> = futures::stream::iter(&frontier)
            .map(|descriptor| async move {
                match store.get_manifest(repository, descriptor).await {
                    Ok(raw) => raw
                        .parse(&format!("manifest {repository}@{}", descriptor.digest))
                        .map(Some),
                    Err(Error::NotFound { .. }) => Ok(None),
                    Err(e) => Err(e),
                }
            })
            .buffer_unordered(concurrency)
            .try_collect()
            .await?;
        let mut next = Vec::new();
        for manifest in manifests.into_iter().flatten() {
            match manifest {
                Manifest::Image(image) => {
                    blobs.extend(image.blobs().map(|b| b.digest.clone()));
                }
                Manifest::Index(index) => next.extend(
                    index
                        .manifests
                        .into_iter()
                        .filter(|child| {
                            oci::is_index(&child.media_type)
                                || oci::is_image_manifest(&child.media_type)
                        })
                        .filter(|child| seen.insert(child.digest.clone())),
                ),
            }
        }
        frontier = next;
    }
    Ok(blobs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(tags: &[(&str, &str)], description: Option<&str>) -> StackInfo {
        StackInfo {
            name: "dify".to_owned(),
            status: "CREATE_COMPLETE".to_owned(),
            description: description.map(str::to_owned),
            parameters: BTreeMap::new(),
            outputs: BTreeMap::new(),
            tags: tags
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    #[test]
    fn the_deployed_bundle_is_read_from_the_stack_tags() {
        let digest = Digest::of(b"bundle.json");
        let tagged = info(
            &[
                (TAG_BUNDLE, "b1"),
                (TAG_DIFY_VERSION, "1.2.3"),
                (TAG_MANIFEST, &digest.to_string()),
            ],
            Some("dify-bundle: Dify 9.9.9 (other) …"),
        );
        assert_eq!(
            deployed(&tagged),
            Deployed {
                bundle: Some("b1".to_owned()),
                dify_version: Some("1.2.3".to_owned()),
                bundle_json: Some(digest),
            }
        );
        // Without tags, the description; a tag that is not a digest is not one.
        let untagged = info(
            &[(TAG_MANIFEST, "sha256:ab")],
            Some("dify-bundle: Dify 9.9.9 (other) …"),
        );
        assert_eq!(
            deployed(&untagged),
            Deployed {
                bundle: Some("other".to_owned()),
                dify_version: Some("9.9.9".to_owned()),
                bundle_json: None,
            }
        );
    }
}
