//! `dify-bundle upload` and `dify-bundle download`: carrying a bundle through S3.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::Args;
use dify_bundle::carry::s3::{self as transfer, TransferReport};
use dify_bundle::copy::CopyOptions;
use dify_bundle::store::s3::{self, S3Location, S3Store};
use dify_bundle::units;
use dify_bundle::units::parse_size;

use super::progress::Reporter;

/// Flags shared by uploads and downloads.
#[derive(Args)]
pub struct S3Args {
    /// Objects moved at once (and parts of one object)
    #[arg(long, default_value_t = 8)]
    concurrency: usize,
    /// Multipart part size for large blobs (at least 5MiB)
    #[arg(long, default_value = "16MiB")]
    part_size: String,
    /// Retries of a failed request before giving up
    #[arg(long, default_value_t = 5)]
    retries: u32,
    #[command(flatten)]
    trust: super::keys::TrustArgs,
    /// Print a JSON summary on stdout
    #[arg(long)]
    json: bool,
}

impl S3Args {
    async fn store(&self, location: S3Location) -> anyhow::Result<Arc<S3Store>> {
        let part_size = parse_size(&self.part_size)?;
        // S3's limits on multipart uploads: parts of 5 MiB to 5 GiB (the last may be
        // smaller), at most 10,000 of them
        // (https://docs.aws.amazon.com/AmazonS3/latest/userguide/qfacts.html).
        if !(5 << 20..=5 << 30).contains(&part_size) {
            anyhow::bail!(
                "--part-size {}: S3 takes parts of 5MiB to 5GiB; choose a size in that range",
                self.part_size
            );
        }
        let retry = dify_bundle::retry::RetryPolicy {
            retries: self.retries,
            ..Default::default()
        };
        Ok(Arc::new(S3Store::new(
            s3::client().await,
            location,
            retry,
            part_size,
            self.concurrency,
        )))
    }

    fn copy_options(&self) -> CopyOptions {
        CopyOptions {
            concurrency: self.concurrency.max(1),
            retry: dify_bundle::retry::RetryPolicy {
                retries: self.retries,
                ..Default::default()
            },
            ..CopyOptions::default()
        }
    }
}

#[derive(Args)]
pub struct UploadArgs {
    /// The bundle directory
    bundle: PathBuf,
    /// Where to put it: s3://BUCKET/PREFIX
    destination: String,
    #[command(flatten)]
    s3: S3Args,
}

#[derive(Args)]
pub struct DownloadArgs {
    /// The bundle in S3: s3://BUCKET/PREFIX/bundles/NAME
    source: String,
    /// Directory to write the bundle to (an interrupted download there resumes)
    out: PathBuf,
    #[command(flatten)]
    s3: S3Args,
}

fn summarise(verb: &str, report: &TransferReport, json: bool) -> anyhow::Result<ExitCode> {
    super::keys::report_signature(&report.signature);
    eprintln!(
        "{verb} {} ({}, {} blobs): sent {}, skipped {} already there, resumed {}, in {:.1}s",
        report.bundle,
        report.location,
        report.blobs,
        units::bytes(report.bytes_sent),
        units::bytes(report.bytes_skipped),
        units::bytes(report.bytes_resumed),
        report.seconds
    );
    if json {
        super::print_json(report)?;
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn upload(args: UploadArgs) -> anyhow::Result<ExitCode> {
    let store = args.s3.store(S3Location::parse(&args.destination)?).await?;
    let policy = args.s3.trust.policy()?;
    let reporter = Arc::new(Reporter::new());
    let report = transfer::upload(
        &args.bundle,
        store,
        &policy,
        &args.s3.copy_options(),
        reporter.clone(),
    )
    .await?;
    reporter.finish();
    summarise("uploaded", &report, args.s3.json)
}

pub async fn download(args: DownloadArgs) -> anyhow::Result<ExitCode> {
    let (location, name) = S3Location::parse_bundle(&args.source)?;
    let store = args.s3.store(location).await?;
    let policy = args.s3.trust.policy()?;
    let reporter = Arc::new(Reporter::new());
    let report = transfer::download(
        store,
        &name,
        &args.out,
        &policy,
        &args.s3.copy_options(),
        reporter.clone(),
    )
    .await?;
    reporter.finish();
    summarise("downloaded", &report, args.s3.json)
}
