//! `dify-bundle template`: the application stack's template, as signed in the bundle.

use std::io::Write;
use std::process::ExitCode;

use clap::Args;
use dify_bundle::bundle;

#[derive(Args)]
pub struct TemplateArgs {
    /// A bundle directory, a folder of media parts, one part, or s3://BUCKET/PREFIX/bundles/NAME
    bundle: String,
    #[command(flatten)]
    trust: super::keys::TrustArgs,
}

pub fn run(args: TemplateArgs) -> anyhow::Result<ExitCode> {
    let policy = args.trust.policy()?;
    let source = dify_bundle::bundle::open_any(&args.bundle, tokio::runtime::Handle::current())?;
    let (manifest, signature) = bundle::open(source.as_ref(), &policy)?;
    super::keys::report_signature(&signature);
    let bytes = bundle::artefacts::stack_template(source.as_ref(), &manifest)?;
    let mut out = std::io::stdout().lock();
    out.write_all(&bytes)?;
    out.write_all(b"\n")?;
    Ok(ExitCode::SUCCESS)
}
