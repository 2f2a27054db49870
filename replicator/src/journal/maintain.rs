//! The journal's background task in `replicate` (while it leads): every pass it creates
//! partitions ahead of the source's WAL position, gives rows the default partition caught a
//! partition of their own, applies `--journal-retention` (one compaction of at most
//! [`PARTS_PER_PASS`] partitions of changes, then a pause: bounded reads of the journal), and
//! updates `/metrics`. A failed pass is logged and tried again on the next: the stream never
//! waits for it, and its DDL waits at most a moment for the journal's lock.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use sqlx::{Connection, PgConnection};
use tokio::sync::watch;

use super::compact::{self, Before, Outcome, Trigger};
use super::metrics::JournalMetrics;
use super::policy::{self, Retention};
use super::{partitions, report, JournalError};
use crate::lsn::Lsn;
use brewlytics_support::DbUrl;

/// Partitions of changes one compaction reads at most.
pub const PARTS_PER_PASS: usize = 1;
/// Partitions kept ready ahead of the source's WAL position.
const AHEAD: u64 = 3;

#[derive(Clone, Debug)]
pub struct JournalConfig {
    pub retention: Retention,
    /// Time between passes.
    pub interval: Duration,
}

impl Default for JournalConfig {
    fn default() -> Self {
        Self {
            retention: Retention::Off,
            interval: Duration::from_secs(5),
        }
    }
}

/// Starts the task for the replicator `rc`: its first pass (partitions for what the stream
/// and a first copy are about to write) before this returns, at most a few seconds.
pub async fn start(
    cfg: JournalConfig,
    rc: &crate::config::ReplicatorConfig,
    metrics: Arc<JournalMetrics>,
    stop: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    let mut m = Maintainer::new(cfg, Some(rc.oltp_url.clone()), rc.olap_url.clone(), metrics);
    m.pass_logged(Some(Duration::from_secs(10))).await;
    tokio::spawn(async move {
        tokio::time::sleep(m.cfg.interval).await;
        m.run(stop).await
    })
}

/// One pass before a copy that is not the daemon's (`resync`): partitions for its rows.
pub async fn prepare(rc: &crate::config::ReplicatorConfig) {
    let mut m = Maintainer::new(
        JournalConfig::default(),
        Some(rc.oltp_url.clone()),
        rc.olap_url.clone(),
        Arc::new(JournalMetrics::default()),
    );
    m.pass_logged(Some(Duration::from_secs(10))).await;
}

/// The task's state between passes.
pub struct Maintainer {
    cfg: JournalConfig,
    /// The source, whose WAL position the partitions stay ahead of (`None`: a loader, which
    /// only knows the journal's own last position).
    oltp_url: Option<DbUrl>,
    olap_url: DbUrl,
    olap: Option<PgConnection>,
    oltp: Option<PgConnection>,
    /// The position at the last pass, to measure how fast it moves.
    last_position: Option<(Lsn, Instant)>,
    rate: f64,
    metrics: Arc<JournalMetrics>,
}

impl Maintainer {
    pub fn new(
        cfg: JournalConfig,
        oltp_url: Option<DbUrl>,
        olap_url: DbUrl,
        metrics: Arc<JournalMetrics>,
    ) -> Self {
        metrics.retention(cfg.retention);
        Self {
            cfg,
            oltp_url,
            olap_url,
            olap: None,
            oltp: None,
            last_position: None,
            rate: 0.0,
            metrics,
        }
    }

    /// A pass (given up after `within`, if given); a failure is logged and counted, and the
    /// next pass tries again.
    async fn pass_logged(&mut self, within: Option<Duration>) {
        // A first pass (bounded in time) leaves retention to the background.
        let retain = within.is_none();
        let outcome = match within {
            Some(d) => tokio::time::timeout(d, self.pass(retain)).await,
            None => Ok(self.pass(retain).await),
        };
        match outcome {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                self.metrics.failed();
                self.olap = None;
                tracing::warn!(error = %e, "journal maintenance failed; trying again on the next pass");
            }
            Err(_) => {
                self.olap = None;
                tracing::warn!("journal maintenance took too long; going on in the background")
            }
        }
    }

    /// Passes until `stop` turns true (the first one right away).
    pub async fn run(mut self, mut stop: watch::Receiver<bool>) {
        loop {
            if *stop.borrow() {
                return;
            }
            self.pass_logged(None).await;
            tokio::select! {
                _ = tokio::time::sleep(self.cfg.interval) => {}
                changed = stop.changed() => {
                    if changed.is_err() {
                        return;
                    }
                }
            }
        }
    }

    /// One pass: partitions ahead, retention (when `retain`), metrics.
    pub async fn pass(&mut self, retain: bool) -> Result<(), JournalError> {
        let wal = self.source_wal().await;
        let olap = match &mut self.olap {
            Some(c) => c,
            None => self
                .olap
                .insert(PgConnection::connect_with(&self.olap_url.connect_options()?).await?),
        };
        if !partitions::partitioned(olap).await? {
            return Err(JournalError::NotMigrated);
        }
        let layout = partitions::layout(olap).await?;
        let width = policy::partition_width(self.rate, policy::partition_span(self.cfg.retention));
        if partitions::adopt_default(olap, &layout, width).await? {
            return Ok(());
        }
        // Ahead of whatever is furthest: the source's WAL or a checkpoint (the journal's
        // committed end is never past the newest checkpoint: `COMMITTED_END`).
        let checkpoint: Option<String> =
            sqlx::query_scalar("select max(lsn)::text from replication_checkpoint")
                .fetch_one(&mut *olap)
                .await?;
        let position = [wal, checkpoint.and_then(|l| l.parse().ok())]
            .into_iter()
            .flatten()
            .max()
            .unwrap_or(Lsn::ZERO);
        self.rate = next_rate(self.rate, &mut self.last_position, position);
        let olap = self.olap.as_mut().expect("connected above");
        let wanted = policy::partitions_to_create(layout.tail(), position, width, AHEAD);
        // Never more than the next few: the rest come on later passes.
        let made =
            partitions::create(olap, &wanted[..wanted.len().min(AHEAD as usize + 2)]).await?;
        if made > 0 {
            tracing::debug!(made, width, "journal partitions created ahead");
        }
        if retain && self.cfg.retention != Retention::Off {
            self.retain(layout.parts()).await?;
        }
        let olap = self.olap.as_mut().expect("connected above");
        compact::drop_leftovers(olap).await?;
        let status = report::read(olap).await?;
        self.metrics.reading(&status.reading());
        Ok(())
    }

    /// One retention step: a compaction at the cut the policy picks, if one is due.
    async fn retain(&mut self, parts: Vec<policy::Part>) -> Result<(), JournalError> {
        let olap = self.olap.as_mut().expect("connected");
        let limit = match compact::limit(olap).await? {
            Ok(l) => l,
            Err(_) => return Ok(()),
        };
        let done = compact::replayable_from(olap).await?.unwrap_or(Lsn::ZERO);
        let Some(cut) = policy::retention_cut(
            &parts,
            self.cfg.retention,
            Utc::now(),
            limit,
            done,
            PARTS_PER_PASS,
        ) else {
            return Ok(());
        };
        let started = Instant::now();
        match compact::compact(olap, Before::Lsn(cut), Trigger::Retention).await? {
            Outcome::Done(c) => {
                self.metrics.compacted();
                tracing::info!(cut = %c.cut, images = c.images, dropped = c.dropped_partitions,
                    dropped_mb = c.dropped_bytes >> 20, deleted = c.deleted_rows,
                    ms = started.elapsed().as_millis() as u64, "journal compacted (retention)");
            }
            Outcome::Nothing(why) => tracing::debug!(%why, "journal retention: nothing done"),
        }
        Ok(())
    }

    /// The source's WAL position now (`None` when there is no source or it cannot be read).
    async fn source_wal(&mut self) -> Option<Lsn> {
        if self.oltp.is_none() {
            let opts = self.oltp_url.as_ref()?.connect_options().ok()?;
            self.oltp = PgConnection::connect_with(&opts).await.ok();
        }
        let conn = self.oltp.as_mut()?;
        match sqlx::query_scalar::<_, String>("select pg_current_wal_lsn()::text")
            .fetch_one(&mut *conn)
            .await
        {
            Ok(w) => w.parse().ok(),
            Err(_) => {
                self.oltp = None;
                None
            }
        }
    }
}

/// The rate (bytes per second) `position` moves at, from the last reading: smoothed, but
/// quick to follow a rise.
fn next_rate(rate: f64, last: &mut Option<(Lsn, Instant)>, position: Lsn) -> f64 {
    let now = Instant::now();
    let next = match *last {
        Some((before, at)) if now > at => {
            let r = position.bytes_since(before) as f64 / now.duration_since(at).as_secs_f64();
            if r > rate {
                r
            } else {
                0.8 * rate + 0.2 * r
            }
        }
        _ => rate,
    };
    *last = Some((position, now));
    next
}

/// The task for a loader (`load --from nats`): partitions ahead of the journal's own end, no
/// retention, until `stop`.
pub fn spawn_for_loader(
    olap_url: DbUrl,
    stop: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    let m = Maintainer::new(
        JournalConfig::default(),
        None,
        olap_url,
        Arc::new(JournalMetrics::default()),
    );
    tokio::spawn(m.run(stop))
}
