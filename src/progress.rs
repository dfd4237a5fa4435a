//! How long-running work reports what it is doing. The library only calls this trait;
//! the command line decides how to show it (bars on a terminal, plain lines otherwise).

use crate::digest::Digest;

pub trait Progress: Send + Sync {
    /// A new step begins (`resolving images`, `downloading blobs`).
    fn step(&self, _message: &str) {}
    /// The total number of bytes the current step will move (already held bytes included).
    fn total(&self, _bytes: u64, _already: u64) {}
    /// A blob starts (or restarts) arriving; `already` bytes were held before.
    fn blob_started(&self, _digest: &Digest, _size: u64, _already: u64) {}
    /// `bytes` more bytes of a blob arrived.
    fn blob_advanced(&self, _digest: &Digest, _bytes: u64) {}
    /// A blob failed part way and will be tried again; `blob_started` follows.
    fn blob_retrying(&self, _digest: &Digest, _reason: &str) {}
    /// A blob is complete and verified.
    fn blob_finished(&self, _digest: &Digest) {}
    /// A line worth telling the user.
    fn note(&self, _message: &str) {}
}

/// Reports nothing.
pub struct Silent;

impl Progress for Silent {}
