//! The derived sandbox image: the recipe's Python requirements resolved for the sandbox
//! image's own interpreter and platform, downloaded and hash-checked, and installed into a
//! new layer with an empty `/dependencies/python-requirements.txt`, so the sandbox never
//! runs pip — not at start, not every 30 minutes.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use super::derived::{DerivedBuilder, Stage};
use crate::bundle::format::WheelSet;
use crate::copy::{CopyOptions, ImagePlan};
use crate::error::{Error, Result};
use crate::oci::layer::LayerFile;
use crate::oci::layer::{BuiltLayer, write_layer};
use crate::progress::Progress;
use crate::python::LockedWheel;
use crate::python::resolve::requested_names;
use crate::python::wheel;
use crate::python::{PythonTarget, fetch, interpreter, resolve};
use crate::recipe::Role;
use crate::store::LayoutStore;

/// The sandbox reads this file at start and every `PYTHON_DEPS_UPDATE_INTERVAL`; empty, it
/// runs no pip at all.
pub const SANDBOX_REQUIREMENTS_FILE: &str = "dependencies/python-requirements.txt";

/// Where the requirements come from.
#[derive(Clone, Debug)]
pub enum Requirements {
    /// Lines of a requirements.txt, from the recipe.
    Lines(Vec<String>),
    /// A requirements.txt file (pins, markers, `-r` includes allowed).
    File(PathBuf),
}

pub struct SandboxOptions<'a> {
    pub requirements: &'a Requirements,
    /// Content-addressed wheel cache shared by builds.
    pub cache_dir: &'a Path,
    pub copy: &'a CopyOptions,
}

fn requirements_file(requirements: &Requirements, work: &Path) -> Result<(PathBuf, String)> {
    match requirements {
        Requirements::File(path) => {
            let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
            Ok((path.clone(), text))
        }
        Requirements::Lines(lines) => {
            let path = work.join("requirements.txt");
            let text = lines.join("\n") + "\n";
            std::fs::write(&path, &text).map_err(|e| Error::io(&path, e))?;
            Ok((path, text))
        }
    }
}

/// Builds the derived sandbox image from the base image already in the layout.
pub async fn derive(
    layout: &LayoutStore,
    base: &ImagePlan,
    options: &SandboxOptions<'_>,
    progress: Arc<dyn Progress>,
) -> Result<Stage> {
    let started = Instant::now();
    let work = layout
        .scratch_dir()?
        .join(format!("python-{}", std::process::id()));
    std::fs::create_dir_all(&work).map_err(|e| Error::io(&work, e))?;
    let result = derive_in(layout, base, options, progress, &work).await;
    let _ = std::fs::remove_dir_all(&work);
    let mut derived = result?;
    derived.seconds = started.elapsed().as_secs_f64();
    Ok(derived)
}

async fn derive_in(
    layout: &LayoutStore,
    image: &ImagePlan,
    options: &SandboxOptions<'_>,
    progress: Arc<dyn Progress>,
    work: &Path,
) -> Result<Stage> {
    let (requirements, text) = requirements_file(options.requirements, work)?;
    let requested = requested_names(&text);
    let cache = Arc::new(LayoutStore::create(&options.cache_dir.join("wheels"))?);
    let mut derived = DerivedBuilder::default();
    let mut wheel_sets = Vec::new();
    for base in super::derived::bases(layout, image).await? {
        let platform = &base.platform;
        progress.step(&format!(
            "finding Python in the sandbox image for {platform}"
        ));
        let target = interpreter::detect(&base.config_json, &base.layers, platform)?;
        progress.step(&format!(
            "resolving sandbox packages for Python {} on {} ({})",
            target.version, target.uv_platform, target.interpreter
        ));
        let wheels = resolve(&requirements, &target, work)?;
        let wheels = fetch::fetch_wheels(&wheels, &cache, options.copy, &progress).await?;
        progress.step(&format!(
            "installing {} wheels into a new layer",
            wheels.len()
        ));
        let layer_path = layout
            .scratch_dir()?
            .join(format!("layer-{}.tar.gz", std::process::id()));
        let built = install_layer(&cache, &wheels, &requested, &target, &layer_path)?;
        let manifest = derived.add(
            layout,
            &base,
            &layer_path,
            &built,
            format!(
                "dify-bundle: {} Python wheels for {} into {}; empty /{SANDBOX_REQUIREMENTS_FILE}",
                wheels.len(),
                target.version,
                target.site_packages
            ),
        )?;
        wheel_sets.push(WheelSet {
            image: "sandbox".to_owned(),
            platform: platform.to_string(),
            python: target,
            wheels,
            layer: built.digest,
            diff_id: built.diff_id,
            layer_size: built.size,
            manifest,
        });
    }
    Ok(Stage {
        role: Role::Sandbox,
        environment: Vec::new(),
        image: derived.finish(layout)?,
        wheel_sets,
        seconds: 0.0,
    })
}

/// Installs every wheel into one deterministic layer at `out`.
fn install_layer(
    cache: &LayoutStore,
    wheels: &[LockedWheel],
    requested: &[String],
    target: &PythonTarget,
    out: &Path,
) -> Result<BuiltLayer> {
    let mut owner: BTreeMap<String, String> = BTreeMap::new();
    let mut files: Vec<LayerFile> = Vec::new();
    for locked in wheels {
        let installed = wheel::install(
            &cache.blob_path(&locked.sha256),
            &locked.filename,
            target,
            requested.contains(&wheel::normalise(&locked.name)),
        )?;
        for file in installed.files {
            if let Some(other) = owner.insert(file.path.clone(), locked.filename.clone()) {
                return Err(Error::invalid(format!(
                    "/{}: installed by both {other} and {}",
                    file.path, locked.filename
                )));
            }
            files.push(file);
        }
    }
    files.push(LayerFile {
        path: SANDBOX_REQUIREMENTS_FILE.to_owned(),
        mode: 0o644,
        bytes: Vec::new(),
    });
    write_layer(&files, out)
}
