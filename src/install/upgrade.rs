//! Installing onto a stack that is already there: which Dify and which bundle it runs (read
//! back from the stack), which parameters the operator gave this time and which the stack
//! keeps (`UsePreviousValue`, so a certificate, extra client networks or a log retention
//! chosen once are never reset by a later run that does not repeat them), and the database
//! snapshot a Dify version change takes first, with the way back if the change fails.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::aws::cloudformation::{Change, StackInfo};

/// Stack tags that record what a stack was deployed from (keys must not start with `aws:`;
/// values at most 256 characters: CloudFormation API Reference, `Tag`).
pub const TAG_BUNDLE: &str = "dify-bundle:bundle";
pub const TAG_DIFY_VERSION: &str = "dify-bundle:dify-version";
/// sha256 of the signed bundle.json.
pub const TAG_MANIFEST: &str = "dify-bundle:bundle-json";

/// What a deployed stack says it runs.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Deployed {
    pub dify_version: Option<String>,
    pub bundle: Option<String>,
    /// sha256 of the bundle.json it was installed from (a stack tag).
    pub bundle_json: Option<String>,
    /// sha256 of the template the stack runs (GetTemplate): the `stack.digest` of the
    /// bundle.json it came from.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub template: Option<String>,
}

/// Reads the Dify version and bundle name from the stack: the description of the template
/// it runs (`template`, the GetTemplate body; `dify-bundle: Dify VERSION (BUNDLE) …`,
/// written by `stack::app::template` and signed in the bundle, so it always matches what
/// runs), else DescribeStacks' description, else the stack tags.
pub fn deployed(info: &StackInfo, template: Option<&str>) -> Deployed {
    let body_description = template
        .and_then(|t| serde_json::from_str::<serde_json::Value>(t).ok())
        .and_then(|t| t["Description"].as_str().map(str::to_owned));
    let from_description = body_description
        .as_deref()
        .or(info.description.as_deref())
        .and_then(|d| {
            let rest = d.strip_prefix("dify-bundle: Dify ")?;
            let (version, rest) = rest.split_once(" (")?;
            let (bundle, _) = rest.split_once(')')?;
            Some((version.to_owned(), bundle.to_owned()))
        });
    let tag = |key: &str| info.tags.get(key).cloned();
    let mut out = match from_description {
        Some((version, bundle)) => Deployed {
            dify_version: Some(version),
            bundle: Some(bundle),
            bundle_json: tag(TAG_MANIFEST),
            template: None,
        },
        None => Deployed {
            dify_version: tag(TAG_DIFY_VERSION),
            bundle: tag(TAG_BUNDLE),
            bundle_json: tag(TAG_MANIFEST),
            template: None,
        },
    };
    out.template = template.map(|t| crate::digest::Digest::of(t.as_bytes()).to_string());
    out
}

/// A parameter whose value this run changes.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ParameterChange {
    pub key: String,
    /// `None`: the stack did not have it.
    pub from: Option<String>,
    pub to: String,
}

/// The parameters of a deploy, worked out against the stack as it is.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Parameters {
    /// Given this time (by the operator, or worked out: network, repositories).
    #[serde(rename = "parameters")]
    pub given: BTreeMap<String, String>,
    /// Kept at the stack's current value (`UsePreviousValue`), with that value.
    pub kept: BTreeMap<String, String>,
    /// New in this template and not given: the template's default applies.
    pub defaulted: Vec<String>,
    /// Given values that differ from the stack's.
    pub changed: Vec<ParameterChange>,
    /// The stack has them, the new template does not.
    pub dropped: Vec<String>,
}

/// Splits the template's parameters into given, kept and defaulted. `current` is the
/// stack's parameters, `None` for a stack to create (nothing can be kept then).
pub fn reconcile(
    template: &[String],
    current: Option<&BTreeMap<String, String>>,
    given: BTreeMap<String, String>,
) -> Parameters {
    let mut out = Parameters::default();
    for key in template {
        if given.contains_key(key) {
            continue;
        }
        match current.and_then(|c| c.get(key)) {
            Some(value) => {
                out.kept.insert(key.clone(), value.clone());
            }
            None => out.defaulted.push(key.clone()),
        }
    }
    if let Some(current) = current {
        for (key, to) in &given {
            let from = current.get(key);
            if !from.is_some_and(|f| crate::aws::cloudformation::same_value(f, to)) {
                out.changed.push(ParameterChange {
                    key: key.clone(),
                    from: from.cloned(),
                    to: to.clone(),
                });
            }
        }
        out.dropped = current
            .keys()
            .filter(|k| !template.contains(k))
            .cloned()
            .collect();
    }
    out.given = given;
    out
}

/// The snapshot taken before a Dify version change.
#[derive(Clone, Debug, Serialize)]
pub struct SnapshotPlan {
    /// The Aurora cluster (the stack's `Database`).
    pub cluster: String,
    pub identifier: String,
}

/// An install onto an existing stack.
#[derive(Clone, Debug, Serialize)]
pub struct Upgrade {
    pub from: Deployed,
    pub to_version: String,
    pub to_bundle: String,
    /// The Dify version differs (or the stack does not say which it runs).
    pub version_changes: bool,
    /// What the change set would do, when it could be worked out beforehand.
    pub changes: Option<Vec<Change>>,
    /// Taken before the stack changes, when the Dify version changes and the stack has a
    /// database.
    pub snapshot: Option<SnapshotPlan>,
}

impl Upgrade {
    /// "Dify 1.13.3 → 1.17.1" (or "Dify 1.17.1, unchanged").
    pub fn headline(&self) -> String {
        let from = self.from.dify_version.as_deref().unwrap_or("(unknown)");
        if self.version_changes {
            format!("Dify {from} → {}", self.to_version)
        } else {
            format!("Dify {from}, unchanged")
        }
    }

    /// Resources the change set replaces (or may replace).
    pub fn replaced(&self) -> Vec<&Change> {
        self.changes
            .iter()
            .flatten()
            .filter(|c| c.replaces())
            .collect()
    }
}

/// A snapshot name: the stack, the version it protects, when.
pub fn snapshot_name(
    stack: &str,
    from_version: Option<&str>,
    now: std::time::SystemTime,
) -> String {
    let stamp: String = humantime::format_rfc3339_seconds(now)
        .to_string()
        .chars()
        .filter(|c| c.is_ascii_digit())
        .take(12)
        .collect();
    crate::aws::rds::snapshot_identifier(&[
        stack,
        "dify",
        from_version.unwrap_or("unknown"),
        &stamp,
    ])
}

/// What to do when the deploy after a snapshot fails: the stack is rolled back by
/// CloudFormation to its previous template (images and settings of the old bundle), but the
/// new version may already have migrated the schema, and Dify ships no usable
/// down-migrations; the snapshot holds the database as it was.
pub fn way_back(stack: &str, region: &str, snapshot: &SnapshotPlan, from: &Deployed) -> String {
    format!(
        "the database was saved before the change as snapshot {id} (cluster {cluster}).\n\
         To return to Dify {version}: check the stack is back on its previous template \
         (aws cloudformation describe-stacks --region {region} --stack-name {stack}); if the new version \
         migrated the schema before failing, restore the snapshot into a new cluster \
         (aws rds restore-db-cluster-from-snapshot --region {region} --snapshot-identifier {id} \
         --db-cluster-identifier {cluster}-restored --engine aurora-postgresql), then move the data back \
         or point the deployment at it; install bundle {bundle} again to run its images.",
        id = snapshot.identifier,
        cluster = snapshot.cluster,
        version = from.dify_version.as_deref().unwrap_or("(previous)"),
        bundle = from.bundle.as_deref().unwrap_or("(previous)"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn what_the_operator_did_not_give_again_is_kept() {
        let template: Vec<String> = [
            "VpcId",
            "ApiRepository",
            "AllowedCidr1",
            "AllowedCidr2",
            "CertificateArn",
            "LogRetentionDays",
            "NewKnob",
        ]
        .map(str::to_owned)
        .to_vec();
        let current = map(&[
            ("VpcId", "vpc-1"),
            ("ApiRepository", "dify/dify-api"),
            ("AllowedCidr1", "10.0.0.0/16"),
            ("AllowedCidr2", "192.168.0.0/24"),
            ("CertificateArn", "arn:aws:acm:us-east-1:1:certificate/x"),
            ("LogRetentionDays", "365"),
            ("OldKnob", "1"),
        ]);
        let given = map(&[("VpcId", "vpc-1"), ("ApiRepository", "dify2/dify-api")]);
        let p = reconcile(&template, Some(&current), given);
        assert_eq!(
            p.kept,
            map(&[
                ("AllowedCidr1", "10.0.0.0/16"),
                ("AllowedCidr2", "192.168.0.0/24"),
                ("CertificateArn", "arn:aws:acm:us-east-1:1:certificate/x"),
                ("LogRetentionDays", "365"),
            ])
        );
        assert_eq!(p.defaulted, ["NewKnob"]);
        assert_eq!(p.dropped, ["OldKnob"]);
        assert_eq!(
            p.changed,
            [ParameterChange {
                key: "ApiRepository".into(),
                from: Some("dify/dify-api".into()),
                to: "dify2/dify-api".into()
            }]
        );

        // A stack to create keeps nothing: what is not given takes the template default.
        let fresh = reconcile(&template, None, map(&[("VpcId", "vpc-1")]));
        assert!(fresh.kept.is_empty() && fresh.changed.is_empty());
        assert_eq!(fresh.defaulted.len(), template.len() - 1);
    }

    #[test]
    fn the_deployed_version_is_read_from_the_template_description_then_tags() {
        let mut info = StackInfo {
            description: Some(
                "dify-bundle: Dify 1.13.3 (dify-1.13.3) behind an internal load balancer, in a VPC without internet"
                    .into(),
            ),
            tags: map(&[(TAG_DIFY_VERSION, "0.9"), (TAG_MANIFEST, "sha256:ab")]),
            ..StackInfo::default()
        };
        let d = deployed(&info, None);
        assert_eq!(d.dify_version.as_deref(), Some("1.13.3"));
        assert_eq!(d.bundle.as_deref(), Some("dify-1.13.3"));
        assert_eq!(d.bundle_json.as_deref(), Some("sha256:ab"));
        info.description = Some("something else".into());
        assert_eq!(deployed(&info, None).dify_version.as_deref(), Some("0.9"));
        let body = r#"{"Description": "dify-bundle: Dify 1.17.1 (dify-1.17.1) behind"}"#;
        let d = deployed(&info, Some(body));
        assert_eq!(d.dify_version.as_deref(), Some("1.17.1"));
        assert_eq!(
            d.template,
            Some(crate::digest::Digest::of(body.as_bytes()).to_string())
        );
    }

    #[test]
    fn a_snapshot_name_says_what_it_protects_and_the_way_back_names_it() {
        let at = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_796_232_600);
        let name = snapshot_name("dify", Some("1.13.3"), at);
        assert!(name.starts_with("dify-dify-1-13-3-2026"), "{name}");
        let plan = SnapshotPlan {
            cluster: "dify-database-abc".into(),
            identifier: name.clone(),
        };
        let from = Deployed {
            dify_version: Some("1.13.3".into()),
            bundle: Some("dify-1.13.3".into()),
            bundle_json: None,
            template: None,
        };
        let text = way_back("dify", "us-east-1", &plan, &from);
        assert!(
            text.contains(&format!("--snapshot-identifier {name}")),
            "{text}"
        );
        assert!(text.contains("To return to Dify 1.13.3"));
        assert!(text.contains("install bundle dify-1.13.3 again"));
    }
}
