//! Compaction: the history before a cut replaced by one image per live key as of the cut
//! (schema/olap/logic/11_journal_compaction.sql), in one transaction with its row in
//! `cdc_journal_compactions`, the rows before the cut in the cut's own partition deleted and
//! the partitions wholly before it dropped. Killed at any instant, it leaves the journal as it
//! was or compacted — never half of it.
//!
//! The cut is history only: never past any slot's checkpoint (crash recovery deletes journal
//! rows past it and the stream writes them again), never inside a backfill chunk's window
//! (its changes since its snapshot are read back from the journal when it is merged), never
//! while a first copy is under way.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::PgConnection;

use super::partitions;
use super::JournalError;
use crate::lsn::Lsn;

/// Where `brewlytics journal compact --before` cuts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Before {
    Lsn(Lsn),
    /// Changes committed longer ago than this.
    Age(Duration),
}

impl std::str::FromStr for Before {
    type Err = String;

    /// An LSN (`16/B374D848`) or an age (`30d`, `12h`, …).
    fn from_str(s: &str) -> Result<Self, String> {
        if s.contains('/') {
            return s
                .parse()
                .map(Self::Lsn)
                .map_err(|e: crate::lsn::LsnParseError| e.to_string());
        }
        match s.parse::<super::Retention>() {
            Ok(super::Retention::Age(d)) => Ok(Self::Age(d)),
            _ => Err(format!(
                "--before {s:?}: expected an LSN (16/B374D848) or an age (90s, 30m, 12h, 30d)"
            )),
        }
    }
}

/// Who asked for a compaction (recorded with it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Trigger {
    Command,
    Retention,
}

impl Trigger {
    fn as_str(self) -> &'static str {
        match self {
            Self::Command => "command",
            Self::Retention => "retention",
        }
    }
}

/// A compaction done.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
pub struct Compaction {
    pub cut: Lsn,
    pub cut_commit_ts: Option<DateTime<Utc>>,
    pub images: i64,
    pub deleted_rows: i64,
    pub dropped_partitions: i32,
    pub dropped_bytes: i64,
    /// The cut asked for, when the limits moved it back.
    pub requested: Option<Lsn>,
}

/// What a call to [`compact`] did.
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    Done(Compaction),
    /// Nothing to do, and why (the cut is not after the latest one, a copy is under way, …).
    Nothing(String),
}

/// The advisory lock of the journal's history: compactions take it alone, `replay` shared.
pub const LOCK: &str = "select pg_advisory_xact_lock(hashtext('brewlytics journal'))";
const TRY_LOCK: &str = "select pg_try_advisory_xact_lock(hashtext('brewlytics journal'))";
pub const LOCK_SHARED: &str = "select pg_advisory_xact_lock_shared(hashtext('brewlytics journal'))";

/// The oldest position replay can start from (the latest cut; `None`: never compacted, or
/// a journal from before compaction existed).
pub async fn replayable_from(conn: &mut PgConnection) -> Result<Option<Lsn>, sqlx::Error> {
    let known: bool =
        sqlx::query_scalar("select to_regclass('cdc_journal_compactions') is not null")
            .fetch_one(&mut *conn)
            .await?;
    if !known {
        return Ok(None);
    }
    let cut: Option<String> =
        sqlx::query_scalar("select max(cut)::text from cdc_journal_compactions")
            .fetch_one(&mut *conn)
            .await?;
    Ok(cut.and_then(|c| c.parse().ok()))
}

/// The cuts compaction wrote images at: their rows at `(cut, seq < 0)` are the state there,
/// not changes (replay over the current state leaves them out).
pub async fn image_cuts(conn: &mut PgConnection) -> Result<Vec<Lsn>, sqlx::Error> {
    let cuts: Vec<String> =
        sqlx::query_scalar("select cut::text from cdc_journal_compactions where images > 0")
            .fetch_all(&mut *conn)
            .await?;
    Ok(cuts.iter().filter_map(|c| c.parse().ok()).collect())
}

/// How far a cut may go now: `Err(reason)` when no compaction may run.
pub async fn limit(conn: &mut PgConnection) -> Result<Result<Lsn, String>, sqlx::Error> {
    let copying: bool = sqlx::query_scalar("select exists (select from cdc_copy_attempts)")
        .fetch_one(&mut *conn)
        .await?;
    if copying {
        return Ok(Err("a first copy is under way".into()));
    }
    let checkpoint: Option<String> =
        sqlx::query_scalar("select min(lsn)::text from replication_checkpoint")
            .fetch_one(&mut *conn)
            .await?;
    let Some(checkpoint) = checkpoint.and_then(|c| c.parse::<Lsn>().ok()) else {
        return Ok(Err("nothing has been replicated yet (no checkpoint)".into()));
    };
    Ok(Ok(checkpoint))
}

/// `cut` moved back before every backfill chunk still to be merged at or after it: such a
/// chunk reads the journal's changes from its own snapshot (`from_lsn`) on when it is merged,
/// by the stream or again by replay.
async fn before_chunks(conn: &mut PgConnection, mut cut: Lsn) -> Result<Lsn, sqlx::Error> {
    loop {
        let chunk: Option<String> = sqlx::query_scalar(
            "select min(from_lsn)::text from cdc_backfill_chunks
             where (merged_lsn is null or merged_lsn >= $1::pg_lsn) and from_lsn < $1::pg_lsn",
        )
        .bind(cut.to_string())
        .fetch_one(&mut *conn)
        .await?;
        match chunk.and_then(|c| c.parse::<Lsn>().ok()) {
            Some(c) if c < cut => cut = c,
            _ => return Ok(cut),
        }
    }
}

/// Compacts the journal before `before` (moved back to [`limit`]). A command waits for a
/// replay or another compaction to finish; retention does not (`Nothing`).
pub async fn compact(
    conn: &mut PgConnection,
    before: Before,
    trigger: Trigger,
) -> Result<Outcome, JournalError> {
    if !partitions::partitioned(conn).await? {
        return Err(JournalError::NotMigrated);
    }
    sqlx::query("begin").execute(&mut *conn).await?;
    let result = compact_in_tx(conn, before, trigger).await;
    partitions::end(conn, Ok(matches!(result, Ok(Outcome::Done(_))))).await?;
    result
}

async fn compact_in_tx(
    conn: &mut PgConnection,
    before: Before,
    trigger: Trigger,
) -> Result<Outcome, JournalError> {
    let started = Utc::now();
    // Durable when it returns, and with it every commit before it (the checkpoint it cuts
    // at, even if that one was committed without waiting for the disk).
    sqlx::query("set local synchronous_commit = on")
        .execute(&mut *conn)
        .await?;
    match trigger {
        Trigger::Command => {
            sqlx::query(LOCK).execute(&mut *conn).await?;
        }
        Trigger::Retention => {
            let got: bool = sqlx::query_scalar(TRY_LOCK).fetch_one(&mut *conn).await?;
            if !got {
                return Ok(Outcome::Nothing(
                    "a replay or another compaction holds the journal".into(),
                ));
            }
        }
    }
    let limit = match limit(conn).await? {
        Ok(l) => l,
        Err(why) => return Ok(Outcome::Nothing(why)),
    };
    let done = replayable_from(conn).await?.unwrap_or(Lsn::ZERO);
    let asked = match before {
        Before::Lsn(l) => l,
        Before::Age(age) => {
            let since = chrono::Duration::from_std(age).unwrap_or(chrono::Duration::MAX);
            let first: Option<String> = sqlx::query_scalar(
                "select e.lsn::text from cdc_events e
                 where e.lsn >= $1::pg_lsn and e.commit_ts >= $2
                 order by e.lsn, e.seq limit 1",
            )
            .bind(done.to_string())
            .bind(Utc::now() - since)
            .fetch_optional(&mut *conn)
            .await?;
            first.and_then(|f| f.parse().ok()).unwrap_or(limit)
        }
    };
    let cut = before_chunks(conn, asked.min(limit)).await?;
    if cut <= done {
        return Ok(Outcome::Nothing(format!(
            "the journal is already compacted to {done}, at or after {cut}"
        )));
    }
    let layout = partitions::layout(conn).await?;
    let cut_commit_ts: Option<DateTime<Utc>> = sqlx::query_scalar(
        "select commit_ts from cdc_events where lsn < $1::pg_lsn order by lsn desc, seq desc limit 1",
    )
    .bind(cut.to_string())
    .fetch_optional(&mut *conn)
    .await?;
    let images: i64 = sqlx::query_scalar("select cdc_journal_compact($1::pg_lsn, $2::pg_lsn)")
        .bind(done.to_string())
        .bind(cut.to_string())
        .fetch_one(&mut *conn)
        .await?;
    let deleted_rows = match partitions::straddled(&layout, cut) {
        Some(p) => sqlx::query(&format!(
            "delete from {}.{} where lsn < $1::pg_lsn",
            crate::table::ident(partitions::SCHEMA),
            crate::table::ident(&p.name)
        ))
        .bind(cut.to_string())
        .execute(&mut *conn)
        .await?
        .rows_affected() as i64,
        None => 0,
    };
    let (dropped_partitions, dropped_bytes) = partitions::drop_before(conn, &layout, cut).await?;
    sqlx::query(
        "insert into cdc_journal_compactions (cut, cut_commit_ts, images, deleted_rows,
             dropped_partitions, dropped_bytes, trigger, started_at)
         values ($1::pg_lsn, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(cut.to_string())
    .bind(cut_commit_ts)
    .bind(images)
    .bind(deleted_rows)
    .bind(dropped_partitions)
    .bind(dropped_bytes)
    .bind(trigger.as_str())
    .bind(started)
    .execute(&mut *conn)
    .await?;
    Ok(Outcome::Done(Compaction {
        cut,
        cut_commit_ts,
        images,
        deleted_rows,
        dropped_partitions,
        dropped_bytes,
        requested: (asked != cut).then_some(asked),
    }))
}

/// Drops partitions a compaction left (their lock was busy then): those wholly before the
/// latest cut. Returns how many.
pub async fn drop_leftovers(conn: &mut PgConnection) -> Result<i32, JournalError> {
    let Some(cut) = replayable_from(conn).await? else {
        return Ok(0);
    };
    let layout = partitions::layout(conn).await?;
    if !layout.partitions.iter().any(|p| p.hi <= cut) {
        return Ok(0);
    }
    sqlx::query("begin").execute(&mut *conn).await?;
    let dropped = partitions::drop_before(conn, &layout, cut).await;
    partitions::end(conn, Ok(dropped.is_ok())).await?;
    Ok(dropped?.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn before_reads_an_lsn_or_an_age() {
        assert_eq!("16/B374D848".parse(), Ok(Before::Lsn(Lsn(0x16_B374_D848))));
        assert_eq!("12h".parse(), Ok(Before::Age(Duration::from_secs(43_200))));
        assert!("50GB".parse::<Before>().is_err());
        assert!("16/zz".parse::<Before>().is_err());
        assert!("yesterday".parse::<Before>().is_err());
    }
}
