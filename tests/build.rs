//! `dify-bundle build`, `inspect` and `verify` against real docker-registry servers on
//! 127.0.0.1, with skopeo as an independent check of the layout.

mod common;

use std::collections::BTreeSet;
use std::path::Path;

use common::fixtures::{self, layer};
use common::{
    Auth, Registry, assert_fails_with, assert_success, dify_bundle, json, run, skopeo, stderr,
    write_recipe,
};

fn recipe_for(registry_host: &str, prefix: &str, dir: &std::path::Path) -> std::path::PathBuf {
    write_recipe(
        dir,
        &[
            ("api", format!("{registry_host}/{prefix}/dify-api:1.0")),
            ("web", format!("{registry_host}/{prefix}/dify-web:1.0")),
            (
                "sandbox",
                format!("{registry_host}/{prefix}/dify-sandbox:1.0"),
            ),
            (
                "plugin-daemon",
                format!("{registry_host}/{prefix}/dify-plugin-daemon:1.0"),
            ),
        ],
    )
}

fn build(flags: &[&str], recipe: impl AsRef<Path>, out: impl AsRef<Path>) -> std::process::Output {
    run(dify_bundle()
        .arg("build")
        .args(flags)
        .arg("--recipe")
        .arg(recipe.as_ref())
        .arg("--out")
        .arg(out.as_ref()))
}

fn blob_files(dir: &std::path::Path) -> BTreeSet<String> {
    std::fs::read_dir(dir.join("blobs/sha256"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn builds_a_deduplicated_single_platform_bundle_that_skopeo_reads() {
    let registry = Registry::start(Auth::None);
    let base = layer(42, 3 << 20);
    let images = fixtures::dify_like(&registry, "langgenius", &base, 1 << 20).await;
    let work = tempfile::tempdir().unwrap();
    let recipe = recipe_for(&registry.host(), "langgenius", work.path());
    let out = work.path().join("bundle");

    let result = build(
        &["--json", "--insecure-registry", &registry.host()],
        &recipe,
        &out,
    );
    assert_success(&result);
    let report = json(&result);

    // Every amd64 blob is there; no arm64-only blob is; the shared base is stored once.
    let stored = blob_files(&out);
    let base_hex = dify_bundle::digest::Digest::of(&base).hex().to_owned();
    assert!(stored.contains(&base_hex));
    for (role, pushed) in &images {
        for blob in &pushed.blobs["amd64"] {
            assert!(
                stored.contains(blob.digest.hex()),
                "{role}: {} missing",
                blob.digest
            );
        }
        if let Some(arm) = pushed.blobs.get("arm64") {
            assert!(
                !stored.contains(arm[2].digest.hex()),
                "{role}: arm64 layer stored"
            );
        }
    }
    // The attestation of the amd64 api image travels with it.
    let api = &images[0].1;
    assert!(stored.contains(api.attestation.as_ref().unwrap().hex()));
    assert_eq!(report["copy"]["blobs_present"], 0);
    assert_eq!(
        report["copy"]["bytes_transferred"],
        report["copy"]["blob_bytes"]
    );

    // bundle.json: roles, digests, platform, every file.
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("bundle.json")).unwrap()).unwrap();
    assert_eq!(manifest["format"], "dify-bundle/v1");
    let roles: Vec<&str> = manifest["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["role"].as_str().unwrap())
        .collect();
    assert_eq!(roles, ["api", "web", "sandbox", "plugin-daemon"]);
    assert_eq!(
        manifest["images"][0]["source_digest"],
        api.digest.to_string()
    );
    assert_ne!(
        manifest["images"][0]["digest"],
        api.digest.to_string(),
        "api index narrowed to amd64"
    );
    assert_eq!(
        manifest["images"][0]["platforms"][0]["digest"],
        api.platforms["amd64"].to_string()
    );
    assert_eq!(
        manifest["images"][2]["source_digest"],
        images[2].1.digest.to_string()
    );
    assert_eq!(
        manifest["images"][2]["platforms"][0]["digest"],
        images[2].1.digest.to_string()
    );
    let files = manifest["files"].as_array().unwrap();
    assert_eq!(
        files.len(),
        stored.len() + 2,
        "every blob plus index.json and oci-layout"
    );

    // skopeo reads the layout and copies every image out of it, digests intact.
    let target = Registry::start(Auth::None);
    for (role, pushed) in &images {
        let source = format!("oci:{}:{role}", out.display());
        let inspected = skopeo(&["inspect", "--raw", &source]);
        assert!(
            inspected.status.success(),
            "skopeo inspect {role}: {}",
            String::from_utf8_lossy(&inspected.stderr)
        );
        let dest = format!("docker://{}/copied/{role}:1", target.host());
        let copied = skopeo(&["copy", "--all", "--dest-tls-verify=false", &source, &dest]);
        assert!(
            copied.status.success(),
            "skopeo copy {role}: {}",
            String::from_utf8_lossy(&copied.stderr)
        );
        let platform = skopeo(&[
            "inspect",
            "--tls-verify=false",
            "--raw",
            "--override-arch",
            "amd64",
            &dest,
        ]);
        assert!(platform.status.success());
        let amd64 = &pushed.platforms["amd64"];
        let raw = skopeo(&[
            "inspect",
            "--tls-verify=false",
            "--raw",
            &format!("docker://{}/copied/{role}@{amd64}", target.host()),
        ]);
        assert!(
            raw.status.success(),
            "{role}: amd64 manifest {amd64} not copied: {}",
            String::from_utf8_lossy(&raw.stderr)
        );
        assert_eq!(dify_bundle::digest::Digest::of(&raw.stdout), *amd64);
    }

    // verify accepts it; inspect reports the sharing.
    let verified = run(dify_bundle().args(["verify", "--allow-unsigned"]).arg(&out));
    assert_success(&verified);
    let inspected = run(dify_bundle().args(["inspect", "--json"]).arg(&out));
    assert_success(&inspected);
    let inspection = json(&inspected);
    assert_eq!(
        inspection["shared_bytes_saved"].as_u64().unwrap(),
        3 * base.len() as u64
    );
    let table = run(dify_bundle().arg("inspect").arg(&out));
    let text = String::from_utf8_lossy(&table.stdout);
    assert!(
        text.contains("plugin-daemon")
            && text.contains("linux/amd64")
            && text.contains("saved by sharing")
    );

    // A second build downloads nothing and leaves the same bundle.
    let again = build(
        &["--json", "--insecure-registry", &registry.host()],
        &recipe,
        &out,
    );
    assert_success(&again);
    let report = json(&again);
    assert_eq!(report["copy"]["bytes_transferred"], 0);
    assert_eq!(report["copy"]["blobs_present"], report["copy"]["blobs"]);
    let manifest_again: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("bundle.json")).unwrap()).unwrap();
    assert_eq!(manifest_again["files"], manifest["files"]);
    assert_eq!(manifest_again["images"], manifest["images"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_platforms_keep_the_original_index() {
    let registry = Registry::start(Auth::None);
    let base = layer(7, 64 << 10);
    let images = fixtures::dify_like(&registry, "x", &base, 32 << 10).await;
    let work = tempfile::tempdir().unwrap();
    let recipe = write_recipe(
        work.path(),
        &[("api", format!("{}/x/dify-api:1.0", registry.host()))],
    );
    let out = work.path().join("bundle");
    let result = build(
        &[
            "--platform",
            "linux/amd64",
            "--platform",
            "linux/arm64",
            "--insecure-registry",
            &registry.host(),
        ],
        &recipe,
        &out,
    );
    assert_success(&result);
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("bundle.json")).unwrap()).unwrap();
    assert_eq!(
        manifest["images"][0]["digest"],
        images[0].1.digest.to_string()
    );
    assert_eq!(
        manifest["images"][0]["platforms"].as_array().unwrap().len(),
        2
    );

    // A platform the image does not have is refused by name.
    let missing = build(
        &[
            "--platform",
            "linux/s390x",
            "--insecure-registry",
            &registry.host(),
        ],
        &recipe,
        work.path().join("other"),
    );
    assert!(!missing.status.success());
    let err = stderr(&missing);
    assert!(
        err.contains("linux/s390x") && err.contains("linux/amd64") && err.contains("api"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn basic_auth_from_flags_and_docker_config() {
    let registry = Registry::start(Auth::Htpasswd {
        user: "AWS".into(),
        password: "s3cret".into(),
    });
    let base = layer(9, 64 << 10);
    fixtures::dify_like(&registry, "private", &base, 16 << 10).await;
    let work = tempfile::tempdir().unwrap();
    let recipe = recipe_for(&registry.host(), "private", work.path());

    // No credentials: refused, saying how to give them.
    let denied = build(
        &["--insecure-registry", &registry.host()],
        &recipe,
        work.path().join("denied"),
    );
    assert_fails_with(&denied, "--registry-auth");

    // A password on the command line is refused, with the ways that work, unechoed.
    let on_argv = build(
        &[
            "--insecure-registry",
            &registry.host(),
            "--registry-auth",
            &format!("{}=AWS:s3cret", registry.host()),
        ],
        &recipe,
        work.path().join("argv"),
    );
    assert_fails_with(&on_argv, "HOST=USER:env:VARIABLE");
    assert!(!stderr(&on_argv).contains("s3cret"));

    // Wrong password (from the environment): refused, naming the user.
    let env_flag = format!("{}=AWS:env:REGISTRY_PW", registry.host());
    let wrong = run(dify_bundle()
        .env("REGISTRY_PW", "nope")
        .args(["build", "--insecure-registry", &registry.host()])
        .args(["--registry-auth", &env_flag, "--recipe"])
        .arg(&recipe)
        .arg("--out")
        .arg(work.path().join("wrong")));
    assert_fails_with(&wrong, "rejected the credentials for user `AWS`");

    let from_env = run(dify_bundle()
        .env("REGISTRY_PW", "s3cret")
        .args(["build", "--insecure-registry", &registry.host()])
        .args(["--registry-auth", &env_flag, "--recipe"])
        .arg(&recipe)
        .arg("--out")
        .arg(work.path().join("env")));
    assert_success(&from_env);

    let mut piped = dify_bundle();
    piped
        .args(["build", "--insecure-registry", &registry.host()])
        .args([
            "--registry-auth",
            &format!("{}=AWS:stdin", registry.host()),
            "--recipe",
        ])
        .arg(&recipe)
        .arg("--out")
        .arg(work.path().join("stdin"))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = piped.spawn().unwrap();
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(b"s3cret\n").unwrap();
    }
    assert_success(&child.wait_with_output().unwrap());

    // A Docker credential helper (credHelpers for this registry, credsStore for the rest),
    // asked as docker does: `docker-credential-NAME get`, the server on standard input.
    let helpers = work.path().join("helpers");
    std::fs::create_dir_all(&helpers).unwrap();
    let asked = work.path().join("asked");
    let script = format!(
        "#!/bin/sh\n\
         server=$(cat)\n\
         echo \"$1 $server\" >> '{}'\n\
         if [ \"$1\" = get ] && [ \"$server\" = '{}' ]; then\n\
           printf '{{\"ServerURL\":\"%s\",\"Username\":\"AWS\",\"Secret\":\"s3cret\"}}' \"$server\"\n\
         else\n\
           echo 'credentials not found in native keychain'; exit 1\n\
         fi\n",
        asked.display(),
        registry.host()
    );
    let helper = helpers.join("docker-credential-testhelper");
    std::fs::write(&helper, script).unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&helper, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let helper_config = work.path().join("helper-config");
    std::fs::create_dir_all(&helper_config).unwrap();
    std::fs::write(
        helper_config.join("config.json"),
        format!(
            r#"{{"credsStore":"nosuchhelper","credHelpers":{{"{}":"testhelper"}}}}"#,
            registry.host()
        ),
    )
    .unwrap();
    let path = format!(
        "{}:{}",
        helpers.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let helped = run(dify_bundle()
        .env("DOCKER_CONFIG", &helper_config)
        .env("PATH", &path)
        .args(["build", "--insecure-registry", &registry.host(), "--recipe"])
        .arg(&recipe)
        .arg("--out")
        .arg(work.path().join("helped")));
    assert_success(&helped);
    let log = std::fs::read_to_string(&asked).unwrap();
    assert_eq!(
        log.lines().next(),
        Some(format!("get {}", registry.host()).as_str())
    );
    // A helper that has nothing for the registry: the usual "requires credentials".
    let nothing = helpers.join("docker-credential-nothing");
    std::fs::write(
        &nothing,
        format!(
            "#!/bin/sh\nserver=$(cat)\necho \"$1 $server\" > '{}'\n\
             echo 'credentials not found in native keychain'; exit 1\n",
            asked.display()
        ),
    )
    .unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&nothing, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    std::fs::write(
        helper_config.join("config.json"),
        r#"{"credsStore":"nothing"}"#,
    )
    .unwrap();
    let unhelped = run(dify_bundle()
        .env("DOCKER_CONFIG", &helper_config)
        .env("PATH", &path)
        .args(["build", "--insecure-registry", &registry.host(), "--recipe"])
        .arg(&recipe)
        .arg("--out")
        .arg(work.path().join("unhelped")));
    assert_fails_with(&unhelped, "requires credentials");
    assert_eq!(
        std::fs::read_to_string(&asked).unwrap().trim(),
        format!("get {}", registry.host())
    );

    let config_dir = work.path().join("docker");
    std::fs::create_dir_all(&config_dir).unwrap();
    std::fs::write(
        config_dir.join("config.json"),
        format!(
            r#"{{"auths":{{"{}":{{"auth":"QVdTOnMzY3JldA=="}}}}}}"#,
            registry.host()
        ),
    )
    .unwrap();
    let configured = run(dify_bundle()
        .env("DOCKER_CONFIG", &config_dir)
        .args(["build", "--insecure-registry", &registry.host(), "--recipe"])
        .arg(&recipe)
        .arg("--out")
        .arg(work.path().join("config")));
    assert_success(&configured);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_hub_token_flow_through_a_mirror() {
    // A token-auth registry standing in for Docker Hub: anonymous callers may only pull.
    let registry = Registry::start(Auth::Token {
        user: "pusher".into(),
        password: "pw".into(),
    });
    let base = layer(11, 256 << 10);
    let images = fixtures::dify_like(&registry, "langgenius", &base, 64 << 10).await;
    let work = tempfile::tempdir().unwrap();
    let recipe = write_recipe(
        work.path(),
        &[
            ("api", "docker.io/langgenius/dify-api:1.0".to_owned()),
            ("web", "langgenius/dify-web:1.0".to_owned()),
        ],
    );
    let out = work.path().join("bundle");
    let result = build(
        &[
            "--json",
            "--registry-mirror",
            &format!("docker.io={}", registry.host()),
            "--insecure-registry",
            &registry.host(),
        ],
        &recipe,
        &out,
    );
    assert_success(&result);
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("bundle.json")).unwrap()).unwrap();
    assert_eq!(
        manifest["images"][1]["source_digest"],
        images[1].1.digest.to_string()
    );
    assert_success(&run(dify_bundle()
        .args(["verify", "--allow-unsigned"])
        .arg(&out)));

    // An image the mirror does not have is named in the error.
    let recipe = write_recipe(
        work.path(),
        &[("api", "langgenius/nothing-here:1.0".to_owned())],
    );
    let missing = build(
        &[
            "--registry-mirror",
            &format!("docker.io={}", registry.host()),
            "--insecure-registry",
            &registry.host(),
        ],
        &recipe,
        work.path().join("missing"),
    );
    assert_fails_with(&missing, "langgenius/nothing-here");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blob_corrupted_on_the_registry_is_named_and_never_stored() {
    let registry = Registry::start(Auth::None);
    let base = layer(13, 128 << 10);
    let images = fixtures::dify_like(&registry, "c", &base, 64 << 10).await;
    let layer = images[2].1.blobs["amd64"][2].digest.clone();
    let file = registry.blob_file(layer.hex());
    let mut bytes = std::fs::read(&file).unwrap();
    bytes[100] ^= 0xff;
    std::fs::write(&file, bytes).unwrap();

    let work = tempfile::tempdir().unwrap();
    let recipe = recipe_for(&registry.host(), "c", work.path());
    let out = work.path().join("bundle");
    let result = build(
        &["--retries", "1", "--insecure-registry", &registry.host()],
        &recipe,
        &out,
    );
    assert!(!result.status.success());
    let err = stderr(&result);
    assert!(
        err.contains(&layer.to_string())
            && err.contains("digest mismatch")
            && err.contains("sandbox"),
        "{err}"
    );
    assert!(!out.join("blobs/sha256").join(layer.hex()).exists());
    assert!(!out.join("bundle.json").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_names_every_missing_changed_truncated_and_extra_file() {
    let registry = Registry::start(Auth::None);
    let base = layer(17, 64 << 10);
    let images = fixtures::dify_like(&registry, "v", &base, 32 << 10).await;
    let work = tempfile::tempdir().unwrap();
    let recipe = recipe_for(&registry.host(), "v", work.path());
    let out = work.path().join("bundle");
    assert_success(&build(
        &["--insecure-registry", &registry.host()],
        &recipe,
        &out,
    ));

    let blob = |d: &dify_bundle::digest::Digest| out.join("blobs/sha256").join(d.hex());
    let flipped = images[0].1.blobs["amd64"][2].digest.clone();
    let mut bytes = std::fs::read(blob(&flipped)).unwrap();
    bytes[10] ^= 1;
    std::fs::write(blob(&flipped), bytes).unwrap();
    let removed = images[1].1.blobs["amd64"][2].digest.clone();
    std::fs::remove_file(blob(&removed)).unwrap();
    let truncated = images[2].1.blobs["amd64"][2].digest.clone();
    let bytes = std::fs::read(blob(&truncated)).unwrap();
    std::fs::write(blob(&truncated), &bytes[..bytes.len() - 1]).unwrap();
    std::fs::write(out.join("blobs/sha256/stowaway"), b"extra").unwrap();
    let manifest_blob = images[3].1.digest.clone();
    let mut bytes = std::fs::read(blob(&manifest_blob)).unwrap();
    bytes[0] = b' ';
    std::fs::write(blob(&manifest_blob), bytes).unwrap();

    let result = run(dify_bundle()
        .args(["verify", "--json", "--allow-unsigned"])
        .arg(&out));
    assert!(!result.status.success());
    let err = stderr(&result);
    for (digest, word) in [
        (&flipped, "changed"),
        (&removed, "missing"),
        (&truncated, "size"),
        (&manifest_blob, "changed"),
    ] {
        let line = err
            .lines()
            .find(|l| l.contains(digest.hex()))
            .unwrap_or_else(|| panic!("{digest} not named:\n{err}"));
        assert!(line.contains(word), "{line}");
    }
    assert!(
        err.contains("blobs/sha256/stowaway: not part of the bundle"),
        "{err}"
    );
    assert_eq!(json(&result)["problems"].as_array().unwrap().len(), 5);

    // A tampered bundle.json is caught too (its file list no longer matches).
    std::fs::write(out.join("bundle.json"), b"{\"format\": 1}").unwrap();
    let broken = run(dify_bundle().args(["verify", "--allow-unsigned"]).arg(&out));
    assert_fails_with(&broken, "bundle.json");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blob_damaged_in_place_keeping_its_size_is_fetched_again() {
    let registry = Registry::start(Auth::None);
    let base = layer(19, 64 << 10);
    let images = fixtures::dify_like(&registry, "d", &base, 32 << 10).await;
    let work = tempfile::tempdir().unwrap();
    let recipe = recipe_for(&registry.host(), "d", work.path());
    let out = work.path().join("bundle");
    let flags = ["--json", "--insecure-registry", &registry.host()];
    assert_success(&build(&flags, &recipe, &out));

    // A layer and a manifest damaged on disk, sizes kept.
    let blob = |d: &dify_bundle::digest::Digest| out.join("blobs/sha256").join(d.hex());
    let damaged_layer = images[0].1.blobs["amd64"][2].digest.clone();
    let damaged_manifest = images[1].1.platforms["amd64"].clone();
    for (digest, at) in [(&damaged_layer, 4096), (&damaged_manifest, 0)] {
        let mut bytes = std::fs::read(blob(digest)).unwrap();
        bytes[at] ^= 0x20;
        std::fs::write(blob(digest), bytes).unwrap();
    }
    let rerun = build(&flags, &recipe, &out);
    assert_success(&rerun);
    let layer_size = std::fs::metadata(blob(&damaged_layer)).unwrap().len();
    let copied = json(&rerun)["copy"]["bytes_transferred"].as_u64();
    assert!(copied.is_some_and(|n| n >= layer_size), "{}", json(&rerun));
    for digest in [&damaged_layer, &damaged_manifest] {
        let (actual, _) = dify_bundle::digest::hash_file(&blob(digest)).unwrap();
        assert_eq!(&actual, digest, "{digest} kept damaged");
    }
    assert_success(&run(dify_bundle()
        .args(["verify", "--allow-unsigned"])
        .arg(&out)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leftovers_of_failed_runs_are_removed_and_a_busy_directory_is_refused() {
    let registry = Registry::start(Auth::None);
    let base = layer(23, 64 << 10);
    fixtures::dify_like(&registry, "l", &base, 32 << 10).await;
    let work = tempfile::tempdir().unwrap();
    let recipe = recipe_for(&registry.host(), "l", work.path());
    let out = work.path().join("bundle");
    let flags = ["--insecure-registry", &registry.host()];
    assert_success(&build(&flags, &recipe, &out));

    // What a full disk or a kill leaves: temporary files of atomic writes, a half-built
    // layer, and a scratch directory.
    let hex = "ab".repeat(32);
    let leftovers = [
        "index.tmp-27583".to_owned(),
        "bundle.tmp-27583".to_owned(),
        "bundle.json.tmp-27583".to_owned(),
        format!("blobs/sha256/{hex}.tmp-27583"),
        ".partial/layer-27583.tar.gz".to_owned(),
        ".partial/python-27583/x".to_owned(),
    ];
    for path in &leftovers {
        let full = out.join(path);
        std::fs::create_dir_all(full.parent().unwrap()).unwrap();
        std::fs::write(full, b"left").unwrap();
    }
    assert_success(&build(&flags, &recipe, &out));
    for path in &leftovers {
        assert!(!out.join(path).exists(), "{path} left behind");
    }
    assert_success(&run(dify_bundle()
        .args(["verify", "--allow-unsigned"])
        .arg(&out)));

    // Another process holds the directory: build and pack are refused, naming it.
    let held = std::fs::File::open(&out).unwrap();
    held.try_lock().unwrap();
    let pid = std::process::id().to_string();
    let refused = build(&flags, &recipe, &out);
    assert_fails_with(&refused, "in use by process");
    assert_fails_with(&refused, &pid);
    let media = work.path().join("media");
    let packing = run(dify_bundle()
        .args(["pack", "--allow-unsigned"])
        .arg(&out)
        .arg("--out")
        .arg(&media));
    assert_fails_with(&packing, &pid);
    // Nor is a signature written over a bundle.json another run may be rewriting.
    let key = common::generate_key(work.path());
    let signing = run(dify_bundle()
        .arg("sign")
        .arg(&out)
        .arg("--key")
        .arg(key.with_extension("key")));
    assert_fails_with(&signing, &pid);
    assert!(!out.join("bundle.json.minisig").exists());
    held.unlock().unwrap();

    // A part a failed packing was writing is removed by the next packing; a packing that
    // fails removes its own.
    std::fs::create_dir_all(&media).unwrap();
    std::fs::write(media.join("test-bundle.part009.tar.tmp"), b"half").unwrap();
    assert_success(&run(dify_bundle()
        .args(["pack", "--allow-unsigned"])
        .arg(&out)
        .arg("--out")
        .arg(&media)));
    let temps = |dir: &Path| {
        std::fs::read_dir(dir)
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .ends_with(".tmp")
            })
            .count()
    };
    assert_eq!(temps(&media), 0);
    let blob = std::fs::read_dir(out.join("blobs/sha256"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .max_by_key(|p| std::fs::metadata(p).unwrap().len())
        .unwrap();
    let mut bytes = std::fs::read(&blob).unwrap();
    bytes[7] ^= 1;
    std::fs::write(&blob, bytes).unwrap();
    let other = work.path().join("media2");
    let failed = run(dify_bundle()
        .args(["pack", "--allow-unsigned"])
        .arg(&out)
        .arg("--out")
        .arg(&other));
    assert!(!failed.status.success());
    assert_eq!(temps(&other), 0, "a failed packing left its part");
}

/// Rewrites the packing list of a part (the last entry of its tar) with `edit`.
fn rewrite_pack_list(part: &Path, edit: impl Fn(&mut serde_json::Value)) {
    let mut archive = tar::Archive::new(std::fs::File::open(part).unwrap());
    let mut entries: Vec<(String, Vec<u8>)> = Vec::new();
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        let name = entry.path().unwrap().to_string_lossy().into_owned();
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(&mut entry, &mut bytes).unwrap();
        entries.push((name, bytes));
    }
    let mut builder = tar::Builder::new(Vec::new());
    for (name, mut bytes) in entries {
        if name == "pack.json" {
            let mut list: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
            edit(&mut list);
            bytes = serde_json::to_vec(&list).unwrap();
        }
        let mut header = tar::Header::new_gnu();
        header.set_size(bytes.len() as u64);
        header.set_mode(0o644);
        builder
            .append_data(&mut header, &name, bytes.as_slice())
            .unwrap();
    }
    std::fs::write(part, builder.into_inner().unwrap()).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_refuses_extra_directories_duplicates_overflows_and_fifos() {
    use dify_bundle::store::{ImageSink as _, ImageSource as _};
    let registry = Registry::start(Auth::None);
    let base = layer(29, 64 << 10);
    let images = fixtures::dify_like(&registry, "r", &base, 32 << 10).await;
    let work = tempfile::tempdir().unwrap();
    let recipe = recipe_for(&registry.host(), "r", work.path());
    let out = work.path().join("bundle");
    assert_success(&build(
        &["--insecure-registry", &registry.host()],
        &recipe,
        &out,
    ));
    let verify = |path: &Path| run(dify_bundle().args(["verify", "--allow-unsigned"]).arg(path));

    // An extra (empty) directory.
    std::fs::create_dir_all(out.join("stray/deeper")).unwrap();
    assert_fails_with(&verify(&out), "stray/: not part of the bundle");
    std::fs::remove_dir_all(out.join("stray")).unwrap();
    assert_success(&verify(&out));

    // A file listed twice in bundle.json.
    let original = std::fs::read(out.join("bundle.json")).unwrap();
    let mut manifest: serde_json::Value = serde_json::from_slice(&original).unwrap();
    let first = manifest["files"][0].clone();
    manifest["files"].as_array_mut().unwrap().push(first);
    std::fs::write(
        out.join("bundle.json"),
        serde_json::to_vec(&manifest).unwrap(),
    )
    .unwrap();
    assert_fails_with(&verify(&out), "listed twice");
    std::fs::write(out.join("bundle.json"), &original).unwrap();

    // A packing list whose offset + length overflows, checked as one part.
    let media = work.path().join("media");
    assert_success(&run(dify_bundle()
        .args(["pack", "--allow-unsigned", "--split-size", "200KiB"])
        .arg(&out)
        .arg("--out")
        .arg(&media)));
    let mut parts: Vec<_> = std::fs::read_dir(&media)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    parts.sort();
    assert!(parts.len() >= 2, "{parts:?}");
    let victim = parts.last().unwrap().clone();
    let saved = std::fs::read(&victim).unwrap();
    rewrite_pack_list(&victim, |list| {
        list["entries"][0]["offset"] = serde_json::json!(u64::MAX);
    });
    assert_fails_with(&verify(&victim), "overflow");
    std::fs::write(&victim, saved).unwrap();
    assert_success(&verify(&media));

    // A copy of a part beside it: both files named.
    let copy = media.join("test-bundle.part001 (1).tar");
    std::fs::copy(&parts[0], &copy).unwrap();
    let twice = verify(&media);
    assert_fails_with(&twice, "claims to be part 1");
    assert_fails_with(&twice, "part001 (1).tar");
    std::fs::remove_file(&copy).unwrap();

    // A FIFO among the parts: named, and verify does not wait on it.
    let fifo = media.join("zz.part009.tar");
    assert!(
        std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success()
    );
    let mut child = dify_bundle()
        .args(["verify", "--allow-unsigned"])
        .arg(&media)
        .stderr(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            child.kill().unwrap();
            panic!("verify blocked on a FIFO");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let output = child.wait_with_output().unwrap();
    assert_fails_with(&output, "zz.part009.tar: not a regular file");

    // An index that gives one of its manifests a size other than its own: refused.
    let store = fixtures::store_for(&registry);
    let index_descriptor = store.resolve("r/dify-api", "1.0").await.unwrap();
    let index = store
        .get_manifest("r/dify-api", &index_descriptor)
        .await
        .unwrap();
    let mut json: serde_json::Value = serde_json::from_slice(&index.bytes).unwrap();
    json["manifests"][0]["size"] = serde_json::json!(1u64 << 40);
    let lying = dify_bundle::oci::RawManifest {
        media_type: index.media_type.clone(),
        bytes: serde_json::to_vec(&json).unwrap().into(),
    };
    store
        .put_manifest(
            "r/dify-api",
            &lying,
            Some(&dify_bundle::store::Tag {
                name: "lying".into(),
                ..Default::default()
            }),
        )
        .await
        .unwrap();
    let lying_dir = work.path().join("lying");
    std::fs::create_dir_all(&lying_dir).unwrap();
    let lying_recipe = write_recipe(
        &lying_dir,
        &[("api", format!("{}/r/dify-api:lying", registry.host()))],
    );
    let refused = build(
        &["--insecure-registry", &registry.host()],
        &lying_recipe,
        work.path().join("lying-bundle"),
    );
    assert_fails_with(&refused, "index that names it says 1099511627776");
    let _ = images;
}
