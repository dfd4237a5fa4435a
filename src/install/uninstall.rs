//! `uninstall`: removes the application stack — and, when asked, the endpoints stack and the
//! ECR repositories — keeping the data unless told otherwise. Before the stack goes, the
//! database gets a named manual snapshot; what the template retains (`DeletionPolicy`
//! Retain/Snapshot: the buckets, and whatever else it marks) outlives the stack and is named,
//! and a record of it is left in the staging bucket, so a later `--delete-data` run still
//! finds it. Running it again when everything is gone does nothing and says so.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::upgrade::SnapshotPlan;
use crate::aws::cloudformation::CloudFormation;
use crate::aws::ecr::Ecr;
use crate::aws::rds::{self, Rds};
use crate::aws::staging::{self, Staging};
use crate::error::{Error, Result};
use crate::progress::Progress;

/// Logical ID of the Aurora cluster in the application template (src/stack/app/data.rs).
const DATABASE: &str = "Database";
const SNAPSHOT_LIMIT: Duration = Duration::from_secs(3600);

/// Resource types that hold data the operator may want back.
const DATA_TYPES: [&str; 6] = [
    "AWS::S3::Bucket",
    "AWS::SecretsManager::Secret",
    "AWS::RDS::DBCluster",
    "AWS::EFS::FileSystem",
    "AWS::Logs::LogGroup",
    "AWS::ElastiCache::ReplicationGroup",
];

pub struct UninstallOptions {
    pub app_stack: String,
    /// Remove this endpoints stack too.
    pub endpoints_stack: Option<String>,
    /// Remove the ECR repositories the application ran from.
    pub repositories: bool,
    /// Delete the retained buckets and secrets and the database's snapshots as well.
    pub delete_data: bool,
    pub staging_bucket: Option<String>,
}

/// A stack resource.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Resource {
    pub kind: String,
    pub logical_id: String,
    pub physical_id: String,
    /// Its `DeletionPolicy` (`Delete` when the template gives none).
    pub policy: String,
}

/// What an uninstall kept, left in the staging bucket for a later `--delete-data`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Record {
    pub stack: String,
    pub kept: Vec<Resource>,
    /// The Aurora cluster the stack had.
    pub cluster: Option<String>,
    pub snapshots: Vec<String>,
    /// The ECR repositories the application ran from.
    #[serde(default)]
    pub repositories: Vec<String>,
}

#[derive(Clone, Debug, Serialize)]
pub struct UninstallPlan {
    pub app_stack: String,
    pub app_status: Option<String>,
    /// Taken before the stack is deleted (not with `--delete-data`).
    pub snapshot: Option<SnapshotPlan>,
    /// Outlive the stack (their `DeletionPolicy` is Retain or Snapshot).
    pub kept: Vec<Resource>,
    /// Hold data but go with the stack (their template says `Delete`).
    pub lost: Vec<Resource>,
    /// With `--delete-data`: what is deleted after the stack.
    pub delete_data: bool,
    pub data_to_delete: Vec<String>,
    /// The database cluster (its snapshots go with `--delete-data`).
    pub cluster: Option<String>,
    /// `(name, status)`; status `None` when it does not exist.
    pub endpoints: Option<(String, Option<String>)>,
    /// Repositories to delete (those that exist).
    pub repositories: Vec<String>,
    /// The repositories the application ran from (kept in the record).
    #[serde(skip)]
    pub stack_repositories: Vec<String>,
    pub staging_bucket: String,
    /// A record of an earlier uninstall of this stack.
    pub record: Option<Record>,
}

impl UninstallPlan {
    pub fn nothing_to_do(&self) -> bool {
        self.app_status.is_none()
            && (!self.delete_data || self.data_to_delete.is_empty())
            && self.endpoints.as_ref().is_none_or(|(_, s)| s.is_none())
            && self.repositories.is_empty()
    }
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct UninstallReport {
    pub snapshot: Option<String>,
    pub app_deleted: bool,
    pub kept: Vec<Resource>,
    pub data_deleted: Vec<String>,
    pub repositories_deleted: Vec<String>,
    pub endpoints_deleted: bool,
    /// Where the record of what was kept is (`s3://…`).
    pub record: Option<String>,
}

fn record_key(stack: &str) -> String {
    format!("uninstalled/{stack}.json")
}

/// Splits the stack's data-holding resources into kept and lost by the `DeletionPolicy` of
/// the template it runs ("Retain", "RetainExceptOnCreate" and "Snapshot" outlive a stack
/// delete; "Delete", the default for most types, does not: CloudFormation User Guide,
/// "DeletionPolicy attribute").
pub fn classify(
    template: &serde_json::Value,
    ids: &BTreeMap<String, String>,
) -> (Vec<Resource>, Vec<Resource>) {
    let mut kept = Vec::new();
    let mut lost = Vec::new();
    let Some(resources) = template["Resources"].as_object() else {
        return (kept, lost);
    };
    for (logical, resource) in resources {
        let kind = resource["Type"].as_str().unwrap_or_default();
        let policy = resource["DeletionPolicy"].as_str().unwrap_or("Delete");
        let Some(physical) = ids.get(logical).filter(|p| !p.is_empty()) else {
            continue;
        };
        let item = Resource {
            kind: kind.to_owned(),
            logical_id: logical.clone(),
            physical_id: physical.clone(),
            policy: policy.to_owned(),
        };
        match policy {
            "Retain" | "RetainExceptOnCreate" | "Snapshot" => kept.push(item),
            _ if DATA_TYPES.contains(&kind) => lost.push(item),
            _ => {}
        }
    }
    (kept, lost)
}

pub async fn plan(
    config: &aws_config::SdkConfig,
    account: &str,
    region: &str,
    options: &UninstallOptions,
) -> Result<UninstallPlan> {
    let cfn = CloudFormation::new(config);
    let staging_bucket = options
        .staging_bucket
        .clone()
        .unwrap_or_else(|| staging::default_bucket(account, region));
    let staging = Staging::new(config, &staging_bucket, region);
    let info = cfn.info(&options.app_stack).await?;
    let mut plan = UninstallPlan {
        app_stack: options.app_stack.clone(),
        app_status: info.as_ref().map(|i| i.status.clone()),
        snapshot: None,
        kept: Vec::new(),
        lost: Vec::new(),
        delete_data: options.delete_data,
        data_to_delete: Vec::new(),
        cluster: None,
        endpoints: None,
        repositories: Vec::new(),
        stack_repositories: Vec::new(),
        staging_bucket,
        record: None,
    };
    let mut repositories = Vec::new();
    if let Some(info) = &info {
        let template: serde_json::Value = cfn
            .template(&options.app_stack)
            .await?
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or_default();
        let ids = cfn.physical_ids(&options.app_stack).await?;
        (plan.kept, plan.lost) = classify(&template, &ids);
        plan.cluster = ids.get(DATABASE).filter(|c| !c.is_empty()).cloned();
        if !options.delete_data
            && let Some(cluster) = &plan.cluster
        {
            let stamp: String = humantime::format_rfc3339_seconds(std::time::SystemTime::now())
                .to_string()
                .chars()
                .filter(|c| c.is_ascii_digit())
                .take(12)
                .collect();
            plan.snapshot = Some(SnapshotPlan {
                cluster: cluster.clone(),
                identifier: rds::snapshot_identifier(&[&options.app_stack, "uninstall", &stamp]),
            });
        }
        for (key, value) in &info.parameters {
            if key.ends_with("Repository") && !value.is_empty() && !repositories.contains(value) {
                repositories.push(value.clone());
            }
        }
    } else if staging.exists().await?
        && let Some(bytes) = staging.get(&record_key(&options.app_stack)).await?
    {
        let record: Record = serde_json::from_slice(&bytes).map_err(|e| {
            Error::invalid(format!(
                "s3://{}/{}: not a record of an uninstall: {e}",
                plan.staging_bucket,
                record_key(&options.app_stack)
            ))
        })?;
        plan.kept = record.kept.clone();
        plan.cluster = record.cluster.clone();
        repositories = record.repositories.clone();
        plan.record = Some(record);
    }
    if options.delete_data {
        for item in &plan.kept {
            match item.kind.as_str() {
                "AWS::S3::Bucket" | "AWS::SecretsManager::Secret" => plan.data_to_delete.push(
                    format!("{} {} ({})", item.kind, item.physical_id, item.logical_id),
                ),
                _ => {}
            }
        }
        if let Some(cluster) = &plan.cluster {
            for snapshot in Rds::new(config).snapshots_of(cluster).await? {
                plan.data_to_delete
                    .push(format!("database snapshot {}", snapshot.identifier));
            }
            if info.is_some() {
                plan.data_to_delete.push(format!(
                    "the final snapshot CloudFormation takes of {cluster} as the stack goes"
                ));
            }
        }
    }
    if let Some(stack) = &options.endpoints_stack {
        plan.endpoints = Some((stack.clone(), cfn.status(stack).await?));
    }
    if options.repositories {
        plan.repositories = Ecr::new(config).existing(&repositories).await?;
    }
    plan.stack_repositories = repositories;
    Ok(plan)
}

pub async fn apply(
    config: &aws_config::SdkConfig,
    region: &str,
    plan: &UninstallPlan,
    progress: &dyn Progress,
) -> Result<UninstallReport> {
    let cfn = CloudFormation::new(config);
    let mut report = UninstallReport::default();
    let staging = Staging::new(config, &plan.staging_bucket, region);
    let rds = Rds::new(config);
    if let Some(snapshot) = &plan.snapshot {
        progress.step(&format!(
            "snapshot {} of database cluster {} before the stack goes",
            snapshot.identifier, snapshot.cluster
        ));
        let tags = vec![("dify-bundle:stack".to_owned(), plan.app_stack.clone())];
        rds.snapshot_cluster(
            &snapshot.cluster,
            &snapshot.identifier,
            &tags,
            SNAPSHOT_LIMIT,
            progress,
        )
        .await?;
        report.snapshot = Some(snapshot.identifier.clone());
    }
    if plan.app_status.is_some() {
        progress.step(&format!("deleting stack {}", plan.app_stack));
        report.app_deleted = cfn.delete(&plan.app_stack, progress).await?;
        report.kept = plan.kept.clone();
        if !plan.delete_data && staging.exists().await? {
            let mut snapshots = plan
                .record
                .as_ref()
                .map(|r| r.snapshots.clone())
                .unwrap_or_default();
            snapshots.extend(report.snapshot.clone());
            let record = Record {
                stack: plan.app_stack.clone(),
                kept: plan.kept.clone(),
                cluster: plan.cluster.clone(),
                snapshots,
                repositories: plan.stack_repositories.clone(),
            };
            let key = record_key(&plan.app_stack);
            let bytes = serde_json::to_vec_pretty(&record)
                .map_err(|e| Error::invalid(format!("the uninstall record: {e}")))?;
            staging.put(&key, bytes).await?;
            report.record = Some(format!("s3://{}/{key}", plan.staging_bucket));
        }
    }
    if plan.delete_data {
        for item in &plan.kept {
            let deleted = match item.kind.as_str() {
                "AWS::S3::Bucket" => {
                    crate::aws::retained::delete_bucket(config, &item.physical_id).await?
                }
                "AWS::SecretsManager::Secret" => {
                    crate::aws::retained::delete_secret(config, &item.physical_id).await?
                }
                _ => false,
            };
            if deleted {
                progress.note(&format!("  deleted {} {}", item.kind, item.physical_id));
                report
                    .data_deleted
                    .push(format!("{} {}", item.kind, item.physical_id));
            }
        }
        if let Some(cluster) = &plan.cluster {
            for snapshot in rds.snapshots_of(cluster).await? {
                if rds.delete_snapshot(&snapshot.identifier).await? {
                    report
                        .data_deleted
                        .push(format!("database snapshot {}", snapshot.identifier));
                }
            }
        }
        if staging.exists().await? {
            staging.remove(&record_key(&plan.app_stack)).await?;
        }
    }
    let ecr = Ecr::new(config);
    for repository in &plan.repositories {
        if ecr.delete_repository(repository).await? {
            report.repositories_deleted.push(repository.clone());
        }
    }
    if let Some((stack, Some(_))) = &plan.endpoints {
        progress.step(&format!("deleting stack {stack} (VPC endpoints)"));
        report.endpoints_deleted = cfn.delete(stack, progress).await?;
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn retained_and_snapshotted_resources_are_kept_data_with_delete_is_named_lost() {
        let template = json!({"Resources": {
            "StorageBucket": {"Type": "AWS::S3::Bucket", "DeletionPolicy": "Retain"},
            "Database": {"Type": "AWS::RDS::DBCluster", "DeletionPolicy": "Snapshot"},
            "DifySecretKey": {"Type": "AWS::SecretsManager::Secret"},
            "Logs": {"Type": "AWS::Logs::LogGroup", "DeletionPolicy": "Delete"},
            "Cluster": {"Type": "AWS::ECS::Cluster"},
            "Missing": {"Type": "AWS::S3::Bucket", "DeletionPolicy": "Retain"},
        }});
        let ids: BTreeMap<String, String> = [
            ("StorageBucket", "dify-storagebucket-1"),
            ("Database", "dify-database-1"),
            (
                "DifySecretKey",
                "arn:aws:secretsmanager:us-east-1:1:secret:key",
            ),
            ("Logs", "/dify/api"),
            ("Cluster", "dify-cluster"),
        ]
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
        let (kept, lost) = classify(&template, &ids);
        let names = |r: &[Resource]| r.iter().map(|r| r.logical_id.clone()).collect::<Vec<_>>();
        assert_eq!(names(&kept), ["Database", "StorageBucket"]);
        assert_eq!(names(&lost), ["DifySecretKey", "Logs"]);
        assert_eq!(lost[0].policy, "Delete");
    }
}
