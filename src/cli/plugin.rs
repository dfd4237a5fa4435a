//! `dify-bundle plugin verify`: a package's identifier and signature, as the daemon sees them.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Args, Subcommand};
use dify_bundle::bundle::{Bundle, Location};
use dify_bundle::plugins::{PluginKey, PluginPackage, SignatureCheck};

#[derive(Subcommand)]
pub enum PluginCommand {
    /// Check a .difypkg's signature against Dify's official key (and --pubkey keys) and print
    /// its identifier
    Verify(VerifyArgs),
    /// Resolve and download the packages' Python dependencies into a wheelhouse with a PEP 503
    /// index, for the plugin daemon's Python and platform
    Wheelhouse(WheelhouseArgs),
    /// Install a bundle's plugins into a running Dify through its console API (creating the
    /// admin account first when Dify has none); the password comes from DIFY_ADMIN_PASSWORD
    Install(InstallArgs),
}

#[derive(Args)]
pub struct InstallArgs {
    /// Dify's URL (the load balancer's)
    #[arg(long)]
    url: String,
    /// The bundle: a directory, a folder of media parts, or s3://BUCKET/PREFIX/bundles/NAME
    #[arg(long)]
    bundle: String,
    #[command(flatten)]
    admin: AdminArgs,
    #[command(flatten)]
    trust: super::keys::TrustArgs,
}

#[derive(Args, Clone)]
pub struct AdminArgs {
    /// The admin account's email (created when Dify has no admin yet)
    #[arg(long, value_name = "EMAIL")]
    pub admin_email: Option<String>,
    /// The admin account's display name
    #[arg(long, value_name = "NAME", default_value = "admin")]
    pub admin_name: String,
}

impl AdminArgs {
    /// The admin, with the password from the environment.
    pub fn admin(&self) -> anyhow::Result<Option<dify_bundle::dify::console::Admin>> {
        let Some(email) = &self.admin_email else {
            return Ok(None);
        };
        let password = std::env::var("DIFY_ADMIN_PASSWORD").map_err(|_| {
            anyhow::anyhow!(
                "set DIFY_ADMIN_PASSWORD to the admin password (it is never taken from the command line)"
            )
        })?;
        Ok(Some(dify_bundle::dify::console::Admin {
            email: email.clone(),
            name: self.admin_name.clone(),
            password,
        }))
    }
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

pub async fn run(command: PluginCommand) -> anyhow::Result<ExitCode> {
    match command {
        PluginCommand::Verify(args) => tokio::task::spawn_blocking(move || verify(args)).await?,
        PluginCommand::Wheelhouse(args) => wheelhouse(args).await,
        PluginCommand::Install(args) => install(args).await,
    }
}

fn verify(args: VerifyArgs) -> anyhow::Result<ExitCode> {
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

#[derive(Args)]
pub struct WheelhouseArgs {
    /// Plugin packages (.difypkg)
    #[arg(required = true)]
    files: Vec<PathBuf>,
    /// Directory to write the wheelhouse to (files/ and a PEP 503 simple/ index)
    #[arg(long)]
    out: PathBuf,
    /// Python version of the plugin daemon
    #[arg(long, default_value = "3.12")]
    python: String,
    /// Platform, as uv names it
    #[arg(long, default_value = "x86_64-manylinux_2_28")]
    platform: String,
    /// Where downloaded wheels are kept between runs [default: ~/.cache/dify-bundle]
    #[arg(long, value_name = "DIR")]
    cache_dir: Option<PathBuf>,
    /// Print JSON on stdout
    #[arg(long)]
    json: bool,
}

pub async fn wheelhouse(args: WheelhouseArgs) -> anyhow::Result<ExitCode> {
    use std::sync::Arc;

    use dify_bundle::copy::CopyOptions;
    use dify_bundle::python::PythonTarget;
    use dify_bundle::store::LayoutStore;

    let mut packages = Vec::new();
    for file in &args.files {
        let bytes = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
        packages.push(PluginPackage::read(&bytes, &file.display().to_string())?);
    }
    let cache_dir = match &args.cache_dir {
        Some(dir) => dir.clone(),
        None => super::build::default_cache_dir()?,
    };
    let cache = Arc::new(LayoutStore::create(&cache_dir.join("wheels"))?);
    let target = PythonTarget::for_resolution(&args.python, &args.platform);
    let work = work_dir(&cache_dir)?;
    let reporter: Arc<dyn dify_bundle::progress::Progress> =
        Arc::new(super::progress::Reporter::new());
    let result = dify_bundle::plugins::wheelhouse::gather(
        &packages,
        &target,
        &cache,
        &CopyOptions::default(),
        &reporter,
        &work,
    )
    .await;
    let _ = std::fs::remove_dir_all(&work);
    let (house, report) = result?;
    house.write_dir(&cache, &args.out)?;
    eprintln!(
        "{} wheels for Python {} on {} in {}; index: file://{}",
        house.wheels().len(),
        args.python,
        args.platform,
        args.out.display(),
        std::path::absolute(args.out.join("simple"))?.display()
    );
    if args.json {
        super::print_json(&report)?;
    }
    Ok(ExitCode::SUCCESS)
}

fn work_dir(cache: &std::path::Path) -> anyhow::Result<PathBuf> {
    let dir = cache.join(format!("work-{}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}

async fn install(args: InstallArgs) -> anyhow::Result<ExitCode> {
    let admin = args
        .admin
        .admin()?
        .ok_or_else(|| anyhow::anyhow!("--admin-email is required"))?;
    let policy = args.trust.policy()?;
    let opened = Bundle::open(&Location::parse(&args.bundle)?, &policy).await?;
    let packages = opened.plugin_packages().await?;
    report_plugins(&args.url, &admin, packages).await?;
    Ok(ExitCode::SUCCESS)
}

/// Installs `packages` into the Dify at `url` and says what happened to each.
async fn report_plugins(
    url: &str,
    admin: &dify_bundle::dify::console::Admin,
    packages: Vec<(String, Vec<u8>)>,
) -> anyhow::Result<()> {
    use dify_bundle::dify::console;
    let (created, outcomes) = console::install_plugins(
        url,
        admin,
        packages,
        std::time::Duration::from_secs(15 * 60),
    )
    .await?;
    print_outcomes(&admin.email, created, &outcomes);
    Ok(())
}

/// Says what installing plugins into Dify did.
pub fn print_outcomes(
    admin: &str,
    created: bool,
    outcomes: &[(String, dify_bundle::dify::console::PluginOutcome)],
) {
    use dify_bundle::dify::console::PluginOutcome;
    if created {
        eprintln!("created the admin account {admin}");
    }
    for (identifier, outcome) in outcomes {
        match outcome {
            PluginOutcome::AlreadyInstalled => eprintln!("plugin {identifier}: already installed"),
            PluginOutcome::Installed => eprintln!("plugin {identifier}: installed"),
        }
    }
}
