//! `brewlytics load --from nats`: a change stream applied to an OLAP database exactly once.
//!
//! A durable JetStream pull consumer reads the stream `replicate --sink nats` publishes. Each
//! message is turned back into the [`Change`] it was made from (table shapes from the schema
//! events, which the initial copy sends before each table's rows), and whole source
//! transactions are applied through the same OLAP sink as the replicator's, by the sink contract
//! ([`crate::sink::PrimarySink`]: parts of a transaction larger than a batch, then its end) —
//! journal, replica, star — in one OLAP transaction per batch that also stores the stream
//! sequence reached (`cdc_nats_loader`). Only after that commit are the messages acknowledged
//! (cumulatively). After a crash the consumer is made again from the stored sequence, so no
//! message is applied twice or skipped; a redelivered message at or before it is dropped.
//!
//! A backfill chunk travels as its merge point (`b`, with the chunk's range and snapshot) and
//! its rows; the loader rebuilds the chunk (`cdc_staging.chunk_<id>`, `cdc_backfill_chunks`)
//! in its transaction and the writer merges it exactly as the replicator's does.
//!
//! By part: [`session`] (the consumer and the loop), [`message`] (a message into the batch),
//! [`commit`] (a batch applied and committed, backfill chunks rebuilt), [`position`] (what
//! `status` and the loader's endpoints show).

mod commit;
mod message;
pub mod position;
pub(crate) mod session;

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use async_nats::jetstream;
use tokio::sync::watch;

use crate::backoff::Backoff;
use crate::sink::nats::{NatsConfig, NatsError};
use crate::sink::olap::{ApplyError, OlapEncoder, OlapSink, OnError};
use crate::table::SourceTable;
use crate::telemetry::nats::LoaderMetrics;
use brewlytics_support::DbUrl;

use message::Batch;
pub use position::{positions, LoaderTelemetry, Position};

/// The change stream's durable consumer unless told otherwise (`--nats-consumer`); the events
/// stream's is `<consumer>-events`.
pub const DEFAULT_CONSUMER: &str = "brewlytics-loader";

#[derive(Clone, Debug)]
pub struct LoaderConfig {
    pub olap_url: DbUrl,
    pub nats: NatsConfig,
    pub consumer: String,
    pub max_changes: usize,
    pub on_error: OnError,
    /// How a session interrupted by a transient error is started again.
    pub retry: Backoff,
}

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error(transparent)]
    Nats(#[from] NatsError),
    #[error(transparent)]
    Apply(#[from] ApplyError),
    #[error("a message at stream sequence {seq} cannot be applied: {what}")]
    Message { seq: u64, what: String },
}

impl From<sqlx::Error> for LoadError {
    fn from(e: sqlx::Error) -> Self {
        Self::Apply(ApplyError::Sql(e))
    }
}

impl LoadError {
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Nats(e) => e.is_retryable(),
            Self::Apply(e) => e.is_retryable(),
            Self::Message { .. } => false,
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Self::Nats(e) => e.kind(),
            Self::Apply(_) => "olap",
            Self::Message { .. } => "message",
        }
    }
}

/// Loads until `shutdown`; waits out NATS and OLAP outages with backoff.
pub async fn run(
    cfg: LoaderConfig,
    metrics: Arc<LoaderMetrics>,
    shutdown: watch::Receiver<bool>,
) -> Result<(), LoadError> {
    supervise(cfg, metrics, shutdown, changes_session).await
}

fn changes_session<'a>(
    cfg: &'a LoaderConfig,
    metrics: &'a LoaderMetrics,
    shutdown: &'a mut watch::Receiver<bool>,
) -> Pin<Box<dyn Future<Output = Result<(), LoadError>> + Send + 'a>> {
    Box::pin(session::run(cfg, metrics, shutdown))
}

/// One session of a loader: connect, load until `shutdown` (Ok) or an error.
pub type Session = for<'a> fn(
    &'a LoaderConfig,
    &'a LoaderMetrics,
    &'a mut watch::Receiver<bool>,
) -> Pin<Box<dyn Future<Output = Result<(), LoadError>> + Send + 'a>>;

/// Runs `session` again and again until `shutdown`: a retryable error is waited out with
/// `cfg.retry`, any other stops it. The change stream's loader and the events loader
/// ([`crate::clickstream::load`]) both run under it.
pub async fn supervise(
    cfg: LoaderConfig,
    metrics: Arc<LoaderMetrics>,
    mut shutdown: watch::Receiver<bool>,
    session: Session,
) -> Result<(), LoadError> {
    cfg.nats.validate().map_err(NatsError::Config)?;
    // The journal's partitions ahead of what is loaded (crate::journal).
    let _journal =
        crate::journal::maintain::spawn_for_loader(cfg.olap_url.clone(), shutdown.clone());
    let mut retry = cfg.retry.start();
    loop {
        if *shutdown.borrow() {
            return Ok(());
        }
        let started = Instant::now();
        let outcome = session(&cfg, &metrics, &mut shutdown).await;
        metrics.state("reconnecting");
        match outcome {
            Ok(()) => {
                metrics.state("stopped");
                return Ok(());
            }
            Err(e) if !e.is_retryable() => {
                metrics.state("stopped");
                metrics.error(e.kind(), e.to_string());
                tracing::error!(error = %e, stream = %cfg.nats.stream, "loading stopped");
                return Err(e);
            }
            Err(e) => {
                metrics.error(e.kind(), e.to_string());
                retry.after_attempt(started.elapsed());
                tracing::warn!(error = %e, stream = %cfg.nats.stream,
                    retry_in_ms = retry.delay().as_millis() as u64, "loading interrupted; retrying");
                if !retry.wait(&mut shutdown).await {
                    return Ok(());
                }
            }
        }
    }
}

/// A session's state: the OLAP sink, the tables as the stream described them, the batch
/// being gathered and where the stream stands.
struct Loader<'a> {
    cfg: &'a LoaderConfig,
    metrics: &'a LoaderMetrics,
    /// The OLAP sink, driven as the replicator drives it (parts, then the commit).
    olap: OlapSink,
    encoder: OlapEncoder,
    tables: HashMap<(String, String), Arc<SourceTable>>,
    /// The stream sequence committed in OLAP.
    applied_seq: u64,
    /// The last message seen (redeliveries at or before it are dropped).
    seen_seq: u64,
    slot: Option<String>,
    batch: Batch,
    /// The message whose acknowledgement covers the complete transactions (AckPolicy::All).
    ack: Option<jetstream::Message>,
}
