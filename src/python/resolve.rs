//! Resolving requirements for a target Python with `uv pip compile --format pylock.toml`
//! (binary wheels only), and checking that every locked wheel fits the target.

use std::path::Path;
use std::process::Command;

use serde::Deserialize;

use super::interpreter::PythonTarget;
use super::wheel::{LockedWheel, normalise};
use crate::digest::Digest;
use crate::error::{Error, Result};

#[derive(Deserialize)]
struct Pylock {
    #[serde(default)]
    packages: Vec<PylockPackage>,
}

#[derive(Deserialize)]
struct PylockPackage {
    name: String,
    version: Option<String>,
    #[serde(default)]
    wheels: Vec<PylockWheel>,
}

#[derive(Deserialize)]
struct PylockWheel {
    url: Option<String>,
    name: Option<String>,
    size: Option<u64>,
    hashes: std::collections::BTreeMap<String, String>,
}

/// The project names a requirements text asks for directly (for `REQUESTED`).
pub fn requested_names(requirements: &str) -> Vec<String> {
    requirements
        .lines()
        .map(|l| l.split('#').next().unwrap_or_default().trim())
        .filter(|l| !l.is_empty() && !l.starts_with('-'))
        .map(|l| {
            let end = l
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.'))
                .unwrap_or(l.len());
            normalise(&l[..end])
        })
        .collect()
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let Ok(b) = u8::from_str_radix(&s[i + 1..i + 3], 16)
        {
            out.push(b);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Runs a uv command — never letting it fetch an interpreter: targets are described by
/// flags — and reports its stderr when it fails; `what` says what it was doing.
pub fn run_uv(command: &mut Command, what: &str) -> Result<()> {
    let output = command
        .arg("--no-python-downloads")
        .output()
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => Error::invalid(
                format!(
                    "`{}` cannot be run: uv resolves Python dependencies at build time. Install it (`pip install uv`), name it in {}, or leave it off PATH and the build fetches uv {} itself",
                    command.get_program().to_string_lossy(),
                    super::uv::UV_ENV,
                    super::uv::PINNED_VERSION
                ),
            ),
            _ => Error::invalid(format!("cannot run uv: {e}")),
        })?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        // uv 0.13 resolves for any target version, but with some interpreter present.
        let hint = if stderr.contains("No interpreter found") {
            "\nuv needs a Python 3 interpreter on the build host to resolve (any version: the target's is given as a flag); install python3 and run again"
        } else {
            ""
        };
        return Err(Error::invalid(format!(
            "{what} failed:\n{}{hint}",
            stderr.trim()
        )));
    }
    Ok(())
}

/// Runs uv to resolve `requirements` (a requirements.txt file) for `target`; `work` holds
/// the lock file.
pub fn resolve(
    requirements: &Path,
    target: &PythonTarget,
    work: &Path,
) -> Result<Vec<LockedWheel>> {
    let lock = work.join("pylock.toml");
    let mut command = super::uv::command();
    command
        .args([
            "pip",
            "compile",
            "--quiet",
            "--no-header",
            "--format",
            "pylock.toml",
        ])
        .args(["--python-version", &target.version])
        .args(["--python-platform", &target.uv_platform])
        .args(["--only-binary", ":all:"])
        .arg("--output-file")
        .arg(&lock)
        .arg(requirements);
    run_uv(
        &mut command,
        &format!(
            "resolving {} for Python {} on {} (binary wheels only)",
            requirements.display(),
            target.version,
            target.uv_platform
        ),
    )?;
    let text = std::fs::read_to_string(&lock).map_err(|e| Error::io(&lock, e))?;
    parse_lock(&text, target)
}

/// Reads a pylock.toml and checks every wheel against the target.
pub fn parse_lock(text: &str, target: &PythonTarget) -> Result<Vec<LockedWheel>> {
    let lock: Pylock = toml::from_str(text)
        .map_err(|e| Error::invalid(format!("pylock.toml from uv does not parse: {e}")))?;
    let mut wheels = Vec::new();
    for package in lock.packages {
        let version = package.version.unwrap_or_default();
        let Some(wheel) = package.wheels.into_iter().next() else {
            return Err(Error::invalid(format!(
                "{} {version}: no wheel for Python {} on {}",
                package.name, target.version, target.uv_platform
            )));
        };
        let url = wheel.url.ok_or_else(|| {
            Error::invalid(format!("{}: the lock gives no download URL", package.name))
        })?;
        let filename = wheel.name.unwrap_or_else(|| {
            percent_decode(
                url.rsplit('/')
                    .next()
                    .unwrap_or_default()
                    .split(['?', '#'])
                    .next()
                    .unwrap_or_default(),
            )
        });
        let sha256 = wheel
            .hashes
            .get("sha256")
            .ok_or_else(|| Error::invalid(format!("{filename}: the lock gives no sha256")))
            .and_then(|h| Digest::from_hex(h))?;
        check_compatible(&filename, target)?;
        wheels.push(LockedWheel {
            name: package.name,
            version,
            filename,
            url,
            size: wheel.size.unwrap_or(0),
            sha256,
        });
    }
    Ok(wheels)
}

/// Refuses a wheel whose tags do not fit the target interpreter and platform.
pub fn check_compatible(filename: &str, target: &PythonTarget) -> Result<()> {
    let stem = filename
        .strip_suffix(".whl")
        .ok_or_else(|| Error::invalid(format!("{filename}: not a wheel file name")))?;
    let parts: Vec<&str> = stem.split('-').collect();
    if parts.len() < 5 {
        return Err(Error::invalid(format!(
            "{filename}: malformed wheel file name"
        )));
    }
    let (python, abi, platforms) = (
        parts[parts.len() - 3],
        parts[parts.len() - 2],
        parts[parts.len() - 1],
    );
    let cp = format!("cp{}", target.version.replace('.', ""));
    let minor: u32 = target
        .version
        .split('.')
        .nth(1)
        .and_then(|m| m.parse().ok())
        .unwrap_or(0);
    let python_ok = python.split('.').any(|tag| {
        tag == "py3"
            || tag == cp
            || (abi == "abi3"
                && tag
                    .strip_prefix("cp3")
                    .and_then(|m| m.parse::<u32>().ok())
                    .is_some_and(|m| m <= minor))
    });
    let (arch, libc) = target
        .uv_platform
        .split_once('-')
        .unwrap_or((target.uv_platform.as_str(), ""));
    let glibc = libc
        .strip_prefix("manylinux_")
        .and_then(|v| v.split_once('_'))
        .and_then(|(a, b)| Some((a.parse::<u32>().ok()?, b.parse::<u32>().ok()?)));
    let platform_ok = platforms.split('.').any(|tag| {
        if tag == "any" {
            return true;
        }
        let needed = match tag {
            t if t == format!("manylinux1_{arch}") => Some((2, 5)),
            t if t == format!("manylinux2010_{arch}") => Some((2, 12)),
            t if t == format!("manylinux2014_{arch}") => Some((2, 17)),
            t => t
                .strip_prefix("manylinux_")
                .and_then(|rest| rest.strip_suffix(&format!("_{arch}")))
                .and_then(|v| v.split_once('_'))
                .and_then(|(a, b)| Some((a.parse::<u32>().ok()?, b.parse::<u32>().ok()?))),
        };
        match (needed, glibc) {
            (Some(needed), Some(have)) => needed <= have,
            _ => libc.contains("musl") && tag.starts_with("musllinux_") && tag.ends_with(arch),
        }
    });
    if python_ok && platform_ok && (abi == "none" || abi == "abi3" || abi == cp) {
        Ok(())
    } else {
        Err(Error::invalid(format!(
            "wheel {filename} ({python}-{abi}-{platforms}) does not fit Python {} on {} ({cp}, {})",
            target.version, target.uv_platform, target.uv_platform
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::python::interpreter::example_target as target;

    #[test]
    fn wheel_tags_are_checked() {
        let t = target();
        assert!(check_compatible("six-1.17.0-py2.py3-none-any.whl", &t).is_ok());
        assert!(
            check_compatible(
                "numpy-2.5.5-cp314-cp314-manylinux_2_27_x86_64.manylinux_2_28_x86_64.whl",
                &t
            )
            .is_ok()
        );
        assert!(
            check_compatible("cryptography-46-cp311-abi3-manylinux2014_x86_64.whl", &t).is_ok()
        );
        assert!(check_compatible("numpy-2.5.5-cp313-cp313-manylinux_2_28_x86_64.whl", &t).is_err());
        assert!(
            check_compatible("numpy-2.5.5-cp314-cp314-manylinux_2_28_aarch64.whl", &t).is_err()
        );
        assert!(check_compatible("numpy-2.5.5-cp314-cp314-manylinux_2_39_x86_64.whl", &t).is_err());
        assert!(check_compatible("numpy-2.5.5-cp314-cp314-win_amd64.whl", &t).is_err());
        assert!(check_compatible("notawheel.tar.gz", &t).is_err());
    }

    #[test]
    fn reads_uv_locks_and_requested_names() {
        let lock = r#"
lock-version = "1.0"
[[packages]]
name = "six"
version = "1.17.0"
wheels = [{ url = "https://files.example/six-1.17.0-py2.py3-none-any.whl", size = 11050, hashes = { sha256 = "4721f391ed90541fddacab5acf947aa0d3dc7d27b2e1e8eda2be8970586c3274" } }]
"#;
        let wheels = parse_lock(lock, &target()).unwrap();
        assert_eq!(wheels[0].filename, "six-1.17.0-py2.py3-none-any.whl");
        assert_eq!(wheels[0].size, 11050);
        let nowheel = "lock-version = \"1.0\"\n[[packages]]\nname = \"x\"\nversion = \"1\"\n";
        assert!(
            parse_lock(nowheel, &target())
                .unwrap_err()
                .to_string()
                .contains("x 1: no wheel")
        );
        assert_eq!(
            requested_names("boto3>=1\n# c\nNumPy ; python_version>'3'\n-r other.txt\n"),
            ["boto3", "numpy"]
        );
    }
}
