//! `brewlytics up`: everything on one machine.
//!
//! With the embedded cluster, `up` first claims its data directory
//! ([`brewlytics_support::instance`]): a second `up` in the same directory stops at once with
//! one line naming the running one, before it touches any file of it.

use std::net::SocketAddr;

use anyhow::Context;
use brewlytics_support::instance::{Claim, ClaimError};
use brewlytics_support::listen::{self, Service};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::cli::{DbArgs, ReplicateArgs};
use crate::databases;

const API: Service = Service {
    name: "API",
    flag: "--api-listen",
    env: "API_LISTEN",
};
const DASHBOARD: Service = Service {
    name: "dashboard",
    flag: "--dashboard-listen",
    env: "DASHBOARD_LISTEN",
};

/// `up`'s listeners, bound before anything starts: a taken address stops `up` with one line
/// and nothing running.
struct Listeners {
    api: TcpListener,
    replicator: TcpListener,
    dashboard: TcpListener,
}

impl Listeners {
    async fn bind(
        api: SocketAddr,
        replicator: SocketAddr,
        dashboard: SocketAddr,
    ) -> anyhow::Result<Self> {
        Ok(Self {
            api: listen::bind(api, API).await?,
            replicator: listen::bind(replicator, super::pipeline::REPLICATOR).await?,
            dashboard: listen::bind(dashboard, DASHBOARD).await?,
        })
    }
}

pub async fn run(
    db: DbArgs,
    api_listen: SocketAddr,
    seed_orders: u32,
    replicate: ReplicateArgs,
    dashboard_listen: SocketAddr,
) -> anyhow::Result<()> {
    replicate.check()?;
    let embedded = db.oltp_url.is_none() && db.olap_url.is_none();
    let claim = if embedded {
        match Claim::acquire(&db.data_dir) {
            Ok(claim) => Some(claim),
            // Said in one line, as it is: the running instance and what to do.
            Err(ClaimError::Running(running)) => anyhow::bail!("{running}"),
            Err(e) => return Err(e.into()),
        }
    } else {
        None
    };
    let listeners = Listeners::bind(api_listen, replicate.listen, dashboard_listen).await?;
    let (cluster, urls) = if embedded {
        let (c, u) = databases::start_embedded(&db.data_dir)
            .await
            .context("starting the embedded PostgreSQL")?;
        (Some(c), u)
    } else {
        (None, databases::resolve(&db)?)
    };
    let result = serve(
        &urls,
        listeners,
        seed_orders,
        &replicate,
        cluster.as_ref().map(|c| c.data_dir().to_path_buf()),
        claim.as_ref(),
    )
    .await;
    if let Some(mut c) = cluster {
        let _ = tokio::task::spawn_blocking(move || c.stop()).await;
    }
    drop(claim);
    result
}

async fn serve(
    urls: &databases::Urls,
    listeners: Listeners,
    seed_orders: u32,
    replicate: &ReplicateArgs,
    embedded_dir: Option<std::path::PathBuf>,
    claim: Option<&Claim>,
) -> anyhow::Result<()> {
    super::migrate(urls).await?;
    let oltp = databases::pool(&urls.oltp, 4).await?;
    let existing: i64 = sqlx::query_scalar("select count(*) from orders")
        .fetch_one(&oltp)
        .await?;
    let summary = brewlytics_api::seed::seed(
        &oltp,
        &brewlytics_api::seed::SeedOptions {
            orders: if existing == 0 { seed_orders } else { 0 },
            days: 28,
            rng_seed: 7,
        },
    )
    .await
    .context("seeding sample data")?;
    tracing::info!(%summary, "sample data ready");
    drop(oltp);
    let api_addr = listeners.api.local_addr()?;
    let replicator_addr = listeners.replicator.local_addr()?;
    let dashboard_addr = listeners.dashboard.local_addr()?;

    let (tx, rx) = watch::channel(false);
    let cfg = super::daemon_config(urls, replicate);
    let slot = cfg.replicator.slot.clone();
    // The first service to end (with an error, or not) ends `up`.
    let mut services = tokio::task::JoinSet::new();
    {
        let rx = rx.clone();
        let listener = listeners.replicator;
        services.spawn(async move {
            brewlytics_replicator::daemon::run_bound(
                cfg,
                Some(listener),
                brewlytics_replicator::telemetry::Telemetry::new(),
                rx,
            )
            .await
            .context("replicator stopped")
        });
    }
    {
        let oltp = urls.oltp.clone();
        let rx = rx.clone();
        let listener = listeners.api;
        services.spawn(async move {
            super::pipeline::run_api(&oltp, listener, &brewlytics_api::Service::ALL, rx)
                .await
                .context("api stopped")
        });
    }
    {
        let olap = urls.olap.clone();
        let rx = rx.clone();
        let listener = listeners.dashboard;
        services.spawn(async move {
            super::insights::run_dashboard(&olap, listener, rx)
                .await
                .context("dashboard stopped")
        });
    }

    println!("Brewlytics is up.");
    println!("  API          http://{api_addr}   (GET /health, POST /orders, GET /openapi.json)");
    println!(
        "  Replicator   http://{replicator_addr}   (status page; /metrics, /ready, /status) slot {slot} → coffee_olap"
    );
    println!("  Dashboard    http://{dashboard_addr}   (`brewlytics report --list` for the same figures as CSV)");
    println!("  OLTP         {}", urls.oltp);
    println!("  OLAP         {}", urls.olap);
    if let Some(dir) = embedded_dir {
        println!(
            "  Embedded PostgreSQL in {} (password in {}/superuser.password)",
            dir.display(),
            dir.display()
        );
    }
    println!("Press Ctrl-C to stop.");
    if let Some(claim) = claim {
        let endpoints = [
            ("API", format!("http://{api_addr}")),
            ("replicator", format!("http://{replicator_addr}")),
            ("dashboard", format!("http://{dashboard_addr}")),
        ];
        if let Err(e) = claim.publish(&endpoints) {
            tracing::warn!(error = %e, "could not record the endpoints in the data directory");
        }
    }

    let outcome = tokio::select! {
        _ = brewlytics_support::shutdown::signal() => Ok(()),
        Some(ended) = services.join_next() => ended.map_err(anyhow::Error::from).and_then(|r| r),
    };
    let _ = tx.send(true);
    let _ = tokio::time::timeout(std::time::Duration::from_secs(15), async {
        while services.join_next().await.is_some() {}
    })
    .await;
    println!("Brewlytics stopped.");
    outcome
}
