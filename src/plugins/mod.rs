//! Dify plugins offline: reading and verifying `.difypkg` packages the way the plugin daemon
//! does (signature, checksum, identifier), the keys that vouch for them, each plugin's
//! dependency closure, and the wheelhouse the daemon installs from inside the closed VPC.

pub mod archive;
pub mod closure;
pub mod key;
pub mod marketplace;
pub mod package;
pub mod wheelhouse;

pub use key::PluginKey;
pub use package::{PluginPackage, SignatureCheck};
