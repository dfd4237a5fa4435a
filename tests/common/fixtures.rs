//! Fixture images generated on the fly and pushed to a test registry: multi-platform
//! indexes (OCI and Docker media types), a base layer shared between images, and buildx-style
//! attestation manifests.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use dify_bundle::digest::Digest;
use dify_bundle::oci::{self, Descriptor, Platform, RawManifest};
use dify_bundle::store::registry::Registries;
use dify_bundle::store::registry::auth::Credentials;
use dify_bundle::store::{BlobSink, ImageSink, RegistryOptions, RegistryStore, Tag};

use super::Registry;

pub use super::random::random_bytes;

/// A real gzip-compressed tar layer holding one file of `len` pseudo-random bytes.
pub fn layer(seed: u64, len: usize) -> Vec<u8> {
    let content = random_bytes(seed, len);
    let mut header = tar::Header::new_gnu();
    header.set_size(content.len() as u64);
    header.set_mode(0o644);
    header.set_mtime(0);
    header.set_cksum();
    let mut archive = tar::Builder::new(flate2::write::GzEncoder::new(
        Vec::new(),
        flate2::Compression::fast(),
    ));
    archive
        .append_data(&mut header, format!("data/{seed}.bin"), content.as_slice())
        .expect("tar");
    archive
        .into_inner()
        .and_then(|gz| gz.finish())
        .expect("gzip")
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Style {
    Oci,
    Docker,
}

pub struct ImageSpec<'a> {
    pub repo: &'a str,
    pub tag: &'a str,
    pub style: Style,
    /// Architectures (all `linux`); one entry with `index = false` pushes a bare manifest.
    pub arches: &'a [&'a str],
    pub index: bool,
    /// Layer shared with other images.
    pub base: &'a [u8],
    /// Size of the layer unique to each image and platform.
    pub own_size: usize,
    pub seed: u64,
    pub attestation: bool,
}

pub struct Pushed {
    /// Digest of what the tag points to.
    pub digest: Digest,
    /// Per-platform manifest digests by architecture.
    pub platforms: BTreeMap<String, Digest>,
    /// Every config and layer, by architecture.
    pub blobs: BTreeMap<String, Vec<Descriptor>>,
    pub attestation: Option<Digest>,
}

pub fn store_for(registry: &Registry) -> Arc<RegistryStore> {
    let mut options = RegistryOptions::default();
    options.insecure.insert(registry.host());
    if let Some((user, password)) = &registry.user {
        options.credentials.insert(
            registry.host(),
            Credentials {
                username: user.clone(),
                password: password.clone(),
            },
        );
    }
    Registries::new(options)
        .expect("http client")
        .store(&registry.host())
}

async fn push_blob(
    store: &RegistryStore,
    repo: &str,
    media_type: &str,
    bytes: Vec<u8>,
) -> Descriptor {
    let descriptor = Descriptor::new(media_type, Digest::of(&bytes), bytes.len() as u64);
    let body = futures::stream::iter(vec![Ok(Bytes::from(bytes))]);
    store
        .write_blob(repo, &descriptor, 0, Box::pin(body))
        .await
        .expect("push fixture blob");
    descriptor
}

async fn push_manifest(
    store: &RegistryStore,
    repo: &str,
    media_type: &str,
    json: serde_json::Value,
    tag: Option<&str>,
) -> Descriptor {
    let raw = RawManifest {
        media_type: media_type.to_owned(),
        bytes: Bytes::from(serde_json::to_vec(&json).expect("json")),
    };
    let tag = tag.map(|name| Tag {
        name: name.to_owned(),
        ..Tag::default()
    });
    store
        .put_manifest(repo, &raw, tag.as_ref())
        .await
        .expect("push fixture manifest");
    raw.descriptor()
}

pub async fn push(registry: &Registry, spec: &ImageSpec<'_>) -> Pushed {
    let store = store_for(registry);
    let (manifest_type, config_type, layer_type, index_type) = match spec.style {
        Style::Oci => (
            oci::OCI_MANIFEST,
            oci::OCI_CONFIG,
            oci::OCI_LAYER_GZIP,
            oci::OCI_INDEX,
        ),
        Style::Docker => (
            oci::DOCKER_MANIFEST,
            oci::DOCKER_CONFIG,
            oci::DOCKER_LAYER_GZIP,
            oci::DOCKER_LIST,
        ),
    };
    let mut entries = Vec::new();
    let mut platforms = BTreeMap::new();
    let mut blobs = BTreeMap::new();
    for (i, arch) in spec.arches.iter().enumerate() {
        let base = push_blob(&store, spec.repo, layer_type, spec.base.to_vec()).await;
        let own = push_blob(
            &store,
            spec.repo,
            layer_type,
            layer(spec.seed * 100 + i as u64, spec.own_size),
        )
        .await;
        let config = serde_json::json!({
            "architecture": arch,
            "os": "linux",
            "config": {"Env": ["PATH=/usr/bin"]},
            "rootfs": {"type": "layers", "diff_ids": [base.digest.to_string(), own.digest.to_string()]},
        });
        let config = push_blob(
            &store,
            spec.repo,
            config_type,
            serde_json::to_vec(&config).expect("json"),
        )
        .await;
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": manifest_type,
            "config": config,
            "layers": [base, own],
        });
        let tag = (!spec.index).then_some(spec.tag);
        let mut descriptor = push_manifest(&store, spec.repo, manifest_type, manifest, tag).await;
        descriptor.platform = Some(
            format!("linux/{arch}")
                .parse::<Platform>()
                .expect("platform"),
        );
        platforms.insert(arch.to_string(), descriptor.digest.clone());
        blobs.insert(arch.to_string(), vec![config, base, own]);
        entries.push(descriptor);
    }
    let mut attestation = None;
    if spec.attestation {
        let statement = push_blob(
            &store,
            spec.repo,
            "application/vnd.in-toto+json",
            format!(
                "{{\"_type\":\"https://in-toto.io/Statement/v0.1\",\"seed\":{}}}",
                spec.seed
            )
            .into_bytes(),
        )
        .await;
        let config = push_blob(&store, spec.repo, oci::OCI_CONFIG, b"{}".to_vec()).await;
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": oci::OCI_MANIFEST,
            "config": config,
            "layers": [statement],
        });
        let mut descriptor =
            push_manifest(&store, spec.repo, oci::OCI_MANIFEST, manifest, None).await;
        descriptor.platform = Some(Platform {
            architecture: "unknown".into(),
            os: "unknown".into(),
            variant: None,
            os_version: None,
        });
        descriptor.annotations = Some(BTreeMap::from([
            (
                oci::ANNOTATION_REFERENCE_TYPE.to_owned(),
                "attestation-manifest".to_owned(),
            ),
            (
                oci::ANNOTATION_REFERENCE_DIGEST.to_owned(),
                entries[0].digest.to_string(),
            ),
        ]));
        attestation = Some(descriptor.digest.clone());
        entries.push(descriptor);
    }
    let digest = if spec.index {
        let index = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": index_type,
            "manifests": entries,
        });
        push_manifest(&store, spec.repo, index_type, index, Some(spec.tag))
            .await
            .digest
    } else {
        entries[0].digest.clone()
    };
    Pushed {
        digest,
        platforms,
        blobs,
        attestation,
    }
}

/// The four Dify roles as fixture images sharing one base layer: an OCI index with an
/// attestation (api), a Docker manifest list (web), a bare OCI manifest (sandbox) and a
/// bare Docker manifest (plugin-daemon).
pub async fn dify_like(
    registry: &Registry,
    prefix: &str,
    base: &[u8],
    own_size: usize,
) -> Vec<(String, Pushed)> {
    let specs = [
        (
            "api",
            "dify-api",
            Style::Oci,
            &["amd64", "arm64"][..],
            true,
            true,
        ),
        (
            "web",
            "dify-web",
            Style::Docker,
            &["amd64", "arm64"][..],
            true,
            false,
        ),
        (
            "sandbox",
            "dify-sandbox",
            Style::Oci,
            &["amd64"][..],
            false,
            false,
        ),
        (
            "plugin-daemon",
            "dify-plugin-daemon",
            Style::Docker,
            &["amd64"][..],
            false,
            false,
        ),
    ];
    let mut out = Vec::new();
    for (seed, (role, name, style, arches, index, attestation)) in specs.into_iter().enumerate() {
        let repo = format!("{prefix}/{name}");
        let pushed = push(
            registry,
            &ImageSpec {
                repo: &repo,
                tag: "1.0",
                style,
                arches,
                index,
                base,
                own_size,
                seed: seed as u64 + 1,
                attestation,
            },
        )
        .await;
        out.push((role.to_owned(), pushed));
    }
    out
}

/// A gzip tar layer from `(path, mode, contents)` entries; `None` contents make a directory.
pub fn tar_layer(entries: &[(&str, u32, Option<&[u8]>)]) -> Vec<u8> {
    let mut archive = tar::Builder::new(flate2::write::GzEncoder::new(
        Vec::new(),
        flate2::Compression::fast(),
    ));
    for (path, mode, contents) in entries {
        let mut header = tar::Header::new_gnu();
        header.set_mode(*mode);
        header.set_mtime(0);
        match contents {
            Some(bytes) => {
                header.set_entry_type(tar::EntryType::Regular);
                header.set_size(bytes.len() as u64);
                archive.append_data(&mut header, path, *bytes).expect("tar");
            }
            None => {
                header.set_entry_type(tar::EntryType::Directory);
                header.set_size(0);
                archive
                    .append_data(&mut header, path, std::io::empty())
                    .expect("tar");
            }
        }
    }
    archive
        .into_inner()
        .and_then(|gz| gz.finish())
        .expect("gzip")
}

/// Pushes a single-platform (linux/amd64) OCI image made of `layers` and a config with
/// `env`; returns its manifest digest.
pub async fn push_single(
    registry: &Registry,
    repo: &str,
    tag: &str,
    layers: Vec<Vec<u8>>,
    env: &[String],
) -> Digest {
    let store = store_for(registry);
    let mut descriptors = Vec::new();
    let mut diff_ids = Vec::new();
    for layer in layers {
        let mut raw = Vec::new();
        std::io::Read::read_to_end(
            &mut flate2::read::GzDecoder::new(layer.as_slice()),
            &mut raw,
        )
        .expect("gunzip");
        diff_ids.push(Digest::of(&raw).to_string());
        descriptors.push(push_blob(&store, repo, oci::OCI_LAYER_GZIP, layer).await);
    }
    let config = serde_json::json!({
        "architecture": "amd64",
        "os": "linux",
        "config": {"Env": env, "Cmd": ["/main"]},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": diff_ids.iter().map(|_| serde_json::json!({"created_by": "fixture"})).collect::<Vec<_>>(),
    });
    let config = push_blob(
        &store,
        repo,
        oci::OCI_CONFIG,
        serde_json::to_vec(&config).expect("json"),
    )
    .await;
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": oci::OCI_MANIFEST,
        "config": config,
        "layers": descriptors,
    });
    push_manifest(&store, repo, oci::OCI_MANIFEST, manifest, Some(tag))
        .await
        .digest
}
