//! Dify plugins offline: reading and verifying `.difypkg` packages the way the plugin daemon
//! does (signature, checksum, identifier), and the keys that vouch for them.

pub mod key;
pub mod package;

pub use key::PluginKey;
pub use package::{PluginPackage, SignatureCheck};
