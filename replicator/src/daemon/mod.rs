//! `brewlytics replicate`: the pipeline with everything a daemon needs around it — the
//! leader lock (one streaming process per slot, standbys take over), the slot monitor and
//! heartbeats, and the HTTP endpoints.

pub mod http;
pub mod leader;
pub mod monitor;
pub mod status;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use self::monitor::MonitorConfig;
use crate::backoff::Backoff;
use crate::config::ReplicatorConfig;
use crate::error::ReplicatorError;
use crate::pipeline;
use crate::telemetry::{Role, Telemetry};

#[derive(Clone, Debug)]
pub struct DaemonConfig {
    pub replicator: ReplicatorConfig,
    /// Where `/metrics`, `/health`, `/ready`, `/status` and the status page are served.
    pub listen: Option<SocketAddr>,
    /// Heartbeat and slot reading interval; zero turns heartbeats off.
    pub heartbeat_interval: Duration,
    pub retained_wal_warn_bytes: i64,
    /// `/ready` answers 503 above this lag.
    pub ready_max_lag: Duration,
    /// How reaching OLAP for the leader lock is tried again ([`Backoff::LOCK`]).
    pub lock_retry: Backoff,
    /// Who may use the endpoints ([`http::access`]): a key store, or open.
    pub guard: brewlytics_support::auth::Guard,
    /// Serve the endpoints over TLS.
    pub tls: Option<brewlytics_support::serve::Tls>,
}

/// How often a standby tries the lock, and the leader checks it still holds it.
const LOCK_POLL: Duration = Duration::from_millis(500);

/// Runs until `shutdown` turns true or replication cannot go on.
pub async fn run(
    cfg: DaemonConfig,
    telemetry: Arc<Telemetry>,
    shutdown: watch::Receiver<bool>,
) -> Result<(), ReplicatorError> {
    run_bound(cfg, None, telemetry, shutdown).await
}

/// [`run`], with the endpoints on `bound` when the caller bound `cfg.listen` itself, before
/// it announced anything (so a taken address stopped it first, in its own words).
pub async fn run_bound(
    cfg: DaemonConfig,
    bound: Option<tokio::net::TcpListener>,
    telemetry: Arc<Telemetry>,
    shutdown: watch::Receiver<bool>,
) -> Result<(), ReplicatorError> {
    let rc = &cfg.replicator;
    rc.validate()?;
    let http = match cfg.listen {
        Some(addr) => {
            let listener = match bound {
                Some(listener) => listener,
                None => tokio::net::TcpListener::bind(addr).await.map_err(|e| {
                    ReplicatorError::Fatal(format!(
                        "binding the replicator's endpoints to {addr}: {e}"
                    ))
                })?,
            };
            let state = http::HttpState::new(&cfg, telemetry.clone())?;
            let addr = listener.local_addr().unwrap_or(addr);
            let endpoint = brewlytics_support::serve::Endpoint::new(listener, cfg.tls.clone());
            tracing::info!(%addr, scheme = endpoint.scheme(), "replicator endpoints: /metrics /health /ready /status /");
            cfg.guard.announce().await;
            let mut stop = shutdown.clone();
            Some(tokio::spawn(async move {
                let app = http::router(state);
                let _ = brewlytics_support::serve::serve(endpoint, app, async move {
                    let _ = stop.wait_for(|v| *v).await;
                })
                .await;
            }))
        }
        None => None,
    };
    let interval = if cfg.heartbeat_interval.is_zero() {
        Duration::from_secs(1)
    } else {
        cfg.heartbeat_interval
    };
    let monitor = tokio::spawn(monitor::run(
        MonitorConfig {
            oltp_url: rc.oltp_url.clone(),
            slot: rc.slot.clone(),
            publication: rc.publication.clone(),
            interval,
            heartbeats: !cfg.heartbeat_interval.is_zero(),
            retained_wal_warn_bytes: cfg.retained_wal_warn_bytes,
        },
        telemetry.clone(),
        shutdown.clone(),
    ));
    let result = lead_or_wait(&cfg, &telemetry, shutdown.clone(), monitor).await;
    telemetry.set_role(Role::Stopped);
    if let Some(h) = http {
        let _ = tokio::time::timeout(Duration::from_secs(5), h).await;
    }
    if let Some(store) = cfg.guard.store() {
        if let Err(e) = store.flush_last_used().await {
            tracing::debug!(error = %e, "writing the API keys' last use");
        }
    }
    result
}

async fn lead_or_wait(
    cfg: &DaemonConfig,
    telemetry: &Arc<Telemetry>,
    mut shutdown: watch::Receiver<bool>,
    mut monitor: tokio::task::JoinHandle<Result<(), String>>,
) -> Result<(), ReplicatorError> {
    let rc = &cfg.replicator;
    let mut retry = cfg.lock_retry.start();
    let mut announced_standby = false;
    loop {
        if *shutdown.borrow() {
            return Ok(());
        }
        let lock = match leader::try_acquire(&rc.olap_url, &rc.slot).await {
            Ok(Some(lock)) => lock,
            Ok(None) => {
                if !announced_standby {
                    tracing::info!(slot = %rc.slot, "another replicator streams this slot; standing by");
                    announced_standby = true;
                }
                telemetry.set_role(Role::Standby);
                retry.reset();
                if wait(&mut shutdown, &mut monitor, LOCK_POLL).await? {
                    return Ok(());
                }
                continue;
            }
            Err(e) => {
                telemetry.set_role(Role::Starting);
                telemetry.error("database", format!("OLAP unreachable: {e}"));
                let backoff = retry.next_delay();
                tracing::warn!(error = %e, retry_in_ms = backoff.as_millis() as u64,
                    "cannot reach OLAP; retrying");
                if wait(&mut shutdown, &mut monitor, backoff).await? {
                    return Ok(());
                }
                continue;
            }
        };
        announced_standby = false;
        retry.reset();
        tracing::info!(slot = %rc.slot, "leading: this replicator streams the slot");
        telemetry.set_role(Role::Leader);
        if lead(rc, telemetry, &mut shutdown, &mut monitor, lock).await? {
            return Ok(());
        }
    }
}

/// Streams while the lock holds. `Ok(true)`: shut down; `Ok(false)`: the lock was lost,
/// contend again.
async fn lead(
    rc: &ReplicatorConfig,
    telemetry: &Arc<Telemetry>,
    shutdown: &mut watch::Receiver<bool>,
    monitor: &mut tokio::task::JoinHandle<Result<(), String>>,
    mut lock: leader::LeaderLock,
) -> Result<bool, ReplicatorError> {
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut pipeline = tokio::spawn(pipeline::run_with(rc.clone(), telemetry.clone(), stop_rx));
    let mut check = tokio::time::interval(LOCK_POLL);
    let outcome = loop {
        tokio::select! {
            r = &mut pipeline => {
                lock.release().await;
                return match r {
                    Ok(Ok(())) => Ok(true),
                    Ok(Err(e)) => Err(e),
                    Err(e) => Err(ReplicatorError::Fatal(format!("replicator task failed: {e}"))),
                };
            }
            _ = shutdown.changed() => {
                if *shutdown.borrow() { break Ok(true); }
            }
            r = &mut *monitor => break monitor_end(r),
            _ = check.tick() => {
                if !lock.still_held().await {
                    tracing::warn!("lost the OLAP connection holding the leader lock; stopping the stream to contend again");
                    telemetry.error("database", "leader lock connection lost".into());
                    break Ok(false);
                }
            }
        }
    };
    let _ = stop_tx.send(true);
    match tokio::time::timeout(Duration::from_secs(30), &mut pipeline).await {
        Ok(Ok(Err(e))) if outcome.as_ref().is_ok_and(|s| *s) => {
            lock.release().await;
            return Err(e);
        }
        Ok(_) => {}
        Err(_) => {
            pipeline.abort();
            tracing::warn!("the stream did not stop within 30 s; aborted");
        }
    }
    lock.release().await;
    outcome
}

/// Sleeps `d` unless shutdown comes first (`Ok(true)`) or the monitor ends.
async fn wait(
    shutdown: &mut watch::Receiver<bool>,
    monitor: &mut tokio::task::JoinHandle<Result<(), String>>,
    d: Duration,
) -> Result<bool, ReplicatorError> {
    tokio::select! {
        _ = tokio::time::sleep(d) => Ok(*shutdown.borrow()),
        _ = shutdown.changed() => Ok(true),
        r = &mut *monitor => monitor_end(r),
    }
}

/// The monitor ended: it only does so on shutdown (`Ok(true)`) or when the slot is lost.
fn monitor_end(
    r: Result<Result<(), String>, tokio::task::JoinError>,
) -> Result<bool, ReplicatorError> {
    match r {
        Ok(Ok(())) => Ok(true),
        Ok(Err(lost)) => Err(ReplicatorError::Fatal(lost)),
        Err(e) => Err(ReplicatorError::Fatal(format!(
            "the slot monitor failed: {e}"
        ))),
    }
}
