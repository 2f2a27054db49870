//! Clickstream events on NATS JetStream: the API publishes them ([`publish::EventStream`]), the
//! events loader ([`load`]) applies them to OLAP exactly once. Without NATS, events go through
//! the OLTP table `click_events` and the replicator instead, and this module is not used.
//!
//! The events have a stream of their own, beside the change stream: `<stream>_EVENTS` with
//! subjects `<prefix>_events.impression` and `<prefix>_events.click` (`BREWLYTICS_EVENTS`,
//! `brewlytics_events.*` by default), the same replicas, retention and dedup window. Each
//! message is one event as JSON ([`wire::WireEvent`]), its message id the event's id, so
//! JetStream drops a publish it has seen within the dedup window; the facts are keyed by the
//! event id too, so a message loaded twice counts once.

pub mod load;
pub mod publish;
pub mod wire;

use crate::sink::nats::NatsConfig;

/// The events stream's settings, from the change stream's (`cfg`).
pub fn events_config(cfg: &NatsConfig) -> NatsConfig {
    let mut c = cfg.clone();
    c.stream = format!("{}_EVENTS", cfg.stream);
    c.prefix = format!("{}_events", cfg.prefix);
    c
}

/// The subject of an event of `kind`.
pub fn subject(events: &NatsConfig, kind: &str) -> String {
    format!("{}.{kind}", events.prefix)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_events_stream_is_beside_the_change_stream() {
        let c = events_config(&NatsConfig::new("nats://127.0.0.1:4222"));
        assert_eq!(c.stream, "BREWLYTICS_EVENTS");
        assert_eq!(subject(&c, "click"), "brewlytics_events.click");
        // Not under the change stream's `brewlytics.>`.
        assert!(!subject(&c, "click").starts_with("brewlytics."));
        assert!(c.validate().is_ok());
    }
}
