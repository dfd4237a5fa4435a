//! Deploying a stack the careful way: a change set, the diff shown, execute, stack events
//! streamed until the stack settles, outputs. No change → nothing to do. A failure names the
//! failing resources and their reasons; a stack left in ROLLBACK_COMPLETE by a failed first
//! create is removed so that a re-run can create it again. Also: what a stack holds now
//! (status, parameters, tags, description), a change set previewed and discarded, and a
//! stack deleted and waited on.

use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant};

use aws_sdk_cloudformation::Client;
use aws_sdk_cloudformation::error::ProvideErrorMetadata;
use aws_sdk_cloudformation::operation::describe_change_set::DescribeChangeSetOutput;
use aws_sdk_cloudformation::types::{Capability, ChangeSetStatus, ChangeSetType, Parameter, Tag};
use serde::Serialize;

use crate::error::{Error, Result};
use crate::net::aws::sdk_error;
use crate::progress::Progress;

const POLL: Duration = Duration::from_secs(2);
const LIMIT: Duration = Duration::from_secs(3600);

#[derive(Clone, Debug, serde::Serialize)]
pub enum Deployed {
    NothingToDo,
    Done {
        status: String,
        outputs: BTreeMap<String, String>,
    },
}

/// Where the template comes from.
pub enum TemplateSource {
    /// Inline, up to 51,200 bytes.
    Body(String),
    /// An S3 URL (the staging bucket).
    Url(String),
}

/// Asked with a stack's name and its change set, one line per change, before executing it;
/// `false` leaves the stack as it was.
pub type Approver = std::sync::Arc<dyn Fn(&str, &[String]) -> bool + Send + Sync>;

/// What to deploy.
pub struct StackRequest {
    pub template: TemplateSource,
    pub parameters: Vec<(String, String)>,
    /// Parameters left at the value the stack has now (`UsePreviousValue`; "During a stack
    /// update, use the existing parameter value that the stack is using for a given parameter
    /// key", AWS CloudFormation API Reference, `Parameter`). Only for updates.
    pub keep: Vec<String>,
    /// Stack tags (CloudFormation propagates them to the resources that take tags; keys must
    /// not start with `aws:`, values at most 256 characters: API Reference, `Tag`). Empty:
    /// the stack's tags are left as they are.
    pub tags: Vec<(String, String)>,
    /// The template creates IAM roles (CAPABILITY_IAM).
    pub iam: bool,
    /// `None`: execute without asking.
    pub approve: Option<Approver>,
}

impl StackRequest {
    pub fn inline(template: &str, approve: Option<Approver>) -> Self {
        StackRequest {
            template: TemplateSource::Body(template.to_owned()),
            parameters: Vec::new(),
            keep: Vec::new(),
            tags: Vec::new(),
            iam: false,
            approve,
        }
    }
}

/// Whether two parameter values are equal, list parameters compared item by item (some
/// implementations echo `a,b` back as `['a', 'b']`).
pub(crate) fn same_value(current: &str, wanted: &str) -> bool {
    let items = |text: &str| -> Vec<String> {
        text.trim_matches(|c| c == '[' || c == ']')
            .split(',')
            .map(|item| item.trim().trim_matches('\'').to_owned())
            .collect()
    };
    current == wanted || items(current) == items(wanted)
}

/// The error for a stack that ended failed: every failing resource with its reason.
fn failure(stack: &str, status: &str, failures: &[(String, String)]) -> Error {
    let mut lines: Vec<String> = Vec::new();
    for (resource, why) in failures {
        let line = format!("  - {resource}: {why}");
        // A rollback repeats the cause on the stack itself; keep each line once.
        if !lines.contains(&line) {
            lines.push(line);
        }
    }
    Error::invalid(format!(
        "stack {stack} ended {status}; run again once the cause is fixed:\n{}",
        if lines.is_empty() {
            "  (no failure events)".to_owned()
        } else {
            lines.join("\n")
        }
    ))
}

/// A stack as DescribeStacks gives it.
#[derive(Clone, Debug, Default, Serialize)]
pub struct StackInfo {
    pub name: String,
    pub status: String,
    /// The template's `Description`.
    pub description: Option<String>,
    pub parameters: BTreeMap<String, String>,
    pub outputs: BTreeMap<String, String>,
    pub tags: BTreeMap<String, String>,
}

/// One resource change of a change set (DescribeChangeSet `ResourceChange`).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Change {
    /// Add, Modify, Remove, Import or Dynamic.
    pub action: String,
    pub resource_type: String,
    pub logical_id: String,
    /// For Modify: "True" (replaced: a new resource is created and the old one deleted),
    /// "Conditional" (may be replaced) or "False" (API Reference, `ResourceChange`).
    pub replacement: Option<String>,
}

impl Change {
    /// Whether the resource is (or may be) created anew, the old one deleted.
    pub fn replaces(&self) -> bool {
        matches!(self.replacement.as_deref(), Some("True" | "Conditional"))
    }

    pub fn line(&self) -> String {
        format!(
            "  {:<8} {:<30} {}{}",
            self.action,
            self.resource_type,
            self.logical_id,
            match self.replacement.as_deref() {
                Some("True") => "  (replaced)",
                Some("Conditional") => "  (may be replaced)",
                _ => "",
            }
        )
    }
}

fn changes_of(described: &DescribeChangeSetOutput) -> Vec<Change> {
    described
        .changes()
        .iter()
        .filter_map(|c| c.resource_change())
        .map(|r| Change {
            action: r
                .action()
                .map(|a| a.as_str().to_owned())
                .unwrap_or_default(),
            resource_type: r.resource_type().unwrap_or_default().to_owned(),
            logical_id: r.logical_resource_id().unwrap_or_default().to_owned(),
            replacement: r.replacement().map(|x| x.as_str().to_owned()),
        })
        .collect()
}

pub struct CloudFormation {
    client: Client,
}

impl CloudFormation {
    pub fn new(config: &aws_config::SdkConfig) -> Self {
        CloudFormation {
            client: Client::new(config),
        }
    }

    /// The stack as DescribeStacks gives it; `None` when it does not exist.
    async fn describe(&self, stack: &str) -> Result<Option<aws_sdk_cloudformation::types::Stack>> {
        match self.client.describe_stacks().stack_name(stack).send().await {
            Ok(out) => Ok(out.stacks().first().cloned()),
            // A missing stack is a ValidationError "Stack with id NAME does not exist".
            Err(e)
                if e.code() == Some("ValidationError")
                    && e.message().is_some_and(|m| m.contains("does not exist")) =>
            {
                Ok(None)
            }
            Err(e) => Err(sdk_error("CloudFormation", "DescribeStacks", e)),
        }
    }

    /// What the stack holds now; `None` when it does not exist.
    pub async fn info(&self, stack: &str) -> Result<Option<StackInfo>> {
        Ok(self.describe(stack).await?.map(|s| {
            let pairs = |items: Vec<(Option<&str>, Option<&str>)>| -> BTreeMap<String, String> {
                items
                    .into_iter()
                    .filter_map(|(k, v)| Some((k?.to_owned(), v?.to_owned())))
                    .collect()
            };
            StackInfo {
                name: s.stack_name().unwrap_or(stack).to_owned(),
                status: s
                    .stack_status()
                    .map(|x| x.as_str().to_owned())
                    .unwrap_or_default(),
                description: s.description().map(str::to_owned),
                parameters: pairs(
                    s.parameters()
                        .iter()
                        .map(|p| (p.parameter_key(), p.parameter_value()))
                        .collect(),
                ),
                outputs: pairs(
                    s.outputs()
                        .iter()
                        .map(|o| (o.output_key(), o.output_value()))
                        .collect(),
                ),
                tags: pairs(s.tags().iter().map(|t| (t.key(), t.value())).collect()),
            }
        }))
    }

    /// The template the stack runs now (GetTemplate, as submitted); `None` when the stack
    /// does not exist.
    pub async fn template(&self, stack: &str) -> Result<Option<String>> {
        if self.status(stack).await?.is_none() {
            return Ok(None);
        }
        let out = self
            .client
            .get_template()
            .stack_name(stack)
            .send()
            .await
            .map_err(|e| sdk_error("CloudFormation", "GetTemplate", e))?;
        Ok(out.template_body().map(str::to_owned))
    }

    /// Deletes the stack and waits until it is gone; `false` when there was no stack.
    /// Resources with `DeletionPolicy: Retain` or `Snapshot` outlive it (CloudFormation
    /// User Guide, "DeletionPolicy attribute").
    pub async fn delete(&self, stack: &str, progress: &dyn Progress) -> Result<bool> {
        if self.status(stack).await?.is_none() {
            return Ok(false);
        }
        let mut seen = HashSet::new();
        self.client
            .delete_stack()
            .stack_name(stack)
            .send()
            .await
            .map_err(|e| sdk_error("CloudFormation", "DeleteStack", e))?;
        let status = self.wait_for_status(stack, progress, &mut seen).await?;
        if status != "DELETE_COMPLETE" {
            let failures = self.stream_events(stack, progress, &mut seen).await?;
            return Err(failure(stack, &status, &failures));
        }
        Ok(true)
    }

    /// The stack's status, or `None` when it does not exist.
    pub async fn status(&self, stack: &str) -> Result<Option<String>> {
        Ok(self
            .describe(stack)
            .await?
            .and_then(|s| s.stack_status().map(|s| s.as_str().to_owned())))
    }

    /// The stack's current parameter values.
    async fn parameters(&self, stack: &str) -> Result<BTreeMap<String, String>> {
        Ok(self
            .describe(stack)
            .await?
            .map(|s| {
                s.parameters()
                    .iter()
                    .filter_map(|p| {
                        Some((
                            p.parameter_key()?.to_owned(),
                            p.parameter_value()?.to_owned(),
                        ))
                    })
                    .collect()
            })
            .unwrap_or_default())
    }

    /// The stack's outputs (empty when it has none or does not exist).
    pub async fn outputs(&self, stack: &str) -> Result<BTreeMap<String, String>> {
        Ok(self
            .describe(stack)
            .await?
            .map(|s| {
                s.outputs()
                    .iter()
                    .filter_map(|o| {
                        Some((o.output_key()?.to_owned(), o.output_value()?.to_owned()))
                    })
                    .collect()
            })
            .unwrap_or_default())
    }

    /// Logical IDs of the stack's resources (none when the stack does not exist).
    pub async fn resources(&self, stack: &str) -> Result<Vec<String>> {
        Ok(self.physical_ids(stack).await?.into_keys().collect())
    }

    /// The stack's resources: logical ID → physical ID (empty when the stack does not exist).
    pub async fn physical_ids(&self, stack: &str) -> Result<BTreeMap<String, String>> {
        if self.status(stack).await?.is_none() {
            return Ok(BTreeMap::new());
        }
        let out = self
            .client
            .describe_stack_resources()
            .stack_name(stack)
            .send()
            .await
            .map_err(|e| sdk_error("CloudFormation", "DescribeStackResources", e))?;
        Ok(out
            .stack_resources()
            .iter()
            .filter_map(|r| {
                Some((
                    r.logical_resource_id()?.to_owned(),
                    r.physical_resource_id().unwrap_or_default().to_owned(),
                ))
            })
            .collect())
    }

    async fn wait_for_status(
        &self,
        stack: &str,
        progress: &dyn Progress,
        seen: &mut HashSet<String>,
    ) -> Result<String> {
        let started = Instant::now();
        loop {
            self.stream_events(stack, progress, seen).await?;
            let status = self
                .status(stack)
                .await?
                .unwrap_or_else(|| "DELETE_COMPLETE".to_owned());
            if !status.ends_with("_IN_PROGRESS") {
                return Ok(status);
            }
            if started.elapsed() > LIMIT {
                return Err(Error::invalid(format!(
                    "stack {stack} still {status} after an hour; check it in the console, then run again"
                )));
            }
            tokio::time::sleep(POLL).await;
        }
    }

    async fn stream_events(
        &self,
        stack: &str,
        progress: &dyn Progress,
        seen: &mut HashSet<String>,
    ) -> Result<Vec<(String, String)>> {
        let out = match self
            .client
            .describe_stack_events()
            .stack_name(stack)
            .send()
            .await
        {
            Ok(out) => out,
            Err(_) => return Ok(Vec::new()),
        };
        let mut failures = Vec::new();
        let mut events: Vec<_> = out.stack_events().iter().collect();
        events.reverse();
        for event in events {
            let id = event.event_id().unwrap_or_default().to_owned();
            let status = event
                .resource_status()
                .map(|s| s.as_str().to_owned())
                .unwrap_or_default();
            let resource = event.logical_resource_id().unwrap_or_default().to_owned();
            let reason = event
                .resource_status_reason()
                .unwrap_or_default()
                .to_owned();
            if status.ends_with("_FAILED") {
                failures.push((resource.clone(), reason.clone()));
            }
            if seen.insert(id) {
                progress.note(&format!(
                    "  {status:<20} {:<30} {resource} {reason}",
                    event.resource_type().unwrap_or_default()
                ));
            }
        }
        Ok(failures)
    }

    /// Deletes a change set that will not run (best effort: an unexecuted change set costs
    /// nothing and is replaced by the next deploy).
    async fn discard(&self, stack: &str, change_set: &str) {
        let _ = self
            .client
            .delete_change_set()
            .stack_name(stack)
            .change_set_name(change_set)
            .send()
            .await;
    }

    /// Creates a change set of `kind` for `request` and waits until CloudFormation has worked
    /// it out; returns its name, its description and every resource change (all pages).
    async fn change_set(
        &self,
        stack: &str,
        request: &StackRequest,
        kind: ChangeSetType,
    ) -> Result<(String, DescribeChangeSetOutput, Vec<Change>)> {
        let change_set = format!(
            "dify-bundle-{}",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis())
                .unwrap_or(0)
        );
        let update = kind == ChangeSetType::Update;
        let mut create = self
            .client
            .create_change_set()
            .stack_name(stack)
            .change_set_name(&change_set)
            .change_set_type(kind);
        create = match &request.template {
            TemplateSource::Body(body) => create.template_body(body),
            TemplateSource::Url(url) => create.template_url(url),
        };
        for (key, value) in &request.parameters {
            create = create.parameters(
                Parameter::builder()
                    .parameter_key(key)
                    .parameter_value(value)
                    .build(),
            );
        }
        if update {
            for key in &request.keep {
                create = create.parameters(
                    Parameter::builder()
                        .parameter_key(key)
                        .use_previous_value(true)
                        .build(),
                );
            }
        }
        for (key, value) in &request.tags {
            create = create.tags(Tag::builder().key(key).value(value).build());
        }
        if request.iam {
            create = create.capabilities(Capability::CapabilityIam);
        }
        create
            .send()
            .await
            .map_err(|e| sdk_error("CloudFormation", "CreateChangeSet", e))?;
        let started = Instant::now();
        let described = loop {
            let described = self
                .client
                .describe_change_set()
                .stack_name(stack)
                .change_set_name(&change_set)
                .send()
                .await
                .map_err(|e| sdk_error("CloudFormation", "DescribeChangeSet", e))?;
            match described.status() {
                Some(ChangeSetStatus::CreateComplete) | Some(ChangeSetStatus::Failed) => {
                    break described;
                }
                _ if started.elapsed() > LIMIT => {
                    return Err(Error::invalid(format!(
                        "change set {change_set} of {stack} never became ready"
                    )));
                }
                _ => tokio::time::sleep(POLL).await,
            }
        };
        let mut changes = changes_of(&described);
        let mut token = described.next_token().map(str::to_owned);
        while let Some(next) = token {
            let page = self
                .client
                .describe_change_set()
                .stack_name(stack)
                .change_set_name(&change_set)
                .next_token(next)
                .send()
                .await
                .map_err(|e| sdk_error("CloudFormation", "DescribeChangeSet", e))?;
            changes.extend(changes_of(&page));
            token = page.next_token().map(str::to_owned);
        }
        Ok((change_set, described, changes))
    }

    /// Whether a worked-out change set changes nothing: CloudFormation says so, or (some
    /// implementations list no changes for parameter-only updates) it lists no change and
    /// every given parameter is already in place.
    async fn changes_nothing(
        &self,
        stack: &str,
        request: &StackRequest,
        described: &DescribeChangeSetOutput,
        changes: &[Change],
    ) -> bool {
        let reason = described.status_reason().unwrap_or_default();
        if reason.contains("didn't contain changes") || reason.contains("No updates") {
            return true;
        }
        if !changes.is_empty() {
            return false;
        }
        let current = self.parameters(stack).await.unwrap_or_default();
        request
            .parameters
            .iter()
            .all(|(k, v)| current.get(k).is_some_and(|c| same_value(c, v)))
    }

    /// What an update of an existing `stack` by `request` would change, worked out by a
    /// change set that is then deleted (an unexecuted change set changes nothing). `None`
    /// when the stack does not exist yet.
    pub async fn preview(
        &self,
        stack: &str,
        request: &StackRequest,
    ) -> Result<Option<Vec<Change>>> {
        match self.status(stack).await?.as_deref() {
            None | Some("REVIEW_IN_PROGRESS" | "ROLLBACK_COMPLETE") => return Ok(None),
            Some(_) => {}
        }
        let (name, described, changes) = self
            .change_set(stack, request, ChangeSetType::Update)
            .await?;
        self.discard(stack, &name).await;
        if self
            .changes_nothing(stack, request, &described, &changes)
            .await
        {
            return Ok(Some(Vec::new()));
        }
        if described.status() == Some(&ChangeSetStatus::Failed) {
            return Err(Error::invalid(format!(
                "stack {stack}: change set failed: {}",
                described.status_reason().unwrap_or_default()
            )));
        }
        Ok(Some(changes))
    }

    /// Creates or updates `stack` through a change set.
    pub async fn deploy(
        &self,
        stack: &str,
        request: &StackRequest,
        progress: &dyn Progress,
    ) -> Result<Deployed> {
        let mut seen = HashSet::new();
        let mut existing = self.status(stack).await?;
        if existing.as_deref() == Some("ROLLBACK_COMPLETE") {
            progress.note(&format!(
                "stack {stack} failed to create earlier; removing it so it can be created again"
            ));
            self.client
                .delete_stack()
                .stack_name(stack)
                .send()
                .await
                .map_err(|e| sdk_error("CloudFormation", "DeleteStack", e))?;
            self.wait_for_status(stack, progress, &mut seen).await?;
            existing = None;
        }
        // A create change set that was never executed (interrupted before): create again.
        if existing.as_deref() == Some("REVIEW_IN_PROGRESS") {
            existing = None;
        }
        let kind = if existing.is_some() {
            ChangeSetType::Update
        } else {
            ChangeSetType::Create
        };
        let (change_set, described, changes) = self.change_set(stack, request, kind).await?;
        if existing.is_some()
            && self
                .changes_nothing(stack, request, &described, &changes)
                .await
        {
            self.discard(stack, &change_set).await;
            return Ok(Deployed::NothingToDo);
        }
        if described.status() == Some(&ChangeSetStatus::Failed) {
            return Err(Error::invalid(format!(
                "stack {stack}: change set failed: {}",
                described.status_reason().unwrap_or_default()
            )));
        }
        let mut lines = Vec::new();
        for change in &changes {
            let line = change.line();
            progress.note(&line);
            lines.push(line);
        }
        if let Some(approve) = &request.approve
            && !approve(stack, &lines)
        {
            self.discard(stack, &change_set).await;
            if existing.is_none() {
                // A stack that was only ever reviewed: remove the empty shell.
                let _ = self.client.delete_stack().stack_name(stack).send().await;
            }
            return Err(Error::invalid(format!(
                "stack {stack}: the change set was not approved; the stack was left as it was"
            )));
        }
        self.client
            .execute_change_set()
            .stack_name(stack)
            .change_set_name(&change_set)
            .send()
            .await
            .map_err(|e| sdk_error("CloudFormation", "ExecuteChangeSet", e))?;
        let status = self.wait_for_status(stack, progress, &mut seen).await?;
        if status.contains("FAILED") || status.contains("ROLLBACK") {
            let failures = self.stream_events(stack, progress, &mut seen).await?;
            return Err(failure(stack, &status, &failures));
        }
        let outputs = self.outputs(stack).await?;
        Ok(Deployed::Done { status, outputs })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failure_names_every_failing_resource_once() {
        let failures = [
            (
                "Database".to_owned(),
                "The engine version 15.10 is not available in this region".to_owned(),
            ),
            (
                "LoadBalancer".to_owned(),
                "Access Denied for bucket: access-logs".to_owned(),
            ),
            (
                "Database".to_owned(),
                "The engine version 15.10 is not available in this region".to_owned(),
            ),
        ];
        let text = failure("dify", "ROLLBACK_COMPLETE", &failures).to_string();
        assert!(text.contains("stack dify ended ROLLBACK_COMPLETE; run again"));
        assert!(text.contains("  - Database: The engine version 15.10"));
        assert!(text.contains("  - LoadBalancer: Access Denied for bucket"));
        assert_eq!(text.matches("Database").count(), 1);
        assert!(
            failure("dify", "UPDATE_ROLLBACK_COMPLETE", &[])
                .to_string()
                .contains("(no failure events)")
        );
    }

    #[test]
    fn list_parameters_compare_item_by_item() {
        assert!(same_value("['subnet-a', 'subnet-b']", "subnet-a,subnet-b"));
        assert!(same_value("true", "true"));
        assert!(!same_value("['subnet-a']", "subnet-a,subnet-b"));
        assert!(!same_value("false", "true"));
    }
}
