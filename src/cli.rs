//! Command-line interface. Every flag that names a database or address mirrors an
//! environment variable (DESIGN.md's names).

use std::net::SocketAddr;
use std::path::PathBuf;

use brewlytics_support::telemetry::LogFormat;
use brewlytics_support::DbUrl;
use clap::{Args, Parser, Subcommand};

pub mod access;

pub use access::{AccessArgs, ApiKeyCommand};

#[derive(Parser, Debug)]
#[command(
    name = "brewlytics",
    version,
    about = "Coffee-shop analytics: a PostgreSQL logical-replication CDC pipeline"
)]
pub struct Cli {
    /// Log format on stderr: text or json.
    #[arg(long, env = "LOG_FORMAT", default_value = "text", global = true)]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Args, Debug, Clone)]
pub struct DbArgs {
    /// The transactional database. Default: the embedded cluster of --data-dir, if running.
    #[arg(long, env = "OLTP_DATABASE_URL", hide_env_values = true)]
    pub oltp_url: Option<DbUrl>,
    /// The analytical database. Default: the embedded cluster of --data-dir, if running.
    #[arg(long, env = "OLAP_DATABASE_URL", hide_env_values = true)]
    pub olap_url: Option<DbUrl>,
    /// Where `brewlytics up` keeps its embedded PostgreSQL.
    #[arg(long, env = "BREWLYTICS_DATA_DIR", default_value = ".brewlytics")]
    pub data_dir: PathBuf,
}

#[derive(Args, Debug, Clone)]
pub struct SlotArgs {
    /// The logical replication slot on OLTP.
    #[arg(long, env = "SLOT_NAME", default_value = "brewlytics")]
    pub slot: String,
    /// The publication the slot streams (several: comma-separated, streamed together).
    #[arg(long, env = "PUBLICATION", default_value = "brewlytics")]
    pub publication: String,
}

#[derive(Args, Debug, Clone)]
pub struct ReplicateArgs {
    #[command(flatten)]
    pub slot: SlotArgs,
    /// A change that cannot be applied: `dead-letter` (record it, go on) or `stop`.
    #[arg(long, default_value = "dead-letter")]
    pub on_error: brewlytics_replicator::sink::olap::OnError,
    /// The rows of a partition detached or dropped on the source: `keep` them in the replica
    /// (history; the star keeps its facts) or `mirror` the source (remove them).
    #[arg(long, env = "PARTITION_DETACH", default_value = "keep")]
    pub partition_detach: brewlytics_replicator::schema::partitions::DetachPolicy,
    /// Most changes in one OLAP transaction (larger source transactions are chunked).
    #[arg(long, default_value_t = 10_000)]
    pub batch_max_changes: usize,
    /// How long a committed transaction may wait for others to share its batch, in ms.
    #[arg(long, default_value_t = 20)]
    pub batch_max_delay_ms: u64,
    /// Rows per chunk of a backfill (a table copied while the stream runs).
    #[arg(long, env = "BACKFILL_CHUNK_ROWS", default_value_t = 20_000,
          value_parser = clap::value_parser!(i64).range(1..))]
    pub backfill_chunk_rows: i64,
    #[command(flatten)]
    pub copy: CopyArgs,
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
}

/// How a copy of the source (first start, `resync`) runs.
#[derive(Args, Debug, Clone, Copy)]
pub struct CopyArgs {
    /// Tables copied at the same time (each with its own source and OLAP connection).
    #[arg(long, env = "COPY_WORKERS",
          default_value_t = brewlytics_replicator::source::snapshot::DEFAULT_WORKERS as u16,
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
    pub nats_retention: brewlytics_replicator::sink::nats::Retention,
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
    /// No NATS (commands that do not publish).
    pub fn disabled() -> Self {
        Self {
            nats_url: None,
            nats_stream: "BREWLYTICS".into(),
            nats_subject_prefix: "brewlytics".into(),
            nats_replicas: 1,
            nats_retention: Default::default(),
            nats_max_age_secs: 0,
            nats_max_bytes: -1,
            nats_duplicate_window_secs: 120,
            nats_ack_timeout_ms: 10_000,
        }
    }

    pub fn config(&self) -> Option<brewlytics_replicator::sink::nats::NatsConfig> {
        let url = self.nats_url.as_deref()?;
        let mut c = brewlytics_replicator::sink::nats::NatsConfig::new(url);
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
    pub fn nats_config(&self) -> Option<brewlytics_replicator::sink::nats::NatsConfig> {
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
    #[arg(long, env = "NATS_CONSUMER", default_value = "brewlytics-loader")]
    pub consumer: String,
    /// Most changes in one OLAP transaction (larger source transactions are applied in parts).
    #[arg(long, default_value_t = 10_000)]
    pub batch_max_changes: usize,
    /// A change that cannot be applied: `dead-letter` (record it, go on) or `stop`.
    #[arg(long, default_value = "dead-letter")]
    pub on_error: brewlytics_replicator::sink::olap::OnError,
    /// Where the loader serves /metrics, /health and /status.
    #[arg(long, env = "LOADER_LISTEN", default_value = "127.0.0.1:8003")]
    pub listen: SocketAddr,
    /// The OLTP database whose API keys (auth.api_keys) open the loader's /status and /metrics
    /// (a key with ops:read). Without it, --insecure-no-auth is needed.
    #[arg(long, env = "OLTP_DATABASE_URL", hide_env_values = true)]
    pub oltp_url: Option<DbUrl>,
    #[command(flatten)]
    pub access: AccessArgs,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// The whole pipeline on this machine: embedded PostgreSQL (unless URLs are given),
    /// migrations, sample data, the API and the replicator.
    Up {
        #[command(flatten)]
        db: DbArgs,
        #[arg(long, env = "API_LISTEN", default_value = "127.0.0.1:8000")]
        api_listen: SocketAddr,
        /// Historical orders to seed on the first start (when there are none).
        #[arg(long, default_value_t = 500)]
        seed_orders: u32,
        /// Where the built-in dashboard listens.
        #[arg(long, env = "DASHBOARD_LISTEN", default_value = "127.0.0.1:8002")]
        dashboard_listen: SocketAddr,
        #[command(flatten)]
        replicate: ReplicateArgs,
        #[command(flatten)]
        superset: crate::commands::superset::UpArgs,
        #[command(flatten)]
        events: crate::commands::events::EventsArgs,
        #[command(flatten)]
        access: AccessArgs,
    },
    /// Apply the schema migrations of both databases (idempotent).
    Migrate {
        #[command(flatten)]
        db: DbArgs,
        /// Migrate even when the OLTP server cannot do logical replication (wal_level).
        #[arg(long)]
        no_source_check: bool,
    },
    /// Sample master data, and optionally historical orders, through the API's code path.
    Seed {
        #[command(flatten)]
        db: DbArgs,
        /// Historical orders to add.
        #[arg(long, default_value_t = 0)]
        orders: u32,
        /// Spread them over this many past days.
        #[arg(long, default_value_t = 28)]
        days: u32,
        /// Random seed, for reproducible data.
        #[arg(long, default_value_t = 7)]
        rng_seed: u64,
    },
    /// The REST API over OLTP.
    Api {
        #[command(flatten)]
        db: DbArgs,
        #[arg(long, env = "API_LISTEN", default_value = "127.0.0.1:8000")]
        listen: SocketAddr,
        /// Serve only these domains (comma-separated: orders,products,customers,employees,stores,inventory,events).
        #[arg(long, value_delimiter = ',')]
        services: Vec<brewlytics_api::Service>,
        /// With --nats-url, `POST /events` publishes to the JetStream events stream
        /// (`<stream>_EVENTS`) instead of writing OLTP.
        #[command(flatten)]
        nats: NatsArgs,
        #[command(flatten)]
        events: crate::commands::events::EventsArgs,
        #[command(flatten)]
        access: AccessArgs,
    },
    /// The CDC replicator daemon (SIGTERM finishes the batch and exits 0).
    Replicate {
        #[command(flatten)]
        db: DbArgs,
        #[command(flatten)]
        replicate: ReplicateArgs,
        #[command(flatten)]
        access: AccessArgs,
    },
    /// API keys for the API, the dashboard and the replicator's endpoints: create, list,
    /// revoke.
    ApiKey {
        #[command(subcommand)]
        command: ApiKeyCommand,
    },
    /// Apply a change stream to OLAP exactly once: `--from nats` reads the JetStream stream
    /// `replicate --sink nats` publishes, with a durable consumer (on another machine, or
    /// into another OLAP database).
    Load(LoadArgs),
    /// Slot, checkpoint and lag (and, with --nats-url, the change stream and its consumers' lag).
    Status {
        #[command(flatten)]
        db: DbArgs,
        #[command(flatten)]
        slot: SlotArgs,
        #[command(flatten)]
        nats: NatsArgs,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Rebuild replica and star tables from the journal, from an LSN (e.g. 0/0).
    Replay {
        #[command(flatten)]
        db: DbArgs,
        #[arg(long)]
        from_lsn: brewlytics_replicator::lsn::Lsn,
    },
    /// Copy one published table again while the replicator streams (chunked, resumable,
    /// consistent with the stream); shows its progress until it is done.
    Snapshot {
        #[command(flatten)]
        db: DbArgs,
        #[command(flatten)]
        slot: SlotArgs,
        /// The table: `name` (schema public) or `schema.name`.
        #[arg(long)]
        table: String,
        /// Request the copy and return at once.
        #[arg(long)]
        no_wait: bool,
    },
    /// Copy the source again under a new slot (after the slot was lost or dropped).
    Resync {
        #[command(flatten)]
        db: DbArgs,
        #[command(flatten)]
        slot: SlotArgs,
        #[command(flatten)]
        copy: CopyArgs,
    },
    /// Drive the API like a morning rush; report throughput, latency and end-to-end freshness.
    Loadtest {
        #[command(flatten)]
        db: DbArgs,
        #[command(flatten)]
        args: brewlytics_loadtest::LoadtestArgs,
    },
    /// Answer a business question from coffee_olap (csv, json or table); `--list` shows them.
    Report(crate::commands::insights::ReportArgs),
    /// The built-in BI dashboard (charts and tables that refresh while orders flow).
    Dashboard(crate::commands::insights::DashboardArgs),
    /// coffee_olap's connection as shell exports for the dbt project in dbt/:
    /// `eval "$(brewlytics dbt-env)"`.
    DbtEnv(crate::commands::dbt::DbtEnvArgs),
    /// The coffee dashboard in a BI tool: `provision` (Metabase) or `superset` creates or
    /// updates it.
    Dashboards {
        #[command(subcommand)]
        command: crate::commands::insights::DashboardsCommand,
    },
}
