//! What an operator expects of the binary itself: `--version` naming the commit and the
//! recipes, shell completions and a man page from the CLI definition, the documented exit
//! codes, the glibc symbol versions it needs, and the installer the bundle carries across
//! the gap — taken out of a media part with `tar`, checked with `minisign` and `sha256sum`,
//! then run.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::fixtures::{self, layer};
use common::{Auth, Registry, assert_fails_with, assert_success, dify_bundle, json, run, stderr};

fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn the_version_names_the_commit_and_the_built_in_recipes() {
    let out = run(dify_bundle().arg("--version"));
    assert_success(&out);
    let text = stdout(&out);
    assert!(text.contains(env!("CARGO_PKG_VERSION")), "{text}");
    assert!(
        text.contains("built-in recipes: Dify 1.13.3, 1.17.1"),
        "{text}"
    );
    let head = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("git");
    let head = String::from_utf8_lossy(&head.stdout).trim().to_owned();
    assert_eq!(head.len(), 12, "this test runs in a git checkout");
    assert!(text.contains(&format!("(commit {head})")), "{text}");
}

#[test]
fn completions_and_the_man_page_come_from_the_cli_definition() {
    let work = tempfile::tempdir().unwrap();
    let bash = run(dify_bundle().args(["completions", "bash"]));
    assert_success(&bash);
    let script = work.path().join("dify-bundle.bash");
    std::fs::write(&script, &bash.stdout).unwrap();
    // bash accepts it and registers a completion for the command.
    let loaded = Command::new("bash")
        .arg("-c")
        .arg(format!(
            "source {} && complete -p dify-bundle",
            script.display()
        ))
        .output()
        .unwrap();
    assert!(loaded.status.success(), "{}", stderr(&loaded));
    assert!(stdout(&loaded).contains("dify-bundle"));
    for shell in ["zsh", "fish"] {
        let out = run(dify_bundle().args(["completions", shell]));
        assert_success(&out);
        assert!(stdout(&out).contains("uninstall"), "{shell}");
    }
    assert_fails_with(&run(dify_bundle().args(["completions", "tcsh"])), "tcsh");

    let man = run(dify_bundle().arg("man"));
    assert_success(&man);
    let page = stdout(&man);
    assert!(
        page.starts_with(".ie") || page.contains(".TH dify-bundle"),
        "{page}"
    );
    for needle in ["install", "uninstall", "Exit codes", "130"] {
        assert!(page.contains(needle), "man page lacks {needle}");
    }
}

#[test]
fn exit_codes_are_the_documented_ones() {
    let usage = run(dify_bundle().arg("--no-such-flag"));
    assert_eq!(usage.status.code(), Some(2), "{}", stderr(&usage));
    let failure = run(dify_bundle().args(["verify", "/nonexistent/bundle"]));
    assert_eq!(failure.status.code(), Some(1), "{}", stderr(&failure));
    let help = run(dify_bundle().arg("--help"));
    assert!(
        stdout(&help).contains("130"),
        "--help states the exit codes"
    );

    // Interrupted while a registry hangs: 130, and says how to resume.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let host = format!("127.0.0.1:{}", listener.local_addr().unwrap().port());
    let work = tempfile::tempdir().unwrap();
    let recipe = common::write_recipe(work.path(), &[("api", format!("{host}/t/api:1.0"))]);
    let child = dify_bundle()
        .args(["build", "--insecure-registry", &host, "--recipe"])
        .arg(&recipe)
        .arg("--out")
        .arg(work.path().join("out"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Hold the connection open without answering, then interrupt.
    let (_held, _) = listener.accept().unwrap();
    let kill = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(130), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("run the same command again"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn what_to_do_next_is_a_hint_line_apart_from_the_error() {
    let work = tempfile::tempdir().unwrap();
    let key = work.path().join("team");
    let generate = || {
        run(dify_bundle()
            .args(["key", "generate", "--no-password", "--out"])
            .arg(&key))
    };
    assert_eq!(generate().status.code(), Some(0));
    let again = generate();
    assert_eq!(again.status.code(), Some(1), "{}", stderr(&again));
    let lines: Vec<String> = stderr(&again).lines().map(str::to_owned).collect();
    let error = lines
        .iter()
        .find(|l| l.starts_with("error: "))
        .expect("an error line");
    assert!(error.ends_with("team.key already exists"), "{error}");
    assert!(
        lines
            .iter()
            .any(|l| l == "hint: remove it or choose another --out"),
        "{lines:?}"
    );
}

/// The `GLIBC_x.y` versions a binary requires, read from its version-needs section.
fn glibc_versions(binary: &Path) -> Vec<(u32, u32)> {
    let out = Command::new("readelf")
        .args(["--version-info", "--wide"])
        .arg(binary)
        .output()
        .expect("readelf (binutils)");
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    let needs = text
        .split("Version needs section")
        .nth(1)
        .expect("a dynamically linked binary has a version needs section");
    let mut versions: Vec<(u32, u32)> = needs
        .split_whitespace()
        .filter_map(|word| word.strip_prefix("GLIBC_"))
        .filter_map(|v| {
            let mut parts = v.split('.');
            Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
        })
        .collect();
    versions.sort();
    versions.dedup();
    versions
}

#[test]
fn the_glibc_the_binary_needs_is_read_and_a_release_build_needs_at_most_2_17() {
    // The binary under test: its needs are read (whatever this machine's glibc is).
    let own = glibc_versions(Path::new(env!("CARGO_BIN_EXE_dify-bundle")));
    assert!(
        own.contains(&(2, 2)) || own.iter().any(|v| v.0 == 2),
        "{own:?}"
    );
    eprintln!("this build needs glibc {:?}", own.last());
    // A release build (scripts/release.sh sets this) runs on glibc 2.17 hosts and newer.
    if let Some(release) = std::env::var_os("DIFY_BUNDLE_RELEASE_BINARY") {
        let needs = glibc_versions(Path::new(&release));
        let newest = needs.last().copied().unwrap_or((0, 0));
        assert!(
            newest <= (2, 17),
            "{} needs glibc {}.{}: it would not start on RHEL 7 / Amazon Linux 2",
            Path::new(&release).display(),
            newest.0,
            newest.1
        );
    }
}

fn sha256sum(path: &Path) -> String {
    let out = Command::new("sha256sum").arg(path).output().unwrap();
    assert!(out.status.success());
    stdout(&out).split_whitespace().next().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bundle_carries_its_installer_across_on_media() {
    let registry = Registry::start(Auth::None);
    fixtures::dify_like(&registry, "p", &layer(7, 1 << 20), 64 << 10).await;
    let work = tempfile::tempdir().unwrap();
    let stem = common::generate_key(work.path());
    let host = registry.host();
    let recipe = common::write_recipe(
        work.path(),
        &[
            ("api", format!("{host}/p/dify-api:1.0")),
            ("web", format!("{host}/p/dify-web:1.0")),
        ],
    );
    let bundle = work.path().join("bundle");
    // `build --json` of the recipe into `bundle`, carrying an installer, with `extra` flags.
    let build = |extra: &[&std::ffi::OsStr]| {
        run(dify_bundle()
            .env_remove("DIFY_BUNDLE_NO_INSTALLER")
            .args(["build", "--json", "--insecure-registry", &host])
            .args(extra)
            .arg("--recipe")
            .arg(&recipe)
            .arg("--out")
            .arg(&bundle))
    };
    let key = stem.with_extension("key");
    let built = build(&["--sign-key".as_ref(), key.as_os_str()]);
    assert_success(&built);
    let report = json(&built);
    let installer = &report["installer"];
    assert_eq!(installer["platform"], "linux/amd64");
    let path = installer["path"].as_str().unwrap().to_owned();
    let digest = installer["digest"]
        .as_str()
        .unwrap()
        .trim_start_matches("sha256:")
        .to_owned();
    assert!(installer["version"].as_str().unwrap().contains("commit"));
    let own = std::fs::read(env!("CARGO_BIN_EXE_dify-bundle")).unwrap();
    assert_eq!(std::fs::read(bundle.join(&path)).unwrap(), own);

    let inspected = run(dify_bundle().arg("inspect").arg(&bundle));
    assert_success(&inspected);
    assert!(stdout(&inspected).contains("installer for linux/amd64"));
    assert!(stdout(&inspected).contains(&digest));

    // On media: the installer is whole in the first part.
    let media = work.path().join("media");
    assert_success(&run(dify_bundle()
        .arg("pack")
        .arg(&bundle)
        .args(["--split-size", "200M", "--pubkey"])
        .arg(stem.with_extension("pub"))
        .arg("--out")
        .arg(&media)));
    let first = media.join("test-bundle.part001.tar");

    // Inside, with nothing installed: standard tools only, as the README says.
    let inside = work.path().join("inside");
    std::fs::create_dir(&inside).unwrap();
    let untar = Command::new("tar")
        .arg("-xf")
        .arg(&first)
        .args(["-C"])
        .arg(&inside)
        .args(["bundle.json", "bundle.json.minisig", &path])
        .output()
        .unwrap();
    assert!(untar.status.success(), "{}", stderr(&untar));
    let checked = Command::new("minisign")
        .args(["-V", "-m"])
        .arg(inside.join("bundle.json"))
        .arg("-p")
        .arg(stem.with_extension("pub"))
        .output()
        .unwrap();
    assert!(checked.status.success(), "{}", stderr(&checked));
    let listed: serde_json::Value =
        serde_json::from_slice(&std::fs::read(inside.join("bundle.json")).unwrap()).unwrap();
    assert_eq!(listed["installer"]["digest"], installer["digest"]);
    let carried: PathBuf = inside.join(&path);
    assert_eq!(sha256sum(&carried), digest);
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&carried, std::fs::Permissions::from_mode(0o755)).unwrap();
    let version = Command::new(&carried).arg("--version").output().unwrap();
    assert!(version.status.success());
    // The carried binary is the installer: it verifies the media it came on.
    let verified = Command::new(&carried)
        .arg("verify")
        .arg(&media)
        .arg("--pubkey")
        .arg(stem.with_extension("pub"))
        .output()
        .unwrap();
    assert!(verified.status.success(), "{}", stderr(&verified));

    // A bundle.json whose installer is not one of its files is refused.
    let mut forged = listed.clone();
    forged["installer"]["size"] = serde_json::json!(1);
    let forged_dir = work.path().join("forged");
    std::fs::create_dir(&forged_dir).unwrap();
    std::fs::write(forged_dir.join("bundle.json"), forged.to_string()).unwrap();
    assert_fails_with(
        &run(dify_bundle().arg("inspect").arg(&forged_dir)),
        "is not among the bundle's files",
    );

    // Another platform's binary, named: its platform read from the binary; a script refused.
    let arm = work.path().join("dify-bundle-arm64");
    let mut header = b"\x7fELF\x02\x01\x01\x00".to_vec();
    header.extend([0u8; 10]);
    header.extend(183u16.to_le_bytes());
    header.extend([0u8; 4096]);
    std::fs::write(&arm, &header).unwrap();
    let other = build(&["--installer".as_ref(), arm.as_os_str()]);
    assert_success(&other);
    assert_eq!(json(&other)["installer"]["platform"], "linux/arm64");
    assert!(json(&other)["installer"]["version"].is_null());
    let script = work.path().join("install.sh");
    std::fs::write(&script, "#!/bin/sh\n").unwrap();
    assert_fails_with(
        &build(&["--installer".as_ref(), script.as_os_str()]),
        "not an ELF executable",
    );
}
