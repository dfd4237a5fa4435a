//! Failures a real registry will not produce on demand, injected by a proxy in front of a
//! real docker-registry: 429 with Retry-After, 5xx, bodies cut short, and a build killed
//! with SIGKILL in the middle of a blob.

mod common;

use std::time::{Duration, Instant};

use common::fixtures::{self, layer};
use common::proxy::{Fault, Proxy};
use common::{Auth, Registry, dify_bundle, json, stderr, write_recipe};

fn recipe(dir: &std::path::Path, host: &str) -> std::path::PathBuf {
    write_recipe(
        dir,
        &[
            ("api", format!("{host}/f/dify-api:1.0")),
            ("sandbox", format!("{host}/f/dify-sandbox:1.0")),
        ],
    )
}

async fn build(
    proxy: &Proxy,
    recipe: &std::path::Path,
    out: &std::path::Path,
    retries: &str,
) -> std::process::Output {
    let mut command = dify_bundle();
    command
        .args([
            "build",
            "--json",
            "--retries",
            retries,
            "--insecure-registry",
            &proxy.host(),
            "--recipe",
        ])
        .arg(recipe)
        .arg("--out")
        .arg(out);
    tokio::process::Command::from(command)
        .output()
        .await
        .expect("run dify-bundle")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn survives_429_500_and_truncated_bodies() {
    let registry = Registry::start(Auth::None);
    let images = fixtures::dify_like(&registry, "f", &layer(1, 512 << 10), 256 << 10).await;
    let proxy = Proxy::start(registry.host()).await;
    let work = tempfile::tempdir().unwrap();
    let recipe = recipe(work.path(), &proxy.host());
    let sandbox_layer = images[2].1.blobs["amd64"][2].digest.clone();

    proxy.inject("/manifests/", Fault::Status(429, Some(1)), 1);
    proxy.inject("/blobs/", Fault::Status(500, None), 2);
    proxy.inject(&sandbox_layer.to_string(), Fault::Truncate, 1);
    let started = Instant::now();
    let out = work.path().join("bundle");
    let result = build(&proxy, &recipe, &out, "5").await;
    assert!(result.status.success(), "{}", stderr(&result));
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "Retry-After was not honoured"
    );
    let err = stderr(&result);
    assert!(err.contains("retrying"), "{err}");
    // The cut-short layer was resumed with a Range request, not fetched again whole.
    let ranged: Vec<_> = proxy
        .requests()
        .into_iter()
        .filter(|r| r.path.contains(sandbox_layer.hex()) && r.range.is_some())
        .collect();
    assert_eq!(ranged.len(), 1, "{:?}", proxy.requests());
    let verified = dify_bundle()
        .args(["verify", "--allow-unsigned"])
        .arg(&out)
        .output()
        .unwrap();
    assert!(verified.status.success(), "{}", stderr(&verified));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn persistent_failure_names_the_image_and_the_blob() {
    let registry = Registry::start(Auth::None);
    let images = fixtures::dify_like(&registry, "f", &layer(2, 64 << 10), 64 << 10).await;
    let proxy = Proxy::start(registry.host()).await;
    let work = tempfile::tempdir().unwrap();
    let recipe = recipe(work.path(), &proxy.host());
    let sandbox_layer = images[2].1.blobs["amd64"][2].digest.clone();
    proxy.inject(
        &format!("blobs/{sandbox_layer}"),
        Fault::Status(503, None),
        100,
    );
    let out = work.path().join("bundle");
    let result = build(&proxy, &recipe, &out, "2").await;
    assert!(!result.status.success());
    let err = stderr(&result);
    assert!(
        err.contains("sandbox") && err.contains(&sandbox_layer.to_string()) && err.contains("503"),
        "{err}"
    );
    assert!(!out.join("bundle.json").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_build_resumes_partial_blobs_with_range_and_skips_verified_ones() {
    let registry = Registry::start(Auth::None);
    let big = 8 << 20;
    let images = fixtures::dify_like(&registry, "f", &layer(3, 256 << 10), big).await;
    let proxy = Proxy::start(registry.host()).await;
    let work = tempfile::tempdir().unwrap();
    let recipe = recipe(work.path(), &proxy.host());
    let out = work.path().join("bundle");
    let api_layer = images[0].1.blobs["amd64"][2].clone();
    proxy.inject(&api_layer.digest.to_string(), Fault::Stall, 1);

    let mut command = dify_bundle();
    command
        .args(["build", "--insecure-registry", &proxy.host(), "--recipe"])
        .arg(&recipe)
        .arg("--out")
        .arg(&out)
        .stderr(std::process::Stdio::null());
    let mut child = tokio::process::Command::from(command).spawn().unwrap();
    let partial = out.join(".partial").join(api_layer.digest.hex());
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let len = std::fs::metadata(&partial).map(|m| m.len()).unwrap_or(0);
        // Half the layer has arrived (the proxy stalls after half) and the others are done.
        let others_done = images[2].1.blobs["amd64"]
            .iter()
            .all(|b| out.join("blobs/sha256").join(b.digest.hex()).exists());
        if len >= api_layer.size / 2 && others_done {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the build never reached the stalled layer"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    child.start_kill().unwrap();
    child.wait().await.unwrap();
    let kept = std::fs::metadata(&partial).unwrap().len();
    assert!(kept > 0 && kept < api_layer.size);
    let before = proxy.requests().len();

    let result = build(&proxy, &recipe, &out, "3").await;
    assert!(result.status.success(), "{}", stderr(&result));
    let report = json(&result);
    assert_eq!(report["copy"]["bytes_resumed"].as_u64().unwrap(), kept);
    // Only the rest of the interrupted layer crossed the wire.
    assert_eq!(
        report["copy"]["bytes_transferred"].as_u64().unwrap(),
        api_layer.size - kept
    );
    let after: Vec<_> = proxy.requests()[before..].to_vec();
    let blob_gets: Vec<_> = after
        .iter()
        .filter(|r| r.method == "GET" && r.path.contains("/blobs/"))
        .collect();
    assert_eq!(blob_gets.len(), 1, "{blob_gets:?}");
    assert_eq!(
        blob_gets[0].range.as_deref(),
        Some(format!("bytes={kept}-").as_str())
    );
    assert!(!out.join(".partial").exists());
    let verified = dify_bundle()
        .args(["verify", "--allow-unsigned"])
        .arg(&out)
        .output()
        .unwrap();
    assert!(verified.status.success(), "{}", stderr(&verified));
}
