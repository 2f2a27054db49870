//! What every Brewlytics crate shares and nothing more: database URLs that never print their
//! password, the embedded PostgreSQL cluster (for `brewlytics up` and for tests) with the
//! roles of deploy/roles.sql, the watchdog that stops what a process started once it is gone,
//! the schema migrations of both databases, tracing set-up, the shutdown signal, the security
//! headers of the HTTP servers, who may use them (API keys, sessions: [`auth`]) and how they
//! are served (TLS: [`serve`]), and headless Chromium for page tests.

pub mod auth;
pub mod browser;
pub mod cluster;
pub mod dburl;
pub mod devtools;
pub mod instance;
pub mod migrate;
pub mod roles;
pub mod serve;
pub mod shutdown;
pub mod telemetry;
pub mod testing;
pub mod watchdog;
pub mod web;

pub use cluster::{ClusterError, ClusterOptions, EmbeddedCluster};
pub use dburl::DbUrl;
