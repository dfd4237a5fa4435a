//! ECR's control plane: repositories (created immutable, scanned on push, encrypted) and
//! registry credentials from GetAuthorizationToken.

use std::time::{Duration, SystemTime};

use aws_sdk_ecr::Client;
use aws_sdk_ecr::types::{
    EncryptionConfiguration, EncryptionType, ImageScanningConfiguration, ImageTagMutability,
};
use base64::Engine as _;

use crate::error::{Error, Result};
use crate::net::aws::sdk_error;
use crate::store::registry::auth::Credentials;

/// Registry credentials and where they work.
#[derive(Clone, Debug)]
pub struct RegistryLogin {
    /// `ACCOUNT.dkr.ecr.REGION.amazonaws.com`.
    pub host: String,
    pub credentials: Credentials,
    /// When to fetch new ones (a margin before the token expires).
    pub renew_at: SystemTime,
}

#[derive(Clone)]
pub struct Ecr {
    client: Client,
}

impl Ecr {
    pub fn new(config: &aws_config::SdkConfig) -> Self {
        Ecr {
            client: Client::new(config),
        }
    }

    /// Repositories among `names` that exist already.
    pub async fn existing(&self, names: &[String]) -> Result<Vec<String>> {
        let mut found = Vec::new();
        for name in names {
            match self
                .client
                .describe_repositories()
                .repository_names(name)
                .send()
                .await
            {
                Ok(_) => found.push(name.clone()),
                Err(e)
                    if e.as_service_error()
                        .is_some_and(|s| s.is_repository_not_found_exception()) => {}
                Err(e) => {
                    return Err(sdk_error("ECR", format!("DescribeRepositories {name}"), e));
                }
            }
        }
        Ok(found)
    }

    /// The account's `BLOB_MOUNTING` setting (GetAccountSetting): `Some(true)` when ECR mounts
    /// blobs across repositories, `Some(false)` when it is off, `None` when it cannot be read
    /// (no permission, or an ECR that predates the setting) — then mounts are simply tried.
    /// <https://docs.aws.amazon.com/AmazonECR/latest/userguide/blob-mounting.html>
    pub async fn blob_mounting(&self) -> Option<bool> {
        // Asked once, never retried: an ECR that does not know the setting may answer 500, and
        // retrying that would only delay every install by the SDK's backoff.
        let output = self
            .client
            .get_account_setting()
            .name("BLOB_MOUNTING")
            .customize()
            .config_override(
                aws_sdk_ecr::config::Builder::default()
                    .retry_config(aws_sdk_ecr::config::retry::RetryConfig::disabled()),
            )
            .send()
            .await
            .ok()?;
        output.value().map(|v| v.eq_ignore_ascii_case("ENABLED"))
    }

    /// Deletes a repository and every image in it (`force`); `false` when there was none.
    pub async fn delete_repository(&self, name: &str) -> Result<bool> {
        match self
            .client
            .delete_repository()
            .repository_name(name)
            .force(true)
            .send()
            .await
        {
            Ok(_) => Ok(true),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_repository_not_found_exception()) =>
            {
                Ok(false)
            }
            Err(e) => Err(sdk_error("ECR", format!("DeleteRepository {name}"), e)),
        }
    }

    /// Creates a repository with immutable tags, scan on push, and AES256 or the KMS key.
    pub async fn create_repository(&self, name: &str, kms_key: Option<&str>) -> Result<()> {
        let encryption = match kms_key {
            Some(key) => EncryptionConfiguration::builder()
                .encryption_type(EncryptionType::Kms)
                .kms_key(key),
            None => EncryptionConfiguration::builder().encryption_type(EncryptionType::Aes256),
        }
        .build()
        .map_err(|e| Error::internal(format!("ECR encryption settings: {e}")))?;
        match self
            .client
            .create_repository()
            .repository_name(name)
            .image_tag_mutability(ImageTagMutability::Immutable)
            .image_scanning_configuration(
                ImageScanningConfiguration::builder()
                    .scan_on_push(true)
                    .build(),
            )
            .encryption_configuration(encryption)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_repository_already_exists_exception()) =>
            {
                Ok(())
            }
            Err(e) => Err(sdk_error("ECR", format!("CreateRepository {name}"), e)),
        }
    }

    /// Registry credentials from GetAuthorizationToken.
    pub async fn login(&self) -> Result<RegistryLogin> {
        let out = self
            .client
            .get_authorization_token()
            .send()
            .await
            .map_err(|e| sdk_error("ECR", "GetAuthorizationToken", e))?;
        let data = out.authorization_data().first().ok_or_else(|| {
            Error::invalid("ECR GetAuthorizationToken returned no authorization data")
        })?;
        let token = data.authorization_token().unwrap_or_default();
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(token)
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .ok_or_else(|| {
                Error::invalid("ECR authorization token is not base64 of USER:PASSWORD")
            })?;
        let (username, password) = decoded
            .split_once(':')
            .ok_or_else(|| Error::invalid("ECR authorization token is not USER:PASSWORD"))?;
        let host = data
            .proxy_endpoint()
            .unwrap_or_default()
            .trim_start_matches("https://")
            .trim_end_matches('/')
            .to_owned();
        let now = SystemTime::now();
        // Renew half an hour early; an expiry in the past (a clock off, or an emulator)
        // means we cannot tell, so renew every ten minutes.
        let renew_at = data
            .expires_at()
            .and_then(|t| SystemTime::try_from(*t).ok())
            .and_then(|expires| expires.checked_sub(Duration::from_secs(1800)))
            .filter(|renew| *renew > now)
            .unwrap_or(now + Duration::from_secs(600));
        Ok(RegistryLogin {
            host,
            credentials: Credentials {
                username: username.to_owned(),
                password: password.to_owned(),
            },
            renew_at,
        })
    }
}
