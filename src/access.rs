//! Who may use this process's HTTP servers and how they are reached: one key store (the
//! OLTP database's `auth.api_keys`, read on a small pool of its own) shared by every server
//! the process runs, the TLS certificate, the trusted proxies — from [`AccessArgs`].

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use brewlytics_support::auth::{Guard, GuardConfig, IpNet, KeyStore};
use brewlytics_support::serve::{Endpoint, Tls};
use brewlytics_support::DbUrl;
use sqlx::postgres::PgPoolOptions;

use crate::cli::AccessArgs;

pub struct Access {
    store: Option<Arc<KeyStore>>,
    tls: Option<Tls>,
    trusted: Vec<IpNet>,
}

impl Access {
    /// From the flags. The keys are read from `oltp` — lazily, so a server starts (and
    /// answers 503 to what needs a key) while OLTP is unreachable. With
    /// `--insecure-no-auth` nothing is read and `oltp` may be absent.
    pub fn open(args: &AccessArgs, oltp: Option<&DbUrl>) -> anyhow::Result<Self> {
        let tls = match (&args.tls_cert, &args.tls_key) {
            (Some(cert), Some(key)) => Some(Tls::from_pem_files(cert, key)?),
            _ => None,
        };
        let store = match (args.insecure_no_auth, oltp) {
            (true, _) => None,
            (false, Some(url)) => {
                let options = url.connect_options()?.application_name("brewlytics-keys");
                let pool = PgPoolOptions::new()
                    .max_connections(2)
                    .acquire_timeout(Duration::from_secs(5))
                    .connect_lazy_with(options);
                Some(KeyStore::new(pool))
            }
            (false, None) => anyhow::bail!(
                "the API keys are in the OLTP database (auth.api_keys): give OLTP_DATABASE_URL \
                 (or --oltp-url) too, or --insecure-no-auth to serve without authentication"
            ),
        };
        Ok(Self {
            store,
            tls,
            trusted: args.trusted_proxies.clone(),
        })
    }

    /// The guard of one server: `cfg` with this process's TLS and proxies.
    pub fn guard(&self, cfg: GuardConfig) -> Guard {
        let cfg = GuardConfig {
            secure_cookies: self.tls.is_some(),
            trusted_proxies: self.trusted.clone(),
            ..cfg
        };
        match &self.store {
            Some(store) => Guard::new(store.clone(), cfg),
            None => Guard::insecure(cfg),
        }
    }

    pub fn tls(&self) -> Option<Tls> {
        self.tls.clone()
    }

    /// A bound listener, with TLS when a certificate was given.
    pub fn endpoint(&self, listener: tokio::net::TcpListener) -> Endpoint {
        Endpoint::new(listener, self.tls.clone())
    }

    /// `https` or `http`.
    pub fn scheme(&self) -> &'static str {
        if self.tls.is_some() {
            "https"
        } else {
            "http"
        }
    }

    /// Writes the last-used times still in memory (before the process exits).
    pub async fn flush(&self) {
        if let Some(store) = &self.store {
            if let Err(e) = store.flush_last_used().await {
                tracing::debug!(error = %e, "writing the API keys' last use");
            }
        }
    }
}

/// The flags' TLS files, read once to fail before anything starts.
pub fn check(args: &AccessArgs) -> anyhow::Result<()> {
    if let (Some(cert), Some(key)) = (&args.tls_cert, &args.tls_key) {
        Tls::from_pem_files(cert, key).context("--tls-cert/--tls-key")?;
    }
    Ok(())
}
