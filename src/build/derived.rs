//! Derived images in a bundle: a base image already in the layout, one new layer per
//! platform on top, and an OCI index over the derived manifests. The sandbox (Python
//! packages) and the plugin daemon (a wheelhouse) are both made this way; what goes into the
//! layer is theirs, the rest is here.

use std::path::{Path, PathBuf};

use crate::bundle::format::WheelSet;
use crate::copy::{ImagePlan, PlatformImage};
use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::oci::layer::BuiltLayer;
use crate::oci::mutate::{self, NewLayer};
use crate::oci::{self, Descriptor, Index, Manifest, Platform, RawManifest};
use crate::recipe::Role;
use crate::store::LayoutStore;

/// One platform of the base image, read from the layout.
pub struct PlatformBase {
    pub platform: Platform,
    pub manifest: RawManifest,
    pub config: Vec<u8>,
    pub config_json: serde_json::Value,
    /// Layer blobs (path in the layout, media type), bottom first.
    pub layers: Vec<(PathBuf, String)>,
    pub size: u64,
}

/// Reads every platform of `base` from the layout.
pub async fn bases(layout: &LayoutStore, base: &ImagePlan) -> Result<Vec<PlatformBase>> {
    let mut out = Vec::new();
    for platform_image in &base.platforms {
        let platform: Platform = platform_image.platform.parse()?;
        // The plan records the manifest's digest, not its size: read it, and check the
        // digest (the size is then its own).
        let bytes = layout.read_small_blob(&platform_image.digest)?;
        let size = bytes.len() as u64;
        let raw = RawManifest::checked(
            bytes,
            &Descriptor::new(oci::OCI_MANIFEST, platform_image.digest.clone(), size),
            &layout.root().display().to_string(),
        )?;
        let Manifest::Image(image) = raw.parse(&format!("manifest {}", platform_image.digest))?
        else {
            return Err(Error::invalid(format!(
                "manifest {} is an index",
                platform_image.digest
            )));
        };
        let manifest = RawManifest {
            media_type: image
                .media_type
                .clone()
                .unwrap_or_else(|| raw.media_type.clone()),
            bytes: raw.bytes,
        };
        let config = layout.read_small_blob(&image.config.digest)?;
        let config_json: serde_json::Value = serde_json::from_slice(&config)
            .map_err(|e| Error::invalid(format!("config {}: {e}", image.config.digest)))?;
        out.push(PlatformBase {
            platform,
            manifest,
            config,
            config_json,
            layers: image
                .layers
                .iter()
                .map(|l| (layout.blob_path(&l.digest), l.media_type.clone()))
                .collect(),
            size: platform_image.size,
        });
    }
    Ok(out)
}

/// What a stage that derives an image returns: the image that takes `role`'s place, the
/// wheels it installed, the container settings it needs, and how long it took.
pub struct Stage {
    pub role: Role,
    pub image: DerivedImage,
    pub wheel_sets: Vec<WheelSet>,
    pub environment: Vec<(String, String)>,
    pub seconds: f64,
}

/// A derived image, written into the layout.
pub struct DerivedImage {
    pub root: RawManifest,
    pub platforms: Vec<PlatformImage>,
    /// Every blob the derived image adds (layers, configs, manifests, the index).
    pub blobs: Vec<Digest>,
    /// The derived manifest of each platform, in order.
    pub manifests: Vec<Digest>,
}

/// Builds the derived image as layers are added, one per platform.
#[derive(Default)]
pub struct DerivedBuilder {
    entries: Vec<Descriptor>,
    platforms: Vec<PlatformImage>,
    blobs: Vec<Digest>,
    manifests: Vec<Digest>,
}

impl DerivedBuilder {
    /// Puts the layer built at `layer_path` on top of `base`; returns the derived manifest.
    pub fn add(
        &mut self,
        layout: &LayoutStore,
        base: &PlatformBase,
        layer_path: &Path,
        built: &BuiltLayer,
        created_by: String,
    ) -> Result<Digest> {
        layout.import_file(layer_path, &built.digest)?;
        let derived = mutate::add_layer(
            &base.manifest,
            &base.config,
            &NewLayer {
                blob: Descriptor::new(oci::OCI_LAYER_GZIP, built.digest.clone(), built.size),
                diff_id: built.diff_id.clone(),
                created_by,
            },
        )?;
        layout.write_small_blob(&derived.config_descriptor.digest, &derived.config)?;
        let digest = derived.manifest.digest();
        layout.write_small_blob(&digest, &derived.manifest.bytes)?;
        let mut entry = derived.manifest.descriptor();
        entry.platform = Some(base.platform.clone());
        self.entries.push(entry);
        self.platforms.push(PlatformImage {
            platform: base.platform.to_string(),
            digest: digest.clone(),
            size: base.size
                + built.size
                + derived.manifest.bytes.len() as u64
                + derived.config.len() as u64,
        });
        self.blobs.extend([
            built.digest.clone(),
            derived.config_descriptor.digest.clone(),
            digest.clone(),
        ]);
        self.manifests.push(digest.clone());
        Ok(digest)
    }

    /// Writes the index over every derived manifest.
    pub fn finish(mut self, layout: &LayoutStore) -> Result<DerivedImage> {
        let index = Index {
            schema_version: 2,
            media_type: Some(oci::OCI_INDEX.to_owned()),
            manifests: self.entries,
            annotations: None,
        };
        let bytes = serde_json::to_vec(&index)
            .map_err(|e| Error::invalid(format!("derived index: {e}")))?;
        let root = RawManifest {
            media_type: oci::OCI_INDEX.to_owned(),
            bytes: bytes.into(),
        };
        layout.write_small_blob(&root.digest(), &root.bytes)?;
        self.blobs.push(root.digest());
        Ok(DerivedImage {
            root,
            platforms: self.platforms,
            blobs: self.blobs,
            manifests: self.manifests,
        })
    }
}
