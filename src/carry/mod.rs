//! Moving a finished bundle: onto media as parts ([`parts::pack`]) and through S3
//! ([`s3::upload`], [`s3::download`]).

pub mod parts;
pub mod s3;

pub use parts::{PackReport, pack};
pub use s3::{TransferReport, download, upload};
