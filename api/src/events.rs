//! Where accepted events go. Without a publisher (the embedded default) they are inserted into
//! the published OLTP table `click_events` ([`crate::data::events`]); with one (the binary
//! gives a JetStream publisher when `--nats-url` is set) they are published and never touch
//! OLTP. Either way `POST /events` answers 202 only once they are stored or acknowledged.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use crate::domain::event::{Event, EventError};
use crate::domain::rate::TokenBucket;

/// Events per second `POST /events` accepts by default (a burst of twice that).
pub const DEFAULT_EVENTS_PER_SECOND: u32 = 5_000;

/// Publishes events to a log. Contract: `publish` returns Ok only once the log has stored
/// every event durably (for JetStream: acknowledged), each under its id as message id so that
/// publishing the same events again stores nothing new; on Err some may have been stored.
pub trait EventPublisher: Send + Sync {
    fn publish<'a>(
        &'a self,
        events: &'a [Event],
    ) -> Pin<Box<dyn Future<Output = Result<(), String>> + Send + 'a>>;
}

/// The events settings of an [`crate::ApiState`].
#[derive(Clone)]
pub struct EventsConfig {
    /// None: the OLTP table.
    pub publisher: Option<Arc<dyn EventPublisher>>,
    limit: Arc<Mutex<TokenBucket>>,
}

impl Default for EventsConfig {
    fn default() -> Self {
        Self::new(None, DEFAULT_EVENTS_PER_SECOND)
    }
}

impl EventsConfig {
    /// `per_second` events a second (0: no limit), a burst of twice that.
    pub fn new(publisher: Option<Arc<dyn EventPublisher>>, per_second: u32) -> Self {
        Self {
            publisher,
            limit: Arc::new(Mutex::new(TokenBucket::new(
                per_second,
                per_second.saturating_mul(2),
            ))),
        }
    }

    /// Takes `n` events from the rate limit, or says it is exceeded.
    pub fn admit(&self, n: usize) -> Result<(), EventError> {
        let mut bucket = self.limit.lock().unwrap_or_else(|p| p.into_inner());
        if bucket.take(n, Instant::now()) {
            Ok(())
        } else {
            Err(EventError::RateLimited(bucket.rate()))
        }
    }
}
