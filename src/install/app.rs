//! The application step: the bundle's signed template, its parameters worked out from the
//! install settings, the network and the ECR layout; staged in S3, deployed by change set,
//! then waited on until Dify answers. On an existing stack, parameters not given again are
//! kept, the change set is worked out in the plan, and a Dify version change snapshots the
//! database first (see `upgrade`).

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;

use super::ecr::ImageTarget;
use super::network::{self, NetworkPlan, NetworkTarget};
use super::upgrade::{self, Parameters, SnapshotPlan, Upgrade};
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
    /// Every parameter given (`parameters`; `VpcId`/`SubnetIds` are filled in once the
    /// endpoints stack has made a new VPC), kept, defaulted, changed and dropped.
    #[serde(flatten)]
    pub parameters: Parameters,
    /// Stack tags that record the bundle (see `upgrade::TAG_*`).
    pub tags: BTreeMap<String, String>,
    /// `None` when the stack is to be created.
    pub upgrade: Option<Upgrade>,
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
    /// The database snapshot taken before a Dify version change.
    pub snapshot: Option<String>,
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

/// Logical ID of the Aurora cluster in the application template (src/stack/app/data.rs).
const DATABASE: &str = "Database";

/// How long a snapshot before a version change may take.
const SNAPSHOT_LIMIT: Duration = Duration::from_secs(3600);

#[allow(clippy::too_many_arguments)]
pub async fn plan(
    config: &aws_config::SdkConfig,
    account: &str,
    region: &str,
    bundle: &upgrade::Deployed,
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
    let default_of = |key: &str| -> Option<String> {
        match &parsed["Parameters"][key]["Default"] {
            serde_json::Value::String(text) => Some(text.clone()),
            serde_json::Value::Null => None,
            other => Some(other.to_string()),
        }
    };
    let cfn = CloudFormation::new(config);
    // A stack that failed its first create, or was only ever reviewed, is created again.
    let existing = cfn.info(&options.stack).await?.filter(|i| {
        !matches!(
            i.status.as_str(),
            "ROLLBACK_COMPLETE" | "REVIEW_IN_PROGRESS"
        )
    });
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
    // Client networks: those given; on a stack to create, the VPC's; on an existing stack
    // not given again, kept as they are.
    let cidrs = if !options.allowed_cidrs.is_empty() {
        options.allowed_cidrs.clone()
    } else if existing.is_none() {
        vec![network_plan.cidr.clone()]
    } else {
        Vec::new()
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
    // Networks given this time replace the earlier list: the unused places go back to their
    // default.
    if !options.allowed_cidrs.is_empty() {
        for n in cidrs.len() + 1..=MAX_ALLOWED_CIDRS {
            let key = params::allowed_cidr(n);
            if let Some(default) = default_of(&key) {
                parameters.insert(key, default);
            }
        }
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
    let reconciled: Vec<String> = template_parameters
        .iter()
        .filter(|k| k.as_str() != params::START)
        .cloned()
        .collect();
    let parameters = upgrade::reconcile(
        &reconciled,
        existing.as_ref().map(|i| &i.parameters),
        parameters,
    );
    // The template's rules hold for the values the stack will have: given and kept.
    let mut effective = parameters.kept.clone();
    effective.extend(parameters.given.clone());
    params::validate(&effective)?;
    let mut tags = BTreeMap::new();
    tags.insert(
        upgrade::TAG_BUNDLE.to_owned(),
        bundle.bundle.clone().unwrap_or_default(),
    );
    tags.insert(
        upgrade::TAG_DIFY_VERSION.to_owned(),
        bundle.dify_version.clone().unwrap_or_default(),
    );
    if let Some(digest) = &bundle.bundle_json {
        tags.insert(upgrade::TAG_MANIFEST.to_owned(), digest.clone());
    }
    tags.retain(|_, v| !v.is_empty());
    let staging_bucket = options
        .staging_bucket
        .clone()
        .unwrap_or_else(|| staging::default_bucket(account, region));
    let mut plan = AppPlan {
        stack: options.stack.clone(),
        status: cfn.status(&options.stack).await?,
        template_digest: template.record.digest.to_string(),
        template_bytes: template.record.size,
        template: template.bytes,
        staging_bucket,
        parameters,
        tags,
        upgrade: None,
        network: (network_stack.to_owned(), target.clone()),
        wait: options.wait,
    };
    if let Some(info) = &existing {
        plan.upgrade = Some(plan_upgrade(config, region, &plan, info, bundle).await?);
    }
    Ok(plan)
}

/// What installing onto the existing stack changes: the versions, the change set (worked
/// out against AWS and discarded, when the staging bucket is already there) and the
/// snapshot a version change takes.
async fn plan_upgrade(
    config: &aws_config::SdkConfig,
    region: &str,
    plan: &AppPlan,
    info: &crate::aws::cloudformation::StackInfo,
    bundle: &upgrade::Deployed,
) -> Result<Upgrade> {
    let cfn = CloudFormation::new(config);
    let from = upgrade::deployed(info, cfn.template(&plan.stack).await?.as_deref());
    let to_version = bundle.dify_version.clone().unwrap_or_default();
    let version_changes = from.dify_version.as_deref() != Some(to_version.as_str());
    let snapshot = if version_changes {
        let ids = cfn.physical_ids(&plan.stack).await?;
        ids.get(DATABASE)
            .filter(|id| !id.is_empty())
            .map(|cluster| SnapshotPlan {
                cluster: cluster.clone(),
                identifier: upgrade::snapshot_name(
                    &plan.stack,
                    from.dify_version.as_deref(),
                    std::time::SystemTime::now(),
                ),
            })
    } else {
        None
    };
    let pending = plan.parameters.given.values().any(|v| v == PENDING);
    let staging = Staging::new(config, &plan.staging_bucket, region);
    let changes = if !pending && staging.exists().await? {
        let url = staging.put_template(&plan.stack, &plan.template).await?;
        let mut request = request(&url, plan, true, &None);
        request.parameters.retain(|(k, _)| k != params::START);
        request.keep.push(params::START.to_owned());
        cfn.preview(&plan.stack, &request).await?
    } else {
        None
    };
    Ok(Upgrade {
        from,
        to_version,
        to_bundle: bundle.bundle.clone().unwrap_or_default(),
        version_changes,
        changes,
        snapshot,
    })
}

fn request(url: &str, plan: &AppPlan, start: bool, approve: &Option<Approver>) -> StackRequest {
    let mut parameters: Vec<(String, String)> = plan
        .parameters
        .given
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    parameters.push((params::START.to_owned(), start.to_string()));
    StackRequest {
        template: TemplateSource::Url(url.to_owned()),
        parameters,
        keep: plan.parameters.kept.keys().cloned().collect(),
        tags: plan
            .tags
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        iam: true,
        approve: approve.clone(),
    }
}

/// Deploys the plan: on a Dify version change, the database snapshot first; a failure after
/// it says how to return to it.
pub async fn apply(
    config: &aws_config::SdkConfig,
    region: &str,
    plan: &AppPlan,
    approve: Option<Approver>,
    progress: &dyn Progress,
) -> Result<AppReport> {
    let snapshot = plan.upgrade.as_ref().and_then(|u| u.snapshot.clone());
    if let (Some(snapshot), Some(upgrade)) = (&snapshot, &plan.upgrade) {
        progress.step(&format!(
            "{}: snapshot {} of database cluster {} before anything changes",
            upgrade.headline(),
            snapshot.identifier,
            snapshot.cluster
        ));
        let tags = vec![
            ("dify-bundle:stack".to_owned(), plan.stack.clone()),
            (
                upgrade::TAG_DIFY_VERSION.to_owned(),
                upgrade.from.dify_version.clone().unwrap_or_default(),
            ),
        ];
        crate::aws::rds::Rds::new(config)
            .snapshot_cluster(
                &snapshot.cluster,
                &snapshot.identifier,
                &tags,
                SNAPSHOT_LIMIT,
                progress,
            )
            .await?;
        progress.note(&format!("  snapshot {} is available", snapshot.identifier));
    }
    let mut report = deploy_and_wait(config, region, plan, approve, progress).await;
    if let (Err(e), Some(snapshot), Some(upgrade)) = (&report, &snapshot, &plan.upgrade) {
        report = Err(Error::invalid(format!(
            "{e}\n{}",
            upgrade::way_back(&plan.stack, region, snapshot, &upgrade.from)
        )));
    }
    let mut report = report?;
    report.snapshot = snapshot.map(|s| s.identifier);
    Ok(report)
}

async fn deploy_and_wait(
    config: &aws_config::SdkConfig,
    region: &str,
    plan: &AppPlan,
    approve: Option<Approver>,
    progress: &dyn Progress,
) -> Result<AppReport> {
    let mut parameters = plan.parameters.given.clone();
    if parameters.get(params::VPC_ID).map(String::as_str) == Some(PENDING) {
        let (stack, target) = &plan.network;
        let (vpc, subnets) = network::vpc_and_subnets(config, stack, target)
            .await?
            .ok_or_else(|| {
                Error::invalid(format!("stack {stack} has no VPC and subnets"))
                    .with_hint("run install again to create them")
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
            &request(&url, &with_given(plan, &parameters), true, &approve),
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
        snapshot: None,
    })
}

/// The plan with its given parameters replaced (the VPC and subnets filled in).
fn with_given(plan: &AppPlan, given: &BTreeMap<String, String>) -> AppPlan {
    let mut plan = plan.clone();
    plan.parameters.given = given.clone();
    plan
}
