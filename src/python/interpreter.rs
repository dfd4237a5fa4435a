//! Finding the Python interpreter inside an image, from the image itself: the config's
//! `PATH` and `PYTHON_VERSION`, and the layers' `bin/python3.N` and
//! `lib/python3.N/site-packages`; the C library from dpkg's status file.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::oci::Platform;

/// Where and for what a wheel set is installed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PythonTarget {
    /// `3.14`.
    pub version: String,
    /// `3.14.0` when the image says.
    pub full_version: Option<String>,
    pub prefix: String,
    pub interpreter: String,
    pub scripts: String,
    pub site_packages: String,
    pub include: String,
    /// For `uv --python-platform`: `x86_64-manylinux_2_36`.
    pub uv_platform: String,
}

impl PythonTarget {
    /// A target known only by version and platform: enough to resolve and download wheels
    /// for it, not to install them.
    pub fn for_resolution(version: &str, uv_platform: &str) -> PythonTarget {
        PythonTarget {
            version: version.to_owned(),
            full_version: None,
            prefix: String::new(),
            interpreter: String::new(),
            scripts: String::new(),
            site_packages: String::new(),
            include: String::new(),
            uv_platform: uv_platform.to_owned(),
        }
    }
}

/// What the layers say about Pythons and the C library.
#[derive(Default)]
struct Findings {
    /// prefix → versions with a site-packages directory.
    site: BTreeMap<String, BTreeSet<String>>,
    /// Interpreter paths (`/opt/python/bin/python3.14`, `/opt/python/bin/python3`).
    binaries: BTreeSet<String>,
    glibc: Option<String>,
    musl: bool,
}

fn scan_layer(path: &std::path::Path, media_type: &str, findings: &mut Findings) -> Result<()> {
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let reader: Box<dyn Read> = if media_type.ends_with("gzip") {
        Box::new(flate2::read::GzDecoder::new(std::io::BufReader::new(file)))
    } else if media_type.ends_with(".tar") || media_type.ends_with("rootfs.diff.tar") {
        Box::new(std::io::BufReader::new(file))
    } else {
        return Err(Error::invalid(format!(
            "layer {}: media type `{media_type}` cannot be read (gzip or plain tar only)",
            path.display()
        )));
    };
    let mut archive = tar::Archive::new(reader);
    let bad = |e: std::io::Error| {
        Error::invalid(format!("layer {}: unreadable tar: {e}", path.display()))
    };
    for entry in archive.entries().map_err(bad)? {
        let mut entry = entry.map_err(bad)?;
        let name = entry.path().map_err(bad)?.to_string_lossy().into_owned();
        let name = format!("/{}", name.trim_start_matches("./").trim_start_matches('/'));
        let name = name.trim_end_matches('/').to_owned();
        if let Some((prefix, rest)) = name.split_once("/lib/python3.")
            && let Some((minor, tail)) = rest.split_once('/')
            && (tail == "site-packages" || tail.starts_with("site-packages/"))
            && minor.bytes().all(|b| b.is_ascii_digit())
        {
            findings
                .site
                .entry(prefix.to_owned())
                .or_default()
                .insert(format!("3.{minor}"));
        }
        if let Some((_, file)) = name.rsplit_once("/bin/")
            && (file == "python3"
                || file
                    .strip_prefix("python3.")
                    .is_some_and(|m| !m.is_empty() && m.bytes().all(|b| b.is_ascii_digit())))
        {
            findings.binaries.insert(name.clone());
        }
        if name.contains("/ld-musl-") {
            findings.musl = true;
        }
        if name == "/var/lib/dpkg/status" {
            let mut text = String::new();
            entry.read_to_string(&mut text).map_err(bad)?;
            findings.glibc = glibc_from_dpkg(&text).or(findings.glibc.take());
        }
    }
    Ok(())
}

/// The libc6 package's upstream version from a dpkg status file (`2.36`).
fn glibc_from_dpkg(status: &str) -> Option<String> {
    status.split("\n\n").find_map(|stanza| {
        let mut lines = stanza.lines();
        lines
            .clone()
            .any(|l| l.trim() == "Package: libc6")
            .then(|| {
                lines.find_map(|l| l.strip_prefix("Version:")).map(|v| {
                    v.trim()
                        .split(['-', '+', '~'])
                        .next()
                        .unwrap_or_default()
                        .to_owned()
                })
            })?
    })
}

fn env_value(config: &serde_json::Value, key: &str) -> Option<String> {
    config["config"]["Env"].as_array()?.iter().find_map(|v| {
        v.as_str()?
            .strip_prefix(&format!("{key}="))
            .map(str::to_owned)
    })
}

fn uv_platform(platform: &Platform, findings: &Findings) -> Result<String> {
    let arch = match platform.architecture.as_str() {
        "amd64" => "x86_64",
        "arm64" => "aarch64",
        other => {
            return Err(Error::invalid(format!(
                "no Python wheel platform for architecture `{other}`"
            )));
        }
    };
    if findings.musl && findings.glibc.is_none() {
        return Ok(format!("{arch}-unknown-linux-musl"));
    }
    let glibc = findings.glibc.as_deref().unwrap_or("2.28");
    let (major, minor) = glibc.split_once('.').unwrap_or(("2", "28"));
    Ok(format!("{arch}-manylinux_{major}_{minor}"))
}

/// Finds the image's Python from its config (JSON) and layers (paths and media types,
/// bottom first).
pub fn detect(
    config: &serde_json::Value,
    layers: &[(PathBuf, String)],
    platform: &Platform,
) -> Result<PythonTarget> {
    let mut findings = Findings::default();
    for (path, media_type) in layers {
        scan_layer(path, media_type, &mut findings)?;
    }
    let path_dirs: Vec<String> = env_value(config, "PATH")
        .unwrap_or_default()
        .split(':')
        .map(|d| d.trim_end_matches('/').to_owned())
        .collect();
    // A prefix qualifies when it has site-packages and an interpreter for the same version.
    let usable = |prefix: &str| -> Option<String> {
        let versions = findings.site.get(prefix)?;
        versions
            .iter()
            .rev()
            .find(|v| {
                findings
                    .binaries
                    .contains(&format!("{prefix}/bin/python{v}"))
                    || findings.binaries.contains(&format!("{prefix}/bin/python3"))
            })
            .cloned()
    };
    // The first PATH directory with one wins; failing that, the only one in the image
    // (dify-sandbox runs /opt/python/bin/python3 by its full path).
    let on_path = path_dirs
        .iter()
        .filter_map(|dir| dir.strip_suffix("/bin"))
        .find_map(|prefix| usable(prefix).map(|v| (prefix.to_owned(), v)));
    let anywhere: Vec<(String, String)> = findings
        .site
        .keys()
        .filter_map(|prefix| usable(prefix).map(|v| (prefix.clone(), v)))
        .collect();
    let chosen = on_path.or_else(|| (anywhere.len() == 1).then(|| anywhere[0].clone()));
    let Some((prefix, version)) = chosen else {
        let seen: Vec<String> = findings
            .site
            .iter()
            .map(|(p, v)| format!("{p} ({})", v.iter().cloned().collect::<Vec<_>>().join(", ")))
            .collect();
        return Err(Error::invalid(format!(
            "no single Python interpreter with a site-packages directory on the image's PATH ({}) or elsewhere; Python prefixes seen: {}",
            path_dirs.join(":"),
            if seen.is_empty() {
                "none".to_owned()
            } else {
                seen.join("; ")
            }
        )));
    };
    let scripts = format!("{prefix}/bin");
    let interpreter = if findings.binaries.contains(&format!("{scripts}/python3")) {
        format!("{scripts}/python3")
    } else {
        format!("{scripts}/python{version}")
    };
    let full_version = env_value(config, "PYTHON_VERSION").filter(|v| v.starts_with(&version));
    Ok(PythonTarget {
        site_packages: format!("{prefix}/lib/python{version}/site-packages"),
        include: format!("{prefix}/include/python{version}"),
        uv_platform: uv_platform(platform, &findings)?,
        version,
        full_version,
        prefix,
        interpreter,
        scripts,
    })
}

/// Only the platform tag of an image (`x86_64-manylinux_2_39`), read from its C library: for
/// images whose Python is known but laid out as a distribution lays it out (Ubuntu's
/// `dist-packages`, as in the plugin daemon's `-local` image: `FROM ubuntu:24.04` with
/// `python3.12` from apt, docker/local.dockerfile, langgenius/dify-plugin-daemon 0.5.3 and
/// 0.6.10), which `detect` does not take for a target to install into.
pub fn platform_tag(layers: &[(PathBuf, String)], platform: &Platform) -> Result<String> {
    let mut findings = Findings::default();
    for (path, media_type) in layers {
        scan_layer(path, media_type, &mut findings)?;
    }
    uv_platform(platform, &findings)
}

/// A target laid out like dify-sandbox ≥ 0.2.13, for tests.
#[cfg(test)]
pub fn example_target() -> PythonTarget {
    PythonTarget {
        version: "3.14".into(),
        full_version: None,
        prefix: "/opt/python".into(),
        interpreter: "/opt/python/bin/python3".into(),
        scripts: "/opt/python/bin".into(),
        site_packages: "/opt/python/lib/python3.14/site-packages".into(),
        include: "/opt/python/include/python3.14".into(),
        uv_platform: "x86_64-manylinux_2_36".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layer(dir: &std::path::Path, name: &str, paths: &[&str]) -> (PathBuf, String) {
        let path = dir.join(name);
        let gz = flate2::write::GzEncoder::new(
            std::fs::File::create(&path).unwrap(),
            flate2::Compression::fast(),
        );
        let mut archive = tar::Builder::new(gz);
        for p in paths {
            let mut header = tar::Header::new_gnu();
            header.set_size(1);
            header.set_mode(0o755);
            archive.append_data(&mut header, p, &b"x"[..]).unwrap();
        }
        archive.into_inner().unwrap().finish().unwrap();
        (path, crate::oci::OCI_LAYER_GZIP.to_owned())
    }

    #[test]
    fn finds_the_interpreter_on_path_or_the_only_one() {
        let dir = tempfile::tempdir().unwrap();
        let layers = vec![
            layer(
                dir.path(),
                "a",
                &[
                    "usr/bin/python3.11",
                    "usr/lib/python3.11/site-packages/x.py",
                    "var/lib/dpkg/status",
                ],
            ),
            layer(
                dir.path(),
                "b",
                &[
                    "opt/python/bin/python3",
                    "opt/python/bin/python3.14",
                    "opt/python/lib/python3.14/site-packages/y.py",
                ],
            ),
        ];
        let amd64: Platform = "linux/amd64".parse().unwrap();
        let config = serde_json::json!({"config": {"Env": ["PATH=/opt/python/bin:/usr/bin", "PYTHON_VERSION=3.14.0"]}});
        let target = detect(&config, &layers, &amd64).unwrap();
        assert_eq!(target.interpreter, "/opt/python/bin/python3");
        assert_eq!(
            target.site_packages,
            "/opt/python/lib/python3.14/site-packages"
        );
        assert_eq!(target.full_version.as_deref(), Some("3.14.0"));
        assert_eq!(target.uv_platform, "x86_64-manylinux_2_28");
        let config = serde_json::json!({"config": {"Env": ["PATH=/usr/bin"]}});
        assert_eq!(detect(&config, &layers, &amd64).unwrap().version, "3.11");
        // Two Pythons, neither on PATH: ambiguous, and the error lists both.
        let config = serde_json::json!({"config": {"Env": ["PATH=/bin"]}});
        let err = detect(&config, &layers, &amd64).unwrap_err().to_string();
        assert!(
            err.contains("/opt/python (3.14)") && err.contains("/usr (3.11)"),
            "{err}"
        );
        let only = &layers[1..];
        assert_eq!(detect(&config, only, &amd64).unwrap().prefix, "/opt/python");
        let arm: Platform = "linux/arm64".parse().unwrap();
        assert!(
            detect(&config, only, &arm)
                .unwrap()
                .uv_platform
                .starts_with("aarch64-")
        );
    }

    #[test]
    fn reads_glibc_from_dpkg_status() {
        let status = "Package: bash\nVersion: 5.2\n\nPackage: libc6\nStatus: install ok installed\nVersion: 2.36-9+deb12u7\n";
        assert_eq!(glibc_from_dpkg(status).as_deref(), Some("2.36"));
        assert_eq!(glibc_from_dpkg("Package: x\nVersion: 1\n"), None);
    }
}
