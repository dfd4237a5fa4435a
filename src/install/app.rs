//! The application step: the bundle's signed template, its parameters worked out from the
//! install settings, the network and the ECR layout; staged in S3, deployed by change set,
//! then waited on until Dify answers.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;

use super::ecr::ImageTarget;
use super::network::{self, NetworkPlan, NetworkTarget};
use crate::aws::cloudformation::{
    Approver, CloudFormation, Deployed, StackRequest, TemplateSource,
};
use crate::aws::health::Health;
use crate::aws::staging::{self, Staging};
use crate::bundle::format::StackTemplate;
use crate::error::{Error, Result};
use crate::progress::Progress;
use crate::stack::app::balancer::{API_TARGET, DAEMON_TARGET, SANDBOX_TARGET, WEB_TARGET};
use crate::stack::app::compute::{
    API_SERVICE, BEAT_SERVICE, CLUSTER, SANDBOX_SERVICE, WEB_SERVICE,
};
use crate::stack::app::params::{self, MAX_ALLOWED_CIDRS};
use crate::stack::app::{OUTPUT_URL, ROLES};

pub struct AppOptions {
    pub stack: String,
    /// Client networks; empty: the VPC's CIDR.
    pub allowed_cidrs: Vec<String>,
    /// Template parameters chosen by the operator.
    pub settings: BTreeMap<String, String>,
    pub staging_bucket: Option<String>,
    /// Zero: don't wait.
    pub wait: Duration,
}

#[derive(Clone, Debug, Serialize)]
pub struct AppPlan {
    pub stack: String,
    /// The stack's status, `None` when it does not exist yet.
    pub status: Option<String>,
    pub template_digest: String,
    pub template_bytes: u64,
    pub staging_bucket: String,
    /// Every parameter given; `VpcId`/`SubnetIds` are filled in once the endpoints stack
    /// has made a new VPC.
    pub parameters: BTreeMap<String, String>,
    #[serde(skip)]
    template: Vec<u8>,
    #[serde(skip)]
    network: (String, NetworkTarget),
    #[serde(skip)]
    wait: Duration,
}

#[derive(Clone, Debug, Serialize)]
pub struct AppReport {
    pub stack: String,
    /// What each deploy did.
    pub deploys: Vec<Deployed>,
    pub outputs: BTreeMap<String, String>,
    pub url: Option<String>,
    /// A shell in the api container.
    pub exec_command: String,
    pub healthy: bool,
}

impl AppReport {
    pub fn changed(&self) -> bool {
        self.deploys
            .iter()
            .any(|d| !matches!(d, Deployed::NothingToDo))
    }
}

const PENDING: &str = "(from the endpoints stack)";

/// The template as the bundle holds it: its record in bundle.json and its (checked) bytes.
pub struct BundledTemplate<'a> {
    pub record: &'a StackTemplate,
    pub bytes: Vec<u8>,
}

pub async fn plan(
    config: &aws_config::SdkConfig,
    account: &str,
    region: &str,
    template: BundledTemplate<'_>,
    images: &[ImageTarget],
    network: (&str, &NetworkTarget, &NetworkPlan),
    options: &AppOptions,
) -> Result<AppPlan> {
    let (network_stack, target, network_plan) = network;
    let parsed: serde_json::Value = serde_json::from_slice(&template.bytes)
        .map_err(|e| Error::invalid(format!("the bundle's stack template: {e}")))?;
    let template_parameters: Vec<String> = parsed["Parameters"]
        .as_object()
        .map(|p| p.keys().cloned().collect())
        .unwrap_or_default();
    let mut parameters = BTreeMap::new();
    match network::vpc_and_subnets(config, network_stack, target).await? {
        Some((vpc, subnets)) => {
            parameters.insert(params::VPC_ID.to_owned(), vpc);
            parameters.insert(params::SUBNET_IDS.to_owned(), subnets.join(","));
        }
        None => {
            parameters.insert(params::VPC_ID.to_owned(), PENDING.to_owned());
            parameters.insert(params::SUBNET_IDS.to_owned(), PENDING.to_owned());
        }
    }
    let cidrs = if options.allowed_cidrs.is_empty() {
        vec![network_plan.cidr.clone()]
    } else {
        options.allowed_cidrs.clone()
    };
    if cidrs.len() > MAX_ALLOWED_CIDRS {
        return Err(Error::invalid(format!(
            "{} allowed client networks given; the stack takes at most {MAX_ALLOWED_CIDRS} (summarise them into wider CIDRs)",
            cidrs.len()
        )));
    }
    for (n, cidr) in cidrs.iter().enumerate() {
        if cidr.ends_with("/0") {
            return Err(Error::invalid(format!(
                "allowed client network {cidr}: the load balancer is internal; give the networks of its users, not the whole internet"
            )));
        }
        parameters.insert(params::allowed_cidr(n + 1), cidr.clone());
    }
    for role in ROLES {
        let image = images.iter().find(|i| i.role == role).ok_or_else(|| {
            Error::invalid(format!(
                "the bundle has no `{role}` image, which the application stack runs"
            ))
        })?;
        parameters.insert(params::repository(role), image.repository.clone());
    }
    for (key, value) in &options.settings {
        if !template_parameters.contains(key) {
            return Err(Error::invalid(format!(
                "stack setting {key}: the bundle's template has no such parameter"
            )));
        }
        parameters.insert(key.clone(), value.clone());
    }
    params::validate(&parameters)?;
    let status = CloudFormation::new(config).status(&options.stack).await?;
    Ok(AppPlan {
        stack: options.stack.clone(),
        status,
        template_digest: template.record.digest.to_string(),
        template_bytes: template.record.size,
        template: template.bytes,
        staging_bucket: options
            .staging_bucket
            .clone()
            .unwrap_or_else(|| staging::default_bucket(account, region)),
        parameters,
        network: (network_stack.to_owned(), target.clone()),
        wait: options.wait,
    })
}

fn request(
    url: &str,
    parameters: &BTreeMap<String, String>,
    start: bool,
    approve: &Option<Approver>,
) -> StackRequest {
    let mut parameters: Vec<(String, String)> = parameters
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    parameters.push((params::START.to_owned(), start.to_string()));
    StackRequest {
        template: TemplateSource::Url(url.to_owned()),
        parameters,
        iam: true,
        approve: approve.clone(),
    }
}

pub async fn apply(
    config: &aws_config::SdkConfig,
    region: &str,
    plan: &AppPlan,
    approve: Option<Approver>,
    progress: &dyn Progress,
) -> Result<AppReport> {
    let mut parameters = plan.parameters.clone();
    if parameters.get(params::VPC_ID).map(String::as_str) == Some(PENDING) {
        let (stack, target) = &plan.network;
        let (vpc, subnets) = network::vpc_and_subnets(config, stack, target)
            .await?
            .ok_or_else(|| {
                Error::invalid(format!(
                    "stack {stack} has no VPC and subnets; run install again to create them"
                ))
            })?;
        parameters.insert(params::VPC_ID.to_owned(), vpc);
        parameters.insert(params::SUBNET_IDS.to_owned(), subnets.join(","));
    }
    let staging = Staging::new(config, &plan.staging_bucket, region);
    if staging.ensure().await? {
        progress.note(&format!(
            "created staging bucket {} (private, encrypted, TLS only)",
            staging.bucket()
        ));
    }
    let url = staging.put_template(&plan.stack, &plan.template).await?;
    let cfn = CloudFormation::new(config);
    progress.step(&format!(
        "deploying stack {} (Dify, internal load balancer)",
        plan.stack
    ));
    let deploys = vec![
        cfn.deploy(
            &plan.stack,
            &request(&url, &parameters, true, &approve),
            progress,
        )
        .await?,
    ];
    let outputs = cfn.outputs(&plan.stack).await?;
    let ids = cfn.physical_ids(&plan.stack).await?;
    let id = |name: &str| ids.get(name).cloned().unwrap_or_default();
    let health = Health::new(config);
    let url = match outputs.get(OUTPUT_URL) {
        Some(url) => Some(url.clone()),
        None => health
            .load_balancer_dns(&id("LoadBalancer"))
            .await?
            .map(|dns| format!("http://{dns}")),
    };
    let cluster = id(CLUSTER);
    let cluster_name = cluster.rsplit('/').next().unwrap_or(&cluster).to_owned();
    let api_service = id(API_SERVICE);
    let service_name = api_service.rsplit('/').next().unwrap_or(&api_service);
    let exec_command = format!(
        "aws ecs execute-command --region {region} --cluster {cluster_name} --container api --interactive --command /bin/bash --task $(aws ecs list-tasks --region {region} --cluster {cluster_name} --service-name {service_name} --query 'taskArns[0]' --output text)"
    );
    let mut healthy = false;
    if !plan.wait.is_zero() {
        progress.step("waiting for the services to be stable and the targets healthy");
        health
            .wait(
                &id(CLUSTER),
                &[
                    id(API_SERVICE),
                    id(BEAT_SERVICE),
                    id(SANDBOX_SERVICE),
                    id(WEB_SERVICE),
                ],
                &[
                    id(API_TARGET.id),
                    id(DAEMON_TARGET.id),
                    id(SANDBOX_TARGET.id),
                    id(WEB_TARGET.id),
                ],
                plan.wait,
                progress,
            )
            .await?;
        healthy = true;
    }
    Ok(AppReport {
        stack: plan.stack.clone(),
        url,
        exec_command,
        deploys,
        outputs,
        healthy,
    })
}
