//! Long-running services: the API and the replicator, stopped by Ctrl-C/SIGTERM. Each binds
//! its address first: a taken one stops the command at once with one line
//! ([`brewlytics_support::listen`]).

use std::net::SocketAddr;

use brewlytics_replicator::daemon::DaemonConfig;
use brewlytics_replicator::telemetry::Telemetry;
use brewlytics_support::listen::{self, Service};
use tokio::sync::watch;

use brewlytics_support::DbUrl;

use crate::access::Access;
use crate::databases;

/// The replicator's endpoints, in `replicate` and `up` alike.
pub const REPLICATOR: Service = Service {
    name: "replicator",
    flag: "--replicator-listen",
    env: "REPLICATOR_LISTEN",
};

/// The API of `brewlytics api`.
const API: Service = Service {
    name: "API",
    flag: "--listen",
    env: "API_LISTEN",
};

pub async fn serve_api(
    oltp: &DbUrl,
    listen: SocketAddr,
    services: &[brewlytics_api::Service],
    access: &Access,
    nats: Option<brewlytics_replicator::sink::nats::NatsConfig>,
    events: &super::events::EventsArgs,
) -> anyhow::Result<()> {
    if let Some(n) = &nats {
        n.validate().map_err(anyhow::Error::msg)?;
    }
    let listener = listen::bind(listen, API).await?;
    let (tx, rx) = watch::channel(false);
    tokio::spawn(async move {
        brewlytics_support::shutdown::signal().await;
        let _ = tx.send(true);
    });
    let events = super::events::config(nats, events).await?;
    run_api(oltp, listener, services, access, events, rx).await
}

/// The API on a bound `listener` until `stop` turns true.
pub async fn run_api(
    oltp: &DbUrl,
    listener: tokio::net::TcpListener,
    services: &[brewlytics_api::Service],
    access: &Access,
    events: brewlytics_api::events::EventsConfig,
    mut stop: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let pool = databases::pool(oltp, 16).await?;
    let services = if services.is_empty() {
        brewlytics_api::Service::ALL.to_vec()
    } else {
        services.to_vec()
    };
    let guard = access.guard(brewlytics_support::auth::GuardConfig::json("api"));
    brewlytics_api::serve(
        access.endpoint(listener),
        brewlytics_api::ApiState::with_guard(pool, guard).with_events(events),
        &services,
        async move {
            let _ = stop.wait_for(|v| *v).await;
        },
    )
    .await
}

pub async fn replicate(cfg: DaemonConfig) -> anyhow::Result<()> {
    let listener = match cfg.listen {
        Some(addr) => Some(listen::bind(addr, REPLICATOR).await?),
        None => None,
    };
    let (tx, rx) = watch::channel(false);
    tokio::spawn(async move {
        brewlytics_support::shutdown::signal().await;
        tracing::info!("shutdown requested");
        let _ = tx.send(true);
    });
    brewlytics_replicator::daemon::run_bound(cfg, listener, Telemetry::new(), rx).await?;
    Ok(())
}
