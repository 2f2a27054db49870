//! First start: every published table copied, as of the slot's exported snapshot, into its
//! replica and into the journal (a schema event, then one op `r` row per source row, at the
//! slot's consistent point), then the star schema built — in the caller's OLAP transaction,
//! which ends with the checkpoint at the consistent point, so the stream continues exactly
//! where the copy ends.
//!
//! Copied rows are numbered with negative `seq`s: a transaction that commits exactly at the
//! consistent point is streamed with `seq`s 1, 2, … at the same LSN, and must not collide.
//! Each table's primary key is built after its rows are loaded. A row OLAP refuses is
//! dead-lettered (or stops the copy, with `--on-error stop`), like a streamed change.

use std::collections::HashMap;
use std::sync::Arc;

use futures_util::StreamExt;
use sqlx::{Connection, PgConnection};

use super::copy::{parse_copy_line, Lines};
use crate::change::{Body, Change, Op, Pos, RowChange, TxContext};
use crate::decode::chrono_to_pg_timestamp;
use crate::lsn::Lsn;
use crate::schema::plan::Step;
use crate::schema::{self, source, store};
use crate::sink::olap::journal::{self, JournalEncoder};
use crate::sink::olap::{ApplyError, OlapWriter};
use crate::table::{ident, SourceTable};

/// Bytes (replica lines and journal images together) sent per COPY piece: one piece is
/// written while the next is read, so memory stays a few pieces whatever the table's size.
const PIECE_BYTES: usize = 2 << 20;

/// The first `seq` of a copy: copied rows sort before any streamed change at the same LSN.
pub const FIRST_COPY_SEQ: i32 = i32::MIN + 1;

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("OLTP during the initial copy: {}", crate::redact::db_error(.0))]
    Source(#[source] sqlx::Error),
    #[error(transparent)]
    Apply(#[from] ApplyError),
    #[error("the initial copy of {table} sent a malformed COPY line")]
    Malformed { table: String },
}

impl From<sqlx::Error> for SnapshotError {
    fn from(e: sqlx::Error) -> Self {
        Self::Apply(ApplyError::Sql(e))
    }
}

/// Where a table's copy is: for the log, the metrics, `/status` and a progress bar.
#[derive(Clone, Debug, PartialEq)]
pub struct CopyProgress {
    pub table: String,
    pub rows: u64,
    /// What the source's statistics expect.
    pub estimate: Option<i64>,
    pub rows_per_second: f64,
    pub done: bool,
}

impl CopyProgress {
    pub fn eta_seconds(&self) -> Option<f64> {
        let e = self.estimate? as f64;
        (self.rows_per_second > 0.0).then(|| (e - self.rows as f64).max(0.0) / self.rows_per_second)
    }
}

/// Called as the copy advances (after each piece written to OLAP).
pub type OnProgress<'a> = &'a (dyn Fn(&CopyProgress) + Send + Sync);

#[derive(Debug, Default)]
pub struct CopyStats {
    pub tables: usize,
    pub rows: u64,
    pub dead_letters: u64,
}

/// Copies the published tables seen by `snapshot` into OLAP through `w` (in its open
/// transaction). Journal positions are `(lsn, FIRST_COPY_SEQ..)`.
pub async fn copy_published(
    source: &mut PgConnection,
    w: &mut OlapWriter,
    publication: &str,
    snapshot: Option<&str>,
    lsn: Lsn,
    progress: OnProgress<'_>,
) -> Result<CopyStats, SnapshotError> {
    let mut tx = source.begin().await.map_err(SnapshotError::Source)?;
    for sql in super::backfill::SNAPSHOT_SETTINGS {
        sqlx::query(sql)
            .execute(&mut *tx)
            .await
            .map_err(SnapshotError::Source)?;
    }
    if let Some(name) = snapshot {
        if !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
            return Err(SnapshotError::Malformed {
                table: "(snapshot name)".into(),
            });
        }
        sqlx::query(&format!("set transaction snapshot '{name}'"))
            .execute(&mut *tx)
            .await
            .map_err(SnapshotError::Source)?;
    }
    let tables = source::published_tables(&mut tx, publication)
        .await
        .map_err(SnapshotError::Source)?;
    let commit_ts: chrono::DateTime<chrono::Utc> = sqlx::query_scalar("select now()")
        .fetch_one(&mut *tx)
        .await
        .map_err(SnapshotError::Source)?;
    let ctx = TxContext {
        lsn,
        xid: 0,
        commit_ts: chrono_to_pg_timestamp(commit_ts),
    };
    let mut stats = CopyStats::default();
    let mut seq = FIRST_COPY_SEQ;
    let mut types = HashMap::new();
    let mut journal = JournalEncoder::default();
    for (schema_name, table_name) in &tables {
        let Some(info) = source::table_by_name(&mut tx, schema_name, table_name)
            .await
            .map_err(SnapshotError::Source)?
        else {
            continue;
        };
        let rel = schema::relation_of(&info);
        let table = Arc::new(
            schema::describe(&mut tx, &mut types, &rel, Some(&info), true)
                .await
                .map_err(SnapshotError::Source)?,
        );
        prepare_replica(w, &table).await?;
        let schema_event = Change::new(
            ctx,
            seq,
            Body::Schema(Arc::new(crate::change::SchemaChange {
                before: None,
                after: table.clone(),
                steps: vec![Step::CreateTable],
                backfill: None,
            })),
        );
        seq += 1;
        journal::write(w.conn(), &journal.encode(&[schema_event])).await?;
        sqlx::query("select bulk_load_begin($1::regclass)")
            .bind(table.replica_ident())
            .execute(w.conn())
            .await?;
        let estimate: Option<i64> = sqlx::query_scalar(
            "select nullif(greatest(reltuples, 0)::bigint, 0) from pg_class where oid = $1::oid",
        )
        .bind(info.oid as i64)
        .fetch_one(&mut *tx)
        .await
        .map_err(SnapshotError::Source)?;
        let (rows, dead) = copy_table(
            &mut tx,
            w,
            &table,
            ctx,
            &mut seq,
            &mut journal,
            estimate,
            progress,
        )
        .await?;
        // The key and the other indexes are built once the rows are in.
        sqlx::query("select bulk_load_end($1::regclass)")
            .bind(table.replica_ident())
            .execute(w.conn())
            .await?;
        crate::schema::store::apply_steps(w.conn(), &table, &[Step::SetKey]).await?;
        // Statistics for the planner of the star's joins (the table was empty a moment ago).
        sqlx::query(&format!("analyze {}", table.replica_ident()))
            .execute(w.conn())
            .await?;
        stats.tables += 1;
        stats.rows += rows;
        stats.dead_letters += dead;
    }
    sqlx::query(
        "update cdc_tables set published = false, updated_at = now()
         where published and not (source_schema, source_table) in
               (select s, t from unnest($1::text[], $2::text[]) x(s, t))",
    )
    .bind(tables.iter().map(|t| t.0.clone()).collect::<Vec<_>>())
    .bind(tables.iter().map(|t| t.1.clone()).collect::<Vec<_>>())
    .execute(w.conn())
    .await?;
    tx.commit().await.map_err(SnapshotError::Source)?;
    if !w.star_sources().await?.is_empty() {
        w.star_call("select star_refresh_all()").await?;
    }
    Ok(stats)
}

/// The replica table made (or reconciled) for `t`, emptied, without its primary key while
/// the rows load; `cdc_tables` updated.
async fn prepare_replica(w: &mut OlapWriter, t: &SourceTable) -> Result<(), ApplyError> {
    store::apply_steps(w.conn(), t, &[Step::CreateTable]).await?;
    sqlx::query(&format!("truncate {}", t.replica_ident()))
        .execute(w.conn())
        .await?;
    let pk: Option<String> = sqlx::query_scalar(
        "select conname::text from pg_constraint where conrelid = to_regclass($1) and contype = 'p'",
    )
    .bind(t.replica_ident())
    .fetch_optional(w.conn())
    .await?;
    if let Some(pk) = pk {
        sqlx::query(&format!(
            "alter table {} drop constraint {}",
            t.replica_ident(),
            ident(&pk)
        ))
        .execute(w.conn())
        .await?;
    }
    store::save(w.conn(), t, None).await?;
    Ok(())
}

/// One table: the source's COPY lines go to the replica as they are, and to the journal as
/// images, in pieces. Returns (rows, dead letters).
#[allow(clippy::too_many_arguments)]
async fn copy_table(
    source: &mut PgConnection,
    w: &mut OlapWriter,
    t: &Arc<SourceTable>,
    ctx: TxContext,
    seq: &mut i32,
    journal: &mut JournalEncoder,
    estimate: Option<i64>,
    progress: OnProgress<'_>,
) -> Result<(u64, u64), SnapshotError> {
    let list = t
        .columns
        .iter()
        .map(|c| ident(&c.name))
        .collect::<Vec<_>>()
        .join(", ");
    let out_sql = format!(
        "copy (select {list} from {}.{}) to stdout",
        ident(&t.schema),
        ident(&t.name)
    );
    let in_sql = format!("copy {} ({list}) from stdin", t.replica_ident());
    // Reading and rendering the next piece overlaps OLAP's work on the current one.
    let (pieces_tx, mut pieces_rx) = tokio::sync::mpsc::channel::<Piece>(1);
    let read = async move {
        let mut piece = Piece::default();
        let mut lines = Lines::default();
        let mut stream = source
            .copy_out_raw(&out_sql)
            .await
            .map_err(SnapshotError::Source)?;
        let mut malformed = false;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(SnapshotError::Source)?;
            lines.push(&chunk, |line| {
                let Some(tuple) = parse_copy_line(&line, t.columns.len()) else {
                    malformed = true;
                    return;
                };
                let start = piece.replica.len();
                piece.replica.extend_from_slice(&line);
                piece.replica.push(b'\n');
                piece.spans.push((start, piece.replica.len()));
                let change = Change::new(
                    ctx,
                    *seq,
                    Body::Row(RowChange {
                        table: t.clone(),
                        op: Op::Snapshot,
                        old: None,
                        new: Some(tuple),
                    }),
                );
                piece.positions.push(change.pos);
                journal.line(&mut piece.journal, &change);
                *seq += 1;
            });
            if malformed {
                return Err(SnapshotError::Malformed {
                    table: t.qualified_source(),
                });
            }
            if piece.replica.len() + piece.journal.len() >= PIECE_BYTES {
                // The writer gone means it failed: its error is the one reported.
                if pieces_tx.send(std::mem::take(&mut piece)).await.is_err() {
                    return Ok(());
                }
            }
        }
        drop(stream);
        let _ = pieces_tx.send(piece).await;
        Ok::<_, SnapshotError>(())
    };
    let started = std::time::Instant::now();
    let report = |rows: u64, done: bool| {
        progress(&CopyProgress {
            table: t.qualified_source(),
            rows,
            estimate,
            rows_per_second: rows as f64 / started.elapsed().as_secs_f64().max(1e-3),
            done,
        })
    };
    let write = async {
        let (mut rows, mut dead) = (0u64, 0u64);
        while let Some(mut piece) = pieces_rx.recv().await {
            rows += piece.spans.len() as u64;
            dead += piece.flush(w, t, &in_sql).await?;
            report(rows, false);
        }
        report(rows, true);
        Ok::<_, SnapshotError>((rows, dead))
    };
    let (read, written) = tokio::join!(read, write);
    let counts = written?;
    read?;
    Ok(counts)
}

#[derive(Default)]
struct Piece {
    replica: Vec<u8>,
    spans: Vec<(usize, usize)>,
    positions: Vec<Pos>,
    journal: Vec<u8>,
}

impl Piece {
    async fn flush(
        &mut self,
        w: &mut OlapWriter,
        t: &SourceTable,
        in_sql: &str,
    ) -> Result<u64, ApplyError> {
        if self.spans.is_empty() {
            return Ok(0);
        }
        let refused = w.copy_checked(in_sql, &self.replica, &self.spans).await?;
        journal::write(w.conn(), &self.journal).await?;
        for (row, e) in &refused {
            w.reject(t, &[self.positions[*row]], Op::Snapshot, e)
                .await?;
        }
        let n = refused.len() as u64;
        *self = Piece::default();
        Ok(n)
    }
}
