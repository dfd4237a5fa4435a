//! `dify-bundle inspect`.

use std::process::ExitCode;

use clap::Args;
use dify_bundle::bundle::{Bundle, Location, TrustPolicy};
use dify_bundle::units;

#[derive(Args)]
pub struct InspectArgs {
    /// A bundle directory, a folder of media parts, one part, or s3://BUCKET/PREFIX/bundles/NAME
    bundle: String,
    /// Print JSON instead of a table
    #[arg(long)]
    json: bool,
}

pub async fn run(args: InspectArgs) -> anyhow::Result<ExitCode> {
    // inspect checks no signature: any bundle is opened, signed or not.
    let unchecked = TrustPolicy {
        allow_unsigned: true,
        ..Default::default()
    };
    let opened = Bundle::open(&Location::parse(&args.bundle)?, &unchecked).await?;
    let inspection = opened.inspect();
    if args.json {
        super::print_json(&inspection)?;
        return Ok(ExitCode::SUCCESS);
    }
    // inspect checks no signature: every text from bundle.json is shown escaped.
    let e = units::escape;
    println!(
        "{}  (Dify {}, built {}, {})",
        e(&inspection.name),
        e(&inspection.dify_version),
        e(&inspection.created),
        e(&inspection.platforms.join(", "))
    );
    match &inspection.signed_by {
        Some(id) => println!("signed by key {id} (run `dify-bundle verify --pubkey` to check it)"),
        None => println!("NOT SIGNED"),
    }
    println!();
    println!("{:<15} {:<55} {:>10}", "ROLE", "SOURCE", "SIZE");
    for image in &inspection.images {
        println!(
            "{:<15} {:<55} {:>10}",
            e(&image.role),
            e(&image.source),
            units::bytes(image.size)
        );
        println!("{:<15} {}", "", image.digest);
        for platform in &image.platforms {
            println!(
                "{:<15}   {:<14} {}  {}",
                "",
                e(&platform.platform.to_string()),
                platform.digest,
                units::bytes(platform.size)
            );
        }
    }
    println!();
    for plugin in &inspection.plugins {
        println!(
            "plugin {}  ({}, signature {})",
            e(&plugin.identifier),
            units::bytes(plugin.size),
            if plugin.signature.is_verified() {
                "good"
            } else {
                "NOT verified"
            }
        );
    }
    match &inspection.stack {
        Some(stack) => println!(
            "application stack template {} ({}); `dify-bundle template` prints it",
            stack.digest,
            units::bytes(stack.size)
        ),
        None => println!("no application stack template"),
    }
    match &inspection.installer {
        Some(installer) => println!(
            "installer for {}{}: {} ({}), sha256 {}",
            installer.platform,
            installer
                .version
                .as_deref()
                .map(|v| format!(", dify-bundle {v}"))
                .unwrap_or_default(),
            installer.path,
            units::bytes(installer.size),
            installer.digest.hex()
        ),
        None => println!("no installer binary"),
    }
    if let Some(delta) = &inspection.delta {
        println!(
            "a delta bundle since {}: {} layers ({}) named but not carried; install checks the destination holds them",
            e(&delta.since.describe()),
            delta.omitted.len(),
            units::bytes(delta.omitted_bytes())
        );
    }
    println!(
        "{} files, {} stored; images total {}, {} saved by sharing blobs",
        inspection.files,
        units::bytes(inspection.stored_bytes),
        units::bytes(inspection.images_bytes),
        units::bytes(inspection.shared_bytes_saved)
    );
    Ok(ExitCode::SUCCESS)
}
