//! First start: every published table copied, as of the slot's exported snapshot, into its
//! replica and into the journal (a schema event, then one op `r` row per source row, at the
//! slot's consistent point), then the star schema built — in the caller's OLAP transaction,
//! which ends with the checkpoint at the consistent point, so the stream continues exactly
//! where the copy ends.
//!
//! Tables are copied in parallel by [`CopySetup::workers`] workers, each with its own source
//! connection importing the exported snapshot and its own OLAP connection for the journal.
//! Replica rows go to the caller's transaction (one COPY per piece, whichever table it is
//! of); each table's indexes are built once its rows are in. The workers' journal
//! transactions commit just before the caller's: `cdc_copy_attempts` marks the copy as under
//! way until the caller's transaction deletes the mark, so journal rows of a copy that never
//! committed are found and deleted at the next start ([`clean_abandoned`]).
//!
//! Copied rows are numbered with negative `seq`s: a transaction that commits exactly at the
//! consistent point is streamed with `seq`s 1, 2, … at the same LSN, and must not collide.
//! Each table's schema event comes before any of its rows; rows of tables copied at the same
//! time interleave. A row OLAP refuses is dead-lettered (or stops the copy, with
//! `--on-error stop`), like a streamed change.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use futures_util::StreamExt;
use sqlx::{Connection, PgConnection};
use tokio::sync::mpsc;

use super::copy::{parse_copy_line, Lines};
use crate::change::{Body, Change, Op, Pos, RowChange, TxContext};
use crate::decode::chrono_to_pg_timestamp;
use crate::lsn::Lsn;
use crate::published::Definition;
use crate::schema::plan::Step;
use crate::schema::{publication, source, store};
use crate::sink::olap::journal::{self, JournalEncoder};
use crate::sink::olap::{ApplyError, OlapWriter};
use crate::table::{ident, SourceTable};
use brewlytics_support::DbUrl;

/// Bytes (replica lines and journal images together) read per COPY piece: a worker journals
/// one piece and hands its replica lines on while the next is read, so memory stays a few
/// pieces per worker whatever the tables' sizes.
const PIECE_BYTES: usize = 2 << 20;

use crate::change::FIRST_COPY_SEQ;

/// The default number of tables copied at the same time.
pub const DEFAULT_WORKERS: usize = 2;

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("OLTP during the initial copy: {}", crate::redact::db_error(.0))]
    Source(#[source] sqlx::Error),
    #[error(transparent)]
    Apply(#[from] ApplyError),
    #[error("the initial copy of {table} sent a malformed COPY line")]
    Malformed { table: String },
    #[error("a copy worker ended without a result")]
    WorkerLost,
    #[error(
        "{table} was rewritten or truncated as the copy began (its snapshot would read it \
         empty): starting the copy again"
    )]
    Rewritten { table: String },
    #[error("{table} cannot be streamed: {why}; PostgreSQL refuses it — make them publish the same columns")]
    Unstreamable { table: String, why: String },
    #[error("a publication was altered as the copy began: starting the copy again")]
    PublicationChanged,
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

/// What the workers connect to, and how many there are.
#[derive(Clone, Debug)]
pub struct CopySetup {
    pub oltp_url: DbUrl,
    pub olap_url: DbUrl,
    /// The slot the copy is for (the mark in `cdc_copy_attempts`).
    pub slot: String,
    /// Tables copied at the same time (at least 1).
    pub workers: usize,
}

/// The LSN of a copy of `slot` that started and never committed, if there is one.
pub async fn abandoned(olap: &mut PgConnection, slot: &str) -> Result<Option<Lsn>, sqlx::Error> {
    let lsn: Option<String> =
        sqlx::query_scalar("select lsn::text from cdc_copy_attempts where slot_name = $1")
            .bind(slot)
            .fetch_optional(&mut *olap)
            .await?;
    Ok(lsn.and_then(|l| l.parse().ok()))
}

/// Deletes what a copy that never committed left (its mark and its journal rows); returns the
/// LSN it was at, if there was one.
pub async fn clean_abandoned(
    olap: &mut PgConnection,
    slot: &str,
) -> Result<Option<Lsn>, sqlx::Error> {
    let Some(lsn) = abandoned(olap, slot).await? else {
        return Ok(None);
    };
    // The rows first: stopped in between, the mark is still there to try again.
    sqlx::query("delete from cdc_events where lsn = $1::pg_lsn and seq < 0")
        .bind(lsn.to_string())
        .execute(&mut *olap)
        .await?;
    sqlx::query("delete from cdc_copy_attempts where slot_name = $1")
        .bind(slot)
        .execute(&mut *olap)
        .await?;
    Ok(Some(lsn))
}

/// Copies the published tables seen by the exported `snapshot` into OLAP: replica rows and
/// the star through `w` (in its open transaction), the journal through the workers'
/// connections (committed when this returns Ok; the caller's transaction must then commit,
/// or the next start cleans them up). Journal positions are `(lsn, FIRST_COPY_SEQ..)`. Each
/// table is read as its publications publish it: their row filter and column list.
pub async fn copy_published(
    source: &mut PgConnection,
    w: &mut OlapWriter,
    setup: &CopySetup,
    publication: &str,
    snapshot: &str,
    lsn: Lsn,
    progress: OnProgress<'_>,
) -> Result<CopyStats, SnapshotError> {
    check_snapshot_name(snapshot)?;
    let mut tx = source.begin().await.map_err(SnapshotError::Source)?;
    import_snapshot(&mut tx, snapshot).await?;
    let publications = publication::names(publication);
    let tables = source::published_tables(&mut tx, &publications)
        .await
        .map_err(SnapshotError::Source)?;
    lock_tables(&mut tx, &tables).await?;
    let commit_ts: chrono::DateTime<chrono::Utc> = sqlx::query_scalar("select now()")
        .fetch_one(&mut *tx)
        .await
        .map_err(SnapshotError::Source)?;
    let ctx = TxContext {
        lsn,
        xid: 0,
        commit_ts: chrono_to_pg_timestamp(commit_ts),
    };
    let mut seq = FIRST_COPY_SEQ;
    let defs = publication::definitions(&mut tx, &publications, None)
        .await
        .map_err(SnapshotError::Source)?;
    definitions_are_the_snapshots(&mut tx, setup).await?;
    let jobs = prepare_jobs(&mut tx, w, &defs, &tables, ctx, &mut seq).await?;
    unpublish_others(w, &tables).await?;
    // The partitions the copy reads are what the stream starts from.
    let partitions = super::partitions::baseline(&mut tx, &tables)
        .await
        .map_err(SnapshotError::Source)?;
    let at = crate::change::Pos {
        lsn,
        seq: FIRST_COPY_SEQ,
    };
    super::partitions::record_baseline(w.conn(), &partitions, at).await?;
    mark_attempt(&setup.olap_url, &setup.slot, lsn).await?;
    let (stats, journals) = run_workers(w, setup, jobs, ctx, seq, snapshot, progress).await?;
    // The tables' locks go: the rows are all read.
    tx.commit().await.map_err(SnapshotError::Source)?;
    if !w.star_sources().await?.is_empty() {
        w.star_call("select star_refresh_all()").await?;
    }
    for mut conn in journals {
        sqlx::query("commit").execute(&mut conn).await?;
    }
    sqlx::query("delete from cdc_copy_attempts where slot_name = $1")
        .bind(&setup.slot)
        .execute(w.conn())
        .await?;
    Ok(stats)
}

/// An exported snapshot's name goes into `SET TRANSACTION SNAPSHOT`, which takes no
/// parameter: only what PostgreSQL makes of one (hex digits and dashes) is accepted.
fn check_snapshot_name(snapshot: &str) -> Result<(), SnapshotError> {
    let ok = !snapshot.is_empty()
        && snapshot
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-');
    if ok {
        Ok(())
    } else {
        Err(SnapshotError::Malformed {
            table: "(snapshot name)".into(),
        })
    }
}

/// Each published table described as its publications publish it, its replica made ready
/// and its schema event journaled (every table's before any table's rows).
async fn prepare_jobs(
    tx: &mut PgConnection,
    w: &mut OlapWriter,
    defs: &HashMap<u32, Result<Definition, String>>,
    tables: &[(String, String)],
    ctx: TxContext,
    seq: &mut i32,
) -> Result<Vec<Job>, SnapshotError> {
    let mut types = HashMap::new();
    let mut journal = JournalEncoder::default();
    let mut jobs = Vec::new();
    for (schema_name, table_name) in tables {
        let Some(info) = source::table_by_name(tx, schema_name, table_name)
            .await
            .map_err(SnapshotError::Source)?
        else {
            continue;
        };
        let def = match defs.get(&info.oid) {
            Some(Ok(d)) => d.clone(),
            Some(Err(why)) => {
                return Err(SnapshotError::Unstreamable {
                    table: format!("{schema_name}.{table_name}"),
                    why: why.clone(),
                })
            }
            None => continue,
        };
        let table = Arc::new(
            publication::describe(tx, &mut types, &info, &def)
                .await
                .map_err(SnapshotError::Source)?,
        );
        prepare_replica(w, &table, ctx.lsn).await?;
        let schema_event = Change::new(
            ctx,
            *seq,
            Body::Schema(Arc::new(crate::change::SchemaChange {
                before: None,
                after: table.clone(),
                steps: vec![Step::CreateTable],
                backfill: None,
            })),
        );
        *seq += 1;
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
        jobs.push(Job {
            index: jobs.len(),
            table,
            estimate,
        });
    }
    Ok(jobs)
}

/// The publications' definitions were read as the catalog is now (the way PostgreSQL
/// reads them); the copy reads the rows of the snapshot. Unless the publications are the same
/// in both — a publication altered in between would leave the copy and the stream disagreeing
/// with nothing to tell — the copy starts again.
async fn definitions_are_the_snapshots(
    tx: &mut PgConnection,
    setup: &CopySetup,
) -> Result<(), SnapshotError> {
    let then = publication::catalog_digest(tx)
        .await
        .map_err(SnapshotError::Source)?;
    let options = setup
        .oltp_url
        .connect_options()
        .map_err(SnapshotError::Source)?;
    let mut fresh = PgConnection::connect_with(&options)
        .await
        .map_err(SnapshotError::Source)?;
    let now = publication::catalog_digest(&mut fresh)
        .await
        .map_err(SnapshotError::Source)?;
    let _ = fresh.close().await;
    if then == now {
        Ok(())
    } else {
        Err(SnapshotError::PublicationChanged)
    }
}

/// Tables the replica mirrored that are no longer published: not mirrored any more.
async fn unpublish_others(
    w: &mut OlapWriter,
    tables: &[(String, String)],
) -> Result<(), SnapshotError> {
    sqlx::query(
        "update cdc_tables set published = false, updated_at = now()
         where published and not (source_schema, source_table) in
               (select s, t from unnest($1::text[], $2::text[]) x(s, t))",
    )
    .bind(tables.iter().map(|t| t.0.clone()).collect::<Vec<_>>())
    .bind(tables.iter().map(|t| t.1.clone()).collect::<Vec<_>>())
    .execute(w.conn())
    .await?;
    Ok(())
}

/// The largest tables first: the copy ends when its longest table does.
fn largest_first(jobs: &mut [Job]) {
    jobs.sort_by_key(|j| std::cmp::Reverse(j.estimate.unwrap_or(0)));
}

/// The workers copy the jobs' tables while `w` takes their rows into the replica. Returns
/// the workers' OLAP connections with their journal rows, not yet committed.
async fn run_workers(
    w: &mut OlapWriter,
    setup: &CopySetup,
    mut jobs: Vec<Job>,
    ctx: TxContext,
    seq: i32,
    snapshot: &str,
    progress: OnProgress<'_>,
) -> Result<(CopyStats, Vec<PgConnection>), SnapshotError> {
    let tables: Vec<Arc<SourceTable>> = jobs.iter().map(|j| j.table.clone()).collect();
    let estimates: Vec<Option<i64>> = jobs.iter().map(|j| j.estimate).collect();
    largest_first(&mut jobs);
    let shared = Arc::new(Shared {
        jobs: Mutex::new(jobs.into()),
        seq: AtomicI32::new(seq),
        failed: AtomicBool::new(false),
        ctx,
        snapshot: snapshot.to_owned(),
        setup: setup.clone(),
    });
    let workers = setup.workers.clamp(1, tables.len().max(1));
    let (pieces_tx, pieces_rx) = mpsc::channel::<ToReplica>(workers);
    let handles: Vec<_> = (0..workers)
        .map(|_| tokio::spawn(run_worker(shared.clone(), pieces_tx.clone())))
        .collect();
    drop(pieces_tx);

    let written = write_replica(w, &tables, &estimates, pieces_rx, progress).await;
    if written.is_err() {
        shared.failed.store(true, Ordering::Relaxed);
    }
    let mut journals = Vec::new();
    let mut worker_error = None;
    for h in handles {
        match h.await {
            Ok(Ok(conn)) => journals.push(conn),
            Ok(Err(e)) => {
                worker_error.get_or_insert(e);
            }
            Err(_) => {
                worker_error.get_or_insert(SnapshotError::WorkerLost);
            }
        }
    }
    // A worker's own error is the cause; the writer then only saw its channel close early.
    if let Some(e) = worker_error {
        return Err(e);
    }
    Ok((written?, journals))
}

/// As pg_dump does: the published tables locked (ACCESS SHARE) for the copy's duration, so
/// none is rewritten or truncated while it is read — a rewrite is not MVCC-safe, and a copy
/// under the older snapshot would read the table empty. DDL on them waits for the copy. One
/// rewritten between the snapshot and the lock is found (its file is not the one the snapshot
/// sees) and the copy starts again under a new snapshot.
async fn lock_tables(
    tx: &mut PgConnection,
    tables: &[(String, String)],
) -> Result<(), SnapshotError> {
    sqlx::query("set local lock_timeout = '30s'")
        .execute(&mut *tx)
        .await
        .map_err(SnapshotError::Source)?;
    for (schema_name, table_name) in tables {
        sqlx::query(&format!(
            "lock table {}.{} in access share mode",
            ident(schema_name),
            ident(table_name)
        ))
        .execute(&mut *tx)
        .await
        .map_err(SnapshotError::Source)?;
    }
    let rewritten: Option<String> = sqlx::query_scalar(
        "select format('%I.%I', n.nspname, c.relname)
         from pg_class c join pg_namespace n on n.oid = c.relnamespace
         where (n.nspname, c.relname) in (select s, t from unnest($1::text[], $2::text[]) x(s, t))
           and c.relfilenode <> 0 and pg_relation_filenode(c.oid) is distinct from c.relfilenode
         limit 1",
    )
    .bind(tables.iter().map(|t| t.0.clone()).collect::<Vec<_>>())
    .bind(tables.iter().map(|t| t.1.clone()).collect::<Vec<_>>())
    .fetch_optional(&mut *tx)
    .await
    .map_err(SnapshotError::Source)?;
    match rewritten {
        Some(table) => Err(SnapshotError::Rewritten { table }),
        None => Ok(()),
    }
}

/// The copy's mark, committed before any of its journal rows can be.
async fn mark_attempt(olap: &DbUrl, slot: &str, lsn: Lsn) -> Result<(), SnapshotError> {
    let mut conn = PgConnection::connect_with(&olap.connect_options()?).await?;
    sqlx::query(
        "insert into cdc_copy_attempts (slot_name, lsn) values ($1, $2::pg_lsn)
         on conflict (slot_name) do update set lsn = excluded.lsn, started_at = now()",
    )
    .bind(slot)
    .bind(lsn.to_string())
    .execute(&mut conn)
    .await?;
    conn.close().await?;
    Ok(())
}

/// The settings of a copy's source transaction, and the exported snapshot imported.
async fn import_snapshot(source: &mut PgConnection, snapshot: &str) -> Result<(), SnapshotError> {
    for sql in super::backfill::SNAPSHOT_SETTINGS {
        sqlx::query(sql)
            .execute(&mut *source)
            .await
            .map_err(SnapshotError::Source)?;
    }
    sqlx::query(&format!("set transaction snapshot '{snapshot}'"))
        .execute(&mut *source)
        .await
        .map_err(SnapshotError::Source)?;
    Ok(())
}

/// The replica table made (or reconciled) for `t`, emptied, without its primary key while
/// the rows load; `cdc_tables` updated; the star's input of it bound to it as of `lsn`.
async fn prepare_replica(w: &mut OlapWriter, t: &SourceTable, lsn: Lsn) -> Result<(), ApplyError> {
    let at = crate::star::At {
        lsn: Some(lsn),
        time: None,
    };
    let star = w.star_before_ddl(None, t, at).await?;
    store::apply_steps(w.conn(), t, &[Step::CreateTable]).await?;
    w.star_after_ddl(star).await?;
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

/// A table to copy: its place in the copy's list, and what the source expects of it.
struct Job {
    index: usize,
    table: Arc<SourceTable>,
    estimate: Option<i64>,
}

/// What the workers share.
struct Shared {
    jobs: Mutex<VecDeque<Job>>,
    /// The next journal `seq`.
    seq: AtomicI32,
    /// Set when the copy has failed: workers stop at their next piece.
    failed: AtomicBool,
    ctx: TxContext,
    snapshot: String,
    setup: CopySetup,
}

impl Shared {
    fn next_job(&self) -> Option<Job> {
        self.jobs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pop_front()
    }
}

/// From the workers to the replica's writer.
enum ToReplica {
    Piece { index: usize, piece: Piece },
    Done { index: usize },
}

#[derive(Default)]
struct Piece {
    replica: Vec<u8>,
    spans: Vec<(usize, usize)>,
    positions: Vec<Pos>,
}

/// One worker: tables from the shared list until none is left. Returns its OLAP connection
/// with the journal rows it wrote, not yet committed.
async fn run_worker(
    shared: Arc<Shared>,
    out: mpsc::Sender<ToReplica>,
) -> Result<PgConnection, SnapshotError> {
    let result = work(&shared, &out).await;
    if result.is_err() {
        shared.failed.store(true, Ordering::Relaxed);
    }
    result
}

async fn work(
    shared: &Shared,
    out: &mpsc::Sender<ToReplica>,
) -> Result<PgConnection, SnapshotError> {
    let mut source = PgConnection::connect_with(
        &shared
            .setup
            .oltp_url
            .connect_options()
            .map_err(SnapshotError::Source)?,
    )
    .await
    .map_err(SnapshotError::Source)?;
    sqlx::query("begin")
        .execute(&mut source)
        .await
        .map_err(SnapshotError::Source)?;
    import_snapshot(&mut source, &shared.snapshot).await?;
    let mut olap = PgConnection::connect_with(&shared.setup.olap_url.connect_options()?).await?;
    sqlx::query("begin").execute(&mut olap).await?;
    // The journal must be on disk before the checkpoint that follows it.
    sqlx::query("select set_config('synchronous_commit', 'on', true)")
        .execute(&mut olap)
        .await?;
    let mut journal = JournalEncoder::default();
    while let Some(job) = shared.next_job() {
        if shared.failed.load(Ordering::Relaxed) {
            break;
        }
        copy_table(&mut source, &mut olap, &mut journal, shared, &job, out).await?;
        if out
            .send(ToReplica::Done { index: job.index })
            .await
            .is_err()
        {
            // The replica's writer failed: its error is the one reported.
            break;
        }
    }
    let _ = source.close().await;
    Ok(olap)
}

/// One table: the source's COPY lines go to the replica's writer as they are, and to the
/// journal (this worker's connection) as images, in pieces.
async fn copy_table(
    source: &mut PgConnection,
    olap: &mut PgConnection,
    journal: &mut JournalEncoder,
    shared: &Shared,
    job: &Job,
    out: &mpsc::Sender<ToReplica>,
) -> Result<(), SnapshotError> {
    let t = &job.table;
    let out_sql = format!("copy ({}) to stdout", publication::copy_query(t));
    // The copy's first transaction holds this lock already; a DDL waiting for it would make
    // a plain request here wait behind the DDL, and the DDL behind the copy: pg_dump's
    // answer — fail at once, and start the copy again (the DDL goes first).
    sqlx::query(&format!(
        "lock table {}.{} in access share mode nowait",
        ident(&t.schema),
        ident(&t.name)
    ))
    .execute(&mut *source)
    .await
    .map_err(SnapshotError::Source)?;
    let mut stream = source
        .copy_out_raw(&out_sql)
        .await
        .map_err(SnapshotError::Source)?;
    let mut piece = Piece::default();
    let mut images = Vec::new();
    let mut lines = Lines::default();
    let mut malformed = false;
    loop {
        let chunk = stream.next().await;
        let end = chunk.is_none();
        if let Some(chunk) = chunk {
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
                let seq = shared.seq.fetch_add(1, Ordering::Relaxed);
                let change = Change::new(
                    shared.ctx,
                    seq,
                    Body::Row(RowChange {
                        table: t.clone(),
                        op: Op::Snapshot,
                        old: None,
                        new: Some(tuple),
                    }),
                );
                piece.positions.push(change.pos);
                journal.line(&mut images, &change);
            });
            if malformed || (end && lines.leftover() > 0) {
                return Err(SnapshotError::Malformed {
                    table: t.qualified_source(),
                });
            }
        }
        if (end && !piece.spans.is_empty()) || piece.replica.len() + images.len() >= PIECE_BYTES {
            if shared.failed.load(Ordering::Relaxed) {
                return Ok(());
            }
            journal::write(olap, &images).await?;
            images.clear();
            let index = job.index;
            let piece = std::mem::take(&mut piece);
            if out.send(ToReplica::Piece { index, piece }).await.is_err() {
                return Ok(());
            }
        }
        if end {
            return Ok(());
        }
    }
}

/// The replica's side, in the caller's transaction: each piece COPYed into its table (rows
/// OLAP refuses dead-lettered), each table's indexes built once it is whole.
async fn write_replica(
    w: &mut OlapWriter,
    tables: &[Arc<SourceTable>],
    estimates: &[Option<i64>],
    mut pieces: mpsc::Receiver<ToReplica>,
    progress: OnProgress<'_>,
) -> Result<CopyStats, SnapshotError> {
    let in_sql: Vec<String> = tables
        .iter()
        .map(|t| {
            format!(
                "copy {} ({}) from stdin",
                t.replica_ident(),
                publication::column_list(t)
            )
        })
        .collect();
    let mut rows = vec![0u64; tables.len()];
    let mut started: Vec<Option<Instant>> = vec![None; tables.len()];
    let mut stats = CopyStats::default();
    let report = |i: usize, rows: u64, started: Instant, done: bool| {
        progress(&CopyProgress {
            table: tables[i].qualified_source(),
            rows,
            estimate: estimates[i],
            rows_per_second: rows as f64 / started.elapsed().as_secs_f64().max(1e-3),
            done,
        })
    };
    while let Some(msg) = pieces.recv().await {
        match msg {
            ToReplica::Piece { index, piece } => {
                let t = &tables[index];
                let since = *started[index].get_or_insert_with(Instant::now);
                let refused = w
                    .copy_checked(&in_sql[index], &piece.replica, &piece.spans)
                    .await?;
                for (row, e) in &refused {
                    w.reject(t, &[piece.positions[*row]], Op::Snapshot, e)
                        .await?;
                }
                rows[index] += piece.spans.len() as u64;
                stats.dead_letters += refused.len() as u64;
                report(index, rows[index], since, false);
            }
            ToReplica::Done { index } => {
                let t = &tables[index];
                // The key and the other indexes are built once the rows are in.
                sqlx::query("select bulk_load_end($1::regclass)")
                    .bind(t.replica_ident())
                    .execute(w.conn())
                    .await?;
                store::apply_steps(w.conn(), t, &[Step::SetKey]).await?;
                // Statistics for the planner of the star's joins (the table was empty).
                sqlx::query(&format!("analyze {}", t.replica_ident()))
                    .execute(w.conn())
                    .await?;
                let since = *started[index].get_or_insert_with(Instant::now);
                report(index, rows[index], since, true);
                stats.tables += 1;
                stats.rows += rows[index];
            }
        }
    }
    Ok(stats)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::table::fixtures;

    #[test]
    fn only_an_exported_snapshot_name_is_imported() {
        assert!(check_snapshot_name("00000003-00000002-1").is_ok());
        assert!(check_snapshot_name("").is_err());
        assert!(check_snapshot_name("1'; drop table x; --").is_err());
    }

    #[test]
    fn the_largest_tables_are_copied_first() {
        let job = |index, estimate| Job {
            index,
            table: Arc::new(fixtures::products()),
            estimate,
        };
        let mut jobs = vec![
            job(0, Some(10)),
            job(1, None),
            job(2, Some(5000)),
            job(3, Some(7)),
        ];
        largest_first(&mut jobs);
        let order: Vec<usize> = jobs.iter().map(|j| j.index).collect();
        assert_eq!(order, vec![2, 0, 3, 1]);
    }
}
