//! The settings of one `install` run, resolved in one place: each flag over its install.toml
//! key over the default, then checked (one VPC choice, two subnets, KEY=VALUE stack settings,
//! a wait that parses). `InstallFlags` is plain data, so any front end (and a test of the
//! precedence) can use it without the command-line parser.

use std::collections::BTreeMap;
use std::time::Duration;

use super::app::AppOptions;
use super::config::{EcrLayout, InstallConfig, app_setting};
use super::ecr::EcrOptions;
use super::network::NetworkTarget;
use super::{DEFAULT_APP_STACK, DEFAULT_ENDPOINTS_STACK, InstallOptions};
use crate::copy::CopyOptions;
use crate::error::{Error, Result};
use crate::retry::RetryPolicy;

/// What the operator gave on the command line (every field optional).
#[derive(Clone, Debug, Default)]
pub struct InstallFlags {
    pub region: Option<String>,
    pub ecr_layout: Option<String>,
    pub ecr_repository: Option<String>,
    pub kms_key: Option<String>,
    pub ecr_endpoint: Option<String>,
    pub vpc_id: Option<String>,
    pub subnet_ids: Vec<String>,
    pub new_vpc_cidr: Option<String>,
    pub endpoints_stack: Option<String>,
    pub no_app: bool,
    pub app_stack: Option<String>,
    pub allowed_cidrs: Vec<String>,
    /// `KEY=VALUE` stack settings.
    pub app_settings: Vec<String>,
    pub staging_bucket: Option<String>,
    pub wait: Option<String>,
    pub concurrency: usize,
}

/// How long to wait for health when nothing says otherwise.
pub const DEFAULT_WAIT: Duration = Duration::from_secs(30 * 60);

fn app_options(flags: &InstallFlags, config: &InstallConfig) -> Result<Option<AppOptions>> {
    let app = &config.app;
    if flags.no_app || app.enabled == Some(false) {
        return Ok(None);
    }
    let mut settings = BTreeMap::new();
    for (key, value) in &app.settings {
        settings.insert(app_setting(key)?.to_owned(), value.to_string());
    }
    for flag in &flags.app_settings {
        let (key, value) = flag
            .split_once('=')
            .ok_or_else(|| Error::invalid(format!("--app-setting {flag}: expected KEY=VALUE")))?;
        settings.insert(app_setting(key.trim())?.to_owned(), value.trim().to_owned());
    }
    let wait = match flags.wait.as_deref().or(app.wait.as_deref()) {
        None => DEFAULT_WAIT,
        Some("0") => Duration::ZERO,
        Some(text) => humantime::parse_duration(text).map_err(|_| {
            Error::invalid(format!(
                "wait `{text}`: expected a duration like 30m or 90s"
            ))
        })?,
    };
    Ok(Some(AppOptions {
        stack: flags
            .app_stack
            .clone()
            .or(app.stack.clone())
            .unwrap_or_else(|| DEFAULT_APP_STACK.to_owned()),
        allowed_cidrs: if flags.allowed_cidrs.is_empty() {
            app.allowed_cidrs.clone()
        } else {
            flags.allowed_cidrs.clone()
        },
        settings,
        staging_bucket: flags.staging_bucket.clone().or(app.staging_bucket.clone()),
        wait,
    }))
}

fn network(
    flags: &InstallFlags,
    config: &InstallConfig,
) -> Result<Option<(String, NetworkTarget)>> {
    let network = &config.network;
    let stack = flags
        .endpoints_stack
        .clone()
        .or(network.endpoints_stack.clone())
        .unwrap_or_else(|| DEFAULT_ENDPOINTS_STACK.to_owned());
    let subnet_ids = if flags.subnet_ids.is_empty() {
        network.subnet_ids.clone()
    } else {
        flags.subnet_ids.clone()
    };
    match (
        flags.vpc_id.clone().or(network.vpc_id.clone()),
        flags.new_vpc_cidr.clone().or(network.new_vpc_cidr.clone()),
    ) {
        (Some(_), Some(_)) => Err(Error::invalid(
            "both an existing VPC and a new VPC's CIDR were given",
        )
        .with_hint("give either an existing VPC (--vpc-id) or --new-vpc-cidr, not both")),
        (Some(vpc_id), None) => {
            if subnet_ids.len() < 2 {
                return Err(Error::invalid(
                    "--vpc-id needs --subnet-ids with at least two subnets in two availability zones",
                ));
            }
            Ok(Some((
                stack,
                NetworkTarget::Existing { vpc_id, subnet_ids },
            )))
        }
        (None, Some(cidr)) => Ok(Some((stack, NetworkTarget::New { cidr }))),
        (None, None) => Ok(None),
    }
}

/// The install's options: flags over install.toml over defaults. The CLI adds `approve`.
pub fn resolve(flags: &InstallFlags, config: &InstallConfig) -> Result<InstallOptions> {
    let layout = EcrLayout::parse(
        flags.ecr_layout.as_deref().or(config.ecr.layout.as_deref()),
        flags
            .ecr_repository
            .as_deref()
            .or(config.ecr.repository.as_deref()),
    )?;
    Ok(InstallOptions {
        region: flags.region.clone().or(config.region.clone()),
        ecr: EcrOptions {
            layout,
            kms_key: flags.kms_key.clone().or(config.ecr.kms_key.clone()),
            endpoint: flags.ecr_endpoint.clone().or(config.ecr.endpoint.clone()),
            copy: CopyOptions {
                concurrency: flags.concurrency.max(1),
                retry: RetryPolicy::default(),
                ..CopyOptions::default()
            },
        },
        network: network(flags, config)?,
        admin: None,
        app: app_options(flags, config)?,
        approve: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(text: &str) -> InstallConfig {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("install.toml");
        std::fs::write(&path, text).unwrap();
        InstallConfig::load(&path).unwrap()
    }

    #[test]
    fn flags_override_the_file_which_overrides_the_defaults() {
        let file = config(
            "region = \"eu-west-1\"\n[network]\nvpc_id = \"vpc-file\"\nsubnet_ids = [\"s-1\", \"s-2\"]\n[app]\nstack = \"from-file\"\nallowed_cidrs = [\"10.1.0.0/16\"]\nwait = \"5m\"\n[app.settings]\nlog_retention_days = 90\n",
        );
        let options = resolve(&InstallFlags::default(), &file).unwrap();
        assert_eq!(options.region.as_deref(), Some("eu-west-1"));
        let app = options.app.unwrap();
        assert_eq!(app.stack, "from-file");
        assert_eq!(app.wait, Duration::from_secs(300));
        assert_eq!(app.allowed_cidrs, ["10.1.0.0/16"]);
        assert_eq!(app.settings["LogRetentionDays"], "90");
        match options.network {
            Some((stack, NetworkTarget::Existing { vpc_id, .. })) => {
                assert_eq!(stack, DEFAULT_ENDPOINTS_STACK);
                assert_eq!(vpc_id, "vpc-file");
            }
            _ => panic!("an existing VPC"),
        }

        let flags = InstallFlags {
            region: Some("us-east-1".into()),
            app_stack: Some("flag".into()),
            allowed_cidrs: vec!["10.2.0.0/16".into()],
            app_settings: vec!["log_retention_days=365".into()],
            wait: Some("0".into()),
            ..InstallFlags::default()
        };
        let options = resolve(&flags, &file).unwrap();
        assert_eq!(options.region.as_deref(), Some("us-east-1"));
        let app = options.app.unwrap();
        assert_eq!(app.stack, "flag");
        assert_eq!(app.wait, Duration::ZERO);
        assert_eq!(app.allowed_cidrs, ["10.2.0.0/16"]);
        assert_eq!(app.settings["LogRetentionDays"], "365");

        let defaults = resolve(&InstallFlags::default(), &InstallConfig::default()).unwrap();
        assert_eq!(defaults.app.unwrap().stack, DEFAULT_APP_STACK);
        assert!(defaults.network.is_none());
    }

    #[test]
    fn a_vpc_choice_must_be_one_and_complete() {
        let both = InstallFlags {
            vpc_id: Some("vpc-1".into()),
            subnet_ids: vec!["a".into(), "b".into()],
            new_vpc_cidr: Some("10.0.0.0/16".into()),
            ..InstallFlags::default()
        };
        let e = resolve(&both, &InstallConfig::default()).err().unwrap();
        assert!(e.to_string().contains("both an existing VPC"), "{e}");
        assert!(e.hints().iter().any(|h| h.contains("not both")), "{e:?}");
        let one_subnet = InstallFlags {
            vpc_id: Some("vpc-1".into()),
            subnet_ids: vec!["a".into()],
            ..InstallFlags::default()
        };
        let e = resolve(&one_subnet, &InstallConfig::default())
            .err()
            .unwrap();
        assert!(e.to_string().contains("two subnets"), "{e}");
        let bad = InstallFlags {
            app_settings: vec!["log_retention_days".into()],
            ..InstallFlags::default()
        };
        assert!(resolve(&bad, &InstallConfig::default()).is_err());
        let no_app = InstallFlags {
            no_app: true,
            ..InstallFlags::default()
        };
        assert!(
            resolve(&no_app, &InstallConfig::default())
                .unwrap()
                .app
                .is_none()
        );
    }
}
