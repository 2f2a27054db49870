//! The replicator's pipeline: two stages that run at the same time, the next batch read and
//! encoded while the current one is applied.
//!
//! ```text
//! read (read.rs):   stream → decode → resolve tables → batch → encode (each sink's part)
//!                        │ Work: the parts, and the batch's checkpoint when it ends one
//!                        ▼
//! apply (apply.rs): primary sink (OLAP) ‖ secondary sink (NATS) → commit → report
//!                   (durable.rs: once OLAP's WAL flush passed an asynchronous commit)
//! ```
//!
//! A session ([`session`]) sets both up on fresh connections: it decides where to start
//! ([`start`]: from the checkpoint, or after a first start's copy, [`first_start`]), then
//! streams until shutdown or an error. Commits stay in order and the flush position reported
//! to the source is the last one every sink made durable. [`run`] starts sessions again with
//! backoff on transient errors and stops on the others, saying what to do.

pub mod apply;
pub mod durable;
pub mod first_start;
pub mod read;
mod session;
pub mod start;

use std::sync::Arc;
use std::time::Instant;

use tokio::sync::watch;

use crate::config::ReplicatorConfig;
use crate::error::ReplicatorError;
use crate::telemetry::{Role, Telemetry};

pub use first_start::{copy_logger, resync};

/// Runs until `shutdown` turns true; reconnects with backoff on retryable errors.
pub async fn run(
    cfg: ReplicatorConfig,
    shutdown: watch::Receiver<bool>,
) -> Result<(), ReplicatorError> {
    run_with(cfg, Telemetry::new(), shutdown).await
}

/// [`run`], reporting to `telemetry`.
pub async fn run_with(
    mut cfg: ReplicatorConfig,
    telemetry: Arc<Telemetry>,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), ReplicatorError> {
    cfg.validate()?;
    if cfg.streaming == crate::slot::Streaming::On {
        // A directory that cannot hold the spool is a setting to fix, not an outage to wait out.
        crate::spool::Spools::open(cfg.spool_dir()).map_err(|e| {
            ReplicatorError::Fatal(format!(
                "{e}: set --spool-dir (SPOOL_DIR) to a writable directory, or --streaming off"
            ))
        })?;
    }
    let mut retry = cfg.retry.start();
    loop {
        if *shutdown.borrow() {
            return Ok(());
        }
        let started = Instant::now();
        let outcome = session::run(&cfg, &telemetry, &mut shutdown).await;
        // Transactions in progress went with the session (the source sends them again).
        telemetry.streams(0, 0);
        telemetry.streaming_in_progress(false);
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
                if let ReplicatorError::Spool(crate::spool::SpoolError::Io { .. }) = &e {
                    // A full (or failing) disk under the spool would fail the same way each
                    // time the source sends the transaction again: the source keeps large
                    // transactions until their commit instead, as with --streaming off.
                    cfg.streaming = crate::slot::Streaming::Off;
                    tracing::warn!(error = %e, spool_dir = %cfg.spool_dir().display(),
                        "the spool could not be written: large transactions are received after their commit from now on (--streaming off) until the replicator restarts; free space under --spool-dir (SPOOL_DIR) or move it");
                }
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
