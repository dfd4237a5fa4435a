//! Verifying a bundle directory against its `bundle.json`: every listed file is re-hashed
//! (in parallel), and missing, changed and unlisted files are each named.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Seek, SeekFrom};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use serde::Serialize;

use super::format::{BUNDLE_FILE, BundleFile, SIGNATURE_FILE};
use super::source::BundleSource;
use super::source::parts::{PartEntry, PartsSource};
use super::trust::{SignatureStatus, TrustPolicy};
use crate::digest::{Digest, Hasher, hash_reader};
use crate::error::{Error, Result};
use crate::progress::Progress;

/// One thing wrong with a bundle.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "problem", rename_all = "snake_case")]
pub enum Problem {
    Missing {
        path: String,
    },
    Changed {
        path: String,
        expected: String,
        actual: String,
    },
    Truncated {
        path: String,
        expected: u64,
        actual: u64,
    },
    Extra {
        path: String,
    },
    Unreadable {
        path: String,
        error: String,
    },
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Problem::Missing { path } => write!(f, "{path}: missing"),
            Problem::Changed {
                path,
                expected,
                actual,
            } => write!(
                f,
                "{path}: content changed (sha256 {actual}, expected {expected})"
            ),
            Problem::Truncated {
                path,
                expected,
                actual,
            } => write!(f, "{path}: size {actual} bytes, expected {expected}"),
            Problem::Extra { path } => write!(f, "{path}: not part of the bundle"),
            Problem::Unreadable { path, error } => write!(f, "{path}: unreadable: {error}"),
        }
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct VerifyReport {
    pub name: String,
    pub signature: SignatureStatus,
    pub files: usize,
    pub bytes: u64,
    pub problems: Vec<Problem>,
    pub seconds: f64,
    /// The bundle.json that was checked.
    #[serde(skip)]
    pub manifest: super::format::BundleManifest,
}

impl VerifyReport {
    pub fn is_ok(&self) -> bool {
        self.problems.is_empty()
    }
}

/// Checks the signature first (refusing the bundle per `policy`), then every file: each is
/// re-hashed in parallel, and missing, changed, truncated and unlisted files are named.
pub fn verify(
    source: &dyn BundleSource,
    policy: &TrustPolicy,
    progress: &dyn Progress,
) -> Result<VerifyReport> {
    verify_to(source, policy, Depth::Full, progress)
}

/// How much of a bundle a verification reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Depth {
    /// Every file re-hashed.
    Full,
    /// The signature, every file present with its size and nothing extra, and every file but
    /// the blobs re-hashed: for a consumer that hashes each blob it uses as it reads it
    /// (install: pushed blobs stream through a check, manifests, the stack template and plugin
    /// packages are checked on reading), so no byte is used unchecked and none is read twice.
    Listing,
}

/// [`verify`] to the given depth.
pub fn verify_to(
    source: &dyn BundleSource,
    policy: &TrustPolicy,
    depth: Depth,
    progress: &dyn Progress,
) -> Result<VerifyReport> {
    let started = std::time::Instant::now();
    let (manifest, signature) = super::trust::open(source, policy)?;
    let listed: BTreeSet<&str> = manifest.files.iter().map(|f| f.path.as_str()).collect();
    let present: BTreeMap<String, u64> = source.list()?.into_iter().collect();
    let mut problems: Vec<Problem> = present
        .keys()
        .filter(|p| !listed.contains(p.as_str()) && *p != BUNDLE_FILE && *p != SIGNATURE_FILE)
        .map(|path| Problem::Extra {
            path: crate::units::escape(path),
        })
        .collect();
    // A directory holding none of the listed files is not part of the bundle either.
    for dir in source.directories()? {
        let prefix = format!("{dir}/");
        if !listed.iter().any(|p| p.starts_with(&prefix)) {
            problems.push(Problem::Extra {
                path: crate::units::escape(&prefix),
            });
        }
    }

    let hashed = |f: &&BundleFile| {
        depth == Depth::Full || !f.path.starts_with(crate::store::layout::BLOBS_DIR)
    };
    let total: u64 = manifest.files.iter().filter(hashed).map(|f| f.size).sum();
    progress.step(&format!(
        "verifying {} files ({} hashed{}) in {}",
        manifest.files.len(),
        crate::units::bytes(total),
        if depth == Depth::Listing {
            "; blobs as they are used"
        } else {
            ""
        },
        source.describe()
    ));
    progress.total(total, 0);
    let next = AtomicUsize::new(0);
    let found = Mutex::new(Vec::new());
    let workers = std::thread::available_parallelism().map_or(2, |n| n.get());
    std::thread::scope(|scope| {
        for _ in 0..workers {
            scope.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(file) = manifest.files.get(i) else {
                        break;
                    };
                    let hash = depth == Depth::Full
                        || !file.path.starts_with(crate::store::layout::BLOBS_DIR);
                    if let Some(problem) = check_file(
                        source,
                        file,
                        present.get(&file.path).copied(),
                        hash,
                        progress,
                    ) {
                        found
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .push(problem);
                    }
                }
            });
        }
    });
    problems.extend(found.into_inner().unwrap_or_else(|p| p.into_inner()));
    problems.sort_by_key(|p| p.to_string());
    Ok(VerifyReport {
        name: manifest.name.clone(),
        signature,
        files: manifest.files.len(),
        bytes: total,
        problems,
        seconds: started.elapsed().as_secs_f64(),
        manifest,
    })
}

fn check_file(
    source: &dyn BundleSource,
    file: &BundleFile,
    size: Option<u64>,
    hash: bool,
    progress: &dyn Progress,
) -> Option<Problem> {
    let path = file.path.clone();
    let expected = Digest::from_hex(&file.sha256).ok()?;
    let Some(size) = size else {
        return Some(Problem::Missing { path });
    };
    if size == u64::MAX {
        // How sources list what is not a regular file.
        return Some(Problem::Unreadable {
            path,
            error: "not a regular file (a symlink, FIFO, device or directory)".to_owned(),
        });
    }
    if size != file.size {
        return Some(Problem::Truncated {
            path,
            expected: file.size,
            actual: size,
        });
    }
    if !hash {
        return None;
    }
    let mut reader = match source.open(&file.path) {
        Ok(Some(reader)) => reader,
        Ok(None) => return Some(Problem::Missing { path }),
        Err(e) => {
            return Some(Problem::Unreadable {
                path,
                error: e.to_string(),
            });
        }
    };
    progress.blob_started(&expected, file.size, 0);
    let mut hasher = Hasher::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                hasher.update(&buf[..n]);
                progress.blob_advanced(&expected, n as u64);
            }
            Err(e) => {
                return Some(Problem::Unreadable {
                    path,
                    error: e.to_string(),
                });
            }
        }
    }
    progress.blob_finished(&expected);
    let actual = hasher.finish();
    (actual != expected).then(|| Problem::Changed {
        path,
        expected: expected.to_string(),
        actual: actual.to_string(),
    })
}

/// Verifies what the user named: a bundle directory or a folder of parts (every file,
/// whole), or a single part (each of its entries, on its own).
pub fn verify_path(
    path: &std::path::Path,
    policy: &TrustPolicy,
    progress: &dyn Progress,
) -> Result<VerifyReport> {
    if path.is_file() {
        let part = PartsSource::open_parts(&[path.to_owned()], true)?;
        return verify_part(&part, policy, progress);
    }
    let source = super::location::open_path(path)?;
    verify(source.as_ref(), policy, progress)
}

/// Checks each part on its own: the signature of the bundle.json it carries, then every
/// entry — whole files against bundle.json, chunks against the packing list.
pub fn verify_part(
    source: &PartsSource,
    policy: &TrustPolicy,
    progress: &dyn Progress,
) -> Result<VerifyReport> {
    let started = std::time::Instant::now();
    let (manifest, signature) = super::trust::open(source, policy)?;
    let listed: BTreeMap<&str, &BundleFile> = manifest
        .files
        .iter()
        .map(|f| (f.path.as_str(), f))
        .collect();
    let mut problems = Vec::new();
    let mut bytes = 0;
    let mut files = 0;
    for PartEntry {
        part,
        entry,
        offset,
        size,
    } in source.entries()
    {
        let part_file = part
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let named = format!("{part_file}: {}", entry.entry);
        let Some(expected) = listed.get(entry.path.as_str()) else {
            problems.push(Problem::Extra { path: named });
            continue;
        };
        if size != entry.length
            || entry
                .offset
                .checked_add(entry.length)
                .is_none_or(|end| end > expected.size)
        {
            problems.push(Problem::Truncated {
                path: named,
                expected: entry.length,
                actual: size,
            });
            continue;
        }
        let whole = entry.offset == 0 && entry.length == expected.size;
        let want = if whole {
            expected.sha256.as_str()
        } else {
            entry.sha256.as_str()
        };
        let mut file = std::fs::File::open(part).map_err(|e| Error::io(part, e))?;
        file.seek(SeekFrom::Start(offset))
            .map_err(|e| Error::io(part, e))?;
        let (digest, _) = hash_reader(&mut file.take(size)).map_err(|e| Error::io(part, e))?;
        progress.note(&format!("  checked {named}"));
        files += 1;
        bytes += size;
        if digest.hex() != want {
            problems.push(Problem::Changed {
                path: named,
                expected: format!("sha256:{want}"),
                actual: digest.to_string(),
            });
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
