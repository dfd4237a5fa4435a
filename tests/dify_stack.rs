//! The template's own settings boot the real Dify API 1.13.3. The migrate, api, worker and
//! beat containers' environment and secrets are taken from the application template exactly
//! as a bundle signs it (`dify-bundle template`), resolved against local stand-ins of the AWS
//! services — PostgreSQL and Redis with TLS (a test CA made with openssl) for Aurora and
//! Valkey, moto_server for S3 and Secrets Manager — and each container runs the api image's
//! own entry point (`api/docker/entrypoint.sh`) or the template's entry point with exactly
//! that environment, plus only what the platform provides (the image's ENV, the task role's
//! credentials, the region, the CA store, a local port).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::dify::{self, Scratch, TestCa};
use common::{Auth, Moto, Registry};
use serde_json::{Value, json};

const REGION: &str = "us-east-1";
const ACCOUNT: &str = "123456789012";
const BUCKET: &str = "dify-stack-test-storage";

/// Resolves the intrinsic functions the container definitions use, as CloudFormation would
/// with the test parameters and the stand-ins' addresses.
struct Resolver<'a> {
    template: &'a Value,
    parameters: BTreeMap<String, String>,
    /// `Ref` and `Fn::GetAtt` values (`Name` or `Name.Attribute`).
    values: BTreeMap<String, String>,
}

impl Resolver<'_> {
    fn lookup(&self, name: &str) -> String {
        if let Some(v) = self.values.get(name) {
            return v.clone();
        }
        if let Some(v) = self.parameters.get(name) {
            return v.clone();
        }
        panic!("the template refers to {name}, which this test does not resolve");
    }

    fn condition(&self, name: &str) -> bool {
        let c = &self.template["Conditions"][name];
        assert!(!c.is_null(), "no condition {name}");
        self.truth(c)
    }

    fn truth(&self, c: &Value) -> bool {
        if let Some(name) = c.get("Condition").and_then(Value::as_str) {
            return self.condition(name);
        }
        if let Some([a, b]) = c
            .get("Fn::Equals")
            .and_then(Value::as_array)
            .map(Vec::as_slice)
        {
            return self.resolve(a) == self.resolve(b);
        }
        if let Some([x]) = c
            .get("Fn::Not")
            .and_then(Value::as_array)
            .map(Vec::as_slice)
        {
            return !self.truth(x);
        }
        if let Some(all) = c.get("Fn::And").and_then(Value::as_array) {
            return all.iter().all(|x| self.truth(x));
        }
        if let Some(any) = c.get("Fn::Or").and_then(Value::as_array) {
            return any.iter().any(|x| self.truth(x));
        }
        panic!("condition not understood: {c}");
    }

    fn sub(&self, text: &str) -> String {
        let mut out = String::new();
        let mut rest = text;
        while let Some(start) = rest.find("${") {
            out.push_str(&rest[..start]);
            let end = rest[start..].find('}').expect("closed ${") + start;
            let name = &rest[start + 2..end];
            if let Some(literal) = name.strip_prefix('!') {
                out.push_str(&format!("${{{literal}}}"));
            } else {
                out.push_str(&self.lookup(name));
            }
            rest = &rest[end + 1..];
        }
        out.push_str(rest);
        out
    }

    fn resolve(&self, v: &Value) -> Value {
        match v {
            Value::String(_) | Value::Number(_) | Value::Bool(_) | Value::Null => v.clone(),
            Value::Array(items) => Value::Array(items.iter().map(|i| self.resolve(i)).collect()),
            Value::Object(map) => {
                if let Some(name) = map.get("Ref").and_then(Value::as_str) {
                    return json!(self.lookup(name));
                }
                if let Some(s) = map.get("Fn::Sub") {
                    let text = s
                        .as_str()
                        .unwrap_or_else(|| panic!("Fn::Sub with a map: {s}"));
                    return json!(self.sub(text));
                }
                if let Some([sep, items]) = map
                    .get("Fn::Join")
                    .and_then(Value::as_array)
                    .map(Vec::as_slice)
                {
                    let parts: Vec<String> = items
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|i| text_of(&self.resolve(i)))
                        .collect();
                    return json!(parts.join(sep.as_str().unwrap()));
                }
                if let Some([c, a, b]) = map
                    .get("Fn::If")
                    .and_then(Value::as_array)
                    .map(Vec::as_slice)
                {
                    let chosen = if self.condition(c.as_str().unwrap()) {
                        a
                    } else {
                        b
                    };
                    return self.resolve(chosen);
                }
                if let Some([r, a]) = map
                    .get("Fn::GetAtt")
                    .and_then(Value::as_array)
                    .map(Vec::as_slice)
                {
                    return json!(self.lookup(&format!(
                        "{}.{}",
                        r.as_str().unwrap(),
                        a.as_str().unwrap()
                    )));
                }
                panic!("intrinsic not understood: {v}");
            }
        }
    }
}

fn text_of(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// `{{resolve:secretsmanager:ARN:SecretString:KEY}}` dynamic references, from `secrets`.
fn dynamic_references(text: &str, secrets: &BTreeMap<String, String>) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(start) = rest.find("{{resolve:secretsmanager:") {
        out.push_str(&rest[..start]);
        let end = rest[start..].find("}}").unwrap() + start;
        let spec = &rest[start + "{{resolve:secretsmanager:".len()..end];
        let (arn, key) = spec
            .split_once(":SecretString:")
            .expect("ARN:SecretString:KEY");
        let secret: Value = serde_json::from_str(&secrets[arn]).unwrap();
        out.push_str(secret[key].as_str().expect("the key in the secret"));
        rest = &rest[end + 2..];
    }
    out.push_str(rest);
    out
}

/// Secrets Manager's GenerateSecretString, for the spec the template gives.
fn generate(spec: &Value) -> String {
    let length = spec["PasswordLength"].as_u64().unwrap_or(32) as usize;
    let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let random = dify::token(length);
    let value: String = random
        .as_bytes()
        .chunks(2)
        .map(|pair| {
            let n = u8::from_str_radix(std::str::from_utf8(pair).unwrap(), 16).unwrap();
            alphabet[n as usize % alphabet.len()] as char
        })
        .collect();
    match (
        spec["SecretStringTemplate"].as_str(),
        spec["GenerateStringKey"].as_str(),
    ) {
        (Some(template), Some(key)) => {
            let mut v: Value = serde_json::from_str(template).unwrap();
            v[key] = json!(value);
            v.to_string()
        }
        _ => value,
    }
}

fn container<'t>(template: &'t Value, task: &str, name: &str) -> &'t Value {
    template["Resources"][task]["Properties"]["ContainerDefinitions"]
        .as_array()
        .unwrap_or_else(|| panic!("no {task}"))
        .iter()
        .find(|c| c["Name"] == name)
        .unwrap_or_else(|| panic!("no container {name} in {task}"))
}

/// The api image's own ENV (its Dockerfile), with /app/api being the local api tree.
fn image_env(api: &Path) -> Vec<(String, String)> {
    let dockerfile = std::fs::read_to_string(api.join("Dockerfile")).unwrap();
    let mut env = Vec::new();
    for line in dockerfile.lines() {
        let Some(rest) = line.trim().strip_prefix("ENV ") else {
            continue;
        };
        let Some((k, v)) = rest.split_once('=') else {
            continue;
        };
        if v.contains('$') {
            continue; // VIRTUAL_ENV/PATH/COMMIT_SHA: build-time; PATH is set below
        }
        let v = v
            .trim_matches('"')
            .replace("/app/api", &api.display().to_string());
        env.push((k.trim().to_owned(), v));
    }
    env
}

/// Every name Dify 1.13.3 reads from the environment: its settings' fields (pydantic, with
/// aliases), what `api/docker/entrypoint.sh` reads, and direct `os.environ`/`os.getenv`
/// reads in its code. Plus the settings it cannot start without (no default).
fn dify_reads(api: &Path) -> (BTreeSet<String>, BTreeSet<String>) {
    let script = r#"
import json, re, pathlib
from configs.app_config import DifyConfig
names, required = set(), set()
for name, field in DifyConfig.model_fields.items():
    names.add(name)
    if field.alias: names.add(field.alias)
    if isinstance(field.validation_alias, str): names.add(field.validation_alias)
    if field.is_required(): required.add(name)
root = pathlib.Path('.')
pattern = re.compile(r'os\.(?:environ\.get|getenv|environ\[)\(?\s*["\']([A-Z0-9_]+)["\']')
for path in root.rglob('*.py'):
    if '.venv' in path.parts or 'tests' in path.parts: continue
    names.update(pattern.findall(path.read_text(errors='ignore')))
names.update(re.findall(r'\$\{([A-Z0-9_]+)', pathlib.Path('docker/entrypoint.sh').read_text()))
print(json.dumps({"names": sorted(names), "required": sorted(required)}))
"#;
    let out = dify::api_python(&[]).args(["-c", script]).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let set = |k: &str| -> BTreeSet<String> {
        v[k].as_array()
            .unwrap()
            .iter()
            .map(|s| s.as_str().unwrap().to_owned())
            .collect()
    };
    let _ = api;
    (set("names"), set("required"))
}

/// Waits until `ok`; on timeout, fails with the tail of `log` (and its `.err`).
fn wait_for(what: &str, limit: Duration, log: &Path, mut ok: impl FnMut(&str) -> bool) {
    let deadline = Instant::now() + limit;
    let text = || log_of(log) + &log_of(&log.with_extension("err"));
    while !ok(&text()) {
        if Instant::now() >= deadline {
            let all = text();
            let tail: String = all
                .chars()
                .skip(all.chars().count().saturating_sub(4000))
                .collect();
            panic!("{what}: not within {limit:?}; {}:\n{tail}", log.display());
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

fn log_of(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_templates_settings_boot_the_real_dify_api() {
    let begun = Instant::now();
    let mut timings: Vec<(&str, Duration)> = Vec::new();
    let api = dify::api_dir();

    // The template as a bundle of Dify 1.13.3 signs it.
    let work = tempfile::tempdir().unwrap();
    let source = Registry::start(Auth::None);
    let printed = common::signed_template(&source, work.path(), dify::VERSION).await;
    let template: Value = serde_json::from_slice(&printed).unwrap();
    timings.push(("bundle and template", begun.elapsed()));

    // Stand-ins of Aurora and Valkey, with TLS from a test CA.
    let mut scratch = Scratch::new("stack");
    let ca = TestCa::new(&scratch.dir.join("ca"));
    let (db_cert, db_key) = ca.issue("db");
    let (redis_cert, redis_key) = ca.issue("redis");

    // Secrets Manager: every secret of the template, generated as its spec says (the
    // database one completed with host and port, as its SecretTargetAttachment does).
    let moto = Moto::start();
    let config = moto.sdk_config();
    let sm = aws_sdk_secretsmanager::Client::new(&config);
    let s3 = moto.s3();
    s3.create_bucket().bucket(BUCKET).send().await.unwrap();

    let mut values: BTreeMap<String, String> = BTreeMap::new();
    for (k, v) in [
        ("AWS::Region", REGION),
        ("AWS::AccountId", ACCOUNT),
        ("AWS::Partition", "aws"),
        ("AWS::URLSuffix", "amazonaws.com"),
        ("AWS::StackName", "dify-test"),
        ("StorageBucket", BUCKET),
        ("LoadBalancer.DNSName", "127.0.0.1"),
        ("Redis.PrimaryEndPoint.Address", "127.0.0.1"),
    ] {
        values.insert(k.into(), v.into());
    }
    let parameters: BTreeMap<String, String> = template["Parameters"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, p)| {
            let default = match &p["Default"] {
                Value::Null => String::new(),
                v => text_of(v),
            };
            (k.clone(), default)
        })
        .collect();

    let resources = template["Resources"].as_object().unwrap();
    let mut secret_values: BTreeMap<String, String> = BTreeMap::new(); // ARN -> value
    let mut generated: BTreeMap<String, String> = BTreeMap::new(); // logical id -> value
    for (id, r) in resources {
        if r["Type"] == "AWS::SecretsManager::Secret"
            && !r["Properties"]["GenerateSecretString"].is_null()
        {
            generated.insert(
                id.clone(),
                generate(&r["Properties"]["GenerateSecretString"]),
            );
        }
    }
    let db_secret: Value = serde_json::from_str(&generated["DatabaseSecret"]).unwrap();
    let db_user = db_secret["username"].as_str().unwrap().to_owned();
    let db_password = db_secret["password"].as_str().unwrap().to_owned();
    let redis_token: Value = serde_json::from_str(&generated["RedisAuthSecret"]).unwrap();
    let redis_token = redis_token["token"].as_str().unwrap().to_owned();
    let started = Instant::now();
    let pg = scratch.postgres(&db_user, &db_password, Some((&db_cert, &db_key)));
    let redis = scratch.redis(&redis_token, Some((&redis_cert, &redis_key, &ca.ca)));
    // The database Aurora creates with the cluster (its DatabaseName).
    let database = text_of(&template["Resources"]["Database"]["Properties"]["DatabaseName"]);
    scratch.createdb(pg, &db_user, &db_password, &database);
    // Only TLS gets in: without it the database and Valkey refuse the connection.
    let plain_pg = Command::new("psql")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &pg.to_string(),
            "-U",
            &db_user,
            "-c",
            "select 1",
        ])
        .arg(&database)
        .env("PGPASSWORD", &db_password)
        .env("PGSSLMODE", "disable")
        .output()
        .unwrap();
    assert!(
        !plain_pg.status.success(),
        "PostgreSQL accepted a connection without TLS"
    );
    let plain_redis = Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", &redis.to_string(), "PING"])
        .env("REDISCLI_AUTH", &redis_token)
        .output()
        .unwrap();
    assert!(
        !String::from_utf8_lossy(&plain_redis.stdout).contains("PONG"),
        "Redis answered without TLS"
    );
    timings.push(("postgres and redis with TLS", started.elapsed()));
    values.insert("Redis.PrimaryEndPoint.Port".into(), redis.to_string());
    let mut with_attachment = db_secret.clone();
    with_attachment["host"] = json!("127.0.0.1");
    with_attachment["port"] = json!(pg);
    with_attachment["engine"] = json!("postgres");
    generated.insert("DatabaseSecret".into(), with_attachment.to_string());
    for (id, value) in &generated {
        let made = sm
            .create_secret()
            .name(format!("dify-test-{id}"))
            .secret_string(value)
            .send()
            .await
            .unwrap();
        let arn = made.arn().unwrap().to_owned();
        secret_values.insert(arn.clone(), value.clone());
        values.insert(id.clone(), arn);
    }
    // Secrets built by CloudFormation from others (the broker URL).
    let mut resolver = Resolver {
        template: &template,
        parameters,
        values,
    };
    for (id, r) in resources {
        if r["Type"] == "AWS::SecretsManager::Secret" && !r["Properties"]["SecretString"].is_null()
        {
            let text = text_of(&resolver.resolve(&r["Properties"]["SecretString"]));
            let value = dynamic_references(&text, &secret_values);
            let made = sm
                .create_secret()
                .name(format!("dify-test-{id}"))
                .secret_string(&value)
                .send()
                .await
                .unwrap();
            let arn = made.arn().unwrap().to_owned();
            secret_values.insert(arn.clone(), value);
            resolver.values.insert(id.clone(), arn);
        }
    }

    // Each container's environment: the template's Environment, and its Secrets fetched from
    // Secrets Manager as ECS does (`ARN[:json-key[:version-stage[:version-id]]]`).
    let mut envs: BTreeMap<&str, Vec<(String, String)>> = BTreeMap::new();
    let mut template_keys: BTreeMap<&str, BTreeSet<String>> = BTreeMap::new();
    for (task, name) in [
        ("ApiTask", "migrate"),
        ("ApiTask", "api"),
        ("ApiTask", "worker"),
        ("BeatTask", "migrate"),
        ("BeatTask", "beat"),
    ] {
        let c = container(&template, task, name);
        let mut env = Vec::new();
        for e in c["Environment"].as_array().unwrap() {
            env.push((
                e["Name"].as_str().unwrap().to_owned(),
                text_of(&resolver.resolve(&e["Value"])),
            ));
        }
        for s in c["Secrets"].as_array().unwrap() {
            let from = text_of(&resolver.resolve(&s["ValueFrom"]));
            let parts: Vec<&str> = from.split(':').collect();
            assert!(parts.len() >= 7 && parts[2] == "secretsmanager", "{from}");
            let arn = parts[..7].join(":");
            let got = sm.get_secret_value().secret_id(&arn).send().await.unwrap();
            let whole = got.secret_string().unwrap().to_owned();
            let value = match parts.get(7).filter(|k| !k.is_empty()) {
                Some(key) => {
                    let v: Value = serde_json::from_str(&whole).unwrap();
                    text_of(&v[*key])
                }
                None => whole,
            };
            env.push((s["Name"].as_str().unwrap().to_owned(), value));
        }
        let key = if task == "BeatTask" && name == "migrate" {
            "beat-migrate"
        } else {
            name
        };
        template_keys.insert(key, env.iter().map(|(k, _)| k.clone()).collect());
        envs.insert(key, env);
    }

    // A variable the real code does not read, or one it needs and does not get, fails here.
    let (reads, required) = dify_reads(&api);
    // The list is Dify's, not everything: a name it reads, and one it does not.
    assert!(reads.contains("DB_HOST") && reads.contains("CELERY_WORKER_AMOUNT"));
    assert!(
        !reads.contains("DB_SSL_MODE"),
        "the daemon's name, not Dify's"
    );
    for (name, keys) in &template_keys {
        let unread: Vec<&String> = keys.iter().filter(|k| !reads.contains(*k)).collect();
        assert!(
            unread.is_empty(),
            "{name}: Dify {} reads none of {unread:?}",
            dify::VERSION
        );
        let missing: Vec<&String> = required.iter().filter(|k| !keys.contains(*k)).collect();
        assert!(missing.is_empty(), "{name}: Dify needs {missing:?}");
    }

    // What the platform adds: the image's ENV, the task role's credentials (here moto's),
    // the region ECS sets, the image's CA store (here the test CA that signed the stand-ins'
    // certificates, as Amazon's CAs sign Aurora's and Valkey's), and a local port for the api
    // (the container's 5001).
    let api_port = common::free_port();
    let venv_bin = api.join(".venv/bin");
    let platform = |extra: &[(&str, String)]| -> Vec<(String, String)> {
        let mut env = image_env(&api);
        env.extend(
            [
                (
                    "PATH",
                    format!("{}:{}", venv_bin.display(), std::env::var("PATH").unwrap()),
                ),
                ("VIRTUAL_ENV", api.join(".venv").display().to_string()),
                ("AWS_ENDPOINT_URL", moto.endpoint()),
                ("AWS_ACCESS_KEY_ID", "testing".into()),
                ("AWS_SECRET_ACCESS_KEY", "testing".into()),
                ("AWS_REGION", REGION.into()),
                ("AWS_DEFAULT_REGION", REGION.into()),
                ("SSL_CERT_FILE", ca.ca.display().to_string()),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v)),
        );
        env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.clone())));
        env
    };
    let with = |name: &str, extra: &[(&str, String)]| -> Vec<(String, String)> {
        let mut env = platform(extra);
        env.extend(envs[name].iter().cloned());
        env
    };
    let spawn = |scratch: &mut Scratch, name: &str, env: Vec<(String, String)>, argv: &[&str]| {
        let log = scratch.dir.join(format!("{name}.log"));
        let child = Command::new(argv[0])
            .args(&argv[1..])
            .current_dir(&api)
            .env_clear()
            .envs(env.iter().map(|(k, v)| (k, v)))
            .env("HOME", std::env::var("HOME").unwrap())
            .stdout(std::fs::File::create(&log).unwrap())
            .stderr(std::fs::File::create(log.with_extension("err")).unwrap())
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        scratch.keep(child.id());
        (child, log)
    };

    // Migrations by the container that owns them: its own entry point, exactly; the others
    // of its task start once it has succeeded, as ECS orders them (DependsOn SUCCESS).
    for (task, name) in [
        ("ApiTask", "api"),
        ("ApiTask", "worker"),
        ("BeatTask", "beat"),
    ] {
        assert_eq!(
            container(&template, task, name)["DependsOn"],
            json!([{ "ContainerName": "migrate", "Condition": "SUCCESS" }]),
            "{task}/{name}"
        );
    }
    let migrate = container(&template, "ApiTask", "migrate");
    let entry: Vec<String> = migrate["EntryPoint"]
        .as_array()
        .expect("migrate has an entry point")
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect();
    let started = Instant::now();
    let (mut child, log) = spawn(
        &mut scratch,
        "migrate",
        with("migrate", &[]),
        &entry.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    let status = child.wait().unwrap();
    assert!(
        status.success(),
        "migrate: {status}\n{}\n{}",
        log_of(&log),
        log_of(&log.with_extension("err"))
    );
    timings.push(("migrate (ApiTask)", started.elapsed()));
    assert!(
        log_of(&log).contains("Database migration successful"),
        "{}",
        log_of(&log)
    );
    // The beat task's migrate finds the schema current.
    let started = Instant::now();
    let (mut child, log) = spawn(
        &mut scratch,
        "beat-migrate",
        with("beat-migrate", &[]),
        &entry.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    assert!(child.wait().unwrap().success(), "{}", log_of(&log));
    timings.push(("migrate (BeatTask)", started.elapsed()));

    // api, worker and beat through the image's entry point.
    let entrypoint = api.join("docker/entrypoint.sh").display().to_string();
    let started = Instant::now();
    let port = [
        ("DIFY_BIND_ADDRESS", "127.0.0.1".to_owned()),
        ("DIFY_PORT", api_port.to_string()),
    ];
    let (_api, api_log) = spawn(
        &mut scratch,
        "api",
        with("api", &port),
        &["bash", &entrypoint],
    );
    let (_worker, worker_log) = spawn(
        &mut scratch,
        "worker",
        with("worker", &[]),
        &["bash", &entrypoint],
    );
    let (_beat, beat_log) = spawn(
        &mut scratch,
        "beat",
        with("beat", &[]),
        &["bash", &entrypoint],
    );
    let http = reqwest::Client::new();
    let health = format!("http://127.0.0.1:{api_port}/health");
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if let Ok(r) = http.get(&health).send().await
            && r.status().is_success()
        {
            let body: Value = r.json().await.unwrap();
            assert_eq!(body["status"], "ok");
            assert_eq!(body["version"], dify::VERSION);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "api /health: {}",
            log_of(&api_log.with_extension("err"))
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    timings.push(("api /health", started.elapsed()));

    // A Celery task through the broker over TLS, processed by the worker.
    let started = Instant::now();
    wait_for(
        "the worker ready",
        Duration::from_secs(120),
        &worker_log,
        |text| text.contains("ready.") || text.contains("Connected to rediss://"),
    );
    let call = dify::api_python(&with("worker", &[]))
        .env_clear()
        .envs(with("worker", &[]))
        .args(["-m", "celery", "-A", "celery_entrypoint.celery", "call"])
        .arg("tasks.mail_email_code_login.send_email_code_login_mail_task")
        .args([
            "--args",
            r#"["en-US", "ops@example.com", "123456"]"#,
            "--queue",
            "mail",
        ])
        .output()
        .unwrap();
    assert!(
        call.status.success(),
        "{}",
        String::from_utf8_lossy(&call.stderr)
    );
    // `celery call` prints the task id last (the app's start-up logs come first).
    let printed = String::from_utf8_lossy(&call.stdout).into_owned();
    let task_id = printed
        .lines()
        .map(str::trim)
        .rfind(|l| l.len() == 36 && l.matches('-').count() == 4)
        .unwrap_or_else(|| panic!("no task id in: {printed}"))
        .to_owned();
    wait_for(
        "the worker processing the task",
        Duration::from_secs(60),
        &worker_log,
        |text| {
            text.lines()
                .any(|l| l.contains(&task_id) && l.contains("succeeded"))
        },
    );
    timings.push(("celery task over TLS", started.elapsed()));

    // An uploaded file lands in the storage bucket.
    let started = Instant::now();
    let console_url = format!("http://127.0.0.1:{api_port}");
    let console = dify_bundle::dify::console::Console::new(&console_url).unwrap();
    console
        .setup("ops@example.com", "admin", "s3cret-Passw0rd")
        .await
        .unwrap();
    let content = format!("hello from the stack test {}", dify::token(8));
    upload(&console_url, "hello.txt", content.as_bytes()).await;
    let listed = s3
        .list_objects_v2()
        .bucket(BUCKET)
        .prefix("upload_files/")
        .send()
        .await
        .unwrap();
    let mut found = false;
    for key in listed.contents().iter().filter_map(|o| o.key()) {
        let got = s3
            .get_object()
            .bucket(BUCKET)
            .key(key)
            .send()
            .await
            .unwrap();
        if got.body.collect().await.unwrap().into_bytes().as_ref() == content.as_bytes() {
            found = true;
        }
    }
    assert!(
        found,
        "the uploaded file is not in s3://{BUCKET}/upload_files/"
    );
    timings.push(("file upload to the bucket", started.elapsed()));

    // beat is up and scheduling (its log names the broker over TLS).
    wait_for("beat started", Duration::from_secs(60), &beat_log, |text| {
        text.contains("beat: Starting")
            // what beat sends (every minute), the worker receives
            && log_of(&worker_log).contains("Task schedule.workflow_schedule_task.poll_workflow_schedules")
    });
    timings.push(("total", begun.elapsed()));
    for (what, took) in &timings {
        eprintln!("timing: {what}: {took:.1?}");
    }
}

/// Logs in as Dify's own web client does (password base64-encoded, cookies, CSRF header) and
/// uploads a file through the console (`/console/api/files/upload`, field `file`).
async fn upload(url: &str, name: &str, content: &[u8]) {
    use base64::Engine as _;
    let http = reqwest::Client::new();
    let login = http
        .post(format!("{url}/console/api/login"))
        .json(&json!({
            "email": "ops@example.com",
            "password": base64::engine::general_purpose::STANDARD.encode("s3cret-Passw0rd"),
        }))
        .send()
        .await
        .unwrap();
    assert!(login.status().is_success(), "{}", login.status());
    let jar: Vec<String> = login
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok()?.split(';').next().map(str::to_owned))
        .collect();
    let csrf = jar
        .iter()
        .find_map(|c| c.split_once("csrf_token=").map(|(_, v)| v.to_owned()))
        .unwrap();
    let part = reqwest::multipart::Part::bytes(content.to_vec())
        .file_name(name.to_owned())
        .mime_str("text/plain")
        .unwrap();
    let response = http
        .post(format!("{url}/console/api/files/upload"))
        .header("Cookie", jar.join("; "))
        .header("X-CSRF-Token", csrf)
        .multipart(reqwest::multipart::Form::new().part("file", part))
        .send()
        .await
        .unwrap();
    let status = response.status();
    let body = response.text().await.unwrap();
    assert!(status.is_success(), "upload: {status}: {body}");
}
