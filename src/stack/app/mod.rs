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
    use serde_json::Value;

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

    #[test]
    fn dump() {
        if let Ok(path) = std::env::var("DUMP_TEMPLATE") {
            std::fs::write(path, template(&example_spec()).unwrap().to_json()).unwrap();
        }
        let _ = example();
    }
}
