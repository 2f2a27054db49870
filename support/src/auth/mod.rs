//! Who may do what on every Brewlytics HTTP server: API keys with scopes, checked the same
//! way by the API, the dashboard and the replicator's endpoints.
//!
//! - [`key`]: the key format (`brw_<id>_<secret>`), made from the OS's random generator and
//!   stored only as a SHA-256 digest (why a fast hash is right for random keys: there).
//! - [`scope`]: the scopes and the two rules that widen them.
//! - [`store`]: the keys of `auth.api_keys` (OLTP) held in memory, reloaded on change
//!   (`LISTEN`/`NOTIFY`), with last-used times written in the background.
//! - [`guard`]: the middleware — bearer keys, browser sessions, the login form — and its
//!   answers (401, 403, 429, 503).
//! - [`limit`] and [`client`]: failed authentications per client address.
//! - [`metrics`]: the counter `brewlytics_auth_failures_total{reason}`.
//! - [`admin`]: creating, listing and revoking keys (`brewlytics api-key`).
//!
//! The keys live in the OLTP database, schema `auth`, which no publication may publish (the
//! migration's event trigger refuses it, and the replicator refuses to stream a publication
//! that does): they never reach OLAP or the change stream. Every server reaches them through
//! its own OLTP connection.

pub mod admin;
pub mod client;
pub mod guard;
pub mod key;
pub mod limit;
pub mod metrics;
pub mod scope;
pub mod session;
pub mod store;

pub use client::IpNet;
pub use guard::{route_gate, Access, AccessTable, Guard, GuardConfig, PeerAddr, RouteGate};
pub use limit::LimitConfig;
pub use scope::{Scope, Scopes};
pub use store::{KeyStore, Principal};
