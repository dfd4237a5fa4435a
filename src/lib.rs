//! dify-bundle: build, carry and install signed offline bundles of Dify for closed AWS VPCs.
//!
//! The core is one content-addressed model: [`store::Store`]s hold blobs and manifests,
//! and the [`copy`] engine moves them between any two stores. A bundle ([`bundle`]) is an
//! OCI image layout plus a `bundle.json` that lists every file with its digest.

pub mod aws;
pub mod build;
pub mod bundle;
pub mod carry;
pub mod copy;
pub mod dify;
pub mod digest;
pub mod error;
pub mod install;
pub mod lock;
pub mod net;
pub mod oci;
#[cfg(test)]
mod parser_properties;
pub mod plugins;
pub mod progress;
pub mod python;
pub mod recipe;
pub mod reference;
pub mod retry;
pub mod signing;
pub mod stack;
pub mod store;
pub mod units;

pub use error::{Error, Result};
