//! A client of Dify's console API: first-time setup of the admin account, login (cookies and
//! CSRF token, or a bearer token on older releases), and installing plugin packages —
//! upload, install, poll the task — skipping what is already installed. Secrets are passed
//! in by the caller (taken from the environment), never from the command line.

use std::time::{Duration, Instant};

use base64::Engine as _;
use reqwest::header::{self, HeaderMap, HeaderValue};
use serde::Serialize;
use serde_json::{Value, json};

use crate::error::{Error, Result};

pub struct Console {
    http: reqwest::Client,
    base: String,
    auth: HeaderMap,
}

/// What happened to one package.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub enum PluginOutcome {
    AlreadyInstalled,
    Installed,
}

fn api_error(what: &str, e: reqwest::Error) -> Error {
    Error::invalid(format!("Dify console API, {what}: {e}"))
}

async fn json_of(what: &str, response: reqwest::Response) -> Result<Value> {
    let status = response.status();
    let text = response.text().await.map_err(|e| api_error(what, e))?;
    if !status.is_success() {
        let detail: String = text.chars().take(300).collect();
        return Err(Error::invalid(format!(
            "Dify console API, {what}: {status}: {}",
            detail.trim()
        )));
    }
    serde_json::from_str(&text)
        .map_err(|e| Error::invalid(format!("Dify console API, {what}: not JSON: {e}")))
}

impl Console {
    pub fn new(base_url: &str) -> Result<Console> {
        let http = crate::net::http::client(Duration::from_secs(300))?;
        Ok(Console {
            http,
            base: format!("{}/console/api", base_url.trim_end_matches('/')),
            auth: HeaderMap::new(),
        })
    }

    fn url(&self, path: &str) -> String {
        format!("{}/{path}", self.base)
    }

    /// Creates the admin account unless setup is already done; returns whether it did.
    pub async fn setup(&self, email: &str, name: &str, password: &str) -> Result<bool> {
        let state = json_of(
            "GET setup",
            self.http
                .get(self.url("setup"))
                .send()
                .await
                .map_err(|e| api_error("GET setup", e))?,
        )
        .await?;
        if state["step"] == "finished" {
            return Ok(false);
        }
        json_of(
            "POST setup",
            self.http
                .post(self.url("setup"))
                .json(&json!({ "email": email, "name": name, "password": password }))
                .send()
                .await
                .map_err(|e| api_error("POST setup", e))?,
        )
        .await?;
        Ok(true)
    }

    /// Logs in. Newer releases answer with cookies (access and CSRF tokens, named
    /// `__Host-…` when Dify is served over HTTPS without a cookie domain: langgenius/dify
    /// 1.13.3 `api/libs/token.py` `_real_cookie_name`), older ones with a bearer token in the
    /// body. The password goes base64-encoded first: Dify >= 1.11 decodes it on `/login`
    /// (langgenius/dify PR #29659; 1.13.3 `api/controllers/console/wraps.py`
    /// `decrypt_password_field`, `api/libs/encryption.py` `FieldEncryption.decrypt_field`)
    /// and answers 401 to a plain one; only a release that refuses the encoded form gets the
    /// plain password on a second try. Every failed try counts against Dify's login rate
    /// limit, so the form current releases expect goes first.
    pub async fn login(&mut self, email: &str, password: &str) -> Result<()> {
        let encoded = base64::engine::general_purpose::STANDARD.encode(password);
        let mut last = None;
        for attempt in [encoded.as_str(), password] {
            let response = self
                .http
                .post(self.url("login"))
                .json(&json!({ "email": email, "password": attempt, "remember_me": false }))
                .send()
                .await
                .map_err(|e| api_error("POST login", e))?;
            let cookies: Vec<(String, String)> = response
                .headers()
                .get_all(header::SET_COOKIE)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .filter_map(|v| v.split(';').next())
                .filter_map(|kv| kv.split_once('='))
                .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
                .collect();
            match json_of("POST login", response).await {
                Ok(body) if body["result"] == "success" => {
                    let mut auth = HeaderMap::new();
                    if let Some(token) = body["data"]["access_token"].as_str() {
                        let value = HeaderValue::from_str(&format!("Bearer {token}"))
                            .map_err(|e| Error::invalid(format!("login token: {e}")))?;
                        auth.insert(header::AUTHORIZATION, value);
                    }
                    if !cookies.is_empty() {
                        let jar: Vec<String> =
                            cookies.iter().map(|(k, v)| format!("{k}={v}")).collect();
                        let value = HeaderValue::from_str(&jar.join("; "))
                            .map_err(|e| Error::invalid(format!("login cookies: {e}")))?;
                        auth.insert(header::COOKIE, value);
                    }
                    if let Some((_, csrf)) = cookies.iter().find(|(k, _)| k.ends_with("csrf_token"))
                    {
                        let value = HeaderValue::from_str(csrf)
                            .map_err(|e| Error::invalid(format!("CSRF token: {e}")))?;
                        auth.insert("X-CSRF-Token", value);
                    }
                    self.auth = auth;
                    return Ok(());
                }
                Ok(body) => last = Some(Error::invalid(format!("login refused: {body}"))),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| Error::invalid("login failed")))
    }

    /// Unique identifiers of the plugins installed in the current workspace.
    pub async fn installed(&self) -> Result<Vec<String>> {
        let body = json_of(
            "GET plugin list",
            self.http
                .get(self.url("workspaces/current/plugin/list"))
                .query(&[("page", "1"), ("page_size", "256")])
                .headers(self.auth.clone())
                .send()
                .await
                .map_err(|e| api_error("GET plugin list", e))?,
        )
        .await?;
        Ok(body["plugins"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|p| p["plugin_unique_identifier"].as_str().map(str::to_owned))
            .collect())
    }

    /// Uploads, installs and waits for `package` unless `identifier` is installed already.
    pub async fn install_package(
        &self,
        identifier: &str,
        package: Vec<u8>,
        limit: Duration,
    ) -> Result<PluginOutcome> {
        if self.installed().await?.iter().any(|i| i == identifier) {
            return Ok(PluginOutcome::AlreadyInstalled);
        }
        let part = reqwest::multipart::Part::bytes(package)
            .file_name("plugin.difypkg")
            .mime_str("application/octet-stream")
            .map_err(|e| api_error("upload", e))?;
        let uploaded = json_of(
            "upload package",
            self.http
                .post(self.url("workspaces/current/plugin/upload/pkg"))
                .headers(self.auth.clone())
                .multipart(reqwest::multipart::Form::new().part("pkg", part))
                .send()
                .await
                .map_err(|e| api_error("upload package", e))?,
        )
        .await?;
        let uploaded_id = uploaded["unique_identifier"].as_str().unwrap_or_default();
        if uploaded_id != identifier {
            return Err(Error::invalid(format!(
                "Dify identifies the uploaded package as `{uploaded_id}`, not {identifier}; refusing to install it"
            )));
        }
        let started = json_of(
            "install package",
            self.http
                .post(self.url("workspaces/current/plugin/install/pkg"))
                .headers(self.auth.clone())
                .json(&json!({ "plugin_unique_identifiers": [identifier] }))
                .send()
                .await
                .map_err(|e| api_error("install package", e))?,
        )
        .await?;
        if started["all_installed"] == true {
            return Ok(PluginOutcome::Installed);
        }
        let task = started["task_id"]
            .as_str()
            .ok_or_else(|| Error::invalid(format!("Dify started no install task: {started}")))?;
        let begun = Instant::now();
        loop {
            let state = json_of(
                "install task",
                self.http
                    .get(self.url(&format!("workspaces/current/plugin/tasks/{task}")))
                    .headers(self.auth.clone())
                    .send()
                    .await
                    .map_err(|e| api_error("install task", e))?,
            )
            .await?;
            let task_state = &state["task"];
            match task_state["status"].as_str().unwrap_or_default() {
                "success" => return Ok(PluginOutcome::Installed),
                "failed" => {
                    let reasons: Vec<String> = task_state["plugins"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(|p| p["message"].as_str().map(str::to_owned))
                        .filter(|m| !m.is_empty())
                        .collect();
                    return Err(Error::invalid(format!(
                        "installing {identifier} failed: {}",
                        if reasons.is_empty() {
                            "no reason given".to_owned()
                        } else {
                            reasons.join("; ")
                        }
                    )));
                }
                _ if begun.elapsed() > limit => {
                    return Err(Error::invalid(format!(
                        "installing {identifier} did not finish in {}s (task {task}); the plugin daemon's log tells why",
                        limit.as_secs()
                    )));
                }
                _ => tokio::time::sleep(Duration::from_secs(2)).await,
            }
        }
    }
}

/// The admin account to create (first time) and log in with.
pub struct Admin {
    pub email: String,
    pub name: String,
    /// From the environment, never from the command line.
    pub password: String,
}

/// Sets up the admin account when Dify has none, logs in, and installs every package not
/// installed yet. Returns `(identifier, outcome)` for each.
pub async fn install_plugins(
    url: &str,
    admin: &Admin,
    packages: Vec<(String, Vec<u8>)>,
    limit: Duration,
) -> Result<(bool, Vec<(String, PluginOutcome)>)> {
    let mut console = Console::new(url)?;
    let created = console
        .setup(&admin.email, &admin.name, &admin.password)
        .await?;
    console.login(&admin.email, &admin.password).await?;
    let mut outcomes = Vec::new();
    for (identifier, bytes) in packages {
        let outcome = console.install_package(&identifier, bytes, limit).await?;
        outcomes.push((identifier, outcome));
    }
    Ok((created, outcomes))
}
