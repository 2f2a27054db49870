//! Applying journal events to OLAP: one transaction per batch.
//!
//! For each run of events: (1) COPY them into `cdc_events`; (2) for each table they touch,
//! one set-based statement brings `replica.<table>` to the last state of every key; (3) the
//! star schema is refreshed for the keys the run touched (`star_refresh`, server-side); a
//! TRUNCATE splits the run and is applied in its place. The checkpoint is written last, in the
//! same transaction, so a crash anywhere loses or repeats nothing.
//!
//! A change the replica cannot take (say a value breaking an OLAP constraint) is retried alone
//! under a savepoint; if it still fails it is recorded in `cdc_dead_letters` with the error and
//! the stream goes on — unless the policy is [`OnError::Stop`].

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Instant;

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgPool, Postgres, Transaction};

use crate::checkpoint;
use crate::event::{JournalEvent, Op, Pos};
use crate::journal;
use crate::lsn::Lsn;
use crate::replica::Catalog;

/// What to do with a change that cannot be applied.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum OnError {
    /// Record it in `cdc_dead_letters`, count it, go on.
    #[default]
    DeadLetter,
    /// Stop the replicator with the error.
    Stop,
}

impl std::str::FromStr for OnError {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "dead-letter" | "continue" => Ok(Self::DeadLetter),
            "stop" => Ok(Self::Stop),
            other => Err(format!(
                "unknown --on-error {other:?} (dead-letter or stop)"
            )),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error("OLAP: {0}")]
    Sql(#[from] sqlx::Error),
    #[error(transparent)]
    Catalog(#[from] crate::replica::CatalogError),
    #[error("change {lsn}/{seq} of {table} could not be applied: {error}")]
    Rejected {
        lsn: Lsn,
        seq: i32,
        table: String,
        error: String,
    },
    #[error("no replica table is known for {0} (no Relation message seen)")]
    UnknownTable(String),
}

impl ApplyError {
    /// Whether trying again later may succeed (connection trouble, a restarting server).
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Sql(e) => is_retryable_sql(e),
            Self::Catalog(crate::replica::CatalogError::Sql { source, .. }) => {
                is_retryable_sql(source)
            }
            _ => false,
        }
    }

    /// A short label for the errors metric.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Sql(_) => "olap",
            Self::Catalog(_) => "catalog",
            Self::Rejected { .. } => "rejected",
            Self::UnknownTable(_) => "unknown_table",
        }
    }
}

pub fn is_retryable_sql(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed
        | sqlx::Error::Tls(_) => true,
        sqlx::Error::Database(db) => matches!(
            db.code().as_deref(),
            Some(c) if c.starts_with("08") || c.starts_with("57") || c == "40001" || c == "40P01" || c == "53300"
        ),
        _ => false,
    }
}

/// Counts of one apply call, for metrics.
#[derive(Debug, Default, Clone)]
pub struct ApplyStats {
    pub events: usize,
    pub dead_letters: usize,
    /// (table, op) → changes.
    pub by_table: Vec<(Arc<str>, Op, u64)>,
}

/// An open OLAP transaction that events are applied into.
pub struct ApplySession {
    tx: Transaction<'static, Postgres>,
    pub started: Instant,
    /// What the applied calls of this transaction counted, reported once it commits.
    totals: ApplyStats,
}

impl ApplySession {
    pub async fn begin(pool: &PgPool) -> Result<Self, ApplyError> {
        let mut tx = pool.begin().await?;
        // Commit waits for the local WAL flush: the checkpoint we report as flushed to the
        // source must be durable here, whatever the server's default.
        //
        // Where allowed (superuser, or `GRANT SET ON PARAMETER session_replication_role`,
        // see deploy/roles.sql), the transaction runs as a replication apply does
        // (`session_replication_role = replica`): the star schema's foreign keys are not
        // re-checked row by row. The refresh inserts every dimension member (inferred if
        // need be) before the facts that name it, so they hold by construction — the crash
        // drills check it. Measured: the five foreign-key triggers of fact_sales cost more
        // than the insert itself (181 vs 120 ms for 3,240 lines).
        sqlx::query(
            "select set_config('synchronous_commit', 'on', true),
                    case when has_parameter_privilege('session_replication_role', 'SET')
                         then set_config('session_replication_role', 'replica', true) end",
        )
        .execute(&mut *tx)
        .await?;
        Ok(Self {
            tx,
            started: Instant::now(),
            totals: ApplyStats::default(),
        })
    }

    /// Changes applied in this transaction so far.
    pub fn events(&self) -> usize {
        self.totals.events
    }

    pub fn conn(&mut self) -> &mut PgConnection {
        &mut self.tx
    }

    /// Journals and applies `events` (in journal order).
    pub async fn apply(
        &mut self,
        catalog: &mut Catalog,
        events: &[JournalEvent],
        on_error: OnError,
    ) -> Result<ApplyStats, ApplyError> {
        let mut stats = ApplyStats::default();
        if events.is_empty() {
            return Ok(stats);
        }
        journal::write(&mut self.tx, events).await?;
        stats.events = events.len();
        apply_journaled(
            &mut self.tx,
            catalog,
            events,
            on_error,
            Star::PerRun,
            &mut stats,
        )
        .await?;
        self.totals.events += stats.events;
        self.totals.dead_letters += stats.dead_letters;
        self.totals.by_table.extend(stats.by_table.iter().cloned());
        Ok(stats)
    }

    /// Writes the checkpoint and commits; returns what every apply call of this transaction
    /// counted.
    pub async fn commit(
        mut self,
        slot: &str,
        lsn: Lsn,
        commit_ts: Option<DateTime<Utc>>,
    ) -> Result<ApplyStats, ApplyError> {
        checkpoint::store(&mut self.tx, slot, lsn, commit_ts).await?;
        self.tx.commit().await?;
        Ok(self.totals)
    }
}

/// When the star schema is refreshed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Star {
    /// After each run of events, for the keys it touched.
    PerRun,
    /// Not here: the caller refreshes everything once at the end (initial copy, rebuild).
    Deferred,
}

/// Applies events already in the journal: replica tables, then the star schema, split at
/// each TRUNCATE. Shared by the live stream, the initial copy and replay.
pub async fn apply_journaled(
    conn: &mut PgConnection,
    catalog: &mut Catalog,
    events: &[JournalEvent],
    on_error: OnError,
    star: Star,
    stats: &mut ApplyStats,
) -> Result<(), ApplyError> {
    let mut start = 0;
    for (i, e) in events.iter().enumerate() {
        if e.op == Op::Truncate {
            apply_run(conn, catalog, &events[start..i], on_error, star, stats).await?;
            apply_truncate(conn, catalog, e).await?;
            start = i + 1;
        }
    }
    apply_run(conn, catalog, &events[start..], on_error, star, stats).await
}

async fn apply_truncate(
    conn: &mut PgConnection,
    catalog: &mut Catalog,
    e: &JournalEvent,
) -> Result<(), ApplyError> {
    if let Some(shape) = catalog.load(conn, &e.schema, &e.table).await? {
        sqlx::query(&shape.truncate_sql())
            .execute(&mut *conn)
            .await?;
    }
    sqlx::query("select star_refresh_all()")
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Replica statements for each table of a run without TRUNCATE, then the star refresh.
async fn apply_run(
    conn: &mut PgConnection,
    catalog: &mut Catalog,
    events: &[JournalEvent],
    on_error: OnError,
    star: Star,
    stats: &mut ApplyStats,
) -> Result<(), ApplyError> {
    let (Some(first), Some(last)) = (events.first(), events.last()) else {
        return Ok(());
    };
    let from = before(first.pos());
    let to = last.pos();
    let mut tables: BTreeSet<(Arc<str>, Arc<str>)> = BTreeSet::new();
    let mut counts: std::collections::HashMap<(Arc<str>, Op), u64> = Default::default();
    for e in events {
        tables.insert((e.schema.clone(), e.table.clone()));
        *counts.entry((e.table.clone(), e.op)).or_default() += 1;
    }
    for (schema, table) in tables {
        let (schema, table): (&str, &str) = (&schema, &table);
        let sql = match catalog.apply_sql(schema, table) {
            Some(sql) => sql,
            None => {
                catalog.load(conn, schema, table).await?;
                catalog
                    .apply_sql(schema, table)
                    .ok_or_else(|| ApplyError::UnknownTable(format!("{schema}.{table}")))?
            }
        };
        match guarded_range(conn, &sql, from, to).await? {
            Ok(()) => {}
            Err(e) if is_retryable_sql(&e) => return Err(e.into()),
            Err(_) => {
                let mine: Vec<JournalEvent> = events
                    .iter()
                    .filter(|e| &*e.schema == schema && &*e.table == table)
                    .cloned()
                    .collect();
                stats.dead_letters += one_by_one(conn, &sql, &mine, on_error).await?;
            }
        }
    }
    if star == Star::PerRun {
        run_range(
            conn,
            "select star_refresh($1::pg_lsn, $2, $3::pg_lsn, $4)",
            from,
            to,
        )
        .await?;
    }
    stats
        .by_table
        .extend(counts.into_iter().map(|((t, op), n)| (t, op, n)));
    Ok(())
}

/// Each event alone under a savepoint; failures go to the dead letters (or stop).
async fn one_by_one(
    conn: &mut PgConnection,
    sql: &str,
    events: &[JournalEvent],
    on_error: OnError,
) -> Result<usize, ApplyError> {
    let mut dead = 0;
    for e in events {
        match guarded_range(conn, sql, before(e.pos()), e.pos()).await? {
            Ok(()) => {}
            Err(err) if is_retryable_sql(&err) => return Err(err.into()),
            Err(err) => {
                let message = match &err {
                    sqlx::Error::Database(db) => db.message().to_owned(),
                    other => other.to_string(),
                };
                if on_error == OnError::Stop {
                    return Err(ApplyError::Rejected {
                        lsn: e.lsn,
                        seq: e.seq,
                        table: format!("{}.{}", e.schema, e.table),
                        error: message,
                    });
                }
                tracing::warn!(lsn = %e.lsn, seq = e.seq, table = %e.table, error = %message,
                    "change sent to cdc_dead_letters");
                sqlx::query(
                    "insert into cdc_dead_letters (lsn, seq, source_table, op, error)
                     values ($1::pg_lsn, $2, $3, $4::\"char\", $5) on conflict (lsn, seq) do nothing",
                )
                .bind(e.lsn.to_string())
                .bind(e.seq)
                .bind(e.table.as_ref())
                .bind(e.op.code().to_string())
                .bind(message)
                .execute(&mut *conn)
                .await?;
                dead += 1;
            }
        }
    }
    Ok(dead)
}

/// [`run_range`] under a savepoint: on failure the transaction is rolled back to before the
/// statement and stays usable. The outer error is a failure of the savepoint itself.
async fn guarded_range(
    conn: &mut PgConnection,
    sql: &str,
    from: Pos,
    to: Pos,
) -> Result<Result<(), sqlx::Error>, sqlx::Error> {
    sqlx::query("savepoint apply_range")
        .execute(&mut *conn)
        .await?;
    let result = run_range(conn, sql, from, to).await;
    let undo = if result.is_ok() {
        "release savepoint apply_range"
    } else {
        "rollback to savepoint apply_range"
    };
    sqlx::query(undo).execute(&mut *conn).await?;
    Ok(result)
}

async fn run_range(
    conn: &mut PgConnection,
    sql: &str,
    from: Pos,
    to: Pos,
) -> Result<(), sqlx::Error> {
    sqlx::query(sql)
        .bind(from.lsn.to_string())
        .bind(from.seq)
        .bind(to.lsn.to_string())
        .bind(to.seq)
        .execute(&mut *conn)
        .await
        .map(|_| ())
}

/// The exclusive lower bound just before `p`.
fn before(p: Pos) -> Pos {
    Pos {
        lsn: p.lsn,
        seq: p.seq - 1,
    }
}
