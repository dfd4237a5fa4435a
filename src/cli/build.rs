//! `dify-bundle build`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use clap::Args;
use dify_bundle::build::BuildOptions;
use dify_bundle::build::daemon::PluginOptions;
use dify_bundle::build::delta::SinceSource;
use dify_bundle::build::installer::InstallerOptions;
use dify_bundle::build::sandbox::Requirements;
use dify_bundle::oci::Platform;
use dify_bundle::recipe::Recipe;
use dify_bundle::retry::RetryPolicy;
use dify_bundle::stack::app::StackSettings;
use dify_bundle::store::RegistryOptions;
use dify_bundle::store::registry::auth::{self, Credentials};
use dify_bundle::units;

use super::progress::Reporter;

#[derive(Args)]
pub struct BuildArgs {
    /// Directory to write the bundle to (created if missing; an interrupted build there resumes)
    #[arg(long)]
    out: PathBuf,
    /// Dify release to bundle (a built-in recipe); default: the newest built in
    #[arg(long, conflicts_with = "recipe")]
    dify_version: Option<String>,
    /// A recipe file (TOML) instead of a built-in one
    #[arg(long)]
    recipe: Option<PathBuf>,
    /// Platform to include, OS/ARCH[/VARIANT]; repeat for several
    #[arg(long = "platform", default_value = "linux/amd64")]
    platforms: Vec<Platform>,
    /// Credentials for a registry, HOST=USER:env:VARIABLE (password from that environment
    /// variable) or HOST=USER:stdin (one line of standard input); repeatable. Never the
    /// password itself. ~/.docker/config.json and its credential helpers are used too
    #[arg(long = "registry-auth", value_name = "HOST=USER:SOURCE")]
    registry_auth: Vec<String>,
    /// Pull a registry's images through a mirror, REGISTRY=HOST[:PORT] (repeatable)
    #[arg(long = "registry-mirror", value_name = "REGISTRY=HOST[:PORT]")]
    registry_mirror: Vec<String>,
    /// Speak plain HTTP to this registry host (repeatable)
    #[arg(long = "insecure-registry", value_name = "HOST[:PORT]")]
    insecure_registry: Vec<String>,
    /// Blobs downloaded at once
    #[arg(long, default_value_t = 8)]
    concurrency: usize,
    /// Retries of a failed request or blob before giving up
    #[arg(long, default_value_t = 5)]
    retries: u32,
    /// Python requirements (requirements.txt syntax) to bake into the sandbox image,
    /// instead of the recipe's
    #[arg(long, value_name = "FILE")]
    sandbox_requirements: Option<PathBuf>,
    /// Leave the sandbox image as it is (no Python packages baked in)
    #[arg(long, conflicts_with = "sandbox_requirements")]
    no_sandbox_packages: bool,
    /// Where downloaded wheels are kept between builds [default: ~/.cache/dify-bundle]
    #[arg(long, value_name = "DIR")]
    cache_dir: Option<PathBuf>,
    /// Add a local plugin package (.difypkg); repeatable
    #[arg(long = "plugin", value_name = "FILE")]
    plugins: Vec<PathBuf>,
    /// An extra trusted plugin-signing key (PKCS#1 PEM) besides Dify's official one;
    /// repeatable. The daemon is configured to trust it too
    #[arg(long = "plugin-pubkey", value_name = "PEM")]
    plugin_pubkeys: Vec<PathBuf>,
    /// Dify marketplace to download the recipe's plugins from (a mirror, for example)
    #[arg(long, value_name = "URL", default_value = dify_bundle::plugins::marketplace::DEFAULT_URL)]
    marketplace_url: String,
    /// Leave plugins out (the recipe's and --plugin)
    #[arg(long, conflicts_with = "plugins")]
    no_plugins: bool,
    /// Build-time settings of the application stack (extra environment variables per
    /// container), baked into the signed template
    #[arg(long, value_name = "FILE")]
    stack_config: Option<PathBuf>,
    /// The installer binary to carry inside the bundle, e.g. a release build for another
    /// platform [default: this dify-bundle executable]
    #[arg(long, value_name = "FILE")]
    installer: Option<PathBuf>,
    /// Carry no installer binary in the bundle
    #[arg(long, env = "DIFY_BUNDLE_NO_INSTALLER", conflicts_with = "installer")]
    no_installer: bool,
    /// Carry only what the destination lacks: a receipt taken inside (`dify-bundle receipt`)
    /// or the directory of the bundle installed there. bundle.json still names every layer;
    /// install checks that the destination holds the ones left out
    #[arg(long, value_name = "RECEIPT|BUNDLE_DIR")]
    since: Option<PathBuf>,
    /// Sign the bundle with this minisign secret key
    #[arg(long, value_name = "KEY")]
    sign_key: Option<PathBuf>,
    #[command(flatten)]
    password: super::keys::PasswordArgs,
    /// Print a JSON summary on stdout
    #[arg(long)]
    json: bool,
}

fn registry_options(args: &BuildArgs) -> anyhow::Result<RegistryOptions> {
    let mut options = RegistryOptions {
        retry: RetryPolicy {
            retries: args.retries,
            ..RetryPolicy::default()
        },
        ..RegistryOptions::default()
    };
    if let Some(path) = auth::docker_config_path() {
        options.credentials = auth::read_docker_config(&path)?;
        options.helpers = auth::read_docker_helpers(&path)?;
    }
    let mut stdin_used = false;
    let mut read_stdin = || -> dify_bundle::Result<String> {
        if std::mem::replace(&mut stdin_used, true) {
            return Err(dify_bundle::Error::invalid(
                "--registry-auth: only one password can come from standard input",
            ));
        }
        let mut line = String::new();
        std::io::stdin()
            .read_line(&mut line)
            .map_err(|e| dify_bundle::Error::invalid(format!("standard input: {e}")))?;
        Ok(line.trim_end_matches(['\n', '\r']).to_owned())
    };
    for flag in &args.registry_auth {
        let (host, credentials) = Credentials::parse_flag(flag, &mut read_stdin)?;
        options.credentials.insert(host, credentials);
    }
    for flag in &args.registry_mirror {
        options.add_mirror_flag(flag)?;
    }
    options.insecure = args.insecure_registry.iter().cloned().collect();
    Ok(options)
}

pub fn default_cache_dir() -> anyhow::Result<PathBuf> {
    if let Some(dir) = std::env::var_os("XDG_CACHE_HOME") {
        return Ok(PathBuf::from(dir).join("dify-bundle"));
    }
    match std::env::var_os("HOME") {
        Some(home) => Ok(PathBuf::from(home).join(".cache/dify-bundle")),
        None => anyhow::bail!("no HOME to keep the wheel cache in; pass --cache-dir DIR"),
    }
}

pub async fn run(args: BuildArgs) -> anyhow::Result<ExitCode> {
    let recipe = match &args.recipe {
        Some(path) => Recipe::load(path)?,
        None => Recipe::builtin(args.dify_version.as_deref())?,
    };
    let sandbox_requirements = if args.no_sandbox_packages {
        None
    } else if let Some(file) = &args.sandbox_requirements {
        Some(Requirements::File(file.clone()))
    } else {
        recipe
            .sandbox
            .as_ref()
            .map(|s| Requirements::Lines(s.requirements.clone()))
    };
    let cache_dir = match &args.cache_dir {
        Some(dir) => dir.clone(),
        None => default_cache_dir()?,
    };
    let stack = match &args.stack_config {
        Some(path) => StackSettings::load(path)?,
        None => StackSettings::default(),
    };
    let installer = if args.no_installer {
        None
    } else if let Some(binary) = &args.installer {
        Some(InstallerOptions {
            binary: binary.clone(),
            version: None,
        })
    } else {
        let binary = std::env::current_exe().context(
            "finding this executable to carry as the installer (or pass --no-installer)",
        )?;
        Some(InstallerOptions {
            binary,
            version: Some(super::short_version()),
        })
    };
    // Open the key before the long download, so a wrong password fails fast.
    let signing_key = match &args.sign_key {
        Some(path) => Some(super::keys::load_signing_key(path, &args.password)?),
        None => None,
    };
    let since = match &args.since {
        Some(path) => Some(SinceSource::from_path(path)?),
        None => None,
    };
    let options = BuildOptions {
        since,
        sign: signing_key,
        installer,
        stack,
        plugins: PluginOptions {
            marketplace: args.marketplace_url.clone(),
            local: args.plugins.clone(),
            keys: args.plugin_pubkeys.clone(),
            skip: args.no_plugins,
        },
        sandbox_requirements,
        cache_dir,
        out: args.out.clone(),
        platforms: args.platforms.clone(),
        registries: registry_options(&args)?,
        concurrency: args.concurrency.max(1),
        recipe,
    };
    let reporter = Arc::new(Reporter::new());
    let report = dify_bundle::build::build(options, reporter.clone())
        .await
        .with_context(|| format!("building the bundle in {}", args.out.display()))?;
    reporter.finish();
    match &report.signed_by {
        Some(key) => eprintln!("signed with key {key}"),
        None => eprintln!(
            "note: the bundle is not signed; sign it with `dify-bundle sign {} --key KEY`",
            args.out.display()
        ),
    }
    let copy = &report.copy;
    eprintln!(
        "built {} in {}: {} images, {} blobs ({}); downloaded {} in {:.1}s ({}/s), {} already present, {} resumed",
        report.name,
        report.bundle.display(),
        copy.images.len(),
        copy.blobs,
        units::bytes(copy.blob_bytes),
        units::bytes(copy.bytes_transferred),
        copy.seconds,
        units::bytes(dify_bundle::copy::rate(copy.bytes_transferred, copy.seconds) as u64),
        units::bytes(copy.bytes_present),
        units::bytes(copy.bytes_resumed),
    );
    for plugin in &report.plugins {
        eprintln!("plugin {plugin}: verified, with its dependencies in the plugin-daemon image");
    }
    if let Some(stack) = &report.stack {
        eprintln!("application stack template {stack} (`dify-bundle template` prints it)");
    }
    if let Some(installer) = &report.installer {
        eprintln!(
            "installer for {} carried as {} ({})",
            installer.platform,
            installer.path,
            units::bytes(installer.size)
        );
    }
    if let Some(delta) = &report.delta {
        eprintln!(
            "delta since {}: {} layers ({}) left out, held by the destination; pack and upload carry {} of {}",
            delta.since.describe(),
            delta.omitted_layers,
            units::bytes(delta.omitted_bytes),
            units::bytes(delta.carried_bytes),
            units::bytes(delta.full_bytes),
        );
    }
    if args.json {
        super::print_json(&report)?;
    }
    Ok(ExitCode::SUCCESS)
}
