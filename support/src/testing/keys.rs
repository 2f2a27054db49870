//! API keys for tests of a server that checks them (the dashboard, the status page): a
//! database of its own holding `auth.api_keys` (the OLTP migrations applied), its key store,
//! and keys made and revoked as `brewlytics api-key` does.

use std::sync::Arc;

use sqlx::postgres::PgPoolOptions;
use sqlx::PgPool;

use super::TestDb;
use crate::auth::{admin, Guard, GuardConfig, KeyStore, LimitConfig, Scope, Scopes};

pub struct TestKeys {
    pub pool: PgPool,
    pub store: Arc<KeyStore>,
    _db: Option<TestDb>,
}

impl TestKeys {
    /// A failure limit no test reaches by accident (tests send refused requests on purpose;
    /// the limit itself is tested with a small one).
    pub const GENEROUS: LimitConfig = LimitConfig {
        burst: 1_000_000,
        per_second: 1_000.0,
    };

    /// The keys of a database already migrated (the API's own OLTP database).
    pub fn on(pool: PgPool) -> Self {
        Self {
            store: KeyStore::new(pool.clone()),
            pool,
            _db: None,
        }
    }

    /// A key table of its own, named after `prefix`.
    pub async fn new(prefix: &str) -> Self {
        let db = tokio::task::spawn_blocking({
            let prefix = format!("{prefix}_keys");
            move || TestDb::new(&prefix)
        })
        .await
        .expect("creating the keys' database");
        let pool = PgPoolOptions::new()
            .max_connections(4)
            .connect_with(db.url().connect_options().expect("test database url"))
            .await
            .expect("connecting to the keys' database");
        crate::migrate::oltp_with(&pool, false)
            .await
            .expect("migrating the keys' database");
        Self {
            _db: Some(db),
            ..Self::on(pool)
        }
    }

    /// A guard over these keys with `cfg`.
    pub fn guard(&self, cfg: GuardConfig) -> Guard {
        Guard::new(self.store.clone(), cfg)
    }

    /// A new key with `scopes`, seen by the store at once.
    pub async fn key(&self, name: &str, scopes: &[Scope]) -> String {
        let key = admin::create(&self.pool, name, &Scopes::new(scopes.iter().copied()))
            .await
            .expect("creating a test key");
        self.store.refresh().await.expect("reading the keys");
        key.text
    }

    /// Revokes a key by name, seen by the store at once.
    pub async fn revoke(&self, name: &str) {
        admin::revoke(&self.pool, name)
            .await
            .expect("revoking a test key");
        self.store.refresh().await.expect("reading the keys");
    }
}
