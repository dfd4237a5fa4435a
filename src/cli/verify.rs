//! `dify-bundle verify`.

use std::process::ExitCode;
use std::sync::Arc;

use clap::Args;
use dify_bundle::bundle::{Bundle, Depth, Location};
use dify_bundle::units;

use super::progress::Reporter;

#[derive(Args)]
pub struct VerifyArgs {
    /// A bundle directory, a folder of media parts, one part (NAME.partNNN.tar), or
    /// s3://BUCKET/PREFIX/bundles/NAME
    bundle: String,
    #[command(flatten)]
    trust: super::keys::TrustArgs,
    /// Print a JSON report on stdout
    #[arg(long)]
    json: bool,
}

pub async fn run(args: VerifyArgs) -> anyhow::Result<ExitCode> {
    let reporter = Arc::new(Reporter::new());
    let policy = args.trust.policy()?;
    let opened = Bundle::open(&Location::parse(&args.bundle)?, &policy).await?;
    let report = opened.verify(Depth::Full, reporter.clone()).await?;
    reporter.finish();
    super::keys::report_signature(&report.signature);
    if args.json {
        super::print_json(&report)?;
    }
    if report.is_ok() {
        eprintln!(
            "{}: all {} files verified ({} in {:.1}s)",
            args.bundle,
            report.files,
            units::bytes(report.bytes),
            report.seconds
        );
        if report.left_out > 0 {
            eprintln!(
                "a delta bundle: {} layers ({}) are not carried; install checks that the destination holds them",
                report.left_out,
                units::bytes(report.left_out_bytes)
            );
        }
        Ok(ExitCode::SUCCESS)
    } else {
        for problem in &report.problems {
            eprintln!("error: {problem}");
        }
        eprintln!(
            "{}: verification FAILED: {} problems in {} files",
            args.bundle,
            report.problems.len(),
            report.files
        );
        Ok(ExitCode::FAILURE)
    }
}
