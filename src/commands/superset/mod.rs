//! Apache Superset: `brewlytics dashboards superset` provisions any Superset with the coffee
//! dashboard; `brewlytics up --superset` also runs one locally ([`local`]) and provisions it.

pub mod local;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::Context;
use brewlytics_dashboards::connection::{OlapConnection, Secret, Target};
use brewlytics_dashboards::definition::Definition;
use brewlytics_dashboards::superset;
use clap::Args;

use super::bi::{self, BiArgs};
use crate::cli::DbArgs;

#[derive(Args, Debug)]
pub struct ProvisionArgs {
    /// Superset's address, e.g. http://127.0.0.1:8088.
    #[arg(long, env = "SUPERSET_URL")]
    pub url: String,
    /// A Superset administrator's user name.
    #[arg(long, env = "SUPERSET_USER", default_value = local::ADMIN)]
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
pub struct UpArgs {
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

/// `brewlytics dashboards superset`.
pub async fn provision(args: ProvisionArgs) -> anyhow::Result<()> {
    let password = match args.password {
        Some(p) => p,
        None => {
            let file = local::admin_password_file(&args.db.data_dir);
            std::fs::read_to_string(&file)
                .map(|t| t.trim().to_owned())
                .with_context(|| {
                    format!(
                        "no --password (SUPERSET_PASSWORD) given, and no {} of `up --superset`",
                        file.display()
                    )
                })?
        }
    };
    let olap = bi::connection(&args.db, &args.bi, args.olap_host.as_deref())?;
    let target = Target {
        url: args.url,
        user: args.user,
        password: Secret::new(password),
    };
    let done = superset::provision(&target, &olap, &Definition::load()?).await?;
    println!("Superset provisioned: {done}");
    Ok(())
}

/// A local Superset, provisioned: what `up` prints and stops.
pub struct Running {
    pub superset: local::LocalSuperset,
    pub dashboard_url: String,
}

/// Starts the local Superset of `data_dir` and provisions it with the coffee dashboard over
/// `olap` (the read-only role).
pub async fn start(
    args: &UpArgs,
    data_dir: &Path,
    olap: &OlapConnection,
) -> anyhow::Result<Running> {
    let running =
        local::LocalSuperset::start(&args.superset_venv, data_dir, args.superset_listen).await?;
    let target = Target {
        url: running.url.clone(),
        user: local::ADMIN.into(),
        password: running.password.clone(),
    };
    match superset::provision(&target, olap, &Definition::load()?).await {
        Ok(done) => {
            tracing::info!(%done, "superset provisioned");
            Ok(Running {
                superset: running,
                dashboard_url: done.dashboard_url,
            })
        }
        Err(e) => {
            running.stop().await;
            Err(anyhow::Error::new(e).context("provisioning Superset"))
        }
    }
}
