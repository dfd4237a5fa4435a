//! `install --isolated`: a sequence of idempotent steps inside the closed VPC, shown as a
//! plan first. Verify the bundle (signature, then every digest) before any AWS call that
//! changes something; check credentials; create the ECR repositories and push every image
//! (only what ECR lacks); then the network and application stacks.

pub mod config;
pub mod ecr;

pub use config::{EcrLayout, InstallConfig};
pub use ecr::{EcrOptions, EcrPlan, ImageTarget, PushReport};

use std::sync::Arc;

use serde::Serialize;

use crate::aws::{self, Identity};
use crate::bundle::source::{BundleSource, SourceStore};
use crate::bundle::{BundleManifest, SignatureStatus, TrustPolicy};
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
    pub ecr: EcrPlan,
}

pub struct Installer {
    source: Arc<dyn BundleSource>,
    manifest: BundleManifest,
    signature: SignatureStatus,
    files: usize,
    config: aws_config::SdkConfig,
    ecr: ecr::EcrOptions,
}

impl Installer {
    /// Verifies the bundle — signature, then every digest — and the AWS credentials. Nothing
    /// that changes anything happens before this succeeds.
    pub async fn open(
        source: Arc<dyn BundleSource>,
        policy: TrustPolicy,
        region: Option<String>,
        ecr: ecr::EcrOptions,
        progress: Arc<dyn Progress>,
    ) -> Result<Installer> {
        let checked = source.clone();
        let reporter = progress.clone();
        let report = tokio::task::spawn_blocking(move || {
            crate::bundle::verify(checked.as_ref(), &policy, reporter.as_ref())
        })
        .await
        .map_err(|e| Error::invalid(format!("verification thread failed: {e}")))??;
        if !report.is_ok() {
            let lines: Vec<String> = report.problems.iter().map(|p| format!("  - {p}")).collect();
            return Err(Error::invalid(format!(
                "{}: refused, the bundle does not verify; nothing was changed:\n{}",
                source.describe(),
                lines.join("\n")
            )));
        }
        let config = aws::config(region.as_deref()).await;
        Ok(Installer {
            source,
            signature: report.signature,
            files: report.files,
            manifest: report.manifest,
            config,
            ecr,
        })
    }

    fn store(&self) -> Arc<SourceStore> {
        Arc::new(SourceStore::new(self.source.clone()))
    }

    /// Preflight and the ECR plan; changes nothing.
    pub async fn plan(&self) -> Result<(InstallPlan, ecr::Session)> {
        let identity = aws::caller_identity(&self.config).await?;
        let region = self
            .config
            .region()
            .map(|r| r.to_string())
            .ok_or_else(|| Error::invalid("no AWS region: pass --region or set AWS_REGION"))?;
        let session = ecr::Session::open(&self.config, &self.ecr).await?;
        let mut endpoints = aws::reach::installer_endpoints(&region, session.registry());
        if let Some(data_plane) = &self.ecr.endpoint
            && let Some(entry) = endpoints
                .iter_mut()
                .find(|(service, _)| service == "ecr.dkr")
        {
            entry.1 = data_plane.clone();
        }
        let endpoints = aws::reach::check_all(&endpoints).await;
        let unreachable: Vec<String> = endpoints
            .iter()
            .filter(|e| !e.reachable && (e.service == "ecr.api" || e.service == "ecr.dkr"))
            .map(|e| e.to_string())
            .collect();
        if !unreachable.is_empty() {
            return Err(Error::invalid(format!(
                "this host cannot reach ECR, which the push needs (create the ecr.api and ecr.dkr VPC endpoints with private DNS, or run from a host that can):\n  {}",
                unreachable.join("\n  ")
            )));
        }
        let ecr_plan = ecr::plan(&session, &self.manifest, self.store(), &self.ecr).await?;
        Ok((
            InstallPlan {
                bundle: self.manifest.name.clone(),
                dify_version: self.manifest.dify_version.clone(),
                signature: self.signature.clone(),
                files_verified: self.files,
                identity,
                region,
                endpoints,
                ecr: ecr_plan,
            },
            session,
        ))
    }

    /// Carries out the plan.
    pub async fn apply(
        &self,
        plan: &InstallPlan,
        session: &ecr::Session,
        progress: Arc<dyn Progress>,
    ) -> Result<PushReport> {
        ecr::push(
            session,
            &self.manifest,
            self.store(),
            &plan.ecr,
            &self.ecr,
            progress,
        )
        .await
    }
}
