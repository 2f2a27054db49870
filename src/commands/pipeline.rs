//! Long-running services: the API and the replicator, stopped by Ctrl-C/SIGTERM.

use std::net::SocketAddr;

use anyhow::Context;
use brewlytics_replicator::daemon::DaemonConfig;
use brewlytics_replicator::telemetry::Telemetry;
use tokio::sync::watch;

use brewlytics_support::DbUrl;

use crate::access::Access;
use crate::databases;

pub async fn serve_api(
    oltp: &DbUrl,
    listen: SocketAddr,
    services: &[brewlytics_api::Service],
    access: &Access,
) -> anyhow::Result<()> {
    let (tx, rx) = watch::channel(false);
    tokio::spawn(async move {
        brewlytics_support::shutdown::signal().await;
        let _ = tx.send(true);
    });
    run_api(oltp, listen, services, access, rx).await
}

pub async fn run_api(
    oltp: &DbUrl,
    listen: SocketAddr,
    services: &[brewlytics_api::Service],
    access: &Access,
    mut stop: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let pool = databases::pool(oltp, 16).await?;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("binding the API to {listen}"))?;
    let services = if services.is_empty() {
        brewlytics_api::Service::ALL.to_vec()
    } else {
        services.to_vec()
    };
    let guard = access.guard(brewlytics_support::auth::GuardConfig::json("api"));
    brewlytics_api::serve(
        access.endpoint(listener),
        brewlytics_api::ApiState::with_guard(pool, guard),
        &services,
        async move {
            let _ = stop.wait_for(|v| *v).await;
        },
    )
    .await
}

pub async fn replicate(cfg: DaemonConfig) -> anyhow::Result<()> {
    let (tx, rx) = watch::channel(false);
    tokio::spawn(async move {
        brewlytics_support::shutdown::signal().await;
        tracing::info!("shutdown requested");
        let _ = tx.send(true);
    });
    brewlytics_replicator::daemon::run(cfg, Telemetry::new(), rx).await?;
    Ok(())
}
