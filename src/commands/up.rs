//! `brewlytics up`: everything on one machine.
//!
//! With the embedded cluster, `up` first claims its data directory
//! ([`brewlytics_support::instance`]): a second `up` in the same directory stops at once with
//! one line naming the running one, before it touches any file of it.

use std::net::SocketAddr;

use anyhow::Context;
use brewlytics_support::instance::{Claim, ClaimError};
use tokio::sync::watch;

use crate::cli::{DbArgs, ReplicateArgs};
use crate::databases;

pub async fn run(
    db: DbArgs,
    api_listen: SocketAddr,
    seed_orders: u32,
    replicate: ReplicateArgs,
    dashboard_listen: SocketAddr,
) -> anyhow::Result<()> {
    replicate.check()?;
    let (cluster, urls, claim) = match (&db.oltp_url, &db.olap_url) {
        (None, None) => {
            let claim = match Claim::acquire(&db.data_dir) {
                Ok(claim) => claim,
                // Said in one line, as it is: the running instance and what to do.
                Err(ClaimError::Running(running)) => anyhow::bail!("{running}"),
                Err(e) => return Err(e.into()),
            };
            let (c, u) = databases::start_embedded(&db.data_dir)
                .await
                .context("starting the embedded PostgreSQL")?;
            (Some(c), u, Some(claim))
        }
        _ => (None, databases::resolve(&db)?, None),
    };
    let result = serve(
        &urls,
        api_listen,
        seed_orders,
        &replicate,
        cluster.as_ref().map(|c| c.data_dir().to_path_buf()),
        dashboard_listen,
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
    api_listen: SocketAddr,
    seed_orders: u32,
    replicate: &ReplicateArgs,
    embedded_dir: Option<std::path::PathBuf>,
    dashboard_listen: SocketAddr,
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
    let dashboard_listener = super::insights::bind_dashboard(dashboard_listen).await?;
    let dashboard_addr = dashboard_listener.local_addr()?;

    let (tx, rx) = watch::channel(false);
    let cfg = super::daemon_config(urls, replicate);
    let slot = cfg.replicator.slot.clone();
    let replicator_listen = replicate.listen;
    let replicator = tokio::spawn(brewlytics_replicator::daemon::run(
        cfg,
        brewlytics_replicator::telemetry::Telemetry::new(),
        rx.clone(),
    ));
    let api = {
        let oltp = urls.oltp.clone();
        let rx = rx.clone();
        tokio::spawn(async move {
            super::pipeline::run_api(&oltp, api_listen, &brewlytics_api::Service::ALL, rx).await
        })
    };
    let dashboard = {
        let olap = urls.olap.clone();
        let rx = rx.clone();
        tokio::spawn(
            async move { super::insights::run_dashboard(&olap, dashboard_listener, rx).await },
        )
    };

    println!("Brewlytics is up.");
    println!("  API          http://{api_listen}   (GET /health, POST /orders, GET /openapi.json)");
    println!(
        "  Replicator   http://{replicator_listen}   (status page; /metrics, /ready, /status) slot {slot} → coffee_olap"
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
            ("API", format!("http://{api_listen}")),
            ("replicator", format!("http://{replicator_listen}")),
            ("dashboard", format!("http://{dashboard_addr}")),
        ];
        if let Err(e) = claim.publish(&endpoints) {
            tracing::warn!(error = %e, "could not record the endpoints in the data directory");
        }
    }

    let mut replicator = replicator;
    let mut api = api;
    let mut dashboard = dashboard;
    let outcome = tokio::select! {
        _ = brewlytics_support::shutdown::signal() => Ok(()),
        r = &mut replicator => match r {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(anyhow::Error::new(e).context("replicator stopped")),
            Err(e) => Err(e.into()),
        },
        r = &mut api => match r {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(e.context("api stopped")),
            Err(e) => Err(e.into()),
        },
        r = &mut dashboard => match r {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(e.context("dashboard stopped")),
            Err(e) => Err(e.into()),
        },
    };
    let _ = tx.send(true);
    let _ = tokio::time::timeout(std::time::Duration::from_secs(15), async {
        let _ = (&mut replicator).await;
        let _ = (&mut api).await;
        let _ = (&mut dashboard).await;
    })
    .await;
    println!("Brewlytics stopped.");
    outcome
}
