//! Talking to a running Dify: its console API, for what an operator would otherwise click
//! through after a deploy — the first admin account and installing the bundled plugins.

pub mod console;
