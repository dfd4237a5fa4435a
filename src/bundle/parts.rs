//! Media parts: a bundle split into `NAME.partNNN.tar` files that fit the media. Files are
//! split at file boundaries, a blob larger than a part into numbered chunks; every part
//! carries bundle.json, its signature and a packing list (`pack.json`), so each part can be
//! checked alone on arrival. Parts are read in place by offset, never re-assembled on disk.

use std::collections::BTreeMap;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::format::{BUNDLE_FILE, SIGNATURE_FILE, is_safe_relative};
use super::source::{BundleSource, DirSource, read_all};
use super::trust::{self, TrustPolicy};
use super::verify::{Problem, VerifyReport};
use crate::digest::{Digest, Hasher};
use crate::error::{Error, Result};
use crate::progress::Progress;

pub const PACK_FILE: &str = "pack.json";
pub const PARTS_FORMAT_V1: &str = "dify-bundle-parts/v1";
const BLOCK: u64 = 512;
/// Room kept in each part for its packing list: a base plus this much per entry.
const PACK_BASE: u64 = 4096;
const PACK_PER_ENTRY: u64 = 512;

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

fn padded(n: u64) -> u64 {
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

    pub fn is_partial(&self) -> bool {
        self.partial
    }

    /// Checks each part on its own: the signature of the bundle.json it carries, then every
    /// entry — whole files against bundle.json, chunks against the packing list.
    pub fn verify_entries(
        &self,
        policy: &TrustPolicy,
        progress: &dyn Progress,
    ) -> Result<VerifyReport> {
        let started = std::time::Instant::now();
        let (manifest, signature) = trust::open(self, policy)?;
        let listed: BTreeMap<&str, &super::format::BundleFile> = manifest
            .files
            .iter()
            .map(|f| (f.path.as_str(), f))
            .collect();
        let mut problems = Vec::new();
        let mut bytes = 0;
        let mut files = 0;
        for part in &self.parts {
            let part_file = part
                .path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            for entry in &part.list.entries {
                let named = format!("{part_file}: {}", entry.entry);
                let Some(expected) = listed.get(entry.path.as_str()) else {
                    problems.push(Problem::Extra { path: named });
                    continue;
                };
                let span = part.spans[&entry.entry];
                if span.size != entry.length
                    || entry
                        .offset
                        .checked_add(entry.length)
                        .is_none_or(|end| end > expected.size)
                {
                    problems.push(Problem::Truncated {
                        path: named,
                        expected: entry.length,
                        actual: span.size,
                    });
                    continue;
                }
                let whole = entry.offset == 0 && entry.length == expected.size;
                let want = if whole {
                    expected.sha256.as_str()
                } else {
                    entry.sha256.as_str()
                };
                let mut file =
                    std::fs::File::open(&part.path).map_err(|e| Error::io(&part.path, e))?;
                file.seek(SeekFrom::Start(span.offset))
                    .map_err(|e| Error::io(&part.path, e))?;
                let digest = hash_reader(&mut file.take(span.size), &part.path)?;
                progress.note(&format!("  checked {named}"));
                files += 1;
                bytes += span.size;
                if digest.hex() != want {
                    problems.push(Problem::Changed {
                        path: named,
                        expected: format!("sha256:{want}"),
                        actual: digest.to_string(),
                    });
                }
            }
        }
        Ok(VerifyReport {
            name: manifest.name.clone(),
            signature,
            files,
            bytes,
            problems,
            seconds: started.elapsed().as_secs_f64(),
            manifest,
        })
    }
}

fn hash_reader(reader: &mut dyn Read, path: &Path) -> Result<Digest> {
    let mut hasher = Hasher::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = reader.read(&mut buf).map_err(|e| Error::io(path, e))?;
        if n == 0 {
            return Ok(hasher.finish());
        }
        hasher.update(&buf[..n]);
    }
}

/// Reads a bundle file's pieces one after the other.
struct PiecesReader<'a> {
    source: &'a PartsSource,
    pieces: &'a [Piece],
    current: Option<std::io::Take<std::fs::File>>,
}

impl Read for PiecesReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        loop {
            if let Some(reader) = &mut self.current {
                let n = reader.read(buf)?;
                if n > 0 || buf.is_empty() {
                    return Ok(n);
                }
                self.current = None;
            }
            let Some((piece, rest)) = self.pieces.split_first() else {
                return Ok(0);
            };
            self.pieces = rest;
            let mut file = std::fs::File::open(&self.source.parts[piece.part].path)?;
            file.seek(SeekFrom::Start(piece.span.offset))?;
            self.current = Some(file.take(piece.span.size));
        }
    }
}

impl BundleSource for PartsSource {
    fn describe(&self) -> String {
        match self.parts.as_slice() {
            [one] => one.path.display().to_string(),
            parts => format!("{} parts of {}", parts.len(), parts[0].list.bundle),
        }
    }

    fn list(&self) -> Result<Vec<(String, u64)>> {
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

    fn open(&self, path: &str) -> Result<Option<Box<dyn Read + Send + '_>>> {
        if path == BUNDLE_FILE || path == SIGNATURE_FILE {
            let part = &self.parts[0];
            return match part.spans.get(path) {
                None => Ok(None),
                Some(span) => Ok(Some(Box::new(std::io::Cursor::new(read_span(
                    &part.path, *span,
                )?)))),
            };
        }
        Ok(self.files.get(path).map(|pieces| {
            Box::new(PiecesReader {
                source: self,
                pieces,
                current: None,
            }) as Box<dyn Read + Send + '_>
        }))
    }
}

/// What packing wrote.
#[derive(Debug, Serialize)]
pub struct PackReport {
    pub bundle: String,
    pub parts: Vec<(String, u64)>,
    pub bytes: u64,
    pub seconds: f64,
}

struct Planned {
    path: String,
    offset: u64,
    length: u64,
    chunk: Option<u32>,
}

/// Splits the bundle at `dir` into parts of at most `split_size` bytes in `out`.
pub fn pack(
    dir: &Path,
    out: &Path,
    split_size: u64,
    policy: &TrustPolicy,
    progress: &dyn Progress,
) -> Result<PackReport> {
    let started = std::time::Instant::now();
    let _reading = crate::lock::shared(dir, "pack")?;
    let source = DirSource::new(dir);
    let (manifest, _) = trust::open(&source, policy)?;
    let bundle_json = read_all(&source, BUNDLE_FILE)?.unwrap_or_default();
    let signature = read_all(&source, SIGNATURE_FILE)?;
    let fixed = 3 * BLOCK
        + padded(bundle_json.len() as u64)
        + signature
            .as_ref()
            .map_or(0, |s| BLOCK + padded(s.len() as u64))
        + PACK_BASE
        + 2 * BLOCK;
    let smallest = fixed + 2 * BLOCK + PACK_PER_ENTRY + (1 << 16);
    if split_size < smallest {
        return Err(Error::invalid(format!(
            "--split-size {split_size} is too small: each part carries bundle.json and its packing list; use at least {smallest} bytes"
        )));
    }
    let capacity = split_size - fixed;

    // Plan: files in order, split at file boundaries; a file that does not fit is chunked.
    let mut parts: Vec<Vec<Planned>> = Vec::new();
    let mut current: Vec<Planned> = Vec::new();
    let mut left = capacity;
    let cost = BLOCK + PACK_PER_ENTRY;
    // The installer first, whole in part 1 when it fits: the inside takes it out with `tar`
    // before it has any tool of ours.
    let installer_path = manifest.installer.as_ref().map(|i| i.path.as_str());
    let ordered = manifest
        .files
        .iter()
        .filter(|f| Some(f.path.as_str()) == installer_path)
        .chain(
            manifest
                .files
                .iter()
                .filter(|f| Some(f.path.as_str()) != installer_path),
        );
    for file in ordered {
        let mut offset = 0;
        let mut chunk = 0;
        loop {
            let remaining = file.size - offset;
            if offset == 0 && padded(remaining) + cost <= left {
                current.push(Planned {
                    path: file.path.clone(),
                    offset: 0,
                    length: remaining,
                    chunk: None,
                });
                left -= padded(remaining) + cost;
                break;
            }
            let room = left.saturating_sub(cost) / BLOCK * BLOCK;
            if room < (1 << 16) {
                parts.push(std::mem::take(&mut current));
                left = capacity;
                continue;
            }
            let take = remaining.min(room);
            chunk += 1;
            current.push(Planned {
                path: file.path.clone(),
                offset,
                length: take,
                chunk: Some(chunk),
            });
            left -= padded(take) + cost;
            offset += take;
            if offset == file.size {
                break;
            }
        }
    }
    parts.push(current);
    parts.retain(|p| !p.is_empty());
    let count = parts.len() as u32;
    let _writing = crate::lock::exclusive(out, "pack into")?;
    // Parts a failed or killed packing was still writing.
    for entry in std::fs::read_dir(out)
        .map_err(|e| Error::io(out, e))?
        .flatten()
    {
        if entry.file_name().to_string_lossy().ends_with(".tar.tmp") {
            std::fs::remove_file(entry.path()).map_err(|e| Error::io(entry.path(), e))?;
        }
    }
    let bundle_sha = Digest::of(&bundle_json);
    let expected: BTreeMap<&str, &str> = manifest
        .files
        .iter()
        .map(|f| (f.path.as_str(), f.sha256.as_str()))
        .collect();
    let mut whole: BTreeMap<String, Hasher> = BTreeMap::new();
    let mut report = PackReport {
        bundle: manifest.name.clone(),
        parts: Vec::new(),
        bytes: 0,
        seconds: 0.0,
    };
    progress.step(&format!(
        "packing {} into {count} parts of at most {}",
        manifest.name,
        crate::units::bytes(split_size)
    ));
    for (index, planned) in parts.iter().enumerate() {
        let number = index as u32 + 1;
        let name = part_name(&manifest.name, number);
        let final_path = out.join(&name);
        let tmp = out.join(format!("{name}.tmp"));
        let guard = RemoveOnDrop(Some(tmp.clone()));
        let io = |e| Error::io(&tmp, e);
        let mut builder = tar::Builder::new(std::io::BufWriter::with_capacity(
            1 << 20,
            std::fs::File::create(&tmp).map_err(io)?,
        ));
        let mut append = |name: &str, size: u64, data: &mut dyn Read| -> Result<()> {
            let mut header = tar::Header::new_gnu();
            header.set_entry_type(tar::EntryType::Regular);
            header.set_mode(0o644);
            header.set_mtime(0);
            header.set_size(size);
            builder.append_data(&mut header, name, data).map_err(io)
        };
        append(
            BUNDLE_FILE,
            bundle_json.len() as u64,
            &mut bundle_json.as_slice(),
        )?;
        if let Some(signature) = &signature {
            append(
                SIGNATURE_FILE,
                signature.len() as u64,
                &mut signature.as_slice(),
            )?;
        }
        let mut entries = Vec::new();
        for item in planned {
            let entry = match item.chunk {
                None => item.path.clone(),
                Some(n) => format!("{}.chunk{n:03}", item.path),
            };
            let full = dir.join(&item.path);
            let mut file = std::fs::File::open(&full).map_err(|e| Error::io(&full, e))?;
            file.seek(SeekFrom::Start(item.offset))
                .map_err(|e| Error::io(&full, e))?;
            let mut reader = HashingReader {
                inner: file.take(item.length),
                chunk: Hasher::new(),
                whole: whole.entry(item.path.clone()).or_default(),
            };
            append(&entry, item.length, &mut reader)?;
            if reader.chunk.len() != item.length {
                return Err(Error::invalid(format!(
                    "{}: shorter than bundle.json says; run verify",
                    full.display()
                )));
            }
            entries.push(PackEntry {
                entry,
                path: item.path.clone(),
                offset: item.offset,
                length: item.length,
                sha256: reader.chunk.finish().hex().to_owned(),
            });
            if item.offset + item.length == std::fs::metadata(&full).map(|m| m.len()).unwrap_or(0) {
                let hash = whole.remove(&item.path).unwrap_or_default().finish();
                if Some(hash.hex()) != expected.get(item.path.as_str()).copied() {
                    return Err(Error::invalid(format!(
                        "{}: its content no longer matches bundle.json; run `dify-bundle verify` and rebuild",
                        item.path
                    )));
                }
            }
        }
        let list = PackList {
            format: PARTS_FORMAT_V1.to_owned(),
            bundle: manifest.name.clone(),
            bundle_sha256: bundle_sha.hex().to_owned(),
            part: number,
            parts: count,
            entries,
        };
        let list = serde_json::to_vec_pretty(&list)
            .map_err(|e| Error::invalid(format!("{PACK_FILE}: {e}")))?;
        append(PACK_FILE, list.len() as u64, &mut list.as_slice())?;
        let mut writer = builder.into_inner().map_err(io)?;
        writer.flush().map_err(io)?;
        drop(writer);
        std::fs::rename(&tmp, &final_path).map_err(|e| Error::io(&final_path, e))?;
        guard.disarm();
        let size = std::fs::metadata(&final_path)
            .map_err(|e| Error::io(&final_path, e))?
            .len();
        if size > split_size {
            return Err(Error::invalid(format!(
                "{name}: {size} bytes, over the split size {split_size} (a packing bug)"
            )));
        }
        progress.note(&format!("  wrote {name} ({})", crate::units::bytes(size)));
        report.bytes += size;
        report.parts.push((name, size));
    }
    // Parts of an earlier packing of the same bundle that this one does not have.
    for entry in std::fs::read_dir(out)
        .map_err(|e| Error::io(out, e))?
        .flatten()
    {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with(&format!("{}.part", manifest.name))
            && name.ends_with(".tar")
            && !report.parts.iter().any(|(p, _)| *p == name)
        {
            let _ = std::fs::remove_file(entry.path());
        }
    }
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

/// Removes a part being written when packing fails before it is renamed into place (a
/// full medium must not keep a half-written part).
struct RemoveOnDrop(Option<std::path::PathBuf>);

impl RemoveOnDrop {
    fn disarm(mut self) {
        self.0 = None;
    }
}

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        if let Some(path) = self.0.take() {
            let _ = std::fs::remove_file(path);
        }
    }
}

struct HashingReader<'a, R> {
    inner: R,
    chunk: Hasher,
    whole: &'a mut Hasher,
}

impl<R: Read> Read for HashingReader<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.chunk.update(&buf[..n]);
        self.whole.update(&buf[..n]);
        Ok(n)
    }
}
