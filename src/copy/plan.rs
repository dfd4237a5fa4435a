//! Planning a copy: resolve a root to its manifest, pick the requested platforms out of an
//! index (attestations follow the images they describe), and list every manifest and blob
//! the destination will need.

use futures::TryStreamExt;
use serde::{Deserialize, Serialize};

use super::{Root, in_image};
use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::oci::{
    ANNOTATION_REFERENCE_DIGEST, Descriptor, ImageConfig, Index, Manifest, OCI_INDEX, Platform,
    RawManifest,
};
use crate::store::{BlobState, ReadWrite};

/// Image configs larger than this are refused.
const MAX_CONFIG_BYTES: u64 = 16 << 20;

/// One platform's image inside a planned root.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PlatformImage {
    pub platform: String,
    pub digest: Digest,
    /// Manifest, config and layers.
    pub size: u64,
}

/// What one root resolves to.
#[derive(Clone, Debug, Serialize)]
pub struct ImagePlan {
    pub label: String,
    /// Digest the source reference resolved to (the original index for multi-platform images).
    pub source_digest: Digest,
    /// Digest of what the destination holds as the root: the original, or an index narrowed
    /// to the selected platforms.
    pub digest: Digest,
    pub media_type: String,
    pub platforms: Vec<PlatformImage>,
    /// Every config and layer, attestations included.
    #[serde(skip)]
    pub blobs: Vec<Descriptor>,
    /// The root manifest and every child manifest.
    #[serde(skip)]
    pub manifests: Vec<Digest>,
    /// Manifests and blobs, counting each once.
    pub size: u64,
}

pub(super) struct ResolvedImage {
    pub root_manifest: RawManifest,
    /// Child manifests, written before the root.
    pub manifests: Vec<RawManifest>,
    pub blobs: Vec<Descriptor>,
    plan: ImagePlan,
}

impl ResolvedImage {
    pub fn into_plan(self) -> ImagePlan {
        self.plan
    }
}

/// Fetches a manifest from the destination when it already holds it, else from the source.
async fn fetch(
    root: &Root,
    destination: &dyn ReadWrite,
    manifest: &Descriptor,
) -> Result<RawManifest> {
    if destination.blob_state(&root.dest_repo, manifest).await? == BlobState::Present
        && let Ok(raw) = destination.get_manifest(&root.dest_repo, manifest).await
    {
        return Ok(raw);
    }
    root.source.get_manifest(&root.source_repo, manifest).await
}

/// Reads an image config, from the destination when it already holds it.
async fn read_config(
    root: &Root,
    destination: &dyn ReadWrite,
    config: &Descriptor,
) -> Result<ImageConfig> {
    if config.size > MAX_CONFIG_BYTES {
        return Err(Error::invalid(format!(
            "config {} is {} bytes; refusing configs over 16 MiB",
            config.digest, config.size
        )));
    }
    let held = destination.blob_state(&root.dest_repo, config).await? == BlobState::Present;
    let (_, stream) = if held {
        destination.read_blob(&root.dest_repo, config, 0).await?
    } else {
        root.source.read_blob(&root.source_repo, config, 0).await?
    };
    let chunks: Vec<bytes::Bytes> = stream.try_collect().await?;
    let bytes = chunks.concat();
    config
        .digest
        .verify(&bytes, || format!("config {}", config.digest))?;
    serde_json::from_slice(&bytes)
        .map_err(|e| Error::invalid(format!("config {}: malformed: {e}", config.digest)))
}

pub(super) async fn plan_image(
    root: &Root,
    destination: &dyn ReadWrite,
    platforms: &[Platform],
) -> Result<ResolvedImage> {
    resolve(root, destination, platforms)
        .await
        .map_err(|e| in_image(e, root))
}

async fn resolve(
    root: &Root,
    destination: &dyn ReadWrite,
    platforms: &[Platform],
) -> Result<ResolvedImage> {
    let top = root
        .source
        .resolve(&root.source_repo, &root.reference)
        .await?;
    let raw_top = fetch(root, destination, &top).await?;
    let what = format!("manifest {}", top.digest);
    match raw_top.parse(&what)? {
        Manifest::Image(image) => {
            let config = read_config(root, destination, &image.config).await?;
            let platform = config.platform();
            if !platforms.is_empty() && !platforms.iter().any(|p| p.selects(&platform)) {
                return Err(Error::invalid(format!(
                    "the image is only for {platform}, not for {}",
                    list(platforms)
                )));
            }
            let blobs: Vec<Descriptor> = image.blobs().cloned().collect();
            let size = top.size + blobs.iter().map(|b| b.size).sum::<u64>();
            let mut entry = top.clone();
            entry.platform = Some(platform.clone());
            let root_manifest = oci_index(vec![entry], None)?;
            Ok(ResolvedImage {
                plan: ImagePlan {
                    label: root.label.clone(),
                    source_digest: top.digest.clone(),
                    digest: root_manifest.digest(),
                    media_type: root_manifest.media_type.clone(),
                    platforms: vec![PlatformImage {
                        platform: platform.to_string(),
                        digest: top.digest.clone(),
                        size,
                    }],
                    blobs: blobs.clone(),
                    manifests: vec![root_manifest.digest(), top.digest.clone()],
                    size: size + root_manifest.bytes.len() as u64,
                },
                root_manifest,
                manifests: vec![raw_top],
                blobs,
            })
        }
        Manifest::Index(index) => {
            resolve_index(root, destination, platforms, top, raw_top, index).await
        }
    }
}

/// An OCI index over `manifests` (their bytes untouched, so their digests stay).
fn oci_index(
    manifests: Vec<Descriptor>,
    annotations: Option<std::collections::BTreeMap<String, String>>,
) -> Result<RawManifest> {
    let index = Index {
        schema_version: 2,
        media_type: Some(OCI_INDEX.to_owned()),
        manifests,
        annotations,
    };
    let bytes = serde_json::to_vec(&index)
        .map_err(|e| Error::invalid(format!("cannot serialise index: {e}")))?;
    Ok(RawManifest {
        media_type: OCI_INDEX.to_owned(),
        bytes: bytes.into(),
    })
}

fn list(platforms: &[Platform]) -> String {
    platforms
        .iter()
        .map(Platform::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

async fn resolve_index(
    root: &Root,
    destination: &dyn ReadWrite,
    platforms: &[Platform],
    top: Descriptor,
    raw_top: RawManifest,
    index: Index,
) -> Result<ResolvedImage> {
    let images: Vec<&Descriptor> = index
        .manifests
        .iter()
        .filter(|d| !d.is_attestation())
        .collect();
    let selected: Vec<&Descriptor> = images
        .iter()
        .copied()
        .filter(|d| {
            platforms.is_empty()
                || d.platform
                    .as_ref()
                    .is_some_and(|candidate| platforms.iter().any(|p| p.selects(candidate)))
        })
        .collect();
    let missing: Vec<&Platform> = platforms
        .iter()
        .filter(|p| {
            !selected
                .iter()
                .any(|d| d.platform.as_ref().is_some_and(|c| p.selects(c)))
        })
        .collect();
    if !missing.is_empty() {
        let available: Vec<String> = images
            .iter()
            .filter_map(|d| d.platform.as_ref().map(Platform::to_string))
            .collect();
        return Err(Error::invalid(format!(
            "no image for {} (the index has {})",
            missing
                .iter()
                .map(|p| p.to_string())
                .collect::<Vec<_>>()
                .join(", "),
            if available.is_empty() {
                "no platforms".to_owned()
            } else {
                available.join(", ")
            }
        )));
    }
    let selected_digests: Vec<String> = selected.iter().map(|d| d.digest.to_string()).collect();
    let attestations = index.manifests.iter().filter(|d| {
        d.is_attestation()
            && d.annotation(ANNOTATION_REFERENCE_DIGEST)
                .is_some_and(|r| selected_digests.iter().any(|s| s == r))
    });
    let children: Vec<Descriptor> = selected
        .iter()
        .copied()
        .chain(attestations)
        .cloned()
        .collect();

    let mut manifests = Vec::new();
    let mut blobs = Vec::new();
    let mut platform_images = Vec::new();
    for child in &children {
        let raw = fetch(root, destination, child).await?;
        let image = match raw.parse(&format!("manifest {}", child.digest))? {
            Manifest::Image(image) => image,
            Manifest::Index(_) => {
                return Err(Error::invalid(format!(
                    "manifest {}: nested indexes are not supported",
                    child.digest
                )));
            }
        };
        let child_blobs: Vec<Descriptor> = image.blobs().cloned().collect();
        if !child.is_attestation() {
            platform_images.push(PlatformImage {
                platform: child
                    .platform
                    .as_ref()
                    .map(Platform::to_string)
                    .unwrap_or_else(|| "unknown".to_owned()),
                digest: child.digest.clone(),
                size: child.size + child_blobs.iter().map(|b| b.size).sum::<u64>(),
            });
        }
        blobs.extend(child_blobs);
        manifests.push(raw);
    }

    // Keep the original index when it is an OCI index and nothing was left out; otherwise
    // write an OCI index listing exactly what the destination holds, so the root is complete,
    // copyable as a whole, and readable by every OCI layout tool.
    let root_manifest =
        if raw_top.media_type == OCI_INDEX && children.len() == index.manifests.len() {
            raw_top.clone()
        } else {
            oci_index(children.clone(), index.annotations.clone())?
        };
    let size = root_manifest.bytes.len() as u64
        + manifests.iter().map(|m| m.bytes.len() as u64).sum::<u64>()
        + super::unique_size(blobs.iter());
    Ok(ResolvedImage {
        plan: ImagePlan {
            label: root.label.clone(),
            source_digest: top.digest,
            digest: root_manifest.digest(),
            media_type: root_manifest.media_type.clone(),
            platforms: platform_images,
            blobs: blobs.clone(),
            manifests: std::iter::once(root_manifest.digest())
                .chain(manifests.iter().map(RawManifest::digest))
                .collect(),
            size,
        },
        root_manifest,
        manifests,
        blobs,
    })
}
