//! The console client (`dify_bundle::dify::console`) against the real Dify API 1.13.3, served
//! over HTTPS with a test CA (Dify then names its cookies `__Host-…` and marks them Secure) and
//! over plain HTTP, with the plugin daemon stand-in behind it. One Dify for the whole binary;
//! every test uses the same admin, so any of them may be the one that sets Dify up.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::dify;
use dify_bundle::dify::console::{self, Admin, PluginOutcome};
use dify_bundle::plugins::PluginPackage;

const EMAIL: &str = "ops@example.com";
/// A password that is itself valid base64 (of "passw0rd"): sent plain, Dify 1.13.3 decodes it
/// to something else and counts a failed login (a password that does not decode is refused
/// before the counter, `decrypt_password_field`), which is what lets a test see the order in
/// which the client tries the two forms.
const PASSWORD: &str = "cGFzc3cwcmQ=";

fn admin(password: &str) -> Admin {
    Admin {
        email: EMAIL.into(),
        name: "admin".into(),
        password: password.into(),
    }
}

/// The shared Dify, with this process trusting its test CA (rustls-native-certs reads
/// SSL_CERT_FILE).
fn dify() -> &'static dify::Dify {
    // Not asynchronous: every caller holds SERIAL for its whole test.
    static TRUST: std::sync::Once = std::sync::Once::new();
    let dify = dify::shared();
    TRUST.call_once(|| {
        // SAFETY: set once, before any client of this process is built, and never changed.
        unsafe { std::env::set_var("SSL_CERT_FILE", &dify.ca) };
    });
    dify
}

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/plugins")
        .join(name)
}

fn package(name: &str) -> (String, Vec<u8>) {
    let bytes = std::fs::read(fixture(name)).unwrap();
    let identifier = PluginPackage::read(&bytes, name).unwrap().identifier();
    (identifier, bytes)
}

/// The tests share one admin and Dify's login error counter: one at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const LIMIT: Duration = Duration::from_secs(120);

/// Setup, login with the `__Host-` cookies over HTTPS, upload, install, task polling; then
/// the same package again is "already installed" and no second admin is created.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn installs_over_https_then_reports_already_installed() {
    let started = std::time::Instant::now();
    let _serial = SERIAL.lock().await;
    let dify = dify();
    let (identifier, bytes) = package("langgenius-agent_0.0.14.difypkg");
    let (_, outcomes) = console::install_plugins(
        &dify.url,
        &admin(PASSWORD),
        vec![(identifier.clone(), bytes.clone())],
        LIMIT,
    )
    .await
    .unwrap();
    assert_eq!(
        outcomes,
        vec![(identifier.clone(), PluginOutcome::Installed)]
    );
    let (created, outcomes) = console::install_plugins(
        &dify.url,
        &admin(PASSWORD),
        vec![(identifier.clone(), bytes)],
        LIMIT,
    )
    .await
    .unwrap();
    assert!(!created, "the admin exists already");
    assert_eq!(
        outcomes,
        vec![(identifier, PluginOutcome::AlreadyInstalled)]
    );
    eprintln!("timing: https install + again: {:?}", started.elapsed());
}

/// What the client relies on, asked of Dify directly: over HTTPS the cookies are `__Host-`,
/// Secure, and every method but OPTIONS needs X-CSRF-Token — a GET too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dify_sets_host_cookies_over_https_and_checks_csrf_on_get() {
    let _serial = SERIAL.lock().await;
    let dify = dify();
    let console = console::Console::new(&dify.url).unwrap();
    console.setup(EMAIL, "admin", PASSWORD).await.unwrap();
    use base64::Engine as _;
    let http = reqwest::Client::builder().build().unwrap();
    let login = http
        .post(format!("{}/console/api/login", dify.url))
        .json(&serde_json::json!({
            "email": EMAIL,
            "password": base64::engine::general_purpose::STANDARD.encode(PASSWORD),
        }))
        .send()
        .await
        .unwrap();
    assert!(login.status().is_success(), "{}", login.status());
    let cookies: Vec<String> = login
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .collect();
    for name in [
        "__Host-access_token=",
        "__Host-csrf_token=",
        "__Host-refresh_token=",
    ] {
        let cookie = cookies
            .iter()
            .find(|c| c.starts_with(name))
            .unwrap_or_else(|| panic!("no {name} in {cookies:?}"));
        assert!(cookie.contains("Secure"), "{cookie}");
    }
    let jar: Vec<&str> = cookies.iter().filter_map(|c| c.split(';').next()).collect();
    let csrf = jar
        .iter()
        .find_map(|c| c.strip_prefix("__Host-csrf_token="))
        .unwrap()
        .to_owned();
    let list = format!(
        "{}/console/api/workspaces/current/plugin/list?page=1&page_size=10",
        dify.url
    );
    let without = http
        .get(&list)
        .header("Cookie", jar.join("; "))
        .send()
        .await
        .unwrap();
    assert_eq!(without.status(), 401, "a GET without X-CSRF-Token");
    let with = http
        .get(&list)
        .header("Cookie", jar.join("; "))
        .header("X-CSRF-Token", csrf)
        .send()
        .await
        .unwrap();
    assert_eq!(with.status(), 200);
}

/// Over plain HTTP Dify names the cookies without the prefix; the client works the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn installs_over_plain_http() {
    let started = std::time::Instant::now();
    let _serial = SERIAL.lock().await;
    let dify = dify();
    let (identifier, bytes) = package("langgenius-chart_0.0.2.difypkg");
    let (_, outcomes) = console::install_plugins(
        &dify.plain_url,
        &admin(PASSWORD),
        vec![(identifier.clone(), bytes)],
        LIMIT,
    )
    .await
    .unwrap();
    assert_eq!(outcomes, vec![(identifier, PluginOutcome::Installed)]);
    eprintln!("timing: http install: {:?}", started.elapsed());
}

/// A package whose signature does not match is refused by the daemon at upload (it verifies
/// signatures, FORCE_VERIFYING_SIGNATURE), and the client says so with the daemon's reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_package_with_a_bad_signature_is_refused_with_the_reason() {
    let _serial = SERIAL.lock().await;
    let dify = dify();
    let (_, mut bytes) = package("kurokobo-knowledge_toolbox_0.0.1.difypkg");
    // Re-sign nothing, change the signing time in the zip comment: every file intact, so
    // the identifier is unchanged, but the signature no longer matches.
    let needle = b"\"time\":";
    let at = bytes
        .windows(needle.len())
        .rposition(|w| w == needle)
        .expect("a signed package")
        + needle.len();
    bytes[at] = if bytes[at] == b'1' { b'2' } else { b'1' };
    let identifier = PluginPackage::read(&bytes, "tampered")
        .unwrap()
        .identifier();
    let err = console::install_plugins(
        &dify.url,
        &admin(PASSWORD),
        vec![(identifier, bytes)],
        LIMIT,
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(err.contains("upload package"), "{err}");
    assert!(err.contains("bad signature"), "{err}");
}

/// The password goes base64-encoded first: with the login error counter one short of Dify's
/// lock-out (`AccountService.LOGIN_MAX_ERROR_LIMITS`, 5), a client that tried the plain
/// password first would lock itself out. A wrong password is refused, naming the login.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_password_goes_encoded_first_and_a_wrong_one_is_refused() {
    let _serial = SERIAL.lock().await;
    let dify = dify();
    let mut console = console::Console::new(&dify.url).unwrap();
    console.setup(EMAIL, "admin", PASSWORD).await.unwrap();
    let redis = |args: &[&str]| {
        let out = Command::new("redis-cli")
            .args(["-h", "127.0.0.1", "-p", &dify.redis_port.to_string()])
            .env("REDISCLI_AUTH", &dify.redis_password)
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success());
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    };
    redis(&["SET", &format!("login_error_rate_limit:{EMAIL}"), "5"]);
    console.login(EMAIL, PASSWORD).await.unwrap();
    assert_eq!(
        redis(&["EXISTS", &format!("login_error_rate_limit:{EMAIL}")]),
        "0",
        "a successful login resets the counter"
    );
    let err = console::install_plugins(&dify.url, &admin("Wrong-passw0rd"), vec![], LIMIT)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("login"), "{err}");
    redis(&["DEL", &format!("login_error_rate_limit:{EMAIL}")]);
}

/// The daemon stand-in is no more lenient than the daemon (0.5.3): no or a wrong X-Api-Key is
/// 401 (`internal/server/middleware.go` CheckingKey); a package whose files changed after
/// signing is refused at upload (`internal/service/plugin_decoder.go`, FORCE_VERIFYING_SIGNATURE
/// defaults to true); installing an identifier never uploaded fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_stand_in_refuses_what_the_daemon_refuses() {
    let _serial = SERIAL.lock().await;
    let dify = dify();
    let base = format!(
        "http://127.0.0.1:{}/plugin/00000000-0000-0000-0000-000000000001/management",
        dify.daemon_port
    );
    let http = reqwest::Client::new();
    let upload = |key: Option<&str>, bytes: Vec<u8>| {
        let part = reqwest::multipart::Part::bytes(bytes).file_name("dify_pkg");
        let mut request = http
            .post(format!("{base}/install/upload/package"))
            .multipart(reqwest::multipart::Form::new().part("dify_pkg", part));
        if let Some(key) = key {
            request = request.header("X-Api-Key", key);
        }
        request.send()
    };
    let (_, good) = package("langgenius-agent_0.0.14.difypkg");
    for key in [None, Some("wrong-key")] {
        let r = upload(key, good.clone()).await.unwrap();
        assert_eq!(r.status(), 401, "{key:?}");
        let body: serde_json::Value = r.json().await.unwrap();
        assert!(
            body["message"]
                .as_str()
                .unwrap()
                .contains("PluginDaemonUnauthorizedError")
        );
    }
    let ok: serde_json::Value = upload(Some(&dify.daemon_key), good.clone())
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(ok["code"], 0, "{ok}");
    assert_eq!(ok["data"]["manifest"]["verified"], true);
    // The manifest's description changed, everything else (the signature too) as signed.
    let dir = tempfile::tempdir().unwrap();
    let tampered_path = dir.path().join("tampered.difypkg");
    let rewrite = Command::new("python3")
        .args([
            "-c",
            "import sys, zipfile\n\
             src = zipfile.ZipFile(sys.argv[1])\n\
             dst = zipfile.ZipFile(sys.argv[2], 'w', zipfile.ZIP_DEFLATED)\n\
             for i in src.infolist():\n    \
                 data = src.read(i)\n    \
                 if i.filename == 'manifest.yaml': data = data.replace(b'collection', b'Collection')\n    \
                 dst.writestr(i, data)\n\
             dst.comment = src.comment\n\
             dst.close()",
        ])
        .arg(fixture("langgenius-agent_0.0.14.difypkg"))
        .arg(&tampered_path)
        .output()
        .unwrap();
    assert!(
        rewrite.status.success(),
        "{}",
        String::from_utf8_lossy(&rewrite.stderr)
    );
    let tampered = std::fs::read(&tampered_path).unwrap();
    let refused: serde_json::Value = upload(Some(&dify.daemon_key), tampered)
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(refused["code"], -400, "{refused}");
    let message = refused["message"].as_str().unwrap();
    assert!(message.contains("bad signature"), "{message}");
    let never = http
        .post(format!("{base}/install/identifiers"))
        .header("X-Api-Key", &dify.daemon_key)
        .json(&serde_json::json!({
            "plugin_unique_identifiers": [format!("langgenius/never:0.0.1@{}", "0".repeat(64))],
            "source": "package",
            "metas": [{}],
        }))
        .send()
        .await
        .unwrap();
    let never: serde_json::Value = never.json().await.unwrap();
    assert_eq!(never["code"], -500, "{never}");
}
