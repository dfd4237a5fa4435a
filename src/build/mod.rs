//! Building a bundle: resolve the recipe's images, copy them from their registries into the
//! layout, derive the sandbox and plugin-daemon images, generate the stack, keep exactly what
//! the recipe needs, and write `bundle.json`.

pub mod daemon;
pub mod delta;
pub mod derived;
pub mod finish;
pub mod installer;
pub mod pull;
pub mod sandbox;
pub mod stack;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Serialize;

use self::daemon::{PluginOptions, StoredPlugin};
use self::delta::SinceSource;
use self::derived::Stage;
use self::installer::InstallerOptions;
use self::pull::Pulled;
use self::sandbox::{Requirements, SandboxOptions};
use crate::bundle::format::{
    BundleInstaller, BundleManifest, Delta, FORMAT_V1, Since, Tool, WheelSet,
};
use crate::copy::{CopyOptions, CopyReport, in_image};
use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::oci::Platform;
use crate::progress::Progress;
use crate::python::uv;
use crate::recipe::{Recipe, Role};
use crate::signing::SigningKey;
use crate::stack::app::StackSettings;
use crate::store::{LayoutStore, RegistryOptions};

pub struct BuildOptions {
    pub out: PathBuf,
    pub recipe: Recipe,
    pub platforms: Vec<Platform>,
    pub registries: RegistryOptions,
    pub concurrency: usize,
    /// Python packages to bake into the sandbox image (`None`: leave it as it is).
    pub sandbox_requirements: Option<Requirements>,
    /// Where downloaded wheels are kept between builds.
    pub cache_dir: PathBuf,
    /// Build-time settings of the application stack.
    pub stack: StackSettings,
    pub plugins: PluginOptions,
    /// The installer binary to carry inside the bundle (`None`: none).
    pub installer: Option<InstallerOptions>,
    /// The key to sign bundle.json with, before the directory is let go (`None`: unsigned).
    pub sign: Option<SigningKey>,
    /// What the destination already holds: the layers it has are named but not carried.
    pub since: Option<SinceSource>,
}

#[derive(Debug, Serialize)]
pub struct BuildReport {
    pub bundle: PathBuf,
    pub name: String,
    pub copy: CopyReport,
    /// Seconds spent resolving, downloading and installing sandbox packages.
    pub sandbox_seconds: Option<f64>,
    pub wheel_sets: Vec<WheelSet>,
    /// Blobs from an earlier build that this recipe no longer needs, removed.
    pub pruned_blobs: usize,
    /// Identifiers of the plugin packages bundled.
    pub plugins: Vec<String>,
    /// Digest of the application stack's template, when the recipe has every image it runs.
    pub stack: Option<Digest>,
    /// The installer carried, when one is.
    pub installer: Option<BundleInstaller>,
    /// The id of the key bundle.json was signed with, when it was.
    pub signed_by: Option<String>,
    /// For a delta bundle: what it leaves out, on what grounds.
    pub delta: Option<DeltaReport>,
}

#[derive(Debug, Serialize)]
pub struct DeltaReport {
    pub since: Since,
    /// Layers named in bundle.json but not carried.
    pub omitted_layers: usize,
    pub omitted_bytes: u64,
    /// What `pack` and `upload` carry: every file of the bundle but the layers left out.
    pub carried_bytes: u64,
    /// Every file of the bundle, as a full bundle would carry it.
    pub full_bytes: u64,
}

pub async fn build(options: BuildOptions, progress: Arc<dyn Progress>) -> Result<BuildReport> {
    let recipe = &options.recipe;
    // What the destination holds is read first: a receipt that cannot be read stops the
    // build before anything is downloaded.
    let held = match &options.since {
        Some(source) => Some(since_held(source, &options.out)?),
        None => None,
    };
    let _lock = crate::lock::exclusive(&options.out, "build into")?;
    let layout = Arc::new(LayoutStore::create(&options.out)?);
    let leftovers = layout.clean_leftovers()?;
    if leftovers > 0 {
        progress.note(&format!(
            "removed {leftovers} temporary files an interrupted run left in {}",
            options.out.display()
        ));
    }
    let copy_options = CopyOptions {
        platforms: options.platforms.clone(),
        concurrency: options.concurrency,
        retry: options.registries.retry,
    };
    let with_plugins =
        !options.plugins.skip && (!recipe.plugins.is_empty() || !options.plugins.local.is_empty());
    if options.sandbox_requirements.is_some() || with_plugins {
        ensure_uv(&options.cache_dir, &copy_options, &progress).await?;
    }
    // Plugins first: a version the marketplace lacks, or a package that fails its signature,
    // stops the build before any image is downloaded.
    let plugins = match options.plugins.skip {
        true => Vec::new(),
        false => {
            daemon::collect(
                &layout,
                &recipe.plugins,
                &options.plugins,
                &copy_options,
                progress.as_ref(),
            )
            .await?
        }
    };
    let pulled = pull::images(
        &layout,
        recipe,
        &options.registries,
        &copy_options,
        progress.clone(),
    )
    .await?;
    let sandbox = sandbox_stage(&layout, &pulled, &options, &copy_options, &progress).await?;
    let daemon = daemon_stage(
        &layout,
        &pulled,
        &plugins,
        &options,
        &copy_options,
        &progress,
    )
    .await?;
    let stages: Vec<&Stage> = [&sandbox, &daemon].into_iter().flatten().collect();
    let images = finish::adopt(&layout, &pulled, &stages).await?;

    // The application stack, pinned to the digests just stored.
    let stack = stack::generate(
        &layout,
        &recipe.name,
        &recipe.dify_version,
        &images,
        &options.platforms,
        &options.stack,
        daemon
            .as_ref()
            .map(|d| d.environment.clone())
            .unwrap_or_default(),
    )?;
    if stack.is_none() {
        progress.note(&format!(
            "no application stack: the recipe lacks one of the images {}",
            crate::stack::app::ROLES.join(", ")
        ));
    }
    // The installer travels as one more blob, named in bundle.json.
    let installer = match &options.installer {
        Some(installer_options) => {
            progress.step("storing the installer binary");
            Some(installer::store(&layout, installer_options)?)
        }
        None => None,
    };

    let mut referenced = pulled.blobs.clone();
    referenced.extend(stages.iter().flat_map(|s| s.image.blobs.iter().cloned()));
    referenced.extend(plugins.iter().map(|p| p.record.digest.clone()));
    referenced.extend(stack.iter().map(|s| s.digest.clone()));
    referenced.extend(installer.iter().map(|i| i.digest.clone()));
    let wheel_sets: Vec<WheelSet> = stages.iter().flat_map(|s| s.wheel_sets.clone()).collect();
    let delta = match held {
        Some(held) => Some(Delta {
            omitted: delta::omitted(&options.out, &images, &held)?,
            since: held.since,
        }),
        None => None,
    };
    let manifest = BundleManifest {
        format: FORMAT_V1.to_owned(),
        name: recipe.name.clone(),
        created: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
        tool: Tool {
            name: env!("CARGO_PKG_NAME").to_owned(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
        },
        dify_version: recipe.dify_version.clone(),
        recipe: recipe.clone(),
        platforms: options.platforms.iter().map(Platform::to_string).collect(),
        images,
        python: wheel_sets.clone(),
        plugins: plugins.into_iter().map(|p| p.record).collect(),
        stack,
        installer,
        delta,
        files: Vec::new(),
    };
    let (manifest, pruned_blobs) = finish::write(
        &layout,
        &options.out,
        recipe,
        manifest,
        &referenced,
        progress.as_ref(),
    )?;
    let signed_by = match &options.sign {
        Some(key) => {
            crate::bundle::trust::write_signature(&options.out, key)?;
            Some(key.id.clone())
        }
        None => None,
    };
    Ok(BuildReport {
        bundle: options.out.clone(),
        name: recipe.name.clone(),
        copy: pulled.copy,
        sandbox_seconds: sandbox.map(|s| s.seconds),
        wheel_sets,
        pruned_blobs,
        plugins: manifest
            .plugins
            .iter()
            .map(|p| p.identifier.clone())
            .collect(),
        stack: manifest.stack.as_ref().map(|s| s.digest.clone()),
        delta: manifest.delta.as_ref().map(|delta| DeltaReport {
            since: delta.since.clone(),
            omitted_layers: delta.omitted.len(),
            omitted_bytes: delta.omitted_bytes(),
            carried_bytes: manifest.carried().map(|f| f.size).sum(),
            full_bytes: manifest.files.iter().map(|f| f.size).sum(),
        }),
        installer: manifest.installer,
        signed_by,
    })
}

/// What the destination holds, from `--since`; refused when it names the output directory,
/// whose bundle.json this build replaces.
fn since_held(source: &SinceSource, out: &Path) -> Result<delta::Held> {
    let same = |a: &Path, b: &Path| match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    };
    if same(source.path(), out) {
        return Err(Error::invalid(format!(
            "--since {} is the directory this build writes",
            out.display()
        ))
        .with_hint(
            "build the new bundle into another directory, and name the old one with --since",
        ));
    }
    delta::held(source)
}

/// uv resolves the sandbox's and the plugins' Python dependencies: the one installed, or a
/// pinned release fetched now, before anything else is downloaded.
async fn ensure_uv(
    cache_dir: &Path,
    copy_options: &CopyOptions,
    progress: &Arc<dyn Progress>,
) -> Result<()> {
    let uv = uv::ensure(cache_dir, copy_options, progress).await?;
    if let uv::UvSource::Pinned(path) = &uv {
        progress.note(&format!(
            "using uv {} from {}",
            uv::PINNED_VERSION,
            path.display()
        ));
    }
    Ok(())
}

/// The sandbox's Python packages baked into a derived image that takes the sandbox's place;
/// `None` when no packages were asked for.
async fn sandbox_stage(
    layout: &LayoutStore,
    pulled: &Pulled,
    options: &BuildOptions,
    copy_options: &CopyOptions,
    progress: &Arc<dyn Progress>,
) -> Result<Option<Stage>> {
    let Some(requirements) = &options.sandbox_requirements else {
        return Ok(None);
    };
    let position = pulled.position(Role::Sandbox).ok_or_else(|| {
        Error::invalid(format!(
            "sandbox packages were asked for, but the recipe has no `{}` image",
            Role::Sandbox
        ))
    })?;
    let sandbox_options = SandboxOptions {
        requirements,
        cache_dir: &options.cache_dir,
        copy: copy_options,
    };
    sandbox::derive(
        layout,
        &pulled.copy.images[position],
        &sandbox_options,
        progress.clone(),
    )
    .await
    .map(Some)
    .map_err(|e| in_image(e, &pulled.roots[position]))
}

/// The plugins' dependencies (and any third-party keys) in a derived plugin-daemon image;
/// `None` without plugins or without a daemon image to carry them.
async fn daemon_stage(
    layout: &LayoutStore,
    pulled: &Pulled,
    plugins: &[StoredPlugin],
    options: &BuildOptions,
    copy_options: &CopyOptions,
    progress: &Arc<dyn Progress>,
) -> Result<Option<Stage>> {
    if plugins.is_empty() {
        return Ok(None);
    }
    let Some(position) = pulled.position(Role::PluginDaemon) else {
        progress.note(&format!(
            "plugins are stored, but the recipe has no `{}` image to carry their dependencies",
            Role::PluginDaemon
        ));
        return Ok(None);
    };
    daemon::derive(
        layout,
        &pulled.copy.images[position],
        plugins,
        &options.plugins,
        &options.cache_dir,
        copy_options,
        progress.clone(),
    )
    .await
    .map(Some)
    .map_err(|e| in_image(e, &pulled.roots[position]))
}
