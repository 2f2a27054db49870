//! `brewlytics status`, `replay` and `resync`: the replication's state, read or rebuilt.

use anyhow::Context;
use brewlytics_replicator::config::ReplicatorConfig;
use brewlytics_replicator::lsn::Lsn;
use brewlytics_replicator::source::snapshot::CopyProgress;

use super::progress;
use crate::cli::{CopyArgs, NatsArgs, SlotArgs};
use crate::databases::{self, Urls};

/// Slot, checkpoint and lag (and, with `--nats-url`, the change stream and its consumers).
pub async fn status(
    urls: &Urls,
    slot: &SlotArgs,
    nats: &NatsArgs,
    json: bool,
) -> anyhow::Result<()> {
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

/// Replica and star rebuilt from the journal, from `from_lsn`.
pub async fn replay(urls: &Urls, from_lsn: Lsn) -> anyhow::Result<()> {
    // An unreachable database is named at once (see databases::connect).
    databases::connect(&urls.olap).await?;
    let stats = brewlytics_replicator::replay::replay(&urls.olap, from_lsn).await?;
    let rebuilt = if stats.rebuilt {
        " (full rebuild from the latest initial copy)"
    } else {
        ""
    };
    println!(
        "replayed {} journal events from {}{rebuilt}",
        stats.events, stats.from
    );
    Ok(())
}

/// The source copied again under a new slot, with a bar per table on a terminal.
pub async fn resync(urls: &Urls, slot: SlotArgs, copy: CopyArgs) -> anyhow::Result<()> {
    let cfg = ReplicatorConfig {
        slot: slot.slot,
        publication: slot.publication,
        copy_workers: usize::from(copy.copy_workers),
        ..ReplicatorConfig::new(urls.oltp.clone(), urls.olap.clone())
    };
    let bar = std::sync::Mutex::new((progress::Bar::new(), progress::CopyBars::default()));
    let log = brewlytics_replicator::pipeline::copy_logger();
    let on_progress = |p: &CopyProgress| {
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
