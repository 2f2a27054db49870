//! Schema migrations of both databases, embedded in the binary from `schema/`.

use sqlx::migrate::Migrator;
use sqlx::PgPool;

pub static OLTP: Migrator = sqlx::migrate!("../schema/oltp");
pub static OLAP: Migrator = sqlx::migrate!("../schema/olap");

#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    #[error("migrating {db}: {source}")]
    Migrate {
        db: &'static str,
        #[source]
        source: sqlx::migrate::MigrateError,
    },
}

/// Applies the transactional schema; running it again changes nothing.
pub async fn oltp(pool: &PgPool) -> Result<(), MigrateError> {
    OLTP.run(pool)
        .await
        .map_err(|source| MigrateError::Migrate {
            db: "the OLTP database",
            source,
        })
}

/// Applies the analytical schema; running it again changes nothing.
pub async fn olap(pool: &PgPool) -> Result<(), MigrateError> {
    OLAP.run(pool)
        .await
        .map_err(|source| MigrateError::Migrate {
            db: "the OLAP database",
            source,
        })
}
