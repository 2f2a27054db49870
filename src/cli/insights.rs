//! The flags of the commands that read the warehouse: `report`, `dashboard`, `dashboards
//! provision|superset`, `dbt-env`, and `up --superset`.

use std::net::SocketAddr;
use std::path::PathBuf;

use brewlytics_support::DbUrl;
use clap::{Args, Subcommand};

use super::DbArgs;

#[derive(Args, Debug)]
pub struct ReportArgs {
    /// The question (`--list` shows them all).
    #[arg(required_unless_present = "list")]
    pub name: Option<String>,
    /// List the questions and their parameters.
    #[arg(long, conflicts_with = "name")]
    pub list: bool,
    /// First day (UTC, inclusive), YYYY-MM-DD.
    #[arg(long, value_name = "DATE")]
    pub from: Option<String>,
    /// Last day (UTC, inclusive), YYYY-MM-DD.
    #[arg(long, value_name = "DATE")]
    pub to: Option<String>,
    /// Only this store (its id).
    #[arg(long, value_name = "ID")]
    pub store: Option<String>,
    /// At most this many rows (questions that rank).
    #[arg(long, value_name = "N")]
    pub limit: Option<String>,
    /// csv, json or table.
    #[arg(long, default_value = "csv")]
    pub format: String,
    /// Write to this file instead of standard output.
    #[arg(long, value_name = "FILE")]
    pub output: Option<PathBuf>,
    #[command(flatten)]
    pub db: DbArgs,
}

#[derive(Args, Debug)]
pub struct DashboardArgs {
    /// Where the dashboard listens.
    #[arg(long, env = "DASHBOARD_LISTEN", default_value = "127.0.0.1:8002")]
    pub listen: SocketAddr,
    #[command(flatten)]
    pub db: DbArgs,
    #[command(flatten)]
    pub access: super::AccessArgs,
}

#[derive(Subcommand, Debug)]
pub enum DashboardsCommand {
    /// Create or update the Brewlytics dashboard, its cards and the coffee_olap database in
    /// Metabase (idempotent).
    Provision(ProvisionArgs),
    /// Create or update the Brewlytics dashboard, its charts and datasets and the coffee_olap
    /// database in Apache Superset (idempotent).
    Superset(SupersetArgs),
}

#[derive(Args, Debug)]
pub struct ProvisionArgs {
    /// Metabase's address, e.g. http://localhost:3000.
    #[arg(long, env = "METABASE_URL")]
    pub metabase_url: String,
    /// A Metabase administrator's login (email).
    #[arg(long, env = "METABASE_USER")]
    pub user: String,
    /// Their password.
    #[arg(long, env = "METABASE_PASSWORD", hide_env_values = true)]
    pub password: String,
    /// The host name at which Metabase reaches coffee_olap, when it differs from the URL's
    /// (e.g. host.docker.internal for Metabase in a container).
    #[arg(long, env = "METABASE_OLAP_HOST")]
    pub olap_host: Option<String>,
    #[command(flatten)]
    pub bi: BiArgs,
    #[command(flatten)]
    pub db: DbArgs,
}

/// The user `up --superset` makes Superset's administrator.
pub const SUPERSET_ADMIN: &str = "admin";

/// `brewlytics dashboards superset`.
#[derive(Args, Debug)]
pub struct SupersetArgs {
    /// Superset's address, e.g. http://127.0.0.1:8088.
    #[arg(long, env = "SUPERSET_URL")]
    pub url: String,
    /// A Superset administrator's user name.
    #[arg(long, env = "SUPERSET_USER", default_value = SUPERSET_ADMIN)]
    pub user: String,
    /// Their password. Default: the one `up --superset` keeps in
    /// <data dir>/superset/admin.password.
    #[arg(long, env = "SUPERSET_PASSWORD", hide_env_values = true)]
    pub password: Option<String>,
    /// The host name at which Superset reaches coffee_olap, when it differs from the URL's.
    #[arg(long, env = "SUPERSET_OLAP_HOST")]
    pub olap_host: Option<String>,
    #[command(flatten)]
    pub bi: BiArgs,
    #[command(flatten)]
    pub db: DbArgs,
}

/// `up --superset` and its settings.
#[derive(Args, Debug, Clone)]
pub struct SupersetUpArgs {
    /// Also run Apache Superset (installed by scripts/install-superset), provisioned with the
    /// coffee dashboard over the read-only role.
    #[arg(long)]
    pub superset: bool,
    /// Where Superset listens.
    #[arg(long, env = "SUPERSET_LISTEN", default_value = "127.0.0.1:8088")]
    pub superset_listen: SocketAddr,
    /// The virtual environment Superset is installed in.
    #[arg(long, env = "SUPERSET_VENV", default_value = ".venv-superset")]
    pub superset_venv: PathBuf,
    #[command(flatten)]
    pub bi: BiArgs,
}

/// Which database URL a BI tool (Metabase, Superset) connects to coffee_olap with.
#[derive(Args, Debug, Clone)]
pub struct BiArgs {
    /// The URL the BI tool connects to coffee_olap with: a read-only role, such as
    /// brewlytics_reader of deploy/roles.sql. Default: the embedded cluster's
    /// brewlytics_reader, else OLAP_DATABASE_URL.
    #[arg(long, env = "BI_DATABASE_URL", hide_env_values = true)]
    pub bi_url: Option<DbUrl>,
}

#[derive(Args, Debug)]
pub struct DbtEnvArgs {
    /// The analytical database. Default: the embedded cluster of --data-dir, if running.
    #[arg(long, env = "OLAP_DATABASE_URL", hide_env_values = true)]
    pub olap_url: Option<DbUrl>,
    /// Where `brewlytics up` keeps its embedded PostgreSQL.
    #[arg(long, env = "BREWLYTICS_DATA_DIR", default_value = ".brewlytics")]
    pub data_dir: PathBuf,
    /// The dbt project. When it exists, DBT_PROJECT_DIR and DBT_PROFILES_DIR are exported
    /// too (absolute), so `dbt` runs it from any directory.
    #[arg(long, default_value = "dbt")]
    pub project_dir: PathBuf,
}
