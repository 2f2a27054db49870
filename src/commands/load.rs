//! `brewlytics load --from nats`: the change stream into an OLAP database, with the loader's
//! endpoints (`/metrics`, `/health`, `/status`) on `--listen`; all but `/health` need a key
//! with `ops:read`, checked against `OLTP_DATABASE_URL`'s `auth.api_keys`.

use anyhow::Context;
use brewlytics_replicator::backoff::Backoff;
use brewlytics_replicator::load::{self, LoaderConfig, LoaderTelemetry};
use brewlytics_support::listen::{self, Service};
use tokio::sync::watch;

use crate::access::Access;
use crate::cli::{LoadArgs, LoadFrom};
use crate::databases;

const LOADER: Service = Service {
    name: "loader",
    flag: "--listen",
    env: "LOADER_LISTEN",
};

pub async fn run(args: LoadArgs) -> anyhow::Result<()> {
    let LoadFrom::Nats = args.from;
    let nats = args
        .nats
        .config()
        .context("--from nats needs --nats-url (or NATS_URL)")?;
    nats.validate().map_err(anyhow::Error::msg)?;
    // Its endpoints' address first: a taken one stops it before it touches anything.
    let listener = listen::bind(args.listen, LOADER).await?;
    let access = Access::open(&args.access, args.oltp_url.as_ref())?;
    // The loader's OLAP is made as `migrate` makes it (no OLTP is needed here).
    let pool = databases::pool(&args.olap_url, 1).await?;
    brewlytics_support::migrate::olap(&pool).await?;
    pool.close().await;

    let telemetry = LoaderTelemetry::new(&nats.stream, &args.consumer);
    let (tx, rx) = watch::channel(false);
    tokio::spawn(async move {
        brewlytics_support::shutdown::signal().await;
        tracing::info!("shutdown requested");
        let _ = tx.send(true);
    });
    let addr = listener.local_addr()?;
    tracing::info!(%addr, scheme = access.scheme(), "loader endpoints: /metrics /health /status");
    let mut stop = rx.clone();
    let served = telemetry.clone();
    let guard = access.guard(brewlytics_support::auth::GuardConfig::json("loader"));
    guard.announce().await;
    let endpoint = access.endpoint(listener);
    tokio::spawn(async move {
        let stopped = async move {
            let _ = stop.wait_for(|v| *v).await;
        };
        let _ = brewlytics_replicator::daemon::http::serve_loader(endpoint, served, guard, stopped)
            .await;
    });
    let cfg = LoaderConfig {
        olap_url: args.olap_url,
        nats,
        consumer: args.consumer,
        max_changes: args.batch_max_changes.max(1),
        on_error: args.on_error,
        retry: Backoff::RECONNECT,
    };
    // The clickstream events' stream, beside the change stream, by the same machinery.
    let events = tokio::spawn(brewlytics_replicator::clickstream::load::run(
        brewlytics_replicator::clickstream::load::config(&cfg),
        telemetry.events.clone(),
        rx.clone(),
    ));
    let changes = load::run(cfg, telemetry.metrics.clone(), rx).await;
    if changes.is_err() {
        events.abort();
    } else {
        events.await.context("the events loader")??;
    }
    access.flush().await;
    changes?;
    Ok(())
}
