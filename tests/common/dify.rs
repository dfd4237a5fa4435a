//! Test support: the real Dify API 1.13.3 (from `../shared/fixtures/dify`, or
//! `DIFY_API_TARBALL`) on 127.0.0.1 — unpacked and `uv sync`ed once into
//! `~/.cache/dify-bundle/dify-1.13.3` by `scripts/dify-api.sh` (test setup), PostgreSQL (initdb/pg_ctl, as a non-root user) and Redis
//! (redis-server) from Debian's packages in a temp dir, a test CA made with openssl for TLS,
//! and the plugin daemon stand-in (`tests/servers/plugin_daemon.py`). One Dify per test binary:
//! [`shared`] starts it the first time and a watchdog stops everything when the test process
//! exits (statics are never dropped).

// The servers live as long as the test process; the watchdog of [`Scratch`] stops them after
// it exits (they are then reaped by init), so no handle is kept to wait on.
#![allow(clippy::zombie_processes)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use super::free_port;

pub const VERSION: &str = "1.13.3";

/// `n` random bytes as hex, from /dev/urandom.
pub fn token(n: usize) -> String {
    use std::io::Read as _;
    let mut bytes = vec![0u8; n];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .expect("/dev/urandom");
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn home() -> PathBuf {
    PathBuf::from(std::env::var_os("HOME").expect("HOME"))
}

pub fn cache_dir() -> PathBuf {
    home().join(".cache/dify-bundle")
}

fn sh(command: &mut Command, what: &str) -> String {
    let out = command
        .output()
        .unwrap_or_else(|e| panic!("{what}: cannot run: {e}"));
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The api tree with its venv, made once per machine by `scripts/dify-api.sh` (which
/// scripts/test.sh runs before the tests): a test never installs anything from the network.
pub fn api_dir() -> PathBuf {
    let root = cache_dir().join(format!("dify-{VERSION}"));
    assert!(
        root.join(".synced").exists(),
        "the Dify API {VERSION} is not set up in {}: run scripts/dify-api.sh (scripts/test.sh does)",
        root.display()
    );
    root.join("api")
}

/// A test CA and the certificates it issues, made with openssl.
pub struct TestCa {
    pub dir: PathBuf,
    pub ca: PathBuf,
}

impl TestCa {
    pub fn new(dir: &Path) -> TestCa {
        std::fs::create_dir_all(dir).expect("ca dir");
        let ca = dir.join("ca.pem");
        sh(
            Command::new("openssl")
                .args([
                    "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                ])
                .args(["-subj", "/CN=dify-bundle test CA", "-keyout"])
                .arg(dir.join("ca.key"))
                .arg("-out")
                .arg(&ca),
            "openssl: the test CA",
        );
        TestCa {
            dir: dir.to_owned(),
            ca,
        }
    }

    /// A server certificate for 127.0.0.1 and localhost: (certificate, key).
    pub fn issue(&self, name: &str) -> (PathBuf, PathBuf) {
        let key = self.dir.join(format!("{name}.key"));
        let csr = self.dir.join(format!("{name}.csr"));
        let cert = self.dir.join(format!("{name}.pem"));
        let ext = self.dir.join(format!("{name}.ext"));
        std::fs::write(
            &ext,
            "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth,clientAuth\n",
        )
        .expect("ext file");
        sh(
            Command::new("openssl")
                .args([
                    "req",
                    "-newkey",
                    "rsa:2048",
                    "-nodes",
                    "-subj",
                    "/CN=127.0.0.1",
                ])
                .arg("-keyout")
                .arg(&key)
                .arg("-out")
                .arg(&csr),
            "openssl: a server key",
        );
        sh(
            Command::new("openssl")
                .args(["x509", "-req", "-days", "2", "-CAcreateserial", "-in"])
                .arg(&csr)
                .arg("-CA")
                .arg(&self.ca)
                .arg("-CAkey")
                .arg(self.dir.join("ca.key"))
                .arg("-out")
                .arg(&cert)
                .arg("-extfile")
                .arg(&ext),
            "openssl: a server certificate",
        );
        (cert, key)
    }
}

fn is_root() -> bool {
    sh(Command::new("id").arg("-u"), "id -u").trim() == "0"
}

/// PostgreSQL refuses to run as root: as root, its commands run as the `postgres` user of
/// Debian's package.
fn pg_command(bin: &str) -> Command {
    let path = format!("/usr/lib/postgresql/15/bin/{bin}");
    let program = if Path::new(&path).exists() {
        path
    } else {
        bin.to_owned()
    };
    if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--", &program]);
        c
    } else {
        Command::new(program)
    }
}

fn wait_port(port: u16, what: &str, limit: Duration) {
    let deadline = Instant::now() + limit;
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "{what} did not listen on 127.0.0.1:{port} within {limit:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Processes and data that live as long as the test process: a watchdog started with it
/// stops what it started (`pids`), runs the `stop` commands and removes the directory once
/// the test process has exited, whether the tests passed or panicked.
pub struct Scratch {
    pub dir: PathBuf,
}

impl Scratch {
    pub fn new(name: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!(
            "dify-bundle-{name}-{}-{}",
            std::process::id(),
            token(4)
        ));
        std::fs::create_dir_all(&dir).expect("scratch dir");
        let d = dir.display();
        let script = format!(
            "while kill -0 {} 2>/dev/null; do sleep 1; done; \
             for p in $(cat {d}/pids 2>/dev/null); do kill $p 2>/dev/null; done; \
             sh {d}/stop >/dev/null 2>&1; sleep 1; rm -rf {d}",
            std::process::id()
        );
        Command::new("sh")
            .args(["-c", &script])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("the watchdog");
        Scratch { dir }
    }

    fn append(&self, file: &str, line: &str) {
        use std::io::Write as _;
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join(file))
            .expect("scratch file");
        writeln!(f, "{line}").expect("scratch file");
    }

    pub fn keep(&mut self, pid: u32) {
        self.append("pids", &pid.to_string());
    }

    /// Starts a PostgreSQL 15 cluster on a free port (`tls`: with `ssl=on` and this
    /// certificate); returns its port. The superuser is `user` with `password`.
    pub fn postgres(&mut self, user: &str, password: &str, tls: Option<(&Path, &Path)>) -> u16 {
        let port = free_port();
        let base = self.dir.join(format!("pg-{port}"));
        let data = base.join("data");
        std::fs::create_dir_all(&base).expect("pg dir");
        let pwfile = base.join("pw");
        std::fs::write(&pwfile, password).expect("pw file");
        if is_root() {
            for p in [&self.dir, &base] {
                sh(Command::new("chmod").arg("755").arg(p), "chmod");
            }
            sh(
                Command::new("chown").arg("-R").arg("postgres").arg(&base),
                "chown to postgres",
            );
        }
        sh(
            pg_command("initdb")
                .args(["-U", user, "-E", "UTF8", "--auth=scram-sha-256"])
                .arg(format!("--pwfile={}", pwfile.display()))
                .arg("-D")
                .arg(&data),
            "initdb",
        );
        let mut options = format!(
            "-p {port} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
            base.display()
        );
        if let Some((cert, key)) = tls {
            for (from, to) in [(cert, "server.crt"), (key, "server.key")] {
                std::fs::copy(from, data.join(to)).expect("copy the server certificate");
            }
            if is_root() {
                sh(
                    Command::new("chown")
                        .arg("postgres")
                        .arg(data.join("server.crt"))
                        .arg(data.join("server.key")),
                    "chown",
                );
            }
            sh(
                Command::new("chmod")
                    .arg("600")
                    .arg(data.join("server.key")),
                "chmod",
            );
            options.push_str(" -c ssl=on");
            // TLS only, as Aurora with rds.force_ssl: a client that does not ask for TLS is
            // refused, so a missing `sslmode=require` shows.
            std::fs::write(
                data.join("pg_hba.conf"),
                "local all all scram-sha-256\nhostssl all all 127.0.0.1/32 scram-sha-256\nhostnossl all all 0.0.0.0/0 reject\n",
            )
            .expect("pg_hba.conf");
        }
        sh(
            pg_command("pg_ctl")
                .arg("-D")
                .arg(&data)
                .arg("-o")
                .arg(options)
                .arg("-l")
                .arg(base.join("log"))
                .args(["-w", "start"]),
            "pg_ctl start",
        );
        let stop = pg_command("pg_ctl");
        let mut line: Vec<String> = vec![stop.get_program().to_string_lossy().into_owned()];
        line.extend(stop.get_args().map(|a| a.to_string_lossy().into_owned()));
        self.append(
            "stop",
            &format!("{} -D {} -m immediate stop", line.join(" "), data.display()),
        );
        port
    }

    /// Creates `database` on the cluster at `port`.
    pub fn createdb(&self, port: u16, user: &str, password: &str, database: &str) {
        sh(
            Command::new("psql")
                .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-U", user])
                .arg("postgres")
                .args(["-c", &format!("CREATE DATABASE {database}")])
                .env("PGPASSWORD", password),
            "createdb",
        );
    }

    /// Starts redis-server on a free port: plain (`tls` None) or TLS only, with `password`.
    pub fn redis(&mut self, password: &str, tls: Option<(&Path, &Path, &Path)>) -> u16 {
        let port = free_port();
        let mut c = Command::new("redis-server");
        c.args(["--save", "", "--appendonly", "no", "--bind", "127.0.0.1"])
            .args(["--requirepass", password])
            .arg("--dir")
            .arg(&self.dir);
        if let Some((cert, key, ca)) = tls {
            c.args(["--port", "0", "--tls-port", &port.to_string()])
                .arg("--tls-cert-file")
                .arg(cert)
                .arg("--tls-key-file")
                .arg(key)
                .arg("--tls-ca-cert-file")
                .arg(ca)
                // ElastiCache/Valkey in transit: clients are not asked for certificates.
                .args(["--tls-auth-clients", "no"]);
        } else {
            c.args(["--port", &port.to_string()]);
        }
        let child = c
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server (apt-get install redis-server)");
        self.keep(child.id());
        wait_port(port, "redis-server", Duration::from_secs(20));
        port
    }
}

/// The plugin daemon stand-in; returns its port.
pub fn plugin_daemon(scratch: &mut Scratch, key: &str, extra: &[(&str, &str)]) -> u16 {
    let port = free_port();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let log = std::fs::File::create(scratch.dir.join(format!("daemon-{port}.log"))).expect("log");
    let child = Command::new("python3")
        .arg(root.join("tests/servers/plugin_daemon.py"))
        .arg(port.to_string())
        .arg(root.join("assets/dify-official-plugin-key.pem"))
        .env("SERVER_KEY", key)
        .envs(extra.iter().copied())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("python3 for the plugin daemon stand-in");
    scratch.keep(child.id());
    wait_port(port, "the plugin daemon stand-in", Duration::from_secs(20));
    port
}

/// Runs the Dify api's Python with exactly `env` (plus PATH and HOME), in the api dir.
pub fn api_python(env: &[(String, String)]) -> Command {
    let api = api_dir();
    let mut c = Command::new(api.join(".venv/bin/python"));
    c.current_dir(&api)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", home())
        .envs(env.iter().map(|(k, v)| (k, v)));
    c
}

/// `flask db upgrade` with `env`; returns how long it took.
pub fn migrate(env: &[(String, String)]) -> Duration {
    let started = Instant::now();
    sh(
        api_python(env).args(["-m", "flask", "db", "upgrade"]),
        "flask db upgrade",
    );
    started.elapsed()
}

/// Starts `flask run` (TLS when given) with `env`; waits for `/health`. Returns the pid.
pub fn serve(
    scratch: &mut Scratch,
    env: &[(String, String)],
    port: u16,
    tls: Option<(&Path, &Path)>,
) -> u32 {
    let log = std::fs::File::create(scratch.dir.join(format!("api-{port}.log"))).expect("log");
    let mut c = api_python(env);
    c.args(["-m", "flask", "run", "--host", "127.0.0.1", "--port"])
        .arg(port.to_string());
    if let Some((cert, key)) = tls {
        c.arg("--cert").arg(cert).arg("--key").arg(key);
    }
    let child = c
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("flask run");
    let pid = child.id();
    scratch.keep(pid);
    wait_port(port, "the Dify api", Duration::from_secs(120));
    pid
}

/// The shared Dify of this test binary: served over HTTPS with a test CA (so Dify sets
/// `__Host-` cookies with Secure, `api/libs/token.py` `is_secure`), an admin not yet set up.
pub struct Dify {
    pub url: String,
    pub ca: PathBuf,
    pub daemon_key: String,
    pub scratch_dir: PathBuf,
    /// The same Dify (database, Redis, daemon) served over plain HTTP: plain cookie names.
    pub plain_url: String,
    pub redis_port: u16,
    pub redis_password: String,
    /// The plugin daemon stand-in's port.
    pub daemon_port: u16,
}

pub fn shared() -> &'static Dify {
    static DIFY: OnceLock<Dify> = OnceLock::new();
    DIFY.get_or_init(start)
}

fn start() -> Dify {
    let begun = Instant::now();
    api_dir();
    let mut scratch = Scratch::new("dify");
    let ca = TestCa::new(&scratch.dir.join("ca"));
    let (cert, key) = ca.issue("api");
    let db_password = token(12);
    let redis_password = token(12);
    let daemon_key = token(16);
    let pg = scratch.postgres("postgres", &db_password, None);
    scratch.createdb(pg, "postgres", &db_password, "dify");
    let redis = scratch.redis(&redis_password, None);
    let daemon = plugin_daemon(&mut scratch, &daemon_key, &[]);
    let port = free_port();
    let plain_port = free_port();
    let env = |console: &str| -> Vec<(String, String)> {
        [
            ("FLASK_APP", "app.py".to_owned()),
            ("SECRET_KEY", token(24)),
            ("DB_USERNAME", "postgres".to_owned()),
            ("DB_PASSWORD", db_password.clone()),
            ("DB_HOST", "127.0.0.1".to_owned()),
            ("DB_PORT", pg.to_string()),
            ("DB_DATABASE", "dify".to_owned()),
            ("REDIS_HOST", "127.0.0.1".to_owned()),
            ("REDIS_PORT", redis.to_string()),
            ("REDIS_PASSWORD", redis_password.clone()),
            (
                "CELERY_BROKER_URL",
                format!("redis://:{redis_password}@127.0.0.1:{redis}/1"),
            ),
            ("STORAGE_TYPE", "opendal".to_owned()),
            ("OPENDAL_SCHEME", "fs".to_owned()),
            (
                "OPENDAL_FS_ROOT",
                scratch.dir.join("storage").display().to_string(),
            ),
            ("PLUGIN_DAEMON_URL", format!("http://127.0.0.1:{daemon}")),
            ("PLUGIN_DAEMON_KEY", daemon_key.clone()),
            ("CONSOLE_API_URL", console.to_owned()),
            ("CONSOLE_WEB_URL", console.to_owned()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect()
    };
    let url = format!("https://127.0.0.1:{port}");
    let plain_url = format!("http://127.0.0.1:{plain_port}");
    let secure_env = env(&url);
    let took = migrate(&secure_env);
    eprintln!("dify: flask db upgrade took {took:?}");
    // Both servers share one SECRET_KEY: tokens of one are valid on the other.
    let secret = secure_env
        .iter()
        .find(|(k, _)| k == "SECRET_KEY")
        .map(|(_, v)| v.clone())
        .unwrap_or_default();
    let mut plain_env = env(&plain_url);
    for (k, v) in plain_env.iter_mut() {
        if k == "SECRET_KEY" {
            *v = secret.clone();
        }
    }
    serve(&mut scratch, &secure_env, port, Some((&cert, &key)));
    serve(&mut scratch, &plain_env, plain_port, None);
    eprintln!("dify: ready in {:?}", begun.elapsed());
    Dify {
        url,
        ca: ca.ca.clone(),
        daemon_key,
        scratch_dir: scratch.dir.clone(),
        plain_url,
        redis_port: redis,
        redis_password,
        daemon_port: daemon,
    }
}
