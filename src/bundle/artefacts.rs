//! What a bundle carries besides images, read back with each digest checked against the
//! signed bundle.json: the application stack's template and the plugin packages.

use super::format::BundleManifest;
use super::source::{BundleSource, read_blob_checked};
use crate::error::{Error, Result};
use crate::stack::app;

/// The template's bytes, checked against the digest bundle.json names.
pub async fn stack_template(
    source: &dyn BundleSource,
    manifest: &BundleManifest,
) -> Result<Vec<u8>> {
    let stack = manifest.stack.as_ref().ok_or_else(|| {
        Error::invalid(format!(
            "{}: bundle {} has no application stack (its recipe lacks one of the images {})",
            source.describe(),
            manifest.name,
            app::ROLES.join(", ")
        ))
        .with_hint("rebuild it with a full recipe")
    })?;
    read_blob_checked(source, &stack.digest, "stack template").await
}

/// The plugin packages of a bundle whose bundle.json is `manifest` (signature checked by
/// `Bundle::open`), each checked against its digest: `(identifier, bytes)`.
pub async fn plugin_packages(
    source: &dyn BundleSource,
    manifest: &BundleManifest,
) -> Result<Vec<(String, Vec<u8>)>> {
    let mut packages = Vec::with_capacity(manifest.plugins.len());
    for plugin in &manifest.plugins {
        let bytes = read_blob_checked(
            source,
            &plugin.digest,
            &format!("plugin {}", plugin.identifier),
        )
        .await?;
        packages.push((plugin.identifier.clone(), bytes));
    }
    Ok(packages)
}
