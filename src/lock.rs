//! Directory locks: a run that writes a bundle directory or a media folder holds an
//! exclusive `flock` on the directory itself, a run that only reads one holds a shared one,
//! so a second `build` or `pack` into the same place is refused at once, naming the
//! process that holds it, instead of both failing halfway. Locking the directory (not a
//! file in it) leaves nothing behind that `verify` would have to explain, and the kernel
//! drops the lock when the process dies, however it dies.

use std::fs::File;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// A held lock; released when dropped.
#[derive(Debug)]
pub struct DirLock {
    _file: File,
    path: PathBuf,
}

impl DirLock {
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Takes an exclusive lock on `dir` (created if missing); `doing` says what for, in the
/// refusal ("build into", "pack into").
pub fn exclusive(dir: &Path, doing: &str) -> Result<DirLock> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    take(dir, doing, true)
}

/// Takes a shared lock on an existing `dir`: other readers may hold it too, a writer not.
pub fn shared(dir: &Path, doing: &str) -> Result<DirLock> {
    take(dir, doing, false)
}

fn take(dir: &Path, doing: &str, exclusive: bool) -> Result<DirLock> {
    let file = File::open(dir).map_err(|e| Error::io(dir, e))?;
    let result = if exclusive {
        file.try_lock()
    } else {
        file.try_lock_shared()
    };
    match result {
        Ok(()) => Ok(DirLock {
            _file: file,
            path: dir.to_owned(),
        }),
        Err(std::fs::TryLockError::WouldBlock) => {
            let holder = match holders(&file) {
                pids if pids.is_empty() => "another process".to_owned(),
                pids => format!(
                    "process {}",
                    pids.iter()
                        .map(u32::to_string)
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            };
            Err(Error::Busy {
                path: dir.to_owned(),
                doing: doing.to_owned(),
                holder,
            }
            .with_hint("wait for the other run to finish (or stop it), then run this again"))
        }
        Err(std::fs::TryLockError::Error(e)) => Err(Error::io(dir, e)),
    }
}

/// The processes holding a `flock` on the same inode as `file`, from `/proc/locks`
/// (proc(5): `N: FLOCK ADVISORY WRITE PID MAJOR:MINOR:INODE START END`); empty when that
/// cannot be read.
fn holders(file: &File) -> Vec<u32> {
    use std::os::unix::fs::MetadataExt;
    let Ok(meta) = file.metadata() else {
        return Vec::new();
    };
    let dev = meta.dev();
    let major = ((dev >> 8) & 0xfff) | ((dev >> 32) & !0xfff);
    let minor = (dev & 0xff) | ((dev >> 12) & !0xff);
    let id = format!("{major:02x}:{minor:02x}:{}", meta.ino());
    let Ok(text) = std::fs::read_to_string("/proc/locks") else {
        return Vec::new();
    };
    let mut pids: Vec<u32> = text
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            // A blocked waiter's line has "->" after the number; skip those.
            if fields.get(1) != Some(&"FLOCK") || !fields.contains(&id.as_str()) {
                return None;
            }
            let at = fields.iter().position(|f| *f == id.as_str())?;
            fields.get(at.checked_sub(1)?)?.parse().ok()
        })
        .filter(|pid| *pid != std::process::id())
        .collect();
    pids.sort_unstable();
    pids.dedup();
    pids
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_exclusive_lock_is_refused_naming_the_holder() {
        let dir = tempfile::tempdir().unwrap();
        // Locks are per open file description, so a second open in this process conflicts.
        let _held = exclusive(dir.path(), "build into").unwrap();
        let refused = exclusive(dir.path(), "build into").unwrap_err();
        assert!(
            matches!(refused.root(), Error::Busy { doing, .. } if doing == "build into"),
            "{refused}"
        );
        assert!(refused.to_string().contains("in use by"), "{refused}");
        assert_eq!(refused.hints().len(), 1);
        assert!(shared(dir.path(), "pack").is_err());
    }

    #[test]
    fn shared_locks_coexist_and_are_released_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        let a = shared(dir.path(), "pack").unwrap();
        let _b = shared(dir.path(), "pack").unwrap();
        assert!(exclusive(dir.path(), "build into").is_err());
        drop(a);
        drop(_b);
        assert!(exclusive(dir.path(), "build into").is_ok());
    }
}
