//! Reading media parts in place: a bundle split into `NAME.partNNN.tar` files that fit the media. Files are
//! split at file boundaries, a blob larger than a part into numbered chunks; every part
//! carries bundle.json, its signature and a packing list (`pack.json`), so each part can be
//! checked alone on arrival. Parts are read in place by offset, never re-assembled on disk.

use std::collections::BTreeMap;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::BundleSource;
use crate::bundle::format::{BUNDLE_FILE, SIGNATURE_FILE, is_safe_relative};
use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::oci::Descriptor;
use crate::store::BlobStream;

pub const PACK_FILE: &str = "pack.json";
pub const PARTS_FORMAT_V1: &str = "dify-bundle-parts/v1";
pub const BLOCK: u64 = 512;
/// Room kept in each part for its packing list: a base plus this much per entry.
pub const PACK_BASE: u64 = 4096;
pub const PACK_PER_ENTRY: u64 = 512;

/// The packing list of one part.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PackList {
    pub format: String,
    pub bundle: String,
    /// sha256 of the bundle.json every part carries: parts of one bundle share it.
    pub bundle_sha256: String,
    pub part: u32,
    pub parts: u32,
    pub entries: Vec<PackEntry>,
}

/// A whole file, or one chunk of a file, stored in a part.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PackEntry {
    /// Name of the tar entry.
    pub entry: String,
    /// The bundle file it belongs to.
    pub path: String,
    /// Where the chunk starts in that file.
    pub offset: u64,
    pub length: u64,
    /// sha256 of this entry's bytes.
    pub sha256: String,
}

pub fn part_name(bundle: &str, part: u32) -> String {
    format!("{bundle}.part{part:03}.tar")
}

pub fn padded(n: u64) -> u64 {
    n.div_ceil(BLOCK) * BLOCK
}

/// Where one entry's bytes are inside a part file.
#[derive(Clone, Copy, Debug)]
struct Span {
    offset: u64,
    size: u64,
}

struct Part {
    path: PathBuf,
    list: PackList,
    spans: BTreeMap<String, Span>,
}

/// A piece of a bundle file inside a part.
#[derive(Clone, Debug)]
struct Piece {
    part: usize,
    span: Span,
    file_offset: u64,
}

/// One entry of a part, as [`PartsSource::entries`] yields it.
pub struct PartEntry<'a> {
    pub part: &'a Path,
    pub entry: &'a PackEntry,
    /// Where the entry's bytes start inside the part file, and how many there are.
    pub offset: u64,
    pub size: u64,
}

/// Reads parts in place.
pub struct PartsSource {
    parts: Vec<Part>,
    files: BTreeMap<String, Vec<Piece>>,
    /// Only some parts are here (one part checked on its own).
    partial: bool,
}

fn part_error(path: &Path, why: impl std::fmt::Display) -> Error {
    Error::invalid(format!("{}: {why}", path.display()))
}

fn read_span(path: &Path, span: Span) -> Result<Vec<u8>> {
    let mut file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    file.seek(SeekFrom::Start(span.offset))
        .map_err(|e| Error::io(path, e))?;
    let mut bytes = vec![0; span.size as usize];
    file.read_exact(&mut bytes)
        .map_err(|e| Error::io(path, e))?;
    Ok(bytes)
}

fn index_part(path: &Path) -> Result<Part> {
    // Anything but a regular file is refused before it is opened: opening a FIFO would
    // wait for a writer forever, and a device or symlink is no part.
    let not_regular = || {
        part_error(
            path,
            "not a regular file (a FIFO, device, directory or symlink); refusing it",
        )
    };
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.is_file() => {}
        Ok(_) => return Err(not_regular()),
        Err(e) => return Err(Error::io(path, e)),
    }
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let meta = file.metadata().map_err(|e| Error::io(path, e))?;
    if !meta.is_file() {
        return Err(not_regular());
    }
    let length = meta.len();
    let mut archive = tar::Archive::new(file);
    let unreadable = |e: std::io::Error| {
        part_error(
            path,
            format!(
                "not a readable part (truncated or damaged?): {}",
                crate::units::escape(&e.to_string())
            ),
        )
    };
    let mut spans = BTreeMap::new();
    for entry in archive.entries_with_seek().map_err(unreadable)? {
        let entry = entry.map_err(unreadable)?;
        let name = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let shown = crate::units::escape(&name);
        let kind = entry.header().entry_type();
        if !kind.is_file() {
            return Err(part_error(
                path,
                format!("entry `{shown}` is a {kind:?}, not a regular file; refusing the part"),
            ));
        }
        if !is_safe_relative(&name) {
            return Err(part_error(
                path,
                format!("entry `{shown}` is not a safe relative path; refusing the part"),
            ));
        }
        let span = Span {
            offset: entry.raw_file_position(),
            size: entry.size(),
        };
        if span
            .offset
            .checked_add(span.size)
            .is_none_or(|end| end > length)
        {
            return Err(part_error(
                path,
                format!("truncated: entry `{shown}` ends past the end of the file"),
            ));
        }
        if spans.insert(name.clone(), span).is_some() {
            return Err(part_error(path, format!("entry `{shown}` appears twice")));
        }
    }
    let pack = spans.get(PACK_FILE).ok_or_else(|| {
        part_error(
            path,
            format!("no {PACK_FILE}: not a dify-bundle part (or truncated)"),
        )
    })?;
    let list: PackList = serde_json::from_slice(&read_span(path, *pack)?)
        .map_err(|e| part_error(path, format!("malformed {PACK_FILE}: {e}")))?;
    if list.format != PARTS_FORMAT_V1 {
        return Err(part_error(
            path,
            format!("part format `{}` is not supported", list.format),
        ));
    }
    let bundle = spans
        .get(BUNDLE_FILE)
        .ok_or_else(|| part_error(path, format!("no {BUNDLE_FILE}")))?;
    let actual = Digest::of(&read_span(path, *bundle)?);
    if actual.hex() != list.bundle_sha256 {
        return Err(part_error(
            path,
            format!("its {PACK_FILE} was made for another bundle.json"),
        ));
    }
    for entry in &list.entries {
        if !spans.contains_key(&entry.entry) || !is_safe_relative(&entry.path) {
            return Err(part_error(
                path,
                format!(
                    "{PACK_FILE} names `{}`, which the part does not hold",
                    crate::units::escape(&entry.entry)
                ),
            ));
        }
        if entry.offset.checked_add(entry.length).is_none() {
            return Err(part_error(
                path,
                format!(
                    "{PACK_FILE}: entry `{}` has offset {} and length {}, which overflow; \
                     refusing the part",
                    crate::units::escape(&entry.entry),
                    entry.offset,
                    entry.length
                ),
            ));
        }
    }
    for name in spans.keys() {
        let known = name == BUNDLE_FILE || name == SIGNATURE_FILE || name == PACK_FILE;
        if !known && !list.entries.iter().any(|e| &e.entry == name) {
            return Err(part_error(
                path,
                format!(
                    "entry `{}` is not in its {PACK_FILE}",
                    crate::units::escape(name)
                ),
            ));
        }
    }
    Ok(Part {
        path: path.to_owned(),
        list,
        spans,
    })
}

impl PartsSource {
    /// Opens every `*.partNNN.tar` in a folder; all parts must be there.
    pub fn open_folder(dir: &Path) -> Result<PartsSource> {
        let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(|e| Error::io(dir, e))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.ends_with(".tar") && n.contains(".part"))
            })
            .collect();
        paths.sort();
        if paths.is_empty() {
            return Err(Error::invalid(format!(
                "{}: neither a bundle directory (no {BUNDLE_FILE}) nor a folder of parts (no *.partNNN.tar)",
                dir.display()
            )));
        }
        PartsSource::open_parts(&paths, false)
    }

    /// Opens the given parts; `partial` accepts a subset (each part checked alone).
    pub fn open_parts(paths: &[PathBuf], partial: bool) -> Result<PartsSource> {
        let mut parts: Vec<Part> = paths.iter().map(|p| index_part(p)).collect::<Result<_>>()?;
        parts.sort_by_key(|p| p.list.part);
        let first = &parts[0];
        for part in &parts[1..] {
            if part.list.bundle_sha256 != first.list.bundle_sha256 {
                return Err(part_error(
                    &part.path,
                    format!(
                        "belongs to another bundle (`{}`, bundle.json sha256 {}) than {} (`{}`, {})",
                        part.list.bundle,
                        part.list.bundle_sha256,
                        first.path.display(),
                        first.list.bundle,
                        first.list.bundle_sha256
                    ),
                ));
            }
        }
        // Sorted by number: a number claimed twice (a copy such as `x.part002 (1).tar`, or
        // parts of two packings) sits side by side.
        for pair in parts.windows(2) {
            if pair[0].list.part == pair[1].list.part {
                return Err(part_error(
                    &pair[1].path,
                    format!(
                        "claims to be part {} of {}, as {} does; keep one of them",
                        pair[1].list.part,
                        pair[1].list.parts,
                        pair[0].path.display()
                    ),
                ));
            }
        }
        if !partial {
            let present: Vec<u32> = parts.iter().map(|p| p.list.part).collect();
            let missing: Vec<String> = (1..=first.list.parts)
                .filter(|n| !present.contains(n))
                .map(|n| part_name(&first.list.bundle, n))
                .collect();
            if !missing.is_empty() {
                return Err(Error::invalid(format!(
                    "{} of {} parts missing: {}",
                    missing.len(),
                    first.list.parts,
                    missing.join(", ")
                )));
            }
        }
        let mut files: BTreeMap<String, Vec<Piece>> = BTreeMap::new();
        for (index, part) in parts.iter().enumerate() {
            for entry in &part.list.entries {
                files.entry(entry.path.clone()).or_default().push(Piece {
                    part: index,
                    span: part.spans[&entry.entry],
                    file_offset: entry.offset,
                });
            }
        }
        for (path, pieces) in &mut files {
            pieces.sort_by_key(|p| p.file_offset);
            let mut next = 0;
            for piece in pieces.iter() {
                if piece.file_offset != next && !partial {
                    return Err(Error::invalid(format!(
                        "{path}: the parts hold bytes from {} but not from {next}",
                        piece.file_offset
                    )));
                }
                next = piece.file_offset + piece.span.size;
            }
        }
        Ok(PartsSource {
            parts,
            files,
            partial,
        })
    }

    /// Where a bundle file's bytes are: `(part file, offset, length)` in order.
    fn ranges(&self, path: &str) -> Option<Vec<(PathBuf, u64, u64)>> {
        if path == BUNDLE_FILE || path == SIGNATURE_FILE {
            let part = &self.parts[0];
            return part
                .spans
                .get(path)
                .map(|span| vec![(part.path.clone(), span.offset, span.size)]);
        }
        self.files.get(path).map(|pieces| {
            pieces
                .iter()
                .map(|p| (self.parts[p.part].path.clone(), p.span.offset, p.span.size))
                .collect()
        })
    }

    pub fn is_partial(&self) -> bool {
        self.partial
    }

    /// Every entry of every part, in order: the part's file, its packing-list record and
    /// where the entry's bytes are inside the part.
    pub fn entries(&self) -> impl Iterator<Item = PartEntry<'_>> {
        self.parts.iter().flat_map(|part| {
            part.list.entries.iter().map(move |entry| {
                let span = part.spans[&entry.entry];
                PartEntry {
                    part: &part.path,
                    entry,
                    offset: span.offset,
                    size: span.size,
                }
            })
        })
    }
}

#[async_trait::async_trait]
impl BundleSource for PartsSource {
    fn describe(&self) -> String {
        match self.parts.as_slice() {
            [one] => one.path.display().to_string(),
            parts => format!("{} parts of {}", parts.len(), parts[0].list.bundle),
        }
    }

    async fn list(&self) -> Result<Vec<(String, u64)>> {
        let mut out: Vec<(String, u64)> = self
            .files
            .iter()
            .map(|(path, pieces)| (path.clone(), pieces.iter().map(|p| p.span.size).sum()))
            .collect();
        for fixed in [BUNDLE_FILE, SIGNATURE_FILE] {
            if let Some(span) = self.parts[0].spans.get(fixed) {
                out.push((fixed.to_owned(), span.size));
            }
        }
        out.sort();
        Ok(out)
    }

    async fn open(&self, path: &str) -> Result<Option<BlobStream>> {
        let what = format!("{path} in {}", self.describe());
        Ok(self
            .ranges(path)
            .map(|ranges| super::stream_ranges(ranges, what)))
    }

    async fn open_verified(
        &self,
        path: &str,
        blob: &Descriptor,
        skip: u64,
        what: String,
    ) -> Result<Option<BlobStream>> {
        Ok(self
            .ranges(path)
            .map(|ranges| super::stream_ranges_verified(ranges, skip, blob.clone(), what)))
    }

    async fn hash(&self, path: &str, advanced: super::Advanced) -> Result<Option<Digest>> {
        match self.ranges(path) {
            Some(ranges) => Ok(Some(super::hash_ranges(ranges, advanced).await?)),
            None => Ok(None),
        }
    }
}
