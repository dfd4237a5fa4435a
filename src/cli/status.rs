//! `dify-bundle status`: what is deployed where, read-only. Exit 0 when the application is
//! healthy, on the expected images, with every VPC endpoint; 1 otherwise.

use std::process::ExitCode;

use anyhow::Context as _;
use clap::Args;
use dify_bundle::bundle::{Bundle, Location};
use dify_bundle::install::status::{Status, StatusOptions};
use dify_bundle::install::upgrade::Deployed;
use dify_bundle::install::{DEFAULT_APP_STACK, DEFAULT_ENDPOINTS_STACK};

#[derive(Args)]
pub struct StatusArgs {
    /// AWS region [default: the standard AWS configuration's]
    #[arg(long)]
    region: Option<String>,
    /// Name of the application stack
    #[arg(long, value_name = "NAME", default_value = DEFAULT_APP_STACK)]
    app_stack: String,
    /// Name of the VPC endpoints stack
    #[arg(long, value_name = "NAME", default_value = DEFAULT_ENDPOINTS_STACK)]
    endpoints_stack: String,
    /// Compare the running images with this bundle's (signature checked) instead of with the
    /// deployed template's
    #[arg(long)]
    bundle: Option<String>,
    #[command(flatten)]
    trust: super::keys::TrustArgs,
    /// Print the status as JSON on stdout
    #[arg(long)]
    json: bool,
}

fn print(status: &Status) {
    let app = &status.app;
    match &app.status {
        None => eprintln!("application: stack {} does not exist", app.stack),
        Some(state) => {
            eprintln!(
                "application: stack {} {state} in {}",
                app.stack, status.region
            );
            if let Some(d) = &app.deployed {
                eprintln!(
                    "  Dify {} from bundle {} (bundle.json {}, template {})",
                    d.dify_version.as_deref().unwrap_or("(unknown)"),
                    d.bundle.as_deref().unwrap_or("(unknown)"),
                    d.bundle_json.as_deref().unwrap_or("(not recorded)"),
                    d.template.as_deref().unwrap_or("(unknown)")
                );
            }
            if let Some(url) = &app.url {
                eprintln!("  url: {url}");
            }
            for s in &app.services {
                eprintln!("  {s}");
            }
            for i in &app.images {
                eprintln!(
                    "    {:<14} {} {}",
                    i.container,
                    i.image,
                    if i.expected {
                        "(as expected)"
                    } else {
                        "(NOT EXPECTED)"
                    }
                );
            }
            for t in &app.targets {
                eprintln!(
                    "  target group {}: {} healthy, {} not",
                    t.name,
                    t.healthy,
                    t.unhealthy.len()
                );
            }
        }
    }
    let e = &status.endpoints;
    eprintln!(
        "endpoints: stack {} {}",
        e.stack,
        e.status.as_deref().unwrap_or("does not exist")
    );
    if let Some(vpc) = &e.vpc {
        eprintln!(
            "  VPC {vpc}: {} of {} endpoints present{}",
            e.present.len(),
            e.present.len() + e.missing.len(),
            if e.missing.is_empty() {
                String::new()
            } else {
                format!("; missing: {}", e.missing.join(", "))
            }
        );
    }
    if !app.problems.is_empty() {
        eprintln!("problems:");
        for p in &app.problems {
            eprintln!("  - {p}");
        }
    }
    eprintln!(
        "{}",
        if status.healthy() {
            "status: healthy"
        } else {
            "status: NOT healthy"
        }
    );
}

pub async fn run(args: StatusArgs) -> anyhow::Result<ExitCode> {
    let config = dify_bundle::aws::config(args.region.as_deref()).await;
    let bundle = match &args.bundle {
        Some(what) => {
            let policy = args.trust.policy()?;
            let opened = Bundle::open(&Location::parse(what)?, &policy).await?;
            let manifest = opened.manifest.clone();
            let identity = Deployed {
                dify_version: Some(manifest.dify_version.clone()),
                bundle: Some(manifest.name.clone()),
                bundle_json: Some(opened.json_digest().to_string()),
                template: manifest.stack.as_ref().map(|s| s.digest.to_string()),
            };
            Some((manifest, identity))
        }
        None => None,
    };
    let options = StatusOptions {
        app_stack: args.app_stack.clone(),
        endpoints_stack: args.endpoints_stack.clone(),
    };
    let status = dify_bundle::install::status::status(
        &config,
        &options,
        bundle.as_ref().map(|(m, i)| (m, i.clone())),
    )
    .await
    .context("reading the deployment's status")?;
    print(&status);
    if args.json {
        super::print_json(&status)?;
    }
    Ok(if status.healthy() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
