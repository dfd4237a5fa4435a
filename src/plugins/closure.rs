//! A plugin's full dependency closure for one target (the daemon's Python and platform),
//! covering both ways the daemon installs:
//!
//! - `requirements.txt` (`uv pip install -r`): resolved for the target by uv, binary wheels only;
//! - `pyproject.toml` + `uv.lock` (`uv sync --no-dev`, re-locking because the lock's URLs
//!   point at PyPI): the re-lock is universal and covers every dependency group, `dev`
//!   included, so every package of the lock must be in the index. Packages the target
//!   installs get their target wheels (resolved by uv from `uv export` of the lock); the
//!   others — needed only on other platforms or Pythons — one wheel each, for their metadata;
//! - `pyproject.toml` without `uv.lock` (daemon 0.5.3 prefers it even beside a
//!   requirements.txt, and its `uv sync` then locks universally): the universal resolution of
//!   the project and all its groups, installed wheels for the target, one wheel of the rest.

use crate::python::uv;
use std::path::Path;

use serde::Deserialize;

use super::package::PluginPackage;
use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::python::LockedWheel;
use crate::python::PythonTarget;
use crate::python::resolve;
use crate::python::wheel::normalise;

/// The wheels one plugin needs in the index.
#[derive(Clone, Debug, Default)]
pub struct Closure {
    /// What the target installs.
    pub install: Vec<LockedWheel>,
    /// One wheel of each locked package the target does not install (metadata for the
    /// re-lock).
    pub metadata: Vec<LockedWheel>,
}

#[derive(Deserialize)]
struct UvLock {
    #[serde(default)]
    package: Vec<LockedPackage>,
}

#[derive(Deserialize)]
struct LockedPackage {
    name: String,
    version: Option<String>,
    #[serde(default)]
    source: toml::Table,
    #[serde(default)]
    wheels: Vec<LockedFile>,
}

#[derive(Deserialize)]
struct LockedFile {
    url: Option<String>,
    hash: Option<String>,
    size: Option<u64>,
}

/// Resolves the closure of `package` for `target`, using `work` as scratch space.
pub fn closure(package: &PluginPackage, target: &PythonTarget, work: &Path) -> Result<Closure> {
    let id = package.identifier();
    let dir = work.join(format!(
        "{}-{}",
        package.manifest.name,
        &package.checksum[..12]
    ));
    std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
    let write = |name: &str, bytes: &[u8]| {
        let path = dir.join(name);
        std::fs::write(&path, bytes).map_err(|e| Error::io(&path, e))
    };
    let mut closure = Closure::default();
    let context = |e: Error| Error::Context {
        context: format!("plugin {id}"),
        inner: Box::new(e),
    };
    if let Some(requirements) = package.requirements() {
        write("requirements.txt", requirements)?;
        closure.install =
            resolve::resolve(&dir.join("requirements.txt"), target, &dir).map_err(context)?;
    }
    if let (Some(pyproject), Some(lock)) = (package.pyproject(), package.lock()) {
        write("pyproject.toml", pyproject)?;
        write("uv.lock", lock)?;
        resolve::run_uv(
            uv::command().current_dir(&dir).args([
                "export",
                "--frozen",
                "--all-groups",
                "--no-emit-project",
                "--no-hashes",
                "--no-header",
                "--format",
                "requirements.txt",
                "--output-file",
                "locked-requirements.txt",
            ]),
            "uv export of the plugin's uv.lock",
        )
        .map_err(context)?;
        let installed = resolve::resolve(&dir.join("locked-requirements.txt"), target, &dir)
            .map_err(context)?;
        let text = String::from_utf8_lossy(lock);
        for wheel in installed {
            if !closure.install.iter().any(|w| w.sha256 == wheel.sha256) {
                closure.install.push(wheel);
            }
        }
        closure.metadata = metadata_wheels(&text, &closure.install).map_err(context)?;
    } else if let Some(pyproject) = package.pyproject() {
        // No uv.lock: daemon 0.5.3 still takes pyproject.toml first, even beside a
        // requirements.txt (`installDependencies`, internal/core/local_runtime/
        // setup_python_environment.go, tag 0.5.3), and its `uv sync --no-dev -i MIRROR` locks the
        // project universally — every dependency group, every platform — against the mirror.
        // So the index must hold that universal resolution: resolved here the same way.
        write("pyproject.toml", pyproject)?;
        let groups = dependency_groups(pyproject).map_err(context)?;
        let universal = dir.join("pylock.universal.toml");
        let mut command = uv::command();
        command
            .current_dir(&dir)
            .args(["pip", "compile", "--quiet", "--no-header", "--universal"])
            .args(["--format", "pylock.toml", "--only-binary", ":all:"])
            .args(["--python-version", &target.version]);
        for group in &groups {
            command.args(["--group", group]);
        }
        // Named relative to the work dir uv runs in, as the other files are: `dir` itself may
        // be relative (a relative --cache-dir).
        command
            .args(["--output-file", "pylock.universal.toml"])
            .arg("pyproject.toml");
        resolve::run_uv(
            &mut command,
            "universal resolution of the plugin's pyproject.toml (what the daemon's uv sync locks)",
        )
        .map_err(context)?;
        let text = std::fs::read_to_string(&universal).map_err(|e| Error::io(&universal, e))?;
        let lock: UniversalLock = toml::from_str(&text).map_err(|e| {
            context(Error::invalid(format!(
                "universal pylock.toml from uv does not parse: {e}"
            )))
        })?;
        let pins: String = lock
            .packages
            .iter()
            .filter_map(|p| {
                let version = p.version.as_deref()?;
                Some(match &p.marker {
                    Some(marker) => format!("{}=={version} ; {marker}\n", p.name),
                    None => format!("{}=={version}\n", p.name),
                })
            })
            .collect();
        write("universal-requirements.txt", pins.as_bytes())?;
        let installed = resolve::resolve(&dir.join("universal-requirements.txt"), target, &dir)
            .map_err(context)?;
        for wheel in installed {
            if !closure.install.iter().any(|w| w.sha256 == wheel.sha256) {
                closure.install.push(wheel);
            }
        }
        closure.metadata = universal_metadata_wheels(lock, &closure.install).map_err(context)?;
    }
    Ok(closure)
}

/// The `[dependency-groups]` a pyproject.toml declares (a re-lock covers them all).
fn dependency_groups(pyproject: &[u8]) -> Result<Vec<String>> {
    let text = String::from_utf8_lossy(pyproject);
    let table: toml::Table = toml::from_str(&text)
        .map_err(|e| Error::invalid(format!("pyproject.toml does not parse: {e}")))?;
    Ok(table
        .get("dependency-groups")
        .and_then(|g| g.as_table())
        .map(|g| g.keys().cloned().collect())
        .unwrap_or_default())
}

/// A universal pylock.toml (PEP 751) as uv writes it: every package, with a marker where it
/// applies to some environments only, and every wheel of it.
#[derive(Deserialize)]
struct UniversalLock {
    #[serde(default)]
    packages: Vec<UniversalPackage>,
}

#[derive(Deserialize)]
struct UniversalPackage {
    name: String,
    version: Option<String>,
    marker: Option<String>,
    #[serde(default)]
    wheels: Vec<UniversalWheel>,
}

#[derive(Deserialize)]
struct UniversalWheel {
    name: Option<String>,
    url: Option<String>,
    size: Option<u64>,
    #[serde(default)]
    hashes: std::collections::BTreeMap<String, String>,
}

/// One wheel of every universally resolved package that `installed` does not cover.
fn universal_metadata_wheels(
    lock: UniversalLock,
    installed: &[LockedWheel],
) -> Result<Vec<LockedWheel>> {
    let packages = lock.packages.into_iter().map(|package| {
        let candidates = package
            .wheels
            .iter()
            .map(|w| WheelCandidate {
                filename: w
                    .name
                    .clone()
                    .or_else(|| w.url.as_deref().map(url_filename)),
                url: w.url.clone(),
                size: w.size,
                sha256: w.hashes.get("sha256").cloned(),
            })
            .collect();
        (package.name, package.version, candidates)
    });
    metadata_wheels_of(packages, installed)
}

/// One wheel for every package of a uv.lock that `installed` does not cover.
fn metadata_wheels(lock: &str, installed: &[LockedWheel]) -> Result<Vec<LockedWheel>> {
    let lock: UvLock =
        toml::from_str(lock).map_err(|e| Error::invalid(format!("uv.lock does not parse: {e}")))?;
    // The plugin itself (virtual, editable or a directory) is not an index package.
    let packages = lock
        .package
        .into_iter()
        .filter(|package| package.source.contains_key("registry"))
        .map(|package| {
            let candidates = package
                .wheels
                .iter()
                .map(|w| WheelCandidate {
                    filename: w.url.as_deref().map(url_filename),
                    url: w.url.clone(),
                    size: w.size,
                    sha256: w
                        .hash
                        .as_deref()
                        .and_then(|h| h.strip_prefix("sha256:"))
                        .map(str::to_owned),
                })
                .collect();
            (package.name, package.version, candidates)
        });
    metadata_wheels_of(packages, installed)
}

/// The metadata wheel of each `(name, version, wheels)` a lock lists, for those `installed`
/// does not cover.
fn metadata_wheels_of(
    packages: impl Iterator<Item = (String, Option<String>, Vec<WheelCandidate>)>,
    installed: &[LockedWheel],
) -> Result<Vec<LockedWheel>> {
    let mut out = Vec::new();
    for (name, version, candidates) in packages {
        out.extend(metadata_wheel(name, version, candidates, installed)?);
    }
    Ok(out)
}

/// A wheel a lock lists, in the terms both lock formats share.
struct WheelCandidate {
    filename: Option<String>,
    url: Option<String>,
    size: Option<u64>,
    /// Hex, as the lock gives it.
    sha256: Option<String>,
}

fn url_filename(url: &str) -> String {
    url.rsplit('/').next().unwrap_or_default().to_owned()
}

/// The wheel whose metadata stands for package `name` when `installed` does not cover it: a
/// pure-Python one when the lock lists one, else the first; `None` when it is covered.
fn metadata_wheel(
    name: String,
    version: Option<String>,
    candidates: Vec<WheelCandidate>,
    installed: &[LockedWheel],
) -> Result<Option<LockedWheel>> {
    if installed
        .iter()
        .any(|w| normalise(&w.name) == normalise(&name))
    {
        return Ok(None);
    }
    let version = version.unwrap_or_default();
    let pick = candidates
        .iter()
        .find(|w| {
            w.filename
                .as_deref()
                .is_some_and(|f| f.ends_with("-none-any.whl"))
        })
        .or_else(|| candidates.first())
        .ok_or_else(|| {
            Error::invalid(format!(
                "{name} {version} has no wheel in the lock (source distributions cannot be built offline)"
            ))
        })?;
    let missing = |what: &str| Error::invalid(format!("{name} {version}: no {what} in the lock"));
    let url = pick.url.clone().ok_or_else(|| missing("URL"))?;
    let sha256 = Digest::from_hex(pick.sha256.as_deref().ok_or_else(|| missing("sha256"))?)?;
    Ok(Some(LockedWheel {
        filename: pick.filename.clone().unwrap_or_else(|| url_filename(&url)),
        name,
        version,
        url,
        size: pick.size.unwrap_or(0),
        sha256,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_wheels_cover_what_the_target_does_not_install() {
        let lock = r#"
version = 1
requires-python = ">=3.12"

[[package]]
name = "demo-plugin"
version = "0.1.0"
source = { virtual = "." }

[[package]]
name = "colorama"
version = "0.4.6"
source = { registry = "https://pypi.org/simple" }
sdist = { url = "https://files.pythonhosted.org/colorama-0.4.6.tar.gz", hash = "sha256:aa", size = 1 }
wheels = [
    { url = "https://files.pythonhosted.org/packages/colorama-0.4.6-py2.py3-none-any.whl", hash = "sha256:4f1d9991f5acc0ca119f9d443620b77f9d6b33703e51011c16baf57afb285fc6", size = 25335 },
]

[[package]]
name = "tabulate"
version = "0.9.0"
source = { registry = "https://pypi.org/simple" }
wheels = [
    { url = "https://files.pythonhosted.org/packages/tabulate-0.9.0-py3-none-any.whl", hash = "sha256:024ca478df22e9340661486f85298cff5f6dcdba14f3813e8830015b9ed1948f", size = 35252 },
]

[[package]]
name = "sdist-only"
version = "1.0"
source = { registry = "https://pypi.org/simple" }
sdist = { url = "https://files.pythonhosted.org/sdist-only-1.0.tar.gz", hash = "sha256:bb", size = 1 }
"#;
        let installed = vec![LockedWheel {
            name: "tabulate".into(),
            version: "0.9.0".into(),
            filename: "tabulate-0.9.0-py3-none-any.whl".into(),
            url: String::new(),
            size: 1,
            sha256: Digest::of(b"t"),
        }];
        let error = metadata_wheels(lock, &installed).unwrap_err().to_string();
        assert!(error.contains("sdist-only 1.0 has no wheel"), "{error}");
        let lock = lock
            .split("[[package]]\nname = \"sdist-only\"")
            .next()
            .unwrap();
        let wheels = metadata_wheels(lock, &installed).unwrap();
        assert_eq!(
            wheels.len(),
            1,
            "the plugin itself and tabulate are not metadata"
        );
        assert_eq!(wheels[0].name, "colorama");
        assert_eq!(wheels[0].filename, "colorama-0.4.6-py2.py3-none-any.whl");
        assert_eq!(wheels[0].size, 25335);
    }
}
