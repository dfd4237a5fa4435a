//! Test support: real servers on 127.0.0.1 (docker-registry in three auth flavours, the
//! Docker-Hub-like token server), generated fixture images, a fault-injecting proxy, and
//! helpers to run the `dify-bundle` binary.

#![allow(dead_code)]

pub mod dify;
pub mod fixtures;
pub mod moto_template;
pub mod proxy;
pub mod random;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port on 127.0.0.1")
}

/// A child process killed when dropped.
pub struct Server {
    child: Child,
}

impl Server {
    pub fn new(child: Child) -> Server {
        Server { child }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn wait_for_port(port: u16, what: &str, child: &mut Child) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("{what} exited early: {status}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("{what} did not listen on 127.0.0.1:{port} within 20 s");
}

/// Serves `dir` over HTTP on 127.0.0.1 (Python's http.server); returns the server and its
/// base URL.
pub fn serve_dir(dir: &Path) -> (Server, String) {
    let port = free_port();
    let mut child = Command::new("python3")
        .args([
            "-m",
            "http.server",
            "--bind",
            "127.0.0.1",
            &port.to_string(),
            "--directory",
        ])
        .arg(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("python3 -m http.server");
    wait_for_port(port, "http.server", &mut child);
    (Server { child }, format!("http://127.0.0.1:{port}"))
}

/// A package index on 127.0.0.1 as a PyPI mirror serves one (the simple API, PEP 503): one
/// page per project listing its files with their sha256. uv resolves against it when given
/// `UV_DEFAULT_INDEX` = [`PackageIndex::url`].
pub struct PackageIndex {
    _server: Server,
    _root: tempfile::TempDir,
    pub url: String,
}

/// Serves `files` (wheels, sdists) as a package index.
pub fn package_index(files: &[PathBuf]) -> PackageIndex {
    let root = tempfile::tempdir().unwrap();
    let mut projects: std::collections::BTreeMap<String, Vec<(String, String)>> =
        Default::default();
    std::fs::create_dir_all(root.path().join("files")).unwrap();
    for file in files {
        let name = file.file_name().unwrap().to_string_lossy().into_owned();
        let bytes = std::fs::read(file).unwrap();
        std::fs::write(root.path().join("files").join(&name), &bytes).unwrap();
        let project: String = name
            .split('-')
            .next()
            .unwrap()
            .to_ascii_lowercase()
            .replace(['_', '.'], "-");
        let sha = dify_bundle::digest::Digest::of(&bytes).hex().to_owned();
        projects.entry(project).or_default().push((name, sha));
    }
    for (project, files) in &projects {
        let dir = root.path().join("simple").join(project);
        std::fs::create_dir_all(&dir).unwrap();
        let links: String = files
            .iter()
            .map(|(name, sha)| format!("<a href=\"../../files/{name}#sha256={sha}\">{name}</a>\n"))
            .collect();
        std::fs::write(
            dir.join("index.html"),
            format!("<!DOCTYPE html>\n<html><body>\n{links}</body></html>\n"),
        )
        .unwrap();
    }
    let (server, base) = serve_dir(root.path());
    PackageIndex {
        _server: server,
        _root: root,
        url: format!("{base}/simple"),
    }
}

/// Leaves `command` no way out but loopback: every HTTP(S) connection to anything other than
/// 127.0.0.1 or localhost goes through a proxy on a closed port, so it fails instead of
/// reaching the internet (uv, pip and our own client all honour these variables).
pub fn loopback_only(command: &mut Command) -> &mut Command {
    const CLOSED: &str = "http://127.0.0.1:9";
    for key in ["HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"] {
        command
            .env(key, CLOSED)
            .env(key.to_ascii_lowercase(), CLOSED);
    }
    command
        .env("NO_PROXY", "127.0.0.1,localhost")
        .env("no_proxy", "127.0.0.1,localhost")
}

/// The wheels scripts/test.sh downloads for the tests (real ones, as PyPI serves them).
pub fn test_wheels() -> PathBuf {
    std::env::var_os("DIFY_BUNDLE_TEST_WHEELS")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var("HOME").unwrap()).join(".cache/dify-bundle/test-wheels")
        })
}

pub enum Auth {
    None,
    Htpasswd { user: String, password: String },
    Token { user: String, password: String },
}

/// A docker-registry (distribution 2.8) server with its own storage directory.
pub struct Registry {
    pub port: u16,
    pub dir: TempDir,
    pub user: Option<(String, String)>,
    _servers: Vec<Server>,
}

impl Registry {
    pub fn start(auth: Auth) -> Registry {
        let dir = tempfile::tempdir().expect("tempdir");
        let port = free_port();
        let mut servers = Vec::new();
        let (auth_config, user) = match &auth {
            Auth::None => (String::new(), None),
            Auth::Htpasswd { user, password } => {
                let out = Command::new("htpasswd")
                    .args(["-Bbn", user, password])
                    .output()
                    .expect("htpasswd (apt-get install apache2-utils)");
                assert!(out.status.success(), "htpasswd failed");
                let file = dir.path().join("htpasswd");
                std::fs::write(&file, out.stdout).expect("write htpasswd");
                (
                    format!(
                        "auth:\n  htpasswd:\n    realm: basic-realm\n    path: {}\n",
                        file.display()
                    ),
                    Some((user.clone(), password.clone())),
                )
            }
            Auth::Token { user, password } => {
                let token_port = free_port();
                let cert = dir.path().join("token.pem");
                let script =
                    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/servers/token_server.py");
                let mut child = Command::new("python3")
                    .arg(script)
                    .args(["--port", &token_port.to_string()])
                    .arg("--cert-out")
                    .arg(&cert)
                    .args(["--user", user, "--password", password])
                    .stdout(Stdio::null())
                    .spawn()
                    .expect("python3 for the token server");
                wait_for_port(token_port, "token server", &mut child);
                servers.push(Server { child });
                (
                    format!(
                        "auth:\n  token:\n    realm: http://127.0.0.1:{token_port}/token\n    service: test-registry\n    issuer: test-issuer\n    rootcertbundle: {}\n",
                        cert.display()
                    ),
                    Some((user.clone(), password.clone())),
                )
            }
        };
        let config = format!(
            "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n{auth_config}",
            dir.path().join("data").display()
        );
        let config_path = dir.path().join("config.yml");
        std::fs::write(&config_path, config).expect("write registry config");
        let mut child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config_path)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("docker-registry (apt-get install docker-registry)");
        wait_for_port(port, "docker-registry", &mut child);
        servers.push(Server { child });
        Registry {
            port,
            dir,
            user,
            _servers: servers,
        }
    }

    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Where the registry keeps a blob's bytes on disk.
    pub fn blob_file(&self, hex: &str) -> PathBuf {
        self.dir
            .path()
            .join("data/docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data")
    }
}

/// The `dify-bundle` binary under test.
pub fn dify_bundle() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_dify-bundle"));
    // Never read the developer's own Docker credentials.
    command.env("DOCKER_CONFIG", "/nonexistent-docker-config");
    command.env_remove("DIFY_BUNDLE_PUBKEY");
    // Bundles in tests carry no 100 MB debug binary; tests/release.rs carries one.
    command.env("DIFY_BUNDLE_NO_INSTALLER", "true");
    command
}

pub fn run(command: &mut Command) -> Output {
    command.output().expect("run dify-bundle")
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

pub fn json(out: &Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not JSON ({e}):\n{}\nstderr:\n{}",
            String::from_utf8_lossy(&out.stdout),
            stderr(out)
        )
    })
}

#[track_caller]
pub fn assert_success(out: &Output) {
    assert!(
        out.status.success(),
        "dify-bundle failed ({}):\n{}",
        out.status,
        stderr(out)
    );
}

/// The command failed and its stderr names `needle`.
#[track_caller]
pub fn assert_fails_with(out: &Output, needle: &str) {
    assert!(
        !out.status.success(),
        "succeeded, expected a failure naming `{needle}`"
    );
    let err = stderr(out);
    assert!(err.contains(needle), "`{needle}` not named in:\n{err}");
}

/// Generates an unencrypted key pair `DIR/key.key` and `DIR/key.pub`; returns the stem.
pub fn generate_key(dir: &Path) -> PathBuf {
    let stem = dir.join("key");
    assert_success(&run(dify_bundle()
        .args(["key", "generate", "--no-password", "--out"])
        .arg(&stem)));
    stem
}

/// Writes a recipe file listing `(role, image)` pairs.
pub fn write_recipe(dir: &Path, images: &[(&str, String)]) -> PathBuf {
    write_versioned_recipe(dir, "0.0.0-test", images)
}

/// Writes a recipe file for Dify `version` listing `(role, image)` pairs.
pub fn write_versioned_recipe(dir: &Path, version: &str, images: &[(&str, String)]) -> PathBuf {
    let mut text = format!("name = \"test-bundle\"\ndify_version = \"{version}\"\n");
    for (role, image) in images {
        text.push_str(&format!(
            "\n[[images]]\nrole = \"{role}\"\nimage = \"{image}\"\n"
        ));
    }
    let path = dir.join("recipe.toml");
    std::fs::write(&path, text).expect("write recipe");
    path
}

/// A signed bundle of Dify-like images (api, web, sandbox, plugin-daemon) for Dify
/// `version`, built from `source` into `work/bundle`; returns the bundle and the key stem
/// (`.key`, `.pub`).
pub async fn dify_like_bundle(source: &Registry, work: &Path, version: &str) -> (PathBuf, PathBuf) {
    fixtures::dify_like(
        source,
        "langgenius",
        &fixtures::layer(41, 1 << 20),
        256 << 10,
    )
    .await;
    let stem = generate_key(work);
    let host = source.host();
    let recipe = write_versioned_recipe(
        work,
        version,
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
    let bundle = work.join("bundle");
    assert_success(&run(dify_bundle()
        .args(["build", "--insecure-registry", &host, "--sign-key"])
        .arg(stem.with_extension("key"))
        .arg("--recipe")
        .arg(&recipe)
        .arg("--out")
        .arg(&bundle)));
    (bundle, stem)
}

/// The application template a signed bundle of Dify-like images for `version` carries, as
/// `dify-bundle template` prints it (signature checked): built from `source` into `work`.
pub async fn signed_template(source: &Registry, work: &Path, version: &str) -> Vec<u8> {
    let (bundle, stem) = dify_like_bundle(source, work, version).await;
    let printed = run(dify_bundle()
        .arg("template")
        .arg(&bundle)
        .arg("--pubkey")
        .arg(stem.with_extension("pub")));
    assert_success(&printed);
    printed.stdout
}

pub fn skopeo(args: &[&str]) -> Output {
    Command::new("skopeo")
        .args(args)
        .output()
        .expect("skopeo (apt-get install skopeo)")
}

/// A moto_server (5.2.5) on 127.0.0.1 standing in for AWS.
pub struct Moto {
    pub port: u16,
    _server: Server,
}

impl Moto {
    pub fn start() -> Moto {
        let port = free_port();
        let mut child = Command::new("moto_server")
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            // ECS services report their tasks running (moto runs no containers).
            .env("MOTO_ECS_SERVICE_RUNNING", "1")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("moto_server (pip install 'moto[server]==5.2.5')");
        wait_for_port(port, "moto_server", &mut child);
        Moto {
            port,
            _server: Server { child },
        }
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Points a command at this server with test credentials, and nowhere else.
    pub fn env<'a>(&self, command: &'a mut Command) -> &'a mut Command {
        command
            .env("AWS_ENDPOINT_URL", self.endpoint())
            .env("AWS_ACCESS_KEY_ID", "testing")
            .env("AWS_SECRET_ACCESS_KEY", "testing")
            .env("AWS_REGION", "us-east-1")
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env_remove("AWS_PROFILE")
    }

    /// Configuration for an SDK client of this server.
    pub fn sdk_config(&self) -> aws_config::SdkConfig {
        use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region, SharedCredentialsProvider};
        aws_config::SdkConfig::builder()
            .behavior_version(BehaviorVersion::latest())
            .endpoint_url(self.endpoint())
            .region(Region::new("us-east-1"))
            .credentials_provider(SharedCredentialsProvider::new(Credentials::new(
                "testing", "testing", None, None, "test",
            )))
            .build()
    }

    pub fn ec2(&self) -> aws_sdk_ec2::Client {
        aws_sdk_ec2::Client::new(&self.sdk_config())
    }

    pub fn ecr(&self) -> aws_sdk_ecr::Client {
        aws_sdk_ecr::Client::new(&self.sdk_config())
    }

    pub fn s3(&self) -> aws_sdk_s3::Client {
        let config = aws_sdk_s3::config::Builder::from(&self.sdk_config())
            .force_path_style(true)
            .build();
        aws_sdk_s3::Client::from_conf(config)
    }
}
