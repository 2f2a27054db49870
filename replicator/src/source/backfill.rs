//! Backfills, the source side: copying a table again while the stream runs, chunk by chunk
//! (the watermark method of DBLog and Debezium's incremental snapshots), resumable — the last
//! key merged is kept in OLAP (`cdc_backfills.last_key`) in the transaction that merged it.
//!
//! For each chunk: read the source's WAL insert position `L` and the transactions running;
//! wait until those have ended (every transaction the chunk's snapshot cannot see then
//! commits after `L`); read the next rows in key order under a snapshot `S`; COPY them into
//! `cdc_staging.chunk_<id>` with their journal images; record the chunk (range, `S`, `L`);
//! and emit the high watermark, a logical message, through the slot. The stream merges the
//! chunk where the watermark arrives (sink/olap/backfill.rs). A table without a key, or
//! keyed by text the two servers may sort differently, is copied in one chunk.
//!
//! The worker that runs them (and follows the publications and partitions) is
//! [`super::worker`].

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use sqlx::{Connection, PgConnection};

use super::copy::{parse_copy_line, Lines};
use crate::image::{self, copy_escape, CopyField};
use crate::schema::publication;
use crate::sink::olap::backfill::{chunk_table, chunk_table_sql};
use crate::table::{ident, SourceTable};
use crate::telemetry::Telemetry;
use brewlytics_support::DbUrl;

/// A repeatable-read snapshot, and text output as the stream's (see stream/conn.rs).
pub const SNAPSHOT_SETTINGS: [&str; 4] = [
    "set transaction isolation level repeatable read, read only",
    "set local intervalstyle = 'postgres'",
    "set local datestyle = 'ISO, MDY'",
    "set local extra_float_digits = 3",
];

/// The prefix of high-watermark messages.
pub const PREFIX: &str = "brewlytics_backfill";

/// The prefix of the messages that ask the stream to check a table against the source's
/// catalog (its schema changed and no DDL message said how: no event trigger).
pub const SCHEMA_CHECK_PREFIX: &str = "brewlytics_schema_check";

#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TableName {
    pub schema: String,
    pub table: String,
}

#[derive(Clone, Debug)]
pub struct WorkerConfig {
    pub oltp_url: DbUrl,
    pub olap_url: DbUrl,
    pub publication: String,
    pub chunk_rows: i64,
}

/// The content of a high-watermark message.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Watermark {
    pub backfill: i64,
    pub attempt: String,
    pub schema: String,
    pub table: String,
}

#[derive(Debug, thiserror::Error)]
pub enum BackfillError {
    #[error("{}", crate::redact::db_error(.0))]
    Sql(#[from] sqlx::Error),
    #[error("{0}")]
    Failed(String),
}

pub(super) async fn finish(
    olap: &mut PgConnection,
    id: i64,
    state: &str,
    error: Option<&str>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "update cdc_backfills set state = $2, error = $3, finished_at = now(), updated_at = now()
         where id = $1",
    )
    .bind(id)
    .bind(state)
    .bind(error)
    .execute(olap)
    .await?;
    Ok(())
}

/// A backfill being worked on: its table as published now, and how far it is.
pub(super) struct Task {
    pub(super) id: i64,
    pub(super) table: Arc<SourceTable>,
    /// The key of the last row merged (None: from the first row).
    pub(super) last_key: Option<Vec<String>>,
    /// Rows merged so far.
    pub(super) copied: i64,
    /// Limited to one partition's rows (see source/partitions.rs).
    pub(super) scoped: Option<super::partitions::Scoped>,
}

/// The worker's connections to both databases.
pub(super) struct Conns<'a> {
    pub(super) oltp: &'a mut PgConnection,
    pub(super) olap: &'a mut PgConnection,
}

/// A chunk read and staged in OLAP, waiting to be recorded and handed over.
struct Staged {
    rows: u64,
    /// The key of its last row; None when it is the table's last chunk.
    hi: Option<Vec<String>>,
    /// The source snapshot it was read under.
    snapshot: String,
    /// A position before every transaction that snapshot does not see.
    from: String,
}

/// Copies and hands over one chunk, then waits for the stream to merge it. Returns whether
/// the backfill is over: its last chunk merged, or it ended otherwise (cancelled).
pub(super) async fn chunk(
    cfg: &WorkerConfig,
    c: Conns<'_>,
    task: &Task,
    telemetry: &Arc<Telemetry>,
) -> Result<bool, BackfillError> {
    let started = Instant::now();
    let t = &task.table;
    let whole = t.is_keyless() || !same_order(c.oltp, c.olap, t).await?;
    sqlx::query(&format!("drop table if exists {}", chunk_table(task.id)))
        .execute(&mut *c.olap)
        .await?;
    sqlx::query(&chunk_table_sql(task.id, t))
        .execute(&mut *c.olap)
        .await?;
    let within = match super::partitions::within(c.olap, t, task.scoped.as_ref()).await? {
        Ok(w) => w,
        Err(why) => {
            tracing::warn!(table = %t.qualified_source(), reason = %why, "backfill failed");
            finish(c.olap, task.id, "failed", Some(&why)).await?;
            return Ok(true);
        }
    };
    let from = wait_for_older_transactions(c.oltp, t).await?;
    let limit = (!whole).then_some(cfg.chunk_rows);
    let scope = task.scoped.as_ref().map(|s| s.scope.as_str());
    let query = chunk_query(t, task.last_key.is_some(), limit, scope);
    let Some(staged) = stage_chunk(c.oltp, c.olap, task, &query, from, limit).await? else {
        let why = "the partition was attached or detached again before its chunk was read: \
                   its later change decides";
        tracing::info!(table = %t.qualified_source(), reason = why, "backfill cancelled");
        finish(c.olap, task.id, "cancelled", Some(why)).await?;
        sqlx::query(&format!("drop table if exists {}", chunk_table(task.id)))
            .execute(&mut *c.olap)
            .await?;
        return Ok(true);
    };
    let attempt = record_chunk(c.olap, task, &staged, &within).await?;
    let mark = Watermark {
        backfill: task.id,
        attempt: attempt.clone(),
        schema: t.schema.to_string(),
        table: t.name.to_string(),
    };
    sqlx::query("select pg_logical_emit_message(true, $1, $2)")
        .bind(PREFIX)
        .bind(serde_json::to_string(&mark).unwrap_or_default())
        .execute(&mut *c.oltp)
        .await?;
    let merged = wait_merged(c.olap, task.id, &attempt).await?;
    if merged {
        let total = task.copied + staged.rows as i64;
        let rate = staged.rows as f64 / started.elapsed().as_secs_f64().max(1e-3);
        let estimate: Option<i64> =
            sqlx::query_scalar("select rows_estimate from cdc_backfills where id = $1")
                .bind(task.id)
                .fetch_one(&mut *c.olap)
                .await?;
        telemetry.copy_progress(
            "backfill",
            &t.qualified_source(),
            total,
            estimate,
            Some(rate),
        );
        tracing::info!(table = %t.qualified_source(), rows_copied = total,
            rows_estimate = estimate.unwrap_or(0), done = staged.hi.is_none(), "backfill chunk merged");
    }
    Ok(!merged || staged.hi.is_none())
}

/// Reads the source's WAL insert position `L` and waits until every transaction running then
/// has ended: every transaction a later snapshot does not see then commits after `L`.
async fn wait_for_older_transactions(
    oltp: &mut PgConnection,
    t: &SourceTable,
) -> Result<String, BackfillError> {
    let (from, running): (String, String) =
        sqlx::query_as("select pg_current_wal_insert_lsn()::text, pg_current_snapshot()::text")
            .fetch_one(&mut *oltp)
            .await?;
    let waited = Instant::now();
    let mut said = false;
    loop {
        let done: bool = sqlx::query_scalar(
            "select pg_snapshot_xmin(pg_current_snapshot()) >= pg_snapshot_xmax($1::pg_snapshot)",
        )
        .bind(&running)
        .fetch_one(&mut *oltp)
        .await?;
        if done {
            return Ok(from);
        }
        if !said && waited.elapsed() > Duration::from_secs(10) {
            tracing::info!(table = %t.qualified_source(),
                "backfill waits for transactions older than its chunk to finish");
            said = true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The chunk's rows as the publication publishes them (its columns, its row filter): after
/// the resume point (`resume`, read from the transaction's setting
/// `brewlytics.backfill_after`: COPY takes no parameters) in key order, `limit` of them —
/// or, without a limit, the whole table.
fn chunk_query(t: &SourceTable, resume: bool, limit: Option<i64>, scope: Option<&str>) -> String {
    let Some(limit) = limit else {
        let whole = publication::copy_query(t);
        return match scope {
            None => whole,
            Some(s) if t.published.row_filter.is_some() => format!("{whole} and ({s})"),
            Some(s) => format!("{whole} where ({s})"),
        };
    };
    let key: Vec<String> = t.key_names().iter().map(|k| ident(k)).collect();
    let mut conditions = Vec::new();
    if resume {
        conditions.push(format!(
            "row({}) > row({})",
            key.join(", "),
            t.key
                .iter()
                .enumerate()
                .map(|(n, &k)| format!(
                    "(current_setting('brewlytics.backfill_after')::text[])[{}]::{}",
                    n + 1,
                    t.columns[k].olap_type
                ))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    if let Some(f) = &t.published.row_filter {
        conditions.push(format!("({f})"));
    }
    if let Some(s) = scope {
        conditions.push(format!("({s})"));
    }
    let filter = if conditions.is_empty() {
        String::new()
    } else {
        format!(" where {}", conditions.join(" and "))
    };
    format!(
        "select {} from {}.{}{filter} order by {} limit {limit}",
        publication::column_list(t),
        ident(&t.schema),
        ident(&t.name),
        key.join(", "),
    )
}

/// Reads the chunk under a snapshot of its own and COPYs it into the chunk table.
async fn stage_chunk(
    oltp: &mut PgConnection,
    olap: &mut PgConnection,
    task: &Task,
    query: &str,
    from: String,
    limit: Option<i64>,
) -> Result<Option<Staged>, BackfillError> {
    let mut tx = oltp.begin().await?;
    for sql in SNAPSHOT_SETTINGS {
        sqlx::query(sql).execute(&mut *tx).await?;
    }
    if let Some(s) = &task.scoped {
        if !super::partitions::as_expected(&mut tx, &task.table, s).await? {
            return Ok(None);
        }
    }
    if let Some(k) = &task.last_key {
        sqlx::query("select set_config('brewlytics.backfill_after', $1::text[]::text, true)")
            .bind(k)
            .execute(&mut *tx)
            .await?;
    }
    let snapshot: String = sqlx::query_scalar("select pg_current_snapshot()::text")
        .fetch_one(&mut *tx)
        .await?;
    let (rows, hi) = copy_chunk(&mut tx, olap, task.id, &task.table, query).await?;
    tx.commit().await?;
    // A chunk shorter than the limit is the table's last.
    let hi = limit.filter(|&l| rows as i64 >= l).and(hi);
    Ok(Some(Staged {
        rows,
        hi,
        snapshot,
        from,
    }))
}

/// Records the staged chunk (its range, snapshot and position) as the backfill's one waiting
/// chunk; returns its attempt id, which its watermark names.
async fn record_chunk(
    olap: &mut PgConnection,
    task: &Task,
    staged: &Staged,
    within: &crate::sink::olap::backfill::Within,
) -> Result<String, BackfillError> {
    let attempt = attempt_id();
    sqlx::query("delete from cdc_backfill_chunks where backfill_id = $1 and merged_at is null")
        .bind(task.id)
        .execute(&mut *olap)
        .await?;
    let chunk_no: i32 = sqlx::query_scalar(
        "select coalesce(max(chunk), 0) + 1 from cdc_backfill_chunks where backfill_id = $1",
    )
    .bind(task.id)
    .fetch_one(&mut *olap)
    .await?;
    sqlx::query(
        "insert into cdc_backfill_chunks (backfill_id, attempt, chunk, lo, hi, snapshot, from_lsn,
                                          rows, scope, kept)
         values ($1, $2, $3, $4, $5, $6, $7::pg_lsn, $8, $9, $10)",
    )
    .bind(task.id)
    .bind(&attempt)
    .bind(chunk_no)
    .bind(&task.last_key)
    .bind(&staged.hi)
    .bind(&staged.snapshot)
    .bind(&staged.from)
    .bind(staged.rows as i64)
    .bind(&within.scope)
    .bind(&within.kept)
    .execute(&mut *olap)
    .await?;
    Ok(attempt)
}

/// Waits until the stream has merged the chunk `attempt` (true) or the backfill ended
/// otherwise (false).
async fn wait_merged(
    olap: &mut PgConnection,
    id: i64,
    attempt: &str,
) -> Result<bool, BackfillError> {
    loop {
        let (merged, state): (bool, String) = sqlx::query_as(
            "select c.merged_at is not null, b.state from cdc_backfills b
             left join cdc_backfill_chunks c on c.backfill_id = b.id and c.attempt = $2
             where b.id = $1",
        )
        .bind(id)
        .bind(attempt)
        .fetch_one(&mut *olap)
        .await?;
        if merged {
            return Ok(true);
        }
        if state != "running" && state != "pending" {
            return Ok(false);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Reads the chunk from the source and COPYs it, with its journal images, into the chunk
/// table. Returns the rows and the text of the last row's key.
async fn copy_chunk(
    source: &mut PgConnection,
    olap: &mut PgConnection,
    id: i64,
    t: &Arc<SourceTable>,
    query: &str,
) -> Result<(u64, Option<Vec<String>>), BackfillError> {
    let cols: Vec<String> = t.columns.iter().map(|c| ident(&c.name)).collect();
    let mut copy_in = olap
        .copy_in_raw(&format!(
            "copy {} (_cdc_row, _cdc_key, _cdc_image, _cdc_nulls, {}) from stdin",
            chunk_table(id),
            cols.join(", ")
        ))
        .await?;
    let mut stream = source
        .copy_out_raw(&format!("copy ({query}) to stdout"))
        .await?;
    let mut lines = Lines::default();
    let mut n: u64 = 0;
    let mut last: Option<Vec<String>> = None;
    let mut buf = Vec::with_capacity(1 << 20);
    let mut bad = false;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk?;
        lines.push(&chunk, |line| {
            let Some(tuple) = parse_copy_line(&line, t.columns.len()) else {
                bad = true;
                return;
            };
            n += 1;
            buf.extend_from_slice(format!("{n}\t").as_bytes());
            let mut nulls = Vec::new();
            if t.is_keyless() {
                buf.extend_from_slice(b"\\N");
            } else {
                image::write(
                    &mut CopyField(&mut buf),
                    t,
                    &tuple,
                    Some(&t.key),
                    &mut nulls,
                );
            }
            buf.push(b'\t');
            image::write(&mut CopyField(&mut buf), t, &tuple, None, &mut nulls);
            buf.push(b'\t');
            if nulls.is_empty() {
                buf.extend_from_slice(b"\\N");
            } else {
                let names: Vec<String> = nulls
                    .iter()
                    .map(|&i| {
                        format!(
                            "\"{}\"",
                            t.columns[i].name.replace('\\', "\\\\").replace('"', "\\\"")
                        )
                    })
                    .collect();
                copy_escape(&mut buf, format!("{{{}}}", names.join(",")).as_bytes());
            }
            buf.push(b'\t');
            buf.extend_from_slice(&line);
            buf.push(b'\n');
            last = Some(
                t.key
                    .iter()
                    .map(|&k| match &tuple.columns[k] {
                        crate::decode::TupleValue::Text(b) => {
                            String::from_utf8_lossy(b).into_owned()
                        }
                        _ => String::new(),
                    })
                    .collect(),
            );
        });
        if bad {
            break;
        }
        if buf.len() >= 1 << 20 {
            copy_in.send(std::mem::take(&mut buf)).await?;
        }
    }
    drop(stream);
    if bad {
        let _ = copy_in.abort("malformed").await;
        return Err(BackfillError::Failed(format!(
            "the copy of {} sent a malformed COPY line",
            t.qualified_source()
        )));
    }
    if !buf.is_empty() {
        copy_in.send(buf).await?;
    }
    copy_in.finish().await?;
    Ok((n, last))
}

/// Whether OLAP orders the table's key as the source does (else one chunk: a range cut on
/// one server would not be the same range on the other). Only text-like keys can differ.
async fn same_order(
    oltp: &mut PgConnection,
    olap: &mut PgConnection,
    t: &SourceTable,
) -> Result<bool, sqlx::Error> {
    let collatable = t.key.iter().any(|&k| {
        let ty = &t.columns[k].olap_type;
        ty == "text" || ty.starts_with("character") || ty == "name" || ty == "citext"
    });
    if !collatable {
        return Ok(true);
    }
    let q = "select datcollate::text from pg_database where datname = current_database()";
    let a: String = sqlx::query_scalar(q).fetch_one(&mut *oltp).await?;
    let b: String = sqlx::query_scalar(q).fetch_one(&mut *olap).await?;
    Ok(a == b)
}

fn attempt_id() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("{:x}-{:x}", nanos, std::process::id())
}

/// A backfill as `brewlytics snapshot` and `status` show it (counts only, no row values).
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Progress {
    pub id: i64,
    pub table: String,
    pub reason: String,
    pub state: String,
    pub rows_copied: i64,
    pub rows_estimate: Option<i64>,
    pub chunks_merged: i32,
    pub requested_at: chrono::DateTime<chrono::Utc>,
    pub updated_at: chrono::DateTime<chrono::Utc>,
    pub error: Option<String>,
}

type ProgressRow = (
    i64,
    String,
    String,
    String,
    String,
    i64,
    Option<i64>,
    i32,
    chrono::DateTime<chrono::Utc>,
    chrono::DateTime<chrono::Utc>,
    Option<String>,
);

const PROGRESS_SQL: &str = "select id, source_schema, source_table, reason, state, rows_copied,
        rows_estimate, chunks_merged, requested_at, updated_at, error from cdc_backfills";

fn progress_of(r: ProgressRow) -> Progress {
    Progress {
        id: r.0,
        table: format!("{}.{}", r.1, r.2),
        reason: r.3,
        state: r.4,
        rows_copied: r.5,
        rows_estimate: r.6,
        chunks_merged: r.7,
        requested_at: r.8,
        updated_at: r.9,
        error: r.10,
    }
}

/// One backfill's progress.
pub async fn progress(olap: &mut PgConnection, id: i64) -> Result<Option<Progress>, sqlx::Error> {
    let row: Option<ProgressRow> = sqlx::query_as(&format!("{PROGRESS_SQL} where id = $1"))
        .bind(id)
        .fetch_optional(olap)
        .await?;
    Ok(row.map(progress_of))
}

/// Backfills running or waiting, and the most recent others.
pub async fn recent(olap: &mut PgConnection, limit: i64) -> Result<Vec<Progress>, sqlx::Error> {
    let rows: Vec<ProgressRow> = sqlx::query_as(&format!(
        "{PROGRESS_SQL} order by state in ('pending', 'running') desc, id desc limit $1"
    ))
    .bind(limit)
    .fetch_all(olap)
    .await?;
    Ok(rows.into_iter().map(progress_of).collect())
}

/// `brewlytics snapshot --table NAME`: requests a copy of a published table. `name` is
/// `table` (schema public) or `schema.table`. Returns the backfill's id — an active one's if
/// the table is already being copied.
pub async fn request_by_name(
    oltp: &mut PgConnection,
    olap: &mut PgConnection,
    publication: &str,
    name: &str,
) -> Result<(i64, bool), BackfillError> {
    let (schema, table) = match name.split_once('.') {
        Some((s, t)) => (s.to_owned(), t.to_owned()),
        None => ("public".to_owned(), name.to_owned()),
    };
    if schema.is_empty() || table.is_empty() {
        return Err(BackfillError::Failed(format!(
            "{name:?} is not a table name (table or schema.table)"
        )));
    }
    let published: bool = sqlx::query_scalar(
        "select exists (select 1 from pg_publication_tables
                        where pubname = any($1) and schemaname = $2 and tablename = $3)",
    )
    .bind(publication::names(publication))
    .bind(&schema)
    .bind(&table)
    .fetch_one(&mut *oltp)
    .await?;
    if !published {
        // A partition of a table mirrored through its root: its rows, copied again.
        if let Some(id) = super::partitions::request_copy(oltp, olap, &schema, &table).await? {
            return Ok((id, true));
        }
        return Err(BackfillError::Failed(format!(
            "{schema}.{table} is not in publication {publication:?}: add it first \
             (ALTER PUBLICATION \"{publication}\" ADD TABLE …) — it is then copied by itself"
        )));
    }
    let active: Option<i64> = sqlx::query_scalar(
        "select id from cdc_backfills
         where source_schema = $1 and source_table = $2 and state in ('pending', 'running')",
    )
    .bind(&schema)
    .bind(&table)
    .fetch_optional(&mut *olap)
    .await?;
    // The cleaning the command promises: the table's journal rid of values of columns the
    // publications do not publish; the copy then makes its replica what they publish.
    if let Some(t) = crate::schema::audit::mirrored(olap, &schema, &table).await? {
        let events =
            crate::schema::audit::scrub(oltp, olap, &publication::names(publication), &t).await?;
        if events > 0 {
            tracing::info!(table = %t.qualified_source(), events,
                "values of columns the publication does not publish taken out of the journal");
        }
    }
    if let Some(id) = active {
        return Ok((id, false));
    }
    let id: i64 = sqlx::query_scalar(
        "insert into cdc_backfills (source_schema, source_table, reason)
         values ($1, $2, 'requested (brewlytics snapshot)') returning id",
    )
    .bind(&schema)
    .bind(&table)
    .fetch_one(&mut *olap)
    .await?;
    Ok((id, true))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::table::fixtures;

    #[test]
    fn a_chunk_reads_the_published_rows_in_key_order_after_the_last_key() {
        let mut t = fixtures::products();
        assert_eq!(
            chunk_query(&t, false, Some(100), None),
            "select \"id\", \"name\", \"price\", \"description\", \"tags\" from \"public\".\"products\" \
             order by \"id\" limit 100"
        );
        std::sync::Arc::make_mut(&mut t.published).row_filter = Some("(price > 1::numeric)".into());
        assert_eq!(
            chunk_query(&t, true, Some(5), None),
            "select \"id\", \"name\", \"price\", \"description\", \"tags\" from \"public\".\"products\" \
             where row(\"id\") > row((current_setting('brewlytics.backfill_after')::text[])[1]::bigint) \
             and ((price > 1::numeric)) order by \"id\" limit 5"
        );
        // A partition's rows.
        assert_eq!(
            chunk_query(&t, false, Some(5), Some("(id >= 10)")),
            "select \"id\", \"name\", \"price\", \"description\", \"tags\" from \"public\".\"products\" \
             where ((price > 1::numeric)) and ((id >= 10)) order by \"id\" limit 5"
        );
        assert_eq!(
            chunk_query(&t, false, None, Some("(id >= 10)")),
            "select \"id\", \"name\", \"price\", \"description\", \"tags\" from \"public\".\"products\" \
             where ((price > 1::numeric)) and ((id >= 10))"
        );
        // One chunk: the whole table, filtered.
        assert_eq!(
            chunk_query(&t, false, None, None),
            "select \"id\", \"name\", \"price\", \"description\", \"tags\" from \"public\".\"products\" \
             where ((price > 1::numeric))"
        );
    }
}
