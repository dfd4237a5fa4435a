//! The application stack's template, generated at build time from the bundle's own image
//! digests and stored as a blob (so bundle.json — and its signature — pins it).

use crate::bundle::format::{BundleImage, StackTemplate};
use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::oci::Platform;
use crate::stack::app::{self, AppSpec, StackSettings};
use crate::store::LayoutStore;

/// Generates the template for `images` and stores it in `layout`. `None` when the recipe
/// lacks one of the images the stack runs (a partial, custom recipe).
pub fn generate(
    layout: &LayoutStore,
    name: &str,
    dify_version: &str,
    images: &[BundleImage],
    platforms: &[Platform],
    settings: &StackSettings,
    daemon_environment: Vec<(String, String)>,
) -> Result<Option<StackTemplate>> {
    if !app::ROLES
        .iter()
        .all(|role| images.iter().any(|i| i.role == *role))
    {
        return Ok(None);
    }
    let mut architectures = Vec::new();
    for platform in platforms {
        let Some(arch) = app::ecs_architecture(&platform.architecture) else {
            return Err(Error::invalid(format!(
                "platform {platform}: ECS Fargate runs only linux/amd64 and linux/arm64"
            )));
        };
        if !architectures.iter().any(|a| a == arch) {
            architectures.push(arch.to_owned());
        }
    }
    let spec = AppSpec {
        bundle: name.to_owned(),
        dify_version: dify_version.to_owned(),
        images: images
            .iter()
            .map(|i| (i.role.clone(), i.digest.hex().to_owned()))
            .collect(),
        architectures,
        environment: settings.environment.clone(),
        daemon_environment,
    };
    let template = app::template(&spec)?;
    let bytes = template.to_json().into_bytes();
    let digest = Digest::of(&bytes);
    layout.write_small_blob(&digest, &bytes)?;
    let required_parameters = template
        .parameters
        .iter()
        .filter(|(_, p)| p.default.is_none())
        .map(|(name, _)| name.clone())
        .collect();
    Ok(Some(StackTemplate {
        digest,
        size: bytes.len() as u64,
        required_parameters,
    }))
}
