//! Where a bundle named on the command line is: a bundle directory, a folder of media parts,
//! one part, or `s3://BUCKET/PREFIX/bundles/NAME`; and opening it for reading.

use std::path::Path;
use std::sync::Arc;

use super::format::BUNDLE_FILE;
use super::source::{BundleSource, DirSource, PartsSource, S3BundleSource};
use crate::error::{Error, Result};
use crate::store::s3::{S3Location, S3Store};

/// Opens what the user named: a bundle directory, a folder of media parts, or one part.
pub fn open_path(path: &Path) -> Result<Box<dyn BundleSource>> {
    if path.is_dir() {
        if path.join(BUNDLE_FILE).is_file() {
            return Ok(Box::new(DirSource::new(path)));
        }
        return Ok(Box::new(PartsSource::open_folder(path)?));
    }
    if path.is_file() {
        return Ok(Box::new(PartsSource::open_parts(&[path.to_owned()], true)?));
    }
    Err(Error::invalid(format!(
        "{}: no such bundle directory, folder of parts, or part",
        path.display()
    )))
}

/// Opens a bundle named on the command line: a directory, a folder of parts, one part, or
/// `s3://BUCKET/PREFIX/bundles/NAME`. Must run on a blocking thread.
pub fn open_any(what: &str, runtime: tokio::runtime::Handle) -> Result<Box<dyn BundleSource>> {
    if what.starts_with("s3://") {
        let (location, name) = S3Location::parse_bundle(what)?;
        let client = runtime.block_on(crate::store::s3::client());
        let store = Arc::new(S3Store::new(
            client,
            location,
            Default::default(),
            64 << 20,
            8,
        ));
        return Ok(Box::new(S3BundleSource::new(store, name, runtime)));
    }
    open_path(Path::new(what))
}
