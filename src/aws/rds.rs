//! The database's safety net: a manual Aurora cluster snapshot taken before anything that
//! cannot be undone (a Dify version change runs schema migrations, which Dify does not
//! reverse; an uninstall), waited on until it is `available`, and listed or deleted by name.

use std::time::{Duration, Instant};

use aws_sdk_rds::Client;
use aws_sdk_rds::types::{DbClusterSnapshot, Tag};
use serde::Serialize;

use crate::error::{Error, Result};
use crate::net::aws::sdk_error;
use crate::progress::Progress;

const POLL: Duration = Duration::from_secs(10);

/// A cluster snapshot as RDS reports it.
#[derive(Clone, Debug, Serialize)]
pub struct Snapshot {
    pub identifier: String,
    pub cluster: String,
    pub status: String,
    /// `manual` or `automated`.
    pub kind: String,
}

fn snapshot_of(s: &DbClusterSnapshot) -> Snapshot {
    Snapshot {
        identifier: s
            .db_cluster_snapshot_identifier()
            .unwrap_or_default()
            .to_owned(),
        cluster: s.db_cluster_identifier().unwrap_or_default().to_owned(),
        status: s.status().unwrap_or_default().to_owned(),
        kind: s.snapshot_type().unwrap_or_default().to_owned(),
    }
}

/// A snapshot identifier RDS accepts, from free text: "1 to 63 letters, numbers, or
/// hyphens; first character must be a letter; can't end with a hyphen or contain two
/// consecutive hyphens; stored as a lowercase string" (RDS API Reference,
/// CreateDBClusterSnapshot, `DBClusterSnapshotIdentifier`).
pub fn snapshot_identifier(parts: &[&str]) -> String {
    let mut id = String::new();
    for c in parts.join("-").chars() {
        let c = if c.is_ascii_alphanumeric() {
            c.to_ascii_lowercase()
        } else {
            '-'
        };
        if c == '-' && (id.is_empty() || id.ends_with('-')) {
            continue;
        }
        id.push(c);
    }
    if !id.starts_with(|c: char| c.is_ascii_alphabetic()) {
        id.insert_str(0, "s-");
    }
    id.truncate(63);
    while id.ends_with('-') {
        id.pop();
    }
    id
}

pub struct Rds {
    client: Client,
}

impl Rds {
    pub fn new(config: &aws_config::SdkConfig) -> Self {
        Rds {
            client: Client::new(config),
        }
    }

    /// The snapshot named `identifier`; `None` when there is none.
    pub async fn snapshot(&self, identifier: &str) -> Result<Option<Snapshot>> {
        match self
            .client
            .describe_db_cluster_snapshots()
            .db_cluster_snapshot_identifier(identifier)
            .send()
            .await
        {
            Ok(out) => Ok(out.db_cluster_snapshots().first().map(snapshot_of)),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_db_cluster_snapshot_not_found_fault()) =>
            {
                Ok(None)
            }
            Err(e) => Err(sdk_error("RDS", "DescribeDBClusterSnapshots", e)),
        }
    }

    /// Every manual snapshot of `cluster`.
    pub async fn snapshots_of(&self, cluster: &str) -> Result<Vec<Snapshot>> {
        let mut all = Vec::new();
        let mut marker: Option<String> = None;
        loop {
            let out = self
                .client
                .describe_db_cluster_snapshots()
                .db_cluster_identifier(cluster)
                .snapshot_type("manual")
                .set_marker(marker.clone())
                .send()
                .await
                .map_err(|e| sdk_error("RDS", "DescribeDBClusterSnapshots", e))?;
            all.extend(out.db_cluster_snapshots().iter().map(snapshot_of));
            marker = out.marker().map(str::to_owned);
            if marker.is_none() {
                return Ok(all);
            }
        }
    }

    /// Takes a manual snapshot of `cluster` named `identifier` (kept until deleted, unlike
    /// automated backups) and waits until it is `available`, at most `limit`. An existing
    /// snapshot of that name (a re-run) is waited on, not taken again.
    pub async fn snapshot_cluster(
        &self,
        cluster: &str,
        identifier: &str,
        tags: &[(String, String)],
        limit: Duration,
        progress: &dyn Progress,
    ) -> Result<Snapshot> {
        if self.snapshot(identifier).await?.is_none() {
            let mut create = self
                .client
                .create_db_cluster_snapshot()
                .db_cluster_identifier(cluster)
                .db_cluster_snapshot_identifier(identifier);
            for (key, value) in tags {
                create = create.tags(Tag::builder().key(key).value(value).build());
            }
            create
                .send()
                .await
                .map_err(|e| sdk_error("RDS", "CreateDBClusterSnapshot", e))?;
        }
        let started = Instant::now();
        loop {
            let snapshot = self.snapshot(identifier).await?.ok_or_else(|| {
                Error::invalid(format!(
                    "RDS snapshot {identifier} of {cluster} disappeared while it was being taken"
                ))
            })?;
            match snapshot.status.as_str() {
                "available" => return Ok(snapshot),
                "failed" | "deleting" | "deleted" => {
                    return Err(Error::invalid(format!(
                        "RDS snapshot {identifier} of {cluster} ended {}; nothing else was changed",
                        snapshot.status
                    )));
                }
                status => {
                    if started.elapsed() > limit {
                        return Err(Error::invalid(format!(
                            "RDS snapshot {identifier} of {cluster} still {status} after {}s",
                            limit.as_secs()
                        ))
                        .with_hint(format!("run again once it is available (aws rds describe-db-cluster-snapshots --db-cluster-snapshot-identifier {identifier})")));
                    }
                    progress.note(&format!("  snapshot {identifier}: {status}"));
                    tokio::time::sleep(POLL).await;
                }
            }
        }
    }

    /// Deletes a manual snapshot; `false` when there was none.
    pub async fn delete_snapshot(&self, identifier: &str) -> Result<bool> {
        if self.snapshot(identifier).await?.is_none() {
            return Ok(false);
        }
        self.client
            .delete_db_cluster_snapshot()
            .db_cluster_snapshot_identifier(identifier)
            .send()
            .await
            .map_err(|e| sdk_error("RDS", "DeleteDBClusterSnapshot", e))?;
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_identifiers_follow_the_rds_rules() {
        assert_eq!(
            snapshot_identifier(&["dify", "before", "1.17.1", "20261202T1730"]),
            "dify-before-1-17-1-20261202t1730"
        );
        assert_eq!(snapshot_identifier(&["--My_Stack--", "x"]), "my-stack-x");
        assert_eq!(snapshot_identifier(&["1st"]), "s-1st");
        let long = snapshot_identifier(&[&"a".repeat(62), "b"]);
        assert_eq!(long.len(), 62, "{long}");
        assert!(!long.ends_with('-'));
        for id in [long, snapshot_identifier(&["a--b", "-", "c"])] {
            assert!(!id.contains("--"), "{id}");
            assert!(id.len() <= 63);
        }
    }
}
