//! The containers of the four tasks — api (migrate, api, worker, plugin-daemon), beat
//! (migrate, beat), sandbox and web — with their environment as the Dify version of the bundle
//! reads it: Dify's settings, secrets injected by ECS (never plain text), the offline switches,
//! and the operator's extra variables. Every upstream behaviour relied on is cited next to it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::params;
use crate::stack::sub;

/// An extra environment variable: a plain value, an SSM parameter, or a Secrets Manager
/// secret (optionally one JSON field of it).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged, deny_unknown_fields)]
pub enum EnvValue {
    Plain(String),
    Ssm {
        ssm: String,
    },
    Secret {
        secret: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        field: Option<String>,
    },
}

/// Extra variables per container name (`api`, `worker`, `beat`, `sandbox`, `plugin-daemon`,
/// `web`), or `all`.
pub type ExtraEnvironment = BTreeMap<String, BTreeMap<String, EnvValue>>;

/// Checks the operator's extra variables before anything is built from them: names are
/// environment variable names (`[A-Za-z_][A-Za-z0-9_]*`, as ECS and the shell take them);
/// SSM and Secrets Manager references are not empty; and no plain value replaces a
/// variable the stack injects as a secret (that would put it in the template in clear).
pub fn check_extra(extra: &ExtraEnvironment) -> std::result::Result<(), String> {
    let empty = ExtraEnvironment::new();
    let version = DifyVersion(u32::MAX, 0, 0);
    let mut containers = api_task(version, &empty, &[]);
    containers.extend(beat_task(version, &empty));
    containers.push(sandbox_task(&empty));
    containers.push(web_task(version, &empty));
    for (scope, variables) in extra {
        for (key, value) in variables {
            let shown = crate::units::escape(key);
            let valid = key
                .bytes()
                .next()
                .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
                && key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
                && key.len() <= 255;
            if !valid {
                return Err(format!(
                    "[environment.{scope}] `{shown}` is not a variable name (letters, digits and \
                     `_`, not starting with a digit)"
                ));
            }
            match value {
                EnvValue::Ssm { ssm } if ssm.trim().is_empty() => {
                    return Err(format!("[environment.{scope}] {shown}: `ssm` is empty"));
                }
                EnvValue::Secret { secret, field }
                    if secret.trim().is_empty()
                        || field.as_deref().is_some_and(|f| f.trim().is_empty()) =>
                {
                    return Err(format!(
                        "[environment.{scope}] {shown}: `secret` (or its `field`) is empty"
                    ));
                }
                EnvValue::Plain(_) => {
                    if let Some(injected) = containers.iter().find(|c| {
                        (scope == "all" || scope == c.name) && c.secrets.contains_key(key)
                    }) {
                        return Err(format!(
                            "[environment.{scope}] {shown}: the stack injects it into `{}` from \
                             Secrets Manager; a plain value would be written in clear into the \
                             signed template. Give it as {{ secret = \"ARN\", field = \"KEY\" }} \
                             or {{ ssm = \"/NAME\" }}, or leave it to the stack",
                            injected.name
                        ));
                    }
                }
                _ => {}
            }
        }
    }
    Ok(())
}

pub const CONTAINERS: [&str; 7] = [
    "migrate",
    "api",
    "worker",
    "beat",
    "sandbox",
    "plugin-daemon",
    "web",
];

/// Outbound calls the Dify API (api, worker, beat) makes by default, switched off: a closed
/// VPC has nowhere to send them. Each is read by every supported version (1.13.3 and 1.16.1
/// `api/configs/feature/__init__.py` and `hosted_service/__init__.py`, langgenius/dify).
pub const OFFLINE_SWITCHES: [(&str, &str); 5] = [
    ("MARKETPLACE_ENABLED", "false"),
    ("CHECK_UPDATE_URL", ""),
    ("HOSTED_FETCH_APP_TEMPLATES_MODE", "builtin"),
    ("HOSTED_FETCH_PIPELINE_TEMPLATES_MODE", "builtin"),
    ("ENABLE_CHECK_UPGRADABLE_PLUGIN_TASK", "false"),
];

/// Switches of the Dify API that exist only from 1.16.1 (langgenius/dify 1.16.1
/// `api/configs/feature/__init__.py`: `CREATORS_PLATFORM_FEATURES_ENABLED` l.364, default
/// true, publishes to creators.dify.ai; `DISABLE_TELEMETRY` l.830, the otel.dify.ai heartbeat;
/// `ENABLE_COLLABORATION_MODE` l.1507, default true). Collaboration is off: it needs the
/// browser to reach a Socket.IO endpoint (`NEXT_PUBLIC_SOCKET_URL`, web/docker/entrypoint.sh
/// l.22) with sticky sessions across api tasks; off, the editor works as in 1.13 (one editor).
pub const OFFLINE_SWITCHES_1_16: [(&str, &str); 3] = [
    ("CREATORS_PLATFORM_FEATURES_ENABLED", "false"),
    ("DISABLE_TELEMETRY", "true"),
    ("ENABLE_COLLABORATION_MODE", "false"),
];

/// The web front end's switches: website importers that call Jina, Firecrawl or WaterCrawl on
/// the internet (web/docker/entrypoint.sh l.37-39 in 1.13.3, l.41-43 in 1.16.1: `${…:-true}`).
/// Next.js telemetry is off in the image already (web/Dockerfile `NEXT_TELEMETRY_DISABLED=1`,
/// l.52 in 1.13.3, l.59 in 1.16.1).
pub const WEB_SWITCHES: [(&str, &str); 3] = [
    ("ENABLE_WEBSITE_JINAREADER", "false"),
    ("ENABLE_WEBSITE_FIRECRAWL", "false"),
    ("ENABLE_WEBSITE_WATERCRAWL", "false"),
];

/// The Dify version the template is generated for, as far as settings depend on it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct DifyVersion(pub u32, pub u32, pub u32);

impl DifyVersion {
    /// `1.17.1` → (1, 17, 1); anything unparsable counts as the newest.
    pub fn parse(text: &str) -> DifyVersion {
        let mut parts = text
            .trim_start_matches('v')
            .split(['.', '-', '+'])
            .map(|p| p.parse::<u32>().ok());
        match (
            parts.next().flatten(),
            parts.next().flatten(),
            parts.next().flatten(),
        ) {
            (Some(a), Some(b), c) => DifyVersion(a, b, c.unwrap_or(0)),
            _ => DifyVersion(u32::MAX, 0, 0),
        }
    }

    pub fn at_least(self, major: u32, minor: u32, patch: u32) -> bool {
        self >= DifyVersion(major, minor, patch)
    }
}

/// One container definition in the making.
pub struct Container {
    pub name: &'static str,
    /// The image role (`api` for migrate, api, worker and beat).
    pub role: &'static str,
    pub ports: Vec<u16>,
    pub health: Option<&'static str>,
    pub environment: BTreeMap<String, Value>,
    pub secrets: BTreeMap<String, Value>,
    /// `(volume, path in the container)`.
    pub mounts: Vec<(&'static str, &'static str)>,
    /// `false` for a one-shot container whose exit does not stop the task.
    pub essential: bool,
    /// Replaces the image's entry point and command.
    pub entry_point: Option<Vec<&'static str>>,
    /// Containers of the same task that must have exited successfully before this one starts.
    pub after_success: Vec<&'static str>,
}

/// The EFS volume holding the plugin daemon's working directory (each plugin's venv), so a
/// new task finds the plugins installed instead of installing them all again.
pub const PLUGIN_VOLUME: &str = "plugin-cwd";
pub const PLUGIN_WORKING_PATH: &str = "/app/storage/cwd";

/// Secrets of the stack, by purpose: logical IDs of `AWS::SecretsManager::Secret`s.
pub const DB_SECRET: &str = "DatabaseSecret";
pub const REDIS_SECRET: &str = "RedisAuthSecret";
pub const BROKER_SECRET: &str = "CeleryBrokerSecret";
pub const SECRET_KEY_SECRET: &str = "DifySecretKey";
pub const SANDBOX_SECRET: &str = "SandboxApiKey";
pub const DAEMON_SECRET: &str = "PluginDaemonKey";
pub const INNER_SECRET: &str = "PluginInnerApiKey";

/// The one-shot container that runs the schema migrations before any api-image container of
/// its task starts (they wait for it with `Condition: SUCCESS`).
pub const MIGRATE: &str = "migrate";

/// Runs `flask upgrade-db` until this container itself has run it. The command takes a Redis
/// lock without waiting and, when another task holds it, prints "Database migration skipped"
/// and exits 0 while that task is still migrating; it prints "Database migration successful!"
/// (a no-op upgrade when the schema is current) or exits 1 on failure (langgenius/dify
/// `api/commands/system.py` `upgrade_db`, 1.13.3 l.125-155 and 1.16.1 l.146-167). So a task
/// never starts its api, worker or beat on a schema another task is still changing. The
/// image's own "pure migration mode" (`MIGRATION_ENABLED=true MODE=migration`,
/// `api/docker/entrypoint.sh`) would stop at "skipped".
const MIGRATE_SCRIPT: &str = "for attempt in $(seq 1 120); do \
flask upgrade-db 2>&1 | tee /tmp/upgrade-db.log; code=${PIPESTATUS[0]}; \
[ $code -eq 0 ] || exit $code; \
grep -q 'migration skipped' /tmp/upgrade-db.log || exit 0; sleep 5; \
done; echo 'another task held the migration lock for 10 minutes' >&2; exit 1";

fn whole(secret: &str) -> Value {
    json!({ "Ref": secret })
}

fn field(secret: &str, key: &str) -> Value {
    sub(&format!("${{{secret}}}:{key}::"))
}

/// The URL the api answers at inside its own task (the plugin daemon shares the task's
/// network namespace).
const API_IN_TASK: &str = "http://localhost:5001";

impl Container {
    fn new(name: &'static str, role: &'static str) -> Self {
        Container {
            name,
            role,
            ports: Vec::new(),
            health: None,
            environment: BTreeMap::new(),
            secrets: BTreeMap::new(),
            mounts: Vec::new(),
            essential: true,
            entry_point: None,
            after_success: Vec::new(),
        }
    }

    fn env(&mut self, key: &str, value: Value) -> &mut Self {
        self.environment.insert(key.to_owned(), value);
        self
    }

    fn secret(&mut self, key: &str, value: Value) -> &mut Self {
        self.secrets.insert(key.to_owned(), value);
        self
    }

    /// The settings every api-image container (migrate, api, worker, beat) reads: the
    /// database, pgvector (in the same database: no custom resource needed to create another
    /// one), the cache, storage, the sandbox and plugin daemon, the public URLs.
    fn dify_backend(&mut self, version: DifyVersion) -> &mut Self {
        for (key, value) in OFFLINE_SWITCHES {
            self.env(key, json!(value));
        }
        if version.at_least(1, 16, 1) {
            for (key, value) in OFFLINE_SWITCHES_1_16 {
                self.env(key, json!(value));
            }
        }
        for (key, value) in [
            ("DB_DATABASE", json!("main")),
            // TLS to Aurora: psycopg2 takes `sslmode` from the URI query, which Dify builds
            // from DB_EXTRAS (api/configs/middleware/__init__.py, `SQLALCHEMY_DATABASE_URI`,
            // 1.13.3 l.158-168, 1.16.1 l.181-191). `require` encrypts; `verify-full` would need
            // the RDS CA bundle, which the api image does not carry.
            ("DB_EXTRAS", json!("sslmode=require")),
            // Aurora restarts, fails over and is patched: test pooled connections before use
            // (`SQLALCHEMY_POOL_PRE_PING`, default false, middleware/__init__.py l.190 in 1.13.3).
            ("SQLALCHEMY_POOL_PRE_PING", json!("true")),
            ("PGVECTOR_DATABASE", json!("main")),
            ("VECTOR_STORE", json!("pgvector")),
            ("REDIS_DB", json!("0")),
            // Verify Valkey's certificate (Amazon-issued, in the image's CA store): Dify's own
            // default is CERT_NONE (configs/middleware/cache/redis_config.py l.40-43, 1.13.3;
            // used by extensions/ext_redis.py and ext_celery.py).
            ("REDIS_SSL_CERT_REQS", json!("CERT_REQUIRED")),
            ("STORAGE_TYPE", json!("s3")),
            ("S3_BUCKET_NAME", sub("${StorageBucket}")),
            ("S3_REGION", sub("${AWS::Region}")),
            ("S3_USE_AWS_MANAGED_IAM", json!("true")),
            // The sandbox runs in its own task, behind the load balancer's internal port.
            (
                "CODE_EXECUTION_ENDPOINT",
                sub(&format!("http://${{LoadBalancer.DNSName}}:{SANDBOX_PORT}")),
            ),
            ("PLUGIN_DAEMON_URL", json!("http://localhost:5002")),
            // Packages up to the daemon's own limit (compose sets 52428800 on api and worker,
            // docker/docker-compose.yaml 1.13.3 l.609 and 1.16.1 l.237; the api's default is
            // 15728640, configs/feature/__init__.py l.253).
            ("PLUGIN_MAX_PACKAGE_SIZE", json!("52428800")),
            ("CONSOLE_WEB_URL", params::base_url()),
            ("CONSOLE_API_URL", params::base_url()),
            ("SERVICE_API_URL", params::base_url()),
            ("APP_WEB_URL", params::base_url()),
            ("TRIGGER_URL", params::base_url()),
            ("FILES_URL", params::base_url()),
            // URLs handed to the plugin daemon (same task) point at the api directly, not
            // through the load balancer (configs/feature/__init__.py `INTERNAL_FILES_URL`,
            // 1.13.3 l.337, 1.16.1 l.427; compose's example is http://api:5001).
            ("INTERNAL_FILES_URL", json!(API_IN_TASK)),
            (
                "ENDPOINT_URL_TEMPLATE",
                json!({ "Fn::Join": ["", [params::base_url(), "/e/{hook_id}"]] }),
            ),
            ("LOG_LEVEL", json!("INFO")),
        ] {
            self.env(key, value);
        }
        self.database(["DB_USERNAME", "DB_PASSWORD", "DB_HOST", "DB_PORT"])
            .database([
                "PGVECTOR_USER",
                "PGVECTOR_PASSWORD",
                "PGVECTOR_HOST",
                "PGVECTOR_PORT",
            ])
            .redis()
            .secret("CELERY_BROKER_URL", whole(BROKER_SECRET))
            .secret("SECRET_KEY", whole(SECRET_KEY_SECRET))
            .secret("CODE_EXECUTION_API_KEY", whole(SANDBOX_SECRET))
            .secret("PLUGIN_DAEMON_KEY", whole(DAEMON_SECRET))
            .secret("INNER_API_KEY_FOR_PLUGIN", whole(INNER_SECRET))
    }

    /// The database connection from its secret, under the variable names `[user, password,
    /// host, port]`.
    fn database(&mut self, names: [&str; 4]) -> &mut Self {
        for (key, json_key) in names
            .into_iter()
            .zip(["username", "password", "host", "port"])
        {
            self.secret(key, field(DB_SECRET, json_key));
        }
        self
    }

    /// Valkey over TLS with its auth token.
    fn redis(&mut self) -> &mut Self {
        self.env("REDIS_HOST", sub("${Redis.PrimaryEndPoint.Address}"))
            .env("REDIS_PORT", sub("${Redis.PrimaryEndPoint.Port}"))
            .env("REDIS_USE_SSL", json!("true"))
            .secret("REDIS_PASSWORD", field(REDIS_SECRET, "token"))
    }

    /// Waits for the migrations of its task.
    fn after_migrations(&mut self) -> &mut Self {
        self.after_success.push(MIGRATE);
        self
    }

    /// Adds the operator's extra variables for this container.
    fn extra(&mut self, extra: &ExtraEnvironment) {
        for scope in ["all", self.name] {
            for (key, value) in extra.get(scope).into_iter().flatten() {
                match value {
                    EnvValue::Plain(text) => {
                        self.secrets.remove(key);
                        self.env(key, json!(text));
                    }
                    EnvValue::Ssm { ssm } => {
                        self.environment.remove(key);
                        self.secret(key, ssm_arn(ssm));
                    }
                    EnvValue::Secret { secret, field } => {
                        self.environment.remove(key);
                        let from = match field {
                            Some(field) => format!("{secret}:{field}::"),
                            None => secret.clone(),
                        };
                        self.secret(key, json!(from));
                    }
                }
            }
        }
    }

    /// The ECS container definition.
    pub fn definition(&self, digest_hex: &str) -> Value {
        let environment: Vec<Value> = self
            .environment
            .iter()
            .map(|(k, v)| json!({ "Name": k, "Value": v }))
            .collect();
        let secrets: Vec<Value> = self
            .secrets
            .iter()
            .map(|(k, v)| json!({ "Name": k, "ValueFrom": v }))
            .collect();
        let ports: Vec<Value> = self
            .ports
            .iter()
            .map(|p| json!({ "ContainerPort": p, "Protocol": "tcp" }))
            .collect();
        let mut definition = json!({
            "Name": self.name,
            "Image": sub(&format!(
                "${{AWS::AccountId}}.dkr.ecr.${{AWS::Region}}.${{AWS::URLSuffix}}/${{{}}}@sha256:{digest_hex}",
                params::repository(self.role)
            )),
            "Essential": self.essential,
            "Environment": environment,
            "Secrets": secrets,
            "PortMappings": ports,
            "MountPoints": self
                .mounts
                .iter()
                .map(|(volume, path)| json!({ "SourceVolume": volume, "ContainerPath": path }))
                .collect::<Vec<Value>>(),
            "LogConfiguration": {
                "LogDriver": "awslogs",
                "Options": {
                    "awslogs-group": { "Ref": log_group(self.name) },
                    "awslogs-region": { "Ref": "AWS::Region" },
                    "awslogs-stream-prefix": self.name,
                },
            },
        });
        if let Some(command) = self.health {
            definition["HealthCheck"] = json!({
                "Command": ["CMD-SHELL", command],
                "Interval": 15,
                "Timeout": 5,
                "Retries": 5,
                "StartPeriod": 300,
            });
        }
        if let Some(entry_point) = &self.entry_point {
            definition["EntryPoint"] = json!(entry_point);
        }
        if !self.after_success.is_empty() {
            definition["DependsOn"] = self
                .after_success
                .iter()
                .map(|c| json!({ "ContainerName": c, "Condition": "SUCCESS" }))
                .collect();
        }
        definition
    }
}

/// The logical ID of a container's log group (`plugin-daemon` → `PluginDaemonLogs`).
pub fn log_group(container: &str) -> String {
    params::repository(container).replace("Repository", "Logs")
}

pub fn ssm_arn(name: &str) -> Value {
    sub(&format!(
        "arn:${{AWS::Partition}}:ssm:${{AWS::Region}}:${{AWS::AccountId}}:parameter/{}",
        name.trim_start_matches('/')
    ))
}

/// The port the load balancer forwards to the sandbox on, reachable only from the api task.
pub const SANDBOX_PORT: u16 = 8194;
/// The port the load balancer forwards to the api on for the web task's server-side calls.
pub const INTERNAL_API_PORT: u16 = 5001;

fn migrate(version: DifyVersion) -> Container {
    let mut migrate = Container::new(MIGRATE, "api");
    migrate.dify_backend(version);
    migrate.essential = false;
    migrate.entry_point = Some(vec!["/bin/bash", "-c", MIGRATE_SCRIPT]);
    migrate
}

/// The api task's containers: migrate, api, worker and the plugin daemon.
pub fn api_task(
    version: DifyVersion,
    extra: &ExtraEnvironment,
    daemon: &[(String, String)],
) -> Vec<Container> {
    let mut api = Container::new("api", "api");
    api.dify_backend(version)
        .env("MODE", json!("api"))
        .after_migrations();
    api.ports = vec![5001];
    api.health = Some("curl -f http://localhost:5001/health || exit 1");

    let mut worker = Container::new("worker", "api");
    worker
        .dify_backend(version)
        .env("MODE", json!("worker"))
        // The entrypoint's default is one (`-c ${CELERY_WORKER_AMOUNT:-1}`,
        // api/docker/entrypoint.sh l.31, 1.13.3 and 1.16.1); compose sets 4 (1.16.1
        // docker/.env.example l.69).
        .env("CELERY_WORKER_AMOUNT", json!("4"))
        .after_migrations();

    let mut daemon_container = Container::new("plugin-daemon", "plugin-daemon");
    for (key, value) in [
        ("DB_DATABASE", json!("dify_plugin")),
        // TLS to Aurora (`DB_SSL_MODE`, validated `oneof=disable require`, default disable:
        // langgenius/dify-plugin-daemon internal/types/app/config.go and default.go, 0.5.3
        // and 0.6.10).
        ("DB_SSL_MODE", json!("require")),
        ("SERVER_PORT", json!("5002")),
        // Remote plugin debugging listens on a port of its own that nothing outside the task
        // reaches, and the console would show developers `localhost`: off (config.go
        // `PLUGIN_REMOTE_INSTALLING_ENABLED`, default true; with it off the daemon needs no
        // HOST/PORT: `Validate`, l.234 in 0.5.3, l.291 in 0.6.10).
        ("PLUGIN_REMOTE_INSTALLING_ENABLED", json!("false")),
        ("PLUGIN_WORKING_PATH", json!(PLUGIN_WORKING_PATH)),
        ("DIFY_INNER_API_URL", json!(API_IN_TASK)),
        ("PLUGIN_STORAGE_TYPE", json!("aws_s3")),
        ("PLUGIN_STORAGE_OSS_BUCKET", sub("${StorageBucket}")),
        ("PLUGIN_INSTALLED_PATH", json!("plugins")),
        ("S3_USE_AWS", json!("true")),
        ("S3_USE_AWS_MANAGED_IAM", json!("true")),
        ("AWS_REGION", sub("${AWS::Region}")),
        ("FORCE_VERIFYING_SIGNATURE", json!("true")),
        // Below the hard 10-minute context of the dependency install (dify-plugin-daemon
        // internal/core/local_runtime/setup_python_environment.go: l.98 in 0.5.3, l.166 in
        // 0.6.10), so this inactivity limit can fire first.
        ("PYTHON_ENV_INIT_TIMEOUT", json!("540")),
    ] {
        daemon_container.env(key, value);
    }
    if version.at_least(1, 16, 1) {
        // No probing of pypi.org: `PIP_MIRROR_AUTO_DETECT`, default true, first in daemon
        // 0.6.3 (internal/types/app/config.go), the daemon Dify 1.16.1 pairs with
        // (docker/docker-compose.yaml l.573); 0.5.3 (Dify 1.13.3) has no such setting.
        daemon_container.env("PIP_MIRROR_AUTO_DETECT", json!("false"));
    }
    // REDIS_SSL_CERT_REQS stays unset on the daemon: empty already verifies against the system
    // CAs, and CERT_REQUIRED refuses to start without a CA file (config.go `RedisTLSConfig`,
    // 0.5.3 l.315-334, 0.6.10 l.392-411).
    daemon_container
        .database(["DB_USERNAME", "DB_PASSWORD", "DB_HOST", "DB_PORT"])
        .redis()
        .secret("SERVER_KEY", whole(DAEMON_SECRET))
        .secret("DIFY_INNER_API_KEY", whole(INNER_SECRET));
    for (key, value) in daemon {
        daemon_container.env(key, json!(value));
    }
    daemon_container.ports = vec![5002];
    daemon_container.mounts = vec![(PLUGIN_VOLUME, PLUGIN_WORKING_PATH)];

    let mut containers = vec![migrate(version), api, worker, daemon_container];
    for container in &mut containers {
        container.extra(extra);
    }
    containers
}

/// The beat task: migrate, then beat. Its own service runs exactly one.
pub fn beat_task(version: DifyVersion, extra: &ExtraEnvironment) -> Vec<Container> {
    let mut beat = Container::new("beat", "api");
    beat.dify_backend(version)
        .env("MODE", json!("beat"))
        .after_migrations();
    let mut containers = vec![migrate(version), beat];
    for container in &mut containers {
        container.extra(extra);
    }
    containers
}

/// The sandbox task's one container. User code runs here, in a task of its own with no task
/// role and a security group that admits nothing from it (see `balancer::security_groups`).
/// `ENABLE_NETWORK` must stay true: Dify asks for `enable_network: True` on every run
/// (langgenius/dify api/core/helper/code_executor/code_executor.py l.85 in 1.13.3, l.89 in
/// 1.16.1) and dify-sandbox refuses such a run when its configuration disables the network
/// (langgenius/dify-sandbox internal/service/check.go `checkOptions`, 0.2.14 and 0.2.15).
pub fn sandbox_task(extra: &ExtraEnvironment) -> Container {
    let mut sandbox = Container::new("sandbox", "sandbox");
    sandbox
        .env("GIN_MODE", json!("release"))
        .env("WORKER_TIMEOUT", json!("15"))
        .env("ENABLE_NETWORK", json!("true"))
        .secret("API_KEY", whole(SANDBOX_SECRET));
    sandbox.ports = vec![SANDBOX_PORT];
    // The image installs curl (langgenius/dify-sandbox docker/templates/production.dockerfile
    // l.18 in 0.2.14, l.21 in 0.2.15); `/health` answers without the API key
    // (internal/controller/router.go l.19).
    sandbox.health = Some("curl -f http://localhost:8194/health || exit 1");
    sandbox.extra(extra);
    sandbox
}

/// The web task's one container.
pub fn web_task(version: DifyVersion, extra: &ExtraEnvironment) -> Container {
    let mut web = Container::new("web", "web");
    for (key, value) in WEB_SWITCHES {
        web.env(key, json!(value));
    }
    web.env("CONSOLE_API_URL", params::base_url())
        .env("APP_API_URL", params::base_url())
        // Next.js standalone listens on $HOSTNAME, which Fargate sets to the task's own name
        // (web/Dockerfile sets PORT=3000 and no HOSTNAME: 1.13.3 l.47-51, 1.16.1 l.53-59).
        .env("HOSTNAME", json!("0.0.0.0"));
    if version.at_least(1, 16, 0) {
        // Server-side rendering calls the api at `SERVER_CONSOLE_API_URL || CONSOLE_API_URL`
        // (web/config/server.ts l.7, 1.16.1): through the load balancer's internal port,
        // which admits only the web task, whatever the public URL, certificate or client
        // networks are.
        web.env(
            "SERVER_CONSOLE_API_URL",
            sub(&format!(
                "http://${{LoadBalancer.DNSName}}:{INTERNAL_API_PORT}"
            )),
        );
    }
    web.ports = vec![3000];
    // 127.0.0.1, not localhost: BusyBox wget may try ::1 first.
    web.health = Some("wget -q --spider http://127.0.0.1:3000/ || exit 1");
    web.extra(extra);
    web
}

#[cfg(test)]
mod checks {
    use super::*;

    fn parse(text: &str) -> std::result::Result<ExtraEnvironment, String> {
        #[derive(Deserialize)]
        struct File {
            environment: ExtraEnvironment,
        }
        let file: File = toml::from_str(text).map_err(|e| e.to_string())?;
        check_extra(&file.environment)?;
        Ok(file.environment)
    }

    #[test]
    fn extra_variables_are_checked_where_read() {
        assert!(parse("[environment.api]\nLOG_LEVEL = \"DEBUG\"\nMAIL = { ssm = \"/m\" }").is_ok());
        let plain_secret = parse("[environment.api]\nSECRET_KEY = \"plaintext\"").unwrap_err();
        assert!(plain_secret.contains("SECRET_KEY") && plain_secret.contains("Secrets Manager"));
        assert!(parse("[environment.all]\nDB_PASSWORD = \"x\"").is_err());
        assert!(parse("[environment.plugin-daemon]\nSERVER_KEY = \"x\"").is_err());
        // The same name from Secrets Manager is the operator's choice.
        assert!(parse("[environment.api]\nSECRET_KEY = { secret = \"arn:x\" }").is_ok());
        for bad in ["\"BAD KEY=1\"", "\"\"", "\"1X\"", "\"A-B\""] {
            let text = format!("[environment.api]\n{bad} = \"v\"");
            assert!(parse(&text).is_err(), "{bad}");
        }
        assert!(parse("[environment.api]\nX = { ssm = \"\" }").is_err());
        assert!(parse("[environment.api]\nX = { ssm = \"/a\", zzz = 1 }").is_err());
    }
}
