//! The first stage of a build: the recipe's images copied from their registries into the
//! layout, each tagged with its role, and their records for bundle.json.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use crate::bundle::format::{ANNOTATION_ROLE, ANNOTATION_SOURCE, BundleImage};
use crate::copy::{self, CopyOptions, CopyReport, Root};
use crate::digest::Digest;
use crate::error::Result;
use crate::progress::Progress;
use crate::recipe::{Recipe, Role};
use crate::store::registry::Registries;
use crate::store::{ImageSource, LayoutStore, RegistryOptions, Tag};

/// The recipe's images as they were pulled, in recipe order.
pub struct Pulled {
    pub roots: Vec<Root>,
    pub copy: CopyReport,
    pub images: Vec<BundleImage>,
    /// Every manifest and blob the pulled images need.
    pub blobs: BTreeSet<Digest>,
}

impl Pulled {
    /// Where the image of `role` is, if the recipe has one.
    pub fn position(&self, role: Role) -> Option<usize> {
        self.images.iter().position(|i| i.role == role.as_str())
    }
}

/// Copies every image of `recipe` into `layout`.
pub async fn images(
    layout: &Arc<LayoutStore>,
    recipe: &Recipe,
    registries: &RegistryOptions,
    copy_options: &CopyOptions,
    progress: Arc<dyn Progress>,
) -> Result<Pulled> {
    let registries = Registries::new(registries.clone())?;
    let mut roots = Vec::new();
    for image in &recipe.images {
        let reference = image.reference()?;
        let source: Arc<dyn ImageSource> = registries.store(&reference.registry);
        roots.push(Root {
            source,
            source_repo: reference.repository.clone(),
            reference: reference.reference(),
            dest_repo: image.role.clone(),
            tag: Some(Tag {
                name: image.role.clone(),
                annotations: BTreeMap::from([
                    (ANNOTATION_ROLE.to_owned(), image.role.clone()),
                    (ANNOTATION_SOURCE.to_owned(), reference.to_string()),
                ]),
            }),
            label: format!("{} ({reference})", image.role),
        });
    }
    let report = copy::copy(&roots, layout.clone(), copy_options, progress).await?;
    let images = recipe
        .images
        .iter()
        .zip(&report.images)
        .map(|(image, plan)| BundleImage {
            role: image.role.clone(),
            source: image.image.clone(),
            source_digest: plan.source_digest.clone(),
            digest: plan.digest.clone(),
            base_digest: None,
            media_type: plan.media_type.clone(),
            platforms: plan.platforms.clone(),
            size: plan.size,
        })
        .collect();
    let mut blobs = BTreeSet::new();
    for plan in &report.images {
        blobs.extend(plan.manifests.iter().cloned());
        blobs.extend(plan.blobs.iter().map(|b| b.digest.clone()));
    }
    Ok(Pulled {
        roots,
        copy: report,
        images,
        blobs,
    })
}
