//! The replication checkpoint: the source LSN up to which OLAP holds every change, written
//! in the same OLAP transaction as the changes themselves.
//!
//! Contract: the stored LSN never moves backward; a write of an older LSN leaves it as it is.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;

use crate::lsn::Lsn;

#[derive(Clone, Debug, PartialEq)]
pub struct Checkpoint {
    pub lsn: Lsn,
    pub commit_ts: Option<DateTime<Utc>>,
    pub updated_at: DateTime<Utc>,
}

pub async fn load(conn: &mut PgConnection, slot: &str) -> Result<Option<Checkpoint>, sqlx::Error> {
    let row: Option<(String, Option<DateTime<Utc>>, DateTime<Utc>)> = sqlx::query_as(
        "select lsn::text, commit_ts, updated_at from replication_checkpoint where slot_name = $1",
    )
    .bind(slot)
    .fetch_optional(&mut *conn)
    .await?;
    Ok(row.and_then(|(lsn, commit_ts, updated_at)| {
        Some(Checkpoint {
            lsn: lsn.parse().ok()?,
            commit_ts,
            updated_at,
        })
    }))
}

/// Moves the checkpoint forward to `lsn` (never backward).
pub async fn store(
    conn: &mut PgConnection,
    slot: &str,
    lsn: Lsn,
    commit_ts: Option<DateTime<Utc>>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "insert into replication_checkpoint as c (slot_name, lsn, commit_ts, updated_at)
         values ($1, $2::pg_lsn, $3, now())
         on conflict (slot_name) do update
            set lsn = excluded.lsn, commit_ts = coalesce(excluded.commit_ts, c.commit_ts),
                updated_at = now()
            where c.lsn <= excluded.lsn",
    )
    .bind(slot)
    .bind(lsn.to_string())
    .bind(commit_ts)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Forgets the checkpoint (before a resync).
pub async fn clear(conn: &mut PgConnection, slot: &str) -> Result<(), sqlx::Error> {
    sqlx::query("delete from replication_checkpoint where slot_name = $1")
        .bind(slot)
        .execute(&mut *conn)
        .await?;
    Ok(())
}
