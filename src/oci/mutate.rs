//! Deriving an image: a base image's per-platform manifest with one more layer on top, and a
//! config that differs from the base only by that layer's `diff_id` and a history entry.

use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::oci::{self, Descriptor, RawManifest};

/// A layer to put on top of a base image.
pub struct NewLayer {
    /// Size and digest of the compressed blob.
    pub blob: Descriptor,
    pub diff_id: Digest,
    /// What made it, for the config's history.
    pub created_by: String,
}

/// The derived image's config and manifest (neither written anywhere yet).
pub struct Derived {
    pub config: Vec<u8>,
    pub config_descriptor: Descriptor,
    pub manifest: RawManifest,
}

pub fn add_layer(
    base_manifest: &RawManifest,
    base_config: &[u8],
    layer: &NewLayer,
) -> Result<Derived> {
    let bad = |what: &str, e: serde_json::Error| Error::invalid(format!("{what}: {e}"));
    let mut config: serde_json::Value =
        serde_json::from_slice(base_config).map_err(|e| bad("base image config", e))?;
    let diff_ids = config
        .pointer_mut("/rootfs/diff_ids")
        .and_then(|v| v.as_array_mut())
        .ok_or_else(|| Error::invalid("base image config has no rootfs.diff_ids"))?;
    diff_ids.push(serde_json::Value::String(layer.diff_id.to_string()));
    if let Some(history) = config.get_mut("history").and_then(|h| h.as_array_mut()) {
        history.push(serde_json::json!({
            "created_by": layer.created_by,
            "comment": "dify-bundle",
        }));
    }
    let config = serde_json::to_vec(&config).map_err(|e| bad("derived config", e))?;

    let mut manifest: serde_json::Value =
        serde_json::from_slice(&base_manifest.bytes).map_err(|e| bad("base manifest", e))?;
    let config_media_type = manifest
        .pointer("/config/mediaType")
        .and_then(|v| v.as_str())
        .unwrap_or(oci::OCI_CONFIG)
        .to_owned();
    let config_descriptor =
        Descriptor::new(config_media_type, Digest::of(&config), config.len() as u64);
    manifest["config"] =
        serde_json::to_value(&config_descriptor).map_err(|e| bad("config descriptor", e))?;
    let mut blob = layer.blob.clone();
    blob.media_type = if base_manifest.media_type == oci::DOCKER_MANIFEST {
        oci::DOCKER_LAYER_GZIP
    } else {
        oci::OCI_LAYER_GZIP
    }
    .to_owned();
    manifest
        .get_mut("layers")
        .and_then(|l| l.as_array_mut())
        .ok_or_else(|| Error::invalid("base manifest has no layers"))?
        .push(serde_json::to_value(&blob).map_err(|e| bad("layer descriptor", e))?);
    let bytes = serde_json::to_vec(&manifest).map_err(|e| bad("derived manifest", e))?;
    Ok(Derived {
        config,
        config_descriptor,
        manifest: RawManifest {
            media_type: base_manifest.media_type.clone(),
            bytes: bytes.into(),
        },
    })
}
