//! `dify-bundle pack`: split a bundle into media parts.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::Args;
use dify_bundle::carry::parts;
use dify_bundle::units;
use dify_bundle::units::parse_size;

use super::progress::Reporter;

#[derive(Args)]
pub struct PackArgs {
    /// The bundle directory
    bundle: PathBuf,
    /// Folder to write NAME.partNNN.tar files to (a mounted medium, or a staging folder)
    #[arg(long)]
    out: PathBuf,
    /// Largest part, e.g. 4GiB, 700MiB, 25GB [default: just under FAT32's 4 GiB file limit]
    #[arg(long, default_value = "4095MiB")]
    split_size: String,
    #[command(flatten)]
    trust: super::keys::TrustArgs,
    /// Print a JSON summary on stdout
    #[arg(long)]
    json: bool,
}

pub async fn run(args: PackArgs) -> anyhow::Result<ExitCode> {
    let split_size = parse_size(&args.split_size)?;
    let policy = args.trust.policy()?;
    let reporter = Arc::new(Reporter::new());
    let report = parts::pack(
        &args.bundle,
        &args.out,
        split_size,
        &policy,
        reporter.clone(),
    )
    .await?;
    reporter.finish();
    eprintln!(
        "packed {} into {} parts in {} ({} in {:.1}s)",
        report.bundle,
        report.parts.len(),
        args.out.display(),
        units::bytes(report.bytes),
        report.seconds
    );
    if args.json {
        super::print_json(&report)?;
    }
    Ok(ExitCode::SUCCESS)
}
