//! The flags of every command that serves HTTP (`up`, `api`, `replicate`, `dashboard`,
//! `load`): TLS, trusted proxies, and the one switch that turns authentication off; and
//! `api-key`'s.

use std::path::PathBuf;

use brewlytics_support::auth::{IpNet, Scope};
use clap::{Args, Subcommand};

use super::DbArgs;

/// How the HTTP servers are reached and who may use them.
#[derive(Args, Debug, Clone, Default)]
pub struct AccessArgs {
    /// Serve HTTPS with this certificate chain (PEM, the server's certificate first); needs
    /// --tls-key. Without both, plain HTTP.
    #[arg(long, env = "TLS_CERT_FILE", requires = "tls_key", value_name = "FILE")]
    pub tls_cert: Option<PathBuf>,
    /// The certificate's private key (PEM).
    #[arg(long, env = "TLS_KEY_FILE", requires = "tls_cert", value_name = "FILE")]
    pub tls_key: Option<PathBuf>,
    /// Proxies whose `X-Forwarded-For` names the client, for the limit on failed
    /// authentications (addresses or blocks, comma-separated: 10.0.0.0/8,172.16.0.0/12).
    #[arg(
        long,
        env = "TRUSTED_PROXIES",
        value_delimiter = ',',
        value_name = "CIDR"
    )]
    pub trusted_proxies: Vec<IpNet>,
    /// Serve without authentication: every route open to whoever reaches it. Only for a
    /// machine nobody else can reach.
    #[arg(long, env = "BREWLYTICS_INSECURE_NO_AUTH")]
    pub insecure_no_auth: bool,
}

/// `brewlytics api-key …`: keys for the API, the dashboard and the replicator's endpoints.
#[derive(Subcommand, Debug)]
pub enum ApiKeyCommand {
    /// Make a key; it is printed once (stdout, alone on its line) and stored only as a hash.
    Create {
        /// What the key is for (unique among keys in use): till-1, prometheus, …
        #[arg(long)]
        name: String,
        /// A scope it holds (repeat, or comma-separate): orders:read, orders:write,
        /// catalog:read, catalog:write, customers:write, reports:read, events:write,
        /// ops:read, admin.
        #[arg(long = "scope", required = true, value_delimiter = ',')]
        scopes: Vec<Scope>,
        #[command(flatten)]
        db: DbArgs,
    },
    /// Every key: id, name, scopes, created, last used, revoked (never the key).
    List {
        /// Print JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        db: DbArgs,
    },
    /// Revoke a key by name or id: every server refuses it from then on.
    Revoke {
        /// The key's name or id (`api-key list`).
        key: String,
        #[command(flatten)]
        db: DbArgs,
    },
}
