//! Minisign keys and signatures over `bundle.json`: generating key pairs, signing, and
//! checking a signature against trusted public keys. Signatures interoperate with the
//! `minisign` command-line tool both ways.

use std::io::Cursor;
use std::path::{Path, PathBuf};

use minisign::{KeyPair, PublicKey, PublicKeyBox, SecretKey, SecretKeyBox, SignatureBox};
use serde::Serialize;

use crate::digest::Digest;
use crate::error::{Error, Result};

/// Where a secret key's password comes from.
#[derive(Clone, Debug)]
pub enum Password {
    /// Ask on the terminal.
    Prompt,
    Given(String),
    /// The key is (to be) stored unencrypted.
    None,
}

fn key_error(path: &Path, what: &str, e: impl std::fmt::Display) -> Error {
    Error::invalid(format!("{}: {what}: {e}", path.display()))
}

/// Minisign's key ID: the key number as 16 hex digits.
pub fn key_id(keynum: &[u8]) -> String {
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(&keynum[..8.min(keynum.len())]);
    format!("{:016X}", u64::from_le_bytes(bytes))
}

/// The ID of the key that made a signature, without checking it.
pub fn signer_of(signature: &str) -> Option<String> {
    SignatureBox::from_string(signature)
        .ok()
        .map(|s| key_id(s.keynum()))
}

/// `STEM.EXT`, keeping every dot of the stem (`team.prod` → `team.prod.key`); a stem that
/// already ends in `.key` or `.pub` is taken without it.
fn key_file(stem: &Path, ext: &str) -> PathBuf {
    let stem = match stem.extension().and_then(|e| e.to_str()) {
        Some("key" | "pub") => stem.with_extension(""),
        _ => stem.to_owned(),
    };
    let mut name = stem.into_os_string();
    name.push(".");
    name.push(ext);
    PathBuf::from(name)
}

/// Writes `STEM.key` (secret, mode 0600) and `STEM.pub`. Refuses to overwrite either.
pub fn generate_key(stem: &Path, password: Password) -> Result<(PathBuf, PathBuf, String)> {
    let secret_path = key_file(stem, "key");
    let public_path = key_file(stem, "pub");
    for path in [&secret_path, &public_path] {
        if path.exists() {
            return Err(Error::invalid(format!("{} already exists", path.display()))
                .with_hint("remove it or choose another --out"));
        }
    }
    let pair = match password {
        Password::None => KeyPair::generate_unencrypted_keypair(),
        Password::Given(p) => KeyPair::generate_encrypted_keypair(Some(p)),
        Password::Prompt => KeyPair::generate_encrypted_keypair(None),
    }
    .map_err(|e| key_error(&secret_path, "cannot generate a key pair", e))?;
    let id = key_id(pair.pk.keynum());
    let secret = pair
        .sk
        .to_box(Some(&format!("dify-bundle secret key {id}")))
        .map_err(|e| key_error(&secret_path, "cannot encode the secret key", e))?
        .to_string();
    let public = pair
        .pk
        .to_box()
        .map_err(|e| key_error(&public_path, "cannot encode the public key", e))?
        .to_string();
    write_private(&secret_path, secret.as_bytes())?;
    std::fs::write(&public_path, public).map_err(|e| Error::io(&public_path, e))?;
    Ok((secret_path, public_path, id))
}

fn write_private(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path).map_err(|e| Error::io(path, e))?;
    file.write_all(bytes).map_err(|e| Error::io(path, e))
}

/// A secret key ready to sign, with its ID.
pub struct SigningKey {
    key: SecretKey,
    pub id: String,
}

impl SigningKey {
    /// Loads a secret key; an encrypted one is decrypted with `password`.
    pub fn load(path: &Path, password: Password) -> Result<SigningKey> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let boxed = SecretKeyBox::from_string(&text)
            .map_err(|e| key_error(path, "not a minisign secret key", e))?;
        let encrypted = SecretKey::from_unencrypted_box(boxed.clone())
            .map(|k| k.is_encrypted())
            .unwrap_or(true);
        let key = if !encrypted {
            SecretKey::from_unencrypted_box(boxed)
        } else {
            match password {
                Password::Given(p) => boxed.into_secret_key(Some(p)),
                Password::Prompt => boxed.into_secret_key(None),
                Password::None => {
                    return Err(Error::invalid(format!(
                        "{}: the key is password-protected",
                        path.display()
                    ))
                    .with_hint("give the password with --password-env VAR or at the prompt"));
                }
            }
        }
        .map_err(|e| key_error(path, "cannot open the secret key (wrong password?)", e))?;
        let id = key_id(key.keynum());
        Ok(SigningKey { key, id })
    }

    /// Signs `bytes` with a one-line trusted comment.
    pub fn sign(&self, bytes: &[u8], trusted_comment: &str) -> Result<String> {
        let untrusted = format!("signature from dify-bundle secret key {}", self.id);
        let signature = minisign::sign(
            None,
            &self.key,
            Cursor::new(bytes),
            Some(trusted_comment),
            Some(&untrusted),
        )
        .map_err(|e| Error::invalid(format!("signing failed: {e}")))?;
        Ok(signature.into_string())
    }
}

/// Public keys whose signatures are accepted.
#[derive(Clone, Default)]
pub struct TrustedKeys {
    keys: Vec<(String, PublicKey)>,
}

impl TrustedKeys {
    /// Loads public key files (minisign `.pub` format, or the bare base64 key line).
    pub fn load(paths: &[PathBuf]) -> Result<TrustedKeys> {
        let mut keys = Vec::new();
        for path in paths {
            let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
            let key = PublicKeyBox::from_string(&text)
                .and_then(PublicKeyBox::into_public_key)
                .or_else(|_| PublicKey::from_base64(text.trim()))
                .map_err(|e| key_error(path, "not a minisign public key", e))?;
            keys.push((path.display().to_string(), key));
        }
        Ok(TrustedKeys { keys })
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    pub fn ids(&self) -> Vec<String> {
        self.keys.iter().map(|(_, k)| key_id(k.keynum())).collect()
    }

    /// Checks a minisign signature over `bytes`. Returns the signing key's ID and the
    /// trusted comment.
    pub fn check(&self, bytes: &[u8], signature: &str, what: &str) -> Result<(String, String)> {
        let signature = SignatureBox::from_string(signature)
            .map_err(|e| Error::untrusted(what, format!("malformed signature: {e}")))?;
        let signer = key_id(signature.keynum());
        let Some((_, key)) = self
            .keys
            .iter()
            .find(|(_, k)| k.keynum() == signature.keynum())
        else {
            return Err(Error::untrusted(
                what,
                format!(
                    "signed by key {signer}, which is not trusted (trusted: {})",
                    self.ids().join(", ")
                ),
            ));
        };
        minisign::verify(key, &signature, Cursor::new(bytes), true, false, false).map_err(|e| {
            Error::untrusted(
                what,
                format!("signature by key {signer} does not verify: {e}"),
            )
        })?;
        let comment = signature
            .trusted_comment()
            .map_err(|e| Error::untrusted(what, format!("unreadable trusted comment: {e}")))?;
        Ok((signer, comment))
    }
}

/// The facts a bundle signature's trusted comment carries.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct SignedFacts {
    pub name: Option<String>,
    pub dify_version: Option<String>,
    pub created: Option<String>,
    pub sha256: Option<String>,
}

impl SignedFacts {
    pub fn comment(name: &str, dify_version: &str, created: &str, bundle_json: &[u8]) -> String {
        format!(
            "dify-bundle name={name} dify={dify_version} created={created} sha256={}",
            Digest::of(bundle_json).hex()
        )
    }

    /// Reads `key=value` words of a trusted comment; other words are ignored, so signatures
    /// made by hand with the minisign tool are accepted.
    pub fn parse(comment: &str) -> SignedFacts {
        let mut facts = SignedFacts::default();
        for word in comment.split_whitespace() {
            match word.split_once('=') {
                Some(("name", v)) => facts.name = Some(v.to_owned()),
                Some(("dify", v)) => facts.dify_version = Some(v.to_owned()),
                Some(("created", v)) => facts.created = Some(v.to_owned()),
                Some(("sha256", v)) => facts.sha256 = Some(v.to_owned()),
                _ => {}
            }
        }
        facts
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_that_do_not_hold_are_untrusted() {
        let dir = tempfile::tempdir().unwrap();
        let (secret, public, _) = generate_key(&dir.path().join("a"), Password::None).unwrap();
        let (_, other, _) = generate_key(&dir.path().join("b"), Password::None).unwrap();
        let signature = SigningKey::load(&secret, Password::None)
            .unwrap()
            .sign(b"bundle", "comment")
            .unwrap();
        let trusted = TrustedKeys::load(&[public]).unwrap();
        assert!(trusted.check(b"bundle", &signature, "x").is_ok());
        let stranger = TrustedKeys::load(&[other]).unwrap();
        for refused in [
            trusted.check(b"bundle!", &signature, "x"),
            stranger.check(b"bundle", &signature, "x"),
            trusted.check(b"bundle", "not a signature", "x"),
        ] {
            assert!(
                matches!(refused, Err(Error::Untrusted { .. })),
                "{refused:?}"
            );
        }
    }

    #[test]
    fn key_files_keep_every_dot_of_the_stem() {
        assert_eq!(
            key_file(Path::new("keys/team.prod"), "key"),
            Path::new("keys/team.prod.key")
        );
        assert_eq!(key_file(Path::new("k"), "pub"), Path::new("k.pub"));
        assert_eq!(key_file(Path::new("k.key"), "pub"), Path::new("k.pub"));
    }
}
