//! `dify-bundle install --isolated`: verify, plan, confirm, push.

use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context as _, bail};
use clap::Args;
use dify_bundle::aws::cloudformation::Deployed;
use dify_bundle::bundle::{Bundle, Location};
use dify_bundle::install::settings::{self, InstallFlags};
use dify_bundle::install::{InstallConfig, InstallPlan, Installer};
use dify_bundle::signing::TrustedKeys;
use dify_bundle::units;

use super::progress::Reporter;

#[derive(Args)]
pub struct InstallArgs {
    /// Install inside a VPC with no internet (the only mode)
    #[arg(long)]
    isolated: bool,
    /// The bundle: a directory, a folder of media parts, or s3://BUCKET/PREFIX/bundles/NAME
    #[arg(long)]
    bundle: String,
    /// Settings file (install.toml); flags override it
    #[arg(long)]
    config: Option<PathBuf>,
    /// Show every step and what it would change, and change nothing
    #[arg(long)]
    plan: bool,
    /// Do not ask before changing anything
    #[arg(long)]
    yes: bool,
    /// AWS region [default: the standard AWS configuration's]
    #[arg(long)]
    region: Option<String>,
    /// per-image (repositories PREFIX/IMAGE) or single-repo (one repository, tags IMAGE_TAG)
    #[arg(long, value_name = "LAYOUT")]
    ecr_layout: Option<String>,
    /// Repository prefix (per-image, default dify) or name (single-repo)
    #[arg(long, value_name = "NAME")]
    ecr_repository: Option<String>,
    /// KMS key for the repositories' encryption [default: AES256]
    #[arg(long, value_name = "ARN")]
    kms_key: Option<String>,
    /// Push to this registry endpoint instead of the one ECR names (http:// for plain HTTP)
    #[arg(long, value_name = "URL")]
    ecr_endpoint: Option<String>,
    /// Existing VPC to create the endpoints in (with --subnet-ids)
    #[arg(long, value_name = "VPC")]
    vpc_id: Option<String>,
    /// Subnets (two AZs) for the interface endpoints, comma-separated
    #[arg(long, value_name = "SUBNETS", value_delimiter = ',')]
    subnet_ids: Vec<String>,
    /// Create a new isolated VPC with this CIDR instead (two subnets in two AZs)
    #[arg(long, value_name = "CIDR", conflicts_with = "vpc_id")]
    new_vpc_cidr: Option<String>,
    /// Name of the VPC endpoints stack
    #[arg(long, value_name = "NAME")]
    endpoints_stack: Option<String>,
    /// Install the endpoints and images only, not the application stack
    #[arg(long)]
    no_app: bool,
    /// Name of the application stack [default: dify]
    #[arg(long, value_name = "NAME")]
    app_stack: Option<String>,
    /// A client network allowed to reach Dify's load balancer (repeat, at most 5)
    /// [default: the VPC's CIDR]
    #[arg(long = "allowed-cidr", value_name = "CIDR")]
    allowed_cidrs: Vec<String>,
    /// A stack setting, KEY=VALUE (repeat)
    #[arg(long = "app-setting", value_name = "KEY=VALUE", long_help = app_setting_help())]
    app_settings: Vec<String>,
    /// Bucket CloudFormation reads the template from, created when missing
    /// [default: dify-bundle-staging-ACCOUNT-REGION]
    #[arg(long, value_name = "BUCKET")]
    staging_bucket: Option<String>,
    /// How long to wait for Dify to be healthy after the deploy (e.g. 30m, 90s); 0: don't
    /// wait [default: 30m]
    #[arg(long, value_name = "DURATION")]
    wait: Option<String>,
    /// After the deploy, create the admin account when Dify has none (password from
    /// DIFY_ADMIN_PASSWORD) and install the bundle's plugins through the console API
    #[command(flatten)]
    admin: super::plugin::AdminArgs,
    #[command(flatten)]
    trust: super::keys::TrustArgs,
    /// Blobs pushed at once
    #[arg(long, default_value_t = 8)]
    concurrency: usize,
    /// Print the plan (and the result) as JSON on stdout
    #[arg(long)]
    json: bool,
}

/// The long help of `--app-setting`: its keys, from the one list install reads.
fn app_setting_help() -> String {
    let keys: Vec<&str> = dify_bundle::install::config::APP_SETTINGS
        .iter()
        .map(|(key, _)| *key)
        .collect();
    format!(
        "A stack setting, KEY=VALUE (repeat); KEY is one of: {}",
        keys.join(", ")
    )
}

fn print_plan(plan: &InstallPlan, admin: Option<&dify_bundle::dify::console::Admin>) {
    eprintln!(
        "plan for {} (Dify {}), account {} in {}:",
        plan.bundle, plan.dify_version, plan.identity.account, plan.region
    );
    eprintln!(
        "  1. verify the bundle: done, {} files, signature {}",
        plan.files_verified,
        match &plan.signature {
            dify_bundle::bundle::SignatureStatus::Verified { key_id, .. } =>
                format!("good (key {key_id})"),
            dify_bundle::bundle::SignatureStatus::NotVerified { .. } => "NOT VERIFIED".to_owned(),
        }
    );
    eprintln!(
        "  2. preflight: credentials work ({}); endpoints from this host:",
        plan.identity.arn
    );
    for endpoint in &plan.endpoints {
        eprintln!("       {endpoint}");
    }
    match &plan.network {
        Some(network) => {
            eprintln!("  3. network: stack {} in {}", network.stack, network.vpc);
            eprintln!("       endpoints to have: {}", network.create.join(", "));
            if !network.skip.is_empty() {
                eprintln!(
                    "       already in the VPC, skipped: {}",
                    network.skip.join(", ")
                );
            }
        }
        None => eprintln!("  3. network: skipped (no --vpc-id/--subnet-ids or --new-vpc-cidr)"),
    }
    print_ecr(plan);
    match &plan.app {
        Some(app) => {
            eprintln!(
                "  5. application: stack {} ({}), template {} ({}) staged in s3://{}",
                app.stack,
                app.status.as_deref().unwrap_or("to create"),
                app.template_digest,
                units::bytes(app.template_bytes),
                app.staging_bucket
            );
            print_app_changes(app);
            eprintln!("  6. wait until the services are stable and the targets healthy");
            match admin {
                Some(admin) => {
                    eprintln!(
                        "  7. through Dify's console API as {}: create that admin if there is none; install the bundled plugins not installed yet:",
                        admin.email
                    );
                    for plugin in &plan.plugins {
                        eprintln!("       {plugin}");
                    }
                }
                None => eprintln!(
                    "  7. plugins: {} bundled (their dependencies are in the plugin-daemon image); --admin-email installs them into Dify",
                    plan.plugins.len()
                ),
            }
        }
        None => eprintln!(
            "  5. application: skipped (needs a VPC: --vpc-id/--subnet-ids or --new-vpc-cidr; off with --no-app)"
        ),
    }
}

/// Parameters given, kept and changed; on an existing stack, the versions, the resources the
/// change set replaces and the snapshot taken first.
fn print_app_changes(app: &dify_bundle::install::AppPlan) {
    let p = &app.parameters;
    if let Some(upgrade) = &app.upgrade {
        eprintln!(
            "       {} (bundle {} → {})",
            upgrade.headline(),
            upgrade.from.bundle.as_deref().unwrap_or("(unknown)"),
            upgrade.to_bundle
        );
        match &upgrade.snapshot {
            Some(s) => eprintln!(
                "       first: snapshot {} of database cluster {} (kept until you delete it)",
                s.identifier, s.cluster
            ),
            None if upgrade.version_changes => {
                eprintln!("       the stack has no database cluster to snapshot")
            }
            None => {}
        }
    }
    for (key, value) in &p.given {
        let from = p.changed.iter().find(|c| &c.key == key);
        match from {
            Some(c) if c.from.is_some() => eprintln!(
                "       {key:<24} {} → {value}",
                c.from.as_deref().unwrap_or_default()
            ),
            _ => eprintln!("       {key:<24} {value}"),
        }
    }
    for (key, value) in &p.kept {
        eprintln!("       {key:<24} {value}  (kept)");
    }
    for key in &p.defaulted {
        eprintln!("       {key:<24} (template default)");
    }
    for key in &p.dropped {
        eprintln!("       {key:<24} (no longer in the template)");
    }
    if let Some(upgrade) = &app.upgrade {
        match &upgrade.changes {
            Some(changes) if changes.is_empty() => {
                eprintln!("       change set: no change to the stack")
            }
            Some(changes) => {
                let replaced = upgrade.replaced();
                eprintln!(
                    "       change set: {} resources change, {} replaced{}",
                    changes.len(),
                    replaced.len(),
                    if replaced.is_empty() { "" } else { ":" }
                );
                for change in replaced {
                    eprintln!("     {}", change.line());
                }
            }
            None => eprintln!(
                "       change set: shown before it runs (the staging bucket is not there yet)"
            ),
        }
    }
}

fn print_ecr(plan: &InstallPlan) {
    let Some(ecr) = &plan.ecr else {
        eprintln!("  4. ECR: planned once the network step has made the ECR endpoints");
        return;
    };
    eprintln!("  4. ECR registry {}:", ecr.registry);
    for repository in &ecr.repositories_to_create {
        eprintln!(
            "       create repository {repository} (immutable tags, scan on push, encrypted)"
        );
    }
    for repository in &ecr.repositories_existing {
        eprintln!("       repository {repository} exists");
    }
    for image in &ecr.images {
        eprintln!(
            "       {:<14} → {}:{}  ({})",
            image.role, image.repository, image.tag, image.digest
        );
    }
    let to_push = ecr.bytes - ecr.bytes_present;
    eprintln!(
        "       push {} of {} blobs ({}); {} blobs ({}) already in ECR",
        ecr.blobs - ecr.blobs_present,
        ecr.blobs,
        units::bytes(to_push),
        ecr.blobs_present,
        units::bytes(ecr.bytes_present)
    );
    if let Some(left_out) = &ecr.left_out {
        eprintln!(
            "       delta bundle: {} layers ({}) left out, each already in its repository{}",
            left_out.layers,
            units::bytes(left_out.bytes),
            match left_out.in_bundle {
                0 => String::new(),
                n => format!(" or carried after all ({n})"),
            }
        );
    }
    if ecr.blobs_shared > 0 {
        match ecr.blob_mounting {
            Some(false) => eprintln!(
                "       {} blobs are shared by several repositories: {} sent again to each, as ECR blob mounting is off for this account; `aws ecr put-account-setting --name BLOB_MOUNTING --value ENABLED` turns it on",
                ecr.blobs_shared,
                units::bytes(ecr.bytes_shared)
            ),
            _ => eprintln!(
                "       {} blobs are shared by several repositories: sent once, mounted into the others ({} not sent again)",
                ecr.blobs_shared,
                units::bytes(ecr.bytes_shared)
            ),
        }
    }
}

/// Asks on the terminal before a change set runs (the plan was confirmed already, so the
/// input is a terminal).
fn approve_change_set(stack: &str, changes: &[String]) -> bool {
    tokio::task::block_in_place(|| {
        eprintln!(
            "stack {stack} will change as listed above ({} changes).",
            changes.len()
        );
        eprint!("Execute this change set? [y/N] ");
        let _ = std::io::stderr().flush();
        let mut answer = String::new();
        std::io::stdin().lock().read_line(&mut answer).is_ok()
            && matches!(answer.trim(), "y" | "Y" | "yes")
    })
}

pub(super) fn confirm() -> anyhow::Result<bool> {
    if !std::io::stdin().is_terminal() {
        bail!(
            "not asking on a non-interactive input: review the plan with --plan, then run again with --yes"
        );
    }
    eprint!("Proceed? [y/N] ");
    std::io::stderr().flush()?;
    let mut answer = String::new();
    std::io::stdin().lock().read_line(&mut answer)?;
    Ok(matches!(answer.trim(), "y" | "Y" | "yes"))
}

pub async fn run(args: InstallArgs) -> anyhow::Result<ExitCode> {
    if !args.isolated {
        bail!("only isolated installs are supported: pass --isolated");
    }
    let config = match &args.config {
        Some(path) => InstallConfig::load(path)?,
        None => InstallConfig::default(),
    };
    let mut policy = args.trust.policy()?;
    if policy.keys.is_empty() && !config.public_keys.is_empty() {
        policy.keys = TrustedKeys::load(&config.public_keys)?;
    }
    let flags = InstallFlags {
        region: args.region.clone(),
        ecr_layout: args.ecr_layout.clone(),
        ecr_repository: args.ecr_repository.clone(),
        kms_key: args.kms_key.clone(),
        ecr_endpoint: args.ecr_endpoint.clone(),
        vpc_id: args.vpc_id.clone(),
        subnet_ids: args.subnet_ids.clone(),
        new_vpc_cidr: args.new_vpc_cidr.clone(),
        endpoints_stack: args.endpoints_stack.clone(),
        no_app: args.no_app,
        app_stack: args.app_stack.clone(),
        allowed_cidrs: args.allowed_cidrs.clone(),
        app_settings: args.app_settings.clone(),
        staging_bucket: args.staging_bucket.clone(),
        wait: args.wait.clone(),
        concurrency: args.concurrency,
    };
    let mut options = settings::resolve(&flags, &config)?;
    if !args.yes {
        options.approve = Some(Arc::new(approve_change_set));
    }
    // Read the password now, so a missing one fails before anything changes.
    options.admin = args.admin.admin()?;
    let reporter = Arc::new(Reporter::new());
    let opened = Bundle::open(&Location::parse(&args.bundle)?, &policy)
        .await
        .with_context(|| format!("installing {}", args.bundle))?;
    let installer = Installer::open(opened, options, reporter.clone())
        .await
        .with_context(|| format!("installing {}", args.bundle))?;
    reporter.finish();
    let plan = installer.plan().await?;
    super::keys::report_signature(&plan.signature);
    print_plan(&plan, installer.admin());
    if args.plan {
        if args.json {
            super::print_json(&plan)?;
        }
        eprintln!("--plan: nothing was changed");
        return Ok(ExitCode::SUCCESS);
    }
    if !args.yes && !confirm()? {
        eprintln!("nothing was changed");
        return Ok(ExitCode::FAILURE);
    }
    let report = installer.apply(&plan, reporter.clone()).await?;
    reporter.finish();
    match &report.network {
        Some(Deployed::NothingToDo) => {
            eprintln!("network: nothing to do, the endpoints stack is up to date")
        }
        Some(Deployed::Done { status, .. }) => eprintln!("network: endpoints stack {status}"),
        None => {}
    }
    let copy = &report.push.copy;
    if copy.bytes_transferred == 0
        && copy.manifests_written == 0
        && report.push.repositories_created.is_empty()
    {
        eprintln!("nothing to push: ECR already holds every image, manifest and tag");
    } else {
        eprintln!(
            "pushed {} ({} blobs mounted from another repository, {}; {} already there, {}), wrote {} manifests and tags, created {} repositories, in {:.1}s",
            units::bytes(copy.bytes_transferred),
            copy.blobs_mounted,
            units::bytes(copy.bytes_mounted),
            copy.blobs_present,
            units::bytes(copy.bytes_present),
            copy.manifests_written,
            report.push.repositories_created.len(),
            copy.seconds
        );
    }
    if let Some(app) = &report.app {
        if app.changed() {
            eprintln!("application: stack {} deployed", app.stack);
        } else {
            eprintln!(
                "application: nothing to do, stack {} is up to date",
                app.stack
            );
        }
        if let Some(snapshot) = &app.snapshot {
            eprintln!("database snapshot taken before the change: {snapshot}");
        }
        if app.healthy {
            eprintln!("Dify is healthy");
        }
        if let Some(url) = &app.url {
            eprintln!("Dify: {url}");
        }
        eprintln!("shell in the api container: {}", app.exec_command);
    }
    match (&report.plugins, installer.admin()) {
        (Some(plugins), Some(admin)) => {
            super::plugin::print_outcomes(&admin.email, plugins.admin_created, &plugins.outcomes)
        }
        (None, Some(_)) => eprintln!(
            "--admin-email: no application was deployed, so no plugins were installed into Dify"
        ),
        _ => {}
    }
    if args.json {
        super::print_json(&serde_json::json!({
            "plan": plan,
            "push": report.push,
            "network": report.network,
            "app": report.app,
            "plugins": report.plugins,
        }))?;
    }
    Ok(ExitCode::SUCCESS)
}
