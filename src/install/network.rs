//! The network step: the VPC endpoints stack (and, when asked, a new isolated VPC). Endpoints
//! the VPC already has — other than the ones this stack made — are found and skipped.

use serde::Serialize;

use crate::aws::cloudformation::{Approver, CloudFormation, Deployed, StackRequest};
use crate::aws::ec2::Ec2;
use crate::error::Result;
use crate::progress::Progress;
use crate::stack::endpoints::{self, GATEWAY_SERVICE, INTERFACE_SERVICES, Network};

/// Where the endpoints go.
#[derive(Clone, Debug)]
pub enum NetworkTarget {
    Existing {
        vpc_id: String,
        subnet_ids: Vec<String>,
    },
    New {
        cidr: String,
    },
}

#[derive(Clone, Debug, Serialize)]
pub struct NetworkPlan {
    pub stack: String,
    /// `vpc-…`, or `new VPC 10.0.0.0/16`.
    pub vpc: String,
    /// The VPC's CIDR.
    pub cidr: String,
    pub create: Vec<String>,
    /// Endpoints the VPC already has (made by someone else): left alone.
    pub skip: Vec<String>,
    #[serde(skip)]
    pub template: String,
}

pub async fn plan(
    config: &aws_config::SdkConfig,
    region: &str,
    stack: &str,
    target: &NetworkTarget,
) -> Result<NetworkPlan> {
    let cfn = CloudFormation::new(config);
    let ours = cfn.resources(stack).await?;
    let all: Vec<&str> = INTERFACE_SERVICES
        .iter()
        .copied()
        .chain([GATEWAY_SERVICE])
        .collect();
    let (network, vpc, cidr, elsewhere) = match target {
        NetworkTarget::Existing { vpc_id, subnet_ids } => {
            let ec2 = Ec2::new(config);
            let cidr = ec2.vpc_cidr(vpc_id).await?;
            let route_table_ids = ec2.route_tables(vpc_id, subnet_ids).await?;
            let present = ec2.existing_endpoints(vpc_id, region).await?;
            // What exists and is not this stack's own was made by someone else.
            let elsewhere: Vec<String> = present
                .into_iter()
                .filter(|service| !ours.contains(&endpoints::logical_id(service)))
                .collect();
            (
                Network::Existing {
                    vpc_id: vpc_id.clone(),
                    cidr: cidr.clone(),
                    subnet_ids: subnet_ids.clone(),
                    route_table_ids,
                },
                vpc_id.clone(),
                cidr,
                elsewhere,
            )
        }
        NetworkTarget::New { cidr } => {
            let subnets = endpoints::split_cidr(cidr).ok_or_else(|| {
                crate::error::Error::invalid(format!(
                    "--new-vpc-cidr {cidr}: expected an IPv4 CIDR from /8 to /24, e.g. 10.0.0.0/16"
                ))
            })?;
            let zones = Ec2::new(config).two_zones().await?;
            (
                Network::New {
                    cidr: cidr.clone(),
                    zones,
                    subnets,
                },
                format!("new VPC {cidr}"),
                cidr.clone(),
                Vec::new(),
            )
        }
    };
    let create: Vec<&str> = all
        .iter()
        .copied()
        .filter(|s| !elsewhere.iter().any(|e| e == s))
        .collect();
    let interface: Vec<&str> = create
        .iter()
        .copied()
        .filter(|s| *s != GATEWAY_SERVICE)
        .collect();
    let template = endpoints::template(
        stack,
        &network,
        &interface,
        create.contains(&GATEWAY_SERVICE),
    );
    Ok(NetworkPlan {
        stack: stack.to_owned(),
        vpc,
        cidr,
        create: create.iter().map(|s| s.to_string()).collect(),
        skip: elsewhere,
        template: template.to_json(),
    })
}

pub async fn apply(
    config: &aws_config::SdkConfig,
    plan: &NetworkPlan,
    approve: Option<Approver>,
    progress: &dyn Progress,
) -> Result<Deployed> {
    progress.step(&format!(
        "deploying stack {} (VPC endpoints in {})",
        plan.stack, plan.vpc
    ));
    CloudFormation::new(config)
        .deploy(
            &plan.stack,
            &StackRequest::inline(&plan.template, approve),
            progress,
        )
        .await
}

/// The VPC and subnets the application goes into: the ones given, or those the endpoints
/// stack created (known once it exists).
pub async fn vpc_and_subnets(
    config: &aws_config::SdkConfig,
    stack: &str,
    target: &NetworkTarget,
) -> Result<Option<(String, Vec<String>)>> {
    match target {
        NetworkTarget::Existing { vpc_id, subnet_ids } => {
            Ok(Some((vpc_id.clone(), subnet_ids.clone())))
        }
        NetworkTarget::New { .. } => {
            let ids = CloudFormation::new(config).physical_ids(stack).await?;
            let get = |id: &str| ids.get(id).filter(|v| !v.is_empty()).cloned();
            Ok(match (get("Vpc"), get("SubnetA"), get("SubnetB")) {
                (Some(vpc), Some(a), Some(b)) => Some((vpc, vec![a, b])),
                _ => None,
            })
        }
    }
}
