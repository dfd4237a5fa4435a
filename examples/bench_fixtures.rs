//! Pushes Dify-shaped benchmark images to a registry: four images for linux/amd64 that share
//! a base layer, with layers of pseudo-random (incompressible) bytes.
//!
//! `cargo run --release --example bench_fixtures -- HOST:PORT TOTAL_MIB`
//!
//! With `sandbox` instead of a size it pushes `bench/dify-sandbox:python` instead: an image
//! laid out like dify-sandbox ≥ 0.2.13 (CPython 3.14 in /opt/python, Debian 12's glibc).
//!
//! With `delta PERCENT` it pushes stand-ins of the two built-in recipes' images, tagged `old`
//! (Dify 1.13.3) and `new` (Dify 1.17.1), at PERCENT of the sizes in [`RELEASES`], and `patch`:
//! a patch release after 1.17.1 that rebuilds api and web and keeps the sandbox and daemon.

use std::sync::Arc;

use bytes::Bytes;
use dify_bundle::digest::Digest;
use dify_bundle::oci::{self, Descriptor, RawManifest};
use dify_bundle::store::registry::Registries;
use dify_bundle::store::{BlobSink, ImageSink, RegistryOptions, RegistryStore, Tag};

#[path = "../tests/common/random.rs"]
mod random;
use random::random_bytes;

async fn push_blob(
    store: &RegistryStore,
    repo: &str,
    media_type: &str,
    bytes: Vec<u8>,
) -> dify_bundle::Result<Descriptor> {
    let descriptor = Descriptor::new(media_type, Digest::of(&bytes), bytes.len() as u64);
    let chunks: Vec<dify_bundle::Result<Bytes>> = bytes
        .chunks(1 << 20)
        .map(|c| Ok(Bytes::copy_from_slice(c)))
        .collect();
    store
        .write_blob(
            repo,
            &descriptor,
            0,
            Box::pin(futures::stream::iter(chunks)),
        )
        .await?;
    Ok(descriptor)
}

fn tar_gz(entries: &[(&str, &[u8])]) -> Result<Vec<u8>, Box<dyn std::error::Error>> {
    let mut archive = tar::Builder::new(flate2::write::GzEncoder::new(
        Vec::new(),
        flate2::Compression::fast(),
    ));
    for (path, bytes) in entries {
        let mut header = tar::Header::new_gnu();
        header.set_mode(0o755);
        header.set_size(bytes.len() as u64);
        archive.append_data(&mut header, path, *bytes)?;
    }
    Ok(archive.into_inner()?.finish()?)
}

async fn push_sandbox(store: &RegistryStore, host: &str) -> Result<(), Box<dyn std::error::Error>> {
    let repo = "bench/dify-sandbox";
    let layer = tar_gz(&[
        (
            "var/lib/dpkg/status",
            b"Package: libc6\nVersion: 2.36-9+deb12u7\n",
        ),
        ("opt/python/bin/python3", b"interpreter"),
        ("opt/python/bin/python3.14", b"interpreter"),
        (
            "opt/python/lib/python3.14/site-packages/README.txt",
            b"site",
        ),
    ])?;
    let mut raw = Vec::new();
    std::io::Read::read_to_end(
        &mut flate2::read::GzDecoder::new(layer.as_slice()),
        &mut raw,
    )?;
    let diff_id = Digest::of(&raw).to_string();
    let layer = push_blob(store, repo, oci::OCI_LAYER_GZIP, layer).await?;
    let config = serde_json::json!({"architecture": "amd64", "os": "linux",
        "config": {"Env": ["PATH=/opt/python/bin:/usr/bin:/bin", "PYTHON_VERSION=3.14.0"]},
        "rootfs": {"type": "layers", "diff_ids": [diff_id]}});
    let config = push_blob(store, repo, oci::OCI_CONFIG, serde_json::to_vec(&config)?).await?;
    let manifest = serde_json::json!({"schemaVersion": 2, "mediaType": oci::OCI_MANIFEST, "config": config, "layers": [layer]});
    let raw = RawManifest {
        media_type: oci::OCI_MANIFEST.into(),
        bytes: serde_json::to_vec(&manifest)?.into(),
    };
    store
        .put_manifest(
            repo,
            &raw,
            Some(&Tag {
                name: "python".into(),
                ..Tag::default()
            }),
        )
        .await?;
    println!("pushed {host}/{repo}:python");
    Ok(())
}

/// One layer of a stand-in image: what it holds, its compressed size in MiB for linux/amd64,
/// and whether the 1.13.3 and 1.17.1 images have it byte for byte.
struct StandInLayer(&'static str, usize, bool);

/// The images of the two built-in recipes, layer by layer as their Dockerfiles make them
/// (langgenius/dify api/Dockerfile and web/Dockerfile at 1.13.3 and 1.16.1 in
/// ../shared/fixtures/dify; sizes are estimates, the whole set sized as
/// ../shared/reference/dify.md gives it). Shared: the layers of a base image both releases
/// name by the same tag, when it was not rebuilt between them (the best case; a rebuilt base
/// shares nothing), and our own derived layers, which are deterministic (src/oci/layer.rs) and
/// hold the same wheels when the plugin and package pins are the same (the recipes pin the
/// same plugin versions and sandbox requirements). Everything a release's CI builds (RUN, COPY
/// of the source) differs between releases.
const RELEASES: &[(&str, &[StandInLayer])] = &[
    (
        "dify-api",
        &[
            StandInLayer("debian bookworm-slim (python:3.12-slim-bookworm)", 28, true),
            StandInLayer("CPython 3.12 (python:3.12-slim-bookworm)", 15, true),
            StandInLayer("uv 0.8.9 (pip install)", 12, false),
            StandInLayer("apt runtime packages", 70, false),
            StandInLayer("the virtualenv (uv sync)", 820, false),
            StandInLayer("nltk data and tiktoken cache", 30, false),
            StandInLayer("the api source", 15, false),
        ],
    ),
    (
        "dify-web",
        &[
            StandInLayer("alpine (node:22-alpine)", 4, false),
            StandInLayer("Node.js 22 (node:22-alpine; 1.16+ pins 22.22.1)", 45, false),
            StandInLayer("pm2 and tini", 10, false),
            StandInLayer("the Next.js standalone build", 160, false),
        ],
    ),
    (
        "dify-sandbox",
        &[
            StandInLayer("debian bookworm-slim", 28, true),
            StandInLayer("CPython 3.14 in /opt/python", 40, false),
            StandInLayer("the sandbox binary and its seccomp libs", 15, false),
            StandInLayer("derived: boto3 and numpy for CPython 3.14", 35, true),
        ],
    ),
    (
        "dify-plugin-daemon",
        &[
            StandInLayer("debian bookworm-slim (python:3.12-slim-bookworm)", 28, true),
            StandInLayer("CPython 3.12 (python:3.12-slim-bookworm)", 15, true),
            StandInLayer("uv, pip and build tools", 60, false),
            StandInLayer("the daemon binary", 45, false),
            StandInLayer(
                "derived: wheels of langgenius/bedrock 0.0.80 and agent 0.0.45",
                90,
                true,
            ),
        ],
    ),
];

async fn push_image(
    store: &RegistryStore,
    repo: &str,
    tag: &str,
    layers: Vec<Vec<u8>>,
) -> Result<(), Box<dyn std::error::Error>> {
    let mut descriptors = Vec::new();
    for layer in layers {
        descriptors.push(push_blob(store, repo, oci::OCI_LAYER_GZIP, layer).await?);
    }
    let diff_ids: Vec<String> = descriptors.iter().map(|l| l.digest.to_string()).collect();
    let config = serde_json::json!({"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": diff_ids}});
    let config = push_blob(store, repo, oci::OCI_CONFIG, serde_json::to_vec(&config)?).await?;
    let manifest = serde_json::json!({"schemaVersion": 2, "mediaType": oci::OCI_MANIFEST, "config": config, "layers": descriptors});
    let raw = RawManifest {
        media_type: oci::OCI_MANIFEST.into(),
        bytes: serde_json::to_vec(&manifest)?.into(),
    };
    let tag = Tag {
        name: tag.into(),
        ..Tag::default()
    };
    store.put_manifest(repo, &raw, Some(&tag)).await?;
    Ok(())
}

async fn push_releases(
    store: &RegistryStore,
    host: &str,
    percent: usize,
) -> Result<(), Box<dyn std::error::Error>> {
    for (i, (name, layers)) in RELEASES.iter().enumerate() {
        let repo = format!("bench/{name}");
        let rebuilt_in_patch = matches!(*name, "dify-api" | "dify-web");
        let patch = if rebuilt_in_patch { 2 } else { 1 };
        for (release, tag) in [(0u64, "old"), (1, "new"), (patch, "patch")] {
            let bytes = layers
                .iter()
                .enumerate()
                .map(|(j, StandInLayer(_, mib, shared))| {
                    let seed =
                        10_000 + i as u64 * 100 + j as u64 * 10 + u64::from(!shared) * release;
                    random_bytes(seed, (mib << 20) * percent / 100)
                })
                .collect();
            push_image(store, &repo, tag, bytes).await?;
            println!("pushed {host}/{repo}:{tag}");
            if tag == "old" {
                for StandInLayer(what, mib, shared) in *layers {
                    let kept = if *shared { "kept" } else { "rebuilt" };
                    println!("  {mib:>4} MiB  {kept:<7}  {what}");
                }
            }
        }
    }
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let host = args
        .next()
        .ok_or("usage: bench_fixtures HOST:PORT TOTAL_MIB|sandbox")?;
    let what = args.next().unwrap_or_else(|| "1200".into());
    let mut options = RegistryOptions::default();
    options.insecure.insert(host.clone());
    let store: Arc<RegistryStore> = Registries::new(options)?.store(&host);
    if what == "sandbox" {
        return push_sandbox(&store, &host).await;
    }
    if what == "delta" {
        let percent: usize = args.next().unwrap_or_else(|| "100".into()).parse()?;
        return push_releases(&store, &host, percent).await;
    }
    let total_mib: usize = what.parse()?;

    // Shares modelled on Dify: api is the giant, the base is shared by all four.
    let base_mib = total_mib / 8;
    let own: [(&str, usize); 4] = [
        ("dify-api", total_mib * 45 / 100),
        ("dify-web", total_mib * 15 / 100),
        ("dify-sandbox", total_mib * 10 / 100),
        ("dify-plugin-daemon", total_mib * 10 / 100),
    ];
    let base = random_bytes(1, base_mib << 20);
    for (i, (name, mib)) in own.iter().enumerate() {
        let repo = format!("bench/{name}");
        let mut layers = vec![push_blob(&store, &repo, oci::OCI_LAYER_GZIP, base.clone()).await?];
        // Split each image's own bytes into layers of at most 128 MiB, as real images have.
        let mut left = mib << 20;
        let mut n = 0;
        while left > 0 {
            let size = left.min(128 << 20);
            layers.push(
                push_blob(
                    &store,
                    &repo,
                    oci::OCI_LAYER_GZIP,
                    random_bytes(100 + i as u64 * 1000 + n, size),
                )
                .await?,
            );
            left -= size;
            n += 1;
        }
        let diff_ids: Vec<String> = layers.iter().map(|l| l.digest.to_string()).collect();
        let config = serde_json::json!({"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": diff_ids}});
        let config =
            push_blob(&store, &repo, oci::OCI_CONFIG, serde_json::to_vec(&config)?).await?;
        let manifest = serde_json::json!({"schemaVersion": 2, "mediaType": oci::OCI_MANIFEST, "config": config, "layers": layers});
        let raw = RawManifest {
            media_type: oci::OCI_MANIFEST.into(),
            bytes: serde_json::to_vec(&manifest)?.into(),
        };
        store
            .put_manifest(
                &repo,
                &raw,
                Some(&Tag {
                    name: "1.0".into(),
                    ..Tag::default()
                }),
            )
            .await?;
        println!("pushed {host}/{repo}:1.0 ({} MiB)", base_mib + mib);
    }
    Ok(())
}
