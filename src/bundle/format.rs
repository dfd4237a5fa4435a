//! `bundle.json` (format v1): the single root of trust of a bundle. It names the release,
//! the images with their digests, and every file with its size and sha256.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::copy::PlatformImage;
use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::recipe::Recipe;

pub const BUNDLE_FILE: &str = "bundle.json";
pub const SIGNATURE_FILE: &str = "bundle.json.minisig";
pub const FORMAT_V1: &str = "dify-bundle/v1";

/// Index annotations naming what an image is for and where it came from.
pub const ANNOTATION_ROLE: &str = "dev.dify-bundle.role";
pub const ANNOTATION_SOURCE: &str = "dev.dify-bundle.source";
/// On a derived image: the digest of the image it was built on.
pub const ANNOTATION_BASE: &str = "dev.dify-bundle.base";

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct BundleManifest {
    pub format: String,
    pub name: String,
    /// RFC 3339, UTC.
    pub created: String,
    pub tool: Tool,
    pub dify_version: String,
    pub recipe: Recipe,
    pub platforms: Vec<String>,
    pub images: Vec<BundleImage>,
    /// Python wheel sets installed into derived images.
    #[serde(default)]
    pub python: Vec<WheelSet>,
    /// Dify plugin packages, stored as blobs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub plugins: Vec<BundlePlugin>,
    /// The application stack's CloudFormation template, stored as a blob.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stack: Option<StackTemplate>,
    /// The installer binary that travels with the bundle, stored as a blob.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub installer: Option<BundleInstaller>,
    /// A delta bundle: the layers it does not carry, because the destination already holds
    /// them. `files` still names every file, those layers included.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delta: Option<Delta>,
    pub files: Vec<BundleFile>,
}

/// What a delta bundle leaves out and on what grounds. Only image layers are ever left out;
/// manifests, configs, plugins, the template and the installer always travel.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delta {
    /// What the destination was known to hold when the bundle was built.
    pub since: Since,
    /// Layers not carried, by image role: install checks, before any change, that the
    /// repository each role goes to holds them.
    pub omitted: Vec<OmittedLayer>,
}

/// The grounds of a delta: a receipt taken inside, or an earlier bundle.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Since {
    /// `receipt` or `bundle`.
    pub kind: String,
    /// The bundle deployed (receipt) or given (bundle), as far as it is known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bundle: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dify_version: Option<String>,
    /// The sha256 of that bundle's bundle.json.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bundle_json: Option<Digest>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OmittedLayer {
    pub digest: Digest,
    pub size: u64,
    /// The roles whose images have this layer.
    pub roles: Vec<String>,
}

impl Since {
    /// What the delta assumes the destination holds, for people: `NAME (Dify VERSION)`, or
    /// `a receipt` when the receipt named no bundle.
    pub fn describe(&self) -> String {
        match (&self.bundle, &self.dify_version) {
            (Some(bundle), Some(version)) => format!("{bundle} (Dify {version})"),
            (Some(bundle), None) => bundle.clone(),
            _ => format!("a {}", self.kind),
        }
    }
}

impl Delta {
    /// The bundle paths (`blobs/sha256/<hex>`) of the layers left out.
    pub fn omitted_paths(&self) -> std::collections::BTreeSet<String> {
        self.omitted
            .iter()
            .map(|layer| blob_path(&layer.digest))
            .collect()
    }

    pub fn omitted_bytes(&self) -> u64 {
        self.omitted.iter().map(|layer| layer.size).sum()
    }
}

/// Where a blob lives in a bundle.
pub fn blob_path(digest: &Digest) -> String {
    format!("{}/{}", crate::store::layout::BLOBS_DIR, digest.hex())
}

/// The `dify-bundle` executable carried inside the bundle, so the inside needs nothing but
/// the medium: checked with `minisign -Vm bundle.json`, then `sha256sum` of `path`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BundleInstaller {
    /// Where it is in the bundle (`blobs/sha256/HEX`, listed in `files` like every blob).
    pub path: String,
    pub digest: Digest,
    pub size: u64,
    /// The platform it runs on, read from its ELF header (`linux/amd64`, `linux/arm64`).
    pub platform: String,
    /// `dify-bundle --version` of it, when it is the building binary itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Tool {
    pub name: String,
    pub version: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct BundleImage {
    pub role: String,
    /// The reference it was pulled from.
    pub source: String,
    /// What the source reference resolved to when the bundle was built.
    pub source_digest: Digest,
    /// The root manifest in the bundle (equal to `source_digest` unless platforms were left out).
    pub digest: Digest,
    /// For a derived image (the sandbox with Python packages): the root it was built on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_digest: Option<Digest>,
    pub media_type: String,
    pub platforms: Vec<PlatformImage>,
    /// Manifests and blobs of this image, each counted once.
    pub size: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BundlePlugin {
    /// `author/name:version@checksum`, as the plugin daemon identifies it.
    pub identifier: String,
    pub checksum: String,
    /// Where it came from: a marketplace URL or a file name.
    pub source: String,
    /// The package file, a blob of the bundle.
    pub digest: Digest,
    pub size: u64,
    pub signature: crate::plugins::SignatureCheck,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StackTemplate {
    pub digest: Digest,
    pub size: u64,
    /// The template's parameters that have no default: install must give them.
    pub required_parameters: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BundleFile {
    /// Relative to the bundle directory, `/`-separated.
    pub path: String,
    pub size: u64,
    pub sha256: String,
}

/// One platform's wheels and the layer they went into.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct WheelSet {
    pub image: String,
    pub platform: String,
    pub python: crate::python::PythonTarget,
    pub wheels: Vec<crate::python::LockedWheel>,
    /// The layer the wheels were installed into.
    pub layer: Digest,
    pub diff_id: Digest,
    pub layer_size: u64,
    /// The derived per-platform manifest.
    pub manifest: Digest,
}

/// Whether a path from bundle.json is a plain relative path that stays inside the bundle.
pub fn is_safe_relative(path: &str) -> bool {
    !path.is_empty()
        && !path.starts_with('/')
        && !path.contains('\\')
        && path
            .split('/')
            .all(|part| !part.is_empty() && part != "." && part != "..")
}

impl BundleManifest {
    pub fn read(dir: &Path) -> Result<BundleManifest> {
        let path = dir.join(BUNDLE_FILE);
        let bytes = std::fs::read(&path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => Error::invalid(format!(
                "{}: not a bundle (no {BUNDLE_FILE})",
                dir.display()
            ))
            .with_hint("build one with `dify-bundle build --out DIR`"),
            _ => Error::io(&path, e),
        })?;
        BundleManifest::parse(&bytes, &path.display().to_string())
    }

    pub fn parse(bytes: &[u8], origin: &str) -> Result<BundleManifest> {
        let manifest: BundleManifest = serde_json::from_slice(bytes)
            .map_err(|e| Error::invalid(format!("{origin}: malformed bundle.json: {e}")))?;
        if manifest.format != FORMAT_V1 {
            return Err(Error::invalid(format!(
                "{origin}: bundle format `{}` is not supported by this version (expected {FORMAT_V1})",
                manifest.format
            )));
        }
        crate::recipe::check_name("name", &manifest.name)
            .and_then(|()| crate::recipe::check_name("dify_version", &manifest.dify_version))
            .map_err(|e| Error::invalid(format!("{origin}: {e}")))?;
        let mut seen = std::collections::HashSet::new();
        for file in &manifest.files {
            let shown = crate::units::escape(&file.path);
            if !is_safe_relative(&file.path)
                || file.path == BUNDLE_FILE
                || file.path == SIGNATURE_FILE
            {
                return Err(Error::invalid(format!(
                    "{origin}: file entry `{shown}` is not a safe relative path"
                )));
            }
            if !seen.insert(file.path.as_str()) {
                return Err(Error::invalid(format!(
                    "{origin}: file `{shown}` is listed twice; bundle.json must list each file once"
                )));
            }
            Digest::from_hex(&file.sha256)
                .map_err(|e| Error::invalid(format!("{origin}: file `{shown}`: {e}")))?;
        }
        if let Some(installer) = &manifest.installer {
            // The installer is trusted only as one of the files bundle.json lists.
            let listed = manifest.files.iter().any(|f| {
                f.path == installer.path
                    && f.sha256 == installer.digest.hex()
                    && f.size == installer.size
            });
            if !listed {
                return Err(Error::invalid(format!(
                    "{origin}: the installer `{}` is not among the bundle's files with its digest and size",
                    installer.path
                )));
            }
        }
        if let Some(delta) = &manifest.delta {
            // A layer left out is still one of the files bundle.json vouches for.
            for layer in &delta.omitted {
                let path = blob_path(&layer.digest);
                let listed = manifest.files.iter().any(|f| {
                    f.path == path && f.sha256 == layer.digest.hex() && f.size == layer.size
                });
                if !listed {
                    return Err(Error::invalid(format!(
                        "{origin}: the omitted layer {} is not among the bundle's files with its digest and size",
                        layer.digest
                    )));
                }
            }
        }
        Ok(manifest)
    }

    /// The paths of the files this bundle carries: every file but the layers a delta leaves out.
    pub fn carried(&self) -> impl Iterator<Item = &BundleFile> {
        let omitted = self
            .delta
            .as_ref()
            .map(Delta::omitted_paths)
            .unwrap_or_default();
        self.files
            .iter()
            .filter(move |f| !omitted.contains(&f.path))
    }
}

#[cfg(test)]
mod tests {
    use super::is_safe_relative;

    #[test]
    fn path_safety() {
        assert!(is_safe_relative("blobs/sha256/ab"));
        assert!(!is_safe_relative("../x"));
        assert!(!is_safe_relative("/etc/passwd"));
        assert!(!is_safe_relative("a//b"));
        assert!(!is_safe_relative("a/./b"));
        assert!(!is_safe_relative("a\\b"));
        assert!(!is_safe_relative(""));
    }
}
