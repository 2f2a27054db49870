//! What every Brewlytics crate shares and nothing more: database URLs that never print their
//! password, the embedded PostgreSQL cluster (for `brewlytics up` and for tests) with the
//! roles of deploy/roles.sql, the watchdog that stops what a process started once it is gone,
//! the schema migrations of both databases, tracing set-up, the shutdown signal, the security
//! headers of the HTTP servers, who may use them (API keys, sessions: [`auth`]) and how they
//! are served (TLS: [`serve`]), how a server gets its listening address (a port leased
//! outside the kernel's ephemeral range, or a bind that names the flag to change when the
//! address is taken).
//!
//! With the `testing` feature (for dev-dependencies only) also what the tests share: one
//! embedded cluster per test binary with a database per test, free ports, and headless
//! Chromium.

pub mod auth;
#[cfg(feature = "testing")]
pub mod browser;
pub mod cluster;
pub mod dburl;
#[cfg(feature = "testing")]
pub mod devtools;
pub mod instance;
pub mod listen;
pub mod migrate;
pub mod ports;
pub mod roles;
pub mod serve;
pub mod shutdown;
pub mod telemetry;
#[cfg(feature = "testing")]
pub mod testing;
pub mod watchdog;
pub mod web;

pub use cluster::{ClusterError, ClusterOptions, EmbeddedCluster};
pub use dburl::DbUrl;
