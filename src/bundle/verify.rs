//! Verifying a bundle against its signed `bundle.json`: every listed file is re-hashed
//! (in parallel), and missing, changed and unlisted files are each named; one media part
//! is checked on its own, entry by entry.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use serde::Serialize;

use super::format::{BUNDLE_FILE, BundleFile, BundleManifest, SIGNATURE_FILE};
use super::source::BundleSource;
use super::source::parts::{PartEntry, PartsSource};
use super::source::{Advanced, hash_ranges};
use super::trust::SignatureStatus;
use crate::digest::Digest;
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
    /// Layers a delta bundle names but does not carry (and that are absent): install checks
    /// that the destination holds them.
    pub left_out: usize,
    pub left_out_bytes: u64,
    pub seconds: f64,
}

impl VerifyReport {
    pub fn is_ok(&self) -> bool {
        self.problems.is_empty()
    }
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

/// Checks every file of the bundle `source` reads against its bundle.json `manifest` (whose
/// signature was checked: `signature`): each is re-hashed to `depth`, as many at once as
/// there are cores, and missing, changed, truncated and unlisted files are named.
pub async fn verify(
    source: Arc<dyn BundleSource>,
    manifest: &BundleManifest,
    signature: &SignatureStatus,
    depth: Depth,
    progress: Arc<dyn Progress>,
) -> Result<VerifyReport> {
    let started = std::time::Instant::now();
    let listed: BTreeSet<&str> = manifest.files.iter().map(|f| f.path.as_str()).collect();
    let present: BTreeMap<String, u64> = source.list().await?.into_iter().collect();
    let mut problems: Vec<Problem> = present
        .keys()
        .filter(|p| !listed.contains(p.as_str()) && *p != BUNDLE_FILE && *p != SIGNATURE_FILE)
        .map(|path| Problem::Extra {
            path: crate::units::escape(path),
        })
        .collect();
    // A directory holding none of the listed files is not part of the bundle either.
    for dir in source.directories().await? {
        let prefix = format!("{dir}/");
        if !listed.iter().any(|p| p.starts_with(&prefix)) {
            problems.push(Problem::Extra {
                path: crate::units::escape(&prefix),
            });
        }
    }

    // A delta's left-out layers are not expected; one that is present is checked as usual.
    let omitted = manifest
        .delta
        .as_ref()
        .map(super::format::Delta::omitted_paths)
        .unwrap_or_default();
    let (files, left_out): (Vec<&BundleFile>, Vec<&BundleFile>) = manifest
        .files
        .iter()
        .partition(|f| present.contains_key(&f.path) || !omitted.contains(&f.path));
    let hashed = |f: &BundleFile| {
        depth == Depth::Full || !f.path.starts_with(crate::store::layout::BLOBS_DIR)
    };
    let total: u64 = files.iter().filter(|f| hashed(f)).map(|f| f.size).sum();
    progress.step(&format!(
        "verifying {} files ({} hashed{}) in {}",
        files.len(),
        crate::units::bytes(total),
        if depth == Depth::Listing {
            "; blobs as they are used"
        } else {
            ""
        },
        source.describe()
    ));
    progress.total(total, 0);
    // Each file checked with its size as listed (`None`: missing) and whether it is hashed.
    let work: Arc<Vec<(BundleFile, Option<u64>, bool)>> = Arc::new(
        files
            .iter()
            .map(|f| ((*f).clone(), present.get(&f.path).copied(), hashed(f)))
            .collect(),
    );
    let next = Arc::new(AtomicUsize::new(0));
    // Tasks, not futures of one task: hashing is CPU work, spread over the runtime's threads
    // while the files stream in from blocking threads.
    let workers = std::thread::available_parallelism().map_or(2, |n| n.get());
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..workers {
        let (source, work, next, progress) =
            (source.clone(), work.clone(), next.clone(), progress.clone());
        tasks.spawn(async move {
            let mut found = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some((file, size, hash)) = work.get(i) else {
                    break;
                };
                if let Some(problem) =
                    check_file(source.as_ref(), file, *size, *hash, &progress).await
                {
                    found.push(problem);
                }
            }
            found
        });
    }
    while let Some(found) = tasks.join_next().await {
        problems
            .extend(found.map_err(|e| Error::internal(format!("a verifying task failed: {e}")))?);
    }
    problems.sort_by_key(|p| p.to_string());
    Ok(VerifyReport {
        name: manifest.name.clone(),
        signature: signature.clone(),
        files: files.len(),
        bytes: total,
        problems,
        left_out: left_out.len(),
        left_out_bytes: left_out.iter().map(|f| f.size).sum(),
        seconds: started.elapsed().as_secs_f64(),
    })
}

async fn check_file(
    source: &dyn BundleSource,
    file: &BundleFile,
    size: Option<u64>,
    hash: bool,
    progress: &Arc<dyn Progress>,
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
    progress.blob_started(&expected, file.size, 0);
    let advanced: Advanced = {
        let (progress, expected) = (progress.clone(), expected.clone());
        Arc::new(move |n| progress.blob_advanced(&expected, n))
    };
    let actual = match source.hash(&file.path, advanced).await {
        Ok(Some(actual)) => actual,
        Ok(None) => return Some(Problem::Missing { path }),
        Err(e) => {
            return Some(Problem::Unreadable {
                path,
                error: e.to_string(),
            });
        }
    };
    progress.blob_finished(&expected);
    (actual != expected).then(|| Problem::Changed {
        path,
        expected: expected.to_string(),
        actual: actual.to_string(),
    })
}

/// Checks one part on its own against the bundle.json it carries (`manifest`, whose signature
/// was checked: `signature`): every entry, whole files against bundle.json, chunks against
/// the packing list.
pub async fn verify_part(
    source: &PartsSource,
    manifest: &BundleManifest,
    signature: &SignatureStatus,
    progress: &dyn Progress,
) -> Result<VerifyReport> {
    let started = std::time::Instant::now();
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
        let digest = hash_ranges(vec![(part.to_owned(), offset, size)], Arc::new(|_| {})).await?;
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
        signature: signature.clone(),
        files,
        bytes,
        problems,
        left_out: 0,
        left_out_bytes: 0,
        seconds: started.elapsed().as_secs_f64(),
    })
}
