//! Deterministic image layers: files sorted by path with their parent directories, mtime 0,
//! uid/gid 0, modes as given, gzip with a fixed header. The same files always give the same
//! bytes, hence the same digest.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

use super::wheel::InstalledFile;
use crate::digest::{Digest, Hasher};
use crate::error::{Error, Result};

/// A layer written to disk.
#[derive(Clone, Debug)]
pub struct BuiltLayer {
    /// Digest of the gzip bytes (the blob).
    pub digest: Digest,
    /// Digest of the uncompressed tar (the config's `diff_id`).
    pub diff_id: Digest,
    pub size: u64,
}

struct Hashing<W> {
    inner: W,
    hasher: Hasher,
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

fn header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(kind);
    header.set_mode(mode);
    header.set_size(size);
    header.set_mtime(0);
    header.set_uid(0);
    header.set_gid(0);
    header
}

/// Writes `files` as a gzip-compressed tar at `out`. Paths must be unique and relative.
pub fn write_layer(files: &[InstalledFile], out: &Path) -> Result<BuiltLayer> {
    let mut entries: BTreeMap<&str, Option<&InstalledFile>> = BTreeMap::new();
    for file in files {
        let mut parent = file.path.as_str();
        while let Some((dir, _)) = parent.rsplit_once('/') {
            entries.entry(dir).or_insert(None);
            parent = dir;
        }
        if entries.insert(&file.path, Some(file)).flatten().is_some() {
            return Err(Error::invalid(format!(
                "layer: `{}` is written twice",
                file.path
            )));
        }
    }
    let io = |e| Error::io(out, e);
    let file = std::fs::File::create(out).map_err(io)?;
    let compressed = Hashing {
        inner: std::io::BufWriter::new(file),
        hasher: Hasher::new(),
    };
    let gzip = flate2::GzBuilder::new()
        .mtime(0)
        .write(compressed, flate2::Compression::fast());
    let mut archive = tar::Builder::new(Hashing {
        inner: gzip,
        hasher: Hasher::new(),
    });
    for (path, file) in &entries {
        match file {
            None => {
                let mut h = header(tar::EntryType::Directory, 0o755, 0);
                archive
                    .append_data(&mut h, format!("{path}/"), std::io::empty())
                    .map_err(io)?;
            }
            Some(file) => {
                let mut h = header(tar::EntryType::Regular, file.mode, file.bytes.len() as u64);
                archive
                    .append_data(&mut h, path, file.bytes.as_slice())
                    .map_err(io)?;
            }
        }
    }
    let uncompressed = archive.into_inner().map_err(io)?;
    let diff_id = uncompressed.hasher.finish();
    let mut compressed = uncompressed.inner.finish().map_err(io)?;
    compressed.flush().map_err(io)?;
    let size = compressed.hasher.len();
    Ok(BuiltLayer {
        digest: compressed.hasher.finish(),
        diff_id,
        size,
    })
}
