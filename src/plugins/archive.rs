//! The zip container of a `.difypkg`, read entry by entry the way Go's `archive/zip` reads it
//! for the plugin daemon — not the way a general zip library presents it.
//!
//! The daemon (`pkg/plugin_packager/decoder/zip.go`, `ZipPluginDecoder.Walk` and `ReadFile`,
//! langgenius/dify-plugin-daemon tags 0.5.3 and 0.6.10) walks `zip.Reader.File`, which is every
//! central-directory record in order, **duplicates included**, and reads each one back by name
//! through `zip.Reader.Open`, which resolves a duplicated name to its **first** record
//! (`initFileList` in Go's `archive/zip/reader.go` marks later ones `isDup`). General zip
//! libraries (the `zip` crate among them) fold duplicates into one entry, which loses an entry
//! the signature covers: packages re-signed by the marketplace carry one
//! `.verification.dify.json` per signing. So the central directory is read here, and each
//! entry's data is inflated and checked against its CRC-32 and size as `archive/zip` does
//! (`checksumReader`), stored and deflate being the only methods it registers.

use std::collections::HashMap;
use std::io::Read;

/// One central-directory record.
#[derive(Clone, Debug)]
pub struct Entry {
    pub name: String,
    method: u16,
    crc32: u32,
    compressed: u64,
    uncompressed: u64,
    header_offset: u64,
}

impl Entry {
    /// A name ending in `/` is a directory record.
    pub fn is_dir(&self) -> bool {
        self.name.ends_with('/')
    }
}

/// A zip archive held in memory: its records in central-directory order and its comment.
pub struct Archive<'a> {
    bytes: &'a [u8],
    pub entries: Vec<Entry>,
    pub comment: Vec<u8>,
}

const END_SIGNATURE: u32 = 0x0605_4b50;
const CENTRAL_SIGNATURE: u32 = 0x0201_4b50;
const LOCAL_SIGNATURE: u32 = 0x0403_4b50;
const END_LEN: usize = 22;
const CENTRAL_LEN: usize = 46;
const LOCAL_LEN: usize = 30;
const ZIP64_LOCATOR_SIGNATURE: u32 = 0x0706_4b50;

fn u16_at(bytes: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(bytes.get(at..at + 2)?.try_into().ok()?))
}

fn u32_at(bytes: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(bytes.get(at..at + 4)?.try_into().ok()?))
}

impl<'a> Archive<'a> {
    /// Reads the end record and the central directory. Errors are plain sentences; the caller
    /// names the package.
    pub fn read(bytes: &'a [u8]) -> Result<Archive<'a>, String> {
        let end = find_end(bytes).ok_or("no end-of-central-directory record")?;
        let field = |at: usize| u16_at(bytes, end + at).ok_or("end record cut short");
        let count = usize::from(field(10)?);
        let dir_size = u32_at(bytes, end + 12).ok_or("end record cut short")? as usize;
        let dir_offset = u32_at(bytes, end + 16).ok_or("end record cut short")? as usize;
        let comment_len = usize::from(field(20)?);
        if count == 0xffff || dir_size == 0xffff_ffff || dir_offset == 0xffff_ffff {
            return Err(
                "zip64 archives are not plugin packages (no package comes near 4 GiB)".into(),
            );
        }
        if end >= 20 && u32_at(bytes, end - 20) == Some(ZIP64_LOCATOR_SIGNATURE) {
            return Err("zip64 archives are not plugin packages".into());
        }
        let comment = bytes
            .get(end + END_LEN..end + END_LEN + comment_len)
            .ok_or("the archive comment is cut short")?
            .to_vec();
        if dir_offset.checked_add(dir_size).is_none_or(|e| e > end) {
            return Err("the central directory lies outside the archive".into());
        }
        let mut entries = Vec::with_capacity(count.min(4096));
        let mut at = dir_offset;
        for index in 0..count {
            let short = || format!("central-directory record {index} is cut short");
            if u32_at(bytes, at) != Some(CENTRAL_SIGNATURE) {
                return Err(format!(
                    "central-directory record {index} is not where the end record says"
                ));
            }
            let flags = u16_at(bytes, at + 8).ok_or_else(short)?;
            let method = u16_at(bytes, at + 10).ok_or_else(short)?;
            let crc32 = u32_at(bytes, at + 16).ok_or_else(short)?;
            let compressed = u32_at(bytes, at + 20).ok_or_else(short)?;
            let uncompressed = u32_at(bytes, at + 24).ok_or_else(short)?;
            let name_len = usize::from(u16_at(bytes, at + 28).ok_or_else(short)?);
            let extra_len = usize::from(u16_at(bytes, at + 30).ok_or_else(short)?);
            let comment_len = usize::from(u16_at(bytes, at + 32).ok_or_else(short)?);
            let header_offset = u32_at(bytes, at + 42).ok_or_else(short)?;
            let name = bytes
                .get(at + CENTRAL_LEN..at + CENTRAL_LEN + name_len)
                .ok_or_else(short)?;
            if flags & 1 != 0 {
                return Err(format!("entry {index} is encrypted"));
            }
            if compressed == u32::MAX || uncompressed == u32::MAX || header_offset == u32::MAX {
                return Err(format!("entry {index} needs zip64"));
            }
            // Go decodes names as UTF-8 when valid, else as CP437; a package Dify packed has
            // UTF-8 names, so anything else is refused rather than guessed.
            let name = std::str::from_utf8(name)
                .map_err(|_| format!("entry {index} has a name that is not UTF-8"))?
                .to_owned();
            entries.push(Entry {
                name,
                method,
                crc32,
                compressed: u64::from(compressed),
                uncompressed: u64::from(uncompressed),
                header_offset: u64::from(header_offset),
            });
            at += CENTRAL_LEN + name_len + extra_len + comment_len;
        }
        Ok(Archive {
            bytes,
            entries,
            comment,
        })
    }

    /// The entry's content, inflated and checked against its CRC-32 and size. `limit` bounds
    /// what may be produced (a zip bomb stops there).
    pub fn content(&self, entry: &Entry, limit: u64) -> Result<Vec<u8>, String> {
        let name = &entry.name;
        if entry.uncompressed > limit {
            return Err(format!("{name}: unpacks to more than {limit} bytes"));
        }
        let at = usize::try_from(entry.header_offset).map_err(|e| e.to_string())?;
        if u32_at(self.bytes, at) != Some(LOCAL_SIGNATURE) {
            return Err(format!("{name}: no local header where the directory says"));
        }
        let short = || format!("{name}: the local header is cut short");
        let name_len = usize::from(u16_at(self.bytes, at + 26).ok_or_else(short)?);
        let extra_len = usize::from(u16_at(self.bytes, at + 28).ok_or_else(short)?);
        let start = at + LOCAL_LEN + name_len + extra_len;
        let stored = usize::try_from(entry.compressed).map_err(|e| e.to_string())?;
        let data = self
            .bytes
            .get(start..start.saturating_add(stored))
            .ok_or_else(|| format!("{name}: the data is cut short"))?;
        let mut content = Vec::with_capacity(entry.uncompressed as usize);
        match entry.method {
            0 => content.extend_from_slice(data),
            8 => {
                flate2::read::DeflateDecoder::new(data)
                    .take(entry.uncompressed + 1)
                    .read_to_end(&mut content)
                    .map_err(|e| format!("{name}: {e}"))?;
            }
            other => {
                return Err(format!(
                    "{name}: compression method {other} (the daemon reads only stored and deflate)"
                ));
            }
        }
        if content.len() as u64 != entry.uncompressed {
            return Err(format!(
                "{name}: {} bytes, the directory says {}",
                content.len(),
                entry.uncompressed
            ));
        }
        let crc = crc_fast::checksum(crc_fast::CrcAlgorithm::Crc32IsoHdlc, &content) as u32;
        if crc != entry.crc32 {
            return Err(format!("{name}: CRC-32 mismatch (the entry is damaged)"));
        }
        Ok(content)
    }
}

/// Where the end record starts: the last signature in the archive's final 64 KiB + 22 bytes,
/// refused when its comment runs past the end, as `archive/zip`'s `findSignatureInBlock` does.
fn find_end(bytes: &[u8]) -> Option<usize> {
    if bytes.len() < END_LEN {
        return None;
    }
    let lowest = bytes.len().saturating_sub(END_LEN + usize::from(u16::MAX));
    let at = (lowest..=bytes.len() - END_LEN)
        .rev()
        .find(|&at| u32_at(bytes, at) == Some(END_SIGNATURE))?;
    let comment = usize::from(u16_at(bytes, at + 20)?);
    (at + END_LEN + comment <= bytes.len()).then_some(at)
}

/// For each name, the index of its first record: what `zip.Reader.Open(name)` reads.
pub fn first_records(entries: &[Entry]) -> HashMap<&str, usize> {
    let mut first = HashMap::new();
    for (index, entry) in entries.iter().enumerate() {
        first.entry(entry.name.as_str()).or_insert(index);
    }
    first
}
