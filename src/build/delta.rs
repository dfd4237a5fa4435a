//! Delta bundles: what the destination already holds (from a receipt taken inside, or from
//! the earlier bundle it was installed from) and, from that, which layers of a new bundle
//! need not travel. The bundle directory stays complete; bundle.json names the layers left
//! out, and `pack`, `upload` and `install` act on that list.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use crate::bundle::format::{BUNDLE_FILE, BundleImage, BundleManifest, OmittedLayer, Since};
use crate::bundle::receipt::Receipt;
use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::oci::Manifest;

/// What `build --since` was given.
#[derive(Clone, Debug)]
pub enum SinceSource {
    /// A receipt written inside by `dify-bundle receipt`.
    Receipt(PathBuf),
    /// The directory of the bundle the destination was installed from.
    Bundle(PathBuf),
}

impl SinceSource {
    /// A directory holding bundle.json is an earlier bundle; a file is a receipt.
    pub fn from_path(path: &Path) -> Result<SinceSource> {
        if path.join(BUNDLE_FILE).is_file() {
            Ok(SinceSource::Bundle(path.to_owned()))
        } else if path.is_file() {
            Ok(SinceSource::Receipt(path.to_owned()))
        } else {
            Err(Error::invalid(format!(
                "--since {}: neither a receipt file nor a bundle directory",
                path.display()
            ))
            .with_hint(
                "take a receipt inside with `dify-bundle receipt --out FILE`, or name the directory of the bundle installed last",
            ))
        }
    }

    pub fn path(&self) -> &Path {
        match self {
            SinceSource::Receipt(path) | SinceSource::Bundle(path) => path,
        }
    }
}

/// What the destination holds, by image role, and on what grounds.
#[derive(Clone, Debug)]
pub struct Held {
    pub since: Since,
    pub by_role: BTreeMap<String, BTreeSet<Digest>>,
}

/// Reads what the destination holds. Neither a receipt nor an earlier bundle is trusted
/// here: a delta is only advice, which install checks against the destination itself.
pub fn held(source: &SinceSource) -> Result<Held> {
    match source {
        SinceSource::Receipt(path) => {
            let receipt = Receipt::read(path)?;
            let deployed = receipt.deployed.clone().unwrap_or_default();
            Ok(Held {
                since: Since {
                    kind: "receipt".to_owned(),
                    bundle: deployed.bundle,
                    dify_version: deployed.dify_version,
                    bundle_json: deployed.bundle_json,
                },
                by_role: receipt.held_by_role(),
            })
        }
        SinceSource::Bundle(dir) => {
            let path = dir.join(BUNDLE_FILE);
            let bytes = std::fs::read(&path).map_err(|e| Error::io(&path, e))?;
            let manifest = BundleManifest::parse(&bytes, &path.display().to_string())?;
            // An earlier delta's left-out layers were at the destination when it was
            // installed, so every layer of its images counts.
            let by_role = layers(dir, &manifest.images)?.into_iter().fold(
                BTreeMap::<String, BTreeSet<Digest>>::new(),
                |mut by_role, (digest, layer)| {
                    for role in layer.roles {
                        by_role.entry(role).or_default().insert(digest.clone());
                    }
                    by_role
                },
            );
            Ok(Held {
                since: Since {
                    kind: "bundle".to_owned(),
                    bundle: Some(manifest.name),
                    dify_version: Some(manifest.dify_version),
                    bundle_json: Some(Digest::of(&bytes)),
                },
                by_role,
            })
        }
    }
}

/// The layers of `images` (stored in the layout at `dir`) that every role using them
/// already holds, in digest order. A layer one of its roles lacks travels: install pushes
/// each role's layers to that role's repository, and cannot take them from another.
pub fn omitted(dir: &Path, images: &[BundleImage], held: &Held) -> Result<Vec<OmittedLayer>> {
    Ok(layers(dir, images)?
        .into_iter()
        .filter(|(digest, layer)| {
            layer.roles.iter().all(|role| {
                held.by_role
                    .get(role)
                    .is_some_and(|blobs| blobs.contains(digest))
            })
        })
        .map(|(digest, layer)| OmittedLayer {
            digest,
            size: layer.size,
            roles: layer.roles.into_iter().collect(),
        })
        .collect())
}

struct Layer {
    size: u64,
    roles: BTreeSet<String>,
}

/// Every layer of every platform of `images`, with the roles whose images have it, read
/// from the manifests in the layout at `dir` (each checked against its digest first).
fn layers(dir: &Path, images: &[BundleImage]) -> Result<BTreeMap<Digest, Layer>> {
    let mut layers = BTreeMap::<Digest, Layer>::new();
    for image in images {
        for platform in &image.platforms {
            let path = dir.join(crate::bundle::format::blob_path(&platform.digest));
            let what = || {
                format!(
                    "{}: manifest of {} ({})",
                    path.display(),
                    image.role,
                    platform.platform
                )
            };
            let bytes = std::fs::read(&path).map_err(|e| Error::io(&path, e))?;
            platform.digest.verify(&bytes, what)?;
            let Manifest::Image(manifest) = Manifest::parse(&bytes, "", &what())? else {
                return Err(Error::invalid(format!(
                    "{}: an index where an image manifest was expected",
                    what()
                )));
            };
            for layer in manifest.layers {
                layers
                    .entry(layer.digest)
                    .or_insert(Layer {
                        size: layer.size,
                        roles: BTreeSet::new(),
                    })
                    .roles
                    .insert(image.role.clone());
            }
        }
    }
    Ok(layers)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::copy::PlatformImage;

    /// Stores an image manifest with `layers` in `dir` and returns the role's image.
    fn image(dir: &Path, role: &str, layers: &[&Digest]) -> BundleImage {
        let layer = |d: &Digest| serde_json::json!({"mediaType": crate::oci::OCI_LAYER_GZIP, "digest": d.to_string(), "size": 10});
        let config = Digest::of(role.as_bytes());
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": crate::oci::OCI_MANIFEST,
            "config": {"mediaType": crate::oci::OCI_CONFIG, "digest": config.to_string(), "size": 2},
            "layers": layers.iter().map(|d| layer(d)).collect::<Vec<_>>(),
        });
        let bytes = serde_json::to_vec(&manifest).unwrap();
        let digest = Digest::of(&bytes);
        let path = dir.join(crate::bundle::format::blob_path(&digest));
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, &bytes).unwrap();
        BundleImage {
            role: role.to_owned(),
            source: format!("example.com/{role}:1"),
            source_digest: digest.clone(),
            digest: digest.clone(),
            base_digest: None,
            media_type: crate::oci::OCI_MANIFEST.to_owned(),
            platforms: vec![PlatformImage {
                platform: "linux/amd64".to_owned(),
                digest,
                size: bytes.len() as u64,
            }],
            size: 0,
        }
    }

    #[test]
    fn a_layer_travels_unless_every_role_using_it_holds_it() {
        let dir = tempfile::tempdir().unwrap();
        let [base, api_own, worker_own] =
            ["base", "api", "worker"].map(|s| Digest::of(s.as_bytes()));
        let images = [
            image(dir.path(), "api", &[&base, &api_own]),
            image(dir.path(), "worker", &[&base, &worker_own]),
        ];
        let held = |pairs: &[(&str, &[&Digest])]| Held {
            since: Since {
                kind: "receipt".to_owned(),
                bundle: None,
                dify_version: None,
                bundle_json: None,
            },
            by_role: pairs
                .iter()
                .map(|(role, blobs)| {
                    (
                        role.to_string(),
                        blobs.iter().map(|d| (*d).clone()).collect(),
                    )
                })
                .collect(),
        };
        // The api's repository has the shared base, the worker's does not: it travels.
        let left = omitted(dir.path(), &images, &held(&[("api", &[&base, &api_own])])).unwrap();
        assert_eq!(left.len(), 1);
        assert_eq!(left[0].digest, api_own);
        assert_eq!(left[0].roles, ["api"]);
        // Both have it: left out once, naming both roles.
        let left = omitted(
            dir.path(),
            &images,
            &held(&[("api", &[&base]), ("worker", &[&base])]),
        )
        .unwrap();
        assert_eq!(left.len(), 1);
        assert_eq!(left[0].digest, base);
        assert_eq!(left[0].roles, ["api", "worker"]);
        // A manifest changed on disk is refused, not read.
        let path = dir.path().join(crate::bundle::format::blob_path(
            &images[0].platforms[0].digest,
        ));
        std::fs::write(&path, b"{}").unwrap();
        assert!(omitted(dir.path(), &images, &held(&[])).is_err());
    }
}
