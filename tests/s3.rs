//! Carrying bundles through S3 (moto_server 5.2.5 on 127.0.0.1): upload only what the prefix
//! lacks, multipart with SHA256 part checksums, resume an interrupted multipart upload,
//! download with every blob checked, verify or inspect a bundle in place in S3, refuse a
//! damaged local blob, and replace a wrong object in the prefix.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use aws_sdk_s3::primitives::ByteStream;
use common::fixtures::{self, layer};
use common::{
    Auth, Moto, Registry, assert_fails_with, assert_success, dify_bundle, json, run, write_recipe,
};

struct World {
    moto: Moto,
    registry: Registry,
    work: tempfile::TempDir,
    public: PathBuf,
    key: PathBuf,
}

async fn world() -> World {
    let moto = Moto::start();
    moto.s3()
        .create_bucket()
        .bucket("air")
        .send()
        .await
        .unwrap();
    let registry = Registry::start(Auth::None);
    // A 12 MiB base layer: with 5 MiB parts it goes up in three parts.
    fixtures::dify_like(&registry, "s", &layer(31, 12 << 20), 256 << 10).await;
    let work = tempfile::tempdir().unwrap();
    let stem = common::generate_key(work.path());
    World {
        public: stem.with_extension("pub"),
        key: stem.with_extension("key"),
        moto,
        registry,
        work,
    }
}

impl World {
    fn build(&self, name: &str, roles: &[(&str, &str)]) -> PathBuf {
        let host = self.registry.host();
        let images: Vec<(&str, String)> = roles
            .iter()
            .map(|(role, repo)| (*role, format!("{host}/s/{repo}:1.0")))
            .collect();
        let dir = self.work.path().join(format!("recipe-{name}"));
        std::fs::create_dir_all(&dir).unwrap();
        let recipe = write_recipe(&dir, &images);
        let text = std::fs::read_to_string(&recipe)
            .unwrap()
            .replace("test-bundle", name);
        std::fs::write(&recipe, text).unwrap();
        let out = self.work.path().join(name);
        assert_success(&run(dify_bundle()
            .args(["build", "--insecure-registry", &host, "--sign-key"])
            .arg(&self.key)
            .arg("--recipe")
            .arg(&recipe)
            .arg("--out")
            .arg(&out)));
        out
    }

    fn cli(&self) -> Command {
        let mut command = dify_bundle();
        self.moto.env(&mut command);
        command
    }

    fn upload(&self, bundle: &Path) -> Output {
        run(self
            .cli()
            .args(["upload", "--json", "--part-size", "5MiB", "--pubkey"])
            .arg(&self.public)
            .arg(bundle)
            .arg("s3://air/dify"))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_twice_sends_nothing_and_download_round_trips() {
    let w = world().await;
    let bundle = w.build(
        "release-a",
        &[("api", "dify-api"), ("sandbox", "dify-sandbox")],
    );

    let first = w.upload(&bundle);
    assert_success(&first);
    let report = json(&first);
    assert!(report["bytes_sent"].as_u64().unwrap() > 12 << 20);
    assert_eq!(report["bytes_skipped"], 0);
    let objects = w
        .moto
        .s3()
        .list_objects_v2()
        .bucket("air")
        .prefix("dify/")
        .send()
        .await
        .unwrap();
    let keys: Vec<&str> = objects.contents().iter().filter_map(|o| o.key()).collect();
    assert!(
        keys.contains(&"dify/bundles/release-a/bundle.json")
            && keys.contains(&"dify/bundles/release-a/bundle.json.minisig")
    );
    assert!(keys.iter().any(|k| k.starts_with("dify/blobs/sha256/")));

    // The same bundle again: nothing crosses the wire.
    let second = w.upload(&bundle);
    assert_success(&second);
    let report = json(&second);
    assert_eq!(report["bytes_sent"], 0, "{report}");
    assert!(report["bytes_skipped"].as_u64().unwrap() > 12 << 20);

    // A new bundle sharing the base layer sends only what is new.
    let other = w.build("release-b", &[("api", "dify-api"), ("web", "dify-web")]);
    let third = w.upload(&other);
    assert_success(&third);
    let report = json(&third);
    assert!(
        report["bytes_skipped"].as_u64().unwrap() >= 12 << 20,
        "{report}"
    );
    assert!(report["bytes_sent"].as_u64().unwrap() < 4 << 20, "{report}");

    // Verify and inspect in place in S3.
    let url = "s3://air/dify/bundles/release-a";
    assert_success(&run(w
        .cli()
        .arg("verify")
        .arg(url)
        .arg("--pubkey")
        .arg(&w.public)));
    let in_s3 = json(&run(w.cli().args(["inspect", "--json", url])));
    let local = json(&run(dify_bundle().args(["inspect", "--json"]).arg(&bundle)));
    assert_eq!(in_s3, local);

    // Download: the same bundle, which verifies.
    let copy = w.work.path().join("downloaded");
    let got = run(w
        .cli()
        .args(["download", "--json", url])
        .arg(&copy)
        .arg("--pubkey")
        .arg(&w.public));
    assert_success(&got);
    assert_eq!(
        std::fs::read(copy.join("bundle.json")).unwrap(),
        std::fs::read(bundle.join("bundle.json")).unwrap()
    );
    assert_success(&run(dify_bundle()
        .arg("verify")
        .arg(&copy)
        .arg("--pubkey")
        .arg(&w.public)));
    // Downloading again fetches nothing.
    let again = run(w
        .cli()
        .args(["download", "--json", url])
        .arg(&copy)
        .arg("--pubkey")
        .arg(&w.public));
    assert_success(&again);
    assert_eq!(
        json(&again)["bytes_skipped"],
        json(&got)["bytes_sent"].as_u64().unwrap() - {
            // bundle files (index.json, oci-layout) are always rewritten
            let m: serde_json::Value =
                serde_json::from_slice(&std::fs::read(bundle.join("bundle.json")).unwrap())
                    .unwrap();
            m["files"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|f| !f["path"].as_str().unwrap().starts_with("blobs/"))
                .map(|f| f["size"].as_u64().unwrap())
                .sum::<u64>()
        }
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_multipart_upload_is_resumed() {
    let w = world().await;
    let bundle = w.build("release-a", &[("sandbox", "dify-sandbox")]);
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(bundle.join("bundle.json")).unwrap()).unwrap();
    let big = manifest["files"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["size"].as_u64().unwrap() > 10 << 20)
        .unwrap();
    let path = big["path"].as_str().unwrap();
    let bytes = std::fs::read(bundle.join(path)).unwrap();

    // What an upload killed after its first part leaves behind.
    let s3 = w.moto.s3();
    let key = format!("dify/{path}");
    let upload = s3
        .create_multipart_upload()
        .bucket("air")
        .key(&key)
        .checksum_algorithm(aws_sdk_s3::types::ChecksumAlgorithm::Sha256)
        .checksum_type(aws_sdk_s3::types::ChecksumType::Composite)
        .send()
        .await
        .unwrap();
    let id = upload.upload_id().unwrap();
    s3.upload_part()
        .bucket("air")
        .key(&key)
        .upload_id(id)
        .part_number(1)
        .body(ByteStream::from(bytes[..5 << 20].to_vec()))
        .send()
        .await
        .unwrap();

    let resumed = w.upload(&bundle);
    assert_success(&resumed);
    assert_eq!(json(&resumed)["bytes_resumed"].as_u64().unwrap(), 5 << 20);
    let uploads = s3
        .list_multipart_uploads()
        .bucket("air")
        .send()
        .await
        .unwrap();
    assert!(uploads.uploads().is_empty(), "upload left open");
    let copy = w.work.path().join("downloaded");
    assert_success(&run(w
        .cli()
        .args(["download", "s3://air/dify/bundles/release-a"])
        .arg(&copy)
        .arg("--pubkey")
        .arg(&w.public)));
    assert_eq!(std::fs::read(copy.join(path)).unwrap(), bytes);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupted_object_in_s3_is_named_and_nothing_is_kept() {
    let w = world().await;
    let bundle = w.build("release-a", &[("api", "dify-api")]);
    assert_success(&w.upload(&bundle));
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(bundle.join("bundle.json")).unwrap()).unwrap();
    let victim = manifest["files"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| {
            f["path"].as_str().unwrap().starts_with("blobs/") && f["size"].as_u64().unwrap() > 1000
        })
        .unwrap();
    let path = victim["path"].as_str().unwrap();
    let mut bytes = std::fs::read(bundle.join(path)).unwrap();
    bytes[500] ^= 0xff;
    w.moto
        .s3()
        .put_object()
        .bucket("air")
        .key(format!("dify/{path}"))
        .body(ByteStream::from(bytes))
        .send()
        .await
        .unwrap();

    let url = "s3://air/dify/bundles/release-a";
    assert_fails_with(
        &run(w
            .cli()
            .arg("verify")
            .arg(url)
            .arg("--pubkey")
            .arg(&w.public)),
        path,
    );
    let copy = w.work.path().join("downloaded");
    let got = run(w
        .cli()
        .args(["download", "--retries", "1", url])
        .arg(&copy)
        .arg("--pubkey")
        .arg(&w.public));
    assert_fails_with(&got, path.trim_start_matches("blobs/sha256/"));
    assert!(!copy.join(path).exists() && !copy.join("bundle.json").exists());

    // A tampered bundle.json in S3 is refused before any blob is fetched.
    w.moto
        .s3()
        .put_object()
        .bucket("air")
        .key("dify/bundles/release-a/bundle.json")
        .body(ByteStream::from(b"{}".to_vec()))
        .send()
        .await
        .unwrap();
    let refused = run(w
        .cli()
        .args(["download", url])
        .arg(w.work.path().join("refused"))
        .arg("--pubkey")
        .arg(&w.public));
    assert_fails_with(&refused, "refused");
    assert!(
        !w.work.path().join("refused/blobs/sha256").exists()
            || std::fs::read_dir(w.work.path().join("refused/blobs/sha256"))
                .unwrap()
                .next()
                .is_none()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_killed_midway_completes_when_run_again() {
    let w = world().await;
    let bundle = w.build(
        "release-a",
        &[("api", "dify-api"), ("sandbox", "dify-sandbox")],
    );
    let mut command = w.cli();
    command
        .args([
            "upload",
            "--concurrency",
            "1",
            "--part-size",
            "5MiB",
            "--allow-unsigned",
        ])
        .arg(&bundle)
        .arg("s3://air/dify")
        .stderr(std::process::Stdio::null());
    let mut child = tokio::process::Command::from(command).spawn().unwrap();
    let s3 = w.moto.s3();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    // Kill it once a multipart upload is under way.
    loop {
        let uploads = s3
            .list_multipart_uploads()
            .bucket("air")
            .send()
            .await
            .unwrap();
        if !uploads.uploads().is_empty() {
            tokio::time::sleep(std::time::Duration::from_millis(60)).await;
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no multipart upload started"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    child.start_kill().unwrap();
    child.wait().await.unwrap();
    assert!(
        s3.get_object()
            .bucket("air")
            .key("dify/bundles/release-a/bundle.json")
            .send()
            .await
            .is_err(),
        "bundle.json must come last"
    );

    let again = w.upload(&bundle);
    assert_success(&again);
    assert!(
        s3.list_multipart_uploads()
            .bucket("air")
            .send()
            .await
            .unwrap()
            .uploads()
            .is_empty()
    );
    assert_success(&run(w
        .cli()
        .arg("verify")
        .arg("s3://air/dify/bundles/release-a")
        .arg("--pubkey")
        .arg(&w.public)));
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// The largest blob and a small one (over 1000 bytes) of a bundle: (path, size).
fn big_and_small(bundle: &Path) -> ((String, u64), (String, u64)) {
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(bundle.join("bundle.json")).unwrap()).unwrap();
    let mut blobs: Vec<(String, u64)> = manifest["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["path"].as_str().unwrap().to_owned(),
                f["size"].as_u64().unwrap(),
            )
        })
        .filter(|(p, s)| p.starts_with("blobs/") && *s > 1000)
        .collect();
    blobs.sort_by_key(|(_, s)| *s);
    let big = blobs.last().unwrap().clone();
    assert!(big.1 > 10 << 20, "no multipart-sized blob");
    (big, blobs[0].clone())
}

fn flip(path: &Path, at: usize) -> Vec<u8> {
    let mut bytes = std::fs::read(path).unwrap();
    bytes[at] ^= 0xff;
    std::fs::write(path, &bytes).unwrap();
    bytes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_local_blob_is_refused_and_a_wrong_object_is_replaced() {
    let w = world().await;
    let good = w.build(
        "release-a",
        &[("api", "dify-api"), ("sandbox", "dify-sandbox")],
    );
    let ((big, big_size), (small, _)) = big_and_small(&good);
    let s3 = w.moto.s3();

    // A copy whose blobs were damaged on disk, sizes kept: refused, each named, and
    // nothing of either becomes an object (no multipart upload left open either).
    let bad = w.work.path().join("bad");
    copy_dir(&good, &bad);
    let wrong_big = flip(&bad.join(&big), 4096);
    let wrong_small = flip(&bad.join(&small), 500);
    let refused = w.upload(&bad);
    assert_fails_with(&refused, big.trim_start_matches("blobs/sha256/"));
    assert_fails_with(&refused, small.trim_start_matches("blobs/sha256/"));
    assert_fails_with(&refused, "damaged");
    for path in [&big, &small] {
        let head = s3
            .head_object()
            .bucket("air")
            .key(format!("dify/{path}"))
            .send()
            .await;
        assert!(head.is_err(), "{path} became an object");
    }
    let open = s3
        .list_multipart_uploads()
        .bucket("air")
        .send()
        .await
        .unwrap();
    assert!(open.uploads().is_empty(), "a refused upload was left open");

    // Wrong objects as an older upload left them: the small one tagged with its sha256 and
    // a CRC64NVME of the wrong bytes; the big one a SHA256 multipart of the wrong bytes.
    s3.put_object()
        .bucket("air")
        .key(format!("dify/{small}"))
        .metadata("sha256", small.trim_start_matches("blobs/sha256/"))
        .checksum_algorithm(aws_sdk_s3::types::ChecksumAlgorithm::Crc64Nvme)
        .body(ByteStream::from(wrong_small))
        .send()
        .await
        .unwrap();
    let key = format!("dify/{big}");
    let upload = s3
        .create_multipart_upload()
        .bucket("air")
        .key(&key)
        .checksum_algorithm(aws_sdk_s3::types::ChecksumAlgorithm::Sha256)
        .checksum_type(aws_sdk_s3::types::ChecksumType::Composite)
        .metadata("sha256", big.trim_start_matches("blobs/sha256/"))
        .metadata("part-size", (5u64 << 20).to_string())
        .send()
        .await
        .unwrap();
    let id = upload.upload_id().unwrap();
    let mut parts = Vec::new();
    for (i, chunk) in wrong_big.chunks(5 << 20).enumerate() {
        let number = i as i32 + 1;
        let part = s3
            .upload_part()
            .bucket("air")
            .key(&key)
            .upload_id(id)
            .part_number(number)
            .checksum_algorithm(aws_sdk_s3::types::ChecksumAlgorithm::Sha256)
            .body(ByteStream::from(chunk.to_vec()))
            .send()
            .await
            .unwrap();
        parts.push(
            aws_sdk_s3::types::CompletedPart::builder()
                .part_number(number)
                .e_tag(part.e_tag().unwrap())
                .build(),
        );
    }
    s3.complete_multipart_upload()
        .bucket("air")
        .key(&key)
        .upload_id(id)
        .multipart_upload(
            aws_sdk_s3::types::CompletedMultipartUpload::builder()
                .set_parts(Some(parts))
                .build(),
        )
        .send()
        .await
        .unwrap();
    // Put the good bundle's files in place so only the blobs are wrong.
    for file in ["bundle.json", "bundle.json.minisig"] {
        s3.put_object()
            .bucket("air")
            .key(format!("dify/bundles/release-a/{file}"))
            .body(ByteStream::from(std::fs::read(good.join(file)).unwrap()))
            .send()
            .await
            .unwrap();
    }
    let url = "s3://air/dify/bundles/release-a";
    let verify = || {
        run(w
            .cli()
            .arg("verify")
            .arg(url)
            .arg("--pubkey")
            .arg(&w.public))
    };
    let named = verify();
    assert_fails_with(&named, &big);

    // The next good upload replaces both instead of skipping them as already there.
    let repaired = w.upload(&good);
    assert_success(&repaired);
    assert!(
        json(&repaired)["bytes_sent"].as_u64().unwrap() >= big_size,
        "{}",
        json(&repaired)
    );
    assert_success(&verify());
    // And then the prefix is trusted as it is.
    let again = w.upload(&good);
    assert_success(&again);
    assert_eq!(json(&again)["bytes_sent"], 0, "{}", json(&again));

    // A bucket that does not exist is named as such; a part size S3 refuses, at once.
    let nowhere = run(w
        .cli()
        .args(["upload", "--pubkey"])
        .arg(&w.public)
        .arg(&good)
        .arg("s3://nosuchbucket/x"));
    assert_fails_with(&nowhere, "s3://nosuchbucket: no such bucket");
    let too_big = run(w
        .cli()
        .args(["upload", "--part-size", "6GiB", "--pubkey"])
        .arg(&w.public)
        .arg(&good)
        .arg("s3://air/dify"));
    assert_fails_with(&too_big, "5MiB to 5GiB");
}
