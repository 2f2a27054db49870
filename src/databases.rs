//! Which databases a command talks to: the URLs given, or the embedded cluster.

use std::path::Path;

use anyhow::{bail, Context};
use brewlytics_support::cluster::SUPERUSER;
use brewlytics_support::{ClusterOptions, DbUrl, EmbeddedCluster};
use sqlx::postgres::PgPoolOptions;
use sqlx::PgPool;

use crate::cli::DbArgs;

pub const OLTP_DB: &str = "coffee_oltp";
pub const OLAP_DB: &str = "coffee_olap";

pub struct Urls {
    pub oltp: DbUrl,
    pub olap: DbUrl,
}

/// The URLs of `args`, else those of the embedded cluster running in `--data-dir`.
pub fn resolve(args: &DbArgs) -> anyhow::Result<Urls> {
    match (&args.oltp_url, &args.olap_url) {
        (Some(oltp), Some(olap)) => Ok(Urls {
            oltp: oltp.clone(),
            olap: olap.clone(),
        }),
        (None, None) => running_embedded(&args.data_dir).with_context(|| {
            format!(
                "no OLTP_DATABASE_URL/OLAP_DATABASE_URL given and no embedded cluster running in {}",
                args.data_dir.display()
            )
        }),
        _ => bail!("give both OLTP_DATABASE_URL and OLAP_DATABASE_URL (or neither, for the embedded cluster)"),
    }
}

/// The OLTP URL alone, for commands that never touch OLAP (the API, seeding).
pub fn resolve_oltp(args: &DbArgs) -> anyhow::Result<DbUrl> {
    match &args.oltp_url {
        Some(url) => Ok(url.clone()),
        None => Ok(running_embedded(&args.data_dir)
            .with_context(|| {
                format!(
                    "no OLTP_DATABASE_URL given and no embedded cluster running in {}",
                    args.data_dir.display()
                )
            })?
            .oltp),
    }
}

fn running_embedded(dir: &Path) -> anyhow::Result<Urls> {
    let pgdata = dir.join("pgdata");
    if !pgdata.join("postmaster.pid").exists() {
        bail!("start it with `brewlytics up`");
    }
    let port_conf = std::fs::read_to_string(pgdata.join("brewlytics.port.conf"))?;
    let port: u16 = port_conf
        .trim()
        .strip_prefix("port = ")
        .and_then(|p| p.trim().parse().ok())
        .context("unreadable port file")?;
    let password = std::fs::read_to_string(dir.join("superuser.password"))?;
    let url = |db: &str| {
        DbUrl::parse(&format!(
            "postgres://{SUPERUSER}:{}@127.0.0.1:{port}/{db}",
            password.trim()
        ))
    };
    Ok(Urls {
        oltp: url(OLTP_DB)?,
        olap: url(OLAP_DB)?,
    })
}

/// Starts (or reuses) the embedded cluster of `dir` with both databases.
pub async fn start_embedded(dir: &Path) -> anyhow::Result<(EmbeddedCluster, Urls)> {
    let dir = dir.to_path_buf();
    let cluster = tokio::task::spawn_blocking(move || {
        let cluster = EmbeddedCluster::start(ClusterOptions::persistent(dir))?;
        cluster.ensure_database(OLTP_DB)?;
        cluster.ensure_database(OLAP_DB)?;
        Ok::<_, brewlytics_support::ClusterError>(cluster)
    })
    .await??;
    let urls = Urls {
        oltp: cluster.url(OLTP_DB),
        olap: cluster.url(OLAP_DB),
    };
    Ok((cluster, urls))
}

/// A pool of at most `max` connections; a database that cannot be reached is reported at
/// once, with its host, port and the OS's reason.
pub async fn pool(url: &DbUrl, max: u32) -> anyhow::Result<PgPool> {
    url.check_reachable(std::time::Duration::from_secs(10))
        .await?;
    PgPoolOptions::new()
        .max_connections(max)
        .acquire_timeout(std::time::Duration::from_secs(10))
        .connect_with(url.connect_options()?)
        .await
        .with_context(|| format!("connecting to {url}"))
}

/// One connection (commands that hold a transaction of their own).
pub async fn connect(url: &DbUrl) -> anyhow::Result<sqlx::PgConnection> {
    use sqlx::Connection;
    sqlx::PgConnection::connect_with(&url.connect_options()?)
        .await
        .with_context(|| format!("connecting to {url}"))
}
