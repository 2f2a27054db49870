//! Where `POST /events` sends events: with `--nats-url`, the JetStream events stream (and
//! `up` then runs the events loader too); without, the OLTP table `click_events`, which the
//! replicator carries to OLAP.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use anyhow::Context;
use brewlytics_api::domain::event::Event;
use brewlytics_api::events::{EventPublisher, EventsConfig, DEFAULT_EVENTS_PER_SECOND};
use brewlytics_replicator::clickstream::publish::{EventStream, Outgoing};
use brewlytics_replicator::sink::nats::NatsConfig;
use clap::Args;

/// The events API's limits.
#[derive(Args, Debug, Clone)]
pub struct EventsArgs {
    /// Events per second `POST /events` accepts (a burst of twice that; 0: no limit); more
    /// are refused with 429.
    #[arg(long, env = "EVENTS_PER_SECOND", default_value_t = DEFAULT_EVENTS_PER_SECOND)]
    pub events_per_second: u32,
}

/// Publishes to the events stream (the API's [`EventPublisher`]).
struct JetStream(EventStream);

impl EventPublisher for JetStream {
    fn publish<'a>(
        &'a self,
        events: &'a [Event],
    ) -> Pin<Box<dyn Future<Output = Result<(), String>> + Send + 'a>> {
        Box::pin(async move {
            let out: Vec<Outgoing> = events
                .iter()
                .map(|e| Outgoing {
                    id: e.id.to_string(),
                    kind: e.kind.as_str(),
                    payload: serde_json::to_vec(e).unwrap_or_default(),
                })
                .collect();
            self.0.publish(&out).await.map_err(|e| e.to_string())
        })
    }
}

/// The API's events settings: JetStream when `nats` is given (connected, the stream made),
/// else the OLTP table.
pub async fn config(nats: Option<NatsConfig>, args: &EventsArgs) -> anyhow::Result<EventsConfig> {
    let publisher: Option<Arc<dyn EventPublisher>> = match nats {
        None => None,
        Some(cfg) => {
            let stream = EventStream::connect(&cfg)
                .await
                .context("connecting the events API to NATS")?;
            tracing::info!(stream = %stream.stream_name(), "events are published to JetStream");
            Some(Arc::new(JetStream(stream)))
        }
    };
    Ok(EventsConfig::new(publisher, args.events_per_second))
}
