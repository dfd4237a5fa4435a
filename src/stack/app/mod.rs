//! The Dify application stack: plain CloudFormation built from typed values — no CDK, no
//! Lambda, no custom resources. Generated at build time from the bundle's own image digests
//! and stored in the bundle, so it is signed and can be reviewed before it crosses over;
//! everything chosen at install time is a parameter ([`params`]).

pub mod balancer;
pub mod compute;
pub mod containers;
pub mod data;
pub mod params;

use serde::{Deserialize, Serialize};

pub use containers::{EnvValue, ExtraEnvironment};

use crate::error::{Error, Result};
use crate::recipe::Role;
use crate::stack::{Template, get_att, reference, sub};

/// The images the stack runs, by role.
pub const ROLES: [&str; 4] = [
    Role::Api.as_str(),
    Role::Web.as_str(),
    Role::Sandbox.as_str(),
    Role::PluginDaemon.as_str(),
];

/// What the template is generated from.
#[derive(Clone, Debug, Default)]
pub struct AppSpec {
    pub bundle: String,
    pub dify_version: String,
    /// `(role, digest hex)` of every image in [`ROLES`], the stack's root manifests.
    pub images: Vec<(String, String)>,
    /// ECS CPU architectures the bundle has images for (`X86_64`, `ARM64`).
    pub architectures: Vec<String>,
    /// The operator's extra variables, by container.
    pub environment: ExtraEnvironment,
    /// Settings for the plugin daemon (its offline package index).
    pub daemon_environment: Vec<(String, String)>,
}

/// Build-time settings of the stack (`build --stack-config FILE`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StackSettings {
    /// `[environment.<container>]` tables: `KEY = "value"`, `KEY = { ssm = "/name" }`,
    /// `KEY = { secret = "arn:…", field = "key" }`. Containers: api, worker, beat, sandbox,
    /// plugin-daemon, web, or `all`.
    #[serde(default)]
    pub environment: ExtraEnvironment,
}

impl StackSettings {
    pub fn load(path: &std::path::Path) -> Result<StackSettings> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let settings: StackSettings = toml::from_str(&text)
            .map_err(|e| Error::invalid(format!("{}: {e}", path.display())))?;
        for container in settings.environment.keys() {
            if container != "all" && !containers::CONTAINERS.contains(&container.as_str()) {
                return Err(Error::invalid(format!(
                    "{}: [environment.{container}]: no such container; expected all or one of {}",
                    path.display(),
                    containers::CONTAINERS.join(", ")
                )));
            }
        }
        containers::check_extra(&settings.environment)
            .map_err(|e| Error::invalid(format!("{}: {e}", path.display())))?;
        Ok(settings)
    }
}

/// ECS's name for an OCI architecture.
pub fn ecs_architecture(oci: &str) -> Option<&'static str> {
    match oci {
        "amd64" => Some("X86_64"),
        "arm64" => Some("ARM64"),
        _ => None,
    }
}

impl AppSpec {
    fn digest(&self, role: &str) -> Result<&str> {
        self.images
            .iter()
            .find(|(r, _)| r == role)
            .map(|(_, d)| d.as_str())
            .ok_or_else(|| {
                Error::invalid(format!(
                    "the application stack needs a `{role}` image; the recipe has none (it needs {})",
                    ROLES.join(", ")
                ))
            })
    }
}

/// The application stack's template.
pub fn template(spec: &AppSpec) -> Result<Template> {
    let mut t = Template::new(format!(
        "dify-bundle: Dify {} ({}) behind an internal load balancer, in a VPC without internet",
        spec.dify_version, spec.bundle
    ));
    let architectures: Vec<&str> = spec.architectures.iter().map(String::as_str).collect();
    params::declare(&mut t, &ROLES, &architectures);
    data::buckets(&mut t);
    data::secrets(&mut t);
    balancer::security_groups(&mut t);
    data::database(&mut t);
    data::cache(&mut t);
    data::plugin_files(&mut t);
    balancer::load_balancer(&mut t);

    let version = containers::DifyVersion::parse(&spec.dify_version);
    let api = containers::api_task(version, &spec.environment, &spec.daemon_environment);
    let beat = containers::beat_task(version, &spec.environment);
    let sandbox = [containers::sandbox_task(&spec.environment)];
    let web = [containers::web_task(version, &spec.environment)];
    let all: Vec<&containers::Container> = api
        .iter()
        .chain(beat.iter())
        .chain(sandbox.iter())
        .chain(web.iter())
        .collect();
    compute::roles(&mut t, &ROLES, &all);
    compute::cluster(&mut t);
    let fixed = |units: u32| serde_json::json!(units.to_string());
    for (id, containers, role, cpu, memory) in [
        (
            "ApiTask",
            &api[..],
            Some("ApiTaskRole"),
            reference(params::API_CPU),
            reference(params::API_MEMORY),
        ),
        // Beat only enqueues periodic tasks; migrate runs first in the same memory.
        (
            "BeatTask",
            &beat[..],
            Some("ApiTaskRole"),
            fixed(512),
            fixed(1024),
        ),
        // No task role: user code finds no AWS credentials.
        ("SandboxTask", &sandbox[..], None, fixed(512), fixed(1024)),
        (
            "WebTask",
            &web[..],
            Some("WebTaskRole"),
            reference(params::WEB_CPU),
            reference(params::WEB_MEMORY),
        ),
    ] {
        let digests = containers
            .iter()
            .map(|c| spec.digest(c.role).map(str::to_owned))
            .collect::<Result<Vec<_>>>()?;
        compute::task(
            &mut t,
            &compute::Task {
                id,
                role,
                cpu,
                memory,
                containers,
                digests,
            },
        );
    }
    for service in &compute::SERVICES {
        compute::service(&mut t, service);
    }
    outputs(&mut t);
    Ok(t)
}

pub const OUTPUT_URL: &str = "Url";

fn outputs(t: &mut Template) {
    t.output(
        OUTPUT_URL,
        "Where Dify answers (inside the VPC)",
        params::base_url(),
    );
    t.output(
        "LoadBalancerDns",
        "The internal load balancer's DNS name",
        get_att("LoadBalancer", "DNSName"),
    );
    t.output("Cluster", "ECS cluster", reference(compute::CLUSTER));
    t.output(
        "ApiService",
        "ECS service of api, worker and plugin daemon",
        get_att(compute::API_SERVICE, "Name"),
    );
    t.output(
        "BeatService",
        "ECS service of the one Celery beat",
        get_att(compute::BEAT_SERVICE, "Name"),
    );
    t.output(
        "SandboxService",
        "ECS service of the code sandbox",
        get_att(compute::SANDBOX_SERVICE, "Name"),
    );
    t.output(
        "WebService",
        "ECS service of the web front end",
        get_att(compute::WEB_SERVICE, "Name"),
    );
    t.output(
        "StorageBucket",
        "Dify's files and plugin packages",
        reference(data::STORAGE_BUCKET),
    );
    t.output(
        "ExecCommand",
        "A shell in the api container (ECS Exec)",
        sub(&format!(
            "aws ecs execute-command --region ${{AWS::Region}} --cluster ${{{}}} --container api --interactive --command /bin/bash --task $(aws ecs list-tasks --region ${{AWS::Region}} --cluster ${{{}}} --service-name ${{{}.Name}} --query 'taskArns[0]' --output text)",
            compute::CLUSTER,
            compute::CLUSTER,
            compute::API_SERVICE
        )),
    );
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use serde_json::{Value, json};

    pub fn example_spec() -> AppSpec {
        AppSpec {
            bundle: "dify-1.17.1".into(),
            dify_version: "1.17.1".into(),
            images: ROLES
                .iter()
                .enumerate()
                .map(|(i, role)| (role.to_string(), format!("{i}").repeat(64)))
                .collect(),
            architectures: vec!["X86_64".into()],
            environment: ExtraEnvironment::new(),
            daemon_environment: Vec::new(),
        }
    }

    pub fn example() -> Value {
        serde_json::from_str(&template(&example_spec()).unwrap().to_json()).unwrap()
    }

    fn resources<'a>(t: &'a Value, kind: &str) -> Vec<(&'a String, &'a Value)> {
        t["Resources"]
            .as_object()
            .unwrap()
            .iter()
            .filter(|(_, r)| r["Type"] == kind)
            .collect()
    }

    fn containers(t: &Value) -> Vec<&Value> {
        resources(t, "AWS::ECS::TaskDefinition")
            .into_iter()
            .flat_map(|(_, r)| r["Properties"]["ContainerDefinitions"].as_array().unwrap())
            .collect()
    }

    fn container<'a>(t: &'a Value, name: &str) -> &'a Value {
        containers(t)
            .into_iter()
            .find(|c| c["Name"] == name)
            .unwrap_or_else(|| panic!("no container {name}"))
    }

    fn env<'a>(c: &'a Value, key: &str) -> Option<&'a Value> {
        c["Environment"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["Name"] == key)
            .map(|e| &e["Value"])
    }

    fn secret<'a>(c: &'a Value, key: &str) -> Option<&'a Value> {
        c["Secrets"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["Name"] == key)
            .map(|e| &e["ValueFrom"])
    }

    #[test]
    fn every_container_runs_its_image_by_digest_with_its_ports() {
        let t = example();
        let spec = example_spec();
        let expected = [
            ("migrate", "api", vec![]),
            ("api", "api", vec![5001]),
            ("worker", "api", vec![]),
            ("beat", "api", vec![]),
            ("sandbox", "sandbox", vec![8194]),
            ("plugin-daemon", "plugin-daemon", vec![5002]),
            ("web", "web", vec![3000]),
        ];
        // migrate runs in the api task and in the beat task.
        assert_eq!(containers(&t).len(), expected.len() + 1);
        for (name, role, ports) in expected {
            let c = container(&t, name);
            let digest = &spec.images.iter().find(|(r, _)| r == role).unwrap().1;
            let image = c["Image"]["Fn::Sub"].as_str().unwrap();
            assert!(
                image.ends_with(&format!(
                    "/${{{}}}@sha256:{digest}",
                    params::repository(role)
                )),
                "{name}: {image}"
            );
            let actual: Vec<u64> = c["PortMappings"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| p["ContainerPort"].as_u64().unwrap())
                .collect();
            assert_eq!(actual, ports, "{name}");
            assert_eq!(c["LogConfiguration"]["LogDriver"], "awslogs");
        }
        let api_task = &t["Resources"]["ApiTask"]["Properties"];
        let names: Vec<&str> = api_task["ContainerDefinitions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["Name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["migrate", "api", "worker", "plugin-daemon"]);
        assert_eq!(api_task["Memory"], json!({"Ref": "ApiMemory"}));
        assert_eq!(t["Parameters"]["ApiMemory"]["Default"], "4096");
        assert_eq!(
            api_task["RuntimePlatform"]["CpuArchitecture"],
            json!({"Ref": "CpuArchitecture"})
        );
    }

    fn task_containers<'a>(t: &'a Value, task: &str) -> Vec<&'a Value> {
        t["Resources"][task]["Properties"]["ContainerDefinitions"]
            .as_array()
            .unwrap()
            .iter()
            .collect()
    }

    fn example_for(version: &str) -> Value {
        let spec = AppSpec {
            dify_version: version.into(),
            ..example_spec()
        };
        serde_json::from_str(&template(&spec).unwrap().to_json()).unwrap()
    }

    #[test]
    fn migrations_finish_before_any_api_image_container_starts() {
        let t = example();
        for task in ["ApiTask", "BeatTask"] {
            let containers = task_containers(&t, task);
            let migrate = containers
                .iter()
                .find(|c| c["Name"] == "migrate")
                .unwrap_or_else(|| panic!("{task} has no migrate container"));
            assert_eq!(migrate["Essential"], false);
            let script = migrate["EntryPoint"][2].as_str().unwrap();
            assert_eq!(migrate["EntryPoint"][0], "/bin/bash");
            assert!(script.contains("flask upgrade-db"), "{script}");
            assert!(script.contains("migration skipped"), "{script}");
            for c in &containers {
                let name = c["Name"].as_str().unwrap();
                assert!(env(c, "MIGRATION_ENABLED").is_none(), "{name}");
                if name == "migrate" || c["Image"] != migrate["Image"] {
                    continue;
                }
                assert_eq!(
                    c["DependsOn"],
                    json!([{ "ContainerName": "migrate", "Condition": "SUCCESS" }]),
                    "{task}/{name} must wait for the migrations"
                );
            }
        }
        // The whole script, as bash runs it: loops while another task holds the lock.
        let script = task_containers(&t, "ApiTask")[0]["EntryPoint"][2]
            .as_str()
            .unwrap()
            .to_owned();
        let dir = tempfile::tempdir().unwrap();
        let flask = dir.path().join("flask");
        for (outputs, expected) in [
            (vec!["Database migration successful!"], Some(0)),
            (
                vec![
                    "Database migration skipped",
                    "Database migration successful!",
                ],
                Some(0),
            ),
            (vec!["FAIL"], Some(1)),
        ] {
            let state = dir.path().join("calls");
            let _ = std::fs::remove_file(&state);
            let cases: String = outputs
                .iter()
                .enumerate()
                .map(|(i, o)| {
                    if *o == "FAIL" {
                        format!("{}) echo 'Database migration failed'; exit 1;;\n", i + 1)
                    } else {
                        format!("{}) echo '{o}';;\n", i + 1)
                    }
                })
                .collect();
            std::fs::write(
                &flask,
                format!(
                    "#!/bin/bash\nn=$(( $(cat {s} 2>/dev/null || echo 0) + 1 )); echo $n > {s}\ncase $n in\n{cases}esac\n",
                    s = state.display()
                ),
            )
            .unwrap();
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&flask, std::fs::Permissions::from_mode(0o755)).unwrap();
            let out = std::process::Command::new("/bin/bash")
                .args(["-c", &script.replace("sleep 5", "sleep 0")])
                .env("PATH", format!("{}:/usr/bin:/bin", dir.path().display()))
                .output()
                .unwrap();
            assert_eq!(out.status.code(), expected, "{outputs:?}");
            let calls: usize = std::fs::read_to_string(&state)
                .unwrap()
                .trim()
                .parse()
                .unwrap();
            assert_eq!(calls, outputs.len(), "{outputs:?}");
        }
    }

    #[test]
    fn exactly_one_beat_in_its_own_service() {
        let t = example();
        let beat = &t["Resources"]["BeatService"]["Properties"];
        assert_eq!(beat["TaskDefinition"], json!({"Ref": "BeatTask"}));
        assert_eq!(beat["DesiredCount"]["Fn::If"][1], 1);
        // A deployment stops the old beat before it starts the new one.
        assert_eq!(beat["DeploymentConfiguration"]["MaximumPercent"], 100);
        assert_eq!(beat["DeploymentConfiguration"]["MinimumHealthyPercent"], 0);
        assert!(t["Resources"]["BeatServiceScaling"].is_null());
        let beats = containers(&t)
            .into_iter()
            .filter(|c| env(c, "MODE") == Some(&json!("beat")))
            .count();
        assert_eq!(beats, 1);
        assert!(
            task_containers(&t, "ApiTask")
                .iter()
                .all(|c| c["Name"] != "beat")
        );
    }

    #[test]
    fn modes_and_settings_as_the_dify_api_reads_them() {
        let t = example();
        for (name, mode) in [("api", "api"), ("worker", "worker"), ("beat", "beat")] {
            let c = container(&t, name);
            assert_eq!(env(c, "MODE"), Some(&json!(mode)));
            for key in [
                "DB_HOST",
                "DB_PASSWORD",
                "PGVECTOR_PASSWORD",
                "REDIS_PASSWORD",
            ] {
                assert!(secret(c, key).is_some(), "{name}: {key}");
            }
            for key in [
                "CELERY_BROKER_URL",
                "SECRET_KEY",
                "CODE_EXECUTION_API_KEY",
                "PLUGIN_DAEMON_KEY",
                "INNER_API_KEY_FOR_PLUGIN",
            ] {
                assert!(
                    matches!(secret(c, key), Some(Value::Object(o)) if o.contains_key("Ref")),
                    "{name}: {key} must come from its own secret"
                );
            }
            for (key, value) in [
                ("VECTOR_STORE", "pgvector"),
                ("STORAGE_TYPE", "s3"),
                ("PLUGIN_DAEMON_URL", "http://localhost:5002"),
                ("INTERNAL_FILES_URL", "http://localhost:5001"),
                ("SQLALCHEMY_POOL_PRE_PING", "true"),
                ("PLUGIN_MAX_PACKAGE_SIZE", "52428800"),
                ("DB_EXTRAS", "sslmode=require"),
                ("REDIS_SSL_CERT_REQS", "CERT_REQUIRED"),
                ("CREATORS_PLATFORM_FEATURES_ENABLED", "false"),
                ("ENABLE_COLLABORATION_MODE", "false"),
                ("DISABLE_TELEMETRY", "true"),
            ] {
                assert_eq!(env(c, key), Some(&json!(value)), "{name}: {key}");
            }
            assert_eq!(
                env(c, "CODE_EXECUTION_ENDPOINT"),
                Some(&json!({"Fn::Sub": "http://${LoadBalancer.DNSName}:8194"}))
            );
            for key in [
                "CONSOLE_WEB_URL",
                "CONSOLE_API_URL",
                "SERVICE_API_URL",
                "APP_WEB_URL",
                "TRIGGER_URL",
                "ENDPOINT_URL_TEMPLATE",
            ] {
                assert!(env(c, key).is_some(), "{name}: {key}");
            }
            // Read by no supported version: BROKER_USE_SSL is derived from the URL's scheme.
            for key in [
                "BROKER_USE_SSL",
                "SERVER_CONSOLE_API_URL",
                "NEXT_TELEMETRY_DISABLED",
            ] {
                assert!(env(c, key).is_none(), "{name}: {key}");
            }
            for (key, value) in containers::OFFLINE_SWITCHES {
                assert_eq!(env(c, key), Some(&json!(value)), "{name}: {key}");
            }
        }
        assert_eq!(
            env(container(&t, "worker"), "CELERY_WORKER_AMOUNT"),
            Some(&json!("4"))
        );
        // 1.13.3 has none of the 1.16 switches.
        let old = example_for("1.13.3");
        for name in ["api", "worker", "beat", "migrate"] {
            for (key, _) in containers::OFFLINE_SWITCHES_1_16 {
                assert!(env(container(&old, name), key).is_none(), "{name}: {key}");
            }
        }
        assert!(env(container(&old, "web"), "SERVER_CONSOLE_API_URL").is_none());
        assert!(env(container(&old, "plugin-daemon"), "PIP_MIRROR_AUTO_DETECT").is_none());
        // One secret per purpose: five different secrets behind the five keys.
        let api = container(&t, "api");
        let sources: std::collections::BTreeSet<String> = [
            "CELERY_BROKER_URL",
            "SECRET_KEY",
            "CODE_EXECUTION_API_KEY",
            "PLUGIN_DAEMON_KEY",
            "INNER_API_KEY_FOR_PLUGIN",
        ]
        .iter()
        .map(|k| secret(api, k).unwrap().to_string())
        .collect();
        assert_eq!(sources.len(), 5);
        let daemon = container(&t, "plugin-daemon");
        for (key, value) in [
            ("DB_DATABASE", "dify_plugin"),
            ("DB_SSL_MODE", "require"),
            ("FORCE_VERIFYING_SIGNATURE", "true"),
            ("PLUGIN_STORAGE_TYPE", "aws_s3"),
            ("PLUGIN_WORKING_PATH", "/app/storage/cwd"),
            ("PIP_MIRROR_AUTO_DETECT", "false"),
            ("PLUGIN_REMOTE_INSTALLING_ENABLED", "false"),
        ] {
            assert_eq!(env(daemon, key), Some(&json!(value)), "daemon: {key}");
        }
        assert!(env(daemon, "PLUGIN_REMOTE_INSTALLING_PORT").is_none());
        let timeout: u32 = env(daemon, "PYTHON_ENV_INIT_TIMEOUT")
            .unwrap()
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!(timeout < 600, "within the daemon's 10-minute install limit");
        // The daemon refuses CERT_REQUIRED without a CA file; empty verifies already.
        assert!(env(daemon, "REDIS_SSL_CERT_REQS").is_none());
        assert_eq!(
            secret(daemon, "SERVER_KEY"),
            secret(api, "PLUGIN_DAEMON_KEY")
        );
        assert_eq!(
            secret(daemon, "DIFY_INNER_API_KEY"),
            secret(api, "INNER_API_KEY_FOR_PLUGIN")
        );
        let sandbox = container(&t, "sandbox");
        assert_eq!(
            secret(sandbox, "API_KEY"),
            secret(api, "CODE_EXECUTION_API_KEY")
        );
        assert_eq!(env(sandbox, "GIN_MODE"), Some(&json!("release")));
        // Dify always asks for the network; the sandbox must not refuse it.
        assert_eq!(env(sandbox, "ENABLE_NETWORK"), Some(&json!("true")));
        for c in containers(&t) {
            // Nothing secret in plain text.
            for e in c["Environment"].as_array().unwrap() {
                let name = e["Name"].as_str().unwrap();
                assert!(
                    !(name.ends_with("PASSWORD")
                        || name.ends_with("_KEY")
                        || name.contains("TOKEN")),
                    "{}: {name} in plain environment",
                    c["Name"]
                );
            }
        }
    }

    #[test]
    fn web_listens_on_every_address_and_renders_through_an_internal_port() {
        let t = example();
        let web = container(&t, "web");
        assert_eq!(env(web, "HOSTNAME"), Some(&json!("0.0.0.0")));
        let check = web["HealthCheck"]["Command"][1].as_str().unwrap();
        assert!(check.contains("http://127.0.0.1:3000/"), "{check}");
        assert_eq!(
            env(web, "SERVER_CONSOLE_API_URL"),
            Some(&json!({"Fn::Sub": "http://${LoadBalancer.DNSName}:5001"}))
        );
        for (key, value) in containers::WEB_SWITCHES {
            assert_eq!(env(web, key), Some(&json!(value)), "web: {key}");
        }
        assert!(env(web, "MARKETPLACE_ENABLED").is_none());
        // Port 5001 forwards to the api and admits the web task only; 8194 the api task only.
        let listener = &t["Resources"]["InternalApiListener"]["Properties"];
        assert_eq!(listener["Port"], 5001);
        assert_eq!(
            listener["DefaultActions"][0]["TargetGroupArn"],
            json!({"Ref": "ApiTargetGroup"})
        );
        for (rule, port, source) in [
            (
                "LoadBalancerIngressApiFromWebTask",
                5001,
                "WebTaskSecurityGroup",
            ),
            (
                "LoadBalancerIngressSandboxFromApiTask",
                8194,
                "ApiTaskSecurityGroup",
            ),
        ] {
            let p = &t["Resources"][rule]["Properties"];
            assert_eq!(p["FromPort"], port);
            assert_eq!(p["SourceSecurityGroupId"]["Fn::GetAtt"][0], source);
            assert_eq!(p["GroupId"]["Fn::GetAtt"][0], "LoadBalancerSecurityGroup");
        }
        for (_, r) in resources(&t, "AWS::EC2::SecurityGroupIngress") {
            if r["Properties"]["CidrIp"].is_object() {
                assert!(
                    ![5001, 8194].contains(&r["Properties"]["FromPort"].as_u64().unwrap()),
                    "client networks reach an internal port"
                );
            }
        }
    }

    #[test]
    fn sandbox_code_reaches_nothing_inside() {
        let t = example();
        let task = &t["Resources"]["SandboxTask"]["Properties"];
        assert_eq!(task["TaskRoleArn"], json!({"Ref": "AWS::NoValue"}));
        assert_eq!(task_containers(&t, "SandboxTask").len(), 1);
        let service = &t["Resources"]["SandboxService"]["Properties"];
        assert_eq!(
            service["NetworkConfiguration"]["AwsvpcConfiguration"]["SecurityGroups"][0]["Fn::GetAtt"]
                [0],
            "SandboxTaskSecurityGroup"
        );
        assert_eq!(service["EnableExecuteCommand"], false);
        let group = &t["Resources"]["SandboxTaskSecurityGroup"]["Properties"];
        assert_eq!(
            group["SecurityGroupEgress"],
            json!([{
                "IpProtocol": "tcp", "FromPort": 443, "ToPort": 443, "CidrIp": "0.0.0.0/0",
                "Description": "HTTPS only: ECR, CloudWatch Logs, Secrets Manager endpoints and the S3 gateway",
            }])
        );
        // No other group admits the sandbox's group.
        let text = t["Resources"]
            .as_object()
            .unwrap()
            .iter()
            .filter(|(id, _)| {
                id.as_str() != "SandboxTaskSecurityGroup" && id.as_str() != "SandboxService"
            })
            .map(|(_, r)| r.to_string())
            .collect::<String>();
        assert!(!text.contains("SandboxTaskSecurityGroup"));
    }

    #[test]
    fn routes_targets_and_health_checks() {
        let t = example();
        let rules = resources(&t, "AWS::ElasticLoadBalancingV2::ListenerRule");
        let route = |path: &str| -> String {
            rules
                .iter()
                .find(|(_, r)| {
                    r["Properties"]["Conditions"][0]["PathPatternConfig"]["Values"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .any(|v| v == path)
                })
                .map(|(_, r)| {
                    r["Properties"]["Actions"][0]["TargetGroupArn"]["Ref"]
                        .as_str()
                        .unwrap()
                        .to_owned()
                })
                .unwrap_or_else(|| panic!("no rule for {path}"))
        };
        for base in [
            "/console/api",
            "/api",
            "/v1",
            "/files",
            "/triggers",
            "/mcp",
            "/openapi",
        ] {
            assert_eq!(route(base), "ApiTargetGroup", "{base}");
            assert_eq!(route(&format!("{base}/*")), "ApiTargetGroup", "{base}/*");
        }
        assert_eq!(route("/.well-known/*"), "ApiTargetGroup");
        assert_eq!(route("/e"), "PluginDaemonTargetGroup");
        assert_eq!(route("/e/*"), "PluginDaemonTargetGroup");
        assert_eq!(route("/*"), "WebTargetGroup");
        let web_priority = rules
            .iter()
            .find(|(_, r)| {
                r["Properties"]["Conditions"][0]["PathPatternConfig"]["Values"][0] == "/*"
            })
            .map(|(_, r)| r["Properties"]["Priority"].as_u64().unwrap())
            .unwrap();
        assert!(
            rules
                .iter()
                .all(|(_, r)| r["Properties"]["Priority"].as_u64().unwrap() <= web_priority)
        );
        for (id, port, path) in [
            ("ApiTargetGroup", 5001, "/health"),
            ("PluginDaemonTargetGroup", 5002, "/health/check"),
            ("SandboxTargetGroup", 8194, "/health"),
            ("WebTargetGroup", 3000, "/"),
        ] {
            let p = &t["Resources"][id]["Properties"];
            assert_eq!(p["Port"], port);
            assert_eq!(p["HealthCheckPath"], path);
            assert_eq!(p["TargetType"], "ip");
            assert_eq!(p["HealthyThresholdCount"], 2);
            assert_eq!(p["UnhealthyThresholdCount"], 10);
            assert_eq!(p["Matcher"]["HttpCode"], "200-299,307");
            assert_eq!(p["TargetGroupAttributes"][0]["Value"], "10");
        }
        let lb = &t["Resources"]["LoadBalancer"]["Properties"];
        assert_eq!(lb["Scheme"], "internal");
        assert!(
            lb["LoadBalancerAttributes"]
                .to_string()
                .contains(r#""Value":"600""#)
        );
        let http = &t["Resources"]["HttpListener"]["Properties"];
        assert_eq!(
            http["DefaultActions"]["Fn::If"][2][0]["FixedResponseConfig"]["StatusCode"],
            "400"
        );
        assert_eq!(
            t["Resources"]["HttpsListener"]["Condition"],
            "HasCertificate"
        );
    }

    #[test]
    fn nothing_public_no_lambda_no_cloudfront_and_logs_expire() {
        let t = example();
        let mut without_egress = t.clone();
        without_egress["Resources"]["SandboxTaskSecurityGroup"]["Properties"]
            .as_object_mut()
            .unwrap()
            .remove("SecurityGroupEgress");
        let text = without_egress.to_string();
        for banned in [
            "::/0",
            "0.0.0.0/0",
            "CloudFront",
            "Lambda",
            "Custom::",
            "AWS::CDK",
        ] {
            assert!(!text.contains(banned), "{banned} in the template");
        }
        for (_, group) in resources(&t, "AWS::EC2::SecurityGroupIngress") {
            let p = &group["Properties"];
            assert!(
                p["SourceSecurityGroupId"].is_object()
                    || p["CidrIp"]["Ref"]
                        .as_str()
                        .unwrap()
                        .starts_with("AllowedCidr")
            );
        }
        let logs = resources(&t, "AWS::Logs::LogGroup");
        assert_eq!(logs.len(), containers::CONTAINERS.len());
        for (_, group) in logs {
            assert_eq!(
                group["Properties"]["RetentionInDays"],
                json!({"Ref": "LogRetentionDays"})
            );
        }
        for (id, _) in resources(&t, "AWS::S3::Bucket") {
            let policy = resources(&t, "AWS::S3::BucketPolicy")
                .into_iter()
                .find(|(_, p)| p["Properties"]["Bucket"]["Ref"] == id.as_str())
                .unwrap_or_else(|| panic!("{id} has no policy"));
            assert!(
                policy.1.to_string().contains("aws:SecureTransport"),
                "{id} not TLS-only"
            );
        }
        let cache = &t["Resources"]["Redis"]["Properties"];
        assert_eq!(cache["TransitEncryptionEnabled"], true);
        assert_eq!(cache["Engine"], "valkey");
        assert!(
            cache["AuthToken"]["Fn::Sub"]
                .as_str()
                .unwrap()
                .starts_with("{{resolve:secretsmanager:")
        );
        assert_eq!(
            t["Resources"]["Database"]["Properties"]["StorageEncrypted"],
            true
        );
        assert_eq!(t["Resources"]["Database"]["DeletionPolicy"], "Snapshot");
        // No SSM parameter holds anything.
        assert!(resources(&t, "AWS::SSM::Parameter").is_empty());
        for output in ["Url", "Cluster", "ApiService", "WebService", "ExecCommand"] {
            assert!(t["Outputs"][output].is_object(), "output {output}");
        }
        let services = resources(&t, "AWS::ECS::Service");
        assert_eq!(services.len(), 4);
        for (id, s) in services {
            let p = &s["Properties"];
            assert_eq!(p["EnableExecuteCommand"], id != "SandboxService");
            assert_eq!(
                p["NetworkConfiguration"]["AwsvpcConfiguration"]["AssignPublicIp"],
                "DISABLED"
            );
        }
        assert_eq!(
            resources(&t, "AWS::ApplicationAutoScaling::ScalableTarget").len(),
            2
        );
    }

    #[test]
    fn plugin_venvs_live_on_encrypted_efs_reachable_only_from_the_api_task() {
        let t = example();
        let daemon = container(&t, "plugin-daemon");
        assert_eq!(
            daemon["MountPoints"],
            json!([{ "SourceVolume": "plugin-cwd", "ContainerPath": "/app/storage/cwd" }])
        );
        assert_eq!(
            env(daemon, "PLUGIN_WORKING_PATH"),
            Some(&json!("/app/storage/cwd"))
        );
        for name in ["api", "worker", "beat", "sandbox", "web"] {
            assert_eq!(container(&t, name)["MountPoints"], json!([]), "{name}");
        }
        let volume = &t["Resources"]["ApiTask"]["Properties"]["Volumes"][0];
        assert_eq!(
            volume["EFSVolumeConfiguration"]["TransitEncryption"],
            "ENABLED"
        );
        assert_eq!(
            t["Resources"]["WebTask"]["Properties"]["Volumes"],
            json!([])
        );
        assert_eq!(
            t["Resources"]["PluginFiles"]["Properties"]["Encrypted"],
            true
        );
        let mounts = resources(&t, "AWS::EFS::MountTarget");
        assert_eq!(mounts.len(), 2, "one per subnet");
        let nfs = &t["Resources"]["PluginFilesSecurityGroup"]["Properties"]["SecurityGroupIngress"];
        assert_eq!(nfs.as_array().unwrap().len(), 1);
        assert_eq!(nfs[0]["FromPort"], 2049);
        assert_eq!(
            nfs[0]["SourceSecurityGroupId"]["Fn::GetAtt"][0],
            "ApiTaskSecurityGroup"
        );
        let after = t["Resources"]["ApiService"]["DependsOn"].to_string();
        assert!(after.contains("PluginFilesMountA") && after.contains("PluginFilesMountB"));
    }

    #[test]
    fn least_privilege_roles() {
        let t = example();
        let execution = t["Resources"]["ExecutionRole"]["Properties"]["Policies"][0]["PolicyDocument"]["Statement"].as_array().unwrap();
        let pull = execution
            .iter()
            .find(|s| s["Action"].to_string().contains("ecr:BatchGetImage"))
            .unwrap();
        let repositories = pull["Resource"].as_array().unwrap();
        assert_eq!(
            repositories.len(),
            ROLES.len(),
            "pull from our repositories only"
        );
        let secrets = execution
            .iter()
            .find(|s| s["Action"] == "secretsmanager:GetSecretValue")
            .unwrap();
        assert_eq!(
            secrets["Resource"].as_array().unwrap().len(),
            7,
            "the stack's seven secrets"
        );
        let api = t["Resources"]["ApiTaskRole"].to_string();
        for action in compute::BEDROCK_ACTIONS {
            assert!(api.contains(action), "{action}");
        }
        assert!(api.contains("ssmmessages:OpenDataChannel"));
        assert!(
            !t["Resources"]["WebTaskRole"]
                .to_string()
                .contains("bedrock")
        );
        assert!(!t.to_string().contains(r#""Action":"*""#));
    }

    #[test]
    fn extra_environment_goes_where_it_is_asked() {
        let settings: StackSettings = toml::from_str(
            r#"
            [environment.all]
            TZ = "Asia/Tokyo"
            [environment.api]
            LOG_LEVEL = "DEBUG"
            MAIL_PASSWORD = { ssm = "/dify/mail" }
            [environment.plugin-daemon]
            HTTP_TOKEN = { secret = "arn:aws:secretsmanager:us-east-1:111122223333:secret:tok-AbCdEf", field = "value" }
            "#,
        )
        .unwrap();
        let spec = AppSpec {
            environment: settings.environment,
            ..example_spec()
        };
        let t: Value = serde_json::from_str(&template(&spec).unwrap().to_json()).unwrap();
        for c in containers(&t) {
            assert_eq!(env(c, "TZ"), Some(&json!("Asia/Tokyo")));
        }
        let api = container(&t, "api");
        assert_eq!(env(api, "LOG_LEVEL"), Some(&json!("DEBUG")));
        assert_eq!(
            env(container(&t, "worker"), "LOG_LEVEL"),
            Some(&json!("INFO"))
        );
        assert!(
            secret(api, "MAIL_PASSWORD")
                .unwrap()
                .to_string()
                .contains(":parameter/dify/mail")
        );
        assert_eq!(
            secret(container(&t, "plugin-daemon"), "HTTP_TOKEN"),
            Some(&json!(
                "arn:aws:secretsmanager:us-east-1:111122223333:secret:tok-AbCdEf:value::"
            ))
        );
        let execution = t["Resources"]["ExecutionRole"].to_string();
        assert!(execution.contains("ssm:GetParameters"));
        assert!(
            execution
                .contains(r#""arn:aws:secretsmanager:us-east-1:111122223333:secret:tok-AbCdEf""#)
        );
        let missing = AppSpec {
            images: vec![],
            ..example_spec()
        };
        assert!(
            template(&missing)
                .unwrap_err()
                .to_string()
                .contains("needs a `api` image")
        );
    }

    #[test]
    fn the_template_stands_alone() {
        let t = example();
        for service in ["ApiService", "BeatService"] {
            let after = t["Resources"][service]["DependsOn"].to_string();
            for needed in ["DatabaseWriter", "DatabaseSecretAttachment"] {
                assert!(after.contains(needed), "{service} before {needed}");
            }
        }
        // Tasks run only in the two subnets that have a mount target.
        for (id, s) in resources(&t, "AWS::ECS::Service") {
            assert_eq!(
                s["Properties"]["NetworkConfiguration"]["AwsvpcConfiguration"]["Subnets"],
                json!([
                    {"Fn::Select": [0, {"Ref": "SubnetIds"}]},
                    {"Fn::Select": [1, {"Ref": "SubnetIds"}]},
                ]),
                "{id}"
            );
        }
        // Nothing waits for a placeholder object: the default Start is true.
        assert_eq!(t["Parameters"]["Start"]["Default"], "true");
        let rules = t["Rules"].as_object().unwrap();
        let certificate = &rules["CertificateNeedsPublicUrl"];
        assert_eq!(
            certificate["RuleCondition"],
            json!({"Fn::Not": [{"Fn::Equals": [{"Ref": "CertificateArn"}, ""]}]})
        );
        assert_eq!(
            certificate["Assertions"][0]["Assert"],
            json!({"Fn::Not": [{"Fn::Equals": [{"Ref": "PublicUrl"}, ""]}]})
        );
        // Every CPU value of both tasks has a memory rule; every memory it allows is allowed.
        for (cpu, memory) in params::SIZES {
            for units in params::FARGATE_CPUS {
                let rule = &rules[&format!("{memory}For{units}Cpu")];
                assert_eq!(
                    rule["RuleCondition"],
                    json!({"Fn::Equals": [{"Ref": cpu}, units.to_string()]})
                );
                let allowed = &rule["Assertions"][0]["Assert"]["Fn::Contains"][0];
                for m in params::fargate_memory(units) {
                    assert!(allowed.as_array().unwrap().contains(&json!(m.to_string())));
                    assert!(
                        t["Parameters"][memory]["AllowedValues"]
                            .as_array()
                            .unwrap()
                            .contains(&json!(m.to_string()))
                    );
                }
            }
        }
        // min ≤ max: with min n, every max below n is refused.
        for (min, max) in params::COUNTS {
            for n in 2..=params::MAX_TASKS {
                let rule = &rules[&format!("{max}AtLeast{n}")];
                assert_eq!(
                    rule["RuleCondition"],
                    json!({"Fn::Equals": [{"Ref": min}, n.to_string()]})
                );
                let below = rule["Assertions"][0]["Assert"]["Fn::Not"][0]["Fn::Contains"][0]
                    .as_array()
                    .unwrap()
                    .len();
                assert_eq!(below as u32, n - 1);
            }
            assert_eq!(t["Parameters"][max]["MaxValue"], params::MAX_TASKS);
            assert_eq!(t["Parameters"][min]["MinValue"], 1);
        }
    }

    #[test]
    fn the_plan_refuses_what_the_template_rules_refuse() {
        let given = |pairs: &[(&str, &str)]| -> std::collections::BTreeMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let cert = "arn:aws:acm:us-east-1:111122223333:certificate/x";
        for (bad, needle) in [
            (
                given(&[("CertificateArn", cert), ("PublicUrl", "")]),
                "PublicUrl",
            ),
            (given(&[("ApiCpu", "4096"), ("ApiMemory", "4096")]), "8192"),
            (given(&[("WebCpu", "512"), ("WebMemory", "512")]), "1024"),
            (
                given(&[("ApiMinTasks", "3"), ("ApiMaxTasks", "2")]),
                "above",
            ),
            (given(&[("WebMaxTasks", "0")]), "1 to 10"),
            (given(&[("ApiMemory", "lots")]), "whole number"),
        ] {
            let err = params::validate(&bad).unwrap_err().to_string();
            assert!(err.contains(needle), "{bad:?}: {err}");
        }
        for good in [
            given(&[]),
            given(&[
                ("CertificateArn", cert),
                ("PublicUrl", "https://dify.example.internal"),
            ]),
            // A PublicUrl kept from an earlier install is checked by CloudFormation.
            given(&[("CertificateArn", cert)]),
            given(&[("ApiCpu", "2048"), ("ApiMemory", "16384")]),
            given(&[("ApiMinTasks", "2"), ("ApiMaxTasks", "2")]),
        ] {
            assert!(params::validate(&good).is_ok(), "{good:?}");
        }
    }

    /// Changing any of these replaces a resource that holds data, or generates a secret
    /// anew (CloudFormation's "update requires: replacement" properties, AWS resource
    /// reference for each type). A change here must be deliberate: it loses data on every
    /// existing stack unless an upgrade path moves it.
    #[test]
    fn data_resources_and_secrets_are_frozen() {
        let t = example();
        let frozen = json!({
            "Database": {
                "DeletionPolicy": "Snapshot", "UpdateReplacePolicy": "Snapshot",
                "Engine": "aurora-postgresql", "DatabaseName": "main", "StorageEncrypted": true,
                "MasterUsername": {"Fn::Sub": "{{resolve:secretsmanager:${DatabaseSecret}:SecretString:username}}"},
                "DBSubnetGroupName": {"Ref": "DatabaseSubnets"},
            },
            "DatabaseSubnets": { "SubnetIds": {"Ref": "SubnetIds"} },
            "StorageBucket": { "DeletionPolicy": "Retain", "UpdateReplacePolicy": "Retain" },
            "AccessLogBucket": { "DeletionPolicy": "Retain", "UpdateReplacePolicy": "Retain" },
            "PluginFiles": {
                "DeletionPolicy": "Delete", "UpdateReplacePolicy": "Delete",
                "Encrypted": true, "PerformanceMode": "generalPurpose",
            },
            "Redis": {
                "DeletionPolicy": "Delete", "UpdateReplacePolicy": "Delete",
                "Engine": "valkey", "Port": 6379, "AtRestEncryptionEnabled": true,
                "CacheSubnetGroupName": {"Ref": "RedisSubnets"},
            },
            "DatabaseSecret": {
                "DeletionPolicy": "Retain", "UpdateReplacePolicy": "Retain",
                "GenerateSecretString": {
                    "PasswordLength": 32, "ExcludePunctuation": true,
                    "SecretStringTemplate": "{\"username\":\"postgres\"}", "GenerateStringKey": "password",
                },
            },
            "DifySecretKey": {
                "DeletionPolicy": "Retain", "UpdateReplacePolicy": "Retain",
                "GenerateSecretString": { "PasswordLength": 48, "ExcludePunctuation": true },
            },
            "RedisAuthSecret": {
                "DeletionPolicy": "Delete", "UpdateReplacePolicy": "Delete",
                "GenerateSecretString": {
                    "PasswordLength": 64, "ExcludePunctuation": true,
                    "SecretStringTemplate": "{}", "GenerateStringKey": "token",
                },
            },
            "SandboxApiKey": {
                "DeletionPolicy": "Delete", "UpdateReplacePolicy": "Delete",
                "GenerateSecretString": { "PasswordLength": 40, "ExcludePunctuation": true },
            },
            "PluginDaemonKey": {
                "DeletionPolicy": "Delete", "UpdateReplacePolicy": "Delete",
                "GenerateSecretString": { "PasswordLength": 40, "ExcludePunctuation": true },
            },
            "PluginInnerApiKey": {
                "DeletionPolicy": "Delete", "UpdateReplacePolicy": "Delete",
                "GenerateSecretString": { "PasswordLength": 40, "ExcludePunctuation": true },
            },
        });
        for (id, properties) in frozen.as_object().unwrap() {
            let resource = &t["Resources"][id];
            for (key, value) in properties.as_object().unwrap() {
                let actual = if key.ends_with("Policy") && key != "GenerateSecretString" {
                    &resource[key]
                } else {
                    &resource["Properties"][key]
                };
                assert_eq!(actual, value, "{id}.{key} changed");
            }
        }
        // Properties that would replace these resources and are not listed above must stay
        // absent (KmsKeyId, a bucket name, a file system's throughput is in place).
        let mut absent = vec![
            ("Database", "KmsKeyId"),
            ("Database", "DBClusterIdentifier"),
            ("Database", "SnapshotIdentifier"),
            ("Database", "SourceDBClusterIdentifier"),
            ("Database", "EngineMode"),
            ("DatabaseSubnets", "DBSubnetGroupName"),
            ("StorageBucket", "BucketName"),
            ("StorageBucket", "ObjectLockEnabled"),
            ("AccessLogBucket", "BucketName"),
            ("PluginFiles", "KmsKeyId"),
            ("PluginFiles", "AvailabilityZoneName"),
            ("Redis", "KmsKeyId"),
            ("Redis", "ReplicationGroupId"),
            ("Redis", "SnapshotArns"),
        ];
        for (id, r) in t["Resources"].as_object().unwrap() {
            if r["Type"] == "AWS::SecretsManager::Secret" {
                absent.push((id.as_str(), "Name"));
            }
        }
        for (id, key) in absent {
            assert!(
                t["Resources"][id]["Properties"][key].is_null(),
                "{id}.{key}"
            );
        }
        // Every secret, bucket, database, cache, file system and log group says what a stack
        // delete does to it.
        for (id, r) in t["Resources"].as_object().unwrap() {
            let kind = r["Type"].as_str().unwrap();
            if [
                "AWS::SecretsManager::Secret",
                "AWS::S3::Bucket",
                "AWS::RDS::DBCluster",
                "AWS::RDS::DBInstance",
                "AWS::ElastiCache::ReplicationGroup",
                "AWS::EFS::FileSystem",
                "AWS::Logs::LogGroup",
            ]
            .contains(&kind)
            {
                assert!(r["DeletionPolicy"].is_string(), "{id}");
                assert_eq!(r["DeletionPolicy"], r["UpdateReplacePolicy"], "{id}");
            }
        }
    }
}
