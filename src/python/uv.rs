//! The `uv` program the build resolves Python dependencies with: the one on `PATH`, the one
//! `DIFY_BUNDLE_UV` names, or — on a build host with neither — a pinned release fetched from
//! PyPI with the copy engine (size and sha256 fixed here) into the cache.
//!
//! uv publishes its binary as a wheel on PyPI (`uv-VERSION.data/scripts/uv` inside,
//! astral-sh/uv `crates/uv/pyproject.toml` / maturin `bindings = "bin"`, tag 0.9.x onwards),
//! so the same index the build already reaches for wheels carries it.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, OnceLock};

use super::fetch::fetch_wheels;
use super::wheel::LockedWheel;
use crate::copy::CopyOptions;
use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::progress::Progress;
use crate::store::LayoutStore;

/// The uv release fetched when none is installed.
pub const PINNED_VERSION: &str = "0.13.9";

/// Names a uv binary to use instead of looking on `PATH` (a path or a program name).
pub const UV_ENV: &str = "DIFY_BUNDLE_UV";

/// Where the pinned wheel is downloaded from instead of PyPI's file host (a mirror inside a
/// company network); its size and sha256 are checked all the same.
pub const UV_WHEEL_URL_ENV: &str = "DIFY_BUNDLE_UV_WHEEL_URL";

/// The pinned wheel for one machine architecture, as PyPI lists it
/// (https://pypi.org/pypi/uv/0.13.9/json).
struct PinnedWheel {
    arch: &'static str,
    filename: &'static str,
    url: &'static str,
    size: u64,
    sha256: &'static str,
}

const PINNED: &[PinnedWheel] = &[
    PinnedWheel {
        arch: "x86_64",
        filename: "uv-0.13.9-py3-none-manylinux_2_17_x86_64.manylinux2014_x86_64.whl",
        url: "https://files.pythonhosted.org/packages/3d/aa/26d64642d808de4a652579ef950d7cd2d37f080a8babf9c67c6b75fc4c3f/uv-0.13.9-py3-none-manylinux_2_17_x86_64.manylinux2014_x86_64.whl",
        size: 17_606_939,
        sha256: "d7f459fe4fd247d830351c75686d3996ace3c6f3f728eb0e85a30b7ada0cef19",
    },
    PinnedWheel {
        arch: "aarch64",
        filename: "uv-0.13.9-py3-none-manylinux_2_28_aarch64.whl",
        url: "https://files.pythonhosted.org/packages/fe/2f/51a5de367c602592c018a42a23d57fba5f2689fe6c3bf025dcf043b39c61/uv-0.13.9-py3-none-manylinux_2_28_aarch64.whl",
        size: 16_864_124,
        sha256: "ecb6028d79dc96fbeafffe5c8af62a7099487ebc05a701e76714eebcffd06375",
    },
];

static PROGRAM: OnceLock<PathBuf> = OnceLock::new();

/// A `Command` for the uv chosen by [`ensure`] (`uv` from `PATH` when `ensure` did not run).
pub fn command() -> Command {
    Command::new(
        PROGRAM
            .get()
            .map(PathBuf::as_path)
            .unwrap_or(Path::new("uv")),
    )
}

/// Where uv came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UvSource {
    /// `DIFY_BUNDLE_UV`.
    Named(PathBuf),
    /// Found on `PATH`.
    Path(PathBuf),
    /// The pinned release, fetched into (or already in) the cache.
    Pinned(PathBuf),
}

impl UvSource {
    pub fn program(&self) -> &Path {
        match self {
            UvSource::Named(p) | UvSource::Path(p) | UvSource::Pinned(p) => p,
        }
    }
}

/// Chooses the uv every later [`command`] runs: `DIFY_BUNDLE_UV`, else `uv` on `PATH`, else
/// the pinned release under `cache_dir` — downloaded, hash-checked and unpacked on first use.
pub async fn ensure(
    cache_dir: &Path,
    options: &CopyOptions,
    progress: &Arc<dyn Progress>,
) -> Result<UvSource> {
    let source = if let Some(named) = std::env::var_os(UV_ENV).filter(|v| !v.is_empty()) {
        UvSource::Named(PathBuf::from(named))
    } else if let Some(found) = std::env::var_os("PATH").and_then(|p| find_in(&p, "uv")) {
        UvSource::Path(found)
    } else {
        UvSource::Pinned(fetch_pinned(cache_dir, options, progress).await?)
    };
    // A later call (a second build in one process) keeps the first choice.
    let _ = PROGRAM.set(source.program().to_owned());
    Ok(source)
}

/// The first executable file called `name` in a directory of `path` (as `PATH` lists them).
fn find_in(path: &std::ffi::OsStr, name: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    std::env::split_paths(path)
        .map(|dir| dir.join(name))
        .find(|candidate| {
            std::fs::metadata(candidate)
                .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
                .unwrap_or(false)
        })
}

fn pinned_for(arch: &str) -> Result<&'static PinnedWheel> {
    PINNED.iter().find(|w| w.arch == arch).ok_or_else(|| {
        Error::invalid(format!(
            "`uv` is not installed and no uv release is pinned for {arch}; install uv ({PINNED_VERSION} or newer) and put it on PATH, or name it in {UV_ENV}"
        ))
    })
}

/// The pinned uv for this machine, unpacked under `cache_dir/tools/` (reused when there).
async fn fetch_pinned(
    cache_dir: &Path,
    options: &CopyOptions,
    progress: &Arc<dyn Progress>,
) -> Result<PathBuf> {
    let wheel = pinned_for(std::env::consts::ARCH)?;
    let tool_dir = cache_dir
        .join("tools")
        .join(format!("uv-{PINNED_VERSION}-{}", wheel.arch));
    let program = tool_dir.join("uv");
    let wheel_sha = Digest::from_hex(wheel.sha256)?;
    // Unpacked earlier from the checked wheel: the stamp names that wheel's digest.
    let stamp = tool_dir.join("from-wheel");
    if program.is_file()
        && std::fs::read_to_string(&stamp).is_ok_and(|s| s.trim() == wheel_sha.to_string())
    {
        return Ok(program);
    }
    progress.step(&format!(
        "uv is not on PATH: fetching uv {PINNED_VERSION} (pinned) from PyPI"
    ));
    let cache = Arc::new(LayoutStore::create(&cache_dir.join("wheels"))?);
    let url = std::env::var(UV_WHEEL_URL_ENV)
        .ok()
        .filter(|u| !u.is_empty())
        .unwrap_or_else(|| wheel.url.to_owned());
    let locked = LockedWheel {
        name: "uv".into(),
        version: PINNED_VERSION.into(),
        filename: wheel.filename.into(),
        url,
        size: wheel.size,
        sha256: wheel_sha.clone(),
    };
    fetch_wheels(std::slice::from_ref(&locked), &cache, options, progress).await?;
    let blob = cache.blob_path(&wheel_sha);
    let tool_dir_owned = tool_dir.clone();
    tokio::task::spawn_blocking(move || unpack(&blob, &tool_dir_owned, &wheel_sha))
        .await
        .map_err(|e| Error::internal(format!("unpacking uv: {e}")))??;
    Ok(program)
}

/// Writes the wheel's `uv-VERSION.data/scripts/uv` to `tool_dir/uv` (temp name, then rename),
/// executable, and the stamp naming the wheel it came from.
fn unpack(wheel: &Path, tool_dir: &Path, wheel_sha: &Digest) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::PermissionsExt;
    let member = format!("uv-{PINNED_VERSION}.data/scripts/uv");
    let file = std::fs::File::open(wheel).map_err(|e| Error::io(wheel, e))?;
    let mut archive = zip::ZipArchive::new(file)
        .map_err(|e| Error::invalid(format!("{}: not a zip archive: {e}", wheel.display())))?;
    let mut entry = archive
        .by_name(&member)
        .map_err(|e| Error::invalid(format!("{}: no {member} inside: {e}", wheel.display())))?;
    std::fs::create_dir_all(tool_dir).map_err(|e| Error::io(tool_dir, e))?;
    let target = tool_dir.join("uv");
    let temp = tool_dir.join(format!("uv.tmp-{}", std::process::id()));
    let result = (|| {
        let mut out = std::fs::File::create(&temp).map_err(|e| Error::io(&temp, e))?;
        std::io::copy(&mut entry, &mut out)
            .map_err(|e| Error::invalid(format!("{}: reading {member}: {e}", wheel.display())))?;
        out.flush().map_err(|e| Error::io(&temp, e))?;
        std::fs::set_permissions(&temp, std::fs::Permissions::from_mode(0o755))
            .map_err(|e| Error::io(&temp, e))?;
        std::fs::rename(&temp, &target).map_err(|e| Error::io(&target, e))
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
    result?;
    let stamp = tool_dir.join("from-wheel");
    crate::store::layout::write_atomically(&stamp, wheel_sha.to_string().as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_pin_is_a_well_formed_wheel_of_the_pinned_version() {
        for wheel in PINNED {
            assert!(Digest::from_hex(wheel.sha256).is_ok(), "{}", wheel.filename);
            assert!(
                wheel
                    .filename
                    .starts_with(&format!("uv-{PINNED_VERSION}-py3-none-")),
                "{}",
                wheel.filename
            );
            assert!(wheel.url.ends_with(wheel.filename), "{}", wheel.url);
            assert!(wheel.filename.contains(wheel.arch));
        }
        assert!(pinned_for("riscv64").is_err());
    }

    #[test]
    fn only_an_executable_file_on_the_path_counts() {
        use std::os::unix::fs::PermissionsExt;
        let first = tempfile::tempdir().unwrap();
        let second = tempfile::tempdir().unwrap();
        // Not executable, then a directory of that name: both passed over.
        std::fs::write(first.path().join("uv"), "x").unwrap();
        std::fs::create_dir(second.path().join("uv")).unwrap();
        let path = std::env::join_paths([first.path(), second.path()]).unwrap();
        assert_eq!(find_in(&path, "uv"), None);
        std::fs::set_permissions(
            first.path().join("uv"),
            std::fs::Permissions::from_mode(0o755),
        )
        .unwrap();
        assert_eq!(find_in(&path, "uv"), Some(first.path().join("uv")));
    }
}
