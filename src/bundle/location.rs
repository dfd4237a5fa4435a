//! Where a bundle named on the command line is: a bundle directory, a folder of media parts,
//! one part, or `s3://BUCKET/PREFIX/bundles/NAME`; and opening a reader for it.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::format::BUNDLE_FILE;
use super::source::{BundleSource, DirSource, PartsSource, S3BundleSource};
use crate::error::{Error, Result};
use crate::store::s3::{S3Location, S3Store};

/// Where a bundle is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Location {
    /// A bundle directory (it holds bundle.json).
    Dir(PathBuf),
    /// A folder of media parts (`NAME.partNNN.tar`), all of them there.
    Parts(PathBuf),
    /// One part, checked on its own.
    Part(PathBuf),
    /// A bundle in S3: the prefix and the bundle's name under its `bundles/`.
    S3 { location: S3Location, name: String },
}

impl Location {
    /// What the user named: `s3://BUCKET/PREFIX/bundles/NAME`, or a path, which must exist (a
    /// directory holding bundle.json is a bundle directory, any other directory a folder of
    /// parts, a file one part).
    pub fn parse(what: &str) -> Result<Location> {
        if what.starts_with("s3://") {
            let (location, name) = S3Location::parse_bundle(what)?;
            return Ok(Location::S3 { location, name });
        }
        let path = Path::new(what);
        if path.is_dir() {
            if path.join(BUNDLE_FILE).is_file() {
                return Ok(Location::Dir(path.to_owned()));
            }
            return Ok(Location::Parts(path.to_owned()));
        }
        if path.is_file() {
            return Ok(Location::Part(path.to_owned()));
        }
        Err(Error::invalid(format!(
            "{}: no such bundle directory, folder of parts, or part",
            path.display()
        )))
    }

    /// Opens a reader for the bundle here; parts are indexed (their tar headers and packing
    /// lists read) on a blocking thread.
    pub(super) async fn open_source(&self) -> Result<Source> {
        match self {
            Location::Dir(path) => Ok(Source::Other(Arc::new(DirSource::new(path)))),
            Location::Parts(path) | Location::Part(path) => {
                let (path, one) = (path.clone(), matches!(self, Location::Part(_)));
                let parts = tokio::task::spawn_blocking(move || {
                    if one {
                        PartsSource::open_parts(&[path], true)
                    } else {
                        PartsSource::open_folder(&path)
                    }
                })
                .await
                .map_err(|e| Error::invalid(format!("reading the parts' indexes failed: {e}")))??;
                let parts = Arc::new(parts);
                Ok(if one {
                    Source::Part(parts)
                } else {
                    Source::Other(parts)
                })
            }
            Location::S3 { location, name } => {
                let client = crate::store::s3::client().await;
                let store = Arc::new(S3Store::new(
                    client,
                    location.clone(),
                    Default::default(),
                    64 << 20,
                    8,
                ));
                Ok(Source::Other(Arc::new(S3BundleSource::new(
                    store,
                    name.clone(),
                ))))
            }
        }
    }
}

impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Location::Dir(path) | Location::Parts(path) | Location::Part(path) => {
                write!(f, "{}", path.display())
            }
            Location::S3 { location, name } => write!(f, "{location}/bundles/{name}"),
        }
    }
}

/// A reader for a bundle: one part is kept as such, since it is verified entry by entry.
pub(super) enum Source {
    Part(Arc<PartsSource>),
    Other(Arc<dyn BundleSource>),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_into_locations() {
        let dir = std::env::temp_dir().join(format!("location-{}", std::process::id()));
        let bundle = dir.join("bundle");
        std::fs::create_dir_all(&bundle).unwrap();
        std::fs::write(bundle.join(BUNDLE_FILE), b"{}").unwrap();
        let part = dir.join("b.part001.tar");
        std::fs::write(&part, b"").unwrap();
        let at = |p: &Path| Location::parse(p.to_str().unwrap()).unwrap();
        assert_eq!(at(&bundle), Location::Dir(bundle.clone()));
        assert_eq!(at(&dir), Location::Parts(dir.clone()));
        assert_eq!(at(&part), Location::Part(part.clone()));
        let s3 = Location::parse("s3://air/dify/bundles/release-a").unwrap();
        assert_eq!(s3.to_string(), "s3://air/dify/bundles/release-a");
        let missing = Location::parse(dir.join("nothing").to_str().unwrap());
        assert!(missing.unwrap_err().to_string().contains("no such bundle"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
