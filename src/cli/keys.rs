//! `dify-bundle key generate`, `dify-bundle sign`, and the flags shared by every command
//! that signs or checks a bundle.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context as _, bail};
use clap::{Args, Subcommand};
use dify_bundle::bundle::{self, SignatureStatus, TrustPolicy};
use dify_bundle::signing::{self, Password, SigningKey, TrustedKeys};

#[derive(Subcommand)]
pub enum KeyCommand {
    /// Create a minisign key pair: NAME.key (secret) and NAME.pub (for the installers)
    Generate(GenerateArgs),
}

#[derive(Args)]
pub struct GenerateArgs {
    /// Path and name of the key pair, without extension
    #[arg(long)]
    out: PathBuf,
    #[command(flatten)]
    password: PasswordArgs,
    /// Store the secret key unencrypted (for automation that keeps it in a vault)
    #[arg(long, conflicts_with = "password_env")]
    no_password: bool,
}

/// Where a secret key's password comes from; without a flag it is asked at the terminal.
#[derive(Args)]
pub struct PasswordArgs {
    /// Read the secret key's password from this environment variable
    #[arg(long, value_name = "VAR")]
    pub password_env: Option<String>,
}

impl PasswordArgs {
    pub fn password(&self) -> anyhow::Result<Password> {
        match &self.password_env {
            Some(var) => std::env::var(var)
                .map(Password::Given)
                .with_context(|| format!("--password-env {var}: the variable is not set")),
            None => Ok(Password::Prompt),
        }
    }
}

/// Which signatures to trust.
#[derive(Args)]
pub struct TrustArgs {
    /// A trusted public key (minisign .pub); repeat for several
    #[arg(
        long = "pubkey",
        value_name = "KEY.pub",
        env = "DIFY_BUNDLE_PUBKEY",
        value_delimiter = ','
    )]
    pubkeys: Vec<PathBuf>,
    /// Accept a bundle whose signature is missing or wrong (DANGEROUS)
    #[arg(long)]
    allow_unsigned: bool,
}

impl TrustArgs {
    pub fn policy(&self) -> anyhow::Result<TrustPolicy> {
        Ok(TrustPolicy {
            keys: TrustedKeys::load(&self.pubkeys)?,
            allow_unsigned: self.allow_unsigned,
        })
    }
}

/// Tells the user how the signature check went; loudly when it did not verify.
pub fn report_signature(status: &SignatureStatus) {
    match status {
        SignatureStatus::Verified { key_id, facts } => eprintln!(
            "signature: good, by key {key_id}{}",
            facts
                .created
                .as_ref()
                .map(|c| format!(" (bundle created {c})"))
                .unwrap_or_default()
        ),
        SignatureStatus::NotVerified { reason } => {
            eprintln!("WARNING: ************************************************************");
            eprintln!("WARNING: THE BUNDLE'S SIGNATURE WAS NOT VERIFIED: {reason}");
            eprintln!(
                "WARNING: it is accepted only because of --allow-unsigned; its origin is unknown."
            );
            eprintln!("WARNING: ************************************************************");
        }
    }
}

pub fn generate(args: GenerateArgs) -> anyhow::Result<ExitCode> {
    let password = if args.no_password {
        Password::None
    } else {
        args.password.password()?
    };
    if matches!(&password, Password::Given(p) if p.is_empty()) {
        anyhow::bail!(
            "the password in --password-env is empty, which protects nothing; set one, or pass \
             --no-password for a key without one"
        );
    }
    let (secret, public, id) = signing::generate_key(&args.out, password)?;
    eprintln!(
        "key {id}: secret key {} (keep it on the build side only), public key {} (give it to the installers)",
        secret.display(),
        public.display()
    );
    Ok(ExitCode::SUCCESS)
}

#[derive(Args)]
pub struct SignArgs {
    /// The bundle directory
    bundle: PathBuf,
    /// The secret key (minisign format)
    #[arg(long)]
    key: PathBuf,
    #[command(flatten)]
    password: PasswordArgs,
}

pub fn load_signing_key(
    path: &std::path::Path,
    password: &PasswordArgs,
) -> anyhow::Result<SigningKey> {
    Ok(SigningKey::load(path, password.password()?)?)
}

pub fn sign(args: SignArgs) -> anyhow::Result<ExitCode> {
    if !args.bundle.join(bundle::BUNDLE_FILE).is_file() {
        bail!("{}: not a bundle (no bundle.json)", args.bundle.display());
    }
    let key = load_signing_key(&args.key, &args.password)?;
    bundle::sign(&args.bundle, &key)?;
    eprintln!("signed {} with key {}", args.bundle.display(), key.id);
    Ok(ExitCode::SUCCESS)
}
