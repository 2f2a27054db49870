//! One loading session: OLAP and the durable consumer set up from the stored stream
//! sequence, then messages read until shutdown or an error; a batch is committed when it is
//! full or the stream goes quiet.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, consumer};
use futures_util::StreamExt;
use tokio::sync::watch;

use super::message::Batch;
use super::{LoadError, Loader, LoaderConfig};
use crate::schema::store;
use crate::sink::nats::NatsError;
use crate::sink::olap::OlapSink;
use crate::sink::PrimarySink;
use crate::telemetry::nats::LoaderMetrics;

/// One session, until shutdown (`Ok`) or an error.
pub(super) async fn run(
    cfg: &LoaderConfig,
    metrics: &LoaderMetrics,
    shutdown: &mut watch::Receiver<bool>,
) -> Result<(), LoadError> {
    let mut olap = OlapSink::connect(&cfg.olap_url, "", cfg.on_error).await?;
    let writer = olap.writer();
    let stored: Option<i64> = sqlx::query_scalar(
        "select stream_seq from cdc_nats_loader where stream = $1 and consumer = $2",
    )
    .bind(&cfg.nats.stream)
    .bind(&cfg.consumer)
    .fetch_optional(writer.conn())
    .await?;
    let applied_seq = stored.unwrap_or(0).max(0) as u64;
    let tables = store::load(writer.conn())
        .await?
        .into_iter()
        .map(|t| ((t.schema.to_string(), t.name.to_string()), Arc::new(t)))
        .collect();
    let client = crate::sink::nats::connect(&cfg.nats, "brewlytics-loader", |_| {}).await?;
    let js = crate::sink::nats::context(&cfg.nats, client);
    let stream = js
        .get_stream(&cfg.nats.stream)
        .await
        .map_err(|e| NatsError::Stream {
            stream: cfg.nats.stream.clone(),
            message: e.to_string(),
        })?;
    let consumer = ensure_consumer(&stream, cfg, applied_seq).await?;
    let mut messages = pull(&consumer).await?;
    tracing::info!(stream = %cfg.nats.stream, consumer = %cfg.consumer, from = applied_seq + 1,
        "loading the change stream");
    metrics.state("loading");
    let mut loader = Loader {
        cfg,
        metrics,
        encoder: olap.encoder(),
        olap,
        tables,
        applied_seq,
        seen_seq: applied_seq,
        slot: None,
        batch: Batch::default(),
        ack: None,
    };
    let mut consumer = consumer;
    let mut next_info = Instant::now();
    loop {
        if Instant::now() >= next_info {
            if let Ok(info) = consumer.info().await {
                metrics.consumer_info(info.num_pending as i64, info.num_ack_pending as i64);
            }
            next_info = Instant::now() + Duration::from_secs(1);
        }
        let idle = if loader.batch.complete.is_some() {
            Duration::from_millis(20)
        } else {
            Duration::from_millis(500)
        };
        let next = tokio::select! {
            _ = shutdown.changed() => {
                loader.flush().await?;
                return Ok(());
            }
            n = tokio::time::timeout(idle, messages.next()) => n,
        };
        match next {
            Err(_) => loader.flush().await?,
            Ok(None) => return Err(NatsError::Consumer("the message stream ended".into()).into()),
            Ok(Some(Err(e))) => return Err(NatsError::Consumer(e.to_string()).into()),
            Ok(Some(Ok(m))) => {
                loader.message(m).await?;
                if loader.batch.changes.len() >= cfg.max_changes {
                    loader.flush().await?;
                }
            }
        }
    }
}

/// The durable consumer, delivering from the message after `applied`. One left with
/// deliveries not committed here (a crash between delivery and commit, or before the
/// acknowledgement) is made again from there, so nothing waits for a redelivery.
/// The consumer's messages, pulled in batches of up to 1,000 (a heartbeat every 5 s).
pub(crate) async fn pull(
    consumer: &consumer::PullConsumer,
) -> Result<consumer::pull::Stream, NatsError> {
    consumer
        .stream()
        .max_messages_per_batch(1000)
        .heartbeat(Duration::from_secs(5))
        .expires(Duration::from_secs(30))
        .messages()
        .await
        .map_err(|e| NatsError::Consumer(e.to_string()))
}

pub(crate) async fn ensure_consumer(
    stream: &jetstream::stream::Stream,
    cfg: &LoaderConfig,
    applied: u64,
) -> Result<consumer::PullConsumer, NatsError> {
    let err = |e: String| NatsError::Consumer(format!("{}: {e}", cfg.consumer));
    if let Ok(mut c) = stream
        .get_consumer::<consumer::pull::Config>(&cfg.consumer)
        .await
    {
        let info = c.info().await.map_err(|e| err(e.to_string()))?;
        if info.ack_floor.stream_sequence == applied
            && info.delivered.stream_sequence == applied
            && info.num_ack_pending == 0
        {
            return Ok(c);
        }
        stream
            .delete_consumer(&cfg.consumer)
            .await
            .map_err(|e| err(e.to_string()))?;
    }
    stream
        .create_consumer(consumer::pull::Config {
            durable_name: Some(cfg.consumer.clone()),
            description: Some("brewlytics load: the change stream into an OLAP database".into()),
            deliver_policy: if applied == 0 {
                consumer::DeliverPolicy::All
            } else {
                consumer::DeliverPolicy::ByStartSequence {
                    start_sequence: applied + 1,
                }
            },
            ack_policy: consumer::AckPolicy::All,
            ack_wait: Duration::from_secs(300),
            max_ack_pending: -1,
            filter_subject: format!("{}.>", cfg.nats.prefix),
            ..Default::default()
        })
        .await
        .map_err(|e| err(e.to_string()))
}
