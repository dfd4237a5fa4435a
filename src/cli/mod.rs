//! Command-line parsing and dispatch.

mod build;
mod inspect;
mod install;
mod keys;
mod pack;
mod plugin;
mod progress;
mod receipt;
mod s3;
mod status;
mod template;
mod uninstall;
mod verify;

use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

/// Exit codes, as `--help` and the man page state them.
const EXIT_CODES: &str = "Exit codes:
  0    success
  1    failure: the error says what failed and what to do next (verify: something is missing, changed or extra)
  2    bad usage: an unknown flag or a missing argument
  130  interrupted (Ctrl-C): nothing incomplete was kept as finished; run the same command again to resume";

#[derive(Parser)]
#[command(
    name = "dify-bundle",
    version,
    about = "Build, carry and install signed offline bundles of Dify for closed AWS VPCs",
    after_long_help = EXIT_CODES
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Pull the Dify images into a verified bundle directory
    Build(Box<build::BuildArgs>),
    /// Show a bundle's images, digests, platforms and sizes
    Inspect(inspect::InspectArgs),
    /// Check a bundle's signature, then re-hash every file; report anything missing, changed or extra
    Verify(verify::VerifyArgs),
    /// Inside the closed VPC: verify the bundle, check AWS, push the images to ECR
    Install(Box<install::InstallArgs>),
    /// Inside the closed VPC: what is deployed — stacks, Dify version and bundle, images running
    /// against the bundle's, health, VPC endpoints
    Status(status::StatusArgs),
    /// Inside the closed VPC: write down what is already there (the deployed bundle, the blobs
    /// in each role's ECR repository and under an S3 prefix), to carry out for the next build
    Receipt(receipt::ReceiptArgs),
    /// Inside the closed VPC: remove the application (and, when asked, the endpoints stack and
    /// the repositories), keeping the data unless --delete-data
    Uninstall(uninstall::UninstallArgs),
    /// Print the bundle's application stack template (CloudFormation JSON), signature checked
    Template(template::TemplateArgs),
    /// Send a bundle to S3 (only the blobs the prefix lacks)
    Upload(s3::UploadArgs),
    /// Fetch a bundle from S3, signature first, every blob checked
    Download(s3::DownloadArgs),
    /// Split a bundle into parts that fit removable media, each checkable on its own
    Pack(pack::PackArgs),
    /// Sign a bundle's bundle.json with a minisign secret key
    Sign(keys::SignArgs),
    /// Dify plugin packages
    #[command(subcommand)]
    Plugin(plugin::PluginCommand),
    /// Manage signing keys
    #[command(subcommand)]
    Key(keys::KeyCommand),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell) on stdout
    Completions { shell: clap_complete::Shell },
    /// Print the manual page (roff) on stdout: `dify-bundle man > dify-bundle.1`
    Man,
}

/// The release and the commit it was built from.
fn short_version() -> String {
    format!(
        "{} (commit {})",
        env!("CARGO_PKG_VERSION"),
        env!("DIFY_BUNDLE_COMMIT")
    )
}

/// `--version`: the release, the commit built from, and the Dify versions of the built-in
/// recipes.
fn long_version() -> String {
    let recipes = dify_bundle::recipe::Recipe::builtin_all()
        .map(|all| {
            all.iter()
                .map(|r| r.dify_version.clone())
                .collect::<Vec<_>>()
                .join(", ")
        })
        .unwrap_or_else(|e| format!("unreadable ({e})"));
    format!("{}\nbuilt-in recipes: Dify {recipes}", short_version())
}

/// The command-line definition, with the long version filled in.
fn definition() -> clap::Command {
    // Leaked once per process: clap keeps `&'static str`s.
    let version: &'static str = Box::leak(long_version().into_boxed_str());
    Cli::command().long_version(version)
}

/// Runs the command line; the exit codes are `EXIT_CODES`.
pub fn main() -> ExitCode {
    let cli = match Cli::from_arg_matches(&definition().get_matches()) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        tokio::select! {
            result = run(cli.command) => Some(result),
            _ = tokio::signal::ctrl_c() => None,
        }
    });
    match result {
        Some(Ok(code)) => code,
        Some(Err(e)) => {
            eprintln!("error: {e:#}");
            for hint in hints(&e) {
                eprintln!("hint: {hint}");
            }
            ExitCode::FAILURE
        }
        None => {
            eprintln!(
                "interrupted: nothing incomplete was kept as finished; run the same command again to resume"
            );
            ExitCode::from(130)
        }
    }
}

async fn run(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Build(args) => build::run(*args).await,
        Command::Inspect(args) => inspect::run(args).await,
        Command::Verify(args) => verify::run(args).await,
        Command::Sign(args) => keys::sign(args),
        Command::Pack(args) => pack::run(args).await,
        Command::Template(args) => template::run(args).await,
        Command::Upload(args) => s3::upload(args).await,
        Command::Install(args) => install::run(*args).await,
        Command::Status(args) => status::run(args).await,
        Command::Receipt(args) => receipt::run(args).await,
        Command::Uninstall(args) => uninstall::run(args).await,
        Command::Download(args) => s3::download(args).await,
        Command::Key(keys::KeyCommand::Generate(args)) => keys::generate(args),
        Command::Plugin(command) => plugin::run(command).await,
        Command::Completions { shell } => {
            let mut definition = definition();
            clap_complete::generate(
                shell,
                &mut definition,
                "dify-bundle",
                &mut std::io::stdout(),
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Man => {
            clap_mangen::Man::new(definition()).render(&mut std::io::stdout())?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// What the user can do about a failure, as the library said (kept apart from the message).
fn hints(e: &anyhow::Error) -> Vec<&str> {
    e.chain()
        .find_map(|cause| cause.downcast_ref::<dify_bundle::Error>())
        .map(dify_bundle::Error::hints)
        .unwrap_or_default()
}

/// Prints a value as pretty JSON on stdout.
fn print_json(value: &impl serde::Serialize) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}
