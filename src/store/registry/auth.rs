//! Registry authentication: credentials from flags and `~/.docker/config.json`, the
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

    /// Parses `HOST=USER:PASS` as given to `--registry-auth`.
    pub fn parse_flag(flag: &str) -> Result<(String, Credentials)> {
        let bad = || {
            Error::invalid(format!(
                "--registry-auth `{}`: expected HOST=USER:PASS",
                flag.split(':').next().unwrap_or_default()
            ))
        };
        let (host, userpass) = flag.split_once('=').ok_or_else(bad)?;
        let (username, password) = userpass.split_once(':').ok_or_else(bad)?;
        if host.is_empty() || username.is_empty() {
            return Err(bad());
        }
        Ok((
            normalise_host(host),
            Credentials {
                username: username.to_owned(),
                password: password.to_owned(),
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
        message: super::describe_reqwest(&e),
        status: None,
        transient: true,
        retry_after: None,
    })?;
    let status = response.status();
    if status == reqwest::StatusCode::UNAUTHORIZED || status == reqwest::StatusCode::FORBIDDEN {
        return Err(Error::Auth {
            what,
            message: format!(
                "the token server refused {} ({status}); check --registry-auth or ~/.docker/config.json",
                if credentials.is_some() {
                    "our credentials"
                } else {
                    "anonymous access"
                }
            ),
        });
    }
    if !status.is_success() {
        return Err(super::status_error(&what, response).await);
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
        let (host, c) = Credentials::parse_flag("index.docker.io=me:pa:ss").unwrap();
        assert_eq!(host, "docker.io");
        assert_eq!(c.password, "pa:ss");
        assert!(Credentials::parse_flag("nohost").is_err());

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.json");
        std::fs::write(
            &path,
            r#"{"auths":{"https://index.docker.io/v1/":{"auth":"dXNlcjpwYXNz"},"127.0.0.1:5000":{"username":"AWS","password":"t"}},"credsStore":"desktop"}"#,
        )
        .unwrap();
        let creds = read_docker_config(&path).unwrap();
        assert_eq!(creds["docker.io"].username, "user");
        assert_eq!(creds["127.0.0.1:5000"].password, "t");
        std::fs::write(&path, "{").unwrap();
        assert!(read_docker_config(&path).is_err());
        assert!(
            read_docker_config(&dir.path().join("missing"))
                .unwrap()
                .is_empty()
        );
    }
}
