//! The staging bucket CloudFormation reads large templates from (inline templates stop at
//! 51,200 bytes): created when missing — encrypted, private, TLS only — and written to by
//! content address, so an unchanged template is never sent twice.

use aws_sdk_s3::Client;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{
    BucketLocationConstraint, CreateBucketConfiguration, PublicAccessBlockConfiguration,
    ServerSideEncryption, ServerSideEncryptionByDefault, ServerSideEncryptionConfiguration,
    ServerSideEncryptionRule,
};

use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::net::aws::sdk_error;

pub struct Staging {
    client: Client,
    bucket: String,
    region: String,
    /// False when S3 is reached over plain HTTP (an S3-compatible endpoint): a TLS-only
    /// policy would lock this very client out.
    tls: bool,
}

/// The default staging bucket of an account and region.
pub fn default_bucket(account: &str, region: &str) -> String {
    format!("dify-bundle-staging-{account}-{region}")
}

impl Staging {
    pub fn new(config: &aws_config::SdkConfig, bucket: &str, region: &str) -> Self {
        let s3 = aws_sdk_s3::config::Builder::from(config)
            .force_path_style(super::endpoint_overridden("s3"))
            .build();
        Staging {
            client: Client::from_conf(s3),
            bucket: bucket.to_owned(),
            region: region.to_owned(),
            tls: !config
                .endpoint_url()
                .is_some_and(|url| url.starts_with("http://")),
        }
    }

    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    pub async fn exists(&self) -> Result<bool> {
        match self.client.head_bucket().bucket(&self.bucket).send().await {
            Ok(_) => Ok(true),
            Err(e) if e.raw_response().is_some_and(|r| r.status().as_u16() == 404) => Ok(false),
            Err(e) => Err(sdk_error("S3", format!("HeadBucket {}", self.bucket), e)),
        }
    }

    /// Creates the bucket (private, AES256, TLS only — unless S3 itself is reached over plain
    /// HTTP) unless it exists. Returns whether it was created.
    pub async fn ensure(&self) -> Result<bool> {
        if self.exists().await? {
            return Ok(false);
        }
        let mut create = self.client.create_bucket().bucket(&self.bucket);
        if self.region != "us-east-1" {
            create = create.create_bucket_configuration(
                CreateBucketConfiguration::builder()
                    .location_constraint(BucketLocationConstraint::from(self.region.as_str()))
                    .build(),
            );
        }
        create
            .send()
            .await
            .map_err(|e| sdk_error("S3", format!("CreateBucket {}", self.bucket), e))?;
        let default = ServerSideEncryptionByDefault::builder()
            .sse_algorithm(ServerSideEncryption::Aes256)
            .build()
            .map_err(|e| Error::internal(format!("S3 bucket encryption settings: {e}")))?;
        let encryption = ServerSideEncryptionConfiguration::builder()
            .rules(
                ServerSideEncryptionRule::builder()
                    .apply_server_side_encryption_by_default(default)
                    .build(),
            )
            .build()
            .map_err(|e| Error::internal(format!("S3 bucket encryption settings: {e}")))?;
        self.client
            .put_bucket_encryption()
            .bucket(&self.bucket)
            .server_side_encryption_configuration(encryption)
            .send()
            .await
            .map_err(|e| sdk_error("S3", format!("PutBucketEncryption {}", self.bucket), e))?;
        self.client
            .put_public_access_block()
            .bucket(&self.bucket)
            .public_access_block_configuration(
                PublicAccessBlockConfiguration::builder()
                    .block_public_acls(true)
                    .block_public_policy(true)
                    .ignore_public_acls(true)
                    .restrict_public_buckets(true)
                    .build(),
            )
            .send()
            .await
            .map_err(|e| sdk_error("S3", format!("PutPublicAccessBlock {}", self.bucket), e))?;
        if !self.tls {
            return Ok(true);
        }
        let policy = serde_json::json!({
            "Version": "2012-10-17",
            "Statement": [{
                "Sid": "TlsOnly",
                "Effect": "Deny",
                "Principal": "*",
                "Action": "s3:*",
                "Resource": [
                    format!("arn:aws:s3:::{}", self.bucket),
                    format!("arn:aws:s3:::{}/*", self.bucket),
                ],
                "Condition": { "Bool": { "aws:SecureTransport": "false" } },
            }],
        });
        self.client
            .put_bucket_policy()
            .bucket(&self.bucket)
            .policy(policy.to_string())
            .send()
            .await
            .map_err(|e| sdk_error("S3", format!("PutBucketPolicy {}", self.bucket), e))?;
        Ok(true)
    }

    /// Whether `key` exists (with exactly `size` bytes, when given).
    async fn holds(&self, key: &str, size: Option<u64>) -> Result<bool> {
        match self
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
        {
            Ok(head) => Ok(size.is_none_or(|size| head.content_length() == Some(size as i64))),
            Err(e) if e.raw_response().is_some_and(|r| r.status().as_u16() == 404) => Ok(false),
            Err(e) => Err(sdk_error("S3", format!("HeadObject {key}"), e)),
        }
    }

    /// Writes a small object (a record of what an uninstall kept).
    pub async fn put(&self, key: &str, bytes: Vec<u8>) -> Result<()> {
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .content_type("application/json")
            .body(ByteStream::from(bytes))
            .send()
            .await
            .map_err(|e| sdk_error("S3", format!("PutObject {key}"), e))?;
        Ok(())
    }

    /// Reads a small object; `None` when it (or the bucket) is not there.
    pub async fn get(&self, key: &str) -> Result<Option<Vec<u8>>> {
        match self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
        {
            Ok(out) => {
                let bytes = out
                    .body
                    .collect()
                    .await
                    .map_err(|e| Error::invalid(format!("S3 GetObject {key}: {e}")))?;
                Ok(Some(bytes.into_bytes().to_vec()))
            }
            Err(e) if e.raw_response().is_some_and(|r| r.status().as_u16() == 404) => Ok(None),
            Err(e) => Err(sdk_error("S3", format!("GetObject {key}"), e)),
        }
    }

    /// Deletes an object (nothing when it is not there).
    pub async fn remove(&self, key: &str) -> Result<()> {
        self.client
            .delete_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| sdk_error("S3", format!("DeleteObject {key}"), e))?;
        Ok(())
    }

    /// Stores a template under its digest; returns the URL CloudFormation reads it from.
    pub async fn put_template(&self, name: &str, bytes: &[u8]) -> Result<String> {
        let key = format!("templates/{name}/{}.json", Digest::of(bytes).hex());
        if !self.holds(&key, Some(bytes.len() as u64)).await? {
            self.client
                .put_object()
                .bucket(&self.bucket)
                .key(&key)
                .content_type("application/json")
                .body(ByteStream::from(bytes.to_vec()))
                .send()
                .await
                .map_err(|e| sdk_error("S3", format!("PutObject {key}"), e))?;
        }
        let suffix = if self.region.starts_with("cn-") {
            "amazonaws.com.cn"
        } else {
            "amazonaws.com"
        };
        Ok(format!(
            "https://{}.s3.{}.{suffix}/{key}",
            self.bucket, self.region
        ))
    }
}

/// Puts an empty object at `key` of `bucket` unless one is there; returns whether it wrote.
pub async fn ensure_object(
    config: &aws_config::SdkConfig,
    bucket: &str,
    key: &str,
) -> Result<bool> {
    let staging = Staging::new(config, bucket, "");
    if staging.holds(key, None).await? {
        return Ok(false);
    }
    staging
        .client
        .put_object()
        .bucket(bucket)
        .key(key)
        .body(ByteStream::from_static(b""))
        .send()
        .await
        .map_err(|e| sdk_error("S3", format!("PutObject s3://{bucket}/{key}"), e))?;
    Ok(true)
}
