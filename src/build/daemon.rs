//! Plugins in a bundle: every package fetched (marketplace) or read (local file), verified
//! as the plugin daemon verifies it, and stored as a blob; then the derived plugin-daemon
//! image — the base image plus one layer holding the wheelhouse of every plugin's
//! dependencies for the daemon's Python and each platform — and the daemon settings that
//! make its installs use that wheelhouse.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::derived::{self, DerivedBuilder, Stage};
use crate::bundle::format::BundlePlugin;
use crate::bundle::format::WheelSet;
use crate::copy::{CopyOptions, ImagePlan};
use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::oci::layer::LayerFile;
use crate::oci::layer::write_layer_with;
use crate::plugins::wheelhouse::{self, IMAGE_ROOT};
use crate::plugins::{PluginKey, PluginPackage, SignatureCheck, marketplace};
use crate::progress::Progress;
use crate::python::{PythonTarget, interpreter};
use crate::recipe::{RecipePlugin, Role};
use crate::store::LayoutStore;

/// Where extra trusted plugin keys go in the derived image.
const KEYS_DIR: &str = "app/keys";

#[derive(Clone, Debug)]
pub struct PluginOptions {
    /// Marketplace base URL (a mirror, or a test server).
    pub marketplace: String,
    /// Local packages to add (`--plugin FILE`).
    pub local: Vec<PathBuf>,
    /// Extra trusted plugin-signing keys (PKCS#1 PEM), besides Dify's official one.
    pub keys: Vec<PathBuf>,
    /// Leave plugins out entirely.
    pub skip: bool,
}

impl Default for PluginOptions {
    fn default() -> Self {
        PluginOptions {
            marketplace: marketplace::DEFAULT_URL.to_owned(),
            local: Vec::new(),
            keys: Vec::new(),
            skip: false,
        }
    }
}

/// A verified package, stored in the layout.
pub struct StoredPlugin {
    pub package: PluginPackage,
    pub record: BundlePlugin,
}

/// Fetches or reads every plugin, verifies each, and stores the packages as blobs. A package
/// no trusted key vouches for is refused: the daemon (with FORCE_VERIFYING_SIGNATURE) would
/// refuse it too.
pub async fn collect(
    layout: &LayoutStore,
    recipe: &[RecipePlugin],
    options: &PluginOptions,
    copy: &CopyOptions,
    progress: &dyn Progress,
) -> Result<Vec<StoredPlugin>> {
    let keys = PluginKey::trusted(&options.keys)?;
    let mut sources: Vec<(String, Vec<u8>)> = Vec::new();
    for plugin in recipe {
        progress.step(&format!(
            "downloading plugin {} {}",
            plugin.id, plugin.version
        ));
        let bytes =
            marketplace::fetch(&options.marketplace, &plugin.id, &plugin.version, copy.retry)
                .await
                .map_err(|e| {
                    Error::Context {
                        context: format!("downloading plugin {} {}", plugin.id, plugin.version),
                        inner: Box::new(e),
                    }
                    .with_hint("a mirror: --marketplace-url URL; a local package: --plugin FILE; none: --no-plugins")
                })?;
        sources.push((
            marketplace::download_url(&options.marketplace, &plugin.id, &plugin.version),
            bytes,
        ));
    }
    for path in &options.local {
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| path.display().to_string());
        sources.push((name, bytes));
    }
    let mut stored: Vec<StoredPlugin> = Vec::new();
    for (source, bytes) in sources {
        let package = PluginPackage::read(&bytes, &source)?;
        let signature = package.check_signature(&keys);
        match &signature {
            SignatureCheck::Verified { key, .. } => progress.note(&format!(
                "plugin {}: signature good ({key} key)",
                package.identifier()
            )),
            SignatureCheck::Unsigned => {
                return Err(Error::invalid(format!(
                    "plugin {} ({source}): not signed; the plugin daemon refuses unsigned packages",
                    package.identifier()
                )));
            }
            SignatureCheck::Invalid { reason } => {
                return Err(Error::invalid(format!(
                    "plugin {} ({source}): refused: {reason}",
                    package.identifier()
                )));
            }
        }
        if stored.iter().any(|s| s.package.id() == package.id()) {
            return Err(Error::invalid(format!(
                "plugin {} is given twice; keep one version",
                package.id()
            )));
        }
        let digest = Digest::of(&bytes);
        layout.write_small_blob(&digest, &bytes)?;
        stored.push(StoredPlugin {
            record: BundlePlugin {
                identifier: package.identifier(),
                checksum: package.checksum.clone(),
                source,
                digest,
                size: bytes.len() as u64,
                signature,
            },
            package,
        });
    }
    Ok(stored)
}

/// Builds the derived plugin-daemon image over `base` with the wheelhouse of `plugins`.
pub async fn derive(
    layout: &LayoutStore,
    base: &ImagePlan,
    plugins: &[StoredPlugin],
    options: &PluginOptions,
    cache_dir: &Path,
    copy: &CopyOptions,
    progress: Arc<dyn Progress>,
) -> Result<Stage> {
    let started = std::time::Instant::now();
    let python = plugins
        .iter()
        .map(|p| p.package.manifest.meta.runner.version.clone())
        .find(|v| !v.is_empty())
        .unwrap_or_else(|| "3.12".to_owned());
    let packages: Vec<PluginPackage> = plugins.iter().map(|p| p.package.clone()).collect();
    let cache = Arc::new(LayoutStore::create(&cache_dir.join("wheels"))?);
    let work = layout
        .scratch_dir()?
        .join(format!("plugins-{}", std::process::id()));
    std::fs::create_dir_all(&work).map_err(|e| Error::io(&work, e))?;
    let mut keys = Vec::new();
    for (n, path) in options.keys.iter().enumerate() {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        // The daemon wants nothing after the END line, not even a newline.
        keys.push(LayerFile {
            path: format!("{KEYS_DIR}/plugin-key-{}.pem", n + 1),
            mode: 0o644,
            bytes: text.trim().as_bytes().to_vec(),
        });
    }
    let mut builder = DerivedBuilder::default();
    let mut wheel_sets = Vec::new();
    for platform_base in derived::bases(layout, base).await? {
        let platform = &platform_base.platform;
        // The daemon's glibc, read from the image; its Python is the plugins' runner version.
        // Not guessed: a wheel tagged for a newer glibc than the image has would fail inside.
        let uv_platform =
            interpreter::platform_tag(&platform_base.layers, platform).map_err(|e| {
                Error::Context {
                    context: format!(
                        "reading the C library of the plugin daemon image for {platform}"
                    ),
                    inner: Box::new(e),
                }
            })?;
        let target = PythonTarget::for_resolution(&python, &uv_platform);
        let (house, _) =
            wheelhouse::gather(&packages, &target, &cache, copy, &progress, &work).await?;
        progress.step(&format!(
            "writing the wheelhouse ({} wheels) for {platform} into a new layer",
            house.wheels().len()
        ));
        let mut files = house.index_files(IMAGE_ROOT);
        files.extend(keys.iter().cloned());
        let layer_path = layout
            .scratch_dir()?
            .join(format!("daemon-layer-{}.tar.gz", std::process::id()));
        let built = write_layer_with(&files, &house.wheel_files(&cache, IMAGE_ROOT), &layer_path)?;
        let manifest = builder.add(
            layout,
            &platform_base,
            &layer_path,
            &built,
            format!(
                "dify-bundle: wheelhouse of {} plugins ({} wheels for Python {python} on {uv_platform}) at /{IMAGE_ROOT}",
                plugins.len(),
                house.wheels().len()
            ),
        )?;
        wheel_sets.push(WheelSet {
            image: Role::PluginDaemon.to_string(),
            platform: platform.to_string(),
            python: target,
            wheels: house.wheels(),
            layer: built.digest,
            diff_id: built.diff_id,
            layer_size: built.size,
            manifest,
        });
    }
    let _ = std::fs::remove_dir_all(&work);
    let image = builder.finish(layout)?;
    let mut environment = wheelhouse::daemon_environment();
    if !keys.is_empty() {
        environment.push((
            "THIRD_PARTY_SIGNATURE_VERIFICATION_ENABLED".to_owned(),
            "true".to_owned(),
        ));
        environment.push((
            "THIRD_PARTY_SIGNATURE_VERIFICATION_PUBLIC_KEYS".to_owned(),
            keys.iter()
                .map(|k| format!("/{}", k.path))
                .collect::<Vec<_>>()
                .join(","),
        ));
    }
    Ok(Stage {
        role: Role::PluginDaemon,
        image,
        wheel_sets,
        environment,
        seconds: started.elapsed().as_secs_f64(),
    })
}
