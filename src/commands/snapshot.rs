//! `brewlytics snapshot --table NAME`: a backfill requested, then followed until it ends.

use std::io::{IsTerminal, Write};
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
    let tty = std::io::stderr().is_terminal();
    let started = Instant::now();
    let mut told_waiting = false;
    loop {
        let Some(p) = backfill::progress(&mut olap, id).await? else {
            bail!("backfill {id} disappeared");
        };
        let pct = p
            .rows_estimate
            .filter(|e| *e > 0)
            .map(|e| (p.rows_copied as f64 / e as f64 * 100.0).min(100.0));
        let rate = p.rows_copied as f64 / started.elapsed().as_secs_f64().max(1e-3);
        if tty {
            let bar = pct.map_or(String::new(), |pct| {
                let filled = (pct / 5.0).round() as usize;
                format!(
                    "[{}{}] {pct:5.1}% ",
                    "#".repeat(filled),
                    " ".repeat(20 - filled.min(20))
                )
            });
            eprint!(
                "\r{bar}{} rows copied ({rate:.0}/s){}",
                p.rows_copied,
                " ".repeat(8)
            );
            let _ = std::io::stderr().flush();
        }
        match p.state.as_str() {
            "done" => {
                if tty {
                    eprintln!();
                }
                println!(
                    "{table}: {} rows copied in {} chunks ({:.1} s)",
                    p.rows_copied,
                    p.chunks_merged,
                    started.elapsed().as_secs_f64()
                );
                return Ok(());
            }
            "failed" | "cancelled" => {
                if tty {
                    eprintln!();
                }
                bail!(
                    "backfill {id} of {table} {}: {}",
                    p.state,
                    p.error.unwrap_or_default()
                );
            }
            _ => {}
        }
        if !told_waiting && p.state == "pending" && started.elapsed() > Duration::from_secs(5) {
            eprintln!(
                "{}waiting for the replicator to start the copy (is `brewlytics replicate` running?)",
                if tty { "\n" } else { "" }
            );
            told_waiting = true;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
