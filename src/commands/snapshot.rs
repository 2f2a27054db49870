//! `brewlytics snapshot --table NAME`: a backfill requested, then followed until it ends.

use std::time::{Duration, Instant};

use anyhow::bail;
use brewlytics_replicator::source::backfill;

use crate::databases::{self, Urls};

pub async fn run(urls: &Urls, publication: &str, table: &str, no_wait: bool) -> anyhow::Result<()> {
    let mut oltp = databases::connect(&urls.oltp).await?;
    let mut olap = databases::connect(&urls.olap).await?;
    let (id, new) = backfill::request_by_name(&mut oltp, &mut olap, publication, table).await?;
    if new {
        println!("backfill {id} of {table} requested");
    } else {
        println!("{table} is already being copied (backfill {id})");
    }
    if no_wait {
        return Ok(());
    }
    let mut bar = super::progress::Bar::new();
    let started = Instant::now();
    let mut told_waiting = false;
    loop {
        let Some(p) = backfill::progress(&mut olap, id).await? else {
            bail!("backfill {id} disappeared");
        };
        let rate = p.rows_copied as f64 / started.elapsed().as_secs_f64().max(1e-3);
        bar.draw(table, p.rows_copied as u64, p.rows_estimate, rate);
        match p.state.as_str() {
            "done" => {
                bar.finish();
                println!(
                    "{table}: {} rows copied in {} chunks ({:.1} s)",
                    p.rows_copied,
                    p.chunks_merged,
                    started.elapsed().as_secs_f64()
                );
                return Ok(());
            }
            "failed" | "cancelled" => {
                bar.finish();
                bail!(
                    "backfill {id} of {table} {}: {}",
                    p.state,
                    p.error.unwrap_or_default()
                );
            }
            _ => {}
        }
        if !told_waiting && p.state == "pending" && started.elapsed() > Duration::from_secs(5) {
            bar.finish();
            eprintln!(
                "waiting for the replicator to start the copy (is `brewlytics replicate` running?)"
            );
            told_waiting = true;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
