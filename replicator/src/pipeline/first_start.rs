//! A first start, and `resync`: the source copied under a new slot's exported snapshot into
//! the primary's transaction (replica, journal, star), stored by the secondary sink as the
//! primary journaled it, and committed with the checkpoint at the slot's consistent point —
//! the stream then starts exactly where the copy ends.

use std::sync::Arc;
use std::time::{Duration, Instant};

use sqlx::{Connection, PgConnection};

use super::apply::Sinks;
use crate::batch::CommitMark;
use crate::checkpoint;
use crate::config::ReplicatorConfig;
use crate::error::ReplicatorError;
use crate::lsn::Lsn;
use crate::sink::nats::NatsSink;
use crate::sink::olap::{journal, ApplyError, OlapSink};
use crate::sink::{PrimarySink, Sink};
use crate::slot;
use crate::source::checks;
use crate::source::snapshot;
use crate::stream::config::ReplicationConfig;
use crate::stream::conn::ReplicationConnection;
use crate::telemetry::Telemetry;

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

/// A session's first start: the copy, its progress in the log, `/status` and `/metrics`.
pub(super) async fn copy<S>(
    cfg: &ReplicatorConfig,
    conn: &mut ReplicationConnection,
    oltp: &mut PgConnection,
    sinks: &mut Sinks<OlapSink, S>,
    telemetry: &Arc<Telemetry>,
) -> Result<Lsn, ReplicatorError>
where
    S: Sink,
    ReplicatorError: From<S::Error>,
{
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
    copy_source(cfg, conn, oltp, sinks, false, &progress).await
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
    let olap = OlapSink::connect(&cfg.olap_url, &cfg.slot, cfg.on_error).await?;
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
    let mut sinks = Sinks::new(olap, None::<NatsSink>);
    let lsn = copy_source(cfg, &mut conn, &mut oltp, &mut sinks, true, progress).await?;
    conn.close().await;
    Ok(lsn)
}

/// The copy itself; `reset`: replica and star emptied first, the old checkpoint cleared and
/// journal rows past it deleted (`resync`).
async fn copy_source<S>(
    cfg: &ReplicatorConfig,
    conn: &mut ReplicationConnection,
    oltp: &mut PgConnection,
    sinks: &mut Sinks<OlapSink, S>,
    reset: bool,
    progress: snapshot::OnProgress<'_>,
) -> Result<Lsn, ReplicatorError>
where
    S: Sink,
    ReplicatorError: From<S::Error>,
{
    let writer = sinks.primary.writer();
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
        reset_olap(writer.conn(), &cfg.slot)
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
    // The copy, as journaled, is stored beside OLAP before OLAP commits it.
    let copied = sinks
        .secondary
        .write_copy(sinks.primary.tx(), created.consistent_point)
        .await?;
    let mark = CommitMark {
        end_lsn: created.consistent_point,
        commit_ts: None,
    };
    sinks.commit(&mark).await?;
    if copied > 0 {
        tracing::info!(messages = copied, "initial copy published");
    }
    tracing::info!(
        tables = stats.tables,
        rows = stats.rows,
        dead_letters = stats.dead_letters,
        seconds = t0.elapsed().as_secs_f64(),
        "initial copy committed"
    );
    Ok(created.consistent_point)
}

/// Replica and star emptied, journal rows past the old checkpoint deleted, the checkpoint
/// cleared — in the copy's open transaction.
async fn reset_olap(olap: &mut PgConnection, slot: &str) -> Result<(), sqlx::Error> {
    if let Some(cp) = checkpoint::load(olap, slot).await? {
        journal::delete_after(olap, cp.lsn).await?;
    }
    crate::replay::reset_replica_and_star(olap).await?;
    checkpoint::clear(olap, slot).await
}
