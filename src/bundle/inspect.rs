//! Describing a bundle: its images, their roles, digests, platforms and sizes, and how
//! much sharing blobs between images saved.

use serde::Serialize;

use super::format::{BundleImage, BundleManifest, StackTemplate};
use crate::store::layout::BLOBS_DIR;

#[derive(Debug, Serialize)]
pub struct Inspection {
    pub name: String,
    pub dify_version: String,
    pub created: String,
    pub platforms: Vec<String>,
    pub images: Vec<BundleImage>,
    /// Sum of the images' sizes, as if each were stored alone.
    pub images_bytes: u64,
    /// What the images' blobs take on disk.
    pub stored_bytes: u64,
    /// Bytes not stored twice because images share blobs.
    pub shared_bytes_saved: u64,
    pub files: usize,
    pub plugins: Vec<super::format::BundlePlugin>,
    /// The application stack's template, if the bundle has one.
    pub stack: Option<StackTemplate>,
    /// The installer binary carried, if the bundle has one.
    pub installer: Option<super::format::BundleInstaller>,
    /// The key that signed bundle.json, as the signature says (`verify` checks it).
    pub signed_by: Option<String>,
    /// For a delta bundle: on what grounds, and the layers it leaves out.
    pub delta: Option<super::format::Delta>,
}

/// Describes a bundle from its bundle.json and its signature file, without checking the
/// signature (`verify` does).
pub fn inspect(manifest: &BundleManifest, signature_file: Option<&[u8]>) -> Inspection {
    let manifest = manifest.clone();
    let signed_by = signature_file
        .and_then(|s| std::str::from_utf8(s).ok())
        .and_then(crate::signing::signer_of);
    let images_bytes: u64 = manifest.images.iter().map(|i| i.size).sum();
    // Blobs of images only: the stack template, plugin packages and installer are not shared.
    let artefacts: Vec<String> = manifest
        .stack
        .iter()
        .map(|s| &s.digest)
        .chain(manifest.plugins.iter().map(|p| &p.digest))
        .chain(manifest.installer.iter().map(|i| &i.digest))
        .map(|digest| format!("{BLOBS_DIR}/{}", digest.hex()))
        .collect();
    let stored_bytes: u64 = manifest
        .files
        .iter()
        .filter(|f| f.path.starts_with(BLOBS_DIR) && !artefacts.contains(&f.path))
        .map(|f| f.size)
        .sum();
    Inspection {
        name: manifest.name,
        dify_version: manifest.dify_version,
        created: manifest.created,
        platforms: manifest.platforms,
        images_bytes,
        stored_bytes,
        shared_bytes_saved: images_bytes.saturating_sub(stored_bytes),
        files: manifest.files.len(),
        signed_by,
        delta: manifest.delta,
        stack: manifest.stack,
        installer: manifest.installer,
        plugins: manifest.plugins,
        images: manifest.images,
    }
}
