//! A `.difypkg`: a zip of the plugin's files with its signature in the zip comment. Read the
//! way the plugin daemon reads it, so that what we accept is what it accepts:
//!
//! - signed bytes: `sha256(content)` of every zip record in central-directory order (the
//!   `.verification.dify.json` records and duplicates included), then the signing time in
//!   decimal; RSA PKCS#1 v1.5 over SHA-256 of those bytes;
//! - checksum: `sha256` over the distinct paths sorted of `sha256(path) ‖ sha256(content)`;
//! - identifier: `author/name:version@checksum`.

use std::collections::HashMap;

use base64::Engine as _;
use rsa::Pkcs1v15Sign;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use super::archive::{self, Archive};
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
    /// `(path, sha256(content))` for every record in central-directory order, duplicates
    /// included, each hashed as the daemon reads it (the first record of that name).
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
        let archive = Archive::read(bytes)
            .map_err(|e| bad(format!("not a plugin package (.difypkg is a zip): {e}")))?;
        // Every record, in central-directory order, hashed as the daemon hashes it: the content
        // of the first record of that name (see `archive`).
        let first = archive::first_records(&archive.entries);
        let mut digests: HashMap<usize, [u8; 32]> = HashMap::new();
        let mut contents: HashMap<&str, Vec<u8>> = HashMap::new();
        let mut files = Vec::with_capacity(archive.entries.len());
        let mut unpacked = 0u64;
        for entry in &archive.entries {
            let name = entry.name.as_str();
            if entry.is_dir() {
                // `Walk` hands the daemon the directory's name and `ReadFile` of a directory
                // fails ("is a directory"), so the daemon refuses such a package
                // (decoder/zip.go, 0.5.3 and 0.6.10).
                return Err(bad(format!(
                    "directory record `{name}`: the plugin daemon cannot read packages that hold one"
                )));
            }
            if unsafe_path(name) {
                return Err(bad(format!("unsafe path `{name}` in the package")));
            }
            let index = first.get(name).copied().unwrap_or_default();
            let digest = match digests.get(&index) {
                Some(digest) => *digest,
                None => {
                    let content = archive
                        .content(&archive.entries[index], MAX_UNPACKED - unpacked)
                        .map_err(&bad)?;
                    unpacked += content.len() as u64;
                    let digest: [u8; 32] = Sha256::digest(&content).into();
                    digests.insert(index, digest);
                    contents.insert(name, content);
                    digest
                }
            };
            files.push((name.to_owned(), digest));
        }
        let mut take = |name: &str| contents.remove(name);
        let manifest = take(MANIFEST).ok_or_else(|| bad(format!("no {MANIFEST}")))?;
        let manifest: PluginManifest =
            serde_yaml_ng::from_slice(&manifest).map_err(|e| bad(format!("{MANIFEST}: {e}")))?;
        let checksum = checksum(&files);
        Ok(PluginPackage {
            manifest,
            checksum,
            comment: archive.comment.clone(),
            verification: take(VERIFICATION),
            requirements: take("requirements.txt"),
            pyproject: take("pyproject.toml"),
            lock: take("uv.lock"),
            files,
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
        // Exactly what `VerifyPluginWithPublicKeys` hashes (decoder/verifier.go, tags 0.5.3 and
        // 0.6.10): the 32-byte sha256 of every record in central-directory order — the
        // verification record and its duplicates among them — then the signing time in decimal.
        // Nothing follows the time: the signer hashes `.verification.dify.json` as the last
        // record (signer/withkey/sign_with_key.go), not after the time.
        let mut signed = Vec::with_capacity(self.files.len() * 32 + 20);
        for (_, digest) in &self.files {
            signed.extend_from_slice(digest);
        }
        signed.extend_from_slice(parsed.time.to_string().as_bytes());
        let category = match &self.verification {
            Some(bytes) => match serde_json::from_slice::<Verification>(bytes) {
                Ok(v) => Some(v.authorized_category),
                // The daemon refuses a package whose record does not parse (`decode`).
                Err(e) => return invalid(format!("{VERIFICATION}: {e}")),
            },
            None => None,
        };
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

/// `hex(sha256(Σ sha256(path) ‖ sha256(content)))` over the distinct paths, sorted: the daemon
/// keeps one digest per path in a map (`CalculateChecksum`, decoder/checksum.go, 0.5.3 and
/// 0.6.10), so a duplicated record counts once here while it counts twice in the signature.
fn checksum(files: &[(String, [u8; 32])]) -> String {
    let sorted: std::collections::BTreeMap<&str, &[u8; 32]> = files
        .iter()
        .map(|(path, digest)| (path.as_str(), digest))
        .collect();
    let mut hasher = Sha256::new();
    for (path, digest) in sorted {
        hasher.update(Sha256::digest(path.as_bytes()));
        hasher.update(digest);
    }
    hex::encode(hasher.finalize())
}

#[cfg(test)]
pub(crate) mod tests {
    use std::io::{Read, Write};

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

    fn real(name: &str) -> Vec<u8> {
        std::fs::read(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tests/fixtures/plugins")
                .join(name),
        )
        .unwrap()
    }

    /// The records of a real package as `(name, content)`, duplicates included, read with our
    /// own archive reader, and its comment.
    fn records(bytes: &[u8]) -> (Vec<(String, Vec<u8>)>, Vec<u8>) {
        let archive = Archive::read(bytes).unwrap();
        let records = archive
            .entries
            .iter()
            .map(|e| (e.name.clone(), archive.content(e, u64::MAX).unwrap()))
            .collect();
        (records, archive.comment.clone())
    }

    /// A zip of stored records exactly as given (duplicates and directories allowed, which
    /// general zip writers refuse), with `comment`.
    pub fn stored_zip(records: &[(String, Vec<u8>)], comment: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut central = Vec::new();
        for (name, content) in records {
            let offset = out.len() as u32;
            let crc = crc_fast::checksum(crc_fast::CrcAlgorithm::Crc32IsoHdlc, content) as u32;
            let size = content.len() as u32;
            let common = |buf: &mut Vec<u8>| {
                buf.extend_from_slice(&20u16.to_le_bytes()); // version needed
                buf.extend_from_slice(&0u16.to_le_bytes()); // flags
                buf.extend_from_slice(&0u16.to_le_bytes()); // stored
                buf.extend_from_slice(&0u32.to_le_bytes()); // time, date
                buf.extend_from_slice(&crc.to_le_bytes());
                buf.extend_from_slice(&size.to_le_bytes());
                buf.extend_from_slice(&size.to_le_bytes());
                buf.extend_from_slice(&(name.len() as u16).to_le_bytes());
                buf.extend_from_slice(&0u16.to_le_bytes()); // extra
            };
            out.extend_from_slice(&0x0403_4b50u32.to_le_bytes());
            common(&mut out);
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(content);
            central.extend_from_slice(&0x0201_4b50u32.to_le_bytes());
            central.extend_from_slice(&20u16.to_le_bytes()); // made by
            common(&mut central);
            central.extend_from_slice(&[0; 6]); // comment len, disk, internal attrs
            central.extend_from_slice(&0u32.to_le_bytes()); // external attrs
            central.extend_from_slice(&offset.to_le_bytes());
            central.extend_from_slice(name.as_bytes());
        }
        let dir_offset = out.len() as u32;
        out.extend_from_slice(&central);
        out.extend_from_slice(&0x0605_4b50u32.to_le_bytes());
        out.extend_from_slice(&[0; 4]);
        out.extend_from_slice(&(records.len() as u16).to_le_bytes());
        out.extend_from_slice(&(records.len() as u16).to_le_bytes());
        out.extend_from_slice(&(central.len() as u32).to_le_bytes());
        out.extend_from_slice(&dir_offset.to_le_bytes());
        out.extend_from_slice(&(comment.len() as u16).to_le_bytes());
        out.extend_from_slice(comment);
        out
    }

    /// Every package the marketplace serves today verifies with the official key, as the
    /// daemon verifies it (identifiers as the daemon named its stored copies; see
    /// tests/fixtures/plugins and ../shared/fixtures/README.md).
    #[test]
    fn every_real_marketplace_package_verifies() {
        let cases = [
            (
                "langgenius-agent_0.0.14.difypkg",
                "langgenius/agent:0.0.14@26958a0e80a10655ce73812bdb7c35a66ce7b16f5ac346d298bda17ff85efd1e",
                None,
            ),
            (
                "langgenius-openai_0.0.29.difypkg",
                "langgenius/openai:0.0.29@",
                Some("langgenius"),
            ),
            (
                "langgenius-chart_0.0.2.difypkg",
                "langgenius/chart:0.0.2@",
                Some("langgenius"),
            ),
            (
                "kurokobo-knowledge_toolbox_0.0.1.difypkg",
                "kurokobo/knowledge_toolbox:0.0.1@",
                Some("community"),
            ),
            (
                "langgenius-openai_api_compatible_0.0.45.difypkg",
                "langgenius/openai_api_compatible:0.0.45@",
                Some("langgenius"),
            ),
        ];
        for (file, identifier, category) in cases {
            let package = PluginPackage::read(&real(file), file).unwrap();
            assert!(
                package.identifier().starts_with(identifier),
                "{file}: {}",
                package.identifier()
            );
            match package.check_signature(&official()) {
                SignatureCheck::Verified {
                    key, category: got, ..
                } => {
                    assert_eq!(key, "official");
                    assert_eq!(got.as_deref(), category, "{file}");
                }
                other => panic!("{file}: {other:?}"),
            }
        }
    }

    #[test]
    fn duplicate_verification_records_each_count() {
        let bytes = real("langgenius-chart_0.0.2.difypkg");
        let (records, comment) = records(&bytes);
        assert_eq!(records.len(), 16);
        let dups = records.iter().filter(|(n, _)| n == VERIFICATION).count();
        assert_eq!(dups, 2, "the fixture carries two verification records");
        // Written again exactly as it was (stored instead of deflated): still verifies.
        let same = PluginPackage::read(&stored_zip(&records, &comment), "same").unwrap();
        assert_eq!(same.files.len(), 16);
        assert!(same.check_signature(&official()).is_verified());
        let original = PluginPackage::read(&bytes, "chart").unwrap();
        assert_eq!(same.checksum, original.checksum);
        // One of the two removed: refused, and the identifier does not change (the
        // daemon's checksum keeps one digest per path).
        let mut one = records.clone();
        let last = one.iter().rposition(|(n, _)| n == VERIFICATION).unwrap();
        one.remove(last);
        let one = PluginPackage::read(&stored_zip(&one, &comment), "one").unwrap();
        assert_eq!(one.checksum, original.checksum);
        match one.check_signature(&official()) {
            SignatureCheck::Invalid { reason } => {
                assert!(reason.contains("does not match"), "{reason}")
            }
            other => panic!("{other:?}"),
        }
        // The daemon reads a duplicated name as its first record: a changed second copy is
        // hashed as the first, exactly as the daemon hashes it.
        let mut second = records.clone();
        second[last].1 = br#"{"authorized_category":"partner"}"#.to_vec();
        let second = PluginPackage::read(&stored_zip(&second, &comment), "second").unwrap();
        assert_eq!(
            second.check_signature(&official()),
            original.check_signature(&official())
        );
    }

    #[test]
    fn current_packages_refuse_a_changed_file_time_or_record() {
        let bytes = real("langgenius-openai_0.0.29.difypkg");
        let (records, comment) = records(&bytes);
        let refused = |records: &[(String, Vec<u8>)], comment: &[u8], why: &str| {
            let package = PluginPackage::read(&stored_zip(records, comment), why).unwrap();
            match package.check_signature(&official()) {
                SignatureCheck::Invalid { reason } => {
                    assert!(reason.contains("does not match"), "{why}: {reason}")
                }
                other => panic!("{why}: {other:?}"),
            }
        };
        assert!(
            PluginPackage::read(&stored_zip(&records, &comment), "same")
                .unwrap()
                .check_signature(&official())
                .is_verified()
        );
        let mut changed = records.clone();
        changed[0].1.push(b'\n');
        refused(&changed, &comment, "a file changed");
        let mut category = records.clone();
        let at = category
            .iter()
            .position(|(n, _)| n == VERIFICATION)
            .unwrap();
        category[at].1 = br#"{"authorized_category":"partner"}"#.to_vec();
        refused(&category, &comment, "the category changed");
        let mut dropped = records.clone();
        dropped.remove(at);
        refused(&dropped, &comment, "the record removed");
        let time = String::from_utf8(comment.clone()).unwrap();
        let parsed: serde_json::Value = serde_json::from_str(&time).unwrap();
        let t = parsed["time"].as_i64().unwrap();
        let retimed = time.replace(&t.to_string(), &(t + 1).to_string());
        refused(&records, retimed.as_bytes(), "the time changed");
        // A directory record: the daemon cannot read it back, so neither do we.
        let mut directory = records.clone();
        directory.insert(0, ("provider/".into(), Vec::new()));
        let err = PluginPackage::read(&stored_zip(&directory, &comment), "dir.difypkg")
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("directory record `provider/`"), "{err}");
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
