//! The flags of the commands that replicate: the slot, batching, the copy, the sinks
//! (`replicate`, `up`, `resync`, `status`, `load`). Defaults come from the replicator's
//! configuration (`brewlytics_replicator::config`), so a command that builds one without
//! flags (`resync`) gets the same.

use std::net::SocketAddr;

use brewlytics_replicator::batch::BatchLimits;
use brewlytics_replicator::config;
use brewlytics_replicator::schema::partitions::DetachPolicy;
use brewlytics_replicator::sink::nats::{NatsConfig, Retention};
use brewlytics_replicator::sink::olap::OnError;
use brewlytics_replicator::source::snapshot::DEFAULT_WORKERS;
use brewlytics_support::DbUrl;
use clap::Args;

#[derive(Args, Debug, Clone)]
pub struct SlotArgs {
    /// The logical replication slot on OLTP.
    #[arg(long, env = "SLOT_NAME", default_value = config::DEFAULT_SLOT)]
    pub slot: String,
    /// The publication the slot streams (several: comma-separated, streamed together).
    #[arg(long, env = "PUBLICATION", default_value = config::DEFAULT_PUBLICATION)]
    pub publication: String,
}

#[derive(Args, Debug, Clone)]
pub struct ReplicateArgs {
    #[command(flatten)]
    pub slot: SlotArgs,
    /// A change that cannot be applied: `dead-letter` (record it, go on) or `stop`.
    #[arg(long, default_value = "dead-letter")]
    pub on_error: OnError,
    /// The rows of a partition detached or dropped on the source: `keep` them in the replica
    /// (history; the star keeps its facts) or `mirror` the source (remove them).
    #[arg(long, env = "PARTITION_DETACH", default_value = "keep")]
    pub partition_detach: DetachPolicy,
    /// Most changes in one OLAP transaction (larger source transactions are chunked).
    #[arg(long, default_value_t = BatchLimits::default().max_changes)]
    pub batch_max_changes: usize,
    /// How long a committed transaction may wait for others to share its batch, in ms.
    #[arg(long, default_value_t = BatchLimits::default().max_delay.as_millis() as u64)]
    pub batch_max_delay_ms: u64,
    /// Rows per chunk of a backfill (a table copied while the stream runs).
    #[arg(long, env = "BACKFILL_CHUNK_ROWS", default_value_t = config::DEFAULT_BACKFILL_CHUNK_ROWS,
          value_parser = clap::value_parser!(i64).range(1..))]
    pub backfill_chunk_rows: i64,
    #[command(flatten)]
    pub copy: CopyArgs,
    #[command(flatten)]
    pub transactions: super::TransactionArgs,
    /// Where the replicator serves /metrics, /health, /ready, /status and its status page.
    #[arg(
        long = "replicator-listen",
        env = "REPLICATOR_LISTEN",
        default_value = "127.0.0.1:8001"
    )]
    pub listen: SocketAddr,
    /// Heartbeat through the source (and slot reading) interval in ms; 0 turns heartbeats off.
    #[arg(long, env = "HEARTBEAT_INTERVAL_MS", default_value_t = 1000)]
    pub heartbeat_interval_ms: u64,
    /// Warn (log and metric) when the slot retains more WAL than this many MiB.
    #[arg(long, env = "RETAINED_WAL_WARN_MB", default_value_t = 1024)]
    pub retained_wal_warn_mb: u64,
    /// /ready answers 503 when the lag is above this many ms.
    #[arg(long, env = "READY_MAX_LAG_MS", default_value_t = 5000)]
    pub ready_max_lag_ms: u64,
    /// Where changes go besides OLAP: `olap` (OLAP only) or `nats` (OLAP, and every change
    /// published to NATS JetStream, acknowledged before OLAP commits).
    #[arg(long, env = "SINK", default_value = "olap")]
    pub sink: SinkKind,
    #[command(flatten)]
    pub nats: NatsArgs,
    /// How much history the journal keeps: an age (`30d`: changes older than that are
    /// compacted to one image per live key, whole partitions dropped), a size (`50GB`) or
    /// `off` (the journal is a complete audit trail and grows for ever).
    #[arg(long, env = "JOURNAL_RETENTION", default_value = "off")]
    pub journal_retention: brewlytics_replicator::journal::Retention,
    /// Time between passes of the journal's background task (partitions ahead, retention).
    #[arg(long, env = "JOURNAL_MAINTENANCE_INTERVAL_MS", default_value_t = 5000,
          value_parser = clap::value_parser!(u64).range(100..))]
    pub journal_maintenance_interval_ms: u64,
}

/// How a copy of the source (first start, `resync`) runs.
#[derive(Args, Debug, Clone, Copy)]
pub struct CopyArgs {
    /// Tables copied at the same time (each with its own source and OLAP connection).
    #[arg(long, env = "COPY_WORKERS",
          default_value_t = DEFAULT_WORKERS as u16,
          value_parser = clap::value_parser!(u16).range(1..=32))]
    pub copy_workers: u16,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum SinkKind {
    Olap,
    Nats,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LoadFrom {
    Nats,
}

/// NATS JetStream: the servers and the stream (created when missing with these settings).
#[derive(Args, Debug, Clone)]
pub struct NatsArgs {
    /// NATS servers, comma-separated (nats://host:4222,nats://host2:4222).
    #[arg(long, env = "NATS_URL", hide_env_values = true)]
    pub nats_url: Option<String>,
    /// The JetStream stream.
    #[arg(long, env = "NATS_STREAM", default_value = "BREWLYTICS")]
    pub nats_stream: String,
    /// Subjects are `<prefix>.<schema>.<table>` (and `<prefix>.schema`, `<prefix>.backfill`).
    #[arg(long, env = "NATS_SUBJECT_PREFIX", default_value = "brewlytics")]
    pub nats_subject_prefix: String,
    /// Replicas of a stream created here (1 to 5; 3 on a 3-node cluster).
    #[arg(long, env = "NATS_REPLICAS", default_value_t = 1)]
    pub nats_replicas: usize,
    /// Retention of a stream created here: `limits` (kept by age and size) or `interest`
    /// (until every consumer acknowledged).
    #[arg(long, env = "NATS_RETENTION", default_value = "limits")]
    pub nats_retention: Retention,
    /// Maximum age of a created stream's messages, in seconds (0: no limit).
    #[arg(long, env = "NATS_MAX_AGE_SECS", default_value_t = 0)]
    pub nats_max_age_secs: u64,
    /// Maximum size of a created stream, in bytes (-1: no limit).
    #[arg(long, env = "NATS_MAX_BYTES", default_value_t = -1, allow_negative_numbers = true)]
    pub nats_max_bytes: i64,
    /// JetStream's dedup window of a created stream, in seconds: a resend of a message id
    /// seen within it is dropped.
    #[arg(long, env = "NATS_DUPLICATE_WINDOW_SECS", default_value_t = 120)]
    pub nats_duplicate_window_secs: u64,
    /// How long a publish waits for JetStream's acknowledgement before the batch is retried.
    #[arg(long, env = "NATS_ACK_TIMEOUT_MS", default_value_t = 10_000)]
    pub nats_ack_timeout_ms: u64,
}

impl NatsArgs {
    pub fn config(&self) -> Option<NatsConfig> {
        let url = self.nats_url.as_deref()?;
        let mut c = NatsConfig::new(url);
        c.stream = self.nats_stream.clone();
        c.prefix = self.nats_subject_prefix.clone();
        c.replicas = self.nats_replicas;
        c.retention = self.nats_retention;
        c.max_age = std::time::Duration::from_secs(self.nats_max_age_secs);
        c.max_bytes = self.nats_max_bytes;
        c.duplicate_window = std::time::Duration::from_secs(self.nats_duplicate_window_secs);
        c.ack_timeout = std::time::Duration::from_millis(self.nats_ack_timeout_ms.max(100));
        Some(c)
    }
}

impl ReplicateArgs {
    /// `--sink nats` needs a server and valid names: said before anything starts.
    pub fn check(&self) -> anyhow::Result<()> {
        if self.sink == SinkKind::Nats {
            let Some(cfg) = self.nats.config() else {
                anyhow::bail!("--sink nats needs --nats-url (or NATS_URL)");
            };
            cfg.validate().map_err(anyhow::Error::msg)?;
        }
        Ok(())
    }

    /// The NATS settings when changes are published (`--sink nats`).
    pub fn nats_config(&self) -> Option<NatsConfig> {
        match self.sink {
            SinkKind::Nats => self.nats.config(),
            SinkKind::Olap => None,
        }
    }
}

#[derive(Args, Debug)]
pub struct LoadArgs {
    /// Where the changes come from (`nats`).
    #[arg(long)]
    pub from: LoadFrom,
    /// The analytical database to load (the same schema as `migrate` makes; migrated here).
    #[arg(long, env = "OLAP_DATABASE_URL", hide_env_values = true)]
    pub olap_url: DbUrl,
    #[command(flatten)]
    pub nats: NatsArgs,
    /// The durable consumer's name (one per OLAP database fed from the stream).
    #[arg(long, env = "NATS_CONSUMER", default_value = brewlytics_replicator::load::DEFAULT_CONSUMER)]
    pub consumer: String,
    /// Most changes in one OLAP transaction (larger source transactions are applied in parts).
    #[arg(long, default_value_t = BatchLimits::default().max_changes)]
    pub batch_max_changes: usize,
    /// A change that cannot be applied: `dead-letter` (record it, go on) or `stop`.
    #[arg(long, default_value = "dead-letter")]
    pub on_error: OnError,
    /// Where the loader serves /metrics, /health and /status.
    #[arg(long, env = "LOADER_LISTEN", default_value = "127.0.0.1:8003")]
    pub listen: SocketAddr,
    /// The OLTP database whose API keys (auth.api_keys) open the loader's /status and /metrics
    /// (a key with ops:read). Without it, --insecure-no-auth is needed.
    #[arg(long, env = "OLTP_DATABASE_URL", hide_env_values = true)]
    pub oltp_url: Option<DbUrl>,
    #[command(flatten)]
    pub access: super::AccessArgs,
}
