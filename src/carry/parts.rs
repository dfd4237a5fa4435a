//! Packing a bundle onto media: its files split into `NAME.partNNN.tar` parts that fit the
//! media, each part carrying bundle.json, its signature and its packing list so it can be
//! checked alone on arrival (the format is [`crate::bundle::source::parts`]).

use std::collections::BTreeMap;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;
use std::sync::Arc;

use serde::Serialize;

use crate::bundle::format::{BUNDLE_FILE, SIGNATURE_FILE};
use crate::bundle::source::parts::{
    BLOCK, PACK_BASE, PACK_FILE, PACK_PER_ENTRY, PARTS_FORMAT_V1, PackEntry, PackList, padded,
    part_name,
};
use crate::bundle::trust::TrustPolicy;
use crate::bundle::{Bundle, Location};
use crate::digest::{Digest, Hasher};
use crate::error::{Error, Result};
use crate::progress::Progress;

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

/// Splits the bundle at `dir` into parts of at most `split_size` bytes in `out`: the bundle
/// is opened (signature checked) first, then the parts are written on a blocking thread.
pub async fn pack(
    dir: &Path,
    out: &Path,
    split_size: u64,
    policy: &TrustPolicy,
    progress: Arc<dyn Progress>,
) -> Result<PackReport> {
    let started = std::time::Instant::now();
    let reading = crate::lock::shared(dir, "pack")?;
    let bundle = Bundle::open(&Location::Dir(dir.to_owned()), policy).await?;
    let (dir, out) = (dir.to_owned(), out.to_owned());
    tokio::task::spawn_blocking(move || {
        let _reading = reading;
        write_parts(&bundle, &dir, &out, split_size, progress.as_ref(), started)
    })
    .await
    .map_err(|e| Error::internal(format!("the packing thread failed: {e}")))?
}

/// Writes the parts of the opened bundle at `dir` (chunks of its files are read in place).
fn write_parts(
    bundle: &Bundle,
    dir: &Path,
    out: &Path,
    split_size: u64,
    progress: &dyn Progress,
    started: std::time::Instant,
) -> Result<PackReport> {
    let manifest = &bundle.manifest;
    let bundle_json = bundle.json();
    let signature = bundle.signature_file();
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
    // A delta's left-out layers stay behind.
    let ordered = manifest
        .carried()
        .filter(|f| Some(f.path.as_str()) == installer_path)
        .chain(
            manifest
                .carried()
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
    let bundle_sha = Digest::of(bundle_json);
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
        append(BUNDLE_FILE, bundle_json.len() as u64, &mut &bundle_json[..])?;
        if let Some(signature) = signature {
            append(SIGNATURE_FILE, signature.len() as u64, &mut &signature[..])?;
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
                    "{}: shorter than bundle.json says",
                    full.display()
                ))
                .with_hint("run `dify-bundle verify` on the bundle, and rebuild it"));
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
                        "{}: its content no longer matches bundle.json",
                        item.path
                    ))
                    .with_hint("run `dify-bundle verify` on the bundle, and rebuild it"));
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
            return Err(Error::internal(format!(
                "{name}: {size} bytes, over the split size {split_size}"
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
