//! Media parts: a signed bundle packed into small parts (a blob split into chunks across
//! parts), each part verified alone, the folder verified and inspected in place, and bad
//! parts refused by name.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::fixtures::{self, layer};
use common::{
    Auth, Registry, assert_fails_with, assert_success, dify_bundle, json, run, stderr, write_recipe,
};

struct Packed {
    _registry: Registry,
    work: tempfile::TempDir,
    bundle: PathBuf,
    media: PathBuf,
    public: PathBuf,
}

async fn build_and_pack(split: &str) -> Packed {
    let registry = Registry::start(Auth::None);
    fixtures::dify_like(&registry, "p", &layer(21, 3 << 20), 512 << 10).await;
    let work = tempfile::tempdir().unwrap();
    let stem = common::generate_key(work.path());
    let host = registry.host();
    let recipe = write_recipe(
        work.path(),
        &[
            ("api", format!("{host}/p/dify-api:1.0")),
            ("web", format!("{host}/p/dify-web:1.0")),
            ("sandbox", format!("{host}/p/dify-sandbox:1.0")),
        ],
    );
    let bundle = work.path().join("bundle");
    assert_success(&run(dify_bundle()
        .args(["build", "--insecure-registry", &host, "--sign-key"])
        .arg(stem.with_extension("key"))
        .arg("--recipe")
        .arg(&recipe)
        .arg("--out")
        .arg(&bundle)));
    let media = work.path().join("media");
    let public = stem.with_extension("pub");
    assert_success(&run(dify_bundle()
        .arg("pack")
        .arg(&bundle)
        .args(["--split-size", split, "--pubkey"])
        .arg(&public)
        .arg("--out")
        .arg(&media)));
    Packed {
        _registry: registry,
        work,
        bundle,
        media,
        public,
    }
}

fn parts(media: &Path) -> Vec<PathBuf> {
    let mut parts: Vec<PathBuf> = std::fs::read_dir(media)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    parts.sort();
    parts
}

fn verify(path: &Path, public: &Path) -> std::process::Output {
    run(dify_bundle()
        .arg("verify")
        .arg(path)
        .arg("--pubkey")
        .arg(public))
}

fn pack_list(part: &Path) -> serde_json::Value {
    let out = Command::new("tar")
        .arg("-xOf")
        .arg(part)
        .arg("pack.json")
        .output()
        .unwrap();
    serde_json::from_slice(&out.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parts_fit_the_media_and_each_checks_alone() {
    let packed = build_and_pack("1536KiB").await;
    let parts = parts(&packed.media);
    assert!(parts.len() >= 3, "{parts:?}");
    let mut chunks = 0;
    for (i, part) in parts.iter().enumerate() {
        let name = part.file_name().unwrap().to_string_lossy().into_owned();
        assert_eq!(name, format!("test-bundle.part{:03}.tar", i + 1));
        assert!(
            std::fs::metadata(part).unwrap().len() <= 1536 << 10,
            "{name} too big"
        );
        // Every part carries bundle.json and its signature, and checks on its own.
        let listing = Command::new("tar").arg("-tf").arg(part).output().unwrap();
        let listing = String::from_utf8_lossy(&listing.stdout);
        assert!(listing.contains("bundle.json\n") && listing.contains("bundle.json.minisig\n"));
        let list = pack_list(part);
        assert_eq!(list["parts"].as_u64().unwrap() as usize, parts.len());
        chunks += list["entries"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["entry"].as_str().unwrap().contains(".chunk"))
            .count();
        let alone = verify(part, &packed.public);
        assert_success(&alone);
    }
    assert!(
        chunks >= 2,
        "the 3 MiB base layer was not split into chunks"
    );

    // The folder verifies whole, in place, and inspects like the directory.
    let whole = verify(&packed.media, &packed.public);
    assert_success(&whole);
    assert!(stderr(&whole).contains("signature: good"));
    let from_parts = json(&run(dify_bundle()
        .args(["inspect", "--json"])
        .arg(&packed.media)));
    let from_dir = json(&run(dify_bundle()
        .args(["inspect", "--json"])
        .arg(&packed.bundle)));
    assert_eq!(from_parts, from_dir);

    // Too small a split size is refused, saying the minimum.
    let tiny = run(dify_bundle()
        .arg("pack")
        .arg(&packed.bundle)
        .args(["--split-size", "10KiB", "--allow-unsigned", "--out"])
        .arg(packed.work.path().join("tiny")));
    assert_fails_with(&tiny, "too small");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_parts_are_refused_by_name() {
    let packed = build_and_pack("1536KiB").await;
    let copy = |name: &str| -> PathBuf {
        let dir = packed.work.path().join(name);
        Command::new("cp")
            .arg("-a")
            .arg(&packed.media)
            .arg(&dir)
            .status()
            .unwrap();
        dir
    };

    // A missing part.
    let missing = copy("missing");
    std::fs::remove_file(missing.join("test-bundle.part002.tar")).unwrap();
    assert_fails_with(&verify(&missing, &packed.public), "test-bundle.part002.tar");

    // A truncated part.
    let truncated = copy("truncated");
    let part = truncated.join("test-bundle.part001.tar");
    let bytes = std::fs::read(&part).unwrap();
    std::fs::write(&part, &bytes[..bytes.len() / 2]).unwrap();
    assert_fails_with(
        &verify(&truncated, &packed.public),
        "test-bundle.part001.tar",
    );
    assert_fails_with(&verify(&part, &packed.public), "test-bundle.part001.tar");

    // A damaged byte inside a blob entry: the part alone names the entry, the folder the blob.
    let damaged = copy("damaged");
    let part = damaged.join("test-bundle.part002.tar");
    let list = pack_list(&part);
    let entry = list["entries"][0]["entry"].as_str().unwrap().to_owned();
    let blob = list["entries"][0]["path"].as_str().unwrap().to_owned();
    let mut bytes = std::fs::read(&part).unwrap();
    let at = bytes
        .windows(entry.len())
        .position(|w| w == entry.as_bytes())
        .unwrap()
        + 512
        + 10;
    bytes[at] ^= 0xff;
    std::fs::write(&part, bytes).unwrap();
    assert_fails_with(&verify(&part, &packed.public), &entry);
    assert_fails_with(&verify(&damaged, &packed.public), &blob);

    // A part of another bundle.
    let other = build_and_pack("1536KiB").await;
    let mixed = copy("mixed");
    std::fs::copy(
        other.media.join("test-bundle.part002.tar"),
        mixed.join("test-bundle.part002.tar"),
    )
    .unwrap();
    assert_fails_with(&verify(&mixed, &packed.public), "belongs to another bundle");

    // Entries that would escape or link: refused by name, nothing written anywhere.
    let evil = packed.work.path().join("evil");
    std::fs::create_dir_all(&evil).unwrap();
    let script = r#"
import io, sys, tarfile
kind, path = sys.argv[1], sys.argv[2]
with tarfile.open(path, "w") as t:
    info = tarfile.TarInfo({"dotdot": "../escaped", "absolute": "/tmp/escaped-abs", "symlink": "link", "hardlink": "hard"}[kind])
    if kind == "symlink":
        info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
    elif kind == "hardlink":
        info.type, info.linkname = tarfile.LNKTYPE, "bundle.json"
    else:
        info.size = 4
    t.addfile(info, io.BytesIO(b"evil") if info.size else None)
"#;
    for (kind, named) in [
        ("dotdot", "../escaped"),
        ("absolute", "/tmp/escaped-abs"),
        ("symlink", "link"),
        ("hardlink", "hard"),
    ] {
        let part = evil.join(format!("test-bundle.part00{}.tar", kind.len()));
        let made = Command::new("python3")
            .args(["-c", script, kind])
            .arg(&part)
            .status()
            .unwrap();
        assert!(made.success());
        assert_fails_with(&verify(&part, &packed.public), named);
        std::fs::remove_file(&part).unwrap();
    }
    assert!(
        !packed.work.path().join("escaped").exists() && !Path::new("/tmp/escaped-abs").exists()
    );
}
