//! `dify-bundle uninstall`: remove the application (and, when asked, the endpoints stack and
//! the ECR repositories), keeping the data unless `--delete-data` is given and confirmed.

use std::io::{BufRead, IsTerminal, Write};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::bail;
use clap::Args;
use dify_bundle::install::uninstall::{self, UninstallOptions, UninstallPlan};
use dify_bundle::install::{DEFAULT_APP_STACK, DEFAULT_ENDPOINTS_STACK};

use super::progress::Reporter;

#[derive(Args)]
pub struct UninstallArgs {
    /// AWS region [default: the standard AWS configuration's]
    #[arg(long)]
    region: Option<String>,
    /// Name of the application stack
    #[arg(long, value_name = "NAME", default_value = DEFAULT_APP_STACK)]
    app_stack: String,
    /// Remove the VPC endpoints stack too (a VPC it created goes with it)
    #[arg(long)]
    endpoints: bool,
    /// Name of the VPC endpoints stack
    #[arg(long, value_name = "NAME", default_value = DEFAULT_ENDPOINTS_STACK)]
    endpoints_stack: String,
    /// Remove the ECR repositories the application ran from, with their images
    #[arg(long)]
    repositories: bool,
    /// Delete the data as well: the retained buckets and secrets and the database's
    /// snapshots. Asks to type the stack's name, unless --yes-delete-data
    #[arg(long)]
    delete_data: bool,
    /// Confirms --delete-data without asking
    #[arg(long, requires = "delete_data")]
    yes_delete_data: bool,
    /// Bucket the install staged templates in (holds the record of what was kept)
    /// [default: dify-bundle-staging-ACCOUNT-REGION]
    #[arg(long, value_name = "BUCKET")]
    staging_bucket: Option<String>,
    /// Show what would be removed and kept, and change nothing
    #[arg(long)]
    plan: bool,
    /// Do not ask before removing
    #[arg(long)]
    yes: bool,
    /// Print the plan and the result as JSON on stdout
    #[arg(long)]
    json: bool,
}

fn print_plan(plan: &UninstallPlan) {
    match &plan.app_status {
        Some(status) => eprintln!("remove stack {} ({status})", plan.app_stack),
        None => eprintln!("stack {} does not exist", plan.app_stack),
    }
    if let Some(s) = &plan.snapshot {
        eprintln!(
            "  first: snapshot {} of database cluster {}",
            s.identifier, s.cluster
        );
    }
    if !plan.kept.is_empty() {
        eprintln!(
            "  {} (DeletionPolicy Retain/Snapshot):",
            if plan.delete_data {
                "outlive the stack, then deleted below"
            } else if plan.app_status.is_some() {
                "kept"
            } else {
                "kept by an earlier uninstall"
            }
        );
        for k in &plan.kept {
            eprintln!(
                "    {:<28} {} ({}, {})",
                k.kind, k.physical_id, k.logical_id, k.policy
            );
        }
    }
    for l in &plan.lost {
        eprintln!(
            "  deleted with the stack, its template says DeletionPolicy {}: {} {} ({})",
            l.policy, l.kind, l.physical_id, l.logical_id
        );
    }
    if plan.delete_data {
        eprintln!("  --delete-data, then deleted:");
        for d in &plan.data_to_delete {
            eprintln!("    {d}");
        }
    }
    for r in &plan.repositories {
        eprintln!("  remove ECR repository {r} and its images");
    }
    match &plan.endpoints {
        Some((stack, Some(status))) => eprintln!("  remove stack {stack} ({status})"),
        Some((stack, None)) => eprintln!("  stack {stack} does not exist"),
        None => {}
    }
}

/// `--delete-data` on a terminal: the stack's name, typed.
fn confirm_delete_data(stack: &str) -> anyhow::Result<bool> {
    if !std::io::stdin().is_terminal() {
        bail!(
            "--delete-data deletes the data for good: confirm with --yes-delete-data, or run it on a terminal to type the stack's name"
        );
    }
    eprint!("This deletes Dify's data for good. Type the stack's name ({stack}) to confirm: ");
    std::io::stderr().flush()?;
    let mut answer = String::new();
    std::io::stdin().lock().read_line(&mut answer)?;
    Ok(answer.trim() == stack)
}

pub async fn run(args: UninstallArgs) -> anyhow::Result<ExitCode> {
    let config = dify_bundle::aws::config(args.region.as_deref()).await;
    let identity = dify_bundle::aws::caller_identity(&config).await?;
    let region = config
        .region()
        .map(|r| r.to_string())
        .ok_or_else(|| anyhow::anyhow!("no AWS region: pass --region or set AWS_REGION"))?;
    let options = UninstallOptions {
        app_stack: args.app_stack.clone(),
        endpoints_stack: args.endpoints.then(|| args.endpoints_stack.clone()),
        repositories: args.repositories,
        delete_data: args.delete_data,
        staging_bucket: args.staging_bucket.clone(),
    };
    let plan = uninstall::plan(&config, &identity.account, &region, &options).await?;
    print_plan(&plan);
    if plan.nothing_to_do() {
        eprintln!("nothing to do: nothing of this deployment is left to remove");
        if args.json {
            super::print_json(&serde_json::json!({ "plan": plan, "nothing_to_do": true }))?;
        }
        return Ok(ExitCode::SUCCESS);
    }
    if args.plan {
        if args.json {
            super::print_json(&serde_json::json!({ "plan": plan }))?;
        }
        eprintln!("--plan: nothing was changed");
        return Ok(ExitCode::SUCCESS);
    }
    if args.delete_data && !args.yes_delete_data && !confirm_delete_data(&args.app_stack)? {
        eprintln!("not confirmed: nothing was changed");
        return Ok(ExitCode::FAILURE);
    }
    if !args.yes && !args.yes_delete_data && !super::install::confirm()? {
        eprintln!("nothing was changed");
        return Ok(ExitCode::FAILURE);
    }
    let reporter = Arc::new(Reporter::new());
    let report = uninstall::apply(&config, &region, &plan, reporter.as_ref()).await?;
    reporter.finish();
    if let Some(s) = &report.snapshot {
        eprintln!("database snapshot: {s}");
    }
    if report.app_deleted {
        eprintln!("stack {} removed", plan.app_stack);
    }
    if !plan.delete_data {
        for k in &report.kept {
            eprintln!("kept: {} {}", k.kind, k.physical_id);
        }
    }
    if let Some(record) = &report.record {
        eprintln!("what was kept is recorded in {record}");
    }
    for d in &report.data_deleted {
        eprintln!("deleted: {d}");
    }
    for r in &report.repositories_deleted {
        eprintln!("removed ECR repository {r}");
    }
    if report.endpoints_deleted {
        eprintln!("endpoints stack removed");
    }
    if args.json {
        super::print_json(&serde_json::json!({ "plan": plan, "report": report }))?;
    }
    Ok(ExitCode::SUCCESS)
}
