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

use brewlytics_dashboards::connection::OlapConnection;

use super::superset;
use crate::access::Access;
use crate::cli::{AccessArgs, DbArgs, ReplicateArgs, SupersetUpArgs};
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

/// How `up` serves: Superset or not, who may do what, where events go.
pub struct UpServices {
    pub superset: SupersetUpArgs,
    pub access: AccessArgs,
    pub events: super::events::EventsArgs,
}

pub async fn run(
    db: DbArgs,
    api_listen: SocketAddr,
    seed_orders: u32,
    replicate: ReplicateArgs,
    dashboard_listen: SocketAddr,
    services: UpServices,
) -> anyhow::Result<()> {
    let UpServices {
        superset,
        access,
        events,
    } = services;
    replicate.check()?;
    crate::access::check(&access)?;
    if superset.superset {
        superset::local::preflight(&superset.superset_venv, superset.superset_listen)?;
    }
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
        Machine {
            cluster: cluster.as_ref(),
            claim: claim.as_ref(),
            data_dir: &db.data_dir,
        },
        Serving {
            superset: &superset,
            access: &access,
            events: &events,
        },
    )
    .await;
    if let Some(mut c) = cluster {
        let _ = tokio::task::spawn_blocking(move || c.stop()).await;
    }
    drop(claim);
    result
}

/// What `up` holds on this machine: the embedded cluster and the claim on its data directory
/// (none with database URLs given), and that directory.
struct Machine<'a> {
    cluster: Option<&'a brewlytics_support::EmbeddedCluster>,
    claim: Option<&'a Claim>,
    data_dir: &'a std::path::Path,
}

/// How the servers beside the pipeline run: Superset or not, and who may use them (TLS,
/// keys).
struct Serving<'a> {
    superset: &'a SupersetUpArgs,
    access: &'a AccessArgs,
    events: &'a super::events::EventsArgs,
}

async fn serve(
    urls: &databases::Urls,
    listeners: Listeners,
    seed_orders: u32,
    replicate: &ReplicateArgs,
    machine: Machine<'_>,
    serving: Serving<'_>,
) -> anyhow::Result<()> {
    let Serving {
        superset: superset_args,
        access: access_args,
        events: events_args,
    } = serving;
    let Machine {
        cluster,
        claim,
        data_dir,
    } = machine;
    super::migrate(urls).await?;
    let embedded_dir = cluster.map(|c| c.data_dir().to_path_buf());
    // The read-only role for BI tools (deploy/roles.sql), on the embedded cluster.
    let reader = match cluster {
        Some(c) => Some(super::bi::embedded_roles(c).await?),
        None => None,
    };
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
    // A key with every scope for this machine, in the data directory (never printed).
    let key_file = match access_args.insecure_no_auth {
        true => None,
        false => Some(super::api_key::local_key(&oltp, data_dir).await?),
    };
    drop(oltp);
    let access = std::sync::Arc::new(Access::open(access_args, Some(&urls.oltp))?);
    let scheme = access.scheme();
    let api_addr = listeners.api.local_addr()?;
    let replicator_addr = listeners.replicator.local_addr()?;
    let dashboard_addr = listeners.dashboard.local_addr()?;
    let superset = match superset_args.superset {
        false => None,
        true => {
            let embedded = reader
                .clone()
                .ok_or_else(|| anyhow::anyhow!("no embedded cluster"));
            let external = cluster.is_none().then_some(&urls.olap);
            let bi_url = super::bi::choose(superset_args.bi.bi_url.clone(), external, || embedded)?;
            let olap = OlapConnection::from_url(&bi_url, None)?;
            Some(superset::start(superset_args, data_dir, &olap).await?)
        }
    };

    let (tx, rx) = watch::channel(false);
    let mut cfg = super::daemon_config(urls, replicate, &access);
    // Large transactions in progress are spooled beside everything else `up` keeps.
    cfg.replicator
        .spool_dir
        .get_or_insert_with(|| data_dir.join("spool"));
    let slot = cfg.replicator.slot.clone();
    // With --nats-url, events go through JetStream and a loader beside the replicator, its
    // series on the replicator's /metrics.
    let nats = replicate.nats.config();
    let consumer = brewlytics_replicator::load::DEFAULT_CONSUMER;
    let (telemetry, events_metrics) = match &nats {
        Some(nats) => {
            let (t, m) = brewlytics_replicator::telemetry::Telemetry::with_events_loader(
                &nats.stream,
                consumer,
            );
            (t, Some(m))
        }
        None => (brewlytics_replicator::telemetry::Telemetry::new(), None),
    };
    // The first service to end (with an error, or not) ends `up`.
    let mut services = tokio::task::JoinSet::new();
    {
        let rx = rx.clone();
        let listener = listeners.replicator;
        services.spawn(async move {
            brewlytics_replicator::daemon::run_bound(cfg, Some(listener), telemetry, rx)
                .await
                .context("replicator stopped")
        });
    }
    // Events: with --nats-url through the JetStream events stream and its loader, else
    // through the OLTP table click_events and the replicator.
    let events = super::events::config(nats.clone(), events_args).await?;
    if let (Some(nats), Some(metrics)) = (nats, events_metrics) {
        use brewlytics_replicator::clickstream::load as events_load;
        let changes = brewlytics_replicator::load::LoaderConfig {
            olap_url: urls.olap.clone(),
            nats,
            consumer: consumer.into(),
            max_changes: 10_000,
            on_error: Default::default(),
            retry: brewlytics_replicator::backoff::Backoff::RECONNECT,
        };
        let cfg = events_load::config(&changes);
        let rx = rx.clone();
        services.spawn(async move {
            events_load::run(cfg, metrics, rx)
                .await
                .context("events loader stopped")
        });
    }
    {
        let oltp = urls.oltp.clone();
        let rx = rx.clone();
        let listener = listeners.api;
        let access = access.clone();
        services.spawn(async move {
            let all = &brewlytics_api::Service::ALL;
            super::pipeline::run_api(&oltp, listener, all, &access, events, rx)
                .await
                .context("api stopped")
        });
    }
    {
        let olap = urls.olap.clone();
        let rx = rx.clone();
        let listener = listeners.dashboard;
        let access = access.clone();
        services.spawn(async move {
            super::insights::run_dashboard(&olap, listener, &access, rx)
                .await
                .context("dashboard stopped")
        });
    }

    println!("Brewlytics is up.");
    println!(
        "  API          {scheme}://{api_addr}   (GET /health, POST /orders, GET /openapi.json)"
    );
    println!(
        "  Replicator   {scheme}://{replicator_addr}   (status page; /metrics, /ready, /status) slot {slot} → coffee_olap"
    );
    println!("  Dashboard    {scheme}://{dashboard_addr}   (`brewlytics report --list` for the same figures as CSV)");
    match &key_file {
        Some(file) => {
            let file = file.display();
            println!("  API key      every scope, in {file} (mode 0600); the pages ask for it once, the API on every request:");
            println!("                 export BREWLYTICS_API_KEY=\"$(cat {file})\"");
            println!("                 curl -H \"Authorization: Bearer $BREWLYTICS_API_KEY\" {scheme}://{api_addr}/stores");
            println!("               more keys, with fewer scopes: brewlytics api-key create --name NAME --scope SCOPE");
        }
        None => println!("  API key      none: authentication is OFF (--insecure-no-auth)"),
    }
    if let Some(s) = &superset {
        println!(
            "  Superset     {}   (user {}, password in {})",
            s.dashboard_url,
            superset::local::ADMIN,
            s.superset.password_file.display()
        );
    }
    println!("  OLTP         {}", urls.oltp);
    println!("  OLAP         {}", urls.olap);
    if let Some(url) = &reader {
        println!("  BI role      {url}   (read-only)");
    }
    if let Some(dir) = embedded_dir {
        println!(
            "  Embedded PostgreSQL in {} (password in {}/superuser.password, the roles' in {}/roles.env)",
            dir.display(),
            dir.display(),
            dir.display()
        );
    }
    println!("Press Ctrl-C to stop.");
    if let Some(claim) = claim {
        let mut endpoints = vec![
            ("API", format!("{scheme}://{api_addr}")),
            ("replicator", format!("{scheme}://{replicator_addr}")),
            ("dashboard", format!("{scheme}://{dashboard_addr}")),
        ];
        if let Some(s) = &superset {
            endpoints.push(("Superset", s.superset.url.clone()));
        }
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
    if let Some(s) = superset {
        s.superset.stop().await;
    }
    access.flush().await;
    println!("Brewlytics stopped.");
    outcome
}
