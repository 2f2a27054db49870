//! The events loader: the events stream applied to OLAP exactly once, beside the change
//! stream's loader (`brewlytics load --from nats`, and `up --nats-url`), with the same
//! supervision ([`crate::load::supervise`]), consumer and position bookkeeping.
//!
//! A durable pull consumer (`<consumer>-events`, AckPolicy::All) delivers the events; a batch
//! (up to `max_changes` events, or what arrived within 200 ms) is loaded in one OLAP
//! transaction by `clickstream_ingest()` — facts keyed by the event id, so an event loaded
//! twice counts once — together with the stream sequence reached (`cdc_nats_loader`); the
//! batch is acknowledged only after that commit. After a crash the consumer starts again after
//! the committed sequence. A message that is not an event, or an event OLAP refuses, goes to
//! `clickstream_dead_letters` (reason and stream sequence, never its content) and the loader
//! goes on.

use std::time::{Duration, Instant};

use async_nats::jetstream::{self, AckKind};
use futures_util::StreamExt;
use sqlx::{Connection, PgConnection};
use tokio::sync::watch;

use super::wire::{self, WireEvent};
use crate::load::{self, LoadError, LoaderConfig, Session};
use crate::sink::nats::{self, NatsError};
use crate::telemetry::nats::LoaderMetrics;

/// The events loader's settings from the change stream loader's: the events stream, and
/// the consumer `<consumer>-events`.
pub fn config(changes: &LoaderConfig) -> LoaderConfig {
    LoaderConfig {
        nats: super::events_config(&changes.nats),
        consumer: format!("{}-events", changes.consumer),
        ..changes.clone()
    }
}

/// Loads the events stream of `cfg` (from [`config`]) until `shutdown`.
pub async fn run(
    cfg: LoaderConfig,
    metrics: std::sync::Arc<LoaderMetrics>,
    shutdown: watch::Receiver<bool>,
) -> Result<(), LoadError> {
    const SESSION: Session = |cfg, metrics, shutdown| Box::pin(session(cfg, metrics, shutdown));
    load::supervise(cfg, metrics, shutdown, SESSION).await
}

/// What the next OLAP transaction loads.
#[derive(Default)]
struct Batch {
    events: Vec<WireEvent>,
    /// (stream sequence, subject, reason)
    dead: Vec<(u64, String, String)>,
    messages: u64,
    last_seq: u64,
    ack: Option<jetstream::Message>,
}

async fn session(
    cfg: &LoaderConfig,
    metrics: &LoaderMetrics,
    shutdown: &mut watch::Receiver<bool>,
) -> Result<(), LoadError> {
    let mut olap = PgConnection::connect(cfg.olap_url.expose())
        .await
        .map_err(NatsError::Olap)?;
    let stored: Option<i64> = sqlx::query_scalar(
        "select stream_seq from cdc_nats_loader where stream = $1 and consumer = $2",
    )
    .bind(&cfg.nats.stream)
    .bind(&cfg.consumer)
    .fetch_optional(&mut olap)
    .await?;
    let mut applied = stored.unwrap_or(0).max(0) as u64;
    let client = nats::connect(&cfg.nats, "brewlytics-events-loader", |_| {}).await?;
    let js = nats::context(&cfg.nats, client);
    // The loader may start before any API published: the stream is made here too.
    let stream = nats::ensure_stream(&js, &cfg.nats).await?;
    let mut consumer = load::session::ensure_consumer(&stream, cfg, applied).await?;
    let mut messages = load::session::pull(&consumer).await?;
    tracing::info!(stream = %cfg.nats.stream, consumer = %cfg.consumer, from = applied + 1,
        "loading the events stream");
    metrics.state("loading");
    let mut batch = Batch::default();
    let mut next_info = Instant::now();
    loop {
        if Instant::now() >= next_info {
            if let Ok(info) = consumer.info().await {
                metrics.consumer_info(info.num_pending as i64, info.num_ack_pending as i64);
            }
            next_info = Instant::now() + Duration::from_secs(1);
        }
        let next = tokio::select! {
            _ = shutdown.changed() => {
                flush(cfg, metrics, &mut olap, &mut batch, &mut applied).await?;
                return Ok(());
            }
            n = tokio::time::timeout(Duration::from_millis(200), messages.next()) => n,
        };
        match next {
            Err(_) => flush(cfg, metrics, &mut olap, &mut batch, &mut applied).await?,
            Ok(None) => return Err(NatsError::Consumer("the message stream ended".into()).into()),
            Ok(Some(Err(e))) => return Err(NatsError::Consumer(e.to_string()).into()),
            Ok(Some(Ok(m))) => {
                let seq = m.info().map(|i| i.stream_sequence).unwrap_or(0);
                if seq <= applied.max(batch.last_seq) {
                    continue;
                }
                match wire::read(&m.payload) {
                    Ok(e) => batch.events.push(e),
                    Err(reason) => batch.dead.push((seq, m.subject.to_string(), reason)),
                }
                batch.messages += 1;
                batch.last_seq = seq;
                batch.ack = Some(m);
                if batch.messages as usize >= cfg.max_changes {
                    flush(cfg, metrics, &mut olap, &mut batch, &mut applied).await?;
                }
            }
        }
    }
}

/// Loads the batch and its position in one OLAP transaction, then acknowledges it.
async fn flush(
    cfg: &LoaderConfig,
    metrics: &LoaderMetrics,
    olap: &mut PgConnection,
    batch: &mut Batch,
    applied: &mut u64,
) -> Result<(), LoadError> {
    if batch.messages == 0 {
        return Ok(());
    }
    let t0 = Instant::now();
    let mut tx = olap.begin().await?;
    let all = serde_json::to_value(&batch.events).unwrap_or_default();
    sqlx::query("savepoint whole").execute(&mut *tx).await?;
    let whole = sqlx::query("select clickstream_ingest($1::jsonb)")
        .bind(&all)
        .execute(&mut *tx)
        .await;
    if let Err(e) = whole {
        if crate::redact::classify(&e) == crate::redact::Class::Transient {
            return Err(e.into());
        }
        // One event OLAP refuses: each on its own, the refused ones dead-lettered.
        sqlx::query("rollback to savepoint whole")
            .execute(&mut *tx)
            .await?;
        for e in &batch.events {
            sqlx::query("savepoint one").execute(&mut *tx).await?;
            let one = serde_json::to_value([e]).unwrap_or_default();
            let res = sqlx::query("select clickstream_ingest($1::jsonb)")
                .bind(&one)
                .execute(&mut *tx)
                .await;
            if let Err(err) = res {
                if crate::redact::classify(&err) == crate::redact::Class::Transient {
                    return Err(err.into());
                }
                sqlx::query("rollback to savepoint one")
                    .execute(&mut *tx)
                    .await?;
                let reason = format!("refused by OLAP: {}", crate::redact::db_error(&err));
                dead_letter(&mut tx, cfg, None, "", Some(e.id), &reason).await?;
            }
        }
    }
    for (seq, subject, reason) in &batch.dead {
        dead_letter(&mut tx, cfg, Some(*seq), subject, None, reason).await?;
    }
    sqlx::query(
        "insert into cdc_nats_loader (stream, consumer, stream_seq, messages)
         values ($1, $2, $3, $4)
         on conflict (stream, consumer) do update
           set stream_seq = excluded.stream_seq,
               messages = cdc_nats_loader.messages + excluded.messages, updated_at = now()",
    )
    .bind(&cfg.nats.stream)
    .bind(&cfg.consumer)
    .bind(batch.last_seq as i64)
    .bind(batch.messages as i64)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    *applied = batch.last_seq;
    if !batch.dead.is_empty() {
        tracing::warn!(
            messages = batch.dead.len(),
            "events dead-lettered (clickstream_dead_letters)"
        );
    }
    if let Some(m) = batch.ack.take() {
        if let Err(e) = m.ack_with(AckKind::Ack).await {
            // Committed in OLAP: a lost ack only means a redelivery, which is dropped.
            tracing::warn!(error = %e, "acknowledging to JetStream failed");
        }
    }
    metrics.committed(
        batch.messages,
        batch.events.len() as u64,
        batch.last_seq,
        format!("stream sequence {}", batch.last_seq),
        t0.elapsed(),
    );
    *batch = Batch::default();
    Ok(())
}

async fn dead_letter(
    tx: &mut PgConnection,
    cfg: &LoaderConfig,
    seq: Option<u64>,
    subject: &str,
    event: Option<uuid::Uuid>,
    reason: &str,
) -> Result<(), sqlx::Error> {
    let _ = cfg;
    sqlx::query(
        "insert into clickstream_dead_letters (source, stream_seq, subject, event_id, reason)
         values ('nats', $1, nullif($2, ''), $3, $4)",
    )
    .bind(seq.map(|s| s as i64))
    .bind(subject)
    .bind(event.map(|e| e.to_string()))
    .bind(reason)
    .execute(tx)
    .await?;
    Ok(())
}
