//! The containers of the two tasks — api (api, worker, beat, sandbox, plugin-daemon) and web
//! — with their environment: Dify's settings, secrets injected by ECS (never plain text),
//! the offline switches on every container, and the operator's extra variables.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::params;
use crate::stack::sub;

/// An extra environment variable: a plain value, an SSM parameter, or a Secrets Manager
/// secret (optionally one JSON field of it).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
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

pub const CONTAINERS: [&str; 6] = ["api", "worker", "beat", "sandbox", "plugin-daemon", "web"];

/// Outbound calls Dify makes by default, switched off: a closed VPC has nowhere to send them.
pub const OFFLINE_SWITCHES: [(&str, &str); 8] = [
    ("MARKETPLACE_ENABLED", "false"),
    ("CHECK_UPDATE_URL", ""),
    ("HOSTED_FETCH_APP_TEMPLATES_MODE", "builtin"),
    ("HOSTED_FETCH_PIPELINE_TEMPLATES_MODE", "builtin"),
    ("ENABLE_CHECK_UPGRADABLE_PLUGIN_TASK", "false"),
    ("DISABLE_TELEMETRY", "true"),
    ("NEXT_TELEMETRY_DISABLED", "1"),
    ("PIP_MIRROR_AUTO_DETECT", "false"),
];

/// One container definition in the making.
pub struct Container {
    pub name: &'static str,
    /// The image role (`api` for api, worker and beat).
    pub role: &'static str,
    pub ports: Vec<u16>,
    pub health: Option<&'static str>,
    pub environment: BTreeMap<String, Value>,
    pub secrets: BTreeMap<String, Value>,
    /// `(volume, path in the container)`.
    pub mounts: Vec<(&'static str, &'static str)>,
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

fn whole(secret: &str) -> Value {
    json!({ "Ref": secret })
}

fn field(secret: &str, key: &str) -> Value {
    sub(&format!("${{{secret}}}:{key}::"))
}

impl Container {
    fn new(name: &'static str, role: &'static str) -> Self {
        let mut container = Container {
            name,
            role,
            ports: Vec::new(),
            health: None,
            environment: BTreeMap::new(),
            secrets: BTreeMap::new(),
            mounts: Vec::new(),
        };
        for (key, value) in OFFLINE_SWITCHES {
            container.env(key, json!(value));
        }
        container
    }

    fn env(&mut self, key: &str, value: Value) -> &mut Self {
        self.environment.insert(key.to_owned(), value);
        self
    }

    fn secret(&mut self, key: &str, value: Value) -> &mut Self {
        self.secrets.insert(key.to_owned(), value);
        self
    }

    /// The database, pgvector (in the same database: no custom resource needed to create
    /// another one) and the cache, as the api image reads them.
    fn dify_backend(&mut self) -> &mut Self {
        for (key, value) in [
            ("DB_DATABASE", json!("main")),
            ("PGVECTOR_DATABASE", json!("main")),
            ("VECTOR_STORE", json!("pgvector")),
            ("REDIS_DB", json!("0")),
            ("BROKER_USE_SSL", json!("true")),
            ("STORAGE_TYPE", json!("s3")),
            ("S3_BUCKET_NAME", sub("${StorageBucket}")),
            ("S3_REGION", sub("${AWS::Region}")),
            ("S3_USE_AWS_MANAGED_IAM", json!("true")),
            ("CODE_EXECUTION_ENDPOINT", json!("http://localhost:8194")),
            ("PLUGIN_DAEMON_URL", json!("http://localhost:5002")),
            ("CONSOLE_WEB_URL", params::base_url()),
            ("CONSOLE_API_URL", params::base_url()),
            ("SERVICE_API_URL", params::base_url()),
            ("APP_WEB_URL", params::base_url()),
            ("TRIGGER_URL", params::base_url()),
            ("FILES_URL", params::base_url()),
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
            "Essential": true,
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

/// The api task's containers.
pub fn api_task(extra: &ExtraEnvironment, daemon: &[(String, String)]) -> Vec<Container> {
    let mut api = Container::new("api", "api");
    api.dify_backend().env("MODE", json!("api"));
    api.ports = vec![5001];
    api.health = Some("curl -f http://localhost:5001/health || exit 1");

    let mut worker = Container::new("worker", "api");
    worker
        .dify_backend()
        .env("MODE", json!("worker"))
        .env("MIGRATION_ENABLED", json!("true"));

    let mut beat = Container::new("beat", "api");
    beat.dify_backend().env("MODE", json!("beat"));

    let mut sandbox = Container::new("sandbox", "sandbox");
    sandbox
        .env("GIN_MODE", json!("release"))
        .env("WORKER_TIMEOUT", json!("15"))
        .env("ENABLE_NETWORK", json!("true"))
        .secret("API_KEY", whole(SANDBOX_SECRET));
    sandbox.ports = vec![8194];

    let mut daemon_container = Container::new("plugin-daemon", "plugin-daemon");
    for (key, value) in [
        ("DB_DATABASE", json!("dify_plugin")),
        ("SERVER_PORT", json!("5002")),
        ("PLUGIN_REMOTE_INSTALLING_HOST", json!("localhost")),
        ("PLUGIN_REMOTE_INSTALLING_PORT", json!("5003")),
        ("PLUGIN_WORKING_PATH", json!(PLUGIN_WORKING_PATH)),
        ("DIFY_INNER_API_URL", json!("http://localhost:5001")),
        ("PLUGIN_STORAGE_TYPE", json!("aws_s3")),
        ("PLUGIN_STORAGE_OSS_BUCKET", sub("${StorageBucket}")),
        ("PLUGIN_INSTALLED_PATH", json!("plugins")),
        ("S3_USE_AWS", json!("true")),
        ("S3_USE_AWS_MANAGED_IAM", json!("true")),
        ("AWS_REGION", sub("${AWS::Region}")),
        ("FORCE_VERIFYING_SIGNATURE", json!("true")),
        ("PYTHON_ENV_INIT_TIMEOUT", json!("640")),
    ] {
        daemon_container.env(key, value);
    }
    daemon_container
        .database(["DB_USERNAME", "DB_PASSWORD", "DB_HOST", "DB_PORT"])
        .redis()
        .secret("SERVER_KEY", whole(DAEMON_SECRET))
        .secret("DIFY_INNER_API_KEY", whole(INNER_SECRET));
    for (key, value) in daemon {
        daemon_container.env(key, json!(value));
    }
    daemon_container.ports = vec![5002, 5003];
    daemon_container.mounts = vec![(PLUGIN_VOLUME, PLUGIN_WORKING_PATH)];

    let mut containers = vec![api, worker, beat, sandbox, daemon_container];
    for container in &mut containers {
        container.extra(extra);
    }
    containers
}

/// The web task's one container.
pub fn web_task(extra: &ExtraEnvironment) -> Container {
    let mut web = Container::new("web", "web");
    web.env("CONSOLE_API_URL", params::base_url())
        .env("APP_API_URL", params::base_url());
    web.ports = vec![3000];
    web.health = Some("wget --spider -q http://localhost:3000/ || exit 1");
    web.extra(extra);
    web
}
