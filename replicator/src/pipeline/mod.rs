//! The replicator daemon's pipeline: a reader (stream → decode → batch → encode) and an
//! applier (the OLAP sink: apply → commit → report) that run at the same time, the next batch
//! read and encoded while the current one is applied; commits stay in order and the flush
//! position reported to the source is the last one OLAP committed. Reconnects with backoff on
//! transient errors; stops on the others, saying what to do.

pub mod read;

use std::sync::Arc;
use std::time::{Duration, Instant};

use sqlx::{Connection, PgConnection};
use tokio::sync::{mpsc, watch};
use tracing::Instrument;

use crate::checkpoint;
use crate::config::ReplicatorConfig;
use crate::error::ReplicatorError;
use crate::lsn::Lsn;
use crate::schema::{store, Tracker};
use crate::sink::nats::{publish, NatsSink};
use crate::sink::olap::{journal, ApplyError, OlapWriter};
use crate::sink::{OlapSink, Sink};
use crate::slot;
use crate::source::backfill::{self, WorkerConfig};
use crate::source::checks;
use crate::source::snapshot;
use crate::stream::config::ReplicationConfig;
use crate::stream::conn::{ConnError, ReplicationConnection};
use crate::telemetry::{Role, Telemetry};
use read::{Applied, Reader, Work};

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
    cfg.validate()?;
    let mut retry = cfg.retry.start();
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
                retry.after_attempt(started.elapsed());
                tracing::warn!(error = %e, kind = e.kind(), retry_in_ms = retry.delay().as_millis() as u64,
                    "replication interrupted; reconnecting");
                if !retry.wait(&mut shutdown).await {
                    return Ok(());
                }
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
    writer.journal_apart(&cfg.olap_url).await?;
    tracing::debug!("loading the replica's tables");
    let tracker = Tracker::new(store::load(writer.conn()).await?);
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
/// every change of it — then reported.
async fn apply_loop(
    mut olap: OlapSink,
    mut nats: Option<NatsSink>,
    mut work: mpsc::Receiver<Work>,
    applied: watch::Sender<Applied>,
    telemetry: Arc<Telemetry>,
    slot: String,
) -> Result<(), ReplicatorError> {
    while let Some(w) = work.recv().await {
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
                let elapsed = totals.elapsed;
                telemetry.batch_applied(&totals, transactions, mark.end_lsn);
                if let Some(seq) = heartbeat {
                    telemetry.heartbeat_applied(seq);
                }
                tracing::debug!(transactions, changes = totals.events,
                    dead_letters = totals.dead_letters, checkpoint = %mark.end_lsn,
                    ms = elapsed.as_millis() as u64, "batch applied");
                applied.send_modify(|a| {
                    a.lsn = a.lsn.max(mark.end_lsn);
                    a.batches += 1;
                });
            }
        }
    }
    // The reader stopped in the middle of a source transaction: it is sent again.
    if let Some(p) = nats.as_mut() {
        p.abandon().await?;
    }
    olap.abandon().await?;
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
    cfg.validate()?;
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
