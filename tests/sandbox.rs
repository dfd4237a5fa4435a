//! Sandbox Python packages: resolved with uv for the interpreter found inside the image,
//! downloaded from a package index on 127.0.0.1 holding real wheels as PyPI serves them (the
//! way a build uses a PyPI mirror: `UV_DEFAULT_INDEX`), installed by our own wheel installer
//! into a deterministic layer of a derived image. The fixture image carries this machine's Python prefix, so the installed
//! packages can be imported — and their console scripts run — with the local interpreter.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::fixtures::{push_single, tar_layer};
use common::{
    Auth, PackageIndex, Registry, assert_fails_with, assert_success, dify_bundle, json,
    loopback_only, run, skopeo, stderr, write_recipe,
};

struct LocalPython {
    prefix: String,
    version: String,
    full: String,
    glibc: String,
}

fn local_python() -> LocalPython {
    let out = Command::new("python3")
        .args(["-c", "import sys,platform; v=sys.version_info; print(sys.prefix); print(f'{v[0]}.{v[1]}'); print(f'{v[0]}.{v[1]}.{v[2]}'); print(platform.libc_ver()[1])"])
        .output()
        .expect("python3");
    let text = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    LocalPython {
        prefix: lines[0].trim_start_matches('/').to_owned(),
        version: lines[1].to_owned(),
        full: lines[2].to_owned(),
        glibc: lines[3].to_owned(),
    }
}

/// An image laid out like dify-sandbox, but with this machine's Python prefix.
async fn push_sandbox(registry: &Registry, py: &LocalPython) -> String {
    let prefix = &py.prefix;
    let status = format!(
        "Package: libc6\nStatus: install ok installed\nVersion: {}-9+deb12u7\n",
        py.glibc
    );
    let python3 = format!("{prefix}/bin/python3");
    let python3x = format!("{prefix}/bin/python{}", py.version);
    let site = format!("{prefix}/lib/python{}/site-packages/", py.version);
    let base = tar_layer(&[
        ("var/lib/dpkg/status", 0o644, Some(status.as_bytes())),
        ("usr/bin/env", 0o755, Some(b"binary")),
    ]);
    let python = tar_layer(&[
        (&python3x, 0o755, Some(b"interpreter")),
        (&python3, 0o755, Some(b"interpreter")),
        (&site, 0o755, None),
        (&format!("{site}README.txt"), 0o644, Some(b"site")),
    ]);
    let env = vec![
        format!("PATH=/{prefix}/bin:/usr/local/sbin:/usr/bin:/bin"),
        format!("PYTHON_VERSION={}", py.full),
    ];
    push_single(registry, "t/dify-sandbox", "1.0", vec![base, python], &env)
        .await
        .to_string()
}

/// The index the sandbox tests resolve against: numpy and tabulate for this machine's Python
/// (downloaded by scripts/test.sh), and pycrypto 2.6.1 as PyPI has it — a source
/// distribution only, no wheel.
fn sandbox_index(work: &Path) -> PackageIndex {
    let dir = common::test_wheels().join("sandbox-index");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}; scripts/test.sh downloads it", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "whl"))
        .collect();
    assert!(
        files.len() >= 2,
        "{}: scripts/test.sh downloads numpy and tabulate",
        dir.display()
    );
    let sdist = work.join("pycrypto-2.6.1.tar.gz");
    std::fs::write(&sdist, b"a source distribution the build must never fetch").unwrap();
    files.push(sdist);
    common::package_index(&files)
}

fn build(
    recipe: &Path,
    requirements: &Path,
    cache: &Path,
    out: &Path,
    host: &str,
    index: &PackageIndex,
) -> std::process::Output {
    run(loopback_only(&mut dify_bundle())
        .env("UV_DEFAULT_INDEX", &index.url)
        .args(["build", "--json", "--insecure-registry", host, "--recipe"])
        .arg(recipe)
        .arg("--sandbox-requirements")
        .arg(requirements)
        .arg("--cache-dir")
        .arg(cache)
        .arg("--out")
        .arg(out))
}

fn layer_of(bundle: &Path) -> (serde_json::Value, PathBuf) {
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(bundle.join("bundle.json")).unwrap()).unwrap();
    let layer = manifest["python"][0]["layer"]
        .as_str()
        .unwrap()
        .trim_start_matches("sha256:")
        .to_owned();
    (manifest, bundle.join("blobs/sha256").join(layer))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sandbox_packages_install_import_and_run_reproducibly() {
    let py = local_python();
    let registry = Registry::start(Auth::None);
    let base_digest = push_sandbox(&registry, &py).await;
    let work = tempfile::tempdir().unwrap();
    let recipe = write_recipe(
        work.path(),
        &[("sandbox", format!("{}/t/dify-sandbox:1.0", registry.host()))],
    );
    let requirements = work.path().join("requirements.txt");
    std::fs::write(
        &requirements,
        "numpy\ntabulate==0.10.0 ; python_version >= '3.8'\n",
    )
    .unwrap();
    let cache = work.path().join("cache");
    let out = work.path().join("bundle");

    let index = sandbox_index(work.path());
    let result = build(
        &recipe,
        &requirements,
        &cache,
        &out,
        &registry.host(),
        &index,
    );
    assert_success(&result);
    let report = json(&result);
    assert!(report["sandbox_seconds"].as_f64().unwrap() > 0.0);

    // bundle.json: the Python found in the image, every wheel, the derived image over its base.
    let (manifest, layer) = layer_of(&out);
    let set = &manifest["python"][0];
    assert_eq!(set["python"]["version"], py.version.as_str());
    assert_eq!(set["python"]["full_version"], py.full.as_str());
    assert_eq!(
        set["python"]["interpreter"],
        format!("/{}/bin/python3", py.prefix)
    );
    assert_eq!(
        set["python"]["uv_platform"],
        format!("x86_64-manylinux_{}", py.glibc.replace('.', "_"))
    );
    let names: Vec<&str> = set["wheels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["name"].as_str().unwrap())
        .collect();
    assert!(
        names.contains(&"numpy") && names.contains(&"tabulate"),
        "{names:?}"
    );
    for wheel in set["wheels"].as_array().unwrap() {
        assert!(wheel["filename"].as_str().unwrap().ends_with(".whl"));
        // Its size known, though the index (HTML simple API) gave none to the lock.
        assert!(wheel["size"].as_u64().unwrap() > 1000, "{wheel}");
        // Fetched from the index the build was given, not from PyPI.
        let url = wheel["url"].as_str().unwrap();
        assert!(
            url.starts_with(index.url.trim_end_matches("/simple")),
            "{url}"
        );
        assert_eq!(wheel["sha256"].as_str().unwrap().len(), 71);
    }
    let image = &manifest["images"][0];
    assert!(image["base_digest"].is_string() && image["base_digest"] != image["digest"]);
    assert_eq!(image["source_digest"], base_digest.as_str());
    assert_eq!(image["platforms"][0]["digest"], set["manifest"]);

    // The derived manifest and config: the base's layers plus one, diff_ids likewise.
    let derived: serde_json::Value = serde_json::from_slice(
        &std::fs::read(
            out.join("blobs/sha256").join(
                set["manifest"]
                    .as_str()
                    .unwrap()
                    .trim_start_matches("sha256:"),
            ),
        )
        .unwrap(),
    )
    .unwrap();
    assert_eq!(derived["layers"].as_array().unwrap().len(), 3);
    assert_eq!(derived["layers"][2]["digest"], set["layer"]);
    let config: serde_json::Value = serde_json::from_slice(
        &std::fs::read(
            out.join("blobs/sha256").join(
                derived["config"]["digest"]
                    .as_str()
                    .unwrap()
                    .trim_start_matches("sha256:"),
            ),
        )
        .unwrap(),
    )
    .unwrap();
    assert_eq!(config["rootfs"]["diff_ids"][2], set["diff_id"]);
    assert_eq!(config["history"].as_array().unwrap().len(), 3);
    assert_eq!(
        config["config"]["Cmd"][0], "/main",
        "the rest of the config is unchanged"
    );

    // skopeo reads the derived image.
    let inspected = skopeo(&["inspect", &format!("oci:{}:sandbox", out.display())]);
    assert!(
        inspected.status.success(),
        "{}",
        String::from_utf8_lossy(&inspected.stderr)
    );
    let inspected: serde_json::Value = serde_json::from_slice(&inspected.stdout).unwrap();
    assert_eq!(inspected["Layers"].as_array().unwrap().len(), 3);

    // Unpack the layer and use it with the local interpreter.
    let root = work.path().join("root");
    std::fs::create_dir_all(&root).unwrap();
    let untar = Command::new("tar")
        .arg("-xzf")
        .arg(&layer)
        .arg("-C")
        .arg(&root)
        .status()
        .unwrap();
    assert!(untar.success());
    let requirements_file = root.join("dependencies/python-requirements.txt");
    assert_eq!(std::fs::read(&requirements_file).unwrap().len(), 0);
    let site = root.join(format!(
        "{}/lib/python{}/site-packages",
        py.prefix, py.version
    ));
    let imported = Command::new("python3")
        .args(["-I", "-c", "import sys; sys.path.insert(0, sys.argv[1]); import numpy, tabulate; print(numpy.__file__); print(int(numpy.arange(5).sum()))"])
        .arg(&site)
        .output()
        .unwrap();
    assert!(
        imported.status.success(),
        "{}",
        String::from_utf8_lossy(&imported.stderr)
    );
    let printed = String::from_utf8_lossy(&imported.stdout);
    assert!(
        printed.contains(site.to_str().unwrap()) && printed.trim_end().ends_with("10"),
        "{printed}"
    );
    let dist_info = std::fs::read_dir(&site)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("tabulate-")
                && p.extension().is_some_and(|e| e == "dist-info")
        })
        .unwrap();
    assert_eq!(
        std::fs::read_to_string(dist_info.join("INSTALLER")).unwrap(),
        "dify-bundle\n"
    );
    assert!(dist_info.join("REQUESTED").exists());
    let record = std::fs::read_to_string(dist_info.join("RECORD")).unwrap();
    assert!(record.contains("../../../bin/tabulate,sha256="), "{record}");
    // The console script's shebang names the image's interpreter, which here is this one.
    let script = root.join(format!("{}/bin/tabulate", py.prefix));
    let first_line = std::fs::read_to_string(&script)
        .unwrap()
        .lines()
        .next()
        .unwrap()
        .to_owned();
    assert_eq!(first_line, format!("#!/{}/bin/python3", py.prefix));
    let ran = Command::new(&script)
        .env("PYTHONPATH", &site)
        .stdin(
            std::fs::File::open({
                let input = work.path().join("table.txt");
                std::fs::write(&input, "name qty\napple 3\n").unwrap();
                input
            })
            .unwrap(),
        )
        .output()
        .unwrap();
    assert!(
        ran.status.success(),
        "{}",
        String::from_utf8_lossy(&ran.stderr)
    );
    assert!(String::from_utf8_lossy(&ran.stdout).contains("apple"));

    // The bundle verifies, and a second build gives the same bytes.
    assert_success(&run(dify_bundle()
        .args(["verify", "--allow-unsigned"])
        .arg(&out)));
    let again = work.path().join("again");
    assert_success(&build(
        &recipe,
        &requirements,
        &cache,
        &again,
        &registry.host(),
        &index,
    ));
    let (manifest_again, _) = layer_of(&again);
    assert_eq!(manifest_again["python"], manifest["python"]);
    assert_eq!(manifest_again["images"], manifest["images"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sandbox_package_errors_say_what_to_do() {
    let py = local_python();
    let registry = Registry::start(Auth::None);
    push_sandbox(&registry, &py).await;
    let work = tempfile::tempdir().unwrap();
    let recipe = write_recipe(
        work.path(),
        &[("sandbox", format!("{}/t/dify-sandbox:1.0", registry.host()))],
    );
    let cache = work.path().join("cache");
    let index = sandbox_index(work.path());

    // A package with no wheel for the target names itself and the target.
    let requirements = work.path().join("nowheel.txt");
    std::fs::write(&requirements, "pycrypto==2.6.1\n").unwrap();
    let failed = build(
        &recipe,
        &requirements,
        &cache,
        &work.path().join("a"),
        &registry.host(),
        &index,
    );
    assert_fails_with(&failed, "pycrypto");
    assert!(
        stderr(&failed).contains(&format!("x86_64-manylinux_{}", py.glibc.replace('.', "_"))),
        "{}",
        stderr(&failed)
    );

    // A uv named but not there: said, with what to do.
    let requirements = work.path().join("ok.txt");
    std::fs::write(&requirements, "tabulate==0.10.0\n").unwrap();
    // A PATH with a python3 and no uv (uv resolves with any Python 3 interpreter present; it
    // never needs one of the target's version).
    let bin = work.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    let interpreter = Command::new("python3")
        .args(["-c", "import sys; print(sys.executable)"])
        .output()
        .unwrap();
    let interpreter = String::from_utf8(interpreter.stdout).unwrap();
    std::os::unix::fs::symlink(interpreter.trim(), bin.join("python3")).unwrap();
    let path = bin.to_str().unwrap().to_owned();
    let build_without_uv = |out: &str, env: &[(&str, &str)]| {
        let mut command = dify_bundle();
        loopback_only(&mut command)
            .env("PATH", &path)
            .env("UV_DEFAULT_INDEX", &index.url);
        for (k, v) in env {
            command.env(k, v);
        }
        run(command
            .args(["build", "--insecure-registry", &registry.host(), "--recipe"])
            .arg(&recipe)
            .arg("--sandbox-requirements")
            .arg(&requirements)
            .arg("--cache-dir")
            .arg(&cache)
            .arg("--out")
            .arg(work.path().join(out)))
    };
    let named = build_without_uv("b", &[("DIFY_BUNDLE_UV", "/nonexistent/uv")]);
    assert_fails_with(&named, "`/nonexistent/uv` cannot be run");
    assert_fails_with(&named, "pip install uv");

    // No uv on PATH: the pinned release is fetched, and its bytes checked against the pin —
    // a wheel that is not the pinned one is refused and nothing is unpacked.
    let served = tempfile::tempdir().unwrap();
    let wheel = real_uv_wheel();
    let name = wheel.file_name().unwrap().to_str().unwrap().to_owned();
    let mut forged = std::fs::read(&wheel).unwrap();
    forged[1000] ^= 0xff;
    std::fs::write(served.path().join("forged.whl"), &forged).unwrap();
    std::fs::copy(&wheel, served.path().join(&name)).unwrap();
    let (_server, base) = common::serve_dir(served.path());
    let tool = cache.join("tools/uv-0.13.9-x86_64/uv");
    let forged_url = format!("{base}/forged.whl");
    let refused = build_without_uv("c", &[("DIFY_BUNDLE_UV_WHEEL_URL", &forged_url)]);
    assert_fails_with(&refused, "uv-0.13.9");
    assert!(stderr(&refused).contains("sha256"), "{}", stderr(&refused));
    assert!(!tool.exists());

    let real_url = format!("{base}/{name}");
    let fetched = build_without_uv("d", &[("DIFY_BUNDLE_UV_WHEEL_URL", &real_url)]);
    assert_success(&fetched);
    assert!(
        stderr(&fetched).contains("fetching uv 0.13.9"),
        "{}",
        stderr(&fetched)
    );
    assert!(tool.is_file());
    // Kept: the next build uses it without fetching (the server is gone).
    drop(_server);
    let again = build_without_uv("e", &[("DIFY_BUNDLE_UV_WHEEL_URL", &real_url)]);
    assert_success(&again);
    assert!(
        !stderr(&again).contains("fetching uv"),
        "{}",
        stderr(&again)
    );
}

/// The real uv 0.13.9 wheel for x86_64 as PyPI serves it, put in the test cache by
/// scripts/test.sh (`pip download`): the pin is checked against upstream's bytes.
fn real_uv_wheel() -> PathBuf {
    let dir = std::env::var_os("DIFY_BUNDLE_TEST_WHEELS")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var("HOME").unwrap()).join(".cache/dify-bundle/test-wheels")
        });
    let path = dir.join("uv-0.13.9-py3-none-manylinux_2_17_x86_64.manylinux2014_x86_64.whl");
    assert!(
        path.is_file(),
        "{} is missing: scripts/test.sh downloads it",
        path.display()
    );
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wheel_that_does_not_match_its_lock_hash_is_refused_by_name() {
    use std::collections::HashMap;
    use std::sync::Arc;

    use dify_bundle::copy::{BlobJob, CopyOptions, copy_blobs};
    use dify_bundle::digest::Digest;
    use dify_bundle::oci::Descriptor;
    use dify_bundle::progress::{Progress, Silent};
    use dify_bundle::store::url::UrlStore;
    use dify_bundle::store::{BlobSink, BlobSource, LayoutStore};

    let served = tempfile::tempdir().unwrap();
    std::fs::write(
        served.path().join("demo-1.0-py3-none-any.whl"),
        b"tampered wheel bytes",
    )
    .unwrap();
    let (_server, base) = common::serve_dir(served.path());
    let locked = Digest::of(b"the wheel the lock names");
    let url = format!("{base}/demo-1.0-py3-none-any.whl");
    let source: Arc<dyn BlobSource> = Arc::new(
        UrlStore::new(HashMap::from([(locked.clone(), url)]), Default::default()).unwrap(),
    );
    let cache = tempfile::tempdir().unwrap();
    let cache: Arc<dyn BlobSink> = Arc::new(LayoutStore::create(cache.path()).unwrap());
    let job = BlobJob {
        blob: Descriptor::new("application/zip", locked.clone(), 20),
        source,
        source_repo: String::new(),
        dest_repo: String::new(),
        label: "wheel demo-1.0-py3-none-any.whl".into(),
    };
    let progress: Arc<dyn Progress> = Arc::new(Silent);
    let options = CopyOptions {
        retry: dify_bundle::retry::RetryPolicy {
            retries: 1,
            ..Default::default()
        },
        ..Default::default()
    };
    let err = copy_blobs(vec![job], cache, &options, &progress)
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("demo-1.0-py3-none-any.whl")
            && err.contains("digest mismatch")
            && err.contains(&locked.to_string()),
        "{err}"
    );
}
