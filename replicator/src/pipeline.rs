//! The replicator daemon: stream → decode → batch → apply → feedback, reconnecting with
//! backoff. See the crate docs for the guarantees.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sqlx::postgres::PgPoolOptions;
use sqlx::{Connection, PgConnection, PgPool};
use tokio::sync::watch;
use tracing::Instrument;

use crate::apply::{ApplyError, ApplySession, OnError};
use crate::batch::{BatchLimits, Batcher};
use crate::checkpoint;
use crate::decode::{
    chrono_to_pg_timestamp, decode, standby_status_update, DecodeError, PgOutputMessage,
    RelationCache, ReplicationMessage,
};
use crate::event::{key_change_events, row_event, truncate_event, Op, SourceTable, TxContext};
use crate::heartbeat;
use crate::lsn::Lsn;
use crate::replica::Catalog;
use crate::slot;
use crate::snapshot::{self, SnapshotError};
use crate::stream::config::{ConfigError, ReplicationConfig};
use crate::stream::conn::{ConnError, ReplicationConnection};
use crate::telemetry::{Role, Telemetry};
use brewlytics_support::DbUrl;

#[derive(Clone, Debug)]
pub struct ReplicatorConfig {
    pub oltp_url: DbUrl,
    pub olap_url: DbUrl,
    pub slot: String,
    pub publication: String,
    pub limits: BatchLimits,
    pub on_error: OnError,
    /// How often a standby status update is sent when nothing else prompts one.
    pub status_interval: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum ReplicatorError {
    #[error("{0}")]
    Fatal(String),
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("replication stream: {0}")]
    Stream(#[from] ConnError),
    #[error("decoding the stream: {0}")]
    Decode(#[from] DecodeError),
    #[error(transparent)]
    Apply(#[from] ApplyError),
    #[error("initial copy: {0}")]
    Snapshot(#[from] SnapshotError),
    #[error("database: {0}")]
    Sql(#[from] sqlx::Error),
}

impl ReplicatorError {
    /// Errors worth waiting out (a database restarting, a network cut, the slot held by a
    /// process that is going away); others would only repeat.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Fatal(_) | Self::Config(_) | Self::Decode(_) => false,
            Self::Apply(e) => e.is_retryable() || matches!(e, ApplyError::Sql(_)),
            Self::Snapshot(SnapshotError::Malformed { .. }) => false,
            Self::Stream(ConnError::Auth(_) | ConnError::Tls(_)) => false,
            Self::Stream(ConnError::Server { code, .. }) => !code.starts_with("28"),
            _ => true,
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Self::Fatal(_) => "fatal",
            Self::Config(_) => "config",
            Self::Stream(_) => "stream",
            Self::Decode(_) => "decode",
            Self::Apply(e) => e.kind(),
            Self::Snapshot(_) => "snapshot",
            Self::Sql(_) => "database",
        }
    }
}

/// Runs until `shutdown` turns true; reconnects with backoff on retryable errors.
pub async fn run(
    cfg: ReplicatorConfig,
    shutdown: watch::Receiver<bool>,
) -> Result<(), ReplicatorError> {
    run_with(cfg, Telemetry::new(), shutdown).await
}

/// [`run`], reporting to `telemetry`.
pub async fn run_with(
    cfg: ReplicatorConfig,
    telemetry: Arc<Telemetry>,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), ReplicatorError> {
    slot::validate_name("slot name", &cfg.slot).map_err(ReplicatorError::Fatal)?;
    slot::validate_name("publication", &cfg.publication).map_err(ReplicatorError::Fatal)?;
    let mut backoff = Duration::from_millis(250);
    loop {
        if *shutdown.borrow() {
            return Ok(());
        }
        let started = Instant::now();
        let outcome = session(&cfg, &telemetry, &mut shutdown).await;
        if telemetry.role() == Role::Streaming {
            telemetry.set_role(Role::Leader);
        }
        match outcome {
            Ok(()) => return Ok(()),
            Err(e) if !e.is_retryable() => {
                telemetry.error(e.kind(), e.to_string());
                return Err(e);
            }
            Err(e) => {
                telemetry.error(e.kind(), e.to_string());
                if started.elapsed() > Duration::from_secs(60) {
                    backoff = Duration::from_millis(250);
                }
                tracing::warn!(error = %e, kind = e.kind(), retry_in_ms = backoff.as_millis() as u64,
                    "replication interrupted; reconnecting");
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = shutdown.changed() => return Ok(()),
                }
                backoff = (backoff * 2).min(Duration::from_secs(30));
            }
        }
    }
}

async fn olap_pool(url: &DbUrl) -> Result<PgPool, sqlx::Error> {
    PgPoolOptions::new()
        .max_connections(2)
        .acquire_timeout(Duration::from_secs(10))
        .connect_with(url.connect_options()?)
        .await
}

/// One connection's life: set up, stream until shutdown or error.
async fn session(
    cfg: &ReplicatorConfig,
    telemetry: &Arc<Telemetry>,
    shutdown: &mut watch::Receiver<bool>,
) -> Result<(), ReplicatorError> {
    let olap = olap_pool(&cfg.olap_url).await?;
    let mut oltp = PgConnection::connect_with(&cfg.oltp_url.connect_options()?).await?;
    let has_publication: bool =
        sqlx::query_scalar("select exists (select 1 from pg_publication where pubname = $1)")
            .bind(&cfg.publication)
            .fetch_one(&mut oltp)
            .await?;
    if !has_publication {
        return Err(ReplicatorError::Fatal(format!(
            "publication {:?} does not exist in the OLTP database: run `brewlytics migrate`",
            cfg.publication
        )));
    }
    let checkpoint = {
        let mut c = olap.acquire().await?;
        checkpoint::load(&mut c, &cfg.slot).await?
    };
    let existing = slot::info(&mut oltp, &cfg.slot).await?;
    let repl_cfg = ReplicationConfig::from_url(&cfg.oltp_url)?;
    let mut conn = ReplicationConnection::connect(&repl_cfg).await?;
    let mut catalog = Catalog::default();

    let start = match (existing, checkpoint) {
        (Some(s), Some(cp)) => {
            if s.wal_status.as_deref() == Some("lost") {
                return Err(ReplicatorError::Fatal(format!(
                    "replication slot {:?} was invalidated (wal_status = lost): changes after {} \
                     are gone from the source's WAL; run `brewlytics resync` to copy the source again",
                    cfg.slot, cp.lsn
                )));
            }
            cp.lsn
        }
        (None, Some(cp)) => {
            return Err(ReplicatorError::Fatal(format!(
                "replication slot {:?} does not exist but OLAP holds changes up to {}: changes \
                 since then cannot be streamed; run `brewlytics resync` to copy the source again",
                cfg.slot, cp.lsn
            )))
        }
        (existing, None) => {
            if let Some(s) = existing {
                // A first start that died before its copy committed: OLAP has nothing of
                // this slot, so it is safe to start over.
                if s.active {
                    return Err(ConnError::Server {
                        code: "55006".into(),
                        message: format!(
                            "replication slot {:?} is active in another process",
                            cfg.slot
                        ),
                    }
                    .into());
                }
                tracing::info!(slot = %cfg.slot, "slot has no checkpoint in OLAP; recreating it for a fresh initial copy");
                slot::drop_if_exists(&mut oltp, &cfg.slot).await?;
            }
            first_start(cfg, &mut conn, &mut oltp, &olap, &mut catalog, false).await?
        }
    };
    drop(oltp);
    conn.start_copy_both(&slot::start_sql(&cfg.slot, start, &cfg.publication))
        .await?;
    tracing::info!(slot = %cfg.slot, from = %start, "streaming");
    telemetry.checkpoint(start);
    telemetry.set_role(Role::Streaming);
    Streamer {
        cfg,
        telemetry: telemetry.clone(),
        heartbeat: None,
        olap,
        conn,
        catalog,
        batcher: Batcher::new(cfg.limits),
        relations: RelationCache::new(),
        sources: HashMap::new(),
        session: None,
        flushed: start,
        received: start,
        applied_to: start,
    }
    .run(shutdown)
    .await
}

async fn first_start(
    cfg: &ReplicatorConfig,
    conn: &mut ReplicationConnection,
    oltp: &mut PgConnection,
    olap: &PgPool,
    catalog: &mut Catalog,
    reset: bool,
) -> Result<Lsn, ReplicatorError> {
    let created = slot::create_exported(conn, &cfg.slot).await?;
    tracing::info!(slot = %cfg.slot, consistent_point = %created.consistent_point,
        "slot created; copying the published tables");
    let t0 = Instant::now();
    let mut session = ApplySession::begin(olap).await?;
    if reset {
        crate::replay::reset_replica_and_star(session.conn())
            .await
            .map_err(ApplyError::from)?;
        checkpoint::clear(session.conn(), &cfg.slot)
            .await
            .map_err(ApplyError::from)?;
    }
    let stats = snapshot::copy_published(
        oltp,
        &mut session,
        catalog,
        &cfg.publication,
        Some(&created.snapshot_name),
        created.consistent_point,
    )
    .await?;
    session
        .commit(&cfg.slot, created.consistent_point, None)
        .await?;
    tracing::info!(
        tables = stats.tables,
        rows = stats.rows,
        seconds = t0.elapsed().as_secs_f64(),
        "initial copy committed"
    );
    Ok(created.consistent_point)
}

/// `brewlytics resync`: drop the slot, then copy the source again into emptied replica and
/// star tables under a new slot's snapshot, in one OLAP transaction. The journal keeps its
/// history; the copy is journaled (op `r`) at the new slot's consistent point. Refuses while
/// a replicator streams from the slot.
pub async fn resync(cfg: &ReplicatorConfig) -> Result<Lsn, ReplicatorError> {
    slot::validate_name("slot name", &cfg.slot).map_err(ReplicatorError::Fatal)?;
    slot::validate_name("publication", &cfg.publication).map_err(ReplicatorError::Fatal)?;
    let olap = olap_pool(&cfg.olap_url).await?;
    let mut oltp = PgConnection::connect_with(&cfg.oltp_url.connect_options()?).await?;
    if let Some(s) = slot::info(&mut oltp, &cfg.slot).await? {
        if s.active {
            return Err(ReplicatorError::Fatal(format!(
                "replication slot {:?} is in use by process {}: stop the replicator first",
                cfg.slot,
                s.active_pid.unwrap_or_default()
            )));
        }
        slot::drop_if_exists(&mut oltp, &cfg.slot).await?;
    }
    let repl_cfg = ReplicationConfig::from_url(&cfg.oltp_url)?;
    let mut conn = ReplicationConnection::connect(&repl_cfg).await?;
    let mut catalog = Catalog::default();
    let lsn = first_start(cfg, &mut conn, &mut oltp, &olap, &mut catalog, true).await?;
    conn.close().await;
    Ok(lsn)
}

struct Streamer<'a> {
    cfg: &'a ReplicatorConfig,
    telemetry: Arc<Telemetry>,
    /// The newest of this process's heartbeats in the batch being built.
    heartbeat: Option<u64>,
    olap: PgPool,
    conn: ReplicationConnection,
    catalog: Catalog,
    batcher: Batcher,
    relations: RelationCache,
    sources: HashMap<u32, SourceTable>,
    session: Option<ApplySession>,
    /// Durable in OLAP: what we report as flushed.
    flushed: Lsn,
    /// The furthest WAL position the server told us about.
    received: Lsn,
    /// The checkpoint: transactions committed before it are skipped.
    applied_to: Lsn,
}

impl Streamer<'_> {
    async fn run(mut self, shutdown: &mut watch::Receiver<bool>) -> Result<(), ReplicatorError> {
        let mut next_status = Instant::now() + self.cfg.status_interval;
        loop {
            let wake = self
                .batcher
                .deadline()
                .map_or(next_status, |d| d.min(next_status));
            // The timer only wins when the stream has nothing ready (biased order).
            let stream_idle = tokio::select! {
                biased;
                _ = shutdown.changed() => {
                    return self.finish().await;
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
                self.commit_batch().await?;
            }
            if now >= next_status {
                self.send_status(false).await?;
                next_status = now + self.cfg.status_interval;
            }
        }
    }

    async fn handle(&mut self, bytes: bytes::Bytes) -> Result<(), ReplicatorError> {
        match ReplicationMessage::parse(&bytes)? {
            ReplicationMessage::XLogData { wal_end, data, .. } => {
                self.received = self.received.max(wal_end);
                let msg = decode(&data)?;
                self.message(msg).await?;
                if let Some(chunk) = self.batcher.take_chunk_if_full() {
                    let session = match self.session.as_mut() {
                        Some(s) => s,
                        None => self.session.insert(ApplySession::begin(&self.olap).await?),
                    };
                    session
                        .apply(&mut self.catalog, &chunk, self.cfg.on_error)
                        .await?;
                }
            }
            ReplicationMessage::PrimaryKeepalive {
                wal_end,
                reply_requested,
                ..
            } => {
                self.received = self.received.max(wal_end);
                if self.batcher.is_idle() && self.session.is_none() {
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

    async fn message(&mut self, msg: PgOutputMessage) -> Result<(), ReplicatorError> {
        match msg {
            PgOutputMessage::Begin(b) => self.batcher.begin(
                TxContext {
                    lsn: b.final_lsn,
                    xid: b.xid,
                    commit_ts: b.commit_ts,
                },
                self.applied_to,
            ),
            PgOutputMessage::Commit(c) => {
                let skipped = self
                    .batcher
                    .commit(c.end_lsn, c.commit_time(), Instant::now());
                if skipped && self.batcher.is_idle() && self.session.is_none() {
                    self.flushed = self.flushed.max(c.end_lsn);
                }
            }
            PgOutputMessage::Relation(r) => {
                let shape = match self.session.as_mut() {
                    Some(s) => self.catalog.ensure(s.conn(), &r).await,
                    None => {
                        let mut c = self.olap.acquire().await.map_err(ApplyError::from)?;
                        self.catalog.ensure(&mut c, &r).await
                    }
                }
                .map_err(ApplyError::from)?;
                let key_positions = shape
                    .primary_key
                    .iter()
                    .filter_map(|k| r.columns.iter().position(|c| &c.name == k))
                    .collect();
                self.sources.insert(
                    r.id,
                    SourceTable {
                        schema: Arc::from(r.namespace.as_str()),
                        table: Arc::from(r.name.as_str()),
                        key_positions,
                    },
                );
                self.relations.update(r);
            }
            PgOutputMessage::Insert(i) => {
                self.row(i.relation_id, Op::Insert, None, Some(&i.new))?;
            }
            PgOutputMessage::Update(u) => {
                self.row(u.relation_id, Op::Update, u.old.as_ref(), Some(&u.new))?;
            }
            PgOutputMessage::Delete(d) => {
                self.row(d.relation_id, Op::Delete, Some(&d.old), None)?;
            }
            PgOutputMessage::Truncate(t) => {
                for id in &t.relation_ids {
                    let Some((ctx, seq)) = self.batcher.next_change() else {
                        continue;
                    };
                    let src = self.source(*id)?;
                    let e = truncate_event(
                        ctx,
                        seq,
                        src.schema.clone(),
                        src.table.clone(),
                        t.cascade(),
                        t.restart_identity(),
                    );
                    self.batcher.push(e);
                }
            }
            PgOutputMessage::Message(m) => {
                if m.transactional
                    && m.prefix == heartbeat::PREFIX
                    && self.batcher.next_change_would_apply()
                {
                    if let Some(seq) = self.telemetry.heartbeat_seq(&m.content) {
                        self.heartbeat = Some(self.heartbeat.map_or(seq, |h| h.max(seq)));
                    }
                }
            }
            PgOutputMessage::Origin(_) | PgOutputMessage::Type(_) => {}
        }
        Ok(())
    }

    fn source(&self, relation_id: u32) -> Result<&SourceTable, ReplicatorError> {
        self.sources.get(&relation_id).ok_or_else(|| {
            ReplicatorError::Fatal(format!(
                "change for relation {relation_id} before its Relation message"
            ))
        })
    }

    fn row(
        &mut self,
        relation_id: u32,
        op: Op,
        old: Option<&crate::decode::OldTuple>,
        new: Option<&crate::decode::TupleData>,
    ) -> Result<(), ReplicatorError> {
        let Some((ctx, seq)) = self.batcher.next_change() else {
            return Ok(());
        };
        let missing = || {
            ReplicatorError::Fatal(format!(
                "change for relation {relation_id} before its Relation message"
            ))
        };
        let rel = self.relations.get(relation_id).ok_or_else(missing)?;
        // Field borrows, not `self.source()`: the batcher is pushed to while `source` is held.
        let source = self.sources.get(&relation_id).ok_or_else(missing)?;
        if op == Op::Update {
            // The old key only comes with an UPDATE that changed the key (or with REPLICA
            // IDENTITY FULL): a changed key is a delete and an insert.
            if let Some([delete, insert]) =
                key_change_events(ctx, (seq, seq + 1), &rel, source, old, new)
            {
                let _ = self.batcher.next_change();
                self.batcher.push(delete);
                self.batcher.push(insert);
                return Ok(());
            }
        }
        let e = row_event(ctx, seq, &rel, source, op, old, new);
        self.batcher.push(e);
        Ok(())
    }

    async fn commit_batch(&mut self) -> Result<(), ReplicatorError> {
        let Some((events, mark, txs)) = self.batcher.take_batch() else {
            return Ok(());
        };
        let span = tracing::info_span!("batch", transactions = txs, checkpoint = %mark.end_lsn);
        let session = self.session.take();
        let (total, started, totals) = async {
            let mut session = match session {
                Some(s) => s,
                None => ApplySession::begin(&self.olap).await?,
            };
            session
                .apply(&mut self.catalog, &events, self.cfg.on_error)
                .await?;
            let total = session.events();
            let started = session.started;
            let totals = session
                .commit(&self.cfg.slot, mark.end_lsn, mark.commit_ts)
                .await?;
            Ok::<_, ReplicatorError>((total, started, totals))
        }
        .instrument(span)
        .await?;
        let elapsed = started.elapsed();
        self.flushed = self.flushed.max(mark.end_lsn);
        self.applied_to = self.applied_to.max(mark.end_lsn);
        self.telemetry
            .batch_applied(&totals, txs, elapsed, mark.end_lsn);
        if let Some(seq) = self.heartbeat.take() {
            self.telemetry.heartbeat_applied(seq);
        }
        tracing::debug!(transactions = txs, changes = total, dead_letters = totals.dead_letters,
            checkpoint = %mark.end_lsn, ms = elapsed.as_millis() as u64, "batch applied");
        self.send_status(false).await
    }

    async fn send_status(&mut self, reply: bool) -> Result<(), ReplicatorError> {
        let now = chrono_to_pg_timestamp(chrono::Utc::now());
        let msg = standby_status_update(self.received, self.flushed, self.flushed, now, reply);
        self.conn.send_copy_data(msg).await?;
        Ok(())
    }

    /// Shutdown: commit what is complete, roll back a partial transaction (the server sends
    /// it again), report the final position, close.
    async fn finish(mut self) -> Result<(), ReplicatorError> {
        if !self.batcher.in_transaction() {
            self.commit_batch().await?;
        }
        self.session = None;
        self.send_status(false).await?;
        tracing::info!(flushed = %self.flushed, "replicator stopped");
        self.conn.close().await;
        Ok(())
    }
}
