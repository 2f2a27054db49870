//! The NATS JetStream sink: every change published as a Debezium-compatible envelope
//! ([`envelope`]), beside the OLAP sink.
//!
//! Per batch, the applier applies the batch in OLAP's open transaction, publishes its changes
//! ([`publish::NatsSink`]), waits until JetStream has acknowledged every one of them, and only
//! then commits OLAP (journal, replica, star, checkpoint — and the stream sequence reached,
//! `cdc_nats_published`); the source hears of the position after that. A crash anywhere
//! re-sends, after the checkpoint, messages with the same ids: JetStream drops them within
//! its dedup window, and beyond it the publisher, which read the messages after the committed
//! stream sequence at start, does not send them again.
//!
//! The stream is created when missing ([`ensure_stream`]): subjects `<prefix>.>`, and the
//! replicas, retention, age and dedup window of [`NatsConfig`].

pub mod envelope;
pub mod publish;
pub mod read;

use std::time::Duration;

use async_nats::jetstream::{self, stream};

pub use crate::telemetry::nats::{ConsumerLag, StreamReport};
pub use publish::NatsSink;

/// How a stream keeps its messages (JetStream's retention policy).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Retention {
    /// Until the stream's limits (age, bytes): a log many consumers read at their pace.
    #[default]
    Limits,
    /// Until every consumer has acknowledged them.
    Interest,
}

impl std::str::FromStr for Retention {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "limits" => Ok(Self::Limits),
            "interest" => Ok(Self::Interest),
            other => Err(format!("unknown retention {other:?} (limits or interest)")),
        }
    }
}

#[derive(Clone)]
pub struct NatsConfig {
    /// Server URLs, comma-separated (`nats://127.0.0.1:4222,nats://127.0.0.1:4223`).
    pub url: String,
    /// The subject prefix: changes go to `<prefix>.<schema>.<table>`.
    pub prefix: String,
    pub stream: String,
    pub replicas: usize,
    pub retention: Retention,
    /// Zero: messages are kept for ever (within `max_bytes`).
    pub max_age: Duration,
    /// -1: no bound.
    pub max_bytes: i64,
    /// JetStream drops a publish whose message id it has seen within this window.
    pub duplicate_window: Duration,
    /// How long a publish may wait for its acknowledgement before the batch is retried.
    pub ack_timeout: Duration,
}

impl std::fmt::Debug for NatsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsConfig")
            .field("url", &redact_url(&self.url))
            .field("prefix", &self.prefix)
            .field("stream", &self.stream)
            .field("replicas", &self.replicas)
            .field("retention", &self.retention)
            .field("duplicate_window", &self.duplicate_window)
            .finish_non_exhaustive()
    }
}

impl NatsConfig {
    pub fn new(url: &str) -> Self {
        Self {
            url: url.to_owned(),
            prefix: "brewlytics".into(),
            stream: "BREWLYTICS".into(),
            replicas: 1,
            retention: Retention::Limits,
            max_age: Duration::ZERO,
            max_bytes: -1,
            duplicate_window: Duration::from_secs(120),
            ack_timeout: Duration::from_secs(10),
        }
    }

    /// Checks names before anything connects.
    pub fn validate(&self) -> Result<(), String> {
        let ok_token = |s: &str| {
            !s.is_empty()
                && s.split('.').all(|t| {
                    !t.is_empty() && !t.chars().any(|c| c == '*' || c == '>' || c.is_whitespace())
                })
        };
        if !ok_token(&self.prefix) {
            return Err(format!(
                "--nats-subject-prefix {:?} is not a subject prefix (tokens without spaces, * or >)",
                self.prefix
            ));
        }
        if self.stream.is_empty()
            || self
                .stream
                .chars()
                .any(|c| c == '.' || c == '*' || c == '>' || c.is_whitespace())
        {
            return Err(format!(
                "--nats-stream {:?} is not a stream name (no spaces, '.', '*' or '>')",
                self.stream
            ));
        }
        if !(1..=5).contains(&self.replicas) {
            return Err(format!(
                "--nats-replicas {} must be between 1 and 5",
                self.replicas
            ));
        }
        if servers(&self.url).is_empty() {
            return Err("--nats-url names no server".into());
        }
        Ok(())
    }

    /// The servers as they may be shown (passwords and tokens as `***`).
    pub fn shown_servers(&self) -> String {
        redact_url(&self.url)
    }
}

/// `nats://user:secret@host` → `nats://user:***@host`, for every comma-separated server.
pub fn redact_url(url: &str) -> String {
    servers(url)
        .iter()
        .map(|s| match (s.find("://"), s.rfind('@')) {
            (Some(scheme), Some(at)) if at > scheme => {
                let userinfo = &s[scheme + 3..at];
                let user = userinfo.split(':').next().unwrap_or("");
                if userinfo.contains(':') {
                    format!("{}{user}:***{}", &s[..scheme + 3], &s[at..])
                } else {
                    format!("{}***{}", &s[..scheme + 3], &s[at..])
                }
            }
            _ => s.clone(),
        })
        .collect::<Vec<_>>()
        .join(",")
}

fn servers(url: &str) -> Vec<String> {
    url.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

#[derive(Debug, thiserror::Error)]
pub enum NatsError {
    #[error("connecting to NATS ({servers}): {message}")]
    Connect { servers: String, message: String },
    #[error("JetStream stream {stream}: {message}")]
    Stream { stream: String, message: String },
    #[error("publishing to JetStream: {0}")]
    Publish(String),
    #[error("waiting for JetStream's acknowledgement: {0}")]
    Ack(String),
    #[error("JetStream consumer: {0}")]
    Consumer(String),
    #[error("a message of the stream cannot be read: {0}")]
    Message(String),
    #[error("OLAP: {}", crate::redact::db_error(.0))]
    Olap(#[from] sqlx::Error),
    #[error("{0}")]
    Config(String),
}

impl NatsError {
    /// NATS being away is waited out; a stream that cannot take our subjects, or a message
    /// that cannot be read, is not.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Config(_) | Self::Message(_) => false,
            Self::Olap(e) => crate::redact::classify(e) == crate::redact::Class::Transient,
            _ => true,
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Self::Connect { .. } => "connect",
            Self::Stream { .. } | Self::Config(_) => "stream",
            Self::Publish(_) => "publish",
            Self::Ack(_) => "ack",
            Self::Consumer(_) => "consumer",
            Self::Message(_) => "message",
            Self::Olap(_) => "olap",
        }
    }
}

/// A client connected to `cfg`'s servers (it reconnects by itself afterwards); `on_event`
/// hears of disconnections.
pub async fn connect(
    cfg: &NatsConfig,
    name: &str,
    on_event: impl Fn(bool) + Send + Sync + 'static,
) -> Result<async_nats::Client, NatsError> {
    let on_event = std::sync::Arc::new(on_event);
    async_nats::ConnectOptions::new()
        .name(name)
        .connection_timeout(Duration::from_secs(5))
        .request_timeout(Some(cfg.ack_timeout))
        .event_callback(move |event| {
            let on_event = on_event.clone();
            async move {
                match event {
                    async_nats::Event::Connected => on_event(true),
                    async_nats::Event::Disconnected => {
                        tracing::warn!("disconnected from NATS; reconnecting");
                        on_event(false)
                    }
                    _ => {}
                }
            }
        })
        .connect(servers(&cfg.url).as_slice())
        .await
        .map_err(|e| NatsError::Connect {
            servers: cfg.shown_servers(),
            message: e.to_string(),
        })
}

/// The JetStream context for `client`, with `cfg`'s acknowledgement timeout.
pub fn context(cfg: &NatsConfig, client: async_nats::Client) -> jetstream::Context {
    jetstream::ContextBuilder::new()
        .timeout(cfg.ack_timeout)
        .ack_timeout(cfg.ack_timeout)
        .build(client)
}

/// The stream, created if missing. An existing stream must take `<prefix>.>`.
pub async fn ensure_stream(
    js: &jetstream::Context,
    cfg: &NatsConfig,
) -> Result<stream::Stream, NatsError> {
    let err = |message: String| NatsError::Stream {
        stream: cfg.stream.clone(),
        message,
    };
    let subject = format!("{}.>", cfg.prefix);
    match js.get_stream(&cfg.stream).await {
        Ok(mut s) => {
            let info = s.info().await.map_err(|e| err(e.to_string()))?;
            let covers = info
                .config
                .subjects
                .iter()
                .any(|x| x == &subject || x == ">");
            if !covers {
                return Err(NatsError::Config(format!(
                    "JetStream stream {} exists with subjects {:?}, which do not take {subject}: \
                     add it to the stream or choose another --nats-stream",
                    cfg.stream, info.config.subjects
                )));
            }
            Ok(s)
        }
        Err(e)
            if matches!(
                e.kind(),
                jetstream::context::GetStreamErrorKind::JetStream(j)
                    if j.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND
            ) =>
        {
            tracing::info!(stream = %cfg.stream, subjects = %subject, replicas = cfg.replicas,
                "creating the JetStream stream");
            js.create_stream(stream::Config {
                name: cfg.stream.clone(),
                subjects: vec![subject],
                num_replicas: cfg.replicas,
                retention: match cfg.retention {
                    Retention::Limits => stream::RetentionPolicy::Limits,
                    Retention::Interest => stream::RetentionPolicy::Interest,
                },
                max_age: cfg.max_age,
                max_bytes: cfg.max_bytes,
                duplicate_window: cfg.duplicate_window,
                storage: stream::StorageType::File,
                allow_direct: true,
                description: Some(
                    "Brewlytics change stream (Debezium-compatible envelopes)".into(),
                ),
                ..Default::default()
            })
            .await
            .map_err(|e| err(format!("creating it: {e}")))
        }
        Err(e) => Err(err(e.to_string())),
    }
}

pub async fn stream_report(s: &stream::Stream) -> Result<StreamReport, NatsError> {
    use futures_util::StreamExt;
    let err = |e: String| NatsError::Stream {
        stream: s.cached_info().config.name.clone(),
        message: e,
    };
    let info = s.get_info().await.map_err(|e| err(e.to_string()))?;
    let mut consumers = Vec::new();
    let mut list = s.consumers();
    while let Some(c) = list.next().await {
        let c = c.map_err(|e| err(e.to_string()))?;
        consumers.push(ConsumerLag {
            name: c.name,
            pending_messages: c.num_pending,
            ack_pending_messages: c.num_ack_pending,
            ack_floor_stream_seq: c.ack_floor.stream_sequence,
        });
    }
    Ok(StreamReport {
        stream: info.config.name.clone(),
        messages: info.state.messages,
        bytes: info.state.bytes,
        first_seq: info.state.first_sequence,
        last_seq: info.state.last_sequence,
        replicas: info.config.num_replicas,
        leader: info.cluster.and_then(|c| c.leader),
        consumers,
    })
}

/// [`stream_report`] of `cfg`'s stream (for `brewlytics status --nats-url`).
pub async fn report(cfg: &NatsConfig) -> Result<StreamReport, NatsError> {
    let client = connect(cfg, "brewlytics-status", |_| {}).await?;
    let js = context(cfg, client);
    let s = js
        .get_stream(&cfg.stream)
        .await
        .map_err(|e| NatsError::Stream {
            stream: cfg.stream.clone(),
            message: e.to_string(),
        })?;
    stream_report(&s).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_not_shown() {
        assert_eq!(
            redact_url("nats://app:s3cret@10.0.0.1:4222, nats://h2:4222"),
            "nats://app:***@10.0.0.1:4222,nats://h2:4222"
        );
        assert_eq!(redact_url("nats://tok3n@h:4222"), "nats://***@h:4222");
        let cfg = NatsConfig::new("nats://u:pw@h:1");
        assert!(!format!("{cfg:?}").contains("pw"));
    }

    #[test]
    fn names_are_checked() {
        let mut cfg = NatsConfig::new("nats://127.0.0.1:4222");
        assert!(cfg.validate().is_ok());
        cfg.prefix = "a.>".into();
        assert!(cfg.validate().is_err());
        cfg.prefix = "cdc.coffee".into();
        cfg.stream = "A.B".into();
        assert!(cfg.validate().is_err());
        cfg.stream = "S".into();
        cfg.replicas = 7;
        assert!(cfg.validate().is_err());
        cfg.replicas = 3;
        assert!(cfg.validate().is_ok());
        assert!(NatsConfig::new(" , ").validate().is_err());
        assert_eq!("interest".parse(), Ok(Retention::Interest));
    }
}
