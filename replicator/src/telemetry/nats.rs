//! The NATS sink's and loader's metrics (`brewlytics_nats_*`): every series exists at 0 from
//! the first scrape, labels come from fixed sets, nothing is per row or per subject.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Registry, Unit};
use serde::Serialize;

/// Every `kind` of `brewlytics_nats_errors_total` (the NATS sink's `NatsError::kind`).
pub const ERROR_KINDS: &[&str] = &[
    "connect", "stream", "publish", "ack", "consumer", "message", "olap",
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: &'static str,
}

/// A consumer of the stream and how far behind it is.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
pub struct ConsumerLag {
    pub name: String,
    /// Messages not yet delivered to it (its lag).
    pub pending_messages: u64,
    /// Delivered and not yet acknowledged.
    pub ack_pending_messages: usize,
    /// The stream sequence acknowledged (all before it too).
    pub ack_floor_stream_seq: u64,
}

/// The stream as JetStream reports it, with its consumers' lag.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
pub struct StreamReport {
    pub stream: String,
    pub messages: u64,
    pub bytes: u64,
    pub first_seq: u64,
    pub last_seq: u64,
    pub replicas: usize,
    pub leader: Option<String>,
    pub consumers: Vec<ConsumerLag>,
}

/// The publisher's metrics (in the replicator).
pub struct PublisherMetrics {
    published: Counter,
    published_bytes: Counter,
    duplicates: Counter,
    skipped: Counter,
    ack_seconds: Histogram,
    unacked_bytes: Gauge<i64, AtomicI64>,
    unacked_messages: Gauge<i64, AtomicI64>,
    stream_sequence: Gauge<i64, AtomicI64>,
    errors: Family<KindLabels, Counter>,
    live: Mutex<PublisherLive>,
}

/// What `/status` and the status page show of the publisher.
#[derive(Clone, Debug, Default, Serialize)]
pub struct PublisherLive {
    pub enabled: bool,
    pub stream: Option<String>,
    pub servers: Option<String>,
    pub connected: bool,
    pub published: u64,
    pub duplicates: u64,
    pub skipped: u64,
    pub unacknowledged_messages: i64,
    pub unacknowledged_bytes: i64,
    /// The stream sequence of the last message JetStream acknowledged.
    pub stream_sequence: u64,
    /// The last batch's slowest acknowledgement, in milliseconds.
    pub last_ack_ms: Option<f64>,
    pub last_error: Option<String>,
    /// The stream's consumers and their lag (read every few seconds).
    pub consumers: Vec<ConsumerLag>,
    pub stream_messages: Option<u64>,
}

impl PublisherMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let published = Counter::default();
        registry.register(
            "brewlytics_nats_published_messages",
            "Changes published to NATS JetStream and acknowledged (its rate is the publish rate)",
            published.clone(),
        );
        let published_bytes = Counter::default();
        registry.register_with_unit(
            "brewlytics_nats_published",
            "Payload bytes published to NATS JetStream and acknowledged",
            Unit::Bytes,
            published_bytes.clone(),
        );
        let duplicates = Counter::default();
        registry.register(
            "brewlytics_nats_duplicates",
            "Publishes JetStream acknowledged as duplicates (a resend dropped by its dedup window)",
            duplicates.clone(),
        );
        let skipped = Counter::default();
        registry.register(
            "brewlytics_nats_skipped_messages",
            "Changes not published again because the stream already held them (found at start)",
            skipped.clone(),
        );
        let ack_seconds = Histogram::new(exponential_buckets(0.0005, 2.0, 16));
        registry.register_with_unit(
            "brewlytics_nats_ack",
            "Time from a publish to JetStream's acknowledgement",
            Unit::Seconds,
            ack_seconds.clone(),
        );
        let unacked_bytes = Gauge::<i64, AtomicI64>::default();
        registry.register_with_unit(
            "brewlytics_nats_unacknowledged",
            "Payload bytes published and not yet acknowledged by JetStream",
            Unit::Bytes,
            unacked_bytes.clone(),
        );
        let unacked_messages = Gauge::<i64, AtomicI64>::default();
        registry.register(
            "brewlytics_nats_unacknowledged_messages",
            "Messages published and not yet acknowledged by JetStream",
            unacked_messages.clone(),
        );
        let stream_sequence = Gauge::<i64, AtomicI64>::default();
        registry.register(
            "brewlytics_nats_stream_sequence",
            "Stream sequence of the last message JetStream acknowledged",
            stream_sequence.clone(),
        );
        let errors = Family::<KindLabels, Counter>::default();
        registry.register(
            "brewlytics_nats_errors",
            "NATS errors (then retried), by kind",
            errors.clone(),
        );
        for &kind in ERROR_KINDS {
            let _ = errors.get_or_create(&KindLabels { kind });
        }
        Self {
            published,
            published_bytes,
            duplicates,
            skipped,
            ack_seconds,
            unacked_bytes,
            unacked_messages,
            stream_sequence,
            errors,
            live: Mutex::new(PublisherLive::default()),
        }
    }

    fn live_mut(&self) -> std::sync::MutexGuard<'_, PublisherLive> {
        self.live.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn enabled(&self, stream: &str, servers: &str) {
        let mut l = self.live_mut();
        l.enabled = true;
        l.stream = Some(stream.to_owned());
        l.servers = Some(servers.to_owned());
    }

    pub fn connected(&self, yes: bool) {
        self.live_mut().connected = yes;
    }

    pub fn in_flight(&self, messages: i64, bytes: i64) {
        self.unacked_messages.set(messages);
        self.unacked_bytes.set(bytes);
        let mut l = self.live_mut();
        l.unacknowledged_messages = messages;
        l.unacknowledged_bytes = bytes;
    }

    pub fn acked(&self, bytes: usize, latency: Duration, duplicate: bool, sequence: u64) {
        self.ack_seconds.observe(latency.as_secs_f64());
        if duplicate {
            self.duplicates.inc();
        } else {
            self.published.inc();
            self.published_bytes.inc_by(bytes as u64);
        }
        let mut l = self.live_mut();
        if duplicate {
            l.duplicates += 1;
        } else {
            l.published += 1;
        }
        if sequence > l.stream_sequence {
            l.stream_sequence = sequence;
            self.stream_sequence.set(sequence as i64);
        }
        let ms = latency.as_secs_f64() * 1000.0;
        l.last_ack_ms = Some(l.last_ack_ms.map_or(ms, |m| m.max(ms)));
    }

    /// A batch's acknowledgements are all in: the next batch's slowest starts afresh.
    pub fn batch_done(&self) {
        self.live_mut().last_ack_ms = None;
    }

    pub fn stream_report(&self, r: &StreamReport) {
        let mut l = self.live_mut();
        l.consumers = r.consumers.clone();
        l.stream_messages = Some(r.messages);
    }

    pub fn skipped(&self, n: u64) {
        self.skipped.inc_by(n);
        self.live_mut().skipped += n;
    }

    pub fn error(&self, kind: &'static str, message: String) {
        self.errors.get_or_create(&KindLabels { kind }).inc();
        self.live_mut().last_error = Some(message);
    }

    pub fn live(&self) -> PublisherLive {
        self.live_mut().clone()
    }
}

/// The loader's metrics (`brewlytics load --from nats`).
pub struct LoaderMetrics {
    pending: Gauge<i64, AtomicI64>,
    ack_pending: Gauge<i64, AtomicI64>,
    applied: Counter,
    transactions: Counter,
    stream_sequence: Gauge<i64, AtomicI64>,
    batch_seconds: Histogram,
    errors: Family<KindLabels, Counter>,
    applied_total: AtomicU64,
    live: Mutex<LoaderLive>,
}

/// What the loader's `/status` shows.
#[derive(Clone, Debug, Default, Serialize)]
pub struct LoaderLive {
    pub stream: String,
    pub consumer: String,
    pub state: String,
    pub pending_messages: Option<i64>,
    pub ack_pending_messages: Option<i64>,
    pub stream_sequence: u64,
    pub applied_messages: u64,
    pub last_position: Option<String>,
    pub last_error: Option<String>,
}

impl LoaderMetrics {
    /// The change stream's loader: `brewlytics_nats_loader_*`.
    pub fn register(registry: &mut Registry, stream: &str, consumer: &str) -> Self {
        Self::register_as(registry, "nats_loader", stream, consumer)
    }

    /// The clickstream events loader's (`brewlytics_events_loader_*`): the events stream
    /// beside the change stream `stream` (`<stream>_EVENTS`), its consumer beside `consumer`
    /// (`<consumer>-events`).
    pub fn register_events(registry: &mut Registry, stream: &str, consumer: &str) -> Self {
        Self::register_as(
            registry,
            "events_loader",
            &format!("{stream}_EVENTS"),
            &format!("{consumer}-events"),
        )
    }

    /// A loader's metrics named `brewlytics_<name>_*` (the events loader: `events_loader`).
    pub fn register_as(registry: &mut Registry, name: &str, stream: &str, consumer: &str) -> Self {
        let named = |what: &str| format!("brewlytics_{name}_{what}");
        let pending = Gauge::<i64, AtomicI64>::default();
        registry.register(
            named("pending_messages"),
            "Messages of the stream the loader's consumer has not been delivered yet (consumer lag)",
            pending.clone(),
        );
        let ack_pending = Gauge::<i64, AtomicI64>::default();
        registry.register(
            named("ack_pending_messages"),
            "Messages delivered to the loader and not yet committed in OLAP and acknowledged",
            ack_pending.clone(),
        );
        let applied = Counter::default();
        registry.register(
            named("applied_messages"),
            "Messages applied to OLAP by the loader (committed)",
            applied.clone(),
        );
        let transactions = Counter::default();
        registry.register(
            named("transactions"),
            "Source transactions applied to OLAP by the loader",
            transactions.clone(),
        );
        let stream_sequence = Gauge::<i64, AtomicI64>::default();
        registry.register(
            named("stream_sequence"),
            "Stream sequence of the last message the loader committed in OLAP",
            stream_sequence.clone(),
        );
        let batch_seconds = Histogram::new(exponential_buckets(0.001, 2.0, 16));
        registry.register_with_unit(
            named("batch"),
            "Time to apply and commit one loader batch in OLAP",
            Unit::Seconds,
            batch_seconds.clone(),
        );
        let errors = Family::<KindLabels, Counter>::default();
        registry.register(
            named("errors"),
            "Loader errors (then retried), by kind",
            errors.clone(),
        );
        for &kind in ERROR_KINDS {
            let _ = errors.get_or_create(&KindLabels { kind });
        }
        Self {
            pending,
            ack_pending,
            applied,
            transactions,
            stream_sequence,
            batch_seconds,
            errors,
            applied_total: AtomicU64::new(0),
            live: Mutex::new(LoaderLive {
                stream: stream.to_owned(),
                consumer: consumer.to_owned(),
                state: "starting".into(),
                ..Default::default()
            }),
        }
    }

    fn live_mut(&self) -> std::sync::MutexGuard<'_, LoaderLive> {
        self.live.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn state(&self, state: &str) {
        self.live_mut().state = state.to_owned();
    }

    pub fn consumer_info(&self, pending: i64, ack_pending: i64) {
        self.pending.set(pending);
        self.ack_pending.set(ack_pending);
        let mut l = self.live_mut();
        l.pending_messages = Some(pending);
        l.ack_pending_messages = Some(ack_pending);
    }

    pub fn committed(
        &self,
        messages: u64,
        transactions: u64,
        sequence: u64,
        position: String,
        took: Duration,
    ) {
        self.applied.inc_by(messages);
        self.transactions.inc_by(transactions);
        self.stream_sequence.set(sequence as i64);
        self.batch_seconds.observe(took.as_secs_f64());
        let total = self.applied_total.fetch_add(messages, Ordering::Relaxed) + messages;
        let mut l = self.live_mut();
        l.applied_messages = total;
        l.stream_sequence = sequence;
        l.last_position = Some(position);
    }

    pub fn error(&self, kind: &'static str, message: String) {
        self.errors.get_or_create(&KindLabels { kind }).inc();
        self.live_mut().last_error = Some(message);
    }

    pub fn live(&self) -> LoaderLive {
        self.live_mut().clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(text: &str, series: &str) -> Option<f64> {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))?
            .parse()
            .ok()
    }

    #[test]
    fn every_series_starts_at_zero_and_moves() {
        let mut r = Registry::default();
        let p = PublisherMetrics::register(&mut r);
        let l = LoaderMetrics::register(&mut r, "BREWLYTICS", "olap");
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &r).unwrap();
        for name in [
            "brewlytics_nats_published_messages_total",
            "brewlytics_nats_published_bytes_total",
            "brewlytics_nats_duplicates_total",
            "brewlytics_nats_skipped_messages_total",
            "brewlytics_nats_ack_seconds_count",
            "brewlytics_nats_unacknowledged_bytes",
            "brewlytics_nats_unacknowledged_messages",
            "brewlytics_nats_stream_sequence",
            "brewlytics_nats_loader_pending_messages",
            "brewlytics_nats_loader_applied_messages_total",
            "brewlytics_nats_loader_stream_sequence",
        ] {
            assert_eq!(sample(&text, name), Some(0.0), "{name} in\n{text}");
        }
        for kind in ERROR_KINDS {
            let s = format!("brewlytics_nats_errors_total{{kind=\"{kind}\"}}");
            assert_eq!(sample(&text, &s), Some(0.0), "{s}");
        }
        p.in_flight(3, 900);
        p.acked(300, Duration::from_millis(4), false, 17);
        p.acked(300, Duration::from_millis(2), true, 16);
        p.error("ack", "timed out".into());
        l.consumer_info(42, 7);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &r).unwrap();
        assert_eq!(
            sample(&text, "brewlytics_nats_published_messages_total"),
            Some(1.0)
        );
        assert_eq!(
            sample(&text, "brewlytics_nats_published_bytes_total"),
            Some(300.0)
        );
        assert_eq!(sample(&text, "brewlytics_nats_duplicates_total"), Some(1.0));
        assert_eq!(
            sample(&text, "brewlytics_nats_unacknowledged_bytes"),
            Some(900.0)
        );
        assert_eq!(sample(&text, "brewlytics_nats_stream_sequence"), Some(17.0));
        assert_eq!(
            sample(&text, "brewlytics_nats_ack_seconds_count"),
            Some(2.0)
        );
        assert_eq!(
            sample(&text, "brewlytics_nats_errors_total{kind=\"ack\"}"),
            Some(1.0)
        );
        assert_eq!(
            sample(&text, "brewlytics_nats_loader_pending_messages"),
            Some(42.0)
        );
        let live = p.live();
        assert_eq!(
            (live.published, live.duplicates, live.stream_sequence),
            (1, 1, 17)
        );
        assert_eq!(live.last_ack_ms, Some(4.0));
    }
}
