//! OCI and Docker v2 image formats: media types, descriptors, platforms, and parsing of
//! manifests and indexes. Raw bytes are always kept beside the parsed form, because
//! re-serialising a manifest would change its digest.

pub mod layer;
pub mod mutate;

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::digest::Digest;
use crate::error::{Error, Result};

pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
pub const DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";

/// The `Accept` header for manifest requests: every form we understand.
pub const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.index.v1+json, \
application/vnd.docker.distribution.manifest.list.v2+json, \
application/vnd.oci.image.manifest.v1+json, \
application/vnd.docker.distribution.manifest.v2+json";

/// Annotation carrying the name a layout entry is referred to by (`oci:DIR:NAME`).
pub const ANNOTATION_REF_NAME: &str = "org.opencontainers.image.ref.name";
/// Annotations Docker buildx puts on attestation manifests inside an index.
pub const ANNOTATION_REFERENCE_TYPE: &str = "vnd.docker.reference.type";
pub const ANNOTATION_REFERENCE_DIGEST: &str = "vnd.docker.reference.digest";

pub fn is_index(media_type: &str) -> bool {
    media_type == OCI_INDEX || media_type == DOCKER_LIST
}

pub fn is_image_manifest(media_type: &str) -> bool {
    media_type == OCI_MANIFEST || media_type == DOCKER_MANIFEST
}

/// A pointer to content: media type, digest and size (and, in indexes, a platform).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    pub media_type: String,
    pub digest: Digest,
    pub size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
}

impl Descriptor {
    pub fn new(media_type: impl Into<String>, digest: Digest, size: u64) -> Self {
        Descriptor {
            media_type: media_type.into(),
            digest,
            size,
            platform: None,
            annotations: None,
        }
    }

    pub fn annotation(&self, key: &str) -> Option<&str> {
        self.annotations.as_ref()?.get(key).map(String::as_str)
    }

    /// Docker buildx stores provenance/SBOM attestations as manifests with platform
    /// `unknown/unknown` that point at the image manifest they describe.
    pub fn is_attestation(&self) -> bool {
        self.annotation(ANNOTATION_REFERENCE_TYPE) == Some("attestation-manifest")
            || self
                .platform
                .as_ref()
                .is_some_and(|p| p.os == "unknown" && p.architecture == "unknown")
    }
}

/// An operating system / architecture (/ variant) triple such as `linux/arm64/v8`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Platform {
    pub architecture: String,
    pub os: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
    #[serde(
        rename = "os.version",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub os_version: Option<String>,
}

impl Platform {
    /// Whether `self` (a requested platform) selects `candidate` (a platform in an index).
    /// A request without a variant accepts any variant (`linux/arm64` selects `linux/arm64/v8`).
    pub fn selects(&self, candidate: &Platform) -> bool {
        self.os == candidate.os
            && self.architecture == candidate.architecture
            && (self.variant.is_none() || self.variant == candidate.variant)
    }
}

impl FromStr for Platform {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        let parts: Vec<&str> = s.split('/').collect();
        let valid =
            |p: &&str| !p.is_empty() && p.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
        if !(2..=3).contains(&parts.len()) || !parts.iter().all(valid) {
            return Err(Error::invalid(format!(
                "`{s}` is not a platform (expected OS/ARCH[/VARIANT], e.g. linux/amd64)"
            )));
        }
        Ok(Platform {
            os: parts[0].to_owned(),
            architecture: parts[1].to_owned(),
            variant: parts.get(2).map(|v| (*v).to_owned()),
            os_version: None,
        })
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(variant) = &self.variant {
            write!(f, "/{variant}")?;
        }
        Ok(())
    }
}

impl Serialize for PlatformString {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(&self.0)
    }
}

/// A platform written as a string (`linux/amd64`) in our own files.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct PlatformString(pub Platform);

impl<'de> Deserialize<'de> for PlatformString {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse()
            .map(PlatformString)
            .map_err(serde::de::Error::custom)
    }
}

/// Manifest bytes exactly as a store holds them, with their media type.
#[derive(Clone, Debug)]
pub struct RawManifest {
    pub media_type: String,
    pub bytes: bytes::Bytes,
}

impl RawManifest {
    /// Manifest bytes read for `descriptor`, refused unless they hash to its digest.
    pub fn checked(bytes: Vec<u8>, descriptor: &Descriptor, location: &str) -> Result<RawManifest> {
        descriptor.digest.verify(&bytes, || {
            format!("manifest {} in {location}", descriptor.digest)
        })?;
        if bytes.len() as u64 != descriptor.size {
            return Err(Error::invalid(format!(
                "manifest {} in {location}: {} bytes, but its descriptor says {}",
                descriptor.digest,
                bytes.len(),
                descriptor.size
            )));
        }
        Ok(RawManifest {
            media_type: descriptor.media_type.clone(),
            bytes: bytes.into(),
        })
    }

    pub fn digest(&self) -> Digest {
        Digest::of(&self.bytes)
    }

    pub fn descriptor(&self) -> Descriptor {
        Descriptor::new(
            self.media_type.clone(),
            self.digest(),
            self.bytes.len() as u64,
        )
    }

    /// Parses the bytes; `what` names the manifest in errors.
    pub fn parse(&self, what: &str) -> Result<Manifest> {
        Manifest::parse(&self.bytes, &self.media_type, what)
    }
}

/// Sniffs the media type of a manifest stored without one.
pub fn sniff_media_type(bytes: &[u8]) -> String {
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Probe {
        media_type: Option<String>,
        manifests: Option<serde_json::Value>,
    }
    match serde_json::from_slice::<Probe>(bytes) {
        Ok(Probe {
            media_type: Some(m),
            ..
        }) => m,
        Ok(Probe {
            manifests: Some(_), ..
        }) => OCI_INDEX.to_owned(),
        _ => OCI_MANIFEST.to_owned(),
    }
}

/// A parsed manifest: either an index of per-platform manifests or one image.
#[derive(Clone, Debug)]
pub enum Manifest {
    Index(Index),
    Image(ImageManifest),
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Index {
    #[serde(default)]
    pub schema_version: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    pub manifests: Vec<Descriptor>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageManifest {
    #[serde(default)]
    pub schema_version: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    pub config: Descriptor,
    #[serde(default)]
    pub layers: Vec<Descriptor>,
}

impl ImageManifest {
    /// The config and every layer: what must exist before the manifest can.
    pub fn blobs(&self) -> impl Iterator<Item = &Descriptor> {
        std::iter::once(&self.config).chain(self.layers.iter())
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Probe {
    media_type: Option<String>,
    manifests: Option<serde_json::Value>,
    schema_version: Option<u32>,
}

impl Manifest {
    /// Parses manifest bytes. The media type comes from the store (Content-Type or
    /// descriptor) and, failing that, from the document itself.
    pub fn parse(bytes: &[u8], media_type: &str, what: &str) -> Result<Manifest> {
        let bad = |e: serde_json::Error| Error::invalid(format!("{what}: malformed manifest: {e}"));
        let probe: Probe = serde_json::from_slice(bytes).map_err(bad)?;
        if probe.schema_version == Some(1) {
            return Err(Error::invalid(format!(
                "{what}: Docker schema 1 manifests are not supported; the image must be re-pushed with a current client"
            )));
        }
        let kind = probe.media_type.as_deref().unwrap_or(media_type);
        if is_index(kind) || (kind.is_empty() && probe.manifests.is_some()) {
            serde_json::from_slice(bytes)
                .map(Manifest::Index)
                .map_err(bad)
        } else if is_image_manifest(kind) || kind.is_empty() {
            serde_json::from_slice(bytes)
                .map(Manifest::Image)
                .map_err(bad)
        } else {
            Err(Error::invalid(format!(
                "{what}: unsupported manifest media type `{kind}`"
            )))
        }
    }
}

/// The fields of an image config we read: platform and root filesystem.
#[derive(Clone, Debug, Deserialize)]
pub struct ImageConfig {
    #[serde(default)]
    pub architecture: String,
    #[serde(default)]
    pub os: String,
    #[serde(default)]
    pub variant: Option<String>,
}

impl ImageConfig {
    pub fn platform(&self) -> Platform {
        Platform {
            architecture: self.architecture.clone(),
            os: self.os.clone(),
            variant: self.variant.clone(),
            os_version: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn platform_parsing_and_selection() {
        let amd: Platform = "linux/amd64".parse().unwrap();
        let arm: Platform = "linux/arm64".parse().unwrap();
        let arm_v8: Platform = "linux/arm64/v8".parse().unwrap();
        assert!(amd.selects(&amd));
        assert!(!amd.selects(&arm));
        assert!(arm.selects(&arm_v8));
        assert!(!arm_v8.selects(&arm));
        assert!("linux".parse::<Platform>().is_err());
        assert!("linux/amd64/v1/x".parse::<Platform>().is_err());
        assert_eq!(arm_v8.to_string(), "linux/arm64/v8");
    }

    #[test]
    fn parses_docker_and_oci_forms() {
        let list = br#"{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.list.v2+json","manifests":[]}"#;
        assert!(matches!(
            Manifest::parse(list, "", "x").unwrap(),
            Manifest::Index(_)
        ));
        let oci_index_without_type = br#"{"schemaVersion":2,"manifests":[]}"#;
        assert!(matches!(
            Manifest::parse(oci_index_without_type, "", "x").unwrap(),
            Manifest::Index(_)
        ));
        let schema1 = br#"{"schemaVersion":1,"fsLayers":[]}"#;
        assert!(Manifest::parse(schema1, "", "x").is_err());
        assert!(Manifest::parse(b"not json", OCI_MANIFEST, "x").is_err());
    }

    #[test]
    fn recognises_attestations() {
        let d: Descriptor = serde_json::from_str(r#"{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855","size":1,"platform":{"architecture":"unknown","os":"unknown"},"annotations":{"vnd.docker.reference.type":"attestation-manifest"}}"#).unwrap();
        assert!(d.is_attestation());
    }
}
