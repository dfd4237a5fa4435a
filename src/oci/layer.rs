//! Deterministic image layers: files sorted by path with their parent directories, mtime 0,
//! uid/gid 0, modes as given, gzip with a fixed header. The same files always give the same
//! bytes, hence the same digest.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

use crate::digest::{Digest, Hasher};
use crate::error::{Error, Result};

/// A file to put into a layer: its path inside the image (no leading `/`), mode and bytes.
#[derive(Clone, Debug)]
pub struct LayerFile {
    /// Absolute path inside the image, without the leading `/`.
    pub path: String,
    pub mode: u32,
    pub bytes: Vec<u8>,
}

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
pub fn write_layer(files: &[LayerFile], out: &Path) -> Result<BuiltLayer> {
    write_layer_with(files, &[], out)
}

/// A file of a layer whose content is streamed from a file on disk (a cached wheel).
pub struct FileFromDisk {
    /// Path inside the image, without the leading `/`.
    pub path: String,
    pub mode: u32,
    pub source: std::path::PathBuf,
}

enum Item<'a> {
    Directory,
    Bytes(&'a LayerFile),
    Disk(&'a FileFromDisk),
}

/// [`write_layer`], plus files streamed from disk.
pub fn write_layer_with(
    files: &[LayerFile],
    from_disk: &[FileFromDisk],
    out: &Path,
) -> Result<BuiltLayer> {
    let mut entries: BTreeMap<&str, Item> = BTreeMap::new();
    let items = files
        .iter()
        .map(|f| (f.path.as_str(), Item::Bytes(f)))
        .chain(from_disk.iter().map(|f| (f.path.as_str(), Item::Disk(f))));
    for (path, item) in items {
        let mut parent = path;
        while let Some((dir, _)) = parent.rsplit_once('/') {
            entries.entry(dir).or_insert(Item::Directory);
            parent = dir;
        }
        if let Some(previous) = entries.insert(path, item)
            && !matches!(previous, Item::Directory)
        {
            return Err(Error::invalid(format!("layer: `{path}` is written twice")));
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
    for (path, item) in &entries {
        match item {
            Item::Directory => {
                let mut h = header(tar::EntryType::Directory, 0o755, 0);
                archive
                    .append_data(&mut h, format!("{path}/"), std::io::empty())
                    .map_err(io)?;
            }
            Item::Bytes(file) => {
                let mut h = header(tar::EntryType::Regular, file.mode, file.bytes.len() as u64);
                archive
                    .append_data(&mut h, path, file.bytes.as_slice())
                    .map_err(io)?;
            }
            Item::Disk(file) => {
                let source =
                    std::fs::File::open(&file.source).map_err(|e| Error::io(&file.source, e))?;
                let size = source
                    .metadata()
                    .map_err(|e| Error::io(&file.source, e))?
                    .len();
                let mut h = header(tar::EntryType::Regular, file.mode, size);
                archive
                    .append_data(&mut h, path, std::io::BufReader::new(source))
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
