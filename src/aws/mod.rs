//! AWS clients and the calls the installer makes: configuration from the standard chain
//! (environment, profiles, instance role), identity (STS), ECR's control plane, EC2 discovery,
//! CloudFormation deploys, the template staging bucket and the application's health.

pub mod cloudformation;
pub mod ec2;
pub mod ecr;
pub mod health;
pub mod rds;
pub mod reach;
pub mod retained;
pub mod staging;

use crate::error::Result;

/// Loads the standard AWS configuration, with `region` overriding when given.
pub async fn config(region: Option<&str>) -> aws_config::SdkConfig {
    let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest());
    if let Some(region) = region {
        loader = loader.region(aws_config::Region::new(region.to_owned()));
    }
    loader.load().await
}

/// Whether an endpoint override is set (an AWS-compatible server, e.g. in tests).
pub fn endpoint_overridden(service: &str) -> bool {
    std::env::var_os("AWS_ENDPOINT_URL").is_some()
        || std::env::var_os(format!("AWS_ENDPOINT_URL_{}", service.to_ascii_uppercase())).is_some()
}

/// Who the credentials belong to.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Identity {
    pub account: String,
    pub arn: String,
}

/// STS GetCallerIdentity: proves the credentials work before anything else is tried.
pub async fn caller_identity(config: &aws_config::SdkConfig) -> Result<Identity> {
    let sts = aws_sdk_sts::Client::new(config);
    let out = sts.get_caller_identity().send().await.map_err(|e| {
        crate::net::aws::sdk_error("STS", "GetCallerIdentity", e).with_hint(
            "AWS credentials do not work: set AWS_PROFILE or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, or run on a host with an instance role",
        )
    })?;
    Ok(Identity {
        account: out.account().unwrap_or_default().to_owned(),
        arn: out.arn().unwrap_or_default().to_owned(),
    })
}
