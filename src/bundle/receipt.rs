//! A receipt (format `dify-bundle/receipt/v1`): what a destination already holds, written
//! inside by `dify-bundle receipt` and carried out so that `build --since` can leave out
//! what need not travel again. It is a small JSON file: the deployed bundle's identity, and
//! the blobs present in each role's ECR repository and in the S3 prefix bundles are uploaded
//! to. It is advice, not trust: a delta built from it is still checked at install, before any
//! change, against what the destination really holds.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::digest::Digest;
use crate::error::{Error, Result};

pub const RECEIPT_FORMAT: &str = "dify-bundle/receipt/v1";

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Receipt {
    pub format: String,
    /// RFC 3339, UTC.
    pub created: String,
    /// The registry the repositories are in (`<account>.dkr.ecr.<region>.amazonaws.com`).
    pub registry: String,
    /// The application stack the receipt was taken of.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stack: Option<String>,
    /// The bundle that stack was deployed from, when the stack records it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deployed: Option<Deployed>,
    /// Each image role's repository and every blob it holds, under any tag.
    pub repositories: Vec<RepositoryBlobs>,
    /// The S3 prefix bundles are uploaded to and the blobs it holds, when one was given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub s3: Option<PrefixBlobs>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Deployed {
    pub bundle: Option<String>,
    pub dify_version: Option<String>,
    /// The sha256 of its bundle.json.
    pub bundle_json: Option<Digest>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RepositoryBlobs {
    pub role: String,
    pub repository: String,
    /// Every config and layer of every image the repository holds.
    pub blobs: BTreeSet<Digest>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PrefixBlobs {
    /// `s3://bucket/prefix`.
    pub location: String,
    pub blobs: BTreeSet<Digest>,
}

impl Receipt {
    pub fn read(path: &Path) -> Result<Receipt> {
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        Receipt::parse(&bytes, &path.display().to_string())
    }

    pub fn parse(bytes: &[u8], origin: &str) -> Result<Receipt> {
        let receipt: Receipt = serde_json::from_slice(bytes)
            .map_err(|e| Error::invalid(format!("{origin}: not a receipt: {e}")))?;
        if receipt.format != RECEIPT_FORMAT {
            return Err(Error::invalid(format!(
                "{origin}: receipt format `{}` is not supported by this version (expected {RECEIPT_FORMAT})",
                receipt.format
            )));
        }
        Ok(receipt)
    }

    /// Writes the receipt as pretty JSON, atomically: under a temporary name beside `path`,
    /// then renamed, so a reader never sees half a receipt.
    pub fn write(&self, path: &Path) -> Result<()> {
        crate::store::layout::write_json(path, self)
    }

    /// What each role's destination holds: its repository's blobs, and whatever the S3
    /// prefix holds (install can read those from there whatever the role).
    pub fn held_by_role(&self) -> BTreeMap<String, BTreeSet<Digest>> {
        let shared = self.s3.as_ref().map(|s| &s.blobs);
        self.repositories
            .iter()
            .map(|r| {
                let mut blobs = r.blobs.clone();
                blobs.extend(shared.into_iter().flatten().cloned());
                (r.role.clone(), blobs)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_receipt_round_trips_and_other_files_are_refused() {
        let receipt = Receipt {
            format: RECEIPT_FORMAT.to_owned(),
            created: "2026-12-05T00:00:00Z".to_owned(),
            registry: "r".to_owned(),
            repositories: vec![RepositoryBlobs {
                role: "api".to_owned(),
                repository: "dify/dify-api".to_owned(),
                blobs: [Digest::of(b"a")].into(),
            }],
            s3: Some(PrefixBlobs {
                location: "s3://b/p".to_owned(),
                blobs: [Digest::of(b"s")].into(),
            }),
            ..Receipt::default()
        };
        let bytes = serde_json::to_vec(&receipt).unwrap();
        assert_eq!(Receipt::parse(&bytes, "r.json").unwrap(), receipt);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.json");
        receipt.write(&path).unwrap();
        assert_eq!(Receipt::read(&path).unwrap(), receipt);
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            1,
            "no temporary left"
        );
        let held = receipt.held_by_role();
        assert_eq!(held["api"].len(), 2);
        assert!(Receipt::parse(b"{\"format\":\"dify-bundle/v1\"}", "x").is_err());
        let other = serde_json::to_vec(&Receipt {
            format: "dify-bundle/receipt/v9".to_owned(),
            ..receipt
        })
        .unwrap();
        let e = Receipt::parse(&other, "x").unwrap_err().to_string();
        assert!(e.contains("not supported"), "{e}");
    }
}
