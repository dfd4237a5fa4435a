//! The library's error type: every variant names the thing that failed and, where it helps,
//! what the user can do about it.

use std::path::PathBuf;
use std::time::Duration;

/// Result alias used throughout the library.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A registry, file or object that was asked for does not exist.
    #[error("{what}: not found")]
    NotFound { what: String },

    /// An HTTP exchange failed. `transient` failures are worth retrying.
    #[error("{what}: {message}")]
    Http {
        what: String,
        message: String,
        status: Option<u16>,
        transient: bool,
        retry_after: Option<Duration>,
    },

    /// The registry refused our credentials or asked for ones we do not have.
    #[error("{what}: {message}")]
    Auth { what: String, message: String },

    /// Bytes did not hash to the digest they were addressed by.
    #[error("{what}: digest mismatch: expected {expected}, got {actual}")]
    DigestMismatch {
        what: String,
        expected: String,
        actual: String,
    },

    /// Bytes were longer or shorter than their descriptor said.
    #[error("{what}: size mismatch: expected {expected} bytes, got {actual}")]
    SizeMismatch {
        what: String,
        expected: u64,
        actual: u64,
    },

    /// A local file operation failed.
    #[error("{}: {cause}", path.display())]
    Io {
        path: PathBuf,
        cause: std::io::Error,
    },

    /// Input that does not parse or does not make sense (manifests, references, recipes, flags).
    #[error("{0}")]
    Invalid(String),

    /// Another error, with what we were doing when it happened. (Its Display carries the
    /// whole chain, so it names no `source` to print twice.)
    #[error("{context}: {inner}")]
    Context { context: String, inner: Box<Error> },
}

impl Error {
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            cause: source,
        }
    }

    /// A body that stopped arriving part way: worth resuming.
    pub fn connection_lost(what: impl Into<String>, cause: impl std::fmt::Display) -> Self {
        Error::Http {
            what: what.into(),
            message: format!("connection lost while receiving: {cause}"),
            status: None,
            transient: true,
            retry_after: None,
        }
    }

    /// The innermost error, past every added context.
    pub fn root(&self) -> &Error {
        match self {
            Error::Context { inner, .. } => inner.root(),
            other => other,
        }
    }

    pub fn invalid(message: impl Into<String>) -> Self {
        Error::Invalid(message.into())
    }

    /// Whether trying the same operation again may succeed (network hiccups, 429, 5xx,
    /// bodies cut short).
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Http { transient, .. } => *transient,
            Error::Context { inner, .. } => inner.is_transient(),
            Error::SizeMismatch {
                expected, actual, ..
            } => actual < expected,
            _ => false,
        }
    }

    /// How long the server asked us to wait before trying again, if it said.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Error::Http { retry_after, .. } => *retry_after,
            Error::Context { inner, .. } => inner.retry_after(),
            _ => None,
        }
    }
}

/// Adds a description of what was being done to an error, keeping its kind.
pub trait Context<T> {
    fn context(self, what: impl FnOnce() -> String) -> Result<T>;
}

impl<T> Context<T> for Result<T> {
    fn context(self, what: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|inner| Error::Context {
            context: what(),
            inner: Box::new(inner),
        })
    }
}
