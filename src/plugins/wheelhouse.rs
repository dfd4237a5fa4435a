//! The wheelhouse: every wheel the bundled plugins need, with a PEP 503 "simple" index over
//! them, served to uv as a `file://` index. uv accepts `file://` index URLs, so the daemon's
//! own install commands — `uv pip install -i $PIP_MIRROR_URL -r requirements.txt` and
//! `uv sync --no-dev -i $PIP_MIRROR_URL` — work inside the closed VPC with no server at all:
//! the wheelhouse is a layer of a derived plugin-daemon image and `PIP_MIRROR_URL` points at it.

use std::collections::BTreeMap;
use std::path::Path;

use crate::error::{Error, Result};
use crate::oci::layer::FileFromDisk;
use crate::oci::layer::LayerFile;
use crate::python::LockedWheel;
use crate::python::wheel::normalise;
use crate::store::LayoutStore;

/// Where the wheelhouse lives in the derived plugin-daemon image.
pub const IMAGE_ROOT: &str = "app/wheelhouse";

/// The daemon settings that make its installs use the wheelhouse, and only it.
pub fn daemon_environment() -> Vec<(String, String)> {
    [
        ("PIP_MIRROR_URL", format!("file:///{IMAGE_ROOT}/simple")),
        // uv.lock URLs point at PyPI: re-lock against the wheelhouse instead.
        // (0.6.10 reads it; 0.5.3 never passes `--frozen`.) The stack switches off the
        // mirror probe itself, for the daemons that have one.
        ("PLUGIN_IGNORE_UV_LOCK", "true".to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect()
}

/// A set of wheels, each once.
#[derive(Clone, Debug, Default)]
pub struct Wheelhouse {
    wheels: BTreeMap<String, LockedWheel>,
}

/// Percent-encodes a file name for an href (PEP 503 links are URLs).
fn href(name: &str) -> String {
    name.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"._-".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

fn html(title: &str, links: &[(String, String)]) -> Vec<u8> {
    let mut page = format!(
        "<!DOCTYPE html>\n<html>\n<head><meta name=\"pypi:repository-version\" content=\"1.0\"><title>{title}</title></head>\n<body>\n"
    );
    for (url, text) in links {
        page.push_str(&format!("<a href=\"{url}\">{text}</a><br>\n"));
    }
    page.push_str("</body>\n</html>\n");
    page.into_bytes()
}

impl Wheelhouse {
    /// Adds wheels; the same file twice must be the same bytes.
    pub fn add(&mut self, wheels: &[LockedWheel]) -> Result<()> {
        for wheel in wheels {
            if let Some(known) = self.wheels.get(&wheel.filename)
                && known.sha256 != wheel.sha256
            {
                return Err(Error::invalid(format!(
                    "{}: two different files by that name ({} and {})",
                    wheel.filename, known.sha256, wheel.sha256
                )));
            }
            self.wheels.insert(wheel.filename.clone(), wheel.clone());
        }
        Ok(())
    }

    pub fn wheels(&self) -> Vec<LockedWheel> {
        self.wheels.values().cloned().collect()
    }

    pub fn is_empty(&self) -> bool {
        self.wheels.is_empty()
    }

    /// The index pages under `root` (`simple/index.html`, `simple/<project>/index.html`),
    /// linking to `files/<wheel>` with its sha256.
    pub fn index_files(&self, root: &str) -> Vec<LayerFile> {
        let mut projects: BTreeMap<String, Vec<&LockedWheel>> = BTreeMap::new();
        for wheel in self.wheels.values() {
            projects
                .entry(normalise(&wheel.name).replace('_', "-"))
                .or_default()
                .push(wheel);
        }
        let mut files = Vec::new();
        let top: Vec<(String, String)> = projects
            .keys()
            .map(|p| (format!("{p}/"), p.clone()))
            .collect();
        files.push(LayerFile {
            path: format!("{root}/simple/index.html"),
            mode: 0o644,
            bytes: html("Simple index", &top),
        });
        for (project, wheels) in &projects {
            let links: Vec<(String, String)> = wheels
                .iter()
                .map(|w| {
                    (
                        format!(
                            "../../files/{}#sha256={}",
                            href(&w.filename),
                            w.sha256.hex()
                        ),
                        w.filename.clone(),
                    )
                })
                .collect();
            files.push(LayerFile {
                path: format!("{root}/simple/{project}/index.html"),
                mode: 0o644,
                bytes: html(&format!("Links for {project}"), &links),
            });
        }
        files
    }

    /// The wheels under `root/files/`, streamed from the wheel cache.
    pub fn wheel_files(&self, cache: &LayoutStore, root: &str) -> Vec<FileFromDisk> {
        self.wheels
            .values()
            .map(|w| FileFromDisk {
                path: format!("{root}/files/{}", w.filename),
                mode: 0o644,
                source: cache.blob_path(&w.sha256),
            })
            .collect()
    }

    /// Writes the wheelhouse into a directory (`files/`, `simple/`).
    pub fn write_dir(&self, cache: &LayoutStore, dir: &Path) -> Result<()> {
        for file in self.index_files("") {
            let path = dir.join(file.path.trim_start_matches('/'));
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
            }
            std::fs::write(&path, &file.bytes).map_err(|e| Error::io(&path, e))?;
        }
        let files = dir.join("files");
        std::fs::create_dir_all(&files).map_err(|e| Error::io(&files, e))?;
        for file in self.wheel_files(cache, "") {
            let path = dir.join(file.path.trim_start_matches('/'));
            std::fs::copy(&file.source, &path).map_err(|e| Error::io(&path, e))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::digest::Digest;

    fn wheel(name: &str, filename: &str, content: &[u8]) -> LockedWheel {
        LockedWheel {
            name: name.into(),
            version: "1".into(),
            filename: filename.into(),
            url: String::new(),
            size: content.len() as u64,
            sha256: Digest::of(content),
        }
    }

    #[test]
    fn pep_503_pages_link_every_wheel_with_its_hash() {
        let mut house = Wheelhouse::default();
        house
            .add(&[
                wheel(
                    "Typing_Extensions",
                    "typing_extensions-4.0-py3-none-any.whl",
                    b"a",
                ),
                wheel("torch", "torch-2.0+cpu-cp312-cp312-linux_x86_64.whl", b"b"),
            ])
            .unwrap();
        house
            .add(&[wheel(
                "Typing_Extensions",
                "typing_extensions-4.0-py3-none-any.whl",
                b"a",
            )])
            .unwrap();
        assert!(
            house
                .add(&[wheel(
                    "x",
                    "typing_extensions-4.0-py3-none-any.whl",
                    b"other"
                )])
                .is_err()
        );
        let files = house.index_files("app/wheelhouse");
        let page = |path: &str| {
            String::from_utf8(
                files
                    .iter()
                    .find(|f| f.path == path)
                    .unwrap_or_else(|| panic!("{path}"))
                    .bytes
                    .clone(),
            )
            .unwrap()
        };
        assert!(
            page("app/wheelhouse/simple/index.html").contains("<a href=\"typing-extensions/\">")
        );
        let typing = page("app/wheelhouse/simple/typing-extensions/index.html");
        assert!(typing.contains(&format!(
            "../../files/typing_extensions-4.0-py3-none-any.whl#sha256={}",
            Digest::of(b"a").hex()
        )));
        assert!(page("app/wheelhouse/simple/torch/index.html").contains("torch-2.0%2Bcpu-cp312"));
        assert_eq!(files.len(), 3);
    }
}

/// What one plugin contributes to a wheelhouse.
#[derive(Clone, Debug, serde::Serialize)]
pub struct PluginWheels {
    pub identifier: String,
    /// Wheels the target installs.
    pub install: Vec<String>,
    /// Wheels present only for the re-lock's metadata.
    pub metadata: Vec<String>,
}

/// Resolves every plugin's closure for `target`, downloads the wheels into `cache`, and
/// returns the wheelhouse over them.
pub async fn gather(
    packages: &[super::PluginPackage],
    target: &crate::python::PythonTarget,
    cache: &std::sync::Arc<LayoutStore>,
    copy: &crate::copy::CopyOptions,
    progress: &std::sync::Arc<dyn crate::progress::Progress>,
    work: &Path,
) -> Result<(Wheelhouse, Vec<PluginWheels>)> {
    let mut house = Wheelhouse::default();
    let mut report = Vec::new();
    for package in packages {
        progress.step(&format!(
            "resolving the dependencies of {} for Python {} on {}",
            package.identifier(),
            target.version,
            target.uv_platform
        ));
        let closure = super::closure::closure(package, target, work)?;
        house.add(&closure.install)?;
        house.add(&closure.metadata)?;
        report.push(PluginWheels {
            identifier: package.identifier(),
            install: closure.install.iter().map(|w| w.filename.clone()).collect(),
            metadata: closure
                .metadata
                .iter()
                .map(|w| w.filename.clone())
                .collect(),
        });
    }
    // Fetched, every wheel's size is known (a mirror's lock may have lacked some).
    let fetched =
        crate::python::fetch::fetch_wheels(&house.wheels(), cache, copy, progress).await?;
    for wheel in fetched {
        house.wheels.insert(wheel.filename.clone(), wheel);
    }
    Ok((house, report))
}
