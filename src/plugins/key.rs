//! Plugin-signing public keys: RSA in PKCS#1 PEM (`-----BEGIN RSA PUBLIC KEY-----`), as the
//! plugin daemon reads them. Dify's official key is built in.

use std::path::Path;

use rsa::RsaPublicKey;
use rsa::pkcs1::DecodeRsaPublicKey;

use crate::error::{Error, Result};

/// Dify's official plugin-signing key (RSA-4096), the one the daemon trusts by default.
pub const OFFICIAL_PEM: &str = include_str!("../../assets/dify-official-plugin-key.pem");

#[derive(Clone, Debug)]
pub struct PluginKey {
    /// Where it came from: `official` or a file path.
    pub name: String,
    pub key: RsaPublicKey,
}

impl PluginKey {
    pub fn parse(pem: &str, name: &str) -> Result<PluginKey> {
        let pem = pem.trim();
        if !pem.starts_with("-----BEGIN RSA PUBLIC KEY-----") {
            return Err(Error::invalid(format!(
                "{name}: not a PKCS#1 RSA public key (expected -----BEGIN RSA PUBLIC KEY-----, as the plugin daemon requires)"
            )));
        }
        let key = RsaPublicKey::from_pkcs1_pem(pem)
            .map_err(|e| Error::invalid(format!("{name}: not a valid RSA public key: {e}")))?;
        Ok(PluginKey {
            name: name.to_owned(),
            key,
        })
    }

    pub fn official() -> Result<PluginKey> {
        PluginKey::parse(OFFICIAL_PEM, "official")
    }

    pub fn load(path: &Path) -> Result<PluginKey> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        PluginKey::parse(&text, &path.display().to_string())
    }

    /// The official key and the extra ones at `paths`.
    pub fn trusted(paths: &[std::path::PathBuf]) -> Result<Vec<PluginKey>> {
        let mut keys = vec![PluginKey::official()?];
        for path in paths {
            keys.push(PluginKey::load(path)?);
        }
        Ok(keys)
    }
}
