//! The OLAP sink: each batch in one transaction — the journal, the replica (from typed stage
//! tables, the last change per key), the star schema for what the batch touched, and the
//! checkpoint, written last.
//!
//! A change OLAP cannot take (a value the replica's type refuses) is found by halving the
//! COPY that failed, and dead-lettered (`cdc_dead_letters`, with the server's full text) or,
//! with [`OnError::Stop`], stops the replicator with its position and table. A dead-lettered
//! change is not staged, so it reaches neither the replica nor the star. Transient errors
//! (connection lost, serialization failure, deadlock, timeouts) are returned for the caller to
//! retry the whole transaction; other errors stop, naming what failed.

pub mod backfill;
pub mod encode;
pub mod journal;
pub mod merge;
pub mod partitions;
pub mod stage;
pub mod star_inputs;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Instant;

use chrono::{DateTime, Utc};
use sqlx::{Connection, PgConnection};

use crate::change::{Op, Pos, SchemaChange};
use crate::checkpoint;
use crate::flush::{self, CommitAt, OlapCommit};
use crate::lsn::Lsn;
use crate::redact::{self, Class};
use crate::table::{ident, SourceTable};
use brewlytics_support::DbUrl;
use encode::{Encoded, Segment};
use stage::{stage_name, Stage};

/// What to do with a change that cannot be applied.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum OnError {
    /// Record it in `cdc_dead_letters`, count it, go on.
    #[default]
    DeadLetter,
    /// Stop the replicator with the change's position and table.
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
    #[error("OLAP: {}", redact::db_error(.0))]
    Sql(#[from] sqlx::Error),
    #[error("change {pos} of {table} could not be applied (--on-error stop): {error}")]
    Rejected {
        pos: Pos,
        table: String,
        error: String,
    },
    #[error(
        "the replica of {table} could not follow its source's schema change: {error}; \
             run `brewlytics snapshot --table {table}` after fixing the replica table by hand"
    )]
    Ddl { table: String, error: String },
    #[error(
        "the star schema refresh failed: {0}; the batch is not committed (fix the star SQL \
             in schema/olap/logic or the offending source rows)"
    )]
    Star(String),
    #[error("the journal already holds changes past the checkpoint: {0}")]
    JournalAhead(String),
}

impl ApplyError {
    /// Whether trying the transaction again later may succeed.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Sql(e) => redact::classify(e) == Class::Transient,
            Self::JournalAhead(_) => true,
            _ => false,
        }
    }

    /// A short label for the errors metric.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Sql(_) => "olap",
            Self::Rejected { .. } => "rejected",
            Self::Ddl { .. } => "schema",
            Self::Star(_) => "star",
            Self::JournalAhead(_) => "olap",
        }
    }
}

/// An error of the journal's own connection. A key already there means journal rows of a
/// batch that never committed were written after this session deleted them (a replicator
/// that lost its OLAP connection but not this one): worth a new session, which deletes them.
fn journal_error(e: sqlx::Error) -> ApplyError {
    let dup = e
        .as_database_error()
        .and_then(|d| d.code())
        .is_some_and(|c| c == "23505");
    if dup {
        ApplyError::JournalAhead(redact::db_error(&e))
    } else {
        ApplyError::Sql(e)
    }
}

/// Counts of one transaction, for metrics.
#[derive(Debug, Default, Clone)]
pub struct ApplyStats {
    pub events: usize,
    pub dead_letters: usize,
    /// (table, op) → changes.
    pub by_table: Vec<(Arc<str>, Op, u64)>,
    /// The star's inputs, read after a batch that changed them (or now and then).
    pub star: Option<crate::star::metrics::StarReading>,
}

/// A connection to OLAP that batches are applied through. Stage tables are temporary tables
/// of this connection, made once per table shape.
pub struct OlapWriter {
    conn: PgConnection,
    on_error: OnError,
    in_tx: bool,
    /// Stage tables made on this connection, and the table shape each was made for (None:
    /// made `like` its replica table, for the star).
    stages: HashMap<String, Option<Arc<SourceTable>>>,
    /// Stage tables written in the open transaction (emptied before they are used again).
    dirty: HashSet<String>,
    /// The star's inputs in this session.
    star: star_inputs::StarInputs,
    /// Replay: schema changes are carried out on the replica but neither recorded in
    /// `cdc_tables` (it holds the current shapes) nor followed by a copy.
    replaying: bool,
    /// A source transaction applied in chunks: its star work is gathered (the stage rows of
    /// star sources, in `pg_temp.acc_<table>`) and done once, with its last chunk — so an
    /// order whose lines arrive in a later chunk still takes the fast path for new orders.
    deferring: bool,
    acc: HashMap<String, Arc<SourceTable>>,
    acc_rows: i64,
    totals: ApplyStats,
    pub started: Option<Instant>,
    /// Where the journal is written when it is not in this connection's transaction.
    side: Option<journal::Side>,
    /// How batches commit (see [`crate::flush`]), and where the last asynchronous one ended.
    commit_mode: OlapCommit,
    last_commit: Option<CommitAt>,
}

impl OlapWriter {
    pub async fn connect(url: &DbUrl, on_error: OnError) -> Result<Self, ApplyError> {
        let conn = PgConnection::connect_with(&url.connect_options()?).await?;
        Ok(Self::from_conn(conn, on_error))
    }

    pub fn from_conn(conn: PgConnection, on_error: OnError) -> Self {
        Self {
            conn,
            on_error,
            in_tx: false,
            stages: HashMap::new(),
            dirty: HashSet::new(),
            star: Default::default(),
            replaying: false,
            deferring: false,
            acc: HashMap::new(),
            acc_rows: 0,
            totals: ApplyStats::default(),
            started: None,
            side: None,
            commit_mode: OlapCommit::Synchronous,
            last_commit: None,
        }
    }

    /// Commits from now on as `mode` says (synchronous until told otherwise).
    pub fn set_commit_mode(&mut self, mode: OlapCommit) {
        self.commit_mode = mode;
    }

    /// Where the last commit ended, when it was asynchronous.
    pub fn last_commit(&self) -> Option<CommitAt> {
        self.last_commit
    }

    pub fn conn(&mut self) -> &mut PgConnection {
        &mut self.conn
    }

    pub fn in_transaction(&self) -> bool {
        self.in_tx
    }

    /// Replay's writer: see [`OlapWriter::replaying`].
    pub fn set_replaying(&mut self) {
        self.replaying = true;
    }

    /// Changes applied in the open transaction so far.
    pub fn events(&self) -> usize {
        self.totals.events
    }

    /// Opens the batch's transaction (if not open).
    pub async fn begin(&mut self) -> Result<(), ApplyError> {
        if self.in_tx {
            return Ok(());
        }
        sqlx::query("begin").execute(&mut self.conn).await?;
        self.in_tx = true;
        self.started = Some(Instant::now());
        // Commit waits for the local WAL flush, unless commits are asynchronous: then the
        // source hears of the batch only once OLAP's flush has passed it (`crate::flush`),
        // whatever the server's default.
        //
        // Where allowed (superuser, or `GRANT SET ON PARAMETER session_replication_role`,
        // see deploy/roles.sql), the transaction runs as a replication apply does
        // (`session_replication_role = replica`): the star schema's foreign keys are not
        // re-checked row by row. The refresh inserts every dimension member (inferred if
        // need be) before the facts that name it, so they hold by construction — the crash
        // drills check it.
        //
        // Every batch holds the replica gate shared: `replay` takes it alone before it empties
        // and rebuilds the replica, so a batch never waits for replay on one table while
        // replay waits for it on another (a deadlock one of them would lose).
        sqlx::query(
            "select set_config('synchronous_commit', $1, true),
                    set_config('intervalstyle', 'postgres', true),
                    set_config('datestyle', 'ISO, MDY', true),
                    set_config('client_min_messages', 'warning', true),
                    case when has_parameter_privilege('session_replication_role', 'SET')
                         then set_config('session_replication_role', 'replica', true) end,
                    pg_advisory_xact_lock_shared(hashtext('brewlytics replica'))",
        )
        .bind(self.commit_mode.setting())
        .execute(&mut self.conn)
        .await?;
        Ok(())
    }

    /// Journals and applies an encoded batch (or a chunk of one source transaction) into the
    /// open transaction.
    pub async fn apply(&mut self, batch: &Encoded) -> Result<(), ApplyError> {
        self.apply_part(batch).await?;
        self.finish_star().await
    }

    /// Journals and applies a chunk of a source transaction whose end is yet to come: its
    /// star work waits for the last chunk ([`OlapWriter::apply`]).
    pub async fn apply_chunk(&mut self, batch: &Encoded) -> Result<(), ApplyError> {
        self.deferring = true;
        let r = self.apply_part(batch).await;
        self.deferring = false;
        r
    }

    /// Journals on a second connection from now on, in parallel with the rest of each batch
    /// (see [`journal::Side`]); the caller deletes journal rows past its checkpoint first.
    pub async fn journal_apart(&mut self, url: &DbUrl) -> Result<(), ApplyError> {
        self.side = Some(journal::Side::connect(url, self.commit_mode).await?);
        Ok(())
    }

    async fn apply_part(&mut self, batch: &Encoded) -> Result<(), ApplyError> {
        self.begin().await?;
        // A backfill merge reads the journal up to its position in this transaction.
        let reads_journal = batch
            .segments
            .iter()
            .any(|s| matches!(s, Segment::Backfill(..)));
        match self.side.take() {
            Some(mut side) if !reads_journal => {
                let (journaled, applied) = tokio::join!(
                    side.write(&batch.journal),
                    self.apply_segments(&batch.segments)
                );
                self.side = Some(side);
                journaled.map_err(journal_error)?;
                applied?;
            }
            side => {
                self.side = side;
                if let Some(side) = &mut self.side {
                    side.commit().await.map_err(journal_error)?;
                }
                journal::write(&mut self.conn, &batch.journal).await?;
                self.apply_segments(&batch.segments).await?;
            }
        }
        self.totals.events += batch.changes;
        self.totals
            .by_table
            .extend(batch.counts.iter().map(|((t, op), n)| (t.clone(), *op, *n)));
        Ok(())
    }

    /// Applies segments (already journaled) in order.
    pub async fn apply_segments(&mut self, segments: &[Segment]) -> Result<(), ApplyError> {
        for segment in segments {
            match segment {
                Segment::Rows(stages) => self.apply_rows(stages).await?,
                Segment::Truncate(t) => {
                    self.finish_star().await?;
                    self.apply_truncate(t).await?
                }
                Segment::Schema(s, pos, ts) => {
                    self.finish_star().await?;
                    self.apply_schema(s, *pos, *ts).await?
                }
                Segment::Backfill(m, pos) => {
                    self.finish_star().await?;
                    backfill::merge(self, m, *pos).await?;
                }
            }
        }
        Ok(())
    }

    /// Writes the checkpoint and commits; returns what the transaction applied.
    pub async fn commit(
        &mut self,
        slot: &str,
        lsn: Lsn,
        commit_ts: Option<DateTime<Utc>>,
    ) -> Result<ApplyStats, ApplyError> {
        self.begin().await?;
        if let Some(side) = &mut self.side {
            side.commit().await.map_err(journal_error)?;
        }
        checkpoint::store(&mut self.conn, slot, lsn, commit_ts).await?;
        self.last_commit = match self.commit_mode {
            OlapCommit::Asynchronous => Some(flush::commit_reading_position(&mut self.conn).await?),
            OlapCommit::Synchronous => {
                sqlx::query("commit").execute(&mut self.conn).await?;
                None
            }
        };
        self.in_tx = false;
        self.dirty.clear();
        let mut stats = std::mem::take(&mut self.totals);
        stats.star = self.star_committed().await;
        Ok(stats)
    }

    /// Commits without moving any checkpoint (replay).
    pub async fn commit_without_checkpoint(&mut self) -> Result<ApplyStats, ApplyError> {
        self.begin().await?;
        if let Some(side) = &mut self.side {
            side.commit().await.map_err(journal_error)?;
        }
        sqlx::query("commit").execute(&mut self.conn).await?;
        self.in_tx = false;
        self.dirty.clear();
        Ok(std::mem::take(&mut self.totals))
    }

    /// Abandons the open transaction.
    pub async fn rollback(&mut self) -> Result<(), ApplyError> {
        if let Some(side) = &mut self.side {
            if side.rollback().await.is_err() {
                // A broken connection: the journal goes back into the batch's transaction.
                self.side = None;
            }
        }
        if self.in_tx {
            sqlx::query("rollback").execute(&mut self.conn).await?;
            self.in_tx = false;
        }
        self.dirty.clear();
        // Stage tables made in the transaction are gone with it.
        self.stages.clear();
        self.acc.clear();
        self.acc_rows = 0;
        self.totals = ApplyStats::default();
        self.star_rolled_back();
        Ok(())
    }

    pub async fn apply_rows(&mut self, stages: &[Stage]) -> Result<(), ApplyError> {
        let star = self.star_sources().await?;
        let touches_star = stages
            .iter()
            .any(|s| star.iter().any(|n| n == s.table.replica.as_ref()));
        let mut dead: Vec<bool> = Vec::with_capacity(stages.len());
        for s in stages {
            self.ensure_stage(&s.table).await?;
            dead.push(self.copy_stage(s).await?);
        }
        if touches_star {
            for name in &star {
                if !stages.iter().any(|s| s.table.replica.as_ref() == name) {
                    self.ensure_star_stage(name).await?;
                }
            }
        }
        for (s, had_dead) in stages.iter().zip(&dead) {
            if *had_dead {
                sqlx::query(&merge::renumber_sql(&s.table))
                    .execute(&mut self.conn)
                    .await?;
            }
            if s.has_keep {
                sqlx::query(&merge::keep_sql(&s.table))
                    .execute(&mut self.conn)
                    .await?;
            }
        }
        if touches_star {
            self.star_note_batch(stages).await?;
            self.star_call("select star_before()").await?;
        }
        for s in stages {
            self.merge_stage(s).await?;
        }
        if touches_star {
            if self.deferring || !self.acc.is_empty() {
                self.gather_star(stages).await?;
                if !self.deferring {
                    self.finish_star().await?;
                }
            } else {
                self.star_call("select star_after()").await?;
            }
        }
        Ok(())
    }

    /// Keeps the star sources' stage rows of a chunk for the star work of its transaction.
    async fn gather_star(&mut self, stages: &[Stage]) -> Result<(), ApplyError> {
        let star = self.star_sources().await?;
        for s in stages {
            let t = &s.table;
            if !star.iter().any(|n| n == t.replica.as_ref()) {
                continue;
            }
            let stage = format!("pg_temp.{}", ident(&stage_name(t)));
            let acc = format!("pg_temp.{}", ident(&format!("acc_{}", t.replica)));
            if !self.acc.contains_key(t.replica.as_ref()) {
                sqlx::query(&format!("drop table if exists {acc}"))
                    .execute(&mut self.conn)
                    .await?;
                sqlx::query(&format!(
                    "create temp table {} (like {stage}) on commit drop",
                    ident(&format!("acc_{}", t.replica))
                ))
                .execute(&mut self.conn)
                .await?;
                self.acc.insert(t.replica.to_string(), t.clone());
            }
            // Positions go on from the chunks before (the stage is merged: free to renumber).
            sqlx::query(&format!("update {stage} set _cdc_pos = _cdc_pos + $1"))
                .bind(i32::try_from(self.acc_rows).unwrap_or(i32::MAX))
                .execute(&mut self.conn)
                .await?;
            let n = sqlx::query(&format!("insert into {acc} select * from {stage}"))
                .execute(&mut self.conn)
                .await?
                .rows_affected() as i64;
            self.acc_rows += n;
        }
        Ok(())
    }

    /// The star work gathered over a transaction's chunks, done once: each gathered table's
    /// stage holds all its changes again, last and new told over the whole transaction.
    async fn finish_star(&mut self) -> Result<(), ApplyError> {
        if self.acc.is_empty() {
            return Ok(());
        }
        let star = self.star_sources().await?;
        for name in &star {
            self.ensure_star_stage(name).await?;
        }
        let gathered: Vec<Arc<SourceTable>> = self.acc.drain().map(|(_, t)| t).collect();
        self.acc_rows = 0;
        for t in &gathered {
            let stage = format!("pg_temp.{}", ident(&stage_name(t)));
            let acc = format!("pg_temp.{}", ident(&format!("acc_{}", t.replica)));
            sqlx::query(&format!("truncate {stage}"))
                .execute(&mut self.conn)
                .await?;
            sqlx::query(&merge::regather_sql(t, &stage, &acc))
                .execute(&mut self.conn)
                .await?;
            sqlx::query(&format!("drop table {acc}"))
                .execute(&mut self.conn)
                .await?;
            self.dirty.insert(stage_name(t));
        }
        self.star_call("select star_after()").await
    }

    /// Merges a stage into its replica. A row the replica refuses (a constraint OLAP has
    /// and the source does not) is found by halving, dead-lettered (or stops) and left out;
    /// the key's earlier change in the batch, if any, is merged instead.
    async fn merge_stage(&mut self, s: &Stage) -> Result<(), ApplyError> {
        let stage = format!("pg_temp.{}", ident(&stage_name(&s.table)));
        if s.only_inserts && !s.table.is_keyless() {
            sqlx::query("savepoint merge")
                .execute(&mut self.conn)
                .await?;
            match sqlx::query(&merge::insert_only_sql(&s.table))
                .execute(&mut self.conn)
                .await
            {
                Ok(_) => {
                    sqlx::query("release savepoint merge")
                        .execute(&mut self.conn)
                        .await?;
                    return Ok(());
                }
                Err(e) if redact::classify(&e) == Class::Transient => return Err(e.into()),
                Err(_) => {
                    sqlx::query("rollback to savepoint merge")
                        .execute(&mut self.conn)
                        .await?;
                }
            }
        }
        let all = merge::merge_sql(&s.table, s.has_delete);
        let some = merge::merge_sql_some(&s.table, s.has_delete);
        loop {
            sqlx::query("savepoint merge")
                .execute(&mut self.conn)
                .await?;
            let mut failed = None;
            for sql in &all {
                if let Err(e) = sqlx::query(sql).execute(&mut self.conn).await {
                    failed = Some(e);
                    break;
                }
            }
            let Some(e) = failed else {
                sqlx::query("release savepoint merge")
                    .execute(&mut self.conn)
                    .await?;
                return Ok(());
            };
            sqlx::query("rollback to savepoint merge")
                .execute(&mut self.conn)
                .await?;
            if redact::classify(&e) == Class::Transient {
                return Err(e.into());
            }
            let last_only = if s.table.is_keyless() {
                ""
            } else {
                " where _cdc_last"
            };
            let mut candidates: Vec<i32> = sqlx::query_scalar(&format!(
                "select _cdc_pos from {stage}{last_only} order by 1"
            ))
            .fetch_all(&mut self.conn)
            .await?;
            // Halve until one row fails on its own.
            let mut culprit = None;
            while !candidates.is_empty() {
                if candidates.len() == 1 {
                    if let Err(e) = self.try_merge_some(&some, &candidates).await? {
                        culprit = Some((candidates[0], e));
                    }
                    break;
                }
                let half = candidates.split_off(candidates.len() / 2);
                match self.try_merge_some(&some, &candidates).await? {
                    Err(_) => {}
                    Ok(()) => candidates = half,
                }
            }
            let Some((pos, e)) = culprit else {
                // Every row alone is fine, together they are not: not a row's fault.
                return Err(e.into());
            };
            let row = &s.rows[pos as usize];
            self.reject(&s.table, &row.positions, row.op, &e).await?;
            sqlx::query(&format!("delete from {stage} where _cdc_pos = $1"))
                .bind(pos)
                .execute(&mut self.conn)
                .await?;
            sqlx::query(&merge::renumber_sql(&s.table))
                .execute(&mut self.conn)
                .await?;
        }
    }

    /// The merge of some stage rows, tried and undone: whether the replica takes them.
    async fn try_merge_some(
        &mut self,
        sqls: &[String],
        positions: &[i32],
    ) -> Result<Result<(), sqlx::Error>, ApplyError> {
        sqlx::query("savepoint merge_try")
            .execute(&mut self.conn)
            .await?;
        let mut result = Ok(());
        for sql in sqls {
            if let Err(e) = sqlx::query(sql)
                .bind(positions)
                .execute(&mut self.conn)
                .await
            {
                result = Err(e);
                break;
            }
        }
        sqlx::query("rollback to savepoint merge_try")
            .execute(&mut self.conn)
            .await?;
        if let Err(e) = &result {
            if redact::classify(e) == Class::Transient {
                return Err(ApplyError::Sql(result.unwrap_err()));
            }
        }
        Ok(result)
    }

    pub async fn star_call(&mut self, sql: &str) -> Result<(), ApplyError> {
        match self.star_try(sql).await? {
            Err(e) if star_inputs::lost_view(&e) => {
                // Another session (a replay) dropped what this session's input views read.
                self.star_views_again().await?;
                self.star_try(sql).await?.map_err(star_inputs::star_error)
            }
            r => r.map_err(star_inputs::star_error),
        }
    }

    /// Makes the stage table of `t` exist with `t`'s shape, and empty.
    pub async fn ensure_stage(&mut self, t: &Arc<SourceTable>) -> Result<(), ApplyError> {
        let name = stage_name(t);
        let current = matches!(self.stages.get(&name), Some(Some(s)) if s.same_shape(t));
        if !current {
            let sql = format!("drop table if exists pg_temp.{} cascade", ident(&name));
            sqlx::query(&sql).execute(&mut self.conn).await?;
            sqlx::query(&stage::create_sql(t))
                .execute(&mut self.conn)
                .await?;
            self.stages.insert(name.clone(), Some(t.clone()));
            self.star_stage_view(&t.replica, &name).await?;
        } else if self.dirty.contains(&name) {
            let sql = format!("truncate pg_temp.{}", ident(&name));
            sqlx::query(&sql).execute(&mut self.conn).await?;
        }
        self.dirty.insert(name);
        Ok(())
    }

    /// COPYs a stage; rows OLAP refuses are dead-lettered (or stop). Returns whether any
    /// row was refused.
    async fn copy_stage(&mut self, s: &Stage) -> Result<bool, ApplyError> {
        let sql = format!(
            "copy pg_temp.{} ({}) from stdin",
            ident(&stage_name(&s.table)),
            s.columns
        );
        let spans: Vec<(usize, usize)> = s.rows.iter().map(|r| (r.start, r.end)).collect();
        let refused = self.copy_checked(&sql, &s.data, &spans).await?;
        for (row, e) in &refused {
            self.reject(&s.table, &s.rows[*row].positions, s.rows[*row].op, e)
                .await?;
        }
        Ok(!refused.is_empty())
    }

    /// A COPY of `data` (rows at `spans`); on a deterministic failure, the rows OLAP refuses
    /// are found by halving and left out, and returned with their errors.
    pub async fn copy_checked(
        &mut self,
        sql: &str,
        data: &[u8],
        spans: &[(usize, usize)],
    ) -> Result<Vec<(usize, sqlx::Error)>, ApplyError> {
        match self.guarded_copy(sql, data).await? {
            Ok(()) => return Ok(Vec::new()),
            Err(e) if redact::classify(&e) == Class::Transient => return Err(e.into()),
            Err(_) => {}
        }
        let mut refused = Vec::new();
        let mut pending: Vec<Vec<usize>> = vec![(0..spans.len()).collect()];
        while let Some(rows) = pending.pop() {
            if rows.is_empty() {
                continue;
            }
            let mut part = Vec::new();
            for &i in &rows {
                part.extend_from_slice(&data[spans[i].0..spans[i].1]);
            }
            match self.guarded_copy(sql, &part).await? {
                Ok(()) => {}
                Err(e) if redact::classify(&e) == Class::Transient => return Err(e.into()),
                Err(e) if rows.len() == 1 => refused.push((rows[0], e)),
                Err(_) => {
                    let (a, b) = rows.split_at(rows.len() / 2);
                    pending.push(b.to_vec());
                    pending.push(a.to_vec());
                }
            }
        }
        refused.sort_by_key(|r| r.0);
        Ok(refused)
    }

    /// One COPY under a savepoint: an error leaves the transaction usable.
    async fn guarded_copy(
        &mut self,
        sql: &str,
        data: &[u8],
    ) -> Result<Result<(), sqlx::Error>, ApplyError> {
        sqlx::query("savepoint stage")
            .execute(&mut self.conn)
            .await?;
        let result = async {
            let mut copy = self.conn.copy_in_raw(sql).await?;
            for piece in data.chunks(1 << 20) {
                copy.send(piece).await?;
            }
            copy.finish().await.map(|_| ())
        }
        .await;
        let undo = if result.is_ok() {
            "release savepoint stage"
        } else {
            "rollback to savepoint stage"
        };
        sqlx::query(undo).execute(&mut self.conn).await?;
        Ok(result)
    }

    /// Changes OLAP refuses: dead-lettered (or, with `--on-error stop`, the end).
    pub async fn reject(
        &mut self,
        table: &SourceTable,
        positions: &[Pos],
        op: Op,
        e: &sqlx::Error,
    ) -> Result<(), ApplyError> {
        let name = table.qualified_source();
        if self.on_error == OnError::Stop {
            return Err(ApplyError::Rejected {
                pos: positions.first().copied().unwrap_or_default(),
                table: name,
                error: redact::db_error(e),
            });
        }
        for pos in positions {
            tracing::warn!(lsn = %pos.lsn, seq = pos.seq, table = %name,
                error = %redact::db_error(e), "change sent to cdc_dead_letters");
            deadletter(&mut self.conn, *pos, table, op, e).await?;
            self.totals.dead_letters += 1;
        }
        Ok(())
    }

    pub async fn apply_truncate(&mut self, t: &Arc<SourceTable>) -> Result<(), ApplyError> {
        let sql = format!("truncate {}", t.replica_ident());
        sqlx::query(&sql).execute(&mut self.conn).await?;
        if self.is_star_source(t).await? {
            self.star_call("select star_refresh_all()").await?;
        }
        Ok(())
    }

    /// The replica follows a schema change; a copy of the table is requested if needed. The
    /// star's input of the table follows it around the replica's DDL (crate::star).
    async fn apply_schema(
        &mut self,
        s: &SchemaChange,
        pos: Pos,
        commit_ts: i64,
    ) -> Result<(), ApplyError> {
        let table = s.after.qualified_source();
        let at = crate::star::At {
            lsn: Some(pos.lsn),
            time: crate::decode::pg_timestamp_to_chrono(commit_ts),
        };
        let star = self
            .star_before_ddl(s.before.as_deref(), &s.after, at)
            .await?;
        let ddl = async {
            sqlx::query("savepoint ddl").execute(&mut self.conn).await?;
            crate::schema::store::apply_steps(&mut self.conn, &s.after, &s.steps).await?;
            sqlx::query("release savepoint ddl")
                .execute(&mut self.conn)
                .await?;
            Ok::<_, sqlx::Error>(())
        }
        .await;
        if let Err(e) = ddl {
            if redact::classify(&e) == Class::Transient {
                return Err(e.into());
            }
            return Err(ApplyError::Ddl {
                table,
                error: redact::db_error(&e),
            });
        }
        self.star_after_ddl(star).await?;
        if self.replaying {
            return Ok(());
        }
        let renamed_from = s
            .before
            .as_deref()
            .filter(|b| b.schema != s.after.schema || b.name != s.after.name);
        crate::schema::store::save(&mut self.conn, &s.after, renamed_from).await?;
        let partition_steps = s.partitions();
        if s.steps.len() > partition_steps.clone().count() {
            tracing::info!(table = %table, steps = s.steps.len(), at = %pos,
                "the replica followed a schema change of its source");
        }
        if let Some(reason) = &s.backfill {
            // Chunks copied under other columns or another row filter are copied again.
            let changed_shape = s.before.as_ref().is_some_and(|b| {
                !b.same_shape(&s.after) || b.published.row_filter != s.after.published.row_filter
            });
            backfill::request(&mut self.conn, &s.after, reason, changed_shape).await?;
            tracing::info!(table = %table, reason = %reason, "the table will be copied again (backfill)");
        }
        for p in partition_steps {
            partitions::apply(&mut self.conn, p, pos).await?;
        }
        // A star source whose shape changed: its stage table is made again on next use.
        self.stages.remove(&format!("stage_{}", s.after.replica));
        Ok(())
    }
}

/// Records a change OLAP refused, with the server's full text (it stays in OLAP).
pub async fn deadletter(
    conn: &mut PgConnection,
    pos: Pos,
    t: &SourceTable,
    op: Op,
    e: &sqlx::Error,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "insert into cdc_dead_letters (lsn, seq, source_schema, source_table, op, error, sqlstate)
         values ($1::pg_lsn, $2, $3, $4, $5::\"char\", $6, $7) on conflict (lsn, seq) do nothing",
    )
    .bind(pos.lsn.to_string())
    .bind(pos.seq)
    .bind(t.schema.as_ref())
    .bind(t.name.as_ref())
    .bind(op.code().to_string())
    .bind(redact::full(e))
    .bind(redact::sqlstate(e))
    .execute(&mut *conn)
    .await?;
    Ok(())
}
