//! The last stages of a build: derived images put in the place of the images they were made
//! from, and the bundle written — index.json with exactly the recipe's images, blobs no
//! longer referenced removed, every file listed with its digest in bundle.json.

use std::collections::BTreeSet;
use std::path::Path;

use super::derived::Stage;
use super::pull::Pulled;
use crate::bundle::format::{
    ANNOTATION_BASE, BUNDLE_FILE, BundleFile, BundleImage, BundleManifest, SIGNATURE_FILE,
};
use crate::digest::{Digest, hash_file};
use crate::error::{Error, Result};
use crate::oci::ANNOTATION_REF_NAME;
use crate::progress::Progress;
use crate::recipe::Recipe;
use crate::store::layout::{BLOBS_DIR, INDEX_FILE, OCI_LAYOUT_FILE, write_json};
use crate::store::{ImageSink, LayoutStore};

/// The bundle's images once every stage's derived image took its role's place: the tag
/// points at the derived root, the base is kept in an annotation and in bundle.json.
pub async fn adopt(
    layout: &LayoutStore,
    pulled: &Pulled,
    stages: &[&Stage],
) -> Result<Vec<BundleImage>> {
    let mut images = pulled.images.clone();
    for stage in stages {
        let position = pulled
            .position(stage.role)
            .ok_or_else(|| Error::internal(format!("no `{}` image to derive from", stage.role)))?;
        let root = &pulled.roots[position];
        let image = &images[position];
        let derived = &stage.image.root;
        let mut tag = root.tag.clone().unwrap_or_default();
        tag.annotations
            .insert(ANNOTATION_BASE.to_owned(), image.digest.to_string());
        layout
            .put_manifest(&image.role, derived, Some(&tag))
            .await?;
        let platforms = stage.image.platforms.clone();
        let size = image.size + platforms.iter().map(|p| p.size).sum::<u64>()
            - image.platforms.iter().map(|p| p.size).sum::<u64>()
            + derived.bytes.len() as u64;
        images[position] = BundleImage {
            base_digest: Some(image.digest.clone()),
            digest: derived.digest(),
            media_type: derived.media_type.clone(),
            platforms,
            size,
            ..image.clone()
        };
    }
    Ok(images)
}

/// Finishes the layout at `dir` as the bundle `manifest` describes (its `files` are filled
/// here): index.json lists exactly the recipe's images, in recipe order; blobs outside
/// `referenced` are removed; a signature over an older bundle.json is removed. Returns how
/// many blobs were removed.
pub fn write(
    layout: &LayoutStore,
    dir: &Path,
    recipe: &Recipe,
    mut manifest: BundleManifest,
    referenced: &BTreeSet<Digest>,
    progress: &dyn Progress,
) -> Result<(BundleManifest, usize)> {
    let index = layout.index();
    let entries = recipe
        .images
        .iter()
        .filter_map(|image| {
            index
                .manifests
                .iter()
                .find(|d| d.annotation(ANNOTATION_REF_NAME) == Some(image.role.as_str()))
                .cloned()
        })
        .collect();
    layout.set_index_entries(entries)?;
    layout.clean_partials()?;
    let pruned = prune(dir, referenced)?;
    if pruned > 0 {
        progress.note(&format!(
            "removed {pruned} blobs left by an earlier build that this recipe does not use"
        ));
    }
    manifest.files = list_files(dir, referenced)?;
    let stale_signature = dir.join(SIGNATURE_FILE);
    if stale_signature.exists() {
        std::fs::remove_file(&stale_signature).map_err(|e| Error::io(&stale_signature, e))?;
    }
    write_json(&dir.join(BUNDLE_FILE), &manifest)?;
    Ok((manifest, pruned))
}

/// Removes blobs the bundle does not reference (left by a build of another recipe).
fn prune(dir: &Path, referenced: &BTreeSet<Digest>) -> Result<usize> {
    let blobs = dir.join(BLOBS_DIR);
    let mut removed = 0;
    for entry in std::fs::read_dir(&blobs).map_err(|e| Error::io(&blobs, e))? {
        let entry = entry.map_err(|e| Error::io(&blobs, e))?;
        let keep = entry
            .file_name()
            .to_str()
            .and_then(|name| Digest::from_hex(name).ok())
            .is_some_and(|d| referenced.contains(&d));
        if !keep {
            let path = entry.path();
            std::fs::remove_file(&path).map_err(|e| Error::io(&path, e))?;
            removed += 1;
        }
    }
    Ok(removed)
}

/// Every file of the bundle but bundle.json and its signature, sorted by path. Blobs were
/// verified as they were written, so their names are their digests.
fn list_files(dir: &Path, blobs: &BTreeSet<Digest>) -> Result<Vec<BundleFile>> {
    let mut files = Vec::new();
    for name in [INDEX_FILE, OCI_LAYOUT_FILE] {
        let (digest, size) = hash_file(&dir.join(name))?;
        files.push(BundleFile {
            path: name.to_owned(),
            size,
            sha256: digest.hex().to_owned(),
        });
    }
    for digest in blobs {
        let path = format!("{BLOBS_DIR}/{}", digest.hex());
        let full = dir.join(&path);
        let size = std::fs::metadata(&full)
            .map_err(|e| Error::io(&full, e))?
            .len();
        files.push(BundleFile {
            path,
            size,
            sha256: digest.hex().to_owned(),
        });
    }
    files.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(files)
}
