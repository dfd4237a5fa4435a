//! The install configuration (`install.toml`); every key can also be given as a flag.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::error::{Error, Result};

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InstallConfig {
    /// AWS region; default: the standard AWS configuration's.
    pub region: Option<String>,
    #[serde(default)]
    pub ecr: EcrConfig,
    #[serde(default)]
    pub network: NetworkConfig,
    #[serde(default)]
    pub app: AppConfig,
    /// Trusted public keys (minisign .pub files), relative to the config file.
    #[serde(default)]
    pub public_keys: Vec<PathBuf>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EcrConfig {
    /// `per-image` (repositories `<repository>/<image>`) or `single-repo` (one repository
    /// `<repository>`, tags `<image>_<tag>`).
    pub layout: Option<String>,
    /// Prefix (per-image, default `dify`) or repository name (single-repo).
    pub repository: Option<String>,
    /// KMS key for repository encryption; default AES256.
    pub kms_key: Option<String>,
    /// Registry endpoint to push to instead of the one ECR names (a VPC endpoint's DNS
    /// name, or a test registry); `http://` for plain HTTP.
    pub endpoint: Option<String>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkConfig {
    /// An existing VPC and the subnets (two AZs) for the interface endpoints.
    pub vpc_id: Option<String>,
    #[serde(default)]
    pub subnet_ids: Vec<String>,
    /// Or: create a new isolated VPC with this CIDR (two subnets in two AZs).
    pub new_vpc_cidr: Option<String>,
    /// Name of the VPC endpoints stack (default `dify-vpc-endpoints`).
    pub endpoints_stack: Option<String>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppConfig {
    /// Deploy the application stack (default: yes, when a VPC is given).
    pub enabled: Option<bool>,
    /// Name of the application stack (default `dify`).
    pub stack: Option<String>,
    /// Client networks allowed to reach the load balancer (at most 5); default: the VPC's CIDR.
    #[serde(default)]
    pub allowed_cidrs: Vec<String>,
    /// Bucket for the template (created when missing); default
    /// `dify-bundle-staging-<account>-<region>`.
    pub staging_bucket: Option<String>,
    /// How long to wait for Dify to be healthy after the deploy (default `30m`; `0`: don't).
    pub wait: Option<String>,
    /// Stack settings: see [`APP_SETTINGS`].
    #[serde(default)]
    pub settings: std::collections::BTreeMap<String, SettingValue>,
}

/// A setting as written in TOML: text, a number or a boolean.
#[derive(Clone, Debug, Deserialize)]
#[serde(untagged)]
pub enum SettingValue {
    Text(String),
    Number(i64),
    Boolean(bool),
}

impl std::fmt::Display for SettingValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SettingValue::Text(t) => f.write_str(t),
            SettingValue::Number(n) => write!(f, "{n}"),
            SettingValue::Boolean(b) => write!(f, "{b}"),
        }
    }
}

/// `[app.settings]` keys (also `--app-setting KEY=VALUE`) and the template parameters they set.
pub const APP_SETTINGS: [(&str, &str); 15] = {
    use crate::stack::app::params::*;
    [
        ("certificate_arn", CERTIFICATE_ARN),
        ("public_url", PUBLIC_URL),
        ("redis_multi_az", REDIS_MULTI_AZ),
        ("aurora_scale_to_zero", AURORA_SCALE_TO_ZERO),
        ("fargate_spot", FARGATE_SPOT),
        ("api_cpu", API_CPU),
        ("api_memory", API_MEMORY),
        ("web_cpu", WEB_CPU),
        ("web_memory", WEB_MEMORY),
        ("api_min_tasks", API_MIN_TASKS),
        ("api_max_tasks", API_MAX_TASKS),
        ("web_min_tasks", WEB_MIN_TASKS),
        ("web_max_tasks", WEB_MAX_TASKS),
        ("log_retention_days", LOG_RETENTION_DAYS),
        ("cpu_architecture", CPU_ARCHITECTURE),
    ]
};

/// The template parameter a setting key sets.
pub fn app_setting(key: &str) -> Result<&'static str> {
    APP_SETTINGS
        .iter()
        .find(|(k, _)| *k == key)
        .map(|(_, p)| *p)
        .ok_or_else(|| {
            Error::invalid(format!(
                "app setting `{key}`: unknown; expected one of {}",
                APP_SETTINGS.map(|(k, _)| k).join(", ")
            ))
        })
}

/// Where images go in ECR.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EcrLayout {
    /// `<prefix>/<image>:<tag>`.
    PerImage { prefix: String },
    /// `<repository>:<image>_<tag>`, as the AWS CDK sample expects.
    SingleRepo { repository: String },
}

impl EcrLayout {
    pub fn parse(layout: Option<&str>, repository: Option<&str>) -> Result<EcrLayout> {
        match layout.unwrap_or("per-image") {
            "per-image" => Ok(EcrLayout::PerImage {
                prefix: repository.unwrap_or("dify").trim_matches('/').to_owned(),
            }),
            "single-repo" => Ok(EcrLayout::SingleRepo {
                repository: repository
                    .ok_or_else(|| {
                        Error::invalid("ECR layout single-repo needs a repository name")
                            .with_hint("give it with --ecr-repository NAME")
                    })?
                    .to_owned(),
            }),
            other => Err(Error::invalid(format!(
                "ECR layout `{other}`: expected per-image or single-repo"
            ))),
        }
    }

    /// Repository and tag for an image named `image` (e.g. `dify-api`) with tag `tag`.
    pub fn place(&self, image: &str, tag: &str) -> (String, String) {
        match self {
            EcrLayout::PerImage { prefix } if prefix.is_empty() => {
                (image.to_owned(), tag.to_owned())
            }
            EcrLayout::PerImage { prefix } => (format!("{prefix}/{image}"), tag.to_owned()),
            EcrLayout::SingleRepo { repository } => (repository.clone(), format!("{image}_{tag}")),
        }
    }
}

impl InstallConfig {
    pub fn load(path: &Path) -> Result<InstallConfig> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let mut config: InstallConfig = toml::from_str(&text)
            .map_err(|e| Error::invalid(format!("{}: {e}", path.display())))?;
        let base = path.parent().unwrap_or(Path::new("."));
        for key in &mut config.public_keys {
            if key.is_relative() {
                *key = base.join(&*key);
            }
        }
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layouts_place_images() {
        let per = EcrLayout::parse(None, None).unwrap();
        assert_eq!(
            per.place("dify-api", "1.13.3"),
            ("dify/dify-api".into(), "1.13.3".into())
        );
        let single = EcrLayout::parse(Some("single-repo"), Some("dify-images")).unwrap();
        assert_eq!(
            single.place("dify-web", "1.13.3"),
            ("dify-images".into(), "dify-web_1.13.3".into())
        );
        assert!(EcrLayout::parse(Some("single-repo"), None).is_err());
        assert!(EcrLayout::parse(Some("flat"), None).is_err());
    }

    #[test]
    fn the_examples_parse() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
        let mut seen = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path
                .file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("install-")
            {
                let config = InstallConfig::load(&path).unwrap();
                assert_eq!(config.public_keys, vec![dir.join("release.pub")]);
                assert_eq!(config.app.stack.as_deref(), Some("dify"));
                for key in config.app.settings.keys() {
                    app_setting(key).unwrap();
                }
                EcrLayout::parse(
                    config.ecr.layout.as_deref(),
                    config.ecr.repository.as_deref(),
                )
                .unwrap();
                seen += 1;
            }
        }
        assert_eq!(seen, 2);
        let settings =
            crate::stack::app::StackSettings::load(&dir.join("stack-settings.toml")).unwrap();
        assert!(settings.environment.contains_key("api"));
    }
}
