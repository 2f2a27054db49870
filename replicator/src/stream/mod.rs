//! The replication connection: settings from the URL and the protocol client.

pub mod config;
pub mod conn;
pub mod tls;
