//! One session: connections made, the start decided (and the first start's copy made when
//! there is nothing yet), then the reader, the applier and the backfill worker run until
//! shutdown or an error.

use std::sync::Arc;

use sqlx::{Connection, PgConnection};
use tokio::sync::{mpsc, watch};

use super::apply::{self, Sinks};
use super::durable::Durable;
use super::first_start;
use super::read::{Applied, Reader, Streams, Work};
use super::start::{self, Refusal, Start};
use crate::checkpoint;
use crate::config::ReplicatorConfig;
use crate::error::ReplicatorError;
use crate::schema::{store, Tracker};
use crate::sink::nats::NatsSink;
use crate::sink::olap::{ApplyError, OlapSink};
use crate::sink::PrimarySink;
use crate::slot;
use crate::source::backfill::WorkerConfig;
use crate::source::checks;
use crate::source::snapshot;
use crate::source::worker;
use crate::spool::Spools;
use crate::stream::config::ReplicationConfig;
use crate::stream::conn::{ConnError, ReplicationConnection};
use crate::telemetry::{Role, Telemetry};

/// The sinks of a replicator: OLAP, and NATS beside it with `--sink nats`.
type ReplicatorSinks = Sinks<OlapSink, Option<NatsSink>>;

/// One connection's life: set up, stream until shutdown or error.
pub(super) async fn run(
    cfg: &ReplicatorConfig,
    telemetry: &Arc<Telemetry>,
    shutdown: &mut watch::Receiver<bool>,
) -> Result<(), ReplicatorError> {
    let mut olap = OlapSink::connect(&cfg.olap_url, &cfg.slot, cfg.on_error).await?;
    let mut oltp = PgConnection::connect_with(&cfg.oltp_url.connect_options()?).await?;
    let writer = olap.writer();
    let checkpoint = checkpoint::load(writer.conn(), &cfg.slot)
        .await?
        .map(|c| c.lsn);
    let unfinished_copy = snapshot::abandoned(writer.conn(), &cfg.slot)
        .await
        .map_err(ApplyError::from)?;
    checks::source_ready(&mut oltp, &cfg.publication, checkpoint.is_none()).await?;
    let existing = slot::info(&mut oltp, &cfg.slot).await?;
    let repl_cfg = ReplicationConfig::from_url(&cfg.oltp_url)?;
    let mut conn = ReplicationConnection::connect(&repl_cfg).await?;
    let nats = match (&cfg.nats, cfg.nats_origin()) {
        (Some(n), Some(origin)) => {
            Some(NatsSink::connect(n, origin, telemetry.nats.clone()).await?)
        }
        _ => None,
    };
    let mut sinks = Sinks::new(olap, nats);
    sinks.resume_secondary(checkpoint).await?;

    let start = match start::decide(&cfg.slot, existing.as_ref(), checkpoint, unfinished_copy)
        .map_err(refused)?
    {
        Start::Resume(lsn) => lsn,
        Start::FirstStart { drop_slot } => {
            if drop_slot {
                // A first start that died before its copy committed: OLAP has nothing of
                // this slot, so it is safe to start over.
                tracing::info!(slot = %cfg.slot, "slot has no checkpoint in OLAP; recreating it for a fresh initial copy");
                slot::drop_if_exists(&mut oltp, &cfg.slot).await?;
            }
            let lsn = first_start::copy(cfg, &mut conn, &mut oltp, &mut sinks, telemetry).await?;
            telemetry.copy_idle();
            lsn
        }
    };
    // From here batches commit as configured (the first start's copy waited for the disk).
    sinks.primary.writer().set_commit_mode(cfg.olap_commit);
    sinks.primary.resume(start).await?;
    let writer = sinks.primary.writer();
    tracing::debug!("loading the replica's tables");
    let tracker = Tracker::new(store::load(writer.conn()).await?)
        .publishing(slot::publication_names(&cfg.publication))
        .following(crate::sink::olap::partitions::load(writer.conn()).await?);
    tracing::debug!(tables = tracker.applied().count(), "starting the stream");
    warn_unidentified(&tracker);
    let streaming = streaming(cfg, &mut oltp).await?;
    let streams = match streaming {
        slot::Streaming::On => Some(Streams::new(Spools::open(cfg.spool_dir())?)),
        slot::Streaming::Off => None,
    };
    conn.start_copy_both(&slot::start_sql(
        &cfg.slot,
        start,
        &cfg.publication,
        streaming,
    ))
    .await?;
    tracing::info!(slot = %cfg.slot, from = %start, in_progress = streaming == slot::Streaming::On, "streaming");
    telemetry.streaming_in_progress(streaming == slot::Streaming::On);
    telemetry.checkpoint(start);
    telemetry.set_role(Role::Streaming);
    let session = Session {
        sinks,
        conn,
        oltp,
        tracker,
        start,
        streams,
    };
    stream(cfg, telemetry, shutdown, session).await
}

/// `--streaming on` where the source can (PostgreSQL 14 and later; said once when not).
async fn streaming(
    cfg: &ReplicatorConfig,
    oltp: &mut PgConnection,
) -> Result<slot::Streaming, ReplicatorError> {
    if cfg.streaming == slot::Streaming::Off {
        return Ok(slot::Streaming::Off);
    }
    let version: String = sqlx::query_scalar("show server_version_num")
        .fetch_one(&mut *oltp)
        .await?;
    if version.parse::<i32>().unwrap_or(0) < slot::STREAMING_SINCE {
        tracing::warn!(server_version_num = %version,
            "the source cannot send transactions in progress before PostgreSQL 14: large transactions arrive after their commit");
        return Ok(slot::Streaming::Off);
    }
    Ok(slot::Streaming::On)
}

/// What a session streams with, once it knows where to start.
struct Session {
    sinks: ReplicatorSinks,
    conn: ReplicationConnection,
    oltp: PgConnection,
    tracker: Tracker,
    start: crate::lsn::Lsn,
    streams: Option<Streams>,
}

/// A refusal to start, as the error that says what to do (a slot held by another process
/// is waited out).
fn refused(r: Refusal) -> ReplicatorError {
    match r {
        Refusal::SlotActive { .. } => ConnError::Server {
            code: "55006".into(),
            message: r.to_string(),
        }
        .into(),
        _ => ReplicatorError::Fatal(r.to_string()),
    }
}

/// The reader, the applier and the backfill worker, until shutdown or an error.
async fn stream(
    cfg: &ReplicatorConfig,
    telemetry: &Arc<Telemetry>,
    shutdown: &mut watch::Receiver<bool>,
    session: Session,
) -> Result<(), ReplicatorError> {
    let Session {
        sinks,
        conn,
        oltp,
        tracker,
        start,
        streams,
    } = session;
    let encoder = sinks.encoder();
    let (work_tx, work_rx) = mpsc::channel::<Work<_>>(1);
    let (applied_tx, applied_rx) = watch::channel(Applied {
        lsn: start,
        batches: 0,
    });
    let mut applier = tokio::spawn(apply::run(
        sinks,
        work_rx,
        Durable::new(applied_tx),
        telemetry.clone(),
    ));
    let (stop_worker, worker_stop) = watch::channel(false);
    let worker = tokio::spawn(worker::run(
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
        encoder,
        streams,
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
            reader.close_work();
            let done = match applier.await {
                Ok(r) => r,
                Err(e) => Err(ReplicatorError::Fatal(format!(
                    "the OLAP writer failed: {e}"
                ))),
            };
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

fn applier_end(r: Result<Result<(), ReplicatorError>, tokio::task::JoinError>) -> ReplicatorError {
    match r {
        Ok(Err(e)) => e,
        Ok(Ok(())) => ReplicatorError::WriterGone,
        Err(e) => ReplicatorError::Fatal(format!("the OLAP writer failed: {e}")),
    }
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
