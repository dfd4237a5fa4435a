//! A plugin's full dependency closure for one target (the daemon's Python and platform),
//! covering both ways the daemon installs:
//!
//! - `requirements.txt` (`uv pip install -r`): resolved for the target by uv, binary wheels only;
//! - `pyproject.toml` + `uv.lock` (`uv sync --no-dev`, re-locking because the lock's URLs
//!   point at PyPI): the re-lock is universal and covers every dependency group, `dev`
//!   included, so every package of the lock must be in the index. Packages the target
//!   installs get their target wheels (resolved by uv from `uv export` of the lock); the
//!   others — needed only on other platforms or Pythons — one wheel each, for their metadata.

use std::path::Path;
use std::process::Command;

use serde::Deserialize;

use super::package::PluginPackage;
use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::python::PythonTarget;
use crate::python::resolve::{self, LockedWheel};
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
            Command::new("uv").current_dir(&dir).args([
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
    } else if package.pyproject().is_some() && package.requirements().is_none() {
        return Err(context(Error::invalid(
            "it has a pyproject.toml but no uv.lock and no requirements.txt; its dependencies cannot be pinned",
        )));
    }
    Ok(closure)
}

/// One wheel for every package of a uv.lock that `installed` does not cover: a pure-Python
/// one when there is, else the first.
fn metadata_wheels(lock: &str, installed: &[LockedWheel]) -> Result<Vec<LockedWheel>> {
    let lock: UvLock =
        toml::from_str(lock).map_err(|e| Error::invalid(format!("uv.lock does not parse: {e}")))?;
    let covered: Vec<String> = installed.iter().map(|w| normalise(&w.name)).collect();
    let mut out = Vec::new();
    for package in lock.package {
        let name = normalise(&package.name);
        // The plugin itself (virtual, editable or a directory) is not an index package.
        if !package.source.contains_key("registry") || covered.contains(&name) {
            continue;
        }
        let version = package.version.unwrap_or_default();
        let pick = package
            .wheels
            .iter()
            .find(|w| w.url.as_deref().is_some_and(|u| u.ends_with("-none-any.whl")))
            .or_else(|| package.wheels.first())
            .ok_or_else(|| {
                Error::invalid(format!(
                    "{} {version} has no wheel in uv.lock (source distributions cannot be built offline)",
                    package.name
                ))
            })?;
        let url = pick
            .url
            .clone()
            .ok_or_else(|| Error::invalid(format!("{name} {version}: no URL in uv.lock")))?;
        let sha256 = pick
            .hash
            .as_deref()
            .and_then(|h| h.strip_prefix("sha256:"))
            .ok_or_else(|| Error::invalid(format!("{name} {version}: no sha256 in uv.lock")))
            .and_then(Digest::from_hex)?;
        let filename = url.rsplit('/').next().unwrap_or_default().to_owned();
        out.push(LockedWheel {
            name: package.name,
            version,
            filename,
            url,
            size: pick.size.unwrap_or(0),
            sha256,
        });
    }
    Ok(out)
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
