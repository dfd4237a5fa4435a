//! `install --isolated`: a sequence of idempotent steps inside the closed VPC, shown as a
//! plan first. Verify the bundle (signature, then every digest) before any AWS call that
//! changes something; check credentials; create the ECR repositories and push every image
//! (only what ECR lacks); then the application stack, waited on until Dify answers.

pub mod app;
pub mod config;
pub mod ecr;
pub mod network;
pub mod receipt;
pub mod settings;
pub mod status;
pub mod uninstall;
pub mod upgrade;

pub use app::{AppOptions, AppPlan, AppReport};
pub use config::{EcrLayout, InstallConfig};
pub use ecr::{EcrOptions, EcrPlan, ImageTarget, PushReport};
pub use network::{NetworkPlan, NetworkTarget};

use std::sync::Arc;

use serde::Serialize;

use crate::aws::cloudformation::Deployed;
use crate::aws::{self, Identity};
use crate::bundle::{Bundle, SignatureStatus};
use crate::error::{Error, Result};
use crate::progress::Progress;

/// Everything `install` would do, worked out without changing anything.
#[derive(Debug, Serialize)]
pub struct InstallPlan {
    pub bundle: String,
    pub dify_version: String,
    pub signature: SignatureStatus,
    pub files_verified: usize,
    pub identity: Identity,
    pub region: String,
    /// The AWS endpoints this host can (and cannot) reach.
    pub endpoints: Vec<aws::reach::Reachability>,
    /// `None` when no VPC was given.
    pub network: Option<NetworkPlan>,
    /// `None` when ECR is reachable only once the network step has made its endpoints.
    pub ecr: Option<EcrPlan>,
    /// `None` when there is no VPC to deploy into, or the application step is off.
    pub app: Option<AppPlan>,
    /// Identifiers of the bundle's plugin packages.
    pub plugins: Vec<String>,
}

/// What `install` did.
#[derive(Debug, Serialize)]
pub struct InstallReport {
    pub network: Option<Deployed>,
    pub push: PushReport,
    pub app: Option<AppReport>,
    /// The bundle's plugins installed into Dify, when an admin was given.
    pub plugins: Option<PluginsReport>,
}

/// The last step: the bundle's plugins installed into Dify through its console API.
#[derive(Debug, Serialize)]
pub struct PluginsReport {
    /// Whether the admin account was created (Dify had none).
    pub admin_created: bool,
    pub outcomes: Vec<(String, crate::dify::console::PluginOutcome)>,
}

pub struct InstallOptions {
    pub region: Option<String>,
    pub ecr: ecr::EcrOptions,
    /// The endpoints stack's name and where it goes.
    pub network: Option<(String, NetworkTarget)>,
    /// The application stack; `None`: not deployed.
    pub app: Option<AppOptions>,
    /// Asked before each change set is executed; `None`: execute (`--yes`).
    pub approve: Option<crate::aws::cloudformation::Approver>,
    /// The Dify admin to install the bundle's plugins as, once Dify answers; `None`: no
    /// plugins are installed into Dify.
    pub admin: Option<crate::dify::console::Admin>,
}

pub struct Installer {
    bundle: Bundle,
    files: usize,
    config: aws_config::SdkConfig,
    options: InstallOptions,
}

const ECR_SERVICES: [&str; 2] = ["ecr.api", "ecr.dkr"];

/// How long Dify may take to install the bundle's plugins.
const PLUGIN_INSTALL_LIMIT: std::time::Duration = std::time::Duration::from_secs(15 * 60);

/// The application stack's name when none is given.
pub const DEFAULT_APP_STACK: &str = "dify";
/// The VPC endpoints stack's name when none is given.
pub const DEFAULT_ENDPOINTS_STACK: &str = "dify-vpc-endpoints";

impl Installer {
    /// Verifies the opened bundle (its signature was checked on opening) — every file
    /// listed, every digest but the blobs', which are checked as they are pushed. Nothing that
    /// changes anything happens before this succeeds.
    pub async fn open(
        bundle: Bundle,
        options: InstallOptions,
        progress: Arc<dyn Progress>,
    ) -> Result<Installer> {
        // Blobs are hashed as they are pushed (a damaged one stops the push before any
        // manifest, tag or stack change); the template and plugins when they are read.
        let report = bundle
            .verify(crate::bundle::Depth::Listing, progress)
            .await?;
        if !report.is_ok() {
            let lines: Vec<String> = report.problems.iter().map(|p| format!("  - {p}")).collect();
            return Err(Error::invalid(format!(
                "{}: refused, the bundle does not verify; nothing was changed:\n{}",
                bundle.describe(),
                lines.join("\n")
            )));
        }
        let config = aws::config(options.region.as_deref()).await;
        Ok(Installer {
            bundle,
            files: report.files,
            config,
            options,
        })
    }

    async fn reachability(&self, region: &str, registry: &str) -> Vec<aws::reach::Reachability> {
        let mut endpoints = aws::reach::installer_endpoints(region, registry);
        if let Some(data_plane) = &self.options.ecr.endpoint
            && let Some(entry) = endpoints
                .iter_mut()
                .find(|(service, _)| service == "ecr.dkr")
        {
            entry.1 = data_plane.clone();
        }
        aws::reach::check_all(&endpoints).await
    }

    /// Preflight, the network plan and the ECR plan; changes nothing.
    pub async fn plan(&self) -> Result<InstallPlan> {
        let identity = aws::caller_identity(&self.config).await?;
        let region = self.config.region().map(|r| r.to_string()).ok_or_else(|| {
            Error::invalid("no AWS region").with_hint("pass --region or set AWS_REGION")
        })?;
        let network = match &self.options.network {
            Some((stack, target)) => {
                Some(network::plan(&self.config, &region, stack, target).await?)
            }
            None => None,
        };
        let registry = format!("{}.dkr.ecr.{region}.amazonaws.com", identity.account);
        let endpoints = self.reachability(&region, &registry).await;
        let unreachable: Vec<&aws::reach::Reachability> = endpoints
            .iter()
            .filter(|e| !e.reachable && ECR_SERVICES.contains(&e.service.as_str()))
            .collect();
        let network_makes_ecr = network
            .as_ref()
            .is_some_and(|n| ECR_SERVICES.iter().all(|s| n.create.iter().any(|c| c == s)));
        let ecr = if unreachable.is_empty() {
            let session = ecr::Session::open(&self.config, &self.options.ecr).await?;
            Some(
                ecr::plan(
                    &session,
                    &self.bundle.manifest,
                    self.bundle.store(),
                    &self.options.ecr,
                )
                .await?,
            )
        } else if network_makes_ecr {
            if let Some(delta) = &self.bundle.manifest.delta {
                let carried = self.bundle.store().blob_digests().await?;
                if delta.omitted.iter().any(|l| !carried.contains(&l.digest)) {
                    return Err(Error::invalid(format!(
                        "refused: this is a delta bundle ({} layers left out), but ECR cannot be reached from here yet, so there is nothing it can have been built on; nothing was changed",
                        delta.omitted.len()
                    ))
                    .with_hint("install a full bundle first (build without --since)"));
                }
            }
            None
        } else {
            let lines: Vec<String> = unreachable.iter().map(|e| e.to_string()).collect();
            return Err(Error::invalid(format!(
                "this host cannot reach ECR, which the push needs:\n  {}",
                lines.join("\n  ")
            ))
            .with_hint("create the ecr.api and ecr.dkr VPC endpoints with private DNS (--vpc-id/--subnet-ids or --new-vpc-cidr), or run from a host that can reach ECR"));
        };
        let app = self
            .plan_app(&identity.account, &region, network.as_ref())
            .await?;
        Ok(InstallPlan {
            app,
            plugins: self
                .bundle
                .manifest
                .plugins
                .iter()
                .map(|p| p.identifier.clone())
                .collect(),
            bundle: self.bundle.manifest.name.clone(),
            dify_version: self.bundle.manifest.dify_version.clone(),
            signature: self.bundle.signature.clone(),
            files_verified: self.files,
            identity,
            region,
            endpoints,
            network,
            ecr,
        })
    }

    /// The application step's plan, when there is a VPC and the step is on.
    async fn plan_app(
        &self,
        account: &str,
        region: &str,
        network_plan: Option<&NetworkPlan>,
    ) -> Result<Option<AppPlan>> {
        let (Some(options), Some((stack, target)), Some(network_plan)) =
            (&self.options.app, &self.options.network, network_plan)
        else {
            return Ok(None);
        };
        let template = self.bundle.manifest.stack.as_ref().ok_or_else(|| {
            Error::invalid(format!(
                "bundle {} has no application stack (its recipe lacks one of the images {})",
                self.bundle.manifest.name,
                crate::stack::app::ROLES.join(", ")
            ))
            .with_hint("pass --no-app to install only the endpoints and images")
        })?;
        let bytes = self.bundle.stack_template().await?;
        let images = ecr::targets(&self.bundle.manifest, &self.options.ecr.layout)?;
        let plan = app::plan(
            &self.config,
            account,
            region,
            &self.identity(),
            app::BundledTemplate {
                record: template,
                bytes,
            },
            &images,
            (stack, target, network_plan),
            options,
        )
        .await?;
        Ok(Some(plan))
    }

    /// What the stack will record about this bundle: its name, Dify version and the sha256
    /// of its bundle.json (the one verified in `open`).
    pub fn identity(&self) -> upgrade::Deployed {
        upgrade::Deployed {
            dify_version: Some(self.bundle.manifest.dify_version.clone()),
            bundle: Some(self.bundle.manifest.name.clone()),
            bundle_json: Some(self.bundle.json_digest().to_string()),
            template: self
                .bundle
                .manifest
                .stack
                .as_ref()
                .map(|s| s.digest.to_string()),
        }
    }

    /// The Dify admin the plugins are installed as, when one was given.
    pub fn admin(&self) -> Option<&crate::dify::console::Admin> {
        self.options.admin.as_ref()
    }

    /// Carries out the plan: the network, then ECR, then the application.
    pub async fn apply(
        &self,
        plan: &InstallPlan,
        progress: Arc<dyn Progress>,
    ) -> Result<InstallReport> {
        let network = match &plan.network {
            Some(network) => Some(
                network::apply(
                    &self.config,
                    network,
                    self.options.approve.clone(),
                    progress.as_ref(),
                )
                .await?,
            ),
            None => None,
        };
        let session = ecr::Session::open(&self.config, &self.options.ecr).await?;
        let ecr_plan = match &plan.ecr {
            Some(ecr) => ecr,
            None => {
                &ecr::plan(
                    &session,
                    &self.bundle.manifest,
                    self.bundle.store(),
                    &self.options.ecr,
                )
                .await?
            }
        };
        let push = ecr::push(
            &session,
            &self.bundle.manifest,
            self.bundle.store(),
            ecr_plan,
            &self.options.ecr,
            progress.clone(),
        )
        .await?;
        let app = match &plan.app {
            Some(app) => Some(
                app::apply(
                    &self.config,
                    &plan.region,
                    app,
                    self.options.approve.clone(),
                    progress.as_ref(),
                )
                .await?,
            ),
            None => None,
        };
        let plugins = match (
            &self.options.admin,
            app.as_ref().and_then(|a| a.url.as_deref()),
        ) {
            (Some(admin), Some(url)) => {
                progress.step(&format!(
                    "installing the bundle's plugins into Dify at {url}"
                ));
                let (admin_created, outcomes) = crate::dify::console::install_plugins(
                    url,
                    admin,
                    self.bundle.plugin_packages().await?,
                    PLUGIN_INSTALL_LIMIT,
                )
                .await?;
                Some(PluginsReport {
                    admin_created,
                    outcomes,
                })
            }
            _ => None,
        };
        Ok(InstallReport {
            network,
            push,
            app,
            plugins,
        })
    }
}
