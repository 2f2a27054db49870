//! One function per subcommand, reading the flags `cli` parsed.

pub mod api_key;
mod bi;
pub mod dbt;
pub mod events;
pub mod insights;
pub mod journal;
mod load;
mod loadtest;
mod pipeline;
mod progress;
mod replication;
mod snapshot;
pub mod superset;
mod up;

use std::time::Duration;

use brewlytics_replicator::backoff::Backoff;
use brewlytics_replicator::batch::BatchLimits;
use brewlytics_replicator::config::ReplicatorConfig;
use brewlytics_replicator::daemon::DaemonConfig;

use crate::access::Access;
use crate::cli::{Command, DbArgs, ReplicateArgs};
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
                up::UpServices {
                    superset,
                    access,
                    events,
                },
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
        } => seed(&db, orders, days, rng_seed).await,
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
        } => replication::status(&databases::resolve(&db)?, &slot, &nats, json).await,
        Command::Replay { db, from_lsn } => {
            replication::replay(&databases::resolve(&db)?, from_lsn).await
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
        Command::Journal { command } => journal::run(command).await,
        Command::Resync { db, slot, copy } => {
            replication::resync(&databases::resolve(&db)?, slot, copy).await
        }
        Command::Load(args) => load::run(args).await,
        Command::Loadtest { db, args } => loadtest::run(db, args).await,
        Command::Report(args) => insights::report(args).await,
        Command::Dashboard(args) => insights::dashboard(args).await,
        Command::Dashboards { command } => insights::dashboards(command).await,
        Command::DbtEnv(args) => dbt::env(args),
    }
}

/// Sample master data and `orders` historical orders, through the API's code path.
async fn seed(db: &DbArgs, orders: u32, days: u32, rng_seed: u64) -> anyhow::Result<()> {
    let oltp = databases::resolve_oltp(db)?;
    let pool = databases::pool(&oltp, 8).await?;
    let options = brewlytics_api::seed::SeedOptions {
        orders,
        days,
        rng_seed,
    };
    let summary = brewlytics_api::seed::seed(&pool, &options).await?;
    println!("{summary}");
    Ok(())
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

/// The replicator's configuration from `replicate`'s flags; what they leave out is the
/// library's default ([`ReplicatorConfig::new`]).
pub fn replicator_config(urls: &Urls, args: &ReplicateArgs) -> ReplicatorConfig {
    let defaults = ReplicatorConfig::new(urls.oltp.clone(), urls.olap.clone());
    ReplicatorConfig {
        slot: args.slot.slot.clone(),
        publication: args.slot.publication.clone(),
        limits: BatchLimits {
            max_changes: args.batch_max_changes.max(1),
            max_delay: Duration::from_millis(args.batch_max_delay_ms),
            ..defaults.limits
        },
        on_error: args.on_error,
        backfill_chunk_rows: args.backfill_chunk_rows,
        nats: args.nats_config(),
        copy_workers: usize::from(args.copy.copy_workers),
        partition_detach: args.partition_detach,
        olap_commit: args.transactions.olap_commit,
        streaming: args.transactions.streaming,
        spool_dir: args.transactions.spool_dir.clone(),
        ..defaults
    }
}

pub fn daemon_config(urls: &Urls, args: &ReplicateArgs, access: &Access) -> DaemonConfig {
    DaemonConfig {
        guard: access.guard(brewlytics_replicator::daemon::http::access::guard_config()),
        tls: access.tls(),
        replicator: replicator_config(urls, args),
        listen: Some(args.listen),
        heartbeat_interval: Duration::from_millis(args.heartbeat_interval_ms),
        retained_wal_warn_bytes: i64::try_from(args.retained_wal_warn_mb)
            .unwrap_or(i64::MAX)
            .saturating_mul(1 << 20),
        ready_max_lag: Duration::from_millis(args.ready_max_lag_ms),
        lock_retry: Backoff::LOCK,
        journal: brewlytics_replicator::journal::maintain::JournalConfig {
            retention: args.journal_retention,
            interval: Duration::from_millis(args.journal_maintenance_interval_ms),
        },
    }
}
