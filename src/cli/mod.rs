//! Command-line interface: every subcommand's flags, parsed (and their values checked)
//! before the runtime starts. Every flag that names a database or address mirrors an
//! environment variable (`OLTP_DATABASE_URL`, `API_LISTEN`, `SLOT_NAME`, …). The commands
//! themselves are in `commands/`.

pub mod access;
mod insights;
mod journal;
mod replicate;
mod transactions;

use std::net::SocketAddr;
use std::path::PathBuf;

use brewlytics_support::telemetry::LogFormat;
use brewlytics_support::DbUrl;
use clap::{Args, Parser, Subcommand};

pub use access::{AccessArgs, ApiKeyCommand};
pub use insights::{
    BiArgs, DashboardArgs, DashboardsCommand, DbtEnvArgs, ReportArgs, SupersetArgs, SupersetUpArgs,
    SUPERSET_ADMIN,
};
pub use journal::JournalCommand;
pub use replicate::{CopyArgs, LoadArgs, LoadFrom, NatsArgs, ReplicateArgs, SlotArgs};
pub use transactions::TransactionArgs;

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
        superset: SupersetUpArgs,
        #[command(flatten)]
        access: AccessArgs,
        #[command(flatten)]
        events: crate::commands::events::EventsArgs,
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
        #[command(flatten)]
        access: AccessArgs,
        /// With --nats-url, `POST /events` publishes to the JetStream events stream
        /// (`<stream>_EVENTS`) instead of writing OLTP.
        #[command(flatten)]
        nats: NatsArgs,
        #[command(flatten)]
        events: crate::commands::events::EventsArgs,
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
    /// The journal `cdc_events`: `compact --before LSN|AGE` replaces its history before the
    /// cut with one image per live key (replay then starts at the cut or later).
    Journal {
        #[command(subcommand)]
        command: JournalCommand,
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
    Report(ReportArgs),
    /// The built-in BI dashboard (charts and tables that refresh while orders flow).
    Dashboard(DashboardArgs),
    /// coffee_olap's connection as shell exports for the dbt project in dbt/:
    /// `eval "$(brewlytics dbt-env)"`.
    DbtEnv(DbtEnvArgs),
    /// The coffee dashboard in a BI tool: `provision` (Metabase) or `superset` creates or
    /// updates it.
    Dashboards {
        #[command(subcommand)]
        command: DashboardsCommand,
    },
}
