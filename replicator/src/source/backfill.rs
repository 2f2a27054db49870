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
//! The worker also follows the publication: a table added to it is backfilled, a table
//! removed from it stops being mirrored (its replica is kept), each said once in the log.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use sqlx::{Connection, PgConnection};
use tokio::sync::watch;

use super::copy::{parse_copy_line, Lines};
use crate::backoff::Backoff;
use crate::image::{self, copy_escape, CopyField};
use crate::schema::{self, source, store};
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

/// Runs backfills until `shutdown`; errors are logged and retried (the stream goes on).
pub async fn run(
    cfg: WorkerConfig,
    telemetry: Arc<Telemetry>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut retry = Backoff::new(Duration::from_secs(1), Duration::from_secs(30)).start();
    loop {
        if *shutdown.borrow() {
            return;
        }
        let result = tokio::select! {
            r = work(&cfg, &telemetry) => r,
            _ = shutdown.changed() => return,
        };
        match result {
            Ok(()) => retry.reset(),
            Err(e) => {
                tracing::warn!(error = %e, retry_in_s = retry.delay().as_secs(), "backfill worker interrupted");
                if !retry.wait(&mut shutdown).await {
                    return;
                }
            }
        }
    }
}

/// One life of the worker's connections: follow the publication, run backfills.
async fn work(cfg: &WorkerConfig, telemetry: &Arc<Telemetry>) -> Result<(), BackfillError> {
    let mut oltp = PgConnection::connect_with(&cfg.oltp_url.connect_options()?).await?;
    let mut olap = PgConnection::connect_with(&cfg.olap_url.connect_options()?).await?;
    let mut types = HashMap::new();
    let mut last_sync = Instant::now() - Duration::from_secs(60);
    loop {
        if last_sync.elapsed() >= Duration::from_secs(5) {
            sync_publication(&mut oltp, &mut olap, &cfg.publication).await?;
            last_sync = Instant::now();
        }
        type Next = (i64, String, String, Option<Vec<String>>, String, i64);
        let next: Option<Next> = sqlx::query_as(
            "select id, source_schema, source_table, last_key, state, rows_copied
                 from cdc_backfills where state in ('pending', 'running')
                 order by state = 'running' desc, id limit 1",
        )
        .fetch_optional(&mut olap)
        .await?;
        let Some((id, schema_name, table_name, last_key, state, copied)) = next else {
            telemetry.copy_idle();
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        };
        let Some(info) = source::table_by_name(&mut oltp, &schema_name, &table_name).await? else {
            finish(
                &mut olap,
                id,
                "failed",
                Some("the table no longer exists on the source"),
            )
            .await?;
            continue;
        };
        let rel = schema::relation_of(&info);
        let table =
            Arc::new(schema::describe(&mut oltp, &mut types, &rel, Some(&info), true).await?);
        if state == "pending" {
            let estimate: i64 = sqlx::query_scalar(
                "select greatest(reltuples, 0)::bigint from pg_class where oid = $1::oid",
            )
            .bind(info.oid as i64)
            .fetch_one(&mut oltp)
            .await?;
            sqlx::query(
                "update cdc_backfills set state = 'running', started_at = now(), updated_at = now(),
                        rows_estimate = $2 where id = $1 and state = 'pending'",
            )
            .bind(id)
            .bind(estimate)
            .execute(&mut olap)
            .await?;
            tracing::info!(table = %table.qualified_source(), rows_estimate = estimate,
                "backfill started");
        }
        chunk(
            cfg, &mut oltp, &mut olap, id, &table, last_key, copied, telemetry,
        )
        .await?;
    }
}

/// Tables added to the publication are backfilled; tables removed from it are no longer
/// mirrored (their replica is kept).
async fn sync_publication(
    oltp: &mut PgConnection,
    olap: &mut PgConnection,
    publication: &str,
) -> Result<(), BackfillError> {
    let published = source::published_tables(oltp, publication).await?;
    let known: Vec<(String, String, bool)> =
        sqlx::query_as("select source_schema, source_table, published from cdc_tables")
            .fetch_all(&mut *olap)
            .await?;
    // Only once the replicator has copied something (a first start in progress owns it).
    if known.is_empty() {
        return Ok(());
    }
    for (s, t) in &published {
        if !known.iter().any(|k| &k.0 == s && &k.1 == t && k.2) {
            let n = sqlx::query(
                "insert into cdc_backfills (source_schema, source_table, reason)
                 values ($1, $2, 'added to the publication')
                 on conflict (source_schema, source_table) where state in ('pending', 'running')
                 do nothing",
            )
            .bind(s)
            .bind(t)
            .execute(&mut *olap)
            .await?
            .rows_affected();
            if n > 0 {
                tracing::info!(table = %format!("{s}.{t}"), "table added to the publication: copying it (backfill)");
            }
        }
    }
    // A mirrored table whose columns differ from what the replica knows, with no change of
    // it streamed since: the stream is asked to look (in its order).
    let shapes: Vec<(String, String, serde_json::Value)> = sqlx::query_as(
        "select source_schema, source_table, columns from cdc_tables where published",
    )
    .fetch_all(&mut *olap)
    .await?;
    for (s, t, columns) in shapes {
        let known: Vec<crate::table::Column> = serde_json::from_value(columns).unwrap_or_default();
        let Some(now) = source::table_by_name(oltp, &s, &t).await? else {
            continue;
        };
        let now: Vec<_> = now.published_columns().collect();
        let same = now.len() == known.len()
            && now.iter().zip(&known).all(|(a, b)| {
                a.name == b.name
                    && a.type_oid == b.type_oid
                    && a.typmod == b.typmod
                    && b.attnum.is_none_or(|n| n == a.attnum)
            });
        if !same {
            let name = TableName {
                schema: s.clone(),
                table: t.clone(),
            };
            sqlx::query("select pg_logical_emit_message(true, $1, $2)")
                .bind(SCHEMA_CHECK_PREFIX)
                .bind(serde_json::to_string(&name).unwrap_or_default())
                .execute(&mut *oltp)
                .await?;
        }
    }
    for (s, t, on) in &known {
        if *on
            && !published.iter().any(|p| &p.0 == s && &p.1 == t)
            && store::unpublish(olap, s, t).await?
        {
            tracing::info!(table = %format!("{s}.{t}"),
                "table removed from the publication: no longer mirrored, its replica is kept as it is");
        }
    }
    Ok(())
}

async fn finish(
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

/// Copies and hands over one chunk, then waits for the stream to merge it. Returns the rows
/// merged, or None when the backfill ended otherwise (cancelled).
#[allow(clippy::too_many_arguments)]
async fn chunk(
    cfg: &WorkerConfig,
    oltp: &mut PgConnection,
    olap: &mut PgConnection,
    id: i64,
    t: &Arc<SourceTable>,
    last_key: Option<Vec<String>>,
    copied: i64,
    telemetry: &Arc<Telemetry>,
) -> Result<Option<i64>, BackfillError> {
    let started = Instant::now();
    let whole = t.is_keyless() || !same_order(oltp, olap, t).await?;
    sqlx::query(&format!("drop table if exists {}", chunk_table(id)))
        .execute(&mut *olap)
        .await?;
    sqlx::query(&chunk_table_sql(id, t))
        .execute(&mut *olap)
        .await?;

    // Every transaction the chunk's snapshot will not see commits after `from`.
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
            break;
        }
        if !said && waited.elapsed() > Duration::from_secs(10) {
            tracing::info!(table = %t.qualified_source(),
                "backfill waits for transactions older than its chunk to finish");
            said = true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let cols: Vec<String> = t.columns.iter().map(|c| ident(&c.name)).collect();
    let key: Vec<String> = t.key_names().iter().map(|k| ident(k)).collect();
    let query = if whole {
        format!(
            "select {} from {}.{}",
            cols.join(", "),
            ident(&t.schema),
            ident(&t.name)
        )
    } else {
        // The resume point travels as a setting of the transaction: COPY takes no parameters.
        let bound = match &last_key {
            Some(_) => format!(
                "where row({}) > row({})",
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
            ),
            None => String::new(),
        };
        format!(
            "select {} from {}.{} {bound} order by {} limit {}",
            cols.join(", "),
            ident(&t.schema),
            ident(&t.name),
            key.join(", "),
            cfg.chunk_rows
        )
    };
    let mut tx = oltp.begin().await?;
    for sql in SNAPSHOT_SETTINGS {
        sqlx::query(sql).execute(&mut *tx).await?;
    }
    if let Some(k) = &last_key {
        sqlx::query("select set_config('brewlytics.backfill_after', $1::text[]::text, true)")
            .bind(k)
            .execute(&mut *tx)
            .await?;
    }
    let snapshot: String = sqlx::query_scalar("select pg_current_snapshot()::text")
        .fetch_one(&mut *tx)
        .await?;
    let (rows, hi) = copy_chunk(&mut tx, olap, id, t, &query).await?;
    tx.commit().await?;
    let hi = if whole || (rows as i64) < cfg.chunk_rows {
        None
    } else {
        hi
    };

    let attempt = attempt_id();
    sqlx::query("delete from cdc_backfill_chunks where backfill_id = $1 and merged_at is null")
        .bind(id)
        .execute(&mut *olap)
        .await?;
    let chunk_no: i32 = sqlx::query_scalar(
        "select coalesce(max(chunk), 0) + 1 from cdc_backfill_chunks where backfill_id = $1",
    )
    .bind(id)
    .fetch_one(&mut *olap)
    .await?;
    sqlx::query(
        "insert into cdc_backfill_chunks (backfill_id, attempt, chunk, lo, hi, snapshot, from_lsn, rows)
         values ($1, $2, $3, $4, $5, $6, $7::pg_lsn, $8)",
    )
    .bind(id)
    .bind(&attempt)
    .bind(chunk_no)
    .bind(&last_key)
    .bind(&hi)
    .bind(&snapshot)
    .bind(&from)
    .bind(rows as i64)
    .execute(&mut *olap)
    .await?;
    let mark = Watermark {
        backfill: id,
        attempt: attempt.clone(),
        schema: t.schema.to_string(),
        table: t.name.to_string(),
    };
    sqlx::query("select pg_logical_emit_message(true, $1, $2)")
        .bind(PREFIX)
        .bind(serde_json::to_string(&mark).unwrap_or_default())
        .execute(&mut *oltp)
        .await?;

    // The stream merges it where the watermark arrives.
    let estimate: Option<i64> =
        sqlx::query_scalar("select rows_estimate from cdc_backfills where id = $1")
            .bind(id)
            .fetch_one(&mut *olap)
            .await?;
    loop {
        let (merged, state): (bool, String) = sqlx::query_as(
            "select c.merged_at is not null, b.state from cdc_backfills b
             left join cdc_backfill_chunks c on c.backfill_id = b.id and c.attempt = $2
             where b.id = $1",
        )
        .bind(id)
        .bind(&attempt)
        .fetch_one(&mut *olap)
        .await?;
        if merged {
            let total = copied + rows as i64;
            let rate = rows as f64 / started.elapsed().as_secs_f64().max(1e-3);
            telemetry.copy_progress(
                "backfill",
                &t.qualified_source(),
                total,
                estimate,
                Some(rate),
            );
            tracing::info!(table = %t.qualified_source(), rows_copied = total,
                rows_estimate = estimate.unwrap_or(0), done = hi.is_none(), "backfill chunk merged");
            return Ok(Some(rows as i64));
        }
        if state != "running" && state != "pending" {
            return Ok(None);
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
                        where pubname = $1 and schemaname = $2 and tablename = $3)",
    )
    .bind(publication)
    .bind(&schema)
    .bind(&table)
    .fetch_one(&mut *oltp)
    .await?;
    if !published {
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
