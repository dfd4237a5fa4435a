//! Signed bundles: minisign keys, signatures checked before anything else, interoperation
//! with the minisign tool both ways, and every kind of tampering refused by name.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::fixtures::{self, layer};
use common::{
    Auth, Registry, assert_fails_with, assert_success, dify_bundle, run, stderr, write_recipe,
};

fn copy_dir(from: &Path, to: &Path) {
    let status = Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .status()
        .unwrap();
    assert!(status.success());
}

fn minisign(args: &[&str]) -> std::process::Output {
    Command::new("minisign")
        .args(args)
        .output()
        .expect("minisign (apt-get install minisign)")
}

struct Built {
    _registry: Registry,
    work: tempfile::TempDir,
    bundle: PathBuf,
    other: PathBuf,
    key: PathBuf,
    public: PathBuf,
    images: Vec<(String, fixtures::Pushed)>,
}

/// Two signed bundles of different recipes from one registry, and the key that signed them.
async fn build_signed() -> Built {
    let registry = Registry::start(Auth::None);
    let images = fixtures::dify_like(&registry, "s", &layer(5, 96 << 10), 48 << 10).await;
    let work = tempfile::tempdir().unwrap();
    let stem = work.path().join("release");
    assert_success(&run(dify_bundle()
        .args(["key", "generate", "--password-env", "KEY_PASSWORD", "--out"])
        .arg(&stem)
        .env("KEY_PASSWORD", "correct horse")));
    let key = stem.with_extension("key");
    let public = stem.with_extension("pub");
    // An empty password protects nothing: refused, pointing at --no-password.
    let empty = run(dify_bundle()
        .args(["key", "generate", "--password-env", "KEY_PASSWORD", "--out"])
        .arg(work.path().join("empty"))
        .env("KEY_PASSWORD", ""));
    assert_fails_with(&empty, "--no-password");
    assert!(!work.path().join("empty.key").exists());
    let host = registry.host();
    let recipe = write_recipe(
        work.path(),
        &[
            ("api", format!("{host}/s/dify-api:1.0")),
            ("sandbox", format!("{host}/s/dify-sandbox:1.0")),
        ],
    );
    let bundle = work.path().join("bundle");
    assert_success(&run(dify_bundle()
        .args([
            "build",
            "--insecure-registry",
            &host,
            "--password-env",
            "KEY_PASSWORD",
            "--sign-key",
        ])
        .arg(&key)
        .arg("--recipe")
        .arg(&recipe)
        .arg("--out")
        .arg(&bundle)
        .env("KEY_PASSWORD", "correct horse")));
    let other_recipe = work.path().join("other.toml");
    std::fs::write(
        &other_recipe,
        format!("name = \"other\"\ndify_version = \"0.0.1\"\n[[images]]\nrole = \"web\"\nimage = \"{host}/s/dify-web:1.0\"\n"),
    )
    .unwrap();
    let other = work.path().join("other");
    assert_success(&run(dify_bundle()
        .args(["build", "--insecure-registry", &host, "--recipe"])
        .arg(&other_recipe)
        .arg("--out")
        .arg(&other)));
    // `sign` signs an existing bundle the same way `build --sign-key` does.
    assert_success(&run(dify_bundle()
        .arg("sign")
        .arg(&other)
        .arg("--key")
        .arg(&key)
        .args(["--password-env", "KEY_PASSWORD"])
        .env("KEY_PASSWORD", "correct horse")));
    Built {
        _registry: registry,
        work,
        bundle,
        other,
        key,
        public,
        images,
    }
}

fn verify(bundle: &Path, public: &Path) -> std::process::Output {
    run(dify_bundle()
        .arg("verify")
        .arg(bundle)
        .arg("--pubkey")
        .arg(public))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signatures_interoperate_with_minisign_both_ways() {
    let built = build_signed().await;
    let (bundle, public) = (&built.bundle, &built.public);

    // Ours verifies, and says by which key.
    let ok = verify(bundle, public);
    assert_success(&ok);
    assert!(stderr(&ok).contains("signature: good"), "{}", stderr(&ok));
    // The key also comes from DIFY_BUNDLE_PUBKEY.
    assert_success(&run(dify_bundle()
        .arg("verify")
        .arg(bundle)
        .env("DIFY_BUNDLE_PUBKEY", public)));

    // The minisign tool accepts our signature, and the trusted comment carries the facts.
    let json = bundle.join("bundle.json");
    let checked = minisign(&[
        "-V",
        "-m",
        json.to_str().unwrap(),
        "-p",
        public.to_str().unwrap(),
    ]);
    assert!(
        checked.status.success(),
        "{}",
        String::from_utf8_lossy(&checked.stderr)
    );
    let comment = String::from_utf8_lossy(&checked.stdout).into_owned();
    let bytes = std::fs::read(&json).unwrap();
    let manifest: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    let sha = dify_bundle::digest::Digest::of(&bytes);
    for fact in [
        "name=test-bundle".to_owned(),
        "dify=0.0.0-test".to_owned(),
        format!("created={}", manifest["created"].as_str().unwrap()),
        format!("sha256={}", sha.hex()),
    ] {
        assert!(comment.contains(&fact), "{fact} not in {comment}");
    }

    // A signature made by the minisign tool is accepted by ours.
    let cli_pub = built.work.path().join("cli.pub");
    let cli_key = built.work.path().join("cli.key");
    let generated = minisign(&[
        "-G",
        "-W",
        "-p",
        cli_pub.to_str().unwrap(),
        "-s",
        cli_key.to_str().unwrap(),
    ]);
    assert!(
        generated.status.success(),
        "{}",
        String::from_utf8_lossy(&generated.stderr)
    );
    let signed = minisign(&[
        "-S",
        "-s",
        cli_key.to_str().unwrap(),
        "-m",
        json.to_str().unwrap(),
        "-t",
        "signed by hand",
    ]);
    assert!(
        signed.status.success(),
        "{}",
        String::from_utf8_lossy(&signed.stderr)
    );
    assert_success(&verify(bundle, &cli_pub));
    // …and no longer by our key, which did not make it.
    let refused = verify(bundle, public);
    assert_fails_with(&refused, "not trusted");
    // Several trusted keys: any one of them will do.
    assert_success(&run(dify_bundle()
        .arg("verify")
        .arg(bundle)
        .arg("--pubkey")
        .arg(public)
        .arg("--pubkey")
        .arg(&cli_pub)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsigned_bundles_are_refused_unless_allowed_loudly() {
    let built = build_signed().await;
    let copy = built.work.path().join("unsigned");
    copy_dir(&built.bundle, &copy);
    std::fs::remove_file(copy.join("bundle.json.minisig")).unwrap();
    let refused = verify(&copy, &built.public);
    assert_fails_with(&refused, "not signed");
    let allowed = run(dify_bundle()
        .args(["verify", "--allow-unsigned"])
        .arg(&copy));
    assert_success(&allowed);
    assert!(stderr(&allowed).contains("WARNING") && stderr(&allowed).contains("NOT VERIFIED"));
    // Signed, but no key to check it with: refused, saying how to give one.
    let keyless = run(dify_bundle().arg("verify").arg(&built.bundle));
    assert_fails_with(&keyless, "--pubkey");
    // A wrong password fails before any download.
    let wrong = run(dify_bundle()
        .args([
            "sign",
            built.bundle.to_str().unwrap(),
            "--password-env",
            "P",
            "--key",
        ])
        .arg(&built.key)
        .env("P", "wrong"));
    assert_fails_with(&wrong, "wrong password");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_kind_of_tampering_is_refused_by_name() {
    let built = build_signed().await;
    let blob = |dir: &Path, d: &dify_bundle::digest::Digest| dir.join("blobs/sha256").join(d.hex());
    let layer_digest = built.images[0].1.blobs["amd64"][2].digest.clone();
    let manifest_digest = built.images[0].1.platforms["amd64"].clone();
    let flip = |path: &Path, at: usize| {
        let mut bytes = std::fs::read(path).unwrap();
        let at = at.min(bytes.len() - 1);
        bytes[at] ^= 0x01;
        std::fs::write(path, bytes).unwrap();
    };
    type Tamper<'a> = (&'a str, Box<dyn Fn(&Path) + 'a>, String);
    let cases: Vec<Tamper> = vec![
        (
            "layer byte",
            Box::new(|d: &Path| flip(&blob(d, &layer_digest), 5000)),
            layer_digest.hex().to_owned(),
        ),
        (
            "manifest byte",
            Box::new(|d: &Path| flip(&blob(d, &manifest_digest), 40)),
            manifest_digest.hex().to_owned(),
        ),
        (
            "bundle.json byte",
            Box::new(|d: &Path| flip(&d.join("bundle.json"), 200)),
            "bundle.json.minisig".into(),
        ),
        (
            "signature byte",
            Box::new(|d: &Path| {
                let path = d.join("bundle.json.minisig");
                let text = std::fs::read_to_string(&path).unwrap();
                let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
                let mut sig: Vec<char> = lines[1].chars().collect();
                sig[20] = if sig[20] == 'A' { 'B' } else { 'A' };
                lines[1] = sig.into_iter().collect();
                std::fs::write(&path, lines.join("\n") + "\n").unwrap();
            }),
            "bundle.json.minisig".into(),
        ),
        (
            "removed file",
            Box::new(|d: &Path| std::fs::remove_file(blob(d, &layer_digest)).unwrap()),
            format!("{}: missing", layer_digest.hex()),
        ),
        (
            "added file",
            Box::new(|d: &Path| std::fs::write(d.join("blobs/sha256/extra"), b"x").unwrap()),
            "blobs/sha256/extra: not part of the bundle".into(),
        ),
        (
            "truncated blob",
            Box::new(|d: &Path| {
                let path = blob(d, &layer_digest);
                let bytes = std::fs::read(&path).unwrap();
                std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
            }),
            format!("{}: size", layer_digest.hex()),
        ),
        (
            "signature from another bundle",
            Box::new(|d: &Path| {
                std::fs::copy(
                    built.other.join("bundle.json.minisig"),
                    d.join("bundle.json.minisig"),
                )
                .unwrap();
            }),
            "bundle.json.minisig".into(),
        ),
    ];
    for (i, (name, tamper, named)) in cases.iter().enumerate() {
        let copy = built.work.path().join(format!("case{i}"));
        copy_dir(&built.bundle, &copy);
        assert_success(&verify(&copy, &built.public));
        tamper(&copy);
        let result = verify(&copy, &built.public);
        assert!(!result.status.success(), "{name}: accepted");
        assert!(
            stderr(&result).contains(named.as_str()),
            "{name}: `{named}` not named in:\n{}",
            stderr(&result)
        );
    }

    // A public key that did not sign the bundle.
    let stranger = built.work.path().join("stranger");
    assert_success(&run(dify_bundle()
        .args(["key", "generate", "--no-password", "--out"])
        .arg(&stranger)));
    let result = verify(&built.bundle, &stranger.with_extension("pub"));
    assert_fails_with(&result, "not trusted");
    // Key files are never overwritten.
    let again = run(dify_bundle()
        .args(["key", "generate", "--no-password", "--out"])
        .arg(&stranger));
    assert!(!again.status.success() && stderr(&again).contains("already exists"));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(stranger.with_extension("key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0, "secret key readable by others");
    }
}
