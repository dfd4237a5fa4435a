//! Registry authentication: credentials from flags (password from the environment or
//! standard input, never argv), `~/.docker/config.json` and its credential helpers, the
//! `WWW-Authenticate` challenge, and Docker's bearer-token flow (anonymous or with Basic
//! credentials), with tokens cached per scope until they expire.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde::Deserialize;

use crate::error::{Error, Result};

/// A user name and password (or token) for one registry.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Credentials({}:***)", self.username)
    }
}

impl Credentials {
    pub fn basic_header(&self) -> String {
        let raw = format!("{}:{}", self.username, self.password);
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(raw)
        )
    }

    /// Parses `--registry-auth HOST=USER:SOURCE`, where SOURCE says where the password comes
    /// from: `env:VARIABLE` (the environment) or `stdin` (one line of standard input, read
    /// by `read_stdin`). A password written on the command line is refused: any local user
    /// can read a process's arguments (`ps`, `/proc/PID/cmdline`).
    pub fn parse_flag(
        flag: &str,
        read_stdin: &mut dyn FnMut() -> Result<String>,
    ) -> Result<(String, Credentials)> {
        // Never echo what follows USER: it may be a password.
        let shown = match flag.split_once(':') {
            Some((before, _)) => format!("{before}:…"),
            None => flag.to_owned(),
        };
        let bad = || {
            Error::invalid(format!(
                "--registry-auth `{shown}`: expected HOST=USER:env:VARIABLE or HOST=USER:stdin"
            ))
        };
        let (host, rest) = flag.split_once('=').ok_or_else(bad)?;
        let (username, source) = rest.split_once(':').ok_or_else(bad)?;
        if host.is_empty() || username.is_empty() {
            return Err(bad());
        }
        let password = if let Some(variable) = source.strip_prefix("env:") {
            std::env::var(variable).map_err(|_| {
                Error::invalid(format!(
                    "--registry-auth `{shown}`: the environment variable `{variable}` is not set"
                ))
            })?
        } else if source == "stdin" {
            read_stdin()?
        } else {
            return Err(Error::invalid(format!(
                "--registry-auth `{shown}`: a password on the command line can be read by any \
                 local user (ps, /proc/PID/cmdline), so it is not accepted; use \
                 HOST=USER:env:VARIABLE, HOST=USER:stdin, or `docker login` / a credential \
                 helper (credsStore, credHelpers in ~/.docker/config.json)"
            )));
        };
        if password.is_empty() {
            return Err(Error::invalid(format!(
                "--registry-auth `{shown}`: the password is empty"
            )));
        }
        Ok((
            normalise_host(host),
            Credentials {
                username: username.to_owned(),
                password,
            },
        ))
    }
}

/// Maps the names people use for Docker Hub to one key.
pub fn normalise_host(host: &str) -> String {
    let host = host
        .trim_start_matches("https://")
        .trim_start_matches("http://")
        .split('/')
        .next()
        .unwrap_or_default();
    match host {
        "index.docker.io" | "registry-1.docker.io" | "docker.io" => "docker.io".to_owned(),
        other => other.to_owned(),
    }
}

#[derive(Deserialize)]
struct DockerConfig {
    #[serde(default)]
    auths: HashMap<String, DockerAuth>,
    #[serde(default, rename = "credsStore")]
    creds_store: Option<String>,
    #[serde(default, rename = "credHelpers")]
    cred_helpers: HashMap<String, String>,
}

/// Docker credential helpers named in `config.json`: `credHelpers` per registry, and
/// `credsStore` for every other registry.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CredentialHelpers {
    pub store: Option<String>,
    pub per_host: HashMap<String, String>,
}

impl CredentialHelpers {
    /// The helper to ask for `host`'s credentials, if any.
    pub fn for_host(&self, host: &str) -> Option<&str> {
        self.per_host
            .get(&normalise_host(host))
            .or(self.store.as_ref())
            .map(String::as_str)
            .filter(|h| !h.is_empty())
    }
}

/// Reads `credsStore` and `credHelpers` from a Docker config file (missing file: none).
pub fn read_docker_helpers(path: &std::path::Path) -> Result<CredentialHelpers> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok(CredentialHelpers::default());
        }
        Err(e) => return Err(Error::io(path, e)),
    };
    let config: DockerConfig = serde_json::from_slice(&bytes)
        .map_err(|e| Error::invalid(format!("{}: malformed Docker config: {e}", path.display())))?;
    let helpers = CredentialHelpers {
        store: config.creds_store,
        per_host: config
            .cred_helpers
            .into_iter()
            .map(|(host, helper)| (normalise_host(&host), helper))
            .collect(),
    };
    for helper in helpers.per_host.values().chain(&helpers.store) {
        if helper.is_empty()
            || !helper
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        {
            return Err(Error::invalid(format!(
                "{}: credential helper `{}` is not a plain name (docker-credential-NAME)",
                path.display(),
                crate::units::escape(helper)
            )));
        }
    }
    Ok(helpers)
}

/// What a credential helper's `get` prints.
#[derive(Deserialize)]
struct HelperAnswer {
    #[serde(rename = "Username")]
    username: String,
    #[serde(rename = "Secret")]
    secret: String,
}

/// The server name a helper is asked about: Docker Hub's credentials are stored under
/// its v1 index URL (docker/cli `registry.IndexServer`; go-containerregistry
/// pkg/authn/keychain.go `DefaultAuthKey`), anything else under its host.
pub fn helper_server(host: &str) -> String {
    match normalise_host(host).as_str() {
        "docker.io" => "https://index.docker.io/v1/".to_owned(),
        other => other.to_owned(),
    }
}

/// Asks `docker-credential-HELPER get` for `server`'s credentials, the protocol of
/// docker/docker-credential-helpers (client/client.go, v0.9.3): the server on standard
/// input, `{"ServerURL","Username","Secret"}` on standard output; a helper that has none
/// exits non-zero saying "credentials not found in native keychain"
/// (credentials/error.go). skopeo (containers/image pkg/docker/config/config.go) and crane
/// (go-containerregistry pkg/authn/keychain.go) ask the same way. `None`: it has none.
pub async fn helper_get(helper: &str, server: &str) -> Result<Option<Credentials>> {
    use tokio::io::AsyncWriteExt;
    let program = format!("docker-credential-{helper}");
    let failed = |message: String| Error::Auth {
        what: server.to_owned(),
        message: format!("credential helper {program}: {message}"),
    };
    let mut child = tokio::process::Command::new(&program)
        .arg("get")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| {
            failed(format!(
                "cannot run it ({e}); install it, or remove it from credsStore/credHelpers in \
                 the Docker config"
            ))
        })?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(server.as_bytes())
            .await
            .map_err(|e| failed(format!("cannot write to it: {e}")))?;
    }
    let output = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
        .await
        .map_err(|_| failed("no answer within 60 s".to_owned()))?
        .map_err(|e| failed(e.to_string()))?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        if stdout.contains("credentials not found") {
            return Ok(None);
        }
        let said = String::from_utf8_lossy(&output.stderr);
        let said = said
            .lines()
            .chain(stdout.lines())
            .next()
            .unwrap_or_default();
        return Err(failed(format!(
            "{}: {}",
            output.status,
            crate::units::escape(&said.chars().take(200).collect::<String>())
        )));
    }
    let answer: HelperAnswer = serde_json::from_slice(&output.stdout)
        .map_err(|e| failed(format!("its answer is not the expected JSON: {e}")))?;
    if answer.username == "<token>" {
        return Err(failed(
            "it holds an identity token, which dify-bundle cannot use; log in with a user \
             name and password or token"
                .to_owned(),
        ));
    }
    if answer.username.is_empty() && answer.secret.is_empty() {
        return Ok(None);
    }
    Ok(Some(Credentials {
        username: answer.username,
        password: answer.secret,
    }))
}

#[derive(Deserialize)]
struct DockerAuth {
    auth: Option<String>,
    username: Option<String>,
    password: Option<String>,
}

/// The Docker client config file: `$DOCKER_CONFIG/config.json` or `~/.docker/config.json`.
pub fn docker_config_path() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("DOCKER_CONFIG") {
        return Some(PathBuf::from(dir).join("config.json"));
    }
    std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".docker/config.json"))
}

/// Reads the `auths` section of a Docker config file. A missing file is no credentials;
/// a malformed one is an error naming it. Credential helpers are not consulted.
pub fn read_docker_config(path: &std::path::Path) -> Result<HashMap<String, Credentials>> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(HashMap::new()),
        Err(e) => return Err(Error::io(path, e)),
    };
    let config: DockerConfig = serde_json::from_slice(&bytes)
        .map_err(|e| Error::invalid(format!("{}: malformed Docker config: {e}", path.display())))?;
    let mut out = HashMap::new();
    for (host, entry) in config.auths {
        let creds = match (entry.auth, entry.username, entry.password) {
            (Some(auth), _, _) if !auth.is_empty() => {
                let decoded = base64::engine::general_purpose::STANDARD
                    .decode(auth.trim())
                    .ok()
                    .and_then(|b| String::from_utf8(b).ok());
                match decoded.as_deref().and_then(|s| s.split_once(':')) {
                    Some((u, p)) => Credentials {
                        username: u.to_owned(),
                        password: p.to_owned(),
                    },
                    None => {
                        return Err(Error::invalid(format!(
                            "{}: the `auth` entry for {host} is not base64 of USER:PASS",
                            path.display()
                        )));
                    }
                }
            }
            (_, Some(username), Some(password)) => Credentials { username, password },
            _ => continue,
        };
        out.insert(normalise_host(&host), creds);
    }
    Ok(out)
}

/// A parsed `WWW-Authenticate` header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Challenge {
    Basic,
    Bearer {
        realm: String,
        service: Option<String>,
    },
}

impl Challenge {
    pub fn parse(header: &str) -> Option<Challenge> {
        let (scheme, params) = header.trim().split_once(' ').unwrap_or((header.trim(), ""));
        if scheme.eq_ignore_ascii_case("basic") {
            return Some(Challenge::Basic);
        }
        if !scheme.eq_ignore_ascii_case("bearer") {
            return None;
        }
        let params = parse_params(params);
        Some(Challenge::Bearer {
            realm: params.get("realm")?.clone(),
            service: params.get("service").cloned(),
        })
    }
}

/// Parses `key="value",key2=value2` (quoted values may contain commas).
fn parse_params(s: &str) -> HashMap<String, String> {
    let mut out = HashMap::new();
    let mut rest = s.trim();
    while !rest.is_empty() {
        let Some((key, after)) = rest.split_once('=') else {
            break;
        };
        let key = key
            .trim()
            .trim_start_matches(',')
            .trim()
            .to_ascii_lowercase();
        let (value, after) = if let Some(quoted) = after.strip_prefix('"') {
            match quoted.find('"') {
                Some(end) => (&quoted[..end], &quoted[end + 1..]),
                None => (quoted, ""),
            }
        } else {
            match after.find(',') {
                Some(end) => (&after[..end], &after[end..]),
                None => (after, ""),
            }
        };
        out.insert(key, value.to_owned());
        rest = after.trim_start_matches(',').trim();
    }
    out
}

#[derive(Deserialize)]
struct TokenResponse {
    token: Option<String>,
    access_token: Option<String>,
    expires_in: Option<u64>,
}

/// Bearer tokens by scope, each with its expiry.
#[derive(Default)]
pub struct TokenCache {
    tokens: HashMap<String, (String, Instant)>,
}

impl TokenCache {
    pub fn get(&self, scope: &str) -> Option<String> {
        self.tokens
            .get(scope)
            .filter(|(_, expires)| Instant::now() < *expires)
            .map(|(t, _)| t.clone())
    }

    pub fn insert(&mut self, scope: &str, token: String, lifetime: Duration) {
        // Renew a little early so a token never expires in the middle of a request.
        let margin = Duration::from_secs(10).min(lifetime / 2);
        self.tokens.insert(
            scope.to_owned(),
            (token, Instant::now() + lifetime - margin),
        );
    }
}

/// Asks a token server for a token for `scope`. Returns the token and its lifetime.
pub async fn fetch_token(
    http: &reqwest::Client,
    realm: &str,
    service: Option<&str>,
    scope: &str,
    credentials: Option<&Credentials>,
) -> Result<(String, Duration)> {
    let what = format!("token from {realm} for {scope}");
    let mut query = vec![("scope", scope)];
    if let Some(service) = service {
        query.push(("service", service));
    }
    let mut request = http.get(realm).query(&query);
    if let Some(creds) = credentials {
        request = request.header(reqwest::header::AUTHORIZATION, creds.basic_header());
    }
    let response = request.send().await.map_err(|e| Error::Http {
        what: what.clone(),
        message: crate::net::http::describe_reqwest(&e),
        status: None,
        transient: true,
        retry_after: None,
    })?;
    let status = response.status();
    if status == reqwest::StatusCode::UNAUTHORIZED || status == reqwest::StatusCode::FORBIDDEN {
        return Err(Error::Auth {
            what,
            message: format!(
                "the token server refused {} ({status})",
                if credentials.is_some() {
                    "our credentials"
                } else {
                    "anonymous access"
                }
            ),
        }
        .with_hint("check --registry-auth or ~/.docker/config.json"));
    }
    if !status.is_success() {
        return Err(crate::net::http::status_error(&what, "token server", response).await);
    }
    let body: TokenResponse = response.json().await.map_err(|e| Error::Http {
        what: what.clone(),
        message: format!("unreadable token response: {e}"),
        status: None,
        transient: true,
        retry_after: None,
    })?;
    let token = body
        .token
        .or(body.access_token)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| Error::Auth {
            what: what.clone(),
            message: "the token server answered without a token".to_owned(),
        })?;
    Ok((
        token,
        Duration::from_secs(body.expires_in.unwrap_or(60).max(1)),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_challenges() {
        let c = Challenge::parse(
            r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/x:pull,push""#,
        );
        assert_eq!(
            c,
            Some(Challenge::Bearer {
                realm: "https://auth.docker.io/token".into(),
                service: Some("registry.docker.io".into())
            })
        );
        assert_eq!(
            Challenge::parse(r#"Basic realm="Registry""#),
            Some(Challenge::Basic)
        );
        assert_eq!(Challenge::parse("Negotiate"), None);
        assert_eq!(Challenge::parse("Bearer service=x"), None);
    }

    #[test]
    fn parses_registry_auth_flags_and_docker_config() {
        let mut no_stdin = || -> Result<String> { panic!("stdin read") };
        // SAFETY of the test: a variable name no other test uses.
        unsafe { std::env::set_var("DIFY_BUNDLE_TEST_REGISTRY_PW", "pa:ss") };
        let (host, c) = Credentials::parse_flag(
            "index.docker.io=me:env:DIFY_BUNDLE_TEST_REGISTRY_PW",
            &mut no_stdin,
        )
        .unwrap();
        assert_eq!(host, "docker.io");
        assert_eq!(c.password, "pa:ss");
        let (_, c) =
            Credentials::parse_flag("reg:5000=me:stdin", &mut || Ok("from-stdin".into())).unwrap();
        assert_eq!(c.password, "from-stdin");
        assert!(Credentials::parse_flag("nohost", &mut no_stdin).is_err());
        // A password on argv is refused, with the ways that work, and never echoed.
        let refused = Credentials::parse_flag("reg=me:hunter2", &mut no_stdin)
            .unwrap_err()
            .to_string();
        assert!(refused.contains("env:VARIABLE") && refused.contains("credHelpers"));
        assert!(!refused.contains("hunter2"), "{refused}");
        let unset = Credentials::parse_flag("reg=me:env:DIFY_BUNDLE_TEST_UNSET", &mut no_stdin);
        assert!(unset.is_err());

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.json");
        std::fs::write(
            &path,
            r#"{"auths":{"https://index.docker.io/v1/":{"auth":"dXNlcjpwYXNz"},"127.0.0.1:5000":{"username":"AWS","password":"t"}},"credsStore":"desktop"}"#,
        )
        .unwrap();
        let creds = read_docker_config(&path).unwrap();
        let helpers = read_docker_helpers(&path).unwrap();
        assert_eq!(helpers.for_host("anything"), Some("desktop"));
        assert_eq!(creds["docker.io"].username, "user");
        assert_eq!(creds["127.0.0.1:5000"].password, "t");
        std::fs::write(
            &path,
            r#"{"credsStore":"desktop","credHelpers":{"https://index.docker.io/v1/":"pass","r.example":"ecr-login"}}"#,
        )
        .unwrap();
        let helpers = read_docker_helpers(&path).unwrap();
        assert_eq!(helpers.for_host("docker.io"), Some("pass"));
        assert_eq!(helpers.for_host("r.example"), Some("ecr-login"));
        assert_eq!(helpers.for_host("other"), Some("desktop"));
        std::fs::write(&path, r#"{"credsStore":"../../bin/sh"}"#).unwrap();
        assert!(read_docker_helpers(&path).is_err());
        std::fs::write(&path, "{").unwrap();
        assert!(read_docker_config(&path).is_err());
        assert!(
            read_docker_config(&dir.path().join("missing"))
                .unwrap()
                .is_empty()
        );
    }
}
