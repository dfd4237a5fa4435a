//! The bundle: an OCI image layout plus `bundle.json`, the list of everything in it with
//! digests. Building one, verifying one, and describing one.

pub mod build;
pub mod daemon;
pub mod derived;
pub mod format;
pub mod inspect;
pub mod installer;
pub mod parts;
pub mod s3;
pub mod sandbox;
pub mod source;
pub mod stack;
pub mod trust;
pub mod verify;

pub use build::{BuildOptions, BuildReport, build};
pub use format::{BUNDLE_FILE, BundleManifest, SIGNATURE_FILE};
pub use inspect::{Inspection, inspect};
pub use source::{BundleSource, open_source};
pub use trust::{SignatureStatus, TrustPolicy, open, sign};
pub use verify::{Problem, VerifyReport, verify, verify_path};
