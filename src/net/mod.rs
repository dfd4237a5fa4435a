//! The network layer below every store and client: HTTP, and AWS SDK failures.

pub mod aws;
pub mod http;
