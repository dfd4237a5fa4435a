//! `dify-bundle plugin verify` on a real Dify package signed with Dify's official key, on
//! tampered copies, and on a package signed by a third party (Python `cryptography` signs it,
//! independently of our code).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{PackageIndex, assert_success, dify_bundle, loopback_only, run, stderr};

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/plugins/langgenius-agent_0.0.14.difypkg")
}

fn verify(file: &Path, extra: &[&str]) -> std::process::Output {
    run(loopback_only(&mut dify_bundle())
        .args(["plugin", "verify"])
        .arg(file)
        .args(extra))
}

#[test]
fn the_official_package_verifies_and_prints_its_identifier() {
    let out = verify(&fixture(), &[]);
    assert_success(&out);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "langgenius/agent:0.0.14@26958a0e80a10655ce73812bdb7c35a66ce7b16f5ac346d298bda17ff85efd1e"
    );
    assert!(stderr(&out).contains("signature: good, by the official key"));
    let json = common::json(&verify(&fixture(), &["--json"]));
    assert_eq!(json["signature"]["status"], "verified");
    assert_eq!(json["manifest"]["author"], "langgenius");
}

/// Every package the marketplace serves today, as the daemon stored them (`author/name:
/// version@checksum` is the name the daemon gave each copy).
#[test]
fn every_current_marketplace_package_verifies_with_the_official_key() {
    let cases = [
        (
            "langgenius-openai_0.0.29.difypkg",
            "langgenius/openai:0.0.29@",
            "langgenius",
        ),
        (
            "langgenius-chart_0.0.2.difypkg",
            "langgenius/chart:0.0.2@",
            "langgenius",
        ),
        (
            "kurokobo-knowledge_toolbox_0.0.1.difypkg",
            "kurokobo/knowledge_toolbox:0.0.1@",
            "community",
        ),
        (
            "langgenius-openai_api_compatible_0.0.45.difypkg",
            "langgenius/openai_api_compatible:0.0.45@",
            "langgenius",
        ),
    ];
    for (file, identifier, category) in cases {
        let out = verify(&real_fixture(file), &[]);
        assert_success(&out);
        let printed = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        assert!(printed.starts_with(identifier), "{file}: {printed}");
        assert_eq!(printed.len(), identifier.len() + 64, "{printed}");
        let err = stderr(&out);
        assert!(
            err.contains("signature: good, by the official key"),
            "{err}"
        );
        assert!(err.contains(&format!("category {category}")), "{err}");
    }
}

/// A package signed the way the daemon's signer signs (verification record last, hashed
/// before the time), then re-signed as the marketplace re-signs (a second record), verifies
/// only with the vendor's key, and loses its signature when one record is dropped.
#[test]
fn packages_signed_as_the_daemon_signs_verify_with_their_key() {
    let dir = tempfile::tempdir().unwrap();
    let prefix = dir.path().join("vendor");
    let sign = |from: &Path, to: &Path, category: Option<&str>| {
        let mut command = Command::new("python3");
        command
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/servers/sign_plugin.py"))
            .arg(from)
            .arg(to)
            .arg(&prefix);
        if let Some(category) = category {
            command.arg(category);
        }
        assert_success(&run(&mut command));
    };
    let once = dir.path().join("once.difypkg");
    let twice = dir.path().join("twice.difypkg");
    sign(&fixture(), &once, Some("partner"));
    sign(&once, &twice, Some("partner"));
    let public = prefix.with_extension("public.pem");
    for (signed, records) in [(&once, 1), (&twice, 2)] {
        let names: Vec<String> = {
            let bytes = std::fs::read(signed).unwrap();
            let text = String::from_utf8_lossy(&bytes).into_owned();
            text.matches(".verification.dify.json")
                .map(str::to_owned)
                .collect()
        };
        // Each record's name appears in its local header and in the central directory.
        assert_eq!(names.len(), records * 2, "{}", signed.display());
        assert_eq!(verify(signed, &[]).status.code(), Some(1));
        let out = verify(signed, &["--pubkey", public.to_str().unwrap()]);
        assert_success(&out);
        assert!(
            stderr(&out).contains("category partner"),
            "{}",
            stderr(&out)
        );
    }
    // Re-zipped without the second record: refused by the vendor's key too.
    let bytes = std::fs::read(&twice).unwrap();
    let dropped = dir.path().join("dropped.difypkg");
    assert_success(&run(Command::new("python3")
        .arg("-c")
        .arg(DROP_DUPLICATES)
        .arg(&twice)
        .arg(&dropped)));
    assert!(bytes.len() > std::fs::read(&dropped).unwrap().len());
    let refused = verify(&dropped, &["--pubkey", public.to_str().unwrap()]);
    assert_eq!(refused.status.code(), Some(1));
    assert!(
        stderr(&refused).contains("does not match"),
        "{}",
        stderr(&refused)
    );
    // Signed with no record at all (0.6.10's signer allows it): verifies, no category.
    let bare = dir.path().join("bare.difypkg");
    sign(&fixture(), &bare, None);
    let out = verify(&bare, &["--pubkey", public.to_str().unwrap()]);
    assert_success(&out);
    assert!(!stderr(&out).contains("category"), "{}", stderr(&out));
}

#[test]
fn a_tampered_copy_is_refused_naming_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    // One byte of one file, changed inside the zip (stored sizes kept, so it still unzips).
    let bytes = std::fs::read(fixture()).unwrap();
    let mut archive = zip::ZipArchive::new(std::io::Cursor::new(&bytes)).unwrap();
    let comment = archive.comment().to_vec();
    let mut out = zip::ZipWriter::new(std::fs::File::create(dir.path().join("t.difypkg")).unwrap());
    for i in 0..archive.len() {
        let mut entry = archive.by_index(i).unwrap();
        let name = entry.name().unwrap().into_owned();
        let mut content = Vec::new();
        std::io::Read::read_to_end(&mut entry, &mut content).unwrap();
        if name == "requirements.txt" {
            content = b"dify_plugin==0.0.1b76".to_vec();
        }
        out.start_file(&name, zip::write::SimpleFileOptions::default())
            .unwrap();
        std::io::Write::write_all(&mut out, &content).unwrap();
    }
    out.set_raw_comment(comment.into()).unwrap();
    out.finish().unwrap();
    let refused = verify(&dir.path().join("t.difypkg"), &[]);
    assert_eq!(refused.status.code(), Some(1));
    let err = stderr(&refused);
    assert!(
        err.contains("refused: the signature does not match"),
        "{err}"
    );

    let truncated = dir.path().join("cut.difypkg");
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    let refused = verify(&truncated, &[]);
    assert!(!refused.status.success());
    assert!(
        stderr(&refused).contains("not a plugin package"),
        "{}",
        stderr(&refused)
    );
}

#[test]
fn a_third_party_signature_needs_its_key() {
    let dir = tempfile::tempdir().unwrap();
    let signed = dir.path().join("third.difypkg");
    let prefix = dir.path().join("vendor");
    assert_success(&run(Command::new("python3")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/servers/sign_plugin.py"))
        .arg(fixture())
        .arg(&signed)
        .arg(&prefix)));
    let public = prefix.with_extension("public.pem");
    let refused = verify(&signed, &[]);
    assert_eq!(refused.status.code(), Some(1));
    assert!(
        stderr(&refused).contains("under any trusted key (official)"),
        "{}",
        stderr(&refused)
    );
    let accepted = verify(&signed, &["--pubkey", public.to_str().unwrap()]);
    assert_success(&accepted);
    assert!(stderr(&accepted).contains(&format!("by the {} key", public.display())));
    // Same files, same checksum: the identifier does not depend on who signed.
    assert_eq!(
        String::from_utf8_lossy(&accepted.stdout).trim(),
        String::from_utf8_lossy(&verify(&fixture(), &[]).stdout).trim()
    );
}

/// A Python to play the daemon's: 3.12 when this machine has one, else the local python3.
fn daemon_python() -> (String, PathBuf) {
    let candidates =
        std::fs::read_dir(std::env::var("HOME").unwrap_or_default() + "/.pyenv/versions")
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path().join("bin"))
            .filter(|bin| bin.join("python3.12").is_file());
    if let Some(bin) = candidates.into_iter().next() {
        return ("3.12".into(), bin);
    }
    let out = run(Command::new("python3").args([
        "-c",
        "import sys, os; print(f'{sys.version_info[0]}.{sys.version_info[1]}'); print(os.path.dirname(sys.executable))",
    ]));
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let mut lines = text.lines();
    (
        lines.next().unwrap().to_owned(),
        PathBuf::from(lines.next().unwrap()),
    )
}

/// uv's name for this machine's platform (`x86_64-manylinux_2_36`).
fn local_platform() -> String {
    let out = run(Command::new("python3").args([
        "-c",
        "import platform; print(platform.libc_ver()[1].replace('.', '_'))",
    ]));
    format!(
        "{}-manylinux_{}",
        std::env::consts::ARCH,
        String::from_utf8_lossy(&out.stdout).trim()
    )
}

fn zip_dir(dir: &Path, out: &Path) {
    let mut zip = zip::ZipWriter::new(std::fs::File::create(out).unwrap());
    let mut names: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    for name in names {
        zip.start_file(&name, zip::write::SimpleFileOptions::default())
            .unwrap();
        std::io::Write::write_all(&mut zip, &std::fs::read(dir.join(&name)).unwrap()).unwrap();
    }
    zip.finish().unwrap();
}

/// The index every Python resolution of these tests goes to, on 127.0.0.1 as a PyPI mirror
/// serves it: the real wheels tests/fixtures/plugin-index.sha256 names (scripts/test.sh
/// downloads them) — everything the plugins below install with Python 3.12 on x86_64 Linux,
/// and one wheel of each package only other platforms install.
fn plugin_index() -> PackageIndex {
    let dir = common::test_wheels().join("plugin-index");
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/plugin-index.sha256");
    let files: Vec<PathBuf> = std::fs::read_to_string(&manifest)
        .unwrap()
        .lines()
        .map(|line| {
            let path = dir.join(line.split_whitespace().nth(1).unwrap());
            assert!(
                path.is_file(),
                "{} is missing: scripts/test.sh downloads it (scripts/plugin-index.sh)",
                path.display()
            );
            path
        })
        .collect();
    common::package_index(&files)
}

/// `dify-bundle` resolving against `index` and nothing else.
fn dify_bundle_with(index: &PackageIndex) -> Command {
    let mut command = dify_bundle();
    loopback_only(&mut command).env("UV_DEFAULT_INDEX", &index.url);
    command
}

/// A plugin declaring its dependencies in pyproject.toml with a uv.lock (dev group
/// included), locked now against `index` (its URLs point there, as a real lock's point at
/// PyPI).
fn locked_plugin(dir: &Path, python: &str, python_bin: &Path, index: &PackageIndex) -> PathBuf {
    let src = dir.join("locked-src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(
        src.join("pyproject.toml"),
        format!(
            "[project]\nname = \"demo-plugin\"\nversion = \"0.1.0\"\nrequires-python = \">={python}\"\ndependencies = [\"tabulate>=0.9\"]\n\n[dependency-groups]\ndev = [\"pytest>=8\"]\n"
        ),
    )
    .unwrap();
    std::fs::write(
        src.join("manifest.yaml"),
        format!("version: 0.1.0\ntype: plugin\nauthor: tester\nname: demo\nmeta:\n  arch: [amd64, arm64]\n  runner:\n    language: python\n    version: \"{python}\"\n    entrypoint: main\n"),
    )
    .unwrap();
    std::fs::write(src.join("main.py"), "import tabulate\n").unwrap();
    let path = format!(
        "{}:{}",
        python_bin.display(),
        std::env::var("PATH").unwrap()
    );
    assert_success(&run(loopback_only(&mut Command::new("uv"))
        .args(["lock", "--quiet", "--no-python-downloads"])
        .env("UV_DEFAULT_INDEX", &index.url)
        .env("PATH", path)
        .current_dir(&src)));
    let package = dir.join("demo_0.1.0.difypkg");
    zip_dir(&src, &package);
    package
}

/// Which daemon's choices to play.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Daemon {
    /// 0.5.3 (Dify 1.13.3): pyproject.toml first whenever there is one, `uv sync --no-dev
    /// -i MIRROR -v` without `--frozen`; uv gets only `VIRTUAL_ENV` and `PATH`
    /// (`installDependencies`, internal/core/local_runtime/setup_python_environment.go and
    /// environment_python.go, langgenius/dify-plugin-daemon tag 0.5.3).
    V0_5_3,
    /// 0.6.10 (Dify 1.17.1): with `PIP_MIRROR_URL` set, requirements.txt first (`uv pip install
    /// -i MIRROR -r requirements.txt -vvv`), else `uv sync --no-dev` (no `--frozen` with
    /// `PLUGIN_IGNORE_UV_LOCK=true`); uv gets `VIRTUAL_ENV`, `PATH` and
    /// `UV_CACHE_DIR=$PLUGIN_WORKING_PATH/.uv-cache` (`buildUVCommandEnv`, same files, tag 0.6.10).
    V0_6_10,
}

/// Runs the plugin daemon's own install commands for `package` in a fresh working directory,
/// with the environment the daemon gives uv and with no way out to the network.
fn daemon_install(
    daemon: Daemon,
    package: &Path,
    index: &Path,
    python: &str,
    python_bin: &Path,
    work: &Path,
) -> std::process::Output {
    let dir = work.join(format!(
        "cwd-{}-{daemon:?}",
        package.file_stem().unwrap().to_string_lossy()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let bytes = std::fs::read(package).unwrap();
    zip::ZipArchive::new(std::io::Cursor::new(bytes))
        .unwrap()
        .extract(&dir)
        .unwrap();
    // The uv executable itself, not a version manager's shim (a shim would obey the
    // package's own `.python-version`): found as the daemon finds it without `UV_PATH`.
    let uv_dir = String::from_utf8_lossy(
        &run(Command::new("python3").args([
            "-c",
            "import os; from uv._find_uv import find_uv_bin; print(os.path.dirname(find_uv_bin()))",
        ]))
        .stdout,
    )
    .trim()
    .to_owned();
    // 0.6.10 points uv at a cache in its working path; 0.5.3 sets none and uv falls back to
    // the container user's empty ~/.cache/uv, which an empty directory stands in for.
    let cache = work.join(format!("uv-cache-{daemon:?}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&cache);
    let uv = |args: &[&str]| {
        let mut command = Command::new("uv");
        command
            .args(args)
            .current_dir(&dir)
            .env_clear()
            .env(
                "PATH",
                format!("{}:{uv_dir}:/usr/bin:/bin", python_bin.display()),
            )
            .env("VIRTUAL_ENV", dir.join(".venv"))
            .env("UV_CACHE_DIR", &cache)
            // Networking unavailable: every connection goes to a closed port.
            .env("HTTP_PROXY", "http://127.0.0.1:9")
            .env("HTTPS_PROXY", "http://127.0.0.1:9")
            .env("ALL_PROXY", "http://127.0.0.1:9");
        run(&mut command)
    };
    assert_success(&uv(&["venv", ".venv", "--python", python]));
    let mirror = format!("file://{}", index.display());
    let requirements = dir.join("requirements.txt").is_file();
    let pyproject = dir.join("pyproject.toml").is_file();
    let use_requirements = match daemon {
        Daemon::V0_5_3 => !pyproject && requirements,
        Daemon::V0_6_10 => requirements,
    };
    if use_requirements {
        uv(&[
            "pip",
            "install",
            "-i",
            &mirror,
            "-r",
            "requirements.txt",
            "-vvv",
        ])
    } else {
        uv(&["sync", "--no-dev", "-i", &mirror, "-v"])
    }
}

fn without(wheelhouse: &Path, project: &str, out: &Path) {
    let _ = std::fs::remove_dir_all(out);
    assert_success(&run(Command::new("cp").arg("-r").arg(wheelhouse).arg(out)));
    std::fs::remove_dir_all(out.join("simple").join(project)).unwrap();
    for file in std::fs::read_dir(out.join("files")).unwrap() {
        let file = file.unwrap();
        if file
            .file_name()
            .to_string_lossy()
            .starts_with(&format!("{}-", project.replace('-', "_")))
        {
            std::fs::remove_file(file.path()).unwrap();
        }
    }
}

#[test]
fn the_daemons_own_commands_install_offline_from_the_wheelhouse() {
    let dir = tempfile::tempdir().unwrap();
    let (python, python_bin) = daemon_python();
    let index = plugin_index();
    let locked = locked_plugin(dir.path(), &python, &python_bin, &index);
    // The real agent plugin needs Python 3.12 (dify_plugin); elsewhere a requirements.txt
    // plugin of our own stands in.
    let requirements = if python == "3.12" {
        fixture()
    } else {
        let src = dir.path().join("req-src");
        std::fs::create_dir_all(&src).unwrap();
        std::fs::write(
            src.join("manifest.yaml"),
            "version: 0.1.0\ntype: plugin\nauthor: tester\nname: req\n",
        )
        .unwrap();
        std::fs::write(src.join("requirements.txt"), "tabulate\nrequests\n").unwrap();
        let package = dir.path().join("req_0.1.0.difypkg");
        zip_dir(&src, &package);
        package
    };
    let house = dir.path().join("wheelhouse");
    let built = run(dify_bundle_with(&index)
        .args([
            "plugin",
            "wheelhouse",
            "--json",
            "--python",
            &python,
            "--platform",
            &local_platform(),
        ])
        .arg("--cache-dir")
        .arg(dir.path().join("cache"))
        .arg("--out")
        .arg(&house)
        .arg(&requirements)
        .arg(&locked));
    assert_success(&built);
    let report = common::json(&built);
    let metadata = report[1]["metadata"].as_array().unwrap();
    assert!(
        metadata
            .iter()
            .any(|m| m.as_str().unwrap().starts_with("colorama-")),
        "pytest's Windows-only dependency is in the index for the re-lock: {report}"
    );
    let index = house.join("simple");

    for package in [&requirements, &locked] {
        let out = daemon_install(
            Daemon::V0_6_10,
            package,
            &index,
            &python,
            &python_bin,
            dir.path(),
        );
        assert_success(&out);
    }
    let venv_python = dir.path().join("cwd-demo_0.1.0-V0_6_10/.venv/bin/python");
    assert_success(&run(
        Command::new(venv_python).args(["-c", "import tabulate"])
    ));

    // One wheel less and the install fails, naming the missing package.
    let broken = dir.path().join("broken");
    without(&house, "colorama", &broken);
    let out = daemon_install(
        Daemon::V0_6_10,
        &locked,
        &broken.join("simple"),
        &python,
        &python_bin,
        dir.path(),
    );
    assert!(!out.status.success());
    assert!(stderr(&out).contains("colorama"), "{}", stderr(&out));
    let missing = if python == "3.12" {
        "gevent"
    } else {
        "requests"
    };
    without(&house, missing, &broken);
    let out = daemon_install(
        Daemon::V0_6_10,
        &requirements,
        &broken.join("simple"),
        &python,
        &python_bin,
        dir.path(),
    );
    assert!(!out.status.success());
    assert!(stderr(&out).contains(missing), "{}", stderr(&out));
}

/// Copies a zip keeping only the first record of each name (argv: IN OUT).
const DROP_DUPLICATES: &str = r#"
import sys, zipfile, warnings
warnings.simplefilter("ignore")
src = zipfile.ZipFile(sys.argv[1])
out = zipfile.ZipFile(sys.argv[2], "w")
seen = set()
for info in src.infolist():
    if info.filename not in seen:
        seen.add(info.filename)
        out.writestr(info, src.read(info))
out.comment = src.comment
out.close()
"#;

fn real_fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/plugins")
        .join(name)
}

/// A current marketplace package that ships both pyproject.toml and requirements.txt (no
/// uv.lock) installs offline from the wheelhouse we build by either daemon's choice: 0.5.3's
/// universal `uv sync` of the project and 0.6.10's `uv pip install -r requirements.txt`.
#[test]
fn both_daemons_install_a_package_with_both_files_offline() {
    let (python, python_bin) = daemon_python();
    assert_eq!(
        python, "3.12",
        "the daemon's Python 3.12 is needed (dify_plugin requires it); pyenv provides it here"
    );
    let dir = tempfile::tempdir().unwrap();
    let package = real_fixture("langgenius-openai_api_compatible_0.0.45.difypkg");
    let house = dir.path().join("wheelhouse");
    let index = plugin_index();
    // A relative --cache-dir, as people type it (uv runs in a work dir under it).
    let built = run(dify_bundle_with(&index)
        .current_dir(dir.path())
        .args(["plugin", "wheelhouse", "--json", "--python", &python])
        .args(["--platform", &local_platform()])
        .args(["--cache-dir", "cache"])
        .arg("--out")
        .arg(&house)
        .arg(&package));
    assert_success(&built);
    let index = house.join("simple");
    for daemon in [Daemon::V0_5_3, Daemon::V0_6_10] {
        let out = daemon_install(daemon, &package, &index, &python, &python_bin, dir.path());
        assert_success(&out);
        let venv = dir.path().join(format!(
            "cwd-langgenius-openai_api_compatible_0.0.45-{daemon:?}/.venv/bin/python"
        ));
        let imported = run(Command::new(venv).args([
            "-c",
            "import dify_plugin, openai, importlib.metadata as m; print(m.version('dify_plugin'))",
        ]));
        assert_success(&imported);
        let version = String::from_utf8_lossy(&imported.stdout).trim().to_owned();
        match daemon {
            // requirements.txt pins dify_plugin 0.7.2.
            Daemon::V0_6_10 => assert_eq!(version, "0.7.2", "{daemon:?}"),
            // uv sync re-locked pyproject.toml (`dify_plugin>=0.5.0`) against the index alone,
            // dev group included, and took the newest it holds (the test index has one newer
            // than 0.7.2).
            Daemon::V0_5_3 => {
                assert_ne!(version, "0.7.2", "{daemon:?} took requirements.txt");
                assert!(stderr(&out).contains("Resolved"), "{}", stderr(&out));
            }
        }
    }
    // 0.5.3's re-lock needs the dev group's packages too: without one it fails, naming it.
    let broken = dir.path().join("broken");
    without(&house, "pytest", &broken);
    let out = daemon_install(
        Daemon::V0_5_3,
        &package,
        &broken.join("simple"),
        &python,
        &python_bin,
        dir.path(),
    );
    assert!(!out.status.success());
    assert!(stderr(&out).contains("pytest"), "{}", stderr(&out));
}

const AGENT: &str =
    "langgenius/agent:0.0.14@26958a0e80a10655ce73812bdb7c35a66ce7b16f5ac346d298bda17ff85efd1e";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn build_bundles_verified_plugins_and_a_daemon_image_with_their_wheelhouse() {
    use common::fixtures::{self, layer};
    use common::{Auth, Registry, serve_dir, write_recipe};

    let registry = Registry::start(Auth::None);
    fixtures::dify_like(&registry, "langgenius", &layer(7, 256 << 10), 64 << 10).await;
    let dir = tempfile::tempdir().unwrap();
    // A marketplace serving the agent plugin where Dify's does.
    let market = dir.path().join("market");
    let download = market.join("api/v1/plugins/langgenius/agent/0.0.14");
    std::fs::create_dir_all(&download).unwrap();
    std::fs::copy(fixture(), download.join("download")).unwrap();
    let (_market, market_url) = serve_dir(&market);
    let host = registry.host();
    let recipe = write_recipe(
        dir.path(),
        &[
            ("api", format!("{host}/langgenius/dify-api:1.0")),
            ("web", format!("{host}/langgenius/dify-web:1.0")),
            ("sandbox", format!("{host}/langgenius/dify-sandbox:1.0")),
            (
                "plugin-daemon",
                format!("{host}/langgenius/dify-plugin-daemon:1.0"),
            ),
        ],
    );
    let mut text = std::fs::read_to_string(&recipe).unwrap();
    text.push_str("\n[[plugins]]\nid = \"langgenius/agent\"\nversion = \"0.0.14\"\n");
    std::fs::write(&recipe, text).unwrap();
    let bundle = dir.path().join("bundle");
    let index = plugin_index();
    let build = |extra: &[&Path]| {
        let mut command = dify_bundle_with(&index);
        command
            .args([
                "build",
                "--json",
                "--insecure-registry",
                &host,
                "--marketplace-url",
                &market_url,
            ])
            .arg("--recipe")
            .arg(&recipe)
            .arg("--cache-dir")
            .arg(dir.path().join("cache"))
            .arg("--out")
            .arg(&bundle);
        for file in extra {
            command.arg("--plugin").arg(file);
        }
        run(&mut command)
    };
    let built = build(&[]);
    assert_success(&built);
    let report = common::json(&built);
    assert_eq!(report["plugins"], serde_json::json!([AGENT]));
    assert!(stderr(&built).contains(&format!("plugin {AGENT}: verified")));

    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(bundle.join("bundle.json")).unwrap()).unwrap();
    let plugin = &manifest["plugins"][0];
    assert_eq!(plugin["identifier"], AGENT);
    assert_eq!(plugin["signature"]["status"], "verified");
    assert_eq!(
        plugin["source"],
        format!("{market_url}/api/v1/plugins/langgenius/agent/0.0.14/download")
    );
    let stored = bundle.join("blobs/sha256").join(
        plugin["digest"]
            .as_str()
            .unwrap()
            .trim_start_matches("sha256:"),
    );
    assert_eq!(
        std::fs::read(&stored).unwrap(),
        std::fs::read(fixture()).unwrap()
    );

    let daemon = manifest["images"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["role"] == "plugin-daemon")
        .unwrap();
    assert!(
        daemon["base_digest"].is_string(),
        "the daemon image is derived"
    );
    let set = manifest["python"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["image"] == "plugin-daemon")
        .expect("the daemon's wheel set");
    assert_eq!(set["python"]["version"], "3.12");
    assert_eq!(set["python"]["uv_platform"], "x86_64-manylinux_2_28");
    assert!(
        set["wheels"]
            .as_array()
            .unwrap()
            .iter()
            .any(|w| w["filename"] == "dify_plugin-0.0.1b75-py3-none-any.whl")
    );
    // Every wheel fetched from the index the build was given.
    for wheel in set["wheels"].as_array().unwrap() {
        let url = wheel["url"].as_str().unwrap();
        assert!(
            url.starts_with(index.url.trim_end_matches("/simple")),
            "{url}"
        );
    }

    // The layer holds the wheels and the index at /app/wheelhouse.
    let layer = bundle
        .join("blobs/sha256")
        .join(set["layer"].as_str().unwrap().trim_start_matches("sha256:"));
    let listing = run(Command::new("tar").arg("-tzf").arg(&layer));
    assert_success(&listing);
    let listing = String::from_utf8_lossy(&listing.stdout);
    for path in [
        "app/wheelhouse/simple/index.html",
        "app/wheelhouse/simple/dify-plugin/index.html",
        "app/wheelhouse/files/dify_plugin-0.0.1b75-py3-none-any.whl",
    ] {
        assert!(
            listing.lines().any(|l| l == path),
            "{path} not in the layer"
        );
    }
    let raw = common::skopeo(&[
        "inspect",
        "--raw",
        &format!("oci:{}:plugin-daemon", bundle.display()),
    ]);
    assert!(raw.status.success(), "{}", stderr(&raw));

    // The stack runs the derived image with the daemon pointed at its wheelhouse.
    let template = run(loopback_only(&mut dify_bundle())
        .arg("template")
        .arg(&bundle)
        .arg("--allow-unsigned"));
    assert_success(&template);
    let template: serde_json::Value = serde_json::from_slice(&template.stdout).unwrap();
    let container = template["Resources"]["ApiTask"]["Properties"]["ContainerDefinitions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["Name"] == "plugin-daemon")
        .unwrap()
        .clone();
    let env = |key: &str| {
        container["Environment"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["Name"] == key)
            .map(|e| e["Value"].clone())
    };
    assert_eq!(
        env("PIP_MIRROR_URL"),
        Some("file:///app/wheelhouse/simple".into())
    );
    assert_eq!(env("PLUGIN_IGNORE_UV_LOCK"), Some("true".into()));
    assert_eq!(env("FORCE_VERIFYING_SIGNATURE"), Some("true".into()));
    let digest = daemon["digest"].as_str().unwrap();
    assert!(
        container["Image"]
            .to_string()
            .contains(&format!("@{digest}"))
    );
    assert_success(&run(loopback_only(&mut dify_bundle())
        .args(["verify", "--allow-unsigned"])
        .arg(&bundle)));

    // After a deploy: the admin account and the bundled plugins, through the console API of
    // the real Dify 1.13.3 over HTTPS (test CA), the plugin daemon stand-in behind it.
    let dify = common::dify::shared();
    let install = |password: Option<&str>| {
        let mut command = dify_bundle();
        loopback_only(&mut command)
            .args([
                "plugin",
                "install",
                "--allow-unsigned",
                "--admin-email",
                "ops@example.com",
            ])
            .args(["--url", &dify.url])
            .arg("--bundle")
            .arg(&bundle)
            .env("SSL_CERT_FILE", &dify.ca)
            .env_remove("DIFY_ADMIN_PASSWORD");
        if let Some(password) = password {
            command.env("DIFY_ADMIN_PASSWORD", password);
        }
        run(&mut command)
    };
    // Dify's certificate from a CA the machine does not trust: refused before any password
    // is sent.
    let untrusted = run(loopback_only(&mut dify_bundle())
        .args(["plugin", "install", "--allow-unsigned"])
        .args(["--admin-email", "ops@example.com", "--url", &dify.url])
        .arg("--bundle")
        .arg(&bundle)
        .env("DIFY_ADMIN_PASSWORD", "s3cret-Passw0rd")
        .env_remove("SSL_CERT_FILE"));
    assert!(!untrusted.status.success());
    assert!(
        stderr(&untrusted).contains("GET setup"),
        "{}",
        stderr(&untrusted)
    );
    let no_password = install(None);
    assert!(!no_password.status.success());
    assert!(stderr(&no_password).contains("DIFY_ADMIN_PASSWORD"));
    let first = install(Some("s3cret-Passw0rd"));
    assert_success(&first);
    let err = stderr(&first);
    assert!(
        err.contains("created the admin account ops@example.com"),
        "{err}"
    );
    assert!(err.contains(&format!("plugin {AGENT}: installed")), "{err}");
    let again = install(Some("s3cret-Passw0rd"));
    assert_success(&again);
    let err = stderr(&again);
    assert!(!err.contains("created the admin account"), "{err}");
    assert!(
        err.contains(&format!("plugin {AGENT}: already installed")),
        "{err}"
    );
    let wrong = install(Some("wrong"));
    assert!(!wrong.status.success());
    assert!(stderr(&wrong).contains("login"), "{}", stderr(&wrong));

    // A tampered local package stops the build, named.
    let tampered = dir.path().join("tampered.difypkg");
    let mut bytes = std::fs::read(fixture()).unwrap();
    let at = bytes.len() / 3;
    bytes[at] ^= 0x40;
    std::fs::write(&tampered, &bytes).unwrap();
    let refused = build(&[&tampered]);
    assert!(!refused.status.success());
    let err = stderr(&refused);
    assert!(err.contains("tampered.difypkg"), "{err}");

    // A version the marketplace does not have: named, with what to do instead.
    let text = std::fs::read_to_string(&recipe)
        .unwrap()
        .replace("0.0.14", "9.9.9");
    std::fs::write(&recipe, text).unwrap();
    let missing = build(&[]);
    assert!(!missing.status.success());
    let err = stderr(&missing);
    assert!(
        err.contains("downloading plugin langgenius/agent 9.9.9")
            && err.contains("--marketplace-url"),
        "{err}"
    );
}

/// A plugin version the marketplace does not serve stops the build before any image is
/// downloaded, naming the plugin, the version and what to do.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_plugin_version_stops_the_build_before_any_image() {
    use common::fixtures::{self, layer};
    use common::{Auth, Registry, serve_dir, write_recipe};

    let registry = Registry::start(Auth::None);
    fixtures::dify_like(&registry, "langgenius", &layer(9, 64 << 10), 16 << 10).await;
    let dir = tempfile::tempdir().unwrap();
    let market = dir.path().join("market");
    std::fs::create_dir_all(market.join("api/v1/plugins/langgenius/agent/0.0.14")).unwrap();
    std::fs::copy(
        fixture(),
        market.join("api/v1/plugins/langgenius/agent/0.0.14/download"),
    )
    .unwrap();
    let (_market, market_url) = serve_dir(&market);
    let host = registry.host();
    let recipe = write_recipe(
        dir.path(),
        &[
            ("api", format!("{host}/langgenius/dify-api:1.0")),
            ("web", format!("{host}/langgenius/dify-web:1.0")),
        ],
    );
    let mut text = std::fs::read_to_string(&recipe).unwrap();
    text.push_str("\n[[plugins]]\nid = \"langgenius/agent\"\nversion = \"9.9.9\"\n");
    std::fs::write(&recipe, text).unwrap();
    let bundle = dir.path().join("bundle");
    let out = run(loopback_only(&mut dify_bundle())
        .args([
            "build",
            "--no-sandbox-packages",
            "--insecure-registry",
            &host,
        ])
        .args(["--marketplace-url", &market_url])
        .arg("--recipe")
        .arg(&recipe)
        .arg("--out")
        .arg(&bundle));
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("langgenius/agent 9.9.9"), "{err}");
    assert!(err.contains("--plugin FILE"), "{err}");
    assert!(err.contains("not found"), "{err}");
    let blobs = bundle.join("blobs/sha256");
    let stored = std::fs::read_dir(&blobs).map(|d| d.count()).unwrap_or(0);
    assert_eq!(
        stored, 0,
        "no image blob was downloaded before the plugin check"
    );
}
