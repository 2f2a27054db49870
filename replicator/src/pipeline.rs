//! The replicator daemon's pipeline: a reader (stream → decode → batch → encode) and an
//! applier (the OLAP sink: apply → commit → report) that run at the same time, the next batch
//! read and encoded while the current one is applied; commits stay in order and the flush
//! position reported to the source is the last one OLAP committed. Reconnects with backoff on
//! transient errors; stops on the others, saying what to do.

use std::sync::Arc;
use std::time::{Duration, Instant};

use sqlx::{Connection, PgConnection};
use tokio::sync::{mpsc, watch};
use tracing::Instrument;

use crate::batch::BatchLimits;
use crate::checkpoint;
use crate::daemon::telemetry::{Role, Telemetry};
use crate::decode::DecodeError;
use crate::flush::{self, Durable, OlapCommit};
use crate::lsn::Lsn;
use crate::schema::{store, SchemaError, Tracker};
use crate::sink::nats::envelope::Origin;
use crate::sink::nats::{publish, NatsConfig, NatsError, NatsSink};
use crate::sink::olap::{journal, ApplyError, OlapWriter, OnError};
use crate::sink::{OlapSink, Sink};
use crate::slot;
use crate::source::backfill::{self, WorkerConfig};
use crate::source::checks;
use crate::source::reader::{Applied, Reader, Work};
use crate::source::snapshot::{self, SnapshotError};
use crate::stream::config::{ConfigError, ReplicationConfig};
use crate::stream::conn::{ConnError, ReplicationConnection};
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
    /// Rows per backfill chunk.
    pub backfill_chunk_rows: i64,
    /// Also publish every change to NATS JetStream (beside OLAP, acknowledged before OLAP
    /// commits).
    pub nats: Option<NatsConfig>,
    /// Tables copied at the same time by a first start or `resync`.
    pub copy_workers: usize,
    /// What becomes of a detached or dropped partition's rows in the replica.
    pub partition_detach: crate::schema::partitions::DetachPolicy,
    /// How each batch's OLAP transaction commits (see [`crate::flush`]).
    pub olap_commit: crate::flush::OlapCommit,
}

impl ReplicatorConfig {
    /// Where published changes say they come from, when they are published.
    pub fn nats_origin(&self) -> Option<Origin> {
        self.nats.as_ref().map(|n| Origin {
            prefix: n.prefix.clone(),
            slot: self.slot.clone(),
            db: self.oltp_url.database().to_owned(),
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ReplicatorError {
    #[error("{0}")]
    Fatal(String),
    /// The OLAP writer ended (its own error says why).
    #[error("the OLAP writer stopped")]
    WriterGone,
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
    #[error(transparent)]
    Schema(#[from] SchemaError),
    #[error("database: {}", crate::redact::db_error(.0))]
    Sql(#[from] sqlx::Error),
    #[error(transparent)]
    Nats(#[from] NatsError),
}

impl ReplicatorError {
    /// Errors worth waiting out (a database restarting, a network cut, the slot held by a
    /// process that is going away); others would only repeat.
    pub fn is_retryable(&self) -> bool {
        use crate::redact::{classify, Class};
        match self {
            Self::Fatal(_) | Self::Config(_) | Self::Decode(_) => false,
            Self::WriterGone => true,
            Self::Apply(e) => e.is_retryable(),
            Self::Snapshot(
                SnapshotError::Malformed { .. } | SnapshotError::Unstreamable { .. },
            ) => false,
            Self::Snapshot(SnapshotError::Apply(e)) => e.is_retryable(),
            Self::Snapshot(SnapshotError::Source(e)) => classify(e) == Class::Transient,
            Self::Schema(SchemaError::Catalog { source, .. }) => {
                classify(source) == Class::Transient
            }
            Self::Stream(ConnError::Auth(_) | ConnError::Tls(_)) => false,
            Self::Stream(ConnError::Server { code, .. }) => {
                crate::redact::classify_code(code) == Class::Transient
            }
            Self::Sql(e) => classify(e) == Class::Transient,
            Self::Nats(e) => e.is_retryable(),
            _ => true,
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Self::Fatal(_) => "fatal",
            Self::WriterGone => "olap",
            Self::Config(_) => "config",
            Self::Stream(_) => "stream",
            Self::Decode(_) => "decode",
            Self::Apply(e) => e.kind(),
            Self::Snapshot(_) => "snapshot",
            Self::Schema(_) => "schema",
            Self::Sql(_) => "database",
            Self::Nats(_) => "nats",
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
    slot::validate_publications(&cfg.publication).map_err(ReplicatorError::Fatal)?;
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
                tracing::error!(error = %e, kind = e.kind(), "replication stopped");
                report(&telemetry, &e);
                return Err(e);
            }
            Err(e) => {
                report(&telemetry, &e);
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

/// An error that interrupted replication, counted (and a NATS one in `brewlytics_nats_*`).
fn report(telemetry: &Telemetry, e: &ReplicatorError) {
    telemetry.error(e.kind(), e.to_string());
    if let ReplicatorError::Nats(n) = e {
        telemetry.nats.error(n.kind(), n.to_string());
    }
}

/// One connection's life: set up, stream until shutdown or error.
async fn session(
    cfg: &ReplicatorConfig,
    telemetry: &Arc<Telemetry>,
    shutdown: &mut watch::Receiver<bool>,
) -> Result<(), ReplicatorError> {
    let mut writer = OlapWriter::connect(&cfg.olap_url, cfg.on_error).await?;
    let mut oltp = PgConnection::connect_with(&cfg.oltp_url.connect_options()?).await?;
    let checkpoint = checkpoint::load(writer.conn(), &cfg.slot).await?;
    let unfinished_copy = snapshot::abandoned(writer.conn(), &cfg.slot)
        .await
        .map_err(ApplyError::from)?;
    checks::source_ready(&mut oltp, &cfg.publication, checkpoint.is_none()).await?;
    let existing = slot::info(&mut oltp, &cfg.slot).await?;
    let repl_cfg = ReplicationConfig::from_url(&cfg.oltp_url)?;
    let mut conn = ReplicationConnection::connect(&repl_cfg).await?;
    let mut publisher = match (&cfg.nats, cfg.nats_origin()) {
        (Some(n), Some(origin)) => {
            let mut p = NatsSink::connect(n, origin, telemetry.nats.clone()).await?;
            p.load_committed(writer.conn()).await?;
            p.resume(checkpoint.as_ref().map(|c| c.lsn)).await?;
            Some(p)
        }
        _ => None,
    };

    let start = match (existing, checkpoint) {
        (Some(_), Some(cp)) if unfinished_copy.is_some() => {
            return Err(ReplicatorError::Fatal(format!(
                "a copy of the source for slot {:?} (resync) started at {} and never committed: \
                 OLAP holds the copy before it, up to {}, and the slot made for the new copy \
                 cannot continue from there; run `brewlytics resync` again",
                cfg.slot,
                unfinished_copy.unwrap_or_default(),
                cp.lsn
            )))
        }
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
            let t = telemetry.clone();
            let log = copy_logger();
            let progress = move |p: &snapshot::CopyProgress| {
                t.copy_progress(
                    "initial",
                    &p.table,
                    p.rows as i64,
                    p.estimate,
                    Some(p.rows_per_second),
                );
                log(p);
            };
            let lsn = first_start(
                cfg,
                &mut conn,
                &mut oltp,
                &mut writer,
                false,
                &progress,
                publisher.as_mut(),
            )
            .await?;
            telemetry.copy_idle();
            lsn
        }
    };
    // From here the journal is written on its own connection, beside each batch's transaction;
    // rows it wrote for a batch that never committed are deleted first.
    let ahead = journal::delete_past_checkpoint(writer.conn(), &cfg.slot, start)
        .await
        .map_err(ApplyError::from)?
        .map_err(|now| {
            ApplyError::JournalAhead(format!(
                "the checkpoint moved from {start} to {now} as this session started"
            ))
        })?;
    if ahead > 0 {
        tracing::info!(rows = ahead, checkpoint = %start,
            "journal rows of a batch that never committed deleted; the stream sends them again");
    }
    writer.set_commit_mode(cfg.olap_commit);
    writer.journal_apart(&cfg.olap_url).await?;
    tracing::debug!("loading the replica's tables");
    let tracker = Tracker::new(store::load(writer.conn()).await?)
        .publishing(slot::publication_names(&cfg.publication))
        .following(crate::sink::olap::partitions::load(writer.conn()).await?);
    tracing::debug!(tables = tracker.applied().count(), "starting the stream");
    warn_unidentified(&tracker);
    conn.start_copy_both(&slot::start_sql(&cfg.slot, start, &cfg.publication))
        .await?;
    tracing::info!(slot = %cfg.slot, from = %start, "streaming");
    telemetry.checkpoint(start);
    telemetry.set_role(Role::Streaming);

    let (work_tx, work_rx) = mpsc::channel::<Work>(1);
    let (applied_tx, applied_rx) = watch::channel(Applied {
        lsn: start,
        batches: 0,
    });
    let mut applier = tokio::spawn(apply_loop(
        OlapSink {
            writer,
            slot: cfg.slot.clone(),
        },
        publisher,
        work_rx,
        applied_tx,
        cfg.olap_commit,
        telemetry.clone(),
        cfg.slot.clone(),
    ));
    let (stop_worker, worker_stop) = watch::channel(false);
    let worker = tokio::spawn(backfill::run(
        WorkerConfig {
            oltp_url: cfg.oltp_url.clone(),
            olap_url: cfg.olap_url.clone(),
            publication: cfg.publication.clone(),
            chunk_rows: cfg.backfill_chunk_rows,
        },
        telemetry.clone(),
        worker_stop,
    ));
    let mut reader = Reader::new(
        cfg,
        telemetry.clone(),
        conn,
        oltp,
        tracker,
        start,
        applied_rx,
        work_tx,
    );
    let read = tokio::select! {
        r = reader.run(shutdown) => r,
        r = &mut applier => Err(applier_end(r)),
    };
    let _ = stop_worker.send(true);
    worker.abort();
    match read {
        Ok(()) => {
            // Shutdown: the applier finishes what it was handed, then the last position is
            // reported.
            let done = finish_applier(&mut reader, applier).await;
            reader.finish().await?;
            done
        }
        Err(ReplicatorError::WriterGone) => match applier.await {
            Ok(Err(e)) => Err(e),
            _ => Err(ReplicatorError::WriterGone),
        },
        Err(e) => {
            // Gone before the next session reads the checkpoint (its connections closed).
            if !applier.is_finished() {
                applier.abort();
                let _ = applier.await;
            }
            Err(e)
        }
    }
}

async fn finish_applier(
    reader: &mut Reader<'_>,
    applier: tokio::task::JoinHandle<Result<(), ReplicatorError>>,
) -> Result<(), ReplicatorError> {
    reader.close_work();
    match applier.await {
        Ok(r) => r,
        Err(e) => Err(ReplicatorError::Fatal(format!(
            "the OLAP writer failed: {e}"
        ))),
    }
}

fn applier_end(r: Result<Result<(), ReplicatorError>, tokio::task::JoinError>) -> ReplicatorError {
    match r {
        Ok(Err(e)) => e,
        Ok(Ok(())) => ReplicatorError::WriterGone,
        Err(e) => ReplicatorError::Fatal(format!("the OLAP writer failed: {e}")),
    }
}

/// The applier: each piece of work into OLAP, in order, and published when the changes are
/// also published; each batch committed with its checkpoint — after JetStream acknowledged
/// every change of it — then reported once durable (at once when commits are synchronous,
/// once OLAP's WAL flush has passed the commit when they are not: [`crate::flush`]).
async fn apply_loop(
    mut olap: OlapSink,
    mut nats: Option<NatsSink>,
    mut work: mpsc::Receiver<Work>,
    applied: watch::Sender<Applied>,
    mode: OlapCommit,
    telemetry: Arc<Telemetry>,
    slot: String,
) -> Result<(), ReplicatorError> {
    let mut durable = Durable::new(mode, applied);
    loop {
        let w = tokio::select! {
            w = work.recv() => w,
            _ = tokio::time::sleep(flush::POLL), if durable.waiting() => {
                durable.poll(&mut olap.writer).await?;
                continue;
            }
        };
        let Some(w) = w else { break };
        match w {
            Work::Chunk {
                encoded,
                nats: part,
            } => {
                let span = tracing::info_span!("chunk", first = ?encoded.first.map(|p| p.to_string()),
                    changes = encoded.changes);
                async {
                    // Part of a transaction: its star work waits for the transaction's last
                    // part (the batch that commits it).
                    olap.writer.apply_chunk(&encoded).await?;
                    if let (Some(p), Some(part)) = (nats.as_mut(), &part) {
                        p.write_items(olap.writer.conn(), part).await?;
                    }
                    Ok::<_, ReplicatorError>(())
                }
                .instrument(span)
                .await?;
            }
            Work::Batch {
                encoded,
                nats: part,
                mark,
                transactions,
                heartbeat,
            } => {
                let span = tracing::info_span!("batch", transactions, checkpoint = %mark.end_lsn,
                    changes = encoded.changes);
                let totals = async {
                    olap.write(&encoded).await?;
                    if let (Some(p), Some(part)) = (nats.as_mut(), &part) {
                        p.write_items(olap.writer.conn(), part).await?;
                        // Every change of the batch is in JetStream before OLAP commits.
                        let published = p.commit(&mark).await?;
                        publish::record(
                            olap.writer.conn(),
                            &slot,
                            p.stream_name(),
                            published.stream_seq,
                        )
                        .await
                        .map_err(ApplyError::from)?;
                    }
                    Ok::<_, ReplicatorError>(olap.commit(&mark).await?)
                }
                .instrument(span)
                .await?;
                let elapsed = olap.writer.started.map(|s| s.elapsed()).unwrap_or_default();
                telemetry.batch_applied(&totals, transactions, elapsed, mark.end_lsn);
                if let Some(seq) = heartbeat {
                    telemetry.heartbeat_applied(seq);
                }
                tracing::debug!(transactions, changes = totals.events,
                    dead_letters = totals.dead_letters, checkpoint = %mark.end_lsn,
                    ms = elapsed.as_millis() as u64, "batch applied");
                durable.committed(&olap.writer, mark.end_lsn);
            }
        }
    }
    // The reader stopped in the middle of a source transaction: it is sent again.
    if let Some(p) = nats.as_mut() {
        p.abandon().await?;
    }
    olap.abandon().await?;
    durable.drain(&mut olap.writer).await?;
    Ok(())
}

/// Tables whose UPDATE and DELETE the source refuses while they are published: said once.
fn warn_unidentified(tracker: &Tracker) {
    for t in tracker.applied() {
        if !t.updates_identified() {
            tracing::warn!(table = %t.qualified_source(),
                "table has no primary key and REPLICA IDENTITY DEFAULT: the source refuses its UPDATEs and DELETEs while it is published; set REPLICA IDENTITY FULL (or add a primary key)");
        }
    }
}

/// Logs a copy's progress: every 5 s and when a table is done.
pub fn copy_logger() -> impl Fn(&snapshot::CopyProgress) + Send + Sync {
    let last = std::sync::Mutex::new(Instant::now());
    move |p: &snapshot::CopyProgress| {
        let mut last = last.lock().unwrap_or_else(|e| e.into_inner());
        if !p.done && last.elapsed() < Duration::from_secs(5) {
            return;
        }
        *last = Instant::now();
        tracing::info!(table = %p.table, rows = p.rows, rows_estimate = p.estimate.unwrap_or(0),
            rows_per_second = p.rows_per_second.round(), eta_seconds = p.eta_seconds().map(|e| e.round()),
            done = p.done, "initial copy");
    }
}

async fn first_start(
    cfg: &ReplicatorConfig,
    conn: &mut ReplicationConnection,
    oltp: &mut PgConnection,
    writer: &mut OlapWriter,
    reset: bool,
    progress: snapshot::OnProgress<'_>,
    publisher: Option<&mut NatsSink>,
) -> Result<Lsn, ReplicatorError> {
    if let Some(lsn) = snapshot::clean_abandoned(writer.conn(), &cfg.slot)
        .await
        .map_err(ApplyError::from)?
    {
        tracing::info!(slot = %cfg.slot, %lsn, "journal rows of a copy that never committed deleted");
    }
    let created = slot::create_exported(conn, &cfg.slot).await?;
    tracing::info!(slot = %cfg.slot, consistent_point = %created.consistent_point,
        "slot created; copying the published tables");
    let t0 = Instant::now();
    writer.begin().await?;
    if reset {
        if let Some(cp) = checkpoint::load(writer.conn(), &cfg.slot)
            .await
            .map_err(ApplyError::from)?
        {
            journal::delete_after(writer.conn(), cp.lsn)
                .await
                .map_err(ApplyError::from)?;
        }
        crate::replay::reset_replica_and_star(writer.conn())
            .await
            .map_err(ApplyError::from)?;
        checkpoint::clear(writer.conn(), &cfg.slot)
            .await
            .map_err(ApplyError::from)?;
    }
    let setup = snapshot::CopySetup {
        oltp_url: cfg.oltp_url.clone(),
        olap_url: cfg.olap_url.clone(),
        slot: cfg.slot.clone(),
        workers: cfg.copy_workers,
    };
    let stats = snapshot::copy_published(
        oltp,
        writer,
        &setup,
        &cfg.publication,
        &created.snapshot_name,
        created.consistent_point,
        progress,
    )
    .await?;
    if let Some(p) = publisher {
        // The copy, as journaled, is in JetStream before OLAP commits it.
        let copied = p
            .write_copy(writer.conn(), created.consistent_point)
            .await?;
        let mark = crate::batch::CommitMark {
            end_lsn: created.consistent_point,
            commit_ts: None,
        };
        let published = p.commit(&mark).await?;
        publish::record(
            writer.conn(),
            &cfg.slot,
            p.stream_name(),
            published.stream_seq,
        )
        .await
        .map_err(ApplyError::from)?;
        tracing::info!(
            messages = copied,
            stream_seq = published.stream_seq,
            "initial copy published"
        );
    }
    writer
        .commit(&cfg.slot, created.consistent_point, None)
        .await?;
    tracing::info!(
        tables = stats.tables,
        rows = stats.rows,
        dead_letters = stats.dead_letters,
        seconds = t0.elapsed().as_secs_f64(),
        "initial copy committed"
    );
    Ok(created.consistent_point)
}

/// `brewlytics resync`: drop the slot, then copy the source again into emptied replica and
/// star tables under a new slot's snapshot, in one OLAP transaction. The journal keeps its
/// history; the copy is journaled (op `r`) at the new slot's consistent point. Refuses while
/// a replicator streams from the slot.
pub async fn resync(
    cfg: &ReplicatorConfig,
    progress: snapshot::OnProgress<'_>,
) -> Result<Lsn, ReplicatorError> {
    slot::validate_name("slot name", &cfg.slot).map_err(ReplicatorError::Fatal)?;
    slot::validate_publications(&cfg.publication).map_err(ReplicatorError::Fatal)?;
    let mut writer = OlapWriter::connect(&cfg.olap_url, cfg.on_error).await?;
    let mut oltp = PgConnection::connect_with(&cfg.oltp_url.connect_options()?).await?;
    checks::source_ready(&mut oltp, &cfg.publication, true).await?;
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
    let lsn = first_start(cfg, &mut conn, &mut oltp, &mut writer, true, progress, None).await?;
    conn.close().await;
    Ok(lsn)
}
