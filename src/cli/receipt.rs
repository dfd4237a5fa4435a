//! `dify-bundle receipt`: inside the closed VPC, write down what the destination already
//! holds (the deployed bundle, the blobs of each role's ECR repository and of an S3 bundle
//! prefix) into a small file to carry out.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use clap::Args;
use dify_bundle::bundle::receipt::Receipt;
use dify_bundle::install::DEFAULT_APP_STACK;
use dify_bundle::install::receipt::{self, ReceiptOptions};
use dify_bundle::store::s3::{self, S3Location, S3Store};
use serde::Serialize;

use super::progress::Reporter;

#[derive(Args)]
pub struct ReceiptArgs {
    /// Where to write the receipt (JSON)
    #[arg(long, value_name = "FILE")]
    out: PathBuf,
    /// Name of the application stack
    #[arg(long, value_name = "NAME", default_value = DEFAULT_APP_STACK)]
    app_stack: String,
    /// Also record the blobs under this bundle prefix (as given to upload): s3://BUCKET/PREFIX
    #[arg(long, value_name = "URL")]
    s3: Option<String>,
    /// AWS region [default: the standard AWS configuration's]
    #[arg(long)]
    region: Option<String>,
    /// Read the registry at this endpoint instead of the one ECR names (http:// for plain HTTP)
    #[arg(long, value_name = "URL")]
    ecr_endpoint: Option<String>,
    /// Manifests read at once
    #[arg(long, default_value_t = 8)]
    concurrency: usize,
    /// Retries of a failed request before giving up
    #[arg(long, default_value_t = 5)]
    retries: u32,
    /// Print a JSON summary on stdout
    #[arg(long)]
    json: bool,
}

/// What `--json` prints: the receipt without its digests, and where it was written.
#[derive(Serialize)]
struct Summary<'a> {
    out: String,
    registry: &'a str,
    stack: Option<&'a str>,
    deployed: Option<&'a dify_bundle::bundle::receipt::Deployed>,
    repositories: Vec<RepositorySummary<'a>>,
    s3: Option<PrefixSummary<'a>>,
}

#[derive(Serialize)]
struct RepositorySummary<'a> {
    role: &'a str,
    repository: &'a str,
    blobs: usize,
}

#[derive(Serialize)]
struct PrefixSummary<'a> {
    location: &'a str,
    blobs: usize,
}

fn summary<'a>(receipt: &'a Receipt, out: &std::path::Path) -> Summary<'a> {
    Summary {
        out: out.display().to_string(),
        registry: &receipt.registry,
        stack: receipt.stack.as_deref(),
        deployed: receipt.deployed.as_ref(),
        repositories: receipt
            .repositories
            .iter()
            .map(|r| RepositorySummary {
                role: &r.role,
                repository: &r.repository,
                blobs: r.blobs.len(),
            })
            .collect(),
        s3: receipt.s3.as_ref().map(|s| PrefixSummary {
            location: &s.location,
            blobs: s.blobs.len(),
        }),
    }
}

fn print(receipt: &Receipt, out: &std::path::Path) {
    if let Some(d) = &receipt.deployed {
        eprintln!(
            "stack {}: Dify {} from bundle {} (bundle.json {})",
            receipt.stack.as_deref().unwrap_or("(unknown)"),
            d.dify_version.as_deref().unwrap_or("(unknown)"),
            d.bundle.as_deref().unwrap_or("(unknown)"),
            d.bundle_json
                .as_ref()
                .map(ToString::to_string)
                .unwrap_or_else(|| "(not recorded)".to_owned())
        );
    }
    eprintln!("registry {}:", receipt.registry);
    for r in &receipt.repositories {
        eprintln!(
            "  {:<14} {:<28} {} blobs",
            r.role,
            r.repository,
            r.blobs.len()
        );
    }
    if let Some(s) = &receipt.s3 {
        eprintln!("{}: {} blobs", s.location, s.blobs.len());
    }
    eprintln!(
        "receipt written to {}; carry it out and build the next bundle with `dify-bundle build --since {}`, which leaves out what is already here",
        out.display(),
        out.display()
    );
}

pub async fn run(args: ReceiptArgs) -> anyhow::Result<ExitCode> {
    let config = dify_bundle::aws::config(args.region.as_deref()).await;
    let retry = dify_bundle::retry::RetryPolicy {
        retries: args.retries,
        ..Default::default()
    };
    let s3 = match &args.s3 {
        Some(url) => Some(Arc::new(S3Store::new(
            s3::client_from(&config),
            S3Location::parse(url)?,
            retry,
            16 << 20,
            args.concurrency,
        ))),
        None => None,
    };
    let options = ReceiptOptions {
        app_stack: args.app_stack.clone(),
        ecr_endpoint: args.ecr_endpoint.clone(),
        s3,
        retry,
        concurrency: args.concurrency,
    };
    let reporter = Arc::new(Reporter::new());
    let taken = receipt::take(&config, &options, reporter.clone()).await;
    reporter.finish();
    let taken = taken.context("taking the receipt")?;
    taken
        .write(&args.out)
        .with_context(|| format!("writing the receipt to {}", args.out.display()))?;
    print(&taken, &args.out);
    if args.json {
        super::print_json(&summary(&taken, &args.out))?;
    }
    Ok(ExitCode::SUCCESS)
}
