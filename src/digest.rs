//! Content digests (`sha256:<hex>`): parsing, computing, and incremental hashing.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest as _, Sha256};

use crate::error::{Error, Result};

/// A validated sha256 content digest.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest {
    hex: String,
}

impl Digest {
    /// The digest of `bytes`.
    pub fn of(bytes: &[u8]) -> Self {
        let mut hasher = Hasher::new();
        hasher.update(bytes);
        hasher.finish()
    }

    /// Builds a digest from 64 lowercase hex characters.
    pub fn from_hex(hex: &str) -> Result<Self> {
        if hex.len() == 64 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            Ok(Digest {
                hex: hex.to_owned(),
            })
        } else {
            Err(Error::invalid(format!(
                "`{hex}` is not a sha256 digest (64 lowercase hex characters)"
            )))
        }
    }

    /// The hex part, as used in `blobs/sha256/<hex>`.
    pub fn hex(&self) -> &str {
        &self.hex
    }

    /// Checks that `bytes` hash to this digest; `what` names them in the error.
    pub fn verify(&self, bytes: &[u8], what: impl FnOnce() -> String) -> Result<()> {
        self.check(&Digest::of(bytes), what)
    }

    /// Checks the digest bytes were found to have against this one, the expected.
    pub fn check(&self, actual: &Digest, what: impl FnOnce() -> String) -> Result<()> {
        if actual == self {
            return Ok(());
        }
        Err(Error::DigestMismatch {
            what: what(),
            expected: self.to_string(),
            actual: actual.to_string(),
        })
    }

    /// A short form for progress lines: `sha256:0123456789ab`.
    pub fn short(&self) -> String {
        format!("sha256:{}", &self.hex[..12])
    }
}

impl FromStr for Digest {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s.split_once(':') {
            Some(("sha256", hex)) => Digest::from_hex(hex),
            Some((algorithm, _)) => Err(Error::invalid(format!(
                "digest `{s}` uses `{algorithm}`; only sha256 is supported"
            ))),
            None => Err(Error::invalid(format!(
                "`{s}` is not a digest (expected sha256:<hex>)"
            ))),
        }
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.hex)
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl Serialize for Digest {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Digest {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Incremental sha256 that also counts bytes.
#[derive(Clone, Default)]
pub struct Hasher {
    inner: Sha256,
    len: u64,
}

impl Hasher {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn update(&mut self, bytes: &[u8]) {
        self.inner.update(bytes);
        self.len += bytes.len() as u64;
    }

    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn finish(self) -> Digest {
        Digest {
            hex: hex::encode(self.inner.finalize()),
        }
    }

    /// Checks that what was hashed is `size` bytes with digest `expected` — size first, since
    /// a short read is the commoner failure and says more; `what` names the bytes in the error.
    pub fn check(self, size: u64, expected: &Digest, what: impl FnOnce() -> String) -> Result<()> {
        if self.len != size {
            return Err(Error::SizeMismatch {
                what: what(),
                expected: size,
                actual: self.len,
            });
        }
        expected.check(&self.finish(), what)
    }
}

/// Hashes a whole file with a large buffer; returns its digest and length.
pub fn hash_file(path: &std::path::Path) -> Result<(Digest, u64)> {
    let mut file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    hash_reader(&mut file).map_err(|e| Error::io(path, e))
}

/// Reads `reader` to its end, hashing: its digest and how many bytes it gave.
pub fn hash_reader(reader: &mut dyn std::io::Read) -> std::io::Result<(Digest, u64)> {
    let mut hasher = Hasher::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = reader.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    let len = hasher.len();
    Ok((hasher.finish(), len))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verify_names_what_did_not_match() {
        let digest = Digest::of(b"layer");
        assert!(digest.verify(b"layer", || unreachable!()).is_ok());
        let e = digest.verify(b"other", || "blob x".to_owned()).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!(
                "blob x: digest mismatch: expected {digest}, got {}",
                Digest::of(b"other")
            )
        );
    }

    #[test]
    fn hasher_checks_size_before_digest() {
        let expected = Digest::of(b"layer");
        let mut hasher = Hasher::new();
        hasher.update(b"layer");
        assert!(
            hasher
                .clone()
                .check(5, &expected, || unreachable!())
                .is_ok()
        );
        let e = hasher.clone().check(6, &expected, || "blob".to_owned());
        assert!(matches!(
            e,
            Err(Error::SizeMismatch {
                expected: 6,
                actual: 5,
                ..
            })
        ));
        let mut other = Hasher::new();
        other.update(b"lay3r");
        let e = other.check(5, &expected, || "blob".to_owned());
        assert!(matches!(e, Err(Error::DigestMismatch { .. })));
    }

    #[test]
    fn parses_and_prints() {
        let d = Digest::of(b"");
        assert_eq!(
            d.to_string(),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(d.to_string().parse::<Digest>().unwrap(), d);
    }

    #[test]
    fn rejects_bad_digests() {
        assert!("sha512:abcd".parse::<Digest>().is_err());
        assert!("sha256:ABCD".parse::<Digest>().is_err());
        assert!("sha256:../../etc/passwd".parse::<Digest>().is_err());
        assert!("nocolon".parse::<Digest>().is_err());
    }
}
