//! End-to-end freshness: for sampled orders, the time from the API's 201 until the order's
//! rows are visible in OLAP `fact_sales`. One poller asks for all pending orders at once
//! (`order_id = any($1)`), never one query per order.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sqlx::postgres::PgConnectOptions;
use sqlx::{Connection, PgConnection};
use tokio::sync::watch;
use tokio::time::Instant;
use uuid::Uuid;

use crate::histogram::Histogram;
use crate::report::{FreshnessReport, Latency};

/// Orders waiting to be seen, and what was measured so far.
#[derive(Debug, Default)]
pub struct Tracker {
    pending: HashMap<Uuid, Instant>,
    latency: Histogram,
    sampled: u64,
    arrived: u64,
    dropped: u64,
}

impl Tracker {
    /// An order the API acknowledged (201) at `at`.
    pub fn placed(&mut self, id: Uuid, at: Instant) {
        if self.pending.insert(id, at).is_none() {
            self.sampled += 1;
        }
    }

    /// The test deleted this order: if it was not seen yet it will never be, so it leaves the
    /// sample.
    pub fn deleted(&mut self, id: &Uuid) {
        if self.pending.remove(id).is_some() {
            self.dropped += 1;
        }
    }

    /// `ids` were visible in OLAP as of `at` (the poll's start).
    pub fn seen(&mut self, ids: &[Uuid], at: Instant) {
        for id in ids {
            if let Some(placed) = self.pending.remove(id) {
                self.latency.record(at.saturating_duration_since(placed));
                self.arrived += 1;
            }
        }
    }

    pub fn pending_ids(&self) -> Vec<Uuid> {
        self.pending.keys().copied().collect()
    }

    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    pub fn p50_ms(&self) -> f64 {
        self.latency.quantile_ms(0.5)
    }

    pub fn report(&self, waited: Duration, poll: Duration) -> FreshnessReport {
        FreshnessReport {
            sampled: self.sampled - self.dropped,
            arrived: self.arrived,
            missing: self.pending.len() as u64,
            dropped: self.dropped,
            waited_s: (waited.as_secs_f64() * 10.0).round() / 10.0,
            poll_ms: poll.as_millis() as u64,
            latency_ms: Latency::of(&self.latency),
        }
    }
}

pub type SharedTracker = Arc<Mutex<Tracker>>;

/// Connects to OLAP (fails fast with a clear error if it cannot).
pub async fn connect(olap: &PgConnectOptions) -> anyhow::Result<PgConnection> {
    let mut conn = tokio::time::timeout(Duration::from_secs(10), PgConnection::connect_with(olap))
        .await
        .map_err(|_| anyhow::anyhow!("connecting to OLAP timed out"))??;
    // The poll must never wait on the replicator's locks for long.
    sqlx::query("set statement_timeout = '5s'")
        .execute(&mut conn)
        .await?;
    sqlx::query("select 1 from fact_sales limit 0")
        .execute(&mut conn)
        .await
        .map_err(|e| anyhow::anyhow!("OLAP has no readable fact_sales: {e}"))?;
    Ok(conn)
}

/// Polls every `every` until `stop` turns true. Errors are retried (a restart of OLAP is not
/// fatal to the load test); after 20 in a row the poller gives up and the rest count as missing.
pub async fn poll(
    mut conn: PgConnection,
    tracker: SharedTracker,
    every: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let mut failures = 0;
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.wait_for(|v| *v) => return,
        }
        let ids = tracker.lock().expect("tracker lock").pending_ids();
        if ids.is_empty() {
            continue;
        }
        let at = Instant::now();
        let found: Result<Vec<Uuid>, sqlx::Error> =
            sqlx::query_scalar("select distinct order_id from fact_sales where order_id = any($1)")
                .bind(&ids)
                .fetch_all(&mut conn)
                .await;
        match found {
            Ok(found) => {
                failures = 0;
                tracker.lock().expect("tracker lock").seen(&found, at);
            }
            Err(e) => {
                failures += 1;
                if failures >= 20 {
                    eprintln!("loadtest: freshness polling stopped after 20 errors: {e}");
                    return;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tracker_measures_from_201_and_drops_deleted_orders() {
        let t0 = Instant::now();
        let mut t = Tracker::default();
        let (a, b, c) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
        t.placed(a, t0);
        t.placed(b, t0 + Duration::from_millis(10));
        t.placed(c, t0);
        t.deleted(&c);
        t.seen(&[a, Uuid::now_v7()], t0 + Duration::from_millis(50));
        t.seen(&[a], t0 + Duration::from_millis(90)); // seen again: counted once
        assert_eq!(t.pending(), 1);
        let r = t.report(Duration::from_secs(2), Duration::from_millis(10));
        assert_eq!((r.sampled, r.arrived, r.missing, r.dropped), (2, 1, 1, 1));
        assert_eq!(r.latency_ms.p50, 50.0); // the largest value is exact
        t.seen(&[b], t0 + Duration::from_millis(40));
        let r = t.report(Duration::from_secs(2), Duration::from_millis(10));
        assert_eq!((r.arrived, r.missing), (2, 0));
        assert_eq!(r.latency_ms.max, 50.0);
        // Log buckets: within 1.6 % above the true value.
        assert!(
            (30.0..30.5).contains(&r.latency_ms.p50),
            "{}",
            r.latency_ms.p50
        );
    }
}
