//! Where a loader is, as `brewlytics status` shows it (from OLAP), and the loader's own
//! metrics registry, served on its listen address.

use std::sync::Arc;

use sqlx::PgConnection;

use crate::telemetry::nats::LoaderMetrics;

/// The loader's position, as `brewlytics status` shows it (from OLAP).
#[derive(Clone, Debug, serde::Serialize)]
pub struct Position {
    pub stream: String,
    pub consumer: String,
    pub stream_seq: i64,
    pub lsn: Option<String>,
    pub messages: i64,
    pub updated_at: chrono::DateTime<chrono::Utc>,
}

type PositionRow = (
    String,
    String,
    i64,
    Option<String>,
    i64,
    chrono::DateTime<chrono::Utc>,
);

pub async fn positions(olap: &mut PgConnection) -> Result<Vec<Position>, sqlx::Error> {
    let rows: Vec<PositionRow> = sqlx::query_as(
        "select stream, consumer, stream_seq, lsn::text, messages, updated_at
             from cdc_nats_loader order by 1, 2",
    )
    .fetch_all(olap)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| Position {
            stream: r.0,
            consumer: r.1,
            stream_seq: r.2,
            lsn: r.3,
            messages: r.4,
            updated_at: r.5,
        })
        .collect())
}

/// The loader's metrics registry and live state, served on its listen address.
pub struct LoaderTelemetry {
    registry: prometheus_client::registry::Registry,
    pub metrics: Arc<LoaderMetrics>,
    /// The events loader's (`brewlytics_events_loader_*`, see [`crate::clickstream::load`]).
    pub events: Arc<LoaderMetrics>,
}

impl LoaderTelemetry {
    /// For the change stream `stream` and its consumer, and the events stream beside it
    /// (`<stream>_EVENTS`, consumer `<consumer>-events`).
    pub fn new(stream: &str, consumer: &str) -> Arc<Self> {
        let mut registry = prometheus_client::registry::Registry::default();
        let metrics = Arc::new(LoaderMetrics::register(&mut registry, stream, consumer));
        let events = Arc::new(LoaderMetrics::register_events(
            &mut registry,
            stream,
            consumer,
        ));
        Arc::new(Self {
            registry,
            metrics,
            events,
        })
    }

    pub fn encode(&self) -> String {
        let mut out = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            tracing::warn!(error = %e, "encoding the loader's metrics");
        }
        out
    }
}
