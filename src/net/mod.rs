//! The network layer below every store and client.

pub mod http;
