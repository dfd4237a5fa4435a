//! Verifying a bundle directory against its `bundle.json`: every listed file is re-hashed
//! (in parallel), and missing, changed and unlisted files are each named.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use serde::Serialize;

use super::format::{BUNDLE_FILE, BundleFile, SIGNATURE_FILE};
use super::trust::{SignatureStatus, TrustPolicy};
use crate::digest::{Digest, hash_file};
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
}

impl VerifyReport {
    pub fn is_ok(&self) -> bool {
        self.problems.is_empty()
    }
}

/// Checks every file of the bundle at `dir` against its bundle.json.
/// Checks the signature first (refusing the bundle per `policy`), then every file.
pub fn verify(dir: &Path, policy: &TrustPolicy, progress: &dyn Progress) -> Result<VerifyReport> {
    let started = std::time::Instant::now();
    let (manifest, signature) = super::trust::open(dir, policy)?;
    let listed: BTreeSet<&str> = manifest.files.iter().map(|f| f.path.as_str()).collect();
    let mut problems: Vec<Problem> = walk(dir)?
        .into_iter()
        .filter(|p| !listed.contains(p.as_str()) && p != BUNDLE_FILE && p != SIGNATURE_FILE)
        .map(|path| Problem::Extra { path })
        .collect();

    let total: u64 = manifest.files.iter().map(|f| f.size).sum();
    progress.step(&format!(
        "verifying {} files ({})",
        manifest.files.len(),
        crate::units::bytes(total)
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
                    if let Some(problem) = check_file(dir, file, progress) {
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
    })
}

fn check_file(dir: &Path, file: &BundleFile, progress: &dyn Progress) -> Option<Problem> {
    let path = dir.join(&file.path);
    let expected = Digest::from_hex(&file.sha256).ok()?;
    let meta = match std::fs::symlink_metadata(&path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Some(Problem::Missing {
                path: file.path.clone(),
            });
        }
        Err(e) => {
            return Some(Problem::Unreadable {
                path: file.path.clone(),
                error: e.to_string(),
            });
        }
    };
    if !meta.is_file() {
        return Some(Problem::Unreadable {
            path: file.path.clone(),
            error: "not a regular file".to_owned(),
        });
    }
    if meta.len() != file.size {
        return Some(Problem::Truncated {
            path: file.path.clone(),
            expected: file.size,
            actual: meta.len(),
        });
    }
    progress.blob_started(&expected, file.size, 0);
    let result = hash_file(&path);
    progress.blob_advanced(&expected, file.size);
    progress.blob_finished(&expected);
    match result {
        Ok((actual, _)) if actual == expected => None,
        Ok((actual, _)) => Some(Problem::Changed {
            path: file.path.clone(),
            expected: expected.to_string(),
            actual: actual.to_string(),
        }),
        Err(e) => Some(Problem::Unreadable {
            path: file.path.clone(),
            error: e.to_string(),
        }),
    }
}

/// Every file under `dir` as a `/`-separated relative path. Symlinks and other non-regular
/// entries are listed too (they are never part of a bundle).
fn walk(dir: &Path) -> Result<Vec<String>> {
    let mut out = Vec::new();
    let mut pending = vec![(dir.to_owned(), String::new())];
    while let Some((path, prefix)) = pending.pop() {
        for entry in std::fs::read_dir(&path).map_err(|e| Error::io(&path, e))? {
            let entry = entry.map_err(|e| Error::io(&path, e))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let relative = if prefix.is_empty() {
                name
            } else {
                format!("{prefix}/{name}")
            };
            let kind = entry.file_type().map_err(|e| Error::io(entry.path(), e))?;
            if kind.is_dir() {
                pending.push((entry.path(), relative));
            } else {
                out.push(relative);
            }
        }
    }
    out.sort();
    Ok(out)
}
