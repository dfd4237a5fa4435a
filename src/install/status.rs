//! `status`: what is deployed where, read from AWS without changing anything — the
//! application stack and the Dify version and bundle it runs, the image digests its ECS
//! services run against those the bundle (or the deployed template) names, service and
//! target health, and which VPC endpoints the closed network has.

use std::collections::BTreeSet;

use serde::Serialize;

use super::upgrade::{self, Deployed};
use crate::aws::cloudformation::CloudFormation;
use crate::aws::ec2::Ec2;
use crate::aws::health::{self, Health, ServiceState, TargetState};
use crate::bundle::BundleManifest;
use crate::error::Result;
use crate::stack::app::balancer::{API_TARGET, DAEMON_TARGET, SANDBOX_TARGET, WEB_TARGET};
use crate::stack::app::compute::{
    API_SERVICE, BEAT_SERVICE, CLUSTER, SANDBOX_SERVICE, WEB_SERVICE,
};
use crate::stack::app::{OUTPUT_URL, params};
use crate::stack::endpoints::{GATEWAY_SERVICE, INTERFACE_SERVICES};

pub struct StatusOptions {
    pub app_stack: String,
    pub endpoints_stack: String,
}

/// One container's image: what runs, against what is expected.
#[derive(Clone, Debug, Serialize)]
pub struct ImageStatus {
    pub service: String,
    pub container: String,
    /// As the service's task definition names it.
    pub image: String,
    pub digest: Option<String>,
    /// The digest is one the bundle (or, without one, the deployed template) names.
    pub expected: bool,
}

#[derive(Clone, Debug, Serialize)]
pub struct AppStatus {
    pub stack: String,
    /// `None`: the stack does not exist.
    pub status: Option<String>,
    pub deployed: Option<Deployed>,
    pub url: Option<String>,
    pub services: Vec<ServiceState>,
    pub targets: Vec<TargetState>,
    pub images: Vec<ImageStatus>,
    /// What is not as it should be (empty: healthy and on the expected images).
    pub problems: Vec<String>,
}

#[derive(Clone, Debug, Serialize)]
pub struct EndpointsStatus {
    pub stack: String,
    pub status: Option<String>,
    /// The VPC the application runs in (its `VpcId`).
    pub vpc: Option<String>,
    /// Endpoint services the VPC has, and those it lacks.
    pub present: Vec<String>,
    pub missing: Vec<String>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Status {
    pub region: String,
    /// The bundle compared against, when one was given.
    pub bundle: Option<Deployed>,
    pub app: AppStatus,
    pub endpoints: EndpointsStatus,
}

impl Status {
    pub fn healthy(&self) -> bool {
        self.app.status.is_some()
            && self.app.problems.is_empty()
            && self.endpoints.missing.is_empty()
    }
}

/// The `sha256:…` digest of an image reference `REPO@sha256:…`.
fn digest_of(image: &str) -> Option<String> {
    image.rsplit_once('@').map(|(_, d)| d.to_owned())
}

/// Every `@sha256:<64 hex>` digest in a text (the deployed template's images).
fn digests_in(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find("@sha256:") {
        let hex: String = rest[at + 8..]
            .chars()
            .take_while(|c| c.is_ascii_hexdigit())
            .collect();
        if hex.len() == 64 {
            out.insert(format!("sha256:{hex}"));
        }
        rest = &rest[at + 8..];
    }
    out
}

pub async fn status(
    config: &aws_config::SdkConfig,
    options: &StatusOptions,
    bundle: Option<(&BundleManifest, Deployed)>,
) -> Result<Status> {
    let region = config.region().map(|r| r.to_string()).unwrap_or_default();
    let cfn = CloudFormation::new(config);
    let info = cfn.info(&options.app_stack).await?;
    let mut app = AppStatus {
        stack: options.app_stack.clone(),
        status: info.as_ref().map(|i| i.status.clone()),
        deployed: None,
        url: None,
        services: Vec::new(),
        targets: Vec::new(),
        images: Vec::new(),
        problems: Vec::new(),
    };
    let mut vpc = None;
    if let Some(info) = &info {
        let template = cfn.template(&options.app_stack).await?;
        let deployed = upgrade::deployed(info, template.as_deref());
        app.url = info.outputs.get(OUTPUT_URL).cloned();
        vpc = info.parameters.get(params::VPC_ID).cloned();
        let expected: BTreeSet<String> = match &bundle {
            Some((manifest, _)) => manifest
                .images
                .iter()
                .map(|i| i.digest.to_string())
                .collect(),
            None => template.as_deref().map(digests_in).unwrap_or_default(),
        };
        if let Some((_, identity)) = &bundle
            && identity.template.is_some()
            && identity.template != deployed.template
        {
            app.problems.push(format!(
                "the stack runs template {}, not bundle {}'s ({})",
                deployed.template.as_deref().unwrap_or("(unknown)"),
                identity.bundle.as_deref().unwrap_or_default(),
                identity.template.as_deref().unwrap_or_default()
            ));
        }
        app.deployed = Some(deployed);
        let ids = cfn.physical_ids(&options.app_stack).await?;
        let id = |name: &str| ids.get(name).cloned().unwrap_or_default();
        let health = Health::new(config);
        let services: Vec<String> = [
            id(API_SERVICE),
            id(BEAT_SERVICE),
            id(SANDBOX_SERVICE),
            id(WEB_SERVICE),
        ]
        .into_iter()
        .filter(|s| !s.is_empty())
        .collect();
        if !services.is_empty() && !id(CLUSTER).is_empty() {
            app.services = health.services(&id(CLUSTER), &services).await?;
        }
        let targets: Vec<String> = [
            id(API_TARGET.id),
            id(DAEMON_TARGET.id),
            id(SANDBOX_TARGET.id),
            id(WEB_TARGET.id),
        ]
        .into_iter()
        .filter(|t| !t.is_empty())
        .collect();
        app.targets = health.targets(&targets).await?;
        app.problems
            .extend(health::missing(&app.services, &app.targets));
        for service in &app.services {
            match health.task_images(&service.task_definition).await {
                Ok(images) => {
                    for (container, image) in images {
                        let digest = digest_of(&image);
                        let ok = digest.as_ref().is_some_and(|d| expected.contains(d));
                        if !ok {
                            app.problems.push(format!(
                                "service {} container {container} runs {image}, which {} does not name",
                                service.name,
                                if bundle.is_some() { "the bundle" } else { "the deployed template" }
                            ));
                        }
                        app.images.push(ImageStatus {
                            service: service.name.clone(),
                            container,
                            image,
                            digest,
                            expected: ok,
                        });
                    }
                }
                Err(e) => app.problems.push(format!(
                    "service {}: its task definition {} cannot be read: {e}",
                    service.name, service.task_definition
                )),
            }
        }
    }
    let endpoints_info = cfn.info(&options.endpoints_stack).await?;
    let mut endpoints = EndpointsStatus {
        stack: options.endpoints_stack.clone(),
        status: endpoints_info.as_ref().map(|i| i.status.clone()),
        vpc: vpc.clone(),
        present: Vec::new(),
        missing: Vec::new(),
    };
    if let Some(vpc) = &vpc {
        let present = Ec2::new(config).existing_endpoints(vpc, &region).await?;
        for service in INTERFACE_SERVICES.iter().copied().chain([GATEWAY_SERVICE]) {
            if present.iter().any(|p| p == service) {
                endpoints.present.push(service.to_owned());
            } else {
                endpoints.missing.push(service.to_owned());
            }
        }
    }
    Ok(Status {
        region,
        bundle: bundle.map(|(_, identity)| identity),
        app,
        endpoints,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn template_digests_are_found_and_image_digests_read() {
        let a = "a".repeat(64);
        let text = format!(
            r#"{{"Image": {{"Fn::Sub": "${{AWS::AccountId}}.dkr.ecr/dify/api@sha256:{a}"}}, "x": "@sha256:short"}}"#
        );
        assert_eq!(
            digests_in(&text).into_iter().collect::<Vec<_>>(),
            [format!("sha256:{a}")]
        );
        assert_eq!(
            digest_of(&format!("1.dkr.ecr/dify/api@sha256:{a}")),
            Some(format!("sha256:{a}"))
        );
        assert_eq!(digest_of("dify/api:1.0"), None);
    }
}
