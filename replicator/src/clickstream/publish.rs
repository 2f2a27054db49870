//! The API's side of the events stream: publish a request's events and return once JetStream
//! has acknowledged every one of them (so the API's 202 means stored).

use async_nats::jetstream::{self, message::PublishMessage};

use super::{events_config, subject};
use crate::sink::nats::{self, NatsConfig, NatsError};

/// A connection to the events stream (created when missing).
#[derive(Clone)]
pub struct EventStream {
    js: jetstream::Context,
    cfg: NatsConfig,
}

/// One event to publish: its id (the message id), kind (the subject) and JSON payload.
pub struct Outgoing {
    pub id: String,
    pub kind: &'static str,
    pub payload: Vec<u8>,
}

impl EventStream {
    /// Connects to `cfg`'s servers (the change stream's settings; the events stream is
    /// derived from them) and makes sure the events stream exists.
    pub async fn connect(cfg: &NatsConfig) -> Result<Self, NatsError> {
        let cfg = events_config(cfg);
        cfg.validate().map_err(NatsError::Config)?;
        let client = nats::connect(&cfg, "brewlytics-api", |_| {}).await?;
        let js = nats::context(&cfg, client);
        nats::ensure_stream(&js, &cfg).await?;
        Ok(Self { js, cfg })
    }

    pub fn stream_name(&self) -> &str {
        &self.cfg.stream
    }

    /// Publishes `events` (all sent, then every acknowledgement awaited). A publish that
    /// fails is sent once more with the same message id (JetStream keeps one copy).
    pub async fn publish(&self, events: &[Outgoing]) -> Result<(), NatsError> {
        let mut failed = Vec::new();
        let mut acks = Vec::with_capacity(events.len());
        for (i, e) in events.iter().enumerate() {
            match self.send(e).await {
                Ok(ack) => acks.push((i, ack)),
                Err(_) => failed.push(i),
            }
        }
        for (i, ack) in acks {
            if ack.await.is_err() {
                failed.push(i);
            }
        }
        for i in failed {
            let ack = self.send(&events[i]).await?;
            ack.await.map_err(|e| NatsError::Ack(e.to_string()))?;
        }
        Ok(())
    }

    async fn send(&self, e: &Outgoing) -> Result<jetstream::context::PublishAckFuture, NatsError> {
        self.js
            .send_publish(
                subject(&self.cfg, e.kind),
                PublishMessage::build()
                    .payload(e.payload.clone().into())
                    .message_id(&e.id),
            )
            .await
            .map_err(|e| NatsError::Publish(e.to_string()))
    }
}
