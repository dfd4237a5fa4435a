//! `dify-bundle plugin verify`: a package's identifier and signature, as the daemon sees them.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Args, Subcommand};
use dify_bundle::plugins::{PluginKey, PluginPackage, SignatureCheck};

#[derive(Subcommand)]
pub enum PluginCommand {
    /// Check a .difypkg's signature against Dify's official key (and --pubkey keys) and print
    /// its identifier
    Verify(VerifyArgs),
}

#[derive(Args)]
pub struct VerifyArgs {
    /// The plugin package (.difypkg)
    file: PathBuf,
    /// An extra trusted plugin-signing key (PKCS#1 PEM); repeatable
    #[arg(long = "pubkey", value_name = "PEM")]
    pubkeys: Vec<PathBuf>,
    /// Print JSON on stdout
    #[arg(long)]
    json: bool,
}

pub fn run(command: PluginCommand) -> anyhow::Result<ExitCode> {
    let PluginCommand::Verify(args) = command;
    let keys = PluginKey::trusted(&args.pubkeys)?;
    let bytes =
        std::fs::read(&args.file).with_context(|| format!("reading {}", args.file.display()))?;
    let package = PluginPackage::read(&bytes, &args.file.display().to_string())?;
    let check = package.check_signature(&keys);
    if args.json {
        super::print_json(&serde_json::json!({
            "identifier": package.identifier(),
            "checksum": package.checksum,
            "manifest": package.manifest,
            "signature": check,
        }))?;
    } else {
        println!("{}", package.identifier());
    }
    match &check {
        SignatureCheck::Verified {
            key,
            category,
            time,
        } => {
            eprintln!(
                "signature: good, by the {key} key{} (signed {})",
                category
                    .as_ref()
                    .map(|c| format!(", category {c}"))
                    .unwrap_or_default(),
                humantime::format_rfc3339_seconds(
                    std::time::UNIX_EPOCH + std::time::Duration::from_secs((*time).max(0) as u64)
                )
            );
            Ok(ExitCode::SUCCESS)
        }
        SignatureCheck::Unsigned => {
            eprintln!(
                "{}: refused: the package is not signed (the plugin daemon, with FORCE_VERIFYING_SIGNATURE=true, refuses it too)",
                args.file.display()
            );
            Ok(ExitCode::FAILURE)
        }
        SignatureCheck::Invalid { reason } => {
            eprintln!("{}: refused: {reason}", args.file.display());
            Ok(ExitCode::FAILURE)
        }
    }
}
