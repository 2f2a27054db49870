//! The read stage: replication messages in, batches of changes out, encoded for the sinks.
//!
//! It decodes pgoutput, resolves each change's table (following schema changes), groups whole
//! source transactions into batches (chunking a transaction larger than a batch) and encodes
//! them with each sink's [`Encode`] — all while the applier applies the previous batch. It never stops talking
//! to the source: while it waits for the sink it keeps sending standby status updates, so a
//! long apply does not end the connection (`wal_sender_timeout`). The flush position it
//! reports is the last position the sink has made durable, never more.

use std::sync::Arc;
use std::time::{Duration, Instant};

use sqlx::PgConnection;
use tokio::sync::{mpsc, watch};

use crate::batch::{Batcher, CommitMark};
use crate::change::{
    key_changed, Body, Change, ChunkMerge, Op, Pos, RowChange, SchemaChange, TxContext,
};
use crate::config::ReplicatorConfig;
use crate::decode::{
    chrono_to_pg_timestamp, decode, decode_v2, standby_status_update, BeginBody, CommitBody,
    PgOutputMessage, RelationCache, ReplicationMessage, StreamCommitBody, StreamDecoder,
    StreamedMessage, TupleData,
};
use crate::error::ReplicatorError;
use crate::lsn::Lsn;
use crate::schema::{partitions, publication, Resolved, Tracker, DDL_PREFIX};
use crate::sink::Encode;
use crate::spool::Spools;
use crate::stream::conn::{ConnError, ReplicationConnection};
use crate::table::SourceTable;
use crate::telemetry::heartbeat;
use crate::telemetry::Telemetry;

/// How often the source hears from us, whatever we are doing: a status update is a few bytes,
/// and the source ends a connection it has not heard from for `wal_sender_timeout` (which may
/// be short) — while a keepalive request it sends can sit behind megabytes of a large
/// transaction we have not read yet.
fn status_every(cfg: &ReplicatorConfig) -> Duration {
    cfg.status_interval.min(Duration::from_secs(1))
}

/// What the reader hands the applier: a run of changes as each sink encoded it (`parts`),
/// and, when it ends a batch, what that batch commits.
pub struct Work<P> {
    pub parts: P,
    /// None: part of a source transaction larger than a batch (applied, not committed).
    pub commit: Option<Commit>,
    /// Changes in the run, and the first one's position (for the applier's spans).
    pub changes: usize,
    pub first: Option<Pos>,
}

/// The end of a batch: whole transactions, committed with the checkpoint `mark`.
pub struct Commit {
    pub mark: CommitMark,
    pub transactions: u64,
    /// The newest of this process's heartbeats in the batch.
    pub heartbeat: Option<u64>,
}

impl<P> Work<P> {
    fn new(parts: P, changes: &[Change], commit: Option<Commit>) -> Self {
        Self {
            parts,
            commit,
            changes: changes.len(),
            first: changes.first().map(|c| c.pos),
        }
    }
}

/// What the sink has made durable.
#[derive(Clone, Copy, Debug, Default)]
pub struct Applied {
    pub lsn: Lsn,
    /// Batches committed (to tell when nothing is in flight).
    pub batches: u64,
}

pub struct Reader<'a, E: Encode> {
    pub cfg: &'a ReplicatorConfig,
    pub telemetry: Arc<Telemetry>,
    pub conn: ReplicationConnection,
    pub oltp: PgConnection,
    pub tracker: Tracker,
    relations: RelationCache,
    batcher: Batcher,
    /// Each sink's encoding of the changes.
    encoder: E,
    heartbeat: Option<u64>,
    /// The furthest WAL position the server told us about.
    received: Lsn,
    /// What we report as flushed.
    flushed: Lsn,
    /// The checkpoint: transactions committed before it are skipped.
    applied_to: Lsn,
    sent: u64,
    applied: watch::Receiver<Applied>,
    work: Option<mpsc::Sender<Work<E::Part>>>,
    next_status: Instant,
    /// With protocol 2: transactions in progress, and where each block is.
    streams: Option<Streams>,
}

/// Large transactions received while in progress (`--streaming on`).
pub struct Streams {
    decoder: StreamDecoder,
    spools: Spools,
}

impl Streams {
    pub fn new(spools: Spools) -> Self {
        Self {
            decoder: StreamDecoder::default(),
            spools,
        }
    }
}

impl<'a, E: Encode> Reader<'a, E> {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        cfg: &'a ReplicatorConfig,
        telemetry: Arc<Telemetry>,
        conn: ReplicationConnection,
        oltp: PgConnection,
        tracker: Tracker,
        start: Lsn,
        applied: watch::Receiver<Applied>,
        work: mpsc::Sender<Work<E::Part>>,
        encoder: E,
        streams: Option<Streams>,
    ) -> Self {
        Self {
            cfg,
            telemetry,
            conn,
            oltp,
            tracker,
            relations: RelationCache::new(),
            batcher: Batcher::new(cfg.limits),
            encoder,
            heartbeat: None,
            received: start,
            flushed: start,
            applied_to: start,
            sent: 0,
            applied,
            work: Some(work),
            next_status: Instant::now() + status_every(cfg),
            streams,
        }
    }

    /// Reads until `shutdown` (then hands over what is complete) or an error.
    pub async fn run(
        &mut self,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Result<(), ReplicatorError> {
        loop {
            let wake = self
                .batcher
                .deadline()
                .map_or(self.next_status, |d| d.min(self.next_status));
            // The timer only wins when the stream has nothing ready (biased order).
            let stream_idle = tokio::select! {
                biased;
                _ = shutdown.changed() => {
                    if !self.batcher.in_transaction() {
                        self.hand_over_batch().await?;
                    }
                    return Ok(());
                }
                data = self.conn.recv_copy_data() => {
                    match data? {
                        Some(bytes) => self.handle(bytes).await?,
                        None => return Err(ConnError::Closed.into()),
                    }
                    false
                }
                _ = tokio::time::sleep_until(wake.into()) => true,
            };
            let now = Instant::now();
            if self.batcher.should_commit(now, stream_idle) {
                self.hand_over_batch().await?;
            }
            if now >= self.next_status {
                self.send_status(false).await?;
            }
        }
    }

    /// The final standby status: what the sink made durable.
    pub async fn finish(mut self) -> Result<(), ReplicatorError> {
        self.refresh_flushed();
        self.send_status(false).await?;
        tracing::info!(flushed = %self.flushed, "replicator stopped");
        self.conn.close().await;
        Ok(())
    }

    /// No more work: the sink finishes what it has and stops.
    pub fn close_work(&mut self) {
        self.work = None;
    }

    fn refresh_flushed(&mut self) {
        let a = *self.applied.borrow();
        self.flushed = self.flushed.max(a.lsn);
        self.applied_to = self.applied_to.max(a.lsn);
    }

    /// Nothing read is waiting to be applied — neither a batch nor a transaction in progress
    /// (the flush position may then follow the stream).
    fn nothing_in_flight(&self) -> bool {
        self.batcher.is_idle()
            && self.applied.borrow().batches == self.sent
            && self.streams.as_ref().is_none_or(|s| s.spools.is_empty())
    }

    async fn handle(&mut self, bytes: bytes::Bytes) -> Result<(), ReplicatorError> {
        match ReplicationMessage::parse(&bytes)? {
            ReplicationMessage::XLogData { wal_end, data, .. } => {
                self.received = self.received.max(wal_end);
                if self.streams.is_some() {
                    self.streamed(data).await?;
                } else {
                    let msg = decode(&data)?;
                    self.message(msg).await?;
                    self.send_chunk_if_full().await?;
                }
            }
            ReplicationMessage::PrimaryKeepalive {
                wal_end,
                reply_requested,
                ..
            } => {
                self.received = self.received.max(wal_end);
                self.refresh_flushed();
                if self.nothing_in_flight() {
                    // Everything up to wal_end has been sent and nothing of it is pending:
                    // the slot may move on even when the published tables are idle.
                    self.flushed = self.flushed.max(wal_end);
                }
                if reply_requested {
                    self.send_status(false).await?;
                }
            }
        }
        Ok(())
    }

    /// Part of a transaction larger than a batch, once there is a batch's worth.
    async fn send_chunk_if_full(&mut self) -> Result<(), ReplicatorError> {
        if let Some(chunk) = self.batcher.take_chunk_if_full() {
            let parts = self.encoder.encode(&chunk);
            self.send(Work::new(parts, &chunk, None)).await?;
        }
        Ok(())
    }

    /// A protocol 2 message: whole transactions as in protocol 1; blocks of transactions in
    /// progress spooled; a rolled back one (or a savepoint of it) dropped; a committed one
    /// read back from its spool.
    async fn streamed(&mut self, data: bytes::Bytes) -> Result<(), ReplicatorError> {
        let Some(streams) = self.streams.as_mut() else {
            return Ok(());
        };
        let block = streams.decoder.in_block();
        match streams.decoder.decode(&data)? {
            StreamedMessage::Plain(msg) => {
                self.message(msg).await?;
                self.send_chunk_if_full().await?;
            }
            StreamedMessage::StreamStart(s) => streams.spools.start(s.xid, s.first_segment)?,
            StreamedMessage::StreamStop => self.report_streams(),
            StreamedMessage::InStream { xid, .. } => {
                let top = block.unwrap_or(xid);
                streams.spools.append(top, xid, &data)?;
            }
            StreamedMessage::StreamAbort(a) => {
                let dropped = streams.spools.abort(a.xid, a.subxid)?;
                tracing::debug!(
                    xid = a.xid,
                    subxid = a.subxid,
                    changes = dropped,
                    "streamed transaction in progress rolled back"
                );
                if a.is_toplevel() {
                    self.telemetry.stream_ended(false);
                }
                self.report_streams();
            }
            StreamedMessage::StreamCommit(c) => {
                self.stream_commit(c).await?;
                self.telemetry.stream_ended(true);
                self.report_streams();
            }
        }
        Ok(())
    }

    fn report_streams(&self) {
        if let Some(s) = &self.streams {
            self.telemetry.streams(s.spools.len(), s.spools.bytes());
        }
    }

    /// A streamed transaction committed: its spooled messages go through the pipeline as if
    /// the source had sent it whole — at its commit's position, batched and chunked like any
    /// other transaction.
    async fn stream_commit(&mut self, c: StreamCommitBody) -> Result<(), ReplicatorError> {
        let Some(streams) = self.streams.as_mut() else {
            return Ok(());
        };
        let spooled = streams.spools.take(c.xid)?;
        self.message(PgOutputMessage::Begin(BeginBody {
            final_lsn: c.commit_lsn,
            commit_ts: c.commit_ts,
            xid: c.xid,
        }))
        .await?;
        if let Some(mut spooled) = spooled {
            tracing::debug!(xid = c.xid, changes = spooled.messages, commit = %c.commit_lsn,
                "streamed transaction committed");
            while let Some(raw) = spooled.next_message()? {
                if let StreamedMessage::InStream { message, .. } = decode_v2(&raw, true)? {
                    self.message(message).await?;
                    self.send_chunk_if_full().await?;
                }
                if Instant::now() >= self.next_status {
                    self.send_status(false).await?;
                }
            }
        }
        self.message(PgOutputMessage::Commit(CommitBody {
            flags: c.flags,
            commit_lsn: c.commit_lsn,
            end_lsn: c.end_lsn,
            commit_ts: c.commit_ts,
        }))
        .await
    }

    async fn message(&mut self, msg: PgOutputMessage) -> Result<(), ReplicatorError> {
        match msg {
            PgOutputMessage::Begin(b) => {
                self.refresh_flushed();
                self.batcher.begin(
                    TxContext {
                        lsn: b.final_lsn,
                        xid: b.xid,
                        commit_ts: b.commit_ts,
                    },
                    self.applied_to,
                )
            }
            PgOutputMessage::Commit(c) => {
                let skipped = self
                    .batcher
                    .commit(c.end_lsn, c.commit_time(), Instant::now());
                if skipped && self.nothing_in_flight() {
                    self.flushed = self.flushed.max(c.end_lsn);
                }
            }
            PgOutputMessage::Relation(r) => {
                self.tracker.relation_changed(r.id);
                self.relations.update(r);
            }
            PgOutputMessage::Insert(i) => {
                let gap = publication::leaves_out_toast(&i.new);
                self.row(i.relation_id, Op::Insert, None, Some(i.new))
                    .await?;
                if gap && self.batcher.next_change_would_apply() {
                    let table = self.table_of(i.relation_id).await?;
                    self.follow(publication::copy_again(table, publication::TOAST_GAP));
                }
            }
            PgOutputMessage::Update(u) => {
                let old = u.old.map(|o| o.tuple().clone());
                self.row(u.relation_id, Op::Update, old, Some(u.new))
                    .await?;
            }
            PgOutputMessage::Delete(d) => {
                self.row(d.relation_id, Op::Delete, Some(d.old.tuple().clone()), None)
                    .await?;
            }
            PgOutputMessage::Truncate(t) => {
                for id in &t.relation_ids {
                    if !self.batcher.next_change_would_apply() {
                        continue;
                    }
                    let table = self.table_of(*id).await?;
                    let Some((ctx, seq)) = self.batcher.next_change() else {
                        continue;
                    };
                    self.batcher.push(Change::new(
                        ctx,
                        seq,
                        Body::Truncate {
                            table,
                            cascade: t.cascade(),
                            restart_identity: t.restart_identity(),
                        },
                    ));
                }
            }
            PgOutputMessage::Message(m) => {
                if m.prefix == DDL_PREFIX {
                    self.tracker.ddl_message(&m.content);
                    if m.transactional && self.batcher.next_change_would_apply() {
                        if let Some(r) = self.tracker.follow_ddl(&mut self.oltp, &m.content).await?
                        {
                            self.follow(r);
                        }
                    }
                } else if m.transactional && self.batcher.next_change_would_apply() {
                    if m.prefix == heartbeat::PREFIX {
                        if let Some(seq) = self.telemetry.heartbeat_seq(&m.content) {
                            self.heartbeat = Some(self.heartbeat.map_or(seq, |h| h.max(seq)));
                        }
                    } else if m.prefix == crate::source::backfill::PREFIX {
                        self.watermark(&m.content).await?;
                    } else if m.prefix == publication::PREFIX {
                        let content = &m.content;
                        for r in self
                            .tracker
                            .follow_publication(&mut self.oltp, content)
                            .await?
                        {
                            self.follow(r);
                        }
                    } else if m.prefix == partitions::PREFIX {
                        self.partitions(&m.content).await?;
                    } else if m.prefix == crate::source::backfill::SCHEMA_CHECK_PREFIX {
                        if let Ok(t) =
                            serde_json::from_slice::<crate::source::backfill::TableName>(&m.content)
                        {
                            if let Some(r) = self
                                .tracker
                                .follow_catalog(&mut self.oltp, &t.schema, &t.table)
                                .await?
                            {
                                self.follow(r);
                            }
                        }
                    }
                }
            }
            PgOutputMessage::Origin(_) | PgOutputMessage::Type(_) => {}
        }
        Ok(())
    }

    /// The table of relation `id`, following a schema change first if one is due (the
    /// change goes into the batch, in its place).
    async fn table_of(&mut self, id: u32) -> Result<Arc<SourceTable>, ReplicatorError> {
        if let Some(t) = self.tracker.current(id) {
            return Ok(t.clone());
        }
        let rel = self.relations.get(id).ok_or_else(|| {
            ReplicatorError::Fatal(format!(
                "change for relation {id} before its Relation message"
            ))
        })?;
        let resolved = self.tracker.resolve(&mut self.oltp, &rel).await?;
        Ok(self.follow(resolved))
    }

    /// A partitions message: the replica follows, in the stream's order (a leaf no longer
    /// mirrored under `--partition-detach mirror` is emptied by a TRUNCATE first).
    async fn partitions(&mut self, content: &[u8]) -> Result<(), ReplicatorError> {
        let outcomes = self
            .tracker
            .follow_partitions(&mut self.oltp, content, self.cfg.partition_detach)
            .await?;
        for o in outcomes {
            match o {
                partitions::follow::Outcome::Follow(r) => {
                    self.follow(r);
                }
                partitions::follow::Outcome::Truncate(table) => {
                    if let Some((ctx, seq)) = self.batcher.next_change() {
                        let body = Body::Truncate {
                            table,
                            cascade: false,
                            restart_identity: false,
                        };
                        self.batcher.push(Change::new(ctx, seq, body));
                    }
                }
            }
        }
        Ok(())
    }

    /// Pushes the schema change of `r`, if any, and returns its table.
    fn follow(&mut self, r: Resolved) -> Arc<SourceTable> {
        if let Some((before, plan)) = r.change {
            if let Some((ctx, seq)) = self.batcher.next_change() {
                if !r.table.updates_identified() {
                    tracing::warn!(table = %r.table.qualified_source(),
                        "table has no primary key and REPLICA IDENTITY DEFAULT: the source refuses its UPDATEs and DELETEs while it is published; set REPLICA IDENTITY FULL (or add a primary key)");
                }
                self.batcher.push(Change::new(
                    ctx,
                    seq,
                    Body::Schema(Arc::new(SchemaChange {
                        before,
                        after: r.table.clone(),
                        steps: plan.steps,
                        backfill: plan.backfill,
                    })),
                ));
            }
        }
        r.table
    }

    async fn row(
        &mut self,
        relation_id: u32,
        op: Op,
        old: Option<TupleData>,
        new: Option<TupleData>,
    ) -> Result<(), ReplicatorError> {
        if !self.batcher.next_change_would_apply() {
            return Ok(());
        }
        let table = self.table_of(relation_id).await?;
        let Some((ctx, seq)) = self.batcher.next_change() else {
            return Ok(());
        };
        if op == Op::Update {
            // A changed key is a delete and an insert, for every consumer.
            if let (Some(o), Some(n)) = (&old, &new) {
                if !table.is_keyless() && key_changed(&table, o, n) {
                    let Some((_, seq2)) = self.batcher.next_change() else {
                        return Ok(());
                    };
                    self.batcher.push(Change::new(
                        ctx,
                        seq,
                        Body::Row(RowChange {
                            table: table.clone(),
                            op: Op::Delete,
                            old: Some(o.clone()),
                            new: None,
                        }),
                    ));
                    self.batcher.push(Change::new(
                        ctx,
                        seq2,
                        Body::Row(RowChange {
                            table,
                            op: Op::Insert,
                            old,
                            new,
                        }),
                    ));
                    return Ok(());
                }
            }
        }
        self.batcher.push(Change::new(
            ctx,
            seq,
            Body::Row(RowChange {
                table,
                op,
                old,
                new,
            }),
        ));
        Ok(())
    }

    /// A backfill chunk's high watermark: merged here, in the stream's order.
    async fn watermark(&mut self, content: &[u8]) -> Result<(), ReplicatorError> {
        let Ok(mark) = serde_json::from_slice::<crate::source::backfill::Watermark>(content) else {
            return Ok(());
        };
        let Some(resolved) = self
            .tracker
            .resolve_named(&mut self.oltp, &mark.schema, &mark.table)
            .await?
        else {
            return Ok(());
        };
        let table = self.follow(resolved);
        if let Some((ctx, seq)) = self.batcher.next_change() {
            self.batcher.push(Change::new(
                ctx,
                seq,
                Body::Backfill(Arc::new(ChunkMerge {
                    table,
                    backfill_id: mark.backfill,
                    attempt: mark.attempt,
                })),
            ));
        }
        Ok(())
    }

    async fn hand_over_batch(&mut self) -> Result<(), ReplicatorError> {
        let Some((changes, mark, transactions)) = self.batcher.take_batch() else {
            return Ok(());
        };
        let parts = self.encoder.encode(&changes);
        let commit = Commit {
            mark,
            transactions,
            heartbeat: self.heartbeat.take(),
        };
        self.sent += 1;
        self.send(Work::new(parts, &changes, Some(commit))).await
    }

    /// Hands `work` to the sink, answering the source while the sink is busy.
    async fn send(&mut self, work: Work<E::Part>) -> Result<(), ReplicatorError> {
        let sender = self.work.clone().ok_or(ReplicatorError::WriterGone)?;
        let send = sender.send(work);
        tokio::pin!(send);
        let tick = status_every(self.cfg);
        loop {
            tokio::select! {
                r = &mut send => {
                    return r.map_err(|_| ReplicatorError::WriterGone);
                }
                _ = tokio::time::sleep(tick) => {
                    self.send_status(false).await?;
                }
            }
        }
    }

    async fn send_status(&mut self, reply: bool) -> Result<(), ReplicatorError> {
        self.refresh_flushed();
        let now = chrono_to_pg_timestamp(chrono::Utc::now());
        let msg = standby_status_update(self.received, self.flushed, self.flushed, now, reply);
        self.conn.send_copy_data(msg).await?;
        self.next_status = Instant::now() + status_every(self.cfg);
        Ok(())
    }
}
