//! Building a bundle: resolve the recipe's images, copy them from their registries into the
//! layout, derive the sandbox and plugin-daemon images, generate the stack, keep exactly what
//! the recipe needs, and write `bundle.json`.

pub mod daemon;
pub mod derived;
pub mod installer;
pub mod sandbox;
pub mod stack;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Serialize;

use self::daemon::{DAEMON_ROLE, PluginOptions};
use self::derived::DerivedImage;
use self::installer::InstallerOptions;
use self::sandbox::{Requirements, SandboxOptions};
use crate::bundle::format::WheelSet;
use crate::bundle::format::{
    ANNOTATION_BASE, ANNOTATION_ROLE, ANNOTATION_SOURCE, BUNDLE_FILE, BundleFile, BundleImage,
    BundleInstaller, BundleManifest, FORMAT_V1, SANDBOX_ROLE, SIGNATURE_FILE, Tool,
};
use crate::copy::{self, CopyOptions, CopyReport, Root};
use crate::digest::{Digest, hash_file};
use crate::error::{Error, Result};
use crate::oci::{ANNOTATION_REF_NAME, Platform};
use crate::progress::Progress;
use crate::python::uv;
use crate::recipe::Recipe;
use crate::stack::app::StackSettings;
use crate::store::layout::{BLOBS_DIR, INDEX_FILE, OCI_LAYOUT_FILE, write_json};
use crate::store::registry::Registries;
use crate::store::{LayoutStore, RegistryOptions, Store, Tag};

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
}

pub async fn build(options: BuildOptions, progress: Arc<dyn Progress>) -> Result<BuildReport> {
    let recipe = &options.recipe;
    let _lock = crate::lock::exclusive(&options.out, "build into")?;
    let layout = Arc::new(LayoutStore::create(&options.out)?);
    let leftovers = layout.clean_leftovers()?;
    if leftovers > 0 {
        progress.note(&format!(
            "removed {leftovers} temporary files an interrupted run left in {}",
            options.out.display()
        ));
    }
    let registries = Registries::new(options.registries.clone())?;
    let mut roots = Vec::new();
    for image in &recipe.images {
        let reference = image.reference()?;
        let source: Arc<dyn Store> = registries.store(&reference.registry);
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
    let copy_options = CopyOptions {
        platforms: options.platforms.clone(),
        concurrency: options.concurrency,
        retry: options.registries.retry,
    };
    // uv resolves the sandbox's and the plugins' Python dependencies: the one installed, or a
    // pinned release fetched now, before anything else is downloaded.
    let has_plugins =
        !options.plugins.skip && (!recipe.plugins.is_empty() || !options.plugins.local.is_empty());
    if options.sandbox_requirements.is_some() || has_plugins {
        let uv = uv::ensure(&options.cache_dir, &copy_options, &progress).await?;
        if let uv::UvSource::Pinned(path) = &uv {
            progress.note(&format!(
                "using uv {} from {}",
                uv::PINNED_VERSION,
                path.display()
            ));
        }
    }
    // Plugins first: a version the marketplace lacks, or a package that fails its signature,
    // stops the build before any image is downloaded.
    let stored = if options.plugins.skip {
        Vec::new()
    } else {
        daemon::collect(
            &layout,
            &recipe.plugins,
            &options.plugins,
            &copy_options,
            progress.as_ref(),
        )
        .await?
    };
    let report = copy::copy(&roots, layout.clone(), &copy_options, progress.clone()).await?;
    let mut images: Vec<BundleImage> = recipe
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
    let mut referenced: BTreeSet<Digest> = BTreeSet::new();
    for plan in &report.images {
        referenced.extend(plan.manifests.iter().cloned());
        referenced.extend(plan.blobs.iter().map(|b| b.digest.clone()));
    }

    // Bake the sandbox's Python packages into a derived image that takes the sandbox's place.
    let mut wheel_sets = Vec::new();
    let mut sandbox_seconds = None;
    if let Some(requirements) = &options.sandbox_requirements {
        let position = images
            .iter()
            .position(|i| i.role == SANDBOX_ROLE)
            .ok_or_else(|| {
                Error::invalid(format!(
                    "sandbox packages were asked for, but the recipe has no `{SANDBOX_ROLE}` image"
                ))
            })?;
        let derived = sandbox::derive(
            &layout,
            &report.images[position],
            &SandboxOptions {
                requirements,
                cache_dir: &options.cache_dir,
                copy: &copy_options,
            },
            progress.clone(),
        )
        .await
        .map_err(in_image(&roots[position]))?;
        adopt_derived(
            &layout,
            &mut images[position],
            &roots[position],
            derived.image,
            &mut referenced,
        )
        .await?;
        wheel_sets = derived.wheel_sets;
        sandbox_seconds = Some(derived.seconds);
    }

    // Plugins: verified packages, and their dependencies in a derived plugin-daemon image.
    let mut plugins = Vec::new();
    let mut daemon_environment = Vec::new();
    if !options.plugins.skip {
        let position = images.iter().position(|i| i.role == DAEMON_ROLE);
        if let (false, Some(position)) = (stored.is_empty(), position) {
            let derived = daemon::derive(
                &layout,
                &report.images[position],
                &stored,
                &options.plugins,
                &options.cache_dir,
                &copy_options,
                progress.clone(),
            )
            .await
            .map_err(in_image(&roots[position]))?;
            adopt_derived(
                &layout,
                &mut images[position],
                &roots[position],
                derived.image,
                &mut referenced,
            )
            .await?;
            wheel_sets.extend(derived.wheel_sets);
            daemon_environment = derived.environment;
        } else if !stored.is_empty() {
            progress.note(&format!(
                "plugins are stored, but the recipe has no `{DAEMON_ROLE}` image to carry their dependencies"
            ));
        }
        referenced.extend(stored.iter().map(|p| p.record.digest.clone()));
        plugins = stored.into_iter().map(|p| p.record).collect();
    }

    // The application stack, pinned to the digests just stored.
    let stack = stack::generate(
        &layout,
        &recipe.name,
        &recipe.dify_version,
        &images,
        &options.platforms,
        &options.stack,
        daemon_environment,
    )?;
    match &stack {
        Some(stack) => {
            referenced.insert(stack.digest.clone());
        }
        None => progress.note(&format!(
            "no application stack: the recipe lacks one of the images {}",
            crate::stack::app::ROLES.join(", ")
        )),
    }

    // The installer travels as one more blob, named in bundle.json.
    let installer = match &options.installer {
        Some(installer_options) => {
            progress.step("storing the installer binary");
            let stored = installer::store(&layout, installer_options)?;
            referenced.insert(stored.digest.clone());
            Some(stored)
        }
        None => None,
    };

    // index.json lists exactly the recipe's images, in recipe order.
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

    let pruned_blobs = prune(&options.out, &referenced)?;
    if pruned_blobs > 0 {
        progress.note(&format!(
            "removed {pruned_blobs} blobs left by an earlier build that this recipe does not use"
        ));
    }

    let bundled_plugins: Vec<String> = plugins.iter().map(|p| p.identifier.clone()).collect();
    let stack_digest = stack.as_ref().map(|s| s.digest.clone());
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
        plugins,
        stack,
        installer: installer.clone(),
        files: list_files(&options.out, &referenced)?,
    };
    // A signature over an older bundle.json no longer applies.
    let stale_signature = options.out.join(SIGNATURE_FILE);
    if stale_signature.exists() {
        std::fs::remove_file(&stale_signature).map_err(|e| Error::io(&stale_signature, e))?;
    }
    write_json(&options.out.join(BUNDLE_FILE), &manifest)?;
    Ok(BuildReport {
        bundle: options.out.clone(),
        name: recipe.name.clone(),
        copy: report,
        sandbox_seconds,
        wheel_sets,
        pruned_blobs,
        plugins: bundled_plugins,
        stack: stack_digest,
        installer,
    })
}

/// Names the image an error is about.
fn in_image(root: &Root) -> impl FnOnce(Error) -> Error + '_ {
    move |e| Error::Context {
        context: root.label.clone(),
        inner: Box::new(e),
    }
}

/// Puts a derived image in place of the recipe's: the tag points at the derived root, the
/// base is remembered in an annotation and in bundle.json; its blobs join `referenced`.
async fn adopt_derived(
    layout: &LayoutStore,
    image: &mut BundleImage,
    root: &Root,
    derived: DerivedImage,
    referenced: &mut BTreeSet<Digest>,
) -> Result<()> {
    let DerivedImage {
        root: derived,
        platforms,
        blobs,
        ..
    } = derived;
    let derived = &derived;
    let mut annotations = root.tag.clone().unwrap_or_default();
    annotations
        .annotations
        .insert(ANNOTATION_BASE.to_owned(), image.digest.to_string());
    layout
        .put_manifest(&image.role, derived, Some(&annotations))
        .await?;
    image.base_digest = Some(image.digest.clone());
    image.digest = derived.digest();
    image.media_type = derived.media_type.clone();
    image.size += platforms.iter().map(|p| p.size).sum::<u64>()
        - image.platforms.iter().map(|p| p.size).sum::<u64>()
        + derived.bytes.len() as u64;
    image.platforms = platforms;
    referenced.extend(blobs);
    Ok(())
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
