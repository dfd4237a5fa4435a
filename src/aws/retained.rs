//! Removing what a stack delete leaves behind on purpose (`DeletionPolicy: Retain`): a
//! bucket with every object version in it, a secret. Only `uninstall --delete-data` calls
//! these, after an explicit confirmation.

use aws_sdk_s3::types::{Delete, ObjectIdentifier};

use crate::error::{Error, Result};
use crate::net::aws::sdk_error;

/// Empties `bucket` — every object version and delete marker (ListObjectVersions, then
/// DeleteObjects by the thousand, the API's limit) — and deletes it; `false` when there was
/// no bucket. S3 deletes only empty buckets (DeleteBucket: "All objects (including all
/// object versions and delete markers) in the bucket must be deleted before the bucket
/// itself can be deleted").
pub async fn delete_bucket(config: &aws_config::SdkConfig, bucket: &str) -> Result<bool> {
    let s3 = aws_sdk_s3::Client::from_conf(
        aws_sdk_s3::config::Builder::from(config)
            .force_path_style(crate::aws::endpoint_overridden("s3"))
            .build(),
    );
    match s3.head_bucket().bucket(bucket).send().await {
        Ok(_) => {}
        Err(e) if e.raw_response().is_some_and(|r| r.status().as_u16() == 404) => {
            return Ok(false);
        }
        Err(e) => return Err(sdk_error("S3", format!("HeadBucket {bucket}"), e)),
    }
    let mut key_marker: Option<String> = None;
    let mut version_marker: Option<String> = None;
    loop {
        let page = s3
            .list_object_versions()
            .bucket(bucket)
            .set_key_marker(key_marker.clone())
            .set_version_id_marker(version_marker.clone())
            .send()
            .await
            .map_err(|e| sdk_error("S3", format!("ListObjectVersions {bucket}"), e))?;
        let mut objects = Vec::new();
        for (key, version) in page
            .versions()
            .iter()
            .map(|v| (v.key(), v.version_id()))
            .chain(
                page.delete_markers()
                    .iter()
                    .map(|m| (m.key(), m.version_id())),
            )
        {
            let Some(key) = key else { continue };
            let id = ObjectIdentifier::builder()
                .key(key)
                .set_version_id(version.map(str::to_owned))
                .build()
                .map_err(|e| Error::invalid(format!("S3 object {key}: {e}")))?;
            objects.push(id);
        }
        for chunk in objects.chunks(1000) {
            let delete = Delete::builder()
                .set_objects(Some(chunk.to_vec()))
                .quiet(true)
                .build()
                .map_err(|e| Error::invalid(format!("S3 DeleteObjects {bucket}: {e}")))?;
            s3.delete_objects()
                .bucket(bucket)
                .delete(delete)
                .send()
                .await
                .map_err(|e| sdk_error("S3", format!("DeleteObjects {bucket}"), e))?;
        }
        if page.is_truncated() != Some(true) {
            break;
        }
        key_marker = page.next_key_marker().map(str::to_owned);
        version_marker = page.next_version_id_marker().map(str::to_owned);
    }
    s3.delete_bucket()
        .bucket(bucket)
        .send()
        .await
        .map_err(|e| sdk_error("S3", format!("DeleteBucket {bucket}"), e))?;
    Ok(true)
}

/// Schedules a secret's deletion with the shortest recovery window Secrets Manager allows
/// (7 days; `RecoveryWindowInDays` "can range from 7 to 30 days", API Reference,
/// DeleteSecret), so a mistake can still be undone with RestoreSecret; `false` when there
/// was no secret.
pub async fn delete_secret(config: &aws_config::SdkConfig, secret: &str) -> Result<bool> {
    let client = aws_sdk_secretsmanager::Client::new(config);
    match client
        .delete_secret()
        .secret_id(secret)
        .recovery_window_in_days(7)
        .send()
        .await
    {
        Ok(_) => Ok(true),
        Err(e)
            if e.as_service_error()
                .is_some_and(|s| s.is_resource_not_found_exception()) =>
        {
            Ok(false)
        }
        Err(e) => Err(sdk_error(
            "Secrets Manager",
            format!("DeleteSecret {secret}"),
            e,
        )),
    }
}
