//! `dify-bundle template`: the application stack's template, as signed in the bundle.

use std::io::Write;
use std::process::ExitCode;

use clap::Args;
use dify_bundle::bundle::{Bundle, Location};

#[derive(Args)]
pub struct TemplateArgs {
    /// A bundle directory, a folder of media parts, one part, or s3://BUCKET/PREFIX/bundles/NAME
    bundle: String,
    #[command(flatten)]
    trust: super::keys::TrustArgs,
}

pub async fn run(args: TemplateArgs) -> anyhow::Result<ExitCode> {
    let policy = args.trust.policy()?;
    let opened = Bundle::open(&Location::parse(&args.bundle)?, &policy).await?;
    super::keys::report_signature(&opened.signature);
    let bytes = opened.stack_template().await?;
    let mut out = std::io::stdout().lock();
    out.write_all(&bytes)?;
    out.write_all(b"\n")?;
    Ok(ExitCode::SUCCESS)
}
