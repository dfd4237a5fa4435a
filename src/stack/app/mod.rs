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
use crate::stack::{Template, get_att, reference, sub};

/// The images the stack runs, by role.
pub const ROLES: [&str; 4] = ["api", "web", "sandbox", "plugin-daemon"];

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

    let api = containers::api_task(&spec.environment, &spec.daemon_environment);
    let web = [containers::web_task(&spec.environment)];
    let all: Vec<&containers::Container> = api.iter().chain(web.iter()).collect();
    compute::roles(&mut t, &ROLES, &all);
    compute::cluster(&mut t);
    for (id, containers, role, cpu, memory) in [
        (
            "ApiTask",
            &api[..],
            "ApiTaskRole",
            params::API_CPU,
            params::API_MEMORY,
        ),
        (
            "WebTask",
            &web[..],
            "WebTaskRole",
            params::WEB_CPU,
            params::WEB_MEMORY,
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
        "ECS service of api, worker, beat, sandbox and plugin daemon",
        get_att(compute::API_SERVICE, "Name"),
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
            ("api", "api", vec![5001]),
            ("worker", "api", vec![]),
            ("beat", "api", vec![]),
            ("sandbox", "sandbox", vec![8194]),
            ("plugin-daemon", "plugin-daemon", vec![5002, 5003]),
            ("web", "web", vec![3000]),
        ];
        assert_eq!(containers(&t).len(), expected.len());
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
        assert_eq!(
            api_task["ContainerDefinitions"].as_array().unwrap().len(),
            5
        );
        assert_eq!(api_task["Memory"], json!({"Ref": "ApiMemory"}));
        assert_eq!(t["Parameters"]["ApiMemory"]["Default"], "4096");
        assert_eq!(
            api_task["RuntimePlatform"]["CpuArchitecture"],
            json!({"Ref": "CpuArchitecture"})
        );
    }

    #[test]
    fn modes_migrations_and_offline_switches() {
        let t = example();
        for (name, mode) in [("api", "api"), ("worker", "worker"), ("beat", "beat")] {
            let c = container(&t, name);
            assert_eq!(env(c, "MODE"), Some(&json!(mode)));
            assert_eq!(
                env(c, "MIGRATION_ENABLED").is_some(),
                name == "worker",
                "only the worker migrates"
            );
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
            assert_eq!(env(c, "VECTOR_STORE"), Some(&json!("pgvector")));
            assert_eq!(env(c, "STORAGE_TYPE"), Some(&json!("s3")));
            assert_eq!(
                env(c, "CODE_EXECUTION_ENDPOINT"),
                Some(&json!("http://localhost:8194"))
            );
            assert_eq!(
                env(c, "PLUGIN_DAEMON_URL"),
                Some(&json!("http://localhost:5002"))
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
        }
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
        assert_eq!(env(daemon, "DB_DATABASE"), Some(&json!("dify_plugin")));
        assert_eq!(
            env(daemon, "FORCE_VERIFYING_SIGNATURE"),
            Some(&json!("true"))
        );
        assert_eq!(env(daemon, "PLUGIN_STORAGE_TYPE"), Some(&json!("aws_s3")));
        assert_eq!(
            env(daemon, "PLUGIN_WORKING_PATH"),
            Some(&json!("/app/storage/cwd"))
        );
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
        for c in containers(&t) {
            for (key, value) in containers::OFFLINE_SWITCHES {
                assert_eq!(env(c, key), Some(&json!(value)), "{}: {key}", c["Name"]);
            }
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
        for base in ["/console/api", "/api", "/v1", "/files", "/triggers", "/mcp"] {
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
        let text = t.to_string();
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
            assert!(
                group["Properties"]["CidrIp"]["Ref"]
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
        assert_eq!(services.len(), 2);
        for (_, s) in services {
            let p = &s["Properties"];
            assert_eq!(p["EnableExecuteCommand"], true);
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
}
