//! The installer that crosses the gap with the bundle: an executable stored as a blob of the
//! bundle and named in the signed bundle.json, with the platform its ELF header says it runs on.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use crate::bundle::format::BundleInstaller;
use crate::digest::Hasher;
use crate::error::{Error, Result};
use crate::store::LayoutStore;
use crate::store::layout::BLOBS_DIR;

/// Which executable to carry.
#[derive(Clone, Debug)]
pub struct InstallerOptions {
    pub binary: PathBuf,
    /// Its `--version`, when known (the building binary's own).
    pub version: Option<String>,
}

/// The platform of a Linux executable, from its ELF header: 64-bit little-endian, machine
/// x86-64 (62) or AArch64 (183) — the two the tool is released for (System V gABI, "ELF
/// Header"; machine numbers from the psABI documents of each architecture).
pub fn elf_platform(header: &[u8]) -> std::result::Result<&'static str, String> {
    if header.len() < 20 || &header[..4] != b"\x7fELF" {
        return Err("not an ELF executable".into());
    }
    if header[4] != 2 || header[5] != 1 {
        return Err("not a 64-bit little-endian ELF file".into());
    }
    match u16::from_le_bytes([header[18], header[19]]) {
        62 => Ok("linux/amd64"),
        183 => Ok("linux/arm64"),
        other => Err(format!(
            "an ELF file for machine {other}, not x86-64 or AArch64"
        )),
    }
}

/// Copies the installer into the layout as a blob (hashed while copied, renamed into place
/// under the digest computed) and describes it for bundle.json.
pub fn store(layout: &LayoutStore, options: &InstallerOptions) -> Result<BundleInstaller> {
    let binary = &options.binary;
    let mut file = std::fs::File::open(binary).map_err(|e| Error::io(binary, e))?;
    let mut header = [0u8; 20];
    let read = read_up_to(&mut file, &mut header).map_err(|e| Error::io(binary, e))?;
    let platform = elf_platform(&header[..read]).map_err(|reason| {
        Error::invalid(format!(
            "{}: cannot carry it as the installer: {reason}",
            binary.display()
        ))
        .with_hint("name a dify-bundle binary built for Linux with --installer, or leave it out with --no-installer")
    })?;
    let scratch = layout.scratch_dir()?;
    let temp = scratch.join(format!("installer.tmp-{}", std::process::id()));
    let result = copy_hashing(binary, &header[..read], &mut file, &temp);
    let (digest, size) = match result {
        Ok(done) => done,
        Err(e) => {
            let _ = std::fs::remove_file(&temp);
            return Err(e);
        }
    };
    layout.import_file(&temp, &digest)?;
    Ok(BundleInstaller {
        path: format!("{BLOBS_DIR}/{}", digest.hex()),
        digest,
        size,
        platform: platform.to_owned(),
        version: options.version.clone(),
    })
}

fn read_up_to(file: &mut std::fs::File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match file.read(&mut buf[filled..])? {
            0 => break,
            n => filled += n,
        }
    }
    Ok(filled)
}

fn copy_hashing(
    binary: &Path,
    head: &[u8],
    rest: &mut std::fs::File,
    temp: &Path,
) -> Result<(crate::digest::Digest, u64)> {
    let mut out =
        std::io::BufWriter::new(std::fs::File::create(temp).map_err(|e| Error::io(temp, e))?);
    let mut hasher = Hasher::new();
    hasher.update(head);
    out.write_all(head).map_err(|e| Error::io(temp, e))?;
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = rest.read(&mut buf).map_err(|e| Error::io(binary, e))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        out.write_all(&buf[..n]).map_err(|e| Error::io(temp, e))?;
    }
    let file = out
        .into_inner()
        .map_err(|e| Error::io(temp, e.into_error()))?;
    file.sync_all().map_err(|e| Error::io(temp, e))?;
    let size = hasher.len();
    Ok((hasher.finish(), size))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(class: u8, data: u8, machine: u16) -> Vec<u8> {
        let mut h = b"\x7fELF".to_vec();
        h.extend([class, data, 1, 0]);
        h.extend([0u8; 10]);
        h.extend(machine.to_le_bytes());
        h
    }

    #[test]
    fn the_platform_comes_from_the_elf_header() {
        assert_eq!(elf_platform(&header(2, 1, 62)), Ok("linux/amd64"));
        assert_eq!(elf_platform(&header(2, 1, 183)), Ok("linux/arm64"));
        assert!(elf_platform(&header(1, 1, 3)).is_err());
        assert!(elf_platform(&header(2, 2, 62)).is_err());
        assert!(
            elf_platform(&header(2, 1, 243))
                .unwrap_err()
                .contains("243")
        );
        assert!(elf_platform(b"#!/bin/sh\n").is_err());
        assert!(elf_platform(b"\x7fEL").is_err());
        // This very test binary is what CI builds on.
        let own = std::fs::read(std::env::current_exe().unwrap()).unwrap();
        assert_eq!(
            elf_platform(&own[..20]),
            Ok(match std::env::consts::ARCH {
                "aarch64" => "linux/arm64",
                _ => "linux/amd64",
            })
        );
    }

    #[test]
    fn the_stored_installer_is_the_binary_under_its_digest() {
        let dir = tempfile::tempdir().unwrap();
        let layout = LayoutStore::create(&dir.path().join("bundle")).unwrap();
        let binary = dir.path().join("dify-bundle");
        let mut bytes = header(2, 1, 62);
        bytes.extend((0..3_000_000u32).map(|i| (i % 251) as u8));
        std::fs::write(&binary, &bytes).unwrap();
        let installer = store(
            &layout,
            &InstallerOptions {
                binary: binary.clone(),
                version: Some("0.1.0".into()),
            },
        )
        .unwrap();
        assert_eq!(installer.digest, crate::digest::Digest::of(&bytes));
        assert_eq!(installer.size, bytes.len() as u64);
        assert_eq!(
            std::fs::read(dir.path().join("bundle").join(&installer.path)).unwrap(),
            bytes
        );
        let script = dir.path().join("script");
        std::fs::write(&script, "#!/bin/sh\n").unwrap();
        let refused = store(
            &layout,
            &InstallerOptions {
                binary: script,
                version: None,
            },
        )
        .unwrap_err()
        .to_string();
        assert!(refused.contains("not an ELF executable"), "{refused}");
    }
}
