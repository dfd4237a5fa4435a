//! The library's error type: every variant names the thing that failed; what the user can do
//! about it travels apart, as a hint ([`Error::with_hint`], [`Error::hint`]), which the command
//! line prints on its own `hint:` line (as uv does). The library names no flag in a message.

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

    /// A signature is missing, malformed, by a key that is not trusted, or does not verify:
    /// the bytes it covers must not be used.
    #[error("{what}: {message}")]
    Untrusted { what: String, message: String },

    /// Another run holds the directory this one needs (see `lock`).
    #[error("cannot {doing} {}: it is in use by {holder} (another dify-bundle run)", path.display())]
    Busy {
        path: PathBuf,
        doing: String,
        holder: String,
    },

    /// An AWS API call failed after the SDK's own retries. `transient` ones (throttling, 5xx,
    /// timeouts, connections lost) may succeed later; the others need a change first.
    #[error("{service} {call}: {message}")]
    Aws {
        service: String,
        call: String,
        /// The service's error code (`ThrottlingException`, `ValidationError`, …), when it gave one.
        code: Option<String>,
        message: String,
        transient: bool,
    },

    /// Something that cannot happen unless this program has a bug (a worker thread that
    /// panicked, an inconsistent plan): not the user's input.
    #[error("internal error: {0}; please report it")]
    Internal(String),

    /// An error with what the user can do about it. Displays as the error alone.
    #[error("{inner}")]
    Hinted { inner: Box<Error>, hint: String },

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

    /// The innermost error, past every added context and hint.
    pub fn root(&self) -> &Error {
        match self {
            Error::Context { inner, .. } | Error::Hinted { inner, .. } => inner.root(),
            other => other,
        }
    }

    /// The same error with what the user can do about it (`run verify`, `pass --region`).
    pub fn with_hint(self, hint: impl Into<String>) -> Self {
        Error::Hinted {
            inner: Box::new(self),
            hint: hint.into(),
        }
    }

    /// What the user can do about this error, as far as the library knows: every hint in
    /// the chain, the innermost (the most specific) first.
    pub fn hints(&self) -> Vec<&str> {
        match self {
            Error::Context { inner, .. } => inner.hints(),
            Error::Hinted { inner, hint } => {
                let mut hints = inner.hints();
                hints.push(hint);
                hints
            }
            _ => Vec::new(),
        }
    }

    pub fn untrusted(what: impl Into<String>, message: impl Into<String>) -> Self {
        Error::Untrusted {
            what: what.into(),
            message: message.into(),
        }
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Error::Internal(message.into())
    }

    pub fn invalid(message: impl Into<String>) -> Self {
        Error::Invalid(message.into())
    }

    /// Whether trying the same operation again may succeed (network hiccups, 429, 5xx,
    /// bodies cut short).
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Http { transient, .. } | Error::Aws { transient, .. } => *transient,
            Error::Context { inner, .. } | Error::Hinted { inner, .. } => inner.is_transient(),
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
            Error::Context { inner, .. } | Error::Hinted { inner, .. } => inner.retry_after(),
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
