//! What the running replicator knows about itself: the Prometheus metrics its operators and
//! alert rules read (`/metrics`) and the live state behind `/ready`, `/status` and the status
//! page (role, last error, a few minutes of lag history).
//!
//! A leaf: every part reports here (the pipeline, the monitor, the sinks, the backfill
//! worker) and it knows none of them — [`metrics`] (the series), [`live`] (the state),
//! [`heartbeat`] (lag by heartbeat), [`nats`] (the NATS publisher's and loader's series).
//!
//! Error texts kept here come from our own error types (database URLs print `***` for the
//! password; database errors carry the server's primary message, which names constraints
//! and tables, never the failing row's values).

pub mod heartbeat;
pub mod live;
pub(crate) mod metrics;
pub mod nats;

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use chrono::Utc;
use prometheus_client::registry::Registry;

use self::heartbeat::Heartbeats;
use self::metrics::{ChangeLabels, CopyLabels, KindLabels, Metrics, StatusLabels};
use self::nats::{LoaderMetrics, PublisherMetrics};
use crate::change::Op;
use crate::lsn::Lsn;
use crate::star::metrics::{StarMetrics, StarReading};

use live::State;
pub use live::{CopyLive, InProgress, LastBatch, LastError, Live, Role, Sample, SlotReading};

/// Samples of lag kept for the status page's chart.
const HISTORY: usize = 600;

/// Every `kind` of `brewlytics_replicator_errors_total`: `ReplicatorError::kind`,
/// `ApplyError::kind`, and the daemon's and the monitor's own (`database`, `monitor`). Each
/// series exists at 0 from the first scrape, so `rate()` and `increase()` see the first error.
pub const ERROR_KINDS: &[&str] = &[
    "fatal", "config", "stream", "decode", "olap", "rejected", "schema", "star", "snapshot",
    "database", "monitor", "nats", "spool",
];

/// The `op` values of `brewlytics_changes_applied_total`, initialised for every published table.
pub const OPS: [Op; 5] = [
    Op::Snapshot,
    Op::Insert,
    Op::Update,
    Op::Delete,
    Op::Truncate,
];

/// The `status` values of `brewlytics_slot_wal_status`: `pg_replication_slots.wal_status`, and
/// `missing` when there is no such slot. All present (0, or 1 for the current one).
pub const WAL_STATUSES: &[&str] = &["reserved", "extended", "unreserved", "lost", "missing"];

/// What one committed batch applied: counts for metrics, and how long its transaction was
/// open (from its first part to its commit).
#[derive(Debug, Default, Clone)]
pub struct ApplyStats {
    pub events: usize,
    pub dead_letters: usize,
    /// (table, op) → changes.
    pub by_table: Vec<(Arc<str>, Op, u64)>,
    pub elapsed: Duration,
    /// The star's inputs, when the batch read them (it changed them, or now and then).
    pub star: Option<StarReading>,
}

/// Metrics and live state, shared by the pipeline, the monitor and the HTTP endpoints.
pub struct Telemetry {
    registry: Registry,
    metrics: Metrics,
    heartbeats: Mutex<Heartbeats>,
    state: Mutex<State>,
    /// The NATS publisher's metrics (`brewlytics_nats_*`, at 0 when not publishing).
    pub nats: Arc<PublisherMetrics>,
    /// `brewlytics_star_degraded_inputs`.
    star: StarMetrics,
    /// `brewlytics_journal_*` (crate::journal::metrics).
    pub journal: Arc<crate::journal::metrics::JournalMetrics>,
}

impl std::fmt::Debug for Telemetry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Telemetry").finish_non_exhaustive()
    }
}

fn unix_now() -> f64 {
    Utc::now().timestamp_micros() as f64 / 1e6
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic elsewhere must not take the metrics down with it.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Telemetry {
    pub fn new() -> Arc<Self> {
        Self::with(|_| ()).0
    }

    /// With the clickstream events loader's series (`brewlytics_events_loader_*`, see
    /// [`LoaderMetrics::register_events`]) on the same `/metrics`, for a process that runs
    /// the loader beside the replicator (`up --nats-url`).
    pub fn with_events_loader(stream: &str, consumer: &str) -> (Arc<Self>, Arc<LoaderMetrics>) {
        let (telemetry, events) =
            Self::with(|registry| LoaderMetrics::register_events(registry, stream, consumer));
        (telemetry, Arc::new(events))
    }

    /// The replicator's series, and whatever `more` registers beside them.
    fn with<T>(more: impl FnOnce(&mut Registry) -> T) -> (Arc<Self>, T) {
        let mut registry = Registry::default();
        let extra = more(&mut registry);
        let metrics = Metrics::register(&mut registry);
        for &kind in ERROR_KINDS {
            let _ = metrics.errors.get_or_create(&KindLabels { kind });
        }
        let nats = Arc::new(PublisherMetrics::register(&mut registry));
        let star = StarMetrics::register(&mut registry);
        let journal = Arc::new(crate::journal::metrics::JournalMetrics::register(
            &mut registry,
        ));
        for outcome in ["committed", "rolled_back"] {
            let _ = metrics
                .streams_ended
                .get_or_create(&metrics::OutcomeLabels { outcome });
        }
        for &status in WAL_STATUSES {
            let _ = metrics.wal_status.get_or_create(&StatusLabels {
                status: status.to_owned(),
            });
        }
        let instance = std::process::id() as u64 ^ (Utc::now().timestamp_micros() as u64) << 16;
        let telemetry = Arc::new(Self {
            registry,
            metrics,
            heartbeats: Mutex::new(Heartbeats::new(instance)),
            nats,
            star,
            journal,
            state: Mutex::new(State {
                role: Role::Starting,
                since: Utc::now(),
                slot: SlotReading::default(),
                retained_wal_warning: false,
                checkpoint: None,
                changes: 0,
                transactions: 0,
                dead_letters: 0,
                last_batch: None,
                last_error: None,
                history: VecDeque::new(),
                copy: None,
                changes_at_last_sample: (0, Instant::now()),
                other_wal_status: None,
            }),
        });
        (telemetry, extra)
    }

    /// Prometheus text exposition of every metric, the lag brought up to date first.
    pub fn encode(&self) -> String {
        self.refresh_lag();
        let mut out = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            tracing::error!(error = %e, "encoding metrics");
        }
        out
    }

    pub fn set_role(&self, role: Role) {
        let mut s = lock(&self.state);
        if s.role != role {
            s.role = role;
            s.since = Utc::now();
            if role == Role::Standby {
                // The leader applies (and ignores) what this process emitted: without this,
                // its lag would grow for ever after losing the lock (or a heartbeat sent
                // before it first stood by).
                lock(&self.heartbeats).forget();
                self.metrics.lag_seconds.set(0.0);
            }
        }
        self.metrics.role.set(role.code());
    }

    pub fn role(&self) -> Role {
        lock(&self.state).role
    }

    pub fn error(&self, kind: &'static str, message: String) {
        self.metrics
            .errors
            .get_or_create(&KindLabels { kind })
            .inc();
        lock(&self.state).last_error = Some(LastError {
            at: Utc::now(),
            kind,
            message,
        });
    }

    /// Creates `brewlytics_changes_applied_total{table, op}` at 0 for every operation of each
    /// of `tables` (the publication's tables, by name as in the `table` label), so each series
    /// exists before its first change. Tables already known keep their counts.
    pub fn publication_tables<S: AsRef<str>>(&self, tables: &[S]) {
        for table in tables {
            for op in OPS {
                let _ = self.metrics.changes.get_or_create(&ChangeLabels {
                    table: table.as_ref().to_owned(),
                    op: op.label(),
                });
            }
        }
    }

    /// The monitor's settings, exported for alerts and dashboards: the heartbeat interval
    /// (`None`: heartbeats off) and the retained-WAL warning threshold.
    pub fn monitor_settings(
        &self,
        heartbeat_interval: Option<Duration>,
        retained_wal_warn_bytes: i64,
    ) {
        self.metrics
            .heartbeat_interval
            .set(heartbeat_interval.map_or(0.0, |d| d.as_secs_f64()));
        self.metrics
            .retained_wal_threshold
            .set(retained_wal_warn_bytes);
    }

    /// The checkpoint OLAP holds when streaming starts.
    pub fn checkpoint(&self, lsn: Lsn) {
        self.metrics.checkpoint_lsn.set(lsn.0 as f64);
        lock(&self.state).checkpoint = Some(lsn);
    }

    /// A batch committed in OLAP.
    pub fn batch_applied(&self, stats: &ApplyStats, transactions: u64, checkpoint: Lsn) {
        let elapsed = stats.elapsed;
        for (table, op, n) in &stats.by_table {
            self.metrics
                .changes
                .get_or_create(&ChangeLabels {
                    table: table.to_string(),
                    op: op.label(),
                })
                .inc_by(*n);
        }
        self.metrics.transactions.inc_by(transactions);
        self.metrics.dead_letters.inc_by(stats.dead_letters as u64);
        if let Some(star) = &stats.star {
            self.star.set(star);
        }
        self.metrics.batch_seconds.observe(elapsed.as_secs_f64());
        self.checkpoint(checkpoint);
        let mut s = lock(&self.state);
        s.changes += stats.events as u64;
        s.transactions += transactions;
        s.dead_letters += stats.dead_letters as u64;
        s.last_batch = Some(LastBatch {
            at: Utc::now(),
            changes: stats.events,
            transactions,
            milliseconds: elapsed.as_secs_f64() * 1e3,
            checkpoint,
        });
    }

    /// The payload of the next heartbeat, and its sequence number.
    pub fn prepare_heartbeat(&self) -> (u64, String) {
        lock(&self.heartbeats).prepare()
    }

    pub fn heartbeat_emitted(&self, seq: u64, at: Instant) {
        if self.role() == Role::Standby {
            // Stood by while it was being sent: nobody here will apply it.
            return;
        }
        lock(&self.heartbeats).emitted(seq, at);
        self.metrics.heartbeat_emitted_at.set(unix_now());
    }

    /// The sequence number if `content` is one of this process's heartbeats.
    pub fn heartbeat_seq(&self, content: &[u8]) -> Option<u64> {
        lock(&self.heartbeats).parse(content)
    }

    pub fn heartbeat_applied(&self, seq: u64) {
        lock(&self.heartbeats).applied(seq, Instant::now());
        self.metrics.heartbeat_applied_at.set(unix_now());
        self.refresh_lag();
    }

    /// Lag in seconds by heartbeat; `None` before the first heartbeat.
    pub fn lag_seconds(&self) -> Option<f64> {
        lock(&self.heartbeats)
            .lag(Instant::now())
            .map(|d| d.as_secs_f64())
    }

    fn refresh_lag(&self) {
        if let Some(l) = self.lag_seconds() {
            self.metrics.lag_seconds.set(l);
        }
    }

    /// A reading of the slot by the monitor; also records a point of lag history.
    pub fn slot_reading(&self, reading: SlotReading, over_threshold: bool) {
        if let Some(b) = reading.lag_bytes {
            self.metrics.lag_bytes.set(b);
        }
        if let Some(b) = reading.retained_wal_bytes {
            self.metrics.retained_wal.set(b);
        }
        if let Some(b) = reading.max_slot_wal_keep_size_bytes {
            self.metrics.max_wal_keep_size.set(b);
        }
        self.metrics
            .retained_wal_warning
            .set(i64::from(over_threshold));
        let status = if reading.exists {
            reading
                .wal_status
                .clone()
                .unwrap_or_else(|| "unknown".into())
        } else {
            "missing".into()
        };
        self.refresh_lag();
        let lag_seconds = self.lag_seconds();
        let mut s = lock(&self.state);
        // Every known status stays in the exposition (0, or 1 for the current one).
        let other = (!WAL_STATUSES.contains(&status.as_str())).then(|| status.clone());
        if let Some(old) = s
            .other_wal_status
            .take()
            .filter(|o| Some(o) != other.as_ref())
        {
            self.metrics
                .wal_status
                .get_or_create(&StatusLabels { status: old })
                .set(0);
        }
        for known in WAL_STATUSES.iter().copied().chain(other.as_deref()) {
            self.metrics
                .wal_status
                .get_or_create(&StatusLabels {
                    status: known.to_owned(),
                })
                .set(i64::from(known == status));
        }
        s.other_wal_status = other;
        let now = Instant::now();
        let (before, then) = s.changes_at_last_sample;
        let secs = now.saturating_duration_since(then).as_secs_f64();
        let rate = if secs > 0.0 {
            (s.changes - before) as f64 / secs
        } else {
            0.0
        };
        s.changes_at_last_sample = (s.changes, now);
        if s.history.len() >= HISTORY {
            s.history.pop_front();
        }
        s.history.push_back(Sample {
            at: Utc::now(),
            lag_seconds,
            lag_bytes: reading.lag_bytes,
            changes_per_second: rate,
        });
        s.retained_wal_warning = over_threshold;
        s.slot = reading;
    }

    pub fn live(&self) -> Live {
        let lag_seconds = self.lag_seconds();
        let s = lock(&self.state);
        Live {
            role: s.role,
            since: s.since,
            lag_seconds,
            slot: s.slot.clone(),
            retained_wal_warning: s.retained_wal_warning,
            checkpoint_lsn: s.checkpoint,
            changes_applied: s.changes,
            transactions_applied: s.transactions,
            dead_letters: s.dead_letters,
            last_batch: s.last_batch.clone(),
            last_error: s.last_error.clone(),
            history: s.history.iter().cloned().collect(),
            copy: s.copy.clone(),
            in_progress: InProgress {
                receiving: self.metrics.streaming_in_progress.get() == 1,
                open: self.metrics.streams_open.get(),
                spool_bytes: self.metrics.streams_spooled.get(),
            },
            nats: Some(self.nats.live()).filter(|n| n.enabled),
        }
    }

    /// A copy of `table` (`kind`: `initial` or `backfill`) has `rows` copied of about
    /// `estimate`, at `rows_per_second` when known.
    pub fn copy_progress(
        &self,
        kind: &'static str,
        table: &str,
        rows: i64,
        estimate: Option<i64>,
        rows_per_second: Option<f64>,
    ) {
        let labels = CopyLabels {
            table: table.to_owned(),
            kind,
        };
        self.metrics.copy_rows.get_or_create(&labels).set(rows);
        if let Some(e) = estimate {
            self.metrics.copy_estimate.get_or_create(&labels).set(e);
        }
        let mut s = lock(&self.state);
        let rate = rows_per_second.or_else(|| {
            s.copy
                .as_ref()
                .filter(|b| b.table == table && b.kind == kind)
                .and_then(|b| b.rows_per_second)
        });
        if let Some(r) = rate {
            self.metrics.copy_rate.get_or_create(&labels).set(r);
        }
        s.copy = Some(CopyLive {
            kind,
            table: table.to_owned(),
            rows_copied: rows,
            rows_estimate: estimate,
            rows_per_second: rate,
            eta_seconds: match (estimate, rate) {
                (Some(e), Some(r)) if r > 0.0 => Some((e - rows).max(0) as f64 / r),
                _ => None,
            },
        });
    }

    /// No copy runs.
    pub fn copy_idle(&self) {
        lock(&self.state).copy = None;
    }

    /// Transactions in progress (`--streaming on`): how many, and their bytes on disk.
    pub fn streams(&self, open: usize, bytes: u64) {
        self.metrics.streams_open.set(open as i64);
        self.metrics
            .streams_spooled
            .set(i64::try_from(bytes).unwrap_or(i64::MAX));
    }

    /// Whether the session receives transactions in progress.
    pub fn streaming_in_progress(&self, on: bool) {
        self.metrics.streaming_in_progress.set(i64::from(on));
    }

    /// A transaction received in progress ended.
    pub fn stream_ended(&self, committed: bool) {
        let outcome = if committed {
            "committed"
        } else {
            "rolled_back"
        };
        self.metrics
            .streams_ended
            .get_or_create(&metrics::OutcomeLabels { outcome })
            .inc();
    }
}

#[cfg(test)]
mod tests;
