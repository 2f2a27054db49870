//! One function per subcommand.

pub mod api_key;
mod bi;
pub mod dbt;
pub mod events;
pub mod insights;
mod load;
mod loadtest;
mod pipeline;
mod progress;
mod snapshot;
pub mod superset;
mod up;

use anyhow::Context;
use brewlytics_replicator::daemon::DaemonConfig;
use brewlytics_replicator::pipeline::ReplicatorConfig;

use crate::access::Access;
use crate::cli::{Command, ReplicateArgs, SlotArgs};
use crate::databases::{self, Urls};

pub async fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Up {
            db,
            api_listen,
            seed_orders,
            replicate,
            dashboard_listen,
            superset,
            events,
            access,
        } => {
            up::run(
                db,
                api_listen,
                seed_orders,
                replicate,
                dashboard_listen,
                superset,
                access,
                events,
            )
            .await
        }
        Command::Migrate {
            db,
            no_source_check,
        } => {
            let urls = databases::resolve(&db)?;
            migrate_with(&urls, !no_source_check).await?;
            println!("migrated {} and {}", urls.oltp, urls.olap);
            Ok(())
        }
        Command::Seed {
            db,
            orders,
            days,
            rng_seed,
        } => {
            let oltp = databases::resolve_oltp(&db)?;
            let pool = databases::pool(&oltp, 8).await?;
            let summary = brewlytics_api::seed::seed(
                &pool,
                &brewlytics_api::seed::SeedOptions {
                    orders,
                    days,
                    rng_seed,
                },
            )
            .await?;
            println!("{summary}");
            Ok(())
        }
        Command::Api {
            db,
            listen,
            services,
            nats,
            events,
            access,
        } => {
            let oltp = databases::resolve_oltp(&db)?;
            let access = Access::open(&access, Some(&oltp))?;
            pipeline::serve_api(&oltp, listen, &services, &access, nats.config(), &events).await
        }
        Command::Replicate {
            db,
            replicate,
            access,
        } => {
            replicate.check()?;
            let urls = databases::resolve(&db)?;
            let access = Access::open(&access, Some(&urls.oltp))?;
            pipeline::replicate(daemon_config(&urls, &replicate, &access)).await
        }
        Command::ApiKey { command } => api_key::run(command).await,
        Command::Status {
            db,
            slot,
            nats,
            json,
        } => {
            let urls = databases::resolve(&db)?;
            let mut oltp = databases::pool(&urls.oltp, 1).await?.acquire().await?;
            let mut olap = databases::pool(&urls.olap, 1).await?.acquire().await?;
            let mut status = brewlytics_replicator::status::read(&mut oltp, &mut olap, &slot.slot)
                .await
                .context("reading the replication status")?;
            if let Some(cfg) = nats.config() {
                status.nats.stream = Some(
                    brewlytics_replicator::sink::nats::report(&cfg)
                        .await
                        .context("reading the NATS stream")?,
                );
            }
            if json {
                println!("{}", serde_json::to_string_pretty(&status)?);
            } else {
                print!("{}", status.to_table());
            }
            Ok(())
        }
        Command::Replay { db, from_lsn } => {
            let urls = databases::resolve(&db)?;
            // An unreachable database is named at once (see databases::connect).
            databases::connect(&urls.olap).await?;
            let stats = brewlytics_replicator::replay::replay(&urls.olap, from_lsn).await?;
            println!(
                "replayed {} journal events from {}{}",
                stats.events,
                stats.from,
                if stats.rebuilt {
                    " (full rebuild from the latest initial copy)"
                } else {
                    ""
                }
            );
            Ok(())
        }
        Command::Snapshot {
            db,
            slot,
            table,
            no_wait,
        } => {
            let urls = databases::resolve(&db)?;
            snapshot::run(&urls, &slot.publication, &table, no_wait).await
        }
        Command::Load(args) => load::run(args).await,
        Command::Loadtest { db, args } => loadtest::run(db, args).await,
        Command::Report(args) => insights::report(args).await,
        Command::Dashboard(args) => insights::dashboard(args).await,
        Command::Dashboards { command } => insights::dashboards(command).await,
        Command::DbtEnv(args) => dbt::env(args),
        Command::Resync { db, slot, copy } => {
            let urls = databases::resolve(&db)?;
            let cfg = replicator_config(
                &urls,
                &ReplicateArgs {
                    slot,
                    on_error: Default::default(),
                    partition_detach: Default::default(),
                    batch_max_changes: 10_000,
                    batch_max_delay_ms: 20,
                    listen: ([127, 0, 0, 1], 0).into(),
                    heartbeat_interval_ms: 0,
                    backfill_chunk_rows: 20_000,
                    copy,
                    retained_wal_warn_mb: 0,
                    ready_max_lag_ms: 0,
                    sink: crate::cli::SinkKind::Olap,
                    nats: crate::cli::NatsArgs::disabled(),
                },
            );
            let bar = std::sync::Mutex::new((progress::Bar::new(), progress::CopyBars::default()));
            let log = brewlytics_replicator::pipeline::copy_logger();
            let on_progress = |p: &brewlytics_replicator::source::snapshot::CopyProgress| {
                let mut guard = bar.lock().unwrap_or_else(|e| e.into_inner());
                let (bar, tables) = &mut *guard;
                tables.update(bar, p);
                if !bar.shows() {
                    log(p);
                }
            };
            let lsn = brewlytics_replicator::pipeline::resync(&cfg, &on_progress).await?;
            println!(
                "resynced: slot {} recreated, OLAP copied as of {lsn}",
                cfg.slot
            );
            Ok(())
        }
    }
}

pub async fn migrate(urls: &Urls) -> anyhow::Result<()> {
    migrate_with(urls, true).await
}

/// Both databases' schemas; `check_source`: refuse an OLTP server without logical decoding.
pub async fn migrate_with(urls: &Urls, check_source: bool) -> anyhow::Result<()> {
    let oltp = databases::pool(&urls.oltp, 1).await?;
    brewlytics_support::migrate::oltp_with(&oltp, check_source).await?;
    let olap = databases::pool(&urls.olap, 1).await?;
    brewlytics_support::migrate::olap(&olap).await?;
    Ok(())
}

pub fn replicator_config(urls: &Urls, args: &ReplicateArgs) -> ReplicatorConfig {
    let slot: &SlotArgs = &args.slot;
    ReplicatorConfig {
        oltp_url: urls.oltp.clone(),
        olap_url: urls.olap.clone(),
        slot: slot.slot.clone(),
        publication: slot.publication.clone(),
        limits: brewlytics_replicator::batch::BatchLimits {
            max_changes: args.batch_max_changes.max(1),
            max_bytes: 16 << 20,
            max_delay: std::time::Duration::from_millis(args.batch_max_delay_ms),
        },
        on_error: args.on_error,
        status_interval: std::time::Duration::from_secs(10),
        backfill_chunk_rows: args.backfill_chunk_rows,
        nats: args.nats_config(),
        copy_workers: usize::from(args.copy.copy_workers),
        partition_detach: args.partition_detach,
    }
}

pub fn daemon_config(urls: &Urls, args: &ReplicateArgs, access: &Access) -> DaemonConfig {
    DaemonConfig {
        guard: access.guard(brewlytics_replicator::daemon::http::access::guard_config()),
        tls: access.tls(),
        replicator: replicator_config(urls, args),
        listen: Some(args.listen),
        heartbeat_interval: std::time::Duration::from_millis(args.heartbeat_interval_ms),
        retained_wal_warn_bytes: i64::try_from(args.retained_wal_warn_mb)
            .unwrap_or(i64::MAX)
            .saturating_mul(1 << 20),
        ready_max_lag: std::time::Duration::from_millis(args.ready_max_lag_ms),
    }
}
