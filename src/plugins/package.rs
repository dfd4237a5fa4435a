//! A `.difypkg`: a zip of the plugin's files with its signature in the zip comment. Read the
//! way the plugin daemon reads it, so that what we accept is what it accepts:
//!
//! - signed bytes: `sha256(content)` of every file in zip order, then the signing time in
//!   decimal, then — when `.verification.dify.json` is present — its `{"authorized_category":…}`;
//!   RSA PKCS#1 v1.5 over SHA-256 of those bytes;
//! - checksum: `sha256` over the files sorted by path of `sha256(path) ‖ sha256(content)`;
//! - identifier: `author/name:version@checksum`.

use std::io::Read;

use base64::Engine as _;
use rsa::Pkcs1v15Sign;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use super::key::PluginKey;
use crate::error::{Error, Result};

const MANIFEST: &str = "manifest.yaml";
const VERIFICATION: &str = ".verification.dify.json";
/// No plugin package comes close; a zip bomb would.
const MAX_UNPACKED: u64 = 512 << 20;
/// DER prefix of a SHA-256 DigestInfo (RFC 8017, 9.2).
const SHA256_PREFIX: [u8; 19] = [
    0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01, 0x05,
    0x00, 0x04, 0x20,
];

/// What `manifest.yaml` says about the plugin (only what we need).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct PluginManifest {
    pub author: String,
    pub name: String,
    pub version: String,
    #[serde(default)]
    pub meta: Meta,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Meta {
    #[serde(default)]
    pub arch: Vec<String>,
    #[serde(default)]
    pub runner: Runner,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Runner {
    #[serde(default)]
    pub language: String,
    #[serde(default)]
    pub version: String,
}

/// The outcome of checking a package's signature.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum SignatureCheck {
    Verified {
        key: String,
        /// From `.verification.dify.json` (`langgenius`, `partner`, `community`).
        category: Option<String>,
        time: i64,
    },
    Unsigned,
    Invalid {
        reason: String,
    },
}

impl SignatureCheck {
    pub fn is_verified(&self) -> bool {
        matches!(self, SignatureCheck::Verified { .. })
    }
}

#[derive(Deserialize)]
struct Comment {
    signature: String,
    time: i64,
}

#[derive(Deserialize)]
struct Verification {
    authorized_category: String,
}

/// A package read into memory, every file hashed.
#[derive(Clone)]
pub struct PluginPackage {
    pub manifest: PluginManifest,
    /// `(path, sha256(content))` in zip order.
    pub files: Vec<(String, [u8; 32])>,
    pub checksum: String,
    comment: Vec<u8>,
    verification: Option<Vec<u8>>,
    requirements: Option<Vec<u8>>,
    pyproject: Option<Vec<u8>>,
    lock: Option<Vec<u8>>,
}

fn unsafe_path(name: &str) -> bool {
    name.is_empty()
        || name.starts_with('/')
        || name.contains('\\')
        || name.split('/').any(|part| part == "..")
}

impl PluginPackage {
    /// Reads a package; `origin` names it in errors.
    pub fn read(bytes: &[u8], origin: &str) -> Result<PluginPackage> {
        let bad = |why: String| Error::invalid(format!("{origin}: {why}"));
        let mut archive = zip::ZipArchive::new(std::io::Cursor::new(bytes))
            .map_err(|e| bad(format!("not a plugin package (.difypkg is a zip): {e}")))?;
        let comment = archive.comment().to_vec();
        let mut files = Vec::new();
        let mut manifest = None;
        let mut verification = None;
        let mut requirements = None;
        let mut pyproject = None;
        let mut lock = None;
        let mut unpacked = 0u64;
        for index in 0..archive.len() {
            let mut entry = archive
                .by_index(index)
                .map_err(|e| bad(format!("entry {index}: {e}")))?;
            if entry.is_dir() {
                continue;
            }
            let name = entry
                .name()
                .map_err(|e| bad(format!("entry {index}: {e}")))?
                .into_owned();
            if unsafe_path(&name) {
                return Err(bad(format!("unsafe path `{name}` in the package")));
            }
            let mut content = Vec::new();
            (&mut entry)
                .take(MAX_UNPACKED - unpacked + 1)
                .read_to_end(&mut content)
                .map_err(|e| bad(format!("{name}: {e}")))?;
            unpacked += content.len() as u64;
            if unpacked > MAX_UNPACKED {
                return Err(bad(format!(
                    "unpacks to more than {} MiB",
                    MAX_UNPACKED >> 20
                )));
            }
            let digest: [u8; 32] = Sha256::digest(&content).into();
            files.push((name.clone(), digest));
            match name.as_str() {
                MANIFEST => manifest = Some(content),
                VERIFICATION => verification = Some(content),
                "requirements.txt" => requirements = Some(content),
                "pyproject.toml" => pyproject = Some(content),
                "uv.lock" => lock = Some(content),
                _ => {}
            }
        }
        let manifest = manifest.ok_or_else(|| bad(format!("no {MANIFEST}")))?;
        let manifest: PluginManifest =
            serde_yaml_ng::from_slice(&manifest).map_err(|e| bad(format!("{MANIFEST}: {e}")))?;
        let checksum = checksum(&files);
        Ok(PluginPackage {
            manifest,
            files,
            checksum,
            comment,
            verification,
            requirements,
            pyproject,
            lock,
        })
    }

    /// `author/name:version@checksum`, the daemon's unique identifier.
    pub fn identifier(&self) -> String {
        format!(
            "{}/{}:{}@{}",
            self.manifest.author, self.manifest.name, self.manifest.version, self.checksum
        )
    }

    /// `author/name`.
    pub fn id(&self) -> String {
        format!("{}/{}", self.manifest.author, self.manifest.name)
    }

    pub fn requirements(&self) -> Option<&[u8]> {
        self.requirements.as_deref()
    }

    pub fn pyproject(&self) -> Option<&[u8]> {
        self.pyproject.as_deref()
    }

    pub fn lock(&self) -> Option<&[u8]> {
        self.lock.as_deref()
    }

    /// Checks the signature against `keys` (any one may vouch).
    pub fn check_signature(&self, keys: &[PluginKey]) -> SignatureCheck {
        let comment = String::from_utf8_lossy(&self.comment);
        if comment.trim().is_empty() {
            return SignatureCheck::Unsigned;
        }
        let invalid = |reason: String| SignatureCheck::Invalid { reason };
        let parsed: Comment = match serde_json::from_str(comment.trim()) {
            Ok(parsed) => parsed,
            Err(e) => return invalid(format!("the zip comment is not a signature record: {e}")),
        };
        let signature = match base64::engine::general_purpose::STANDARD.decode(&parsed.signature) {
            Ok(signature) => signature,
            Err(e) => return invalid(format!("the signature is not base64: {e}")),
        };
        let mut signed = Vec::with_capacity(self.files.len() * 32 + 64);
        for (_, digest) in &self.files {
            signed.extend_from_slice(digest);
        }
        signed.extend_from_slice(parsed.time.to_string().as_bytes());
        let mut category = None;
        if let Some(bytes) = &self.verification {
            match serde_json::from_slice::<Verification>(bytes) {
                Ok(v) => {
                    // The daemon signs the record as Go marshals it: compact, one field.
                    signed.extend_from_slice(
                        serde_json::json!({ "authorized_category": v.authorized_category })
                            .to_string()
                            .as_bytes(),
                    );
                    category = Some(v.authorized_category);
                }
                Err(e) => return invalid(format!("{VERIFICATION}: {e}")),
            }
        }
        let hashed = Sha256::digest(&signed);
        let scheme = || Pkcs1v15Sign {
            hash_len: Some(32),
            prefix: SHA256_PREFIX.to_vec().into_boxed_slice(),
        };
        for key in keys {
            if key.key.verify(scheme(), &hashed, &signature).is_ok() {
                return SignatureCheck::Verified {
                    key: key.name.clone(),
                    category,
                    time: parsed.time,
                };
            }
        }
        let names: Vec<&str> = keys.iter().map(|k| k.name.as_str()).collect();
        invalid(format!(
            "the signature does not match the package's contents under any trusted key ({}): a file was changed, added or removed after signing, or another key signed it",
            names.join(", ")
        ))
    }
}

/// `hex(sha256(Σ sha256(path) ‖ sha256(content)))` over the files sorted by path.
fn checksum(files: &[(String, [u8; 32])]) -> String {
    let mut sorted: Vec<&(String, [u8; 32])> = files.iter().collect();
    sorted.sort_by(|a, b| a.0.cmp(&b.0));
    let mut hasher = Sha256::new();
    for (path, digest) in sorted {
        hasher.update(Sha256::digest(path.as_bytes()));
        hasher.update(digest);
    }
    hex::encode(hasher.finalize())
}

#[cfg(test)]
pub(crate) mod tests {
    use std::io::Write;

    use super::*;

    pub fn fixture() -> Vec<u8> {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/plugins/langgenius-agent_0.0.14.difypkg");
        std::fs::read(path).unwrap()
    }

    /// The fixture's files, changed by `edit`, zipped again with `comment`.
    pub fn repack(edit: impl Fn(&mut Vec<(String, Vec<u8>)>), comment: Option<&[u8]>) -> Vec<u8> {
        let bytes = fixture();
        let mut archive = zip::ZipArchive::new(std::io::Cursor::new(&bytes)).unwrap();
        let original_comment = archive.comment().to_vec();
        let mut files = Vec::new();
        for i in 0..archive.len() {
            let mut entry = archive.by_index(i).unwrap();
            let name = entry.name().unwrap().into_owned();
            let mut content = Vec::new();
            entry.read_to_end(&mut content).unwrap();
            files.push((name, content));
        }
        edit(&mut files);
        let mut out = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
        for (name, content) in &files {
            out.start_file(name, zip::write::SimpleFileOptions::default())
                .unwrap();
            out.write_all(content).unwrap();
        }
        out.set_raw_comment(comment.unwrap_or(&original_comment).to_vec().into())
            .unwrap();
        out.finish().unwrap().into_inner()
    }

    fn official() -> Vec<PluginKey> {
        vec![PluginKey::official().unwrap()]
    }

    #[test]
    fn the_official_agent_plugin_verifies() {
        let package = PluginPackage::read(&fixture(), "agent").unwrap();
        assert_eq!(package.id(), "langgenius/agent");
        assert_eq!(package.manifest.version, "0.0.14");
        assert_eq!(package.manifest.meta.runner.version, "3.12");
        assert_eq!(package.manifest.meta.arch, ["amd64", "arm64"]);
        assert!(package.identifier().starts_with("langgenius/agent:0.0.14@"));
        assert_eq!(package.checksum.len(), 64);
        assert_eq!(
            package.check_signature(&official()),
            SignatureCheck::Verified {
                key: "official".into(),
                category: None,
                time: 1744632035
            }
        );
        assert!(
            String::from_utf8_lossy(package.requirements().unwrap())
                .contains("dify_plugin==0.0.1b75")
        );
        // Re-zipping the same files in the same order keeps the checksum and the signature.
        let same = PluginPackage::read(&repack(|_| {}, None), "same").unwrap();
        assert_eq!(same.checksum, package.checksum);
        assert!(same.check_signature(&official()).is_verified());
    }

    #[test]
    fn tampered_packages_are_refused_with_the_reason() {
        let changed = repack(
            |files| {
                let main = files.iter_mut().find(|(n, _)| n == "main.py").unwrap();
                main.1.extend_from_slice(b"\nimport os; os.system('id')\n");
            },
            None,
        );
        let changed = PluginPackage::read(&changed, "changed").unwrap();
        let original = PluginPackage::read(&fixture(), "agent").unwrap();
        assert_ne!(
            changed.checksum, original.checksum,
            "the identifier changes too"
        );
        match changed.check_signature(&official()) {
            SignatureCheck::Invalid { reason } => {
                assert!(reason.contains("does not match"), "{reason}")
            }
            other => panic!("{other:?}"),
        }
        let added = repack(
            |files| files.push(("extra.py".into(), b"x = 1".to_vec())),
            None,
        );
        assert!(
            !PluginPackage::read(&added, "added")
                .unwrap()
                .check_signature(&official())
                .is_verified()
        );
        let reordered = repack(|files| files.reverse(), None);
        assert!(
            !PluginPackage::read(&reordered, "reordered")
                .unwrap()
                .check_signature(&official())
                .is_verified()
        );
        let unsigned = repack(|_| {}, Some(b""));
        assert_eq!(
            PluginPackage::read(&unsigned, "unsigned")
                .unwrap()
                .check_signature(&official()),
            SignatureCheck::Unsigned
        );
        let retimed = repack(
            |_| {},
            Some(
                String::from_utf8(fixture_comment())
                    .unwrap()
                    .replace("1744632035", "1744632036")
                    .as_bytes(),
            ),
        );
        assert!(
            !PluginPackage::read(&retimed, "retimed")
                .unwrap()
                .check_signature(&official())
                .is_verified()
        );
        let category = repack(
            |files| {
                files.push((
                    VERIFICATION.into(),
                    br#"{"authorized_category":"langgenius"}"#.to_vec(),
                ))
            },
            None,
        );
        assert!(
            !PluginPackage::read(&category, "category")
                .unwrap()
                .check_signature(&official())
                .is_verified()
        );
        let garbage = repack(|_| {}, Some(b"{\"signature\":\"!!\",\"time\":1}"));
        match PluginPackage::read(&garbage, "garbage")
            .unwrap()
            .check_signature(&official())
        {
            SignatureCheck::Invalid { reason } => assert!(reason.contains("base64"), "{reason}"),
            other => panic!("{other:?}"),
        }
        // Another key does not vouch for it.
        let other_key = PluginKey::parse(OTHER_KEY, "other.pem").unwrap();
        match original.check_signature(&[other_key]) {
            SignatureCheck::Invalid { reason } => assert!(reason.contains("other.pem"), "{reason}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn malformed_packages_name_the_problem() {
        let error = |bytes: &[u8]| {
            PluginPackage::read(bytes, "p.difypkg")
                .err()
                .unwrap()
                .to_string()
        };
        assert!(error(b"not a zip").contains("not a plugin package"));
        let escaping = repack(
            |files| files.push(("../evil.py".into(), b"".to_vec())),
            None,
        );
        assert!(error(&escaping).contains("unsafe path `../evil.py`"));
        let no_manifest = repack(|files| files.retain(|(n, _)| n != MANIFEST), None);
        assert!(error(&no_manifest).contains("no manifest.yaml"));
        assert!(
            PluginKey::parse(
                "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----",
                "k.pem"
            )
            .unwrap_err()
            .to_string()
            .contains("PKCS#1")
        );
    }

    fn fixture_comment() -> Vec<u8> {
        zip::ZipArchive::new(std::io::Cursor::new(fixture()))
            .unwrap()
            .comment()
            .to_vec()
    }

    /// An unrelated RSA-2048 public key.
    const OTHER_KEY: &str = "-----BEGIN RSA PUBLIC KEY-----
MIIBCgKCAQEAwtOvCDtqIcSsbvTLcbb+Ul5ofCUb8NSFb2m5iw0LqqyxaZ/Srl8A
nXkt3tttZMqjN9DyM2ym3TYTPodEhklsgVZvxCzkXfshAB8ZNSGWtw5S0NxZxL7l
IoUoFx+CqwhTwbt4QI1fCvZcpt9dr0kwrGJTPaN6APoMTSuZkd2cMz7NSKhqc8qS
T7UsUw+5CfUq2SW2VdK9UDyTIGuHQvRXKGxb6S1L7gRJAb0G/7wjOIm2JgAqyr/p
8yrOHE/j5kdVnTpzFSGu/LjbRh4Ygn+4YGlObdxT1J4Qx2BNTqgmVnH9y+g1emAV
lCjTGN10pLCQe/3hqM8ZpsuHbMLx6DPU7wIDAQAB
-----END RSA PUBLIC KEY-----";
}
