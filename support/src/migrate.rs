//! Schema migrations of both databases, embedded in the binary from `schema/`.
//!
//! Two kinds, as Flyway has them: numbered migrations (`schema/<db>/NNNN_*.sql`, tables;
//! immutable once released, applied once by sqlx) and repeatable logic
//! (`schema/<db>/logic/*.sql`: functions, views, triggers — each defined once, in one file,
//! with `create or replace`), re-applied after the numbered ones whenever a file's text
//! changes. The star schema's SQL is read in one place, never copied forward.

use sqlx::migrate::Migrator;
use sqlx::PgPool;

pub static OLTP: Migrator = sqlx::migrate!("../schema/oltp");
pub static OLAP: Migrator = sqlx::migrate!("../schema/olap");

/// A repeatable logic file: its name (the order it is applied in) and text.
pub type LogicFile = (&'static str, &'static str);

pub const OLTP_LOGIC: &[LogicFile] = &[
    (
        "10_ddl_capture.sql",
        include_str!("../../schema/oltp/logic/10_ddl_capture.sql"),
    ),
    (
        "20_api_keys.sql",
        include_str!("../../schema/oltp/logic/20_api_keys.sql"),
    ),
];

pub const OLAP_LOGIC: &[LogicFile] = &[
    (
        "10_journal.sql",
        include_str!("../../schema/olap/logic/10_journal.sql"),
    ),
    (
        "11_journal_compaction.sql",
        include_str!("../../schema/olap/logic/11_journal_compaction.sql"),
    ),
    (
        "12_star_inputs.sql",
        include_str!("../../schema/olap/logic/12_star_inputs.sql"),
    ),
    (
        "15_bulk_load.sql",
        include_str!("../../schema/olap/logic/15_bulk_load.sql"),
    ),
    (
        "20_star_dimensions.sql",
        include_str!("../../schema/olap/logic/20_star_dimensions.sql"),
    ),
    (
        "30_star_facts.sql",
        include_str!("../../schema/olap/logic/30_star_facts.sql"),
    ),
    (
        "40_star_batch.sql",
        include_str!("../../schema/olap/logic/40_star_batch.sql"),
    ),
    (
        "50_star_rebuild.sql",
        include_str!("../../schema/olap/logic/50_star_rebuild.sql"),
    ),
    (
        "60_clickstream.sql",
        include_str!("../../schema/olap/logic/60_clickstream.sql"),
    ),
];

#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    #[error("migrating {db}: {source}")]
    Migrate {
        db: &'static str,
        #[source]
        source: sqlx::migrate::MigrateError,
    },
    #[error("migrating {db}: applying {file}: {source}")]
    Logic {
        db: &'static str,
        file: &'static str,
        #[source]
        source: sqlx::Error,
    },
    #[error(
        "the OLTP server has wal_level = {0}, and logical replication needs logical: run \
         `ALTER SYSTEM SET wal_level = logical` as a superuser and restart PostgreSQL \
         (or migrate with --no-source-check to set up the tables anyway)"
    )]
    NotLogical(String),
    #[error("checking the OLTP server: {0}")]
    Check(#[source] sqlx::Error),
}

/// Applies the transactional schema; running it again changes nothing. Refuses a server
/// that cannot do logical replication unless `check_source` is false.
pub async fn oltp(pool: &PgPool) -> Result<(), MigrateError> {
    oltp_with(pool, true).await
}

pub async fn oltp_with(pool: &PgPool, check_source: bool) -> Result<(), MigrateError> {
    if check_source {
        let level: String = sqlx::query_scalar("select current_setting('wal_level')")
            .fetch_one(pool)
            .await
            .map_err(MigrateError::Check)?;
        if level != "logical" {
            return Err(MigrateError::NotLogical(level));
        }
    }
    OLTP.run(pool)
        .await
        .map_err(|source| MigrateError::Migrate {
            db: "the OLTP database",
            source,
        })?;
    apply_logic(pool, "the OLTP database", OLTP_LOGIC).await
}

/// Applies the analytical schema; running it again changes nothing.
pub async fn olap(pool: &PgPool) -> Result<(), MigrateError> {
    OLAP.run(pool)
        .await
        .map_err(|source| MigrateError::Migrate {
            db: "the OLAP database",
            source,
        })?;
    apply_logic(pool, "the OLAP database", OLAP_LOGIC).await
}

/// The analytical schema's numbered migrations up to `version` alone (no logic): an OLAP
/// database as an older release left it, to test the migrations after it on.
pub async fn olap_up_to(pool: &PgPool, version: i64) -> Result<(), MigrateError> {
    let older = Migrator {
        migrations: std::borrow::Cow::Owned(
            OLAP.iter()
                .filter(|m| m.version <= version)
                .cloned()
                .collect(),
        ),
        ..Migrator::DEFAULT
    };
    older
        .run(pool)
        .await
        .map_err(|source| MigrateError::Migrate {
            db: "the OLAP database",
            source,
        })
}

/// Applies each logic file whose text differs from the one applied last (by md5), in one
/// transaction per file, under an advisory lock so two `migrate`s do not interleave.
async fn apply_logic(
    pool: &PgPool,
    db: &'static str,
    files: &[LogicFile],
) -> Result<(), MigrateError> {
    let err = |file: &'static str| move |source| MigrateError::Logic { db, file, source };
    let mut tx = pool.begin().await.map_err(err("(begin)"))?;
    sqlx::query("select pg_advisory_xact_lock(7406170412)")
        .execute(&mut *tx)
        .await
        .map_err(err("(lock)"))?;
    sqlx::query(
        "create table if not exists brewlytics_logic (
             name text primary key, md5 text not null, applied_at timestamptz not null default now())",
    )
    .execute(&mut *tx)
    .await
    .map_err(err("(bookkeeping)"))?;
    for (name, text) in files {
        let unchanged: Option<bool> =
            sqlx::query_scalar("select md5 = md5($2) from brewlytics_logic where name = $1")
                .bind(name)
                .bind(text)
                .fetch_optional(&mut *tx)
                .await
                .map_err(err(name))?;
        if unchanged == Some(true) {
            continue;
        }
        sqlx::raw_sql(text)
            .execute(&mut *tx)
            .await
            .map_err(err(name))?;
        sqlx::query(
            "insert into brewlytics_logic (name, md5) values ($1, md5($2))
             on conflict (name) do update set md5 = excluded.md5, applied_at = now()",
        )
        .bind(name)
        .bind(text)
        .execute(&mut *tx)
        .await
        .map_err(err(name))?;
    }
    tx.commit().await.map_err(err("(commit)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every file in schema/*/logic is listed (and nothing else), in name order.
    #[test]
    fn every_logic_file_is_listed() {
        for (dir, listed) in [("oltp", OLTP_LOGIC), ("olap", OLAP_LOGIC)] {
            let path = format!("{}/../schema/{dir}/logic", env!("CARGO_MANIFEST_DIR"));
            let mut on_disk: Vec<String> = std::fs::read_dir(&path)
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .filter(|n| n.ends_with(".sql"))
                .collect();
            on_disk.sort();
            let names: Vec<String> = listed.iter().map(|(n, _)| n.to_string()).collect();
            assert_eq!(names, on_disk, "schema/{dir}/logic and migrate.rs disagree");
        }
    }
}
