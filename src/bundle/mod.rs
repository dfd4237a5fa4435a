//! A bundle somebody handed you (the read side): its format (`bundle.json`), where it is read
//! from (a directory, media parts, S3), its signature, verification and description, and
//! the artefacts it carries. Making one is the `build` module; moving one is `carry`.

pub mod artefacts;
pub mod format;
pub mod inspect;
pub mod location;
pub mod source;
pub mod trust;
pub mod verify;

pub use format::{BUNDLE_FILE, BundleManifest, SIGNATURE_FILE};
pub use inspect::{Inspection, inspect};
pub use location::{open_any, open_path};
pub use source::BundleSource;
pub use trust::{SignatureStatus, TrustPolicy, open, sign};
pub use verify::{Problem, VerifyReport, verify, verify_part, verify_path};
