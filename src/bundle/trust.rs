//! The one door into a bundle: check `bundle.json`'s signature against trusted keys, and only
//! then parse it. Every command that consumes a bundle goes through [`check`], by way of
//! [`crate::bundle::Bundle::open`] (or, for `download`, before anything is fetched).

use std::path::Path;

use serde::Serialize;

use super::format::{BUNDLE_FILE, BundleManifest, SIGNATURE_FILE};
use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::signing::{SignedFacts, SigningKey, TrustedKeys};
use crate::store::layout::write_atomically;

/// Which bundles to accept.
#[derive(Clone, Default)]
pub struct TrustPolicy {
    pub keys: TrustedKeys,
    /// Accept bundles whose signature is missing or does not verify (with a warning).
    pub allow_unsigned: bool,
}

#[derive(Clone, Debug, Serialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum SignatureStatus {
    Verified {
        key_id: String,
        facts: SignedFacts,
    },
    /// Not verified, accepted only because unsigned bundles were allowed.
    NotVerified {
        reason: String,
    },
}

fn check_signature(
    bytes: &[u8],
    signature: Option<Vec<u8>>,
    keys: &TrustedKeys,
) -> Result<(String, SignedFacts)> {
    let Some(signature) = signature else {
        return Err(Error::untrusted(
            "the bundle",
            format!("not signed (no {SIGNATURE_FILE})"),
        ));
    };
    if keys.is_empty() {
        return Err(Error::untrusted(
            "the bundle",
            "no trusted public key to check its signature with",
        )
        .with_hint("pass --pubkey KEY.pub (or set DIFY_BUNDLE_PUBKEY)"));
    }
    let signature = String::from_utf8(signature)
        .map_err(|_| Error::untrusted(SIGNATURE_FILE, "not a minisign signature"))?;
    let (key_id, comment) = keys.check(bytes, &signature, SIGNATURE_FILE)?;
    let facts = SignedFacts::parse(&comment);
    let actual = Digest::of(bytes);
    if let Some(signed) = &facts.sha256
        && signed != actual.hex()
    {
        return Err(Error::untrusted(
            SIGNATURE_FILE,
            format!(
                "the signed comment names bundle.json sha256 {signed}, but it is {}",
                actual.hex()
            ),
        ));
    }
    Ok((key_id, facts))
}

/// Checks the signature over bundle.json's bytes, then parses those same bytes.
pub fn check(
    bytes: &[u8],
    signature: Option<Vec<u8>>,
    policy: &TrustPolicy,
    origin: &str,
) -> Result<(BundleManifest, SignatureStatus)> {
    let checked = check_signature(bytes, signature, &policy.keys);
    let manifest = BundleManifest::parse(bytes, &format!("{origin}: {BUNDLE_FILE}"));
    let checked = match (checked, &manifest) {
        (Ok((key_id, facts)), Ok(manifest)) => match &facts.name {
            Some(name) if *name != manifest.name => Err(Error::untrusted(
                SIGNATURE_FILE,
                format!(
                    "signed for bundle `{name}`, but this bundle is `{}`",
                    manifest.name
                ),
            )),
            _ => Ok(SignatureStatus::Verified { key_id, facts }),
        },
        (Ok(_), Err(_)) => Ok(SignatureStatus::NotVerified {
            reason: "bundle.json does not parse".into(),
        }),
        (Err(e), _) => Err(e),
    };
    let status = match checked {
        Ok(status) => status,
        Err(e) if policy.allow_unsigned => SignatureStatus::NotVerified {
            reason: e.to_string(),
        },
        Err(e) => {
            return Err(Error::Context {
                context: format!("{origin}: refused"),
                inner: Box::new(e),
            }
            .with_hint("--allow-unsigned accepts it, at your own risk"));
        }
    };
    Ok((manifest?, status))
}

/// Signs the bundle's `bundle.json`, writing `bundle.json.minisig`.
pub fn sign(dir: &Path, key: &SigningKey) -> Result<SignedFacts> {
    let _lock = crate::lock::exclusive(dir, "sign")?;
    write_signature(dir, key)
}

/// Signs the bundle.json in `dir` with `key`, for a caller that holds the directory's lock
/// (the build signs what it has just written before it lets go of the directory).
pub fn write_signature(dir: &Path, key: &SigningKey) -> Result<SignedFacts> {
    let path = dir.join(BUNDLE_FILE);
    let bytes = std::fs::read(&path).map_err(|e| Error::io(&path, e))?;
    let manifest = BundleManifest::parse(&bytes, &path.display().to_string())?;
    let comment = SignedFacts::comment(
        &manifest.name,
        &manifest.dify_version,
        &manifest.created,
        &bytes,
    );
    let signature = key.sign(&bytes, &comment)?;
    write_atomically(&dir.join(SIGNATURE_FILE), signature.as_bytes())?;
    Ok(SignedFacts::parse(&comment))
}
