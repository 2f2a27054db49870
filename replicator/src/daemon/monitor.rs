//! Watching the slot from the source, independently of the stream: lag and retained WAL
//! for the metrics (they keep growing while OLAP is down and nothing is applied), a warning
//! when the slot retains too much WAL, the heartbeats behind the lag in seconds, and the
//! stop when the slot was invalidated. It also reads the publication's tables now and then,
//! so their `brewlytics_changes_applied_total` series exist before their first change.

use std::time::{Duration, Instant};

use sqlx::{Connection, PgConnection};
use tokio::sync::watch;

use crate::slot;
use crate::telemetry::heartbeat;
use crate::telemetry::{Role, SlotReading, Telemetry};
use brewlytics_support::DbUrl;

#[derive(Clone, Debug)]
pub struct MonitorConfig {
    pub oltp_url: DbUrl,
    pub slot: String,
    pub publication: String,
    /// How often the slot is read (and a heartbeat sent).
    pub interval: Duration,
    /// Send heartbeats through the source (off: lag in seconds is not measured).
    pub heartbeats: bool,
    /// Warn (log and metric) when the slot retains more WAL than this.
    pub retained_wal_warn_bytes: i64,
}

/// How often the publication's table list is read again (tables added to it get their series).
const TABLES_EVERY: Duration = Duration::from_secs(60);

/// Runs until `shutdown`; returns an error only when replication cannot go on (the slot was
/// invalidated). Unreachable databases are waited out.
pub async fn run(
    cfg: MonitorConfig,
    telemetry: std::sync::Arc<Telemetry>,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), String> {
    let mut conn: Option<PgConnection> = None;
    let mut last_warning: Option<Instant> = None;
    let mut last_failure_warning: Option<Instant> = None;
    let mut tables_read: Option<Instant> = None;
    telemetry.monitor_settings(
        cfg.heartbeats.then_some(cfg.interval),
        cfg.retained_wal_warn_bytes,
    );
    let mut tick = tokio::time::interval(cfg.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.changed() => return Ok(()),
        }
        if *shutdown.borrow() {
            return Ok(());
        }
        if conn.is_none() {
            match connect(&cfg.oltp_url).await {
                Ok(c) => conn = Some(c),
                Err(e) => {
                    tracing::debug!(error = %e, "monitor: source unreachable");
                    continue;
                }
            }
        }
        let Some(c) = conn.as_mut() else { continue };
        let reading = match refresh_tables(c, &cfg, &telemetry, &mut tables_read).await {
            Ok(()) => observe(c, &cfg, &telemetry, &mut last_warning).await,
            Err(e) => Err(e),
        };
        match reading {
            Ok(Some(lost)) => return Err(lost),
            Ok(None) => {}
            Err(e) => {
                // A missing privilege would otherwise stop heartbeats and slot readings
                // silently: say so, once a minute at most.
                if last_failure_warning
                    .is_none_or(|t: Instant| t.elapsed() > Duration::from_secs(60))
                {
                    last_failure_warning = Some(Instant::now());
                    tracing::warn!(error = %e, "slot monitor: reading the slot or sending a heartbeat failed; lag metrics are stale until it works again");
                }
                telemetry.error("monitor", format!("slot monitor: {e}"));
                conn = None;
            }
        }
    }
}

/// Reads the publication's tables (the `table` label of the change counts) into the
/// telemetry, at most every [`TABLES_EVERY`].
async fn refresh_tables(
    conn: &mut PgConnection,
    cfg: &MonitorConfig,
    telemetry: &Telemetry,
    last_read: &mut Option<Instant>,
) -> Result<(), sqlx::Error> {
    if last_read.is_some_and(|t| t.elapsed() < TABLES_EVERY) {
        return Ok(());
    }
    let tables: Vec<String> = sqlx::query_scalar(
        "select distinct tablename::text from pg_publication_tables where pubname = any($1)
         order by 1",
    )
    .bind(crate::slot::publication_names(&cfg.publication))
    .fetch_all(conn)
    .await?;
    telemetry.publication_tables(&tables);
    *last_read = Some(Instant::now());
    Ok(())
}

async fn connect(url: &DbUrl) -> Result<PgConnection, sqlx::Error> {
    let opts = url
        .connect_options()?
        .application_name("brewlytics-monitor");
    tokio::time::timeout(Duration::from_secs(5), PgConnection::connect_with(&opts))
        .await
        .map_err(|_| sqlx::Error::PoolTimedOut)?
}

/// One reading; `Some(message)` when the slot is lost.
async fn observe(
    conn: &mut PgConnection,
    cfg: &MonitorConfig,
    telemetry: &Telemetry,
    last_warning: &mut Option<Instant>,
) -> Result<Option<String>, sqlx::Error> {
    if cfg.heartbeats && telemetry.role() != Role::Standby {
        let (seq, payload) = telemetry.prepare_heartbeat();
        let at = Instant::now();
        sqlx::query("select pg_logical_emit_message(true, $1, $2)")
            .bind(heartbeat::PREFIX)
            .bind(payload)
            .execute(&mut *conn)
            .await?;
        telemetry.heartbeat_emitted(seq, at);
    }
    let info = slot::info(conn, &cfg.slot).await?;
    let pos = slot::positions(conn, &cfg.slot).await?;
    // The limit past which the source invalidates the slot (PostgreSQL 13+; -1: none).
    let keep_size: Option<i64> = sqlx::query_scalar(
        "select case when setting::bigint < 0 then -1 else pg_size_bytes(setting || coalesce(unit, '')) end
         from pg_settings where name = 'max_slot_wal_keep_size'",
    )
    .fetch_optional(&mut *conn)
    .await?;
    let retained = pos.retained_wal_bytes;
    let over = retained.is_some_and(|r| r > cfg.retained_wal_warn_bytes);
    if over && last_warning.is_none_or(|t| t.elapsed() > Duration::from_secs(60)) {
        *last_warning = Some(Instant::now());
        tracing::warn!(
            slot = %cfg.slot,
            retained_wal_bytes = retained.unwrap_or_default(),
            threshold_bytes = cfg.retained_wal_warn_bytes,
            "the slot retains more WAL than the threshold: the replicator is behind or stopped; \
             the source's disk fills until it catches up (or max_slot_wal_keep_size invalidates the slot)"
        );
    }
    let lost = info
        .as_ref()
        .is_some_and(|s| s.wal_status.as_deref() == Some("lost"));
    telemetry.slot_reading(
        SlotReading {
            at: Some(chrono::Utc::now()),
            exists: info.is_some(),
            wal_status: info.as_ref().and_then(|s| s.wal_status.clone()),
            source_wal_lsn: pos.current_wal,
            confirmed_flush_lsn: info.as_ref().and_then(|s| s.confirmed_flush_lsn),
            lag_bytes: pos.lag_bytes,
            retained_wal_bytes: retained,
            max_slot_wal_keep_size_bytes: keep_size,
        },
        over,
    );
    Ok(lost.then(|| lost_slot_message(&cfg.slot)))
}

/// What to do when the slot is invalidated.
pub fn lost_slot_message(slot: &str) -> String {
    format!(
        "replication slot {slot:?} was invalidated (wal_status = lost): the source removed WAL \
         the replicator had not applied, so changes are missing; run `brewlytics resync` to \
         copy the source again"
    )
}
