//! dify-bundle: build, carry and install signed offline bundles of Dify for closed AWS VPCs.
//!
//! The core is one content-addressed model: stores ([`store`]) hold blobs and manifests,
//! read from as a [`store::BlobSource`] and written to as a [`store::BlobSink`], and the
//! [`copy`] engine moves them from any source to any sink. A bundle ([`bundle`]) is an
//! OCI image layout plus a `bundle.json` that lists every file with its digest; [`build`]
//! makes one, [`carry`] moves one onto media or through S3, [`install`] puts one into a VPC.
//!
//! The modules are layered; each uses only its own layer and those below it (checked by
//! `tests/layers.rs`, which also refuses an import circle between modules):
//!
//! 1. foundations: `error`, `digest`, `units`, `retry`, `progress`, `lock`
//! 2. formats and network: `oci` (with image mutation and layers), `reference`, `recipe`,
//!    `stack` (typed CloudFormation), `net` (HTTP, AWS SDK errors)
//! 3. stores and signing: `store`, `signing`
//! 4. the copy engine: `copy`
//! 5. python and plugins: `python`, `plugins`
//! 6. the bundle as read: `bundle`
//! 7. making and moving bundles: `build`, `carry`
//! 8. cloud and Dify clients: `aws`, `dify`
//! 9. `install`
//!
//! The command line (`cli`, in the binary) sits above them all; the library knows nothing of it.

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
