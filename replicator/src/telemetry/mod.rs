//! What the running replicator knows about itself: the Prometheus metrics of DESIGN.md and
//! the live state behind `/ready`, `/status` and the status page (role, last error, a few
//! minutes of lag history).
//!
//! Error texts kept here come from our own error types (database URLs print `***` for the
//! password; database errors carry the server's primary message, which names constraints
//! and tables, never the failing row's values).

pub mod heartbeat;
pub mod nats;

use std::collections::VecDeque;
use std::sync::atomic::{AtomicI64, AtomicU64};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Registry, Unit};
use serde::Serialize;

use self::heartbeat::Heartbeats;
use crate::change::Op;
use crate::lsn::Lsn;
use crate::sink::olap::ApplyStats;
use crate::telemetry::nats::{PublisherLive, PublisherMetrics};

/// Samples of lag kept for the status page's chart.
const HISTORY: usize = 600;

/// Every `kind` of `brewlytics_replicator_errors_total`: `ReplicatorError::kind`,
/// `ApplyError::kind`, and the daemon's and the monitor's own (`database`, `monitor`). Each
/// series exists at 0 from the first scrape, so `rate()` and `increase()` see the first error.
pub const ERROR_KINDS: &[&str] = &[
    "fatal", "config", "stream", "decode", "olap", "rejected", "schema", "star", "snapshot",
    "database", "monitor", "nats",
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

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ChangeLabels {
    table: String,
    op: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CopyLabels {
    table: String,
    /// `initial` (the first start's copy) or `backfill` (a copy while streaming).
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusLabels {
    status: String,
}

/// What this process is doing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Connecting, or waiting for the databases.
    Starting,
    /// Another replicator holds the slot's lock; this one takes over if it goes away.
    Standby,
    /// Holds the lock; setting up the slot or the initial copy, or reconnecting.
    Leader,
    /// Holds the lock and streams.
    Streaming,
    Stopped,
}

impl Role {
    fn code(self) -> i64 {
        match self {
            Role::Starting => 0,
            Role::Standby => 1,
            Role::Leader => 2,
            Role::Streaming => 3,
            Role::Stopped => 4,
        }
    }
}

/// One point of the lag chart.
#[derive(Clone, Debug, Serialize)]
pub struct Sample {
    pub at: DateTime<Utc>,
    pub lag_seconds: Option<f64>,
    pub lag_bytes: Option<i64>,
    /// Changes applied per second since the previous sample.
    pub changes_per_second: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct LastError {
    pub at: DateTime<Utc>,
    pub kind: &'static str,
    pub message: String,
}

#[derive(Clone, Debug, Serialize)]
pub struct LastBatch {
    pub at: DateTime<Utc>,
    pub changes: usize,
    pub transactions: u64,
    pub milliseconds: f64,
    pub checkpoint: Lsn,
}

/// The slot as the monitor last read it.
#[derive(Clone, Debug, Default, Serialize)]
pub struct SlotReading {
    pub at: Option<DateTime<Utc>>,
    pub exists: bool,
    pub wal_status: Option<String>,
    pub source_wal_lsn: Option<Lsn>,
    pub confirmed_flush_lsn: Option<Lsn>,
    pub lag_bytes: Option<i64>,
    pub retained_wal_bytes: Option<i64>,
    /// The source's `max_slot_wal_keep_size` in bytes; -1: unlimited (PostgreSQL's default).
    pub max_slot_wal_keep_size_bytes: Option<i64>,
}

/// The live part of `/status`.
#[derive(Clone, Debug, Serialize)]
pub struct Live {
    pub role: Role,
    pub since: DateTime<Utc>,
    pub lag_seconds: Option<f64>,
    pub slot: SlotReading,
    pub retained_wal_warning: bool,
    pub checkpoint_lsn: Option<Lsn>,
    pub changes_applied: u64,
    pub transactions_applied: u64,
    pub dead_letters: u64,
    pub last_batch: Option<LastBatch>,
    pub last_error: Option<LastError>,
    pub history: Vec<Sample>,
    /// The copy running now (the first start's, or a backfill), if any.
    pub copy: Option<CopyLive>,
    /// The NATS publisher, when changes are also published.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nats: Option<PublisherLive>,
}

/// A copy's progress (no row values: counts and a rate).
#[derive(Clone, Debug, Serialize)]
pub struct CopyLive {
    /// `initial` or `backfill`.
    pub kind: &'static str,
    pub table: String,
    pub rows_copied: i64,
    pub rows_estimate: Option<i64>,
    pub rows_per_second: Option<f64>,
    pub eta_seconds: Option<f64>,
}

struct State {
    role: Role,
    since: DateTime<Utc>,
    slot: SlotReading,
    retained_wal_warning: bool,
    checkpoint: Option<Lsn>,
    changes: u64,
    transactions: u64,
    dead_letters: u64,
    last_batch: Option<LastBatch>,
    last_error: Option<LastError>,
    history: VecDeque<Sample>,
    copy: Option<CopyLive>,
    changes_at_last_sample: (u64, Instant),
    /// A wal_status outside [`WAL_STATUSES`] last reported (set back to 0 when it changes).
    other_wal_status: Option<String>,
}

/// Metrics and live state, shared by the pipeline, the monitor and the HTTP endpoints.
pub struct Telemetry {
    registry: Registry,
    lag_bytes: Gauge<i64, AtomicI64>,
    lag_seconds: Gauge<f64, AtomicU64>,
    retained_wal: Gauge<i64, AtomicI64>,
    retained_wal_warning: Gauge<i64, AtomicI64>,
    wal_status: Family<StatusLabels, Gauge<i64, AtomicI64>>,
    role: Gauge<i64, AtomicI64>,
    changes: Family<ChangeLabels, Counter>,
    transactions: Counter,
    batch_seconds: Histogram,
    checkpoint_lsn: Gauge<f64, AtomicU64>,
    errors: Family<KindLabels, Counter>,
    dead_letters: Counter,
    copy_rows: Family<CopyLabels, Gauge<i64, AtomicI64>>,
    copy_estimate: Family<CopyLabels, Gauge<i64, AtomicI64>>,
    copy_rate: Family<CopyLabels, Gauge<f64, AtomicU64>>,
    max_wal_keep_size: Gauge<i64, AtomicI64>,
    retained_wal_threshold: Gauge<i64, AtomicI64>,
    heartbeat_interval: Gauge<f64, AtomicU64>,
    heartbeat_emitted_at: Gauge<f64, AtomicU64>,
    heartbeat_applied_at: Gauge<f64, AtomicU64>,
    heartbeats: Mutex<Heartbeats>,
    state: Mutex<State>,
    /// The NATS publisher's metrics (`brewlytics_nats_*`, at 0 when not publishing).
    pub nats: Arc<PublisherMetrics>,
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
        let mut registry = Registry::default();
        let lag_bytes = Gauge::<i64, AtomicI64>::default();
        registry.register_with_unit(
            "brewlytics_replication_lag",
            "Source WAL not yet confirmed as applied (current WAL LSN minus the slot's confirmed flush LSN)",
            Unit::Bytes,
            lag_bytes.clone(),
        );
        let lag_seconds = Gauge::<f64, AtomicU64>::default();
        registry.register_with_unit(
            "brewlytics_replication_lag",
            "Time from a heartbeat's commit on the source until it is applied in OLAP (or the age of the oldest unapplied heartbeat)",
            Unit::Seconds,
            lag_seconds.clone(),
        );
        let retained_wal = Gauge::<i64, AtomicI64>::default();
        registry.register_with_unit(
            "brewlytics_slot_retained_wal",
            "WAL the slot keeps on the source (current WAL LSN minus restart LSN)",
            Unit::Bytes,
            retained_wal.clone(),
        );
        let retained_wal_warning = Gauge::<i64, AtomicI64>::default();
        registry.register(
            "brewlytics_slot_retained_wal_over_threshold",
            "1 while the slot retains more WAL than the warning threshold",
            retained_wal_warning.clone(),
        );
        let wal_status = Family::<StatusLabels, Gauge<i64, AtomicI64>>::default();
        registry.register(
            "brewlytics_slot_wal_status",
            "1 for the slot's current wal_status (reserved, extended, unreserved, lost, missing)",
            wal_status.clone(),
        );
        let role = Gauge::<i64, AtomicI64>::default();
        registry.register(
            "brewlytics_replicator_role",
            "0 starting, 1 standby, 2 leader (not streaming yet), 3 streaming, 4 stopped",
            role.clone(),
        );
        let changes = Family::<ChangeLabels, Counter>::default();
        registry.register(
            "brewlytics_changes_applied",
            "Row changes applied to OLAP, by source table and operation",
            changes.clone(),
        );
        let transactions = Counter::default();
        registry.register(
            "brewlytics_transactions_applied",
            "Source transactions applied to OLAP (including heartbeats)",
            transactions.clone(),
        );
        let batch_seconds = Histogram::new(exponential_buckets(0.001, 2.0, 16));
        registry.register_with_unit(
            "brewlytics_apply_batch",
            "Time to apply and commit one OLAP batch",
            Unit::Seconds,
            batch_seconds.clone(),
        );
        let checkpoint_lsn = Gauge::<f64, AtomicU64>::default();
        registry.register(
            "brewlytics_checkpoint_lsn",
            "The LSN durably applied in OLAP, as a number",
            checkpoint_lsn.clone(),
        );
        let errors = Family::<KindLabels, Counter>::default();
        registry.register(
            "brewlytics_replicator_errors",
            "Errors that interrupted replication (then retried), by kind",
            errors.clone(),
        );
        let dead_letters = Counter::default();
        registry.register(
            "brewlytics_dead_letters",
            "Changes that could not be applied and went to cdc_dead_letters",
            dead_letters.clone(),
        );
        let copy_rows = Family::<CopyLabels, Gauge<i64, AtomicI64>>::default();
        registry.register(
            "brewlytics_copy_rows",
            "Rows copied so far of a table by the running copy (initial: the first start; backfill: while streaming)",
            copy_rows.clone(),
        );
        let copy_estimate = Family::<CopyLabels, Gauge<i64, AtomicI64>>::default();
        registry.register(
            "brewlytics_copy_rows_estimate",
            "Rows the source's statistics expect the running copy of a table to copy",
            copy_estimate.clone(),
        );
        let copy_rate = Family::<CopyLabels, Gauge<f64, AtomicU64>>::default();
        registry.register(
            "brewlytics_copy_rows_per_second",
            "Rows per second of the running copy of a table",
            copy_rate.clone(),
        );
        let max_wal_keep_size = Gauge::<i64, AtomicI64>::default();
        registry.register_with_unit(
            "brewlytics_slot_max_wal_keep_size",
            "The source's max_slot_wal_keep_size: retained WAL beyond it invalidates the slot (-1: unlimited)",
            Unit::Bytes,
            max_wal_keep_size.clone(),
        );
        let retained_wal_threshold = Gauge::<i64, AtomicI64>::default();
        registry.register_with_unit(
            "brewlytics_slot_retained_wal_threshold",
            "The retained-WAL warning threshold (--retained-wal-warn-mb)",
            Unit::Bytes,
            retained_wal_threshold.clone(),
        );
        let heartbeat_interval = Gauge::<f64, AtomicU64>::default();
        registry.register_with_unit(
            "brewlytics_heartbeat_interval",
            "How often a heartbeat is sent through the source (0: heartbeats off)",
            Unit::Seconds,
            heartbeat_interval.clone(),
        );
        let heartbeat_emitted_at = Gauge::<f64, AtomicU64>::default();
        registry.register(
            "brewlytics_heartbeat_last_emitted_timestamp_seconds",
            "Unix time the last heartbeat was committed on the source (0: none yet)",
            heartbeat_emitted_at.clone(),
        );
        let heartbeat_applied_at = Gauge::<f64, AtomicU64>::default();
        registry.register(
            "brewlytics_heartbeat_last_applied_timestamp_seconds",
            "Unix time the last heartbeat was applied in OLAP (0: none yet)",
            heartbeat_applied_at.clone(),
        );
        for &kind in ERROR_KINDS {
            let _ = errors.get_or_create(&KindLabels { kind });
        }
        let nats = Arc::new(PublisherMetrics::register(&mut registry));
        for &status in WAL_STATUSES {
            let _ = wal_status.get_or_create(&StatusLabels {
                status: status.to_owned(),
            });
        }
        let instance = std::process::id() as u64 ^ (Utc::now().timestamp_micros() as u64) << 16;
        Arc::new(Self {
            registry,
            lag_bytes,
            lag_seconds,
            retained_wal,
            retained_wal_warning,
            wal_status,
            role,
            changes,
            transactions,
            batch_seconds,
            checkpoint_lsn,
            errors,
            dead_letters,
            copy_rows,
            copy_estimate,
            copy_rate,
            max_wal_keep_size,
            retained_wal_threshold,
            heartbeat_interval,
            heartbeat_emitted_at,
            heartbeat_applied_at,
            heartbeats: Mutex::new(Heartbeats::new(instance)),
            nats,
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
        })
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
                self.lag_seconds.set(0.0);
            }
        }
        self.role.set(role.code());
    }

    pub fn role(&self) -> Role {
        lock(&self.state).role
    }

    pub fn error(&self, kind: &'static str, message: String) {
        self.errors.get_or_create(&KindLabels { kind }).inc();
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
                let _ = self.changes.get_or_create(&ChangeLabels {
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
        self.heartbeat_interval
            .set(heartbeat_interval.map_or(0.0, |d| d.as_secs_f64()));
        self.retained_wal_threshold.set(retained_wal_warn_bytes);
    }

    /// The checkpoint OLAP holds when streaming starts.
    pub fn checkpoint(&self, lsn: Lsn) {
        self.checkpoint_lsn.set(lsn.0 as f64);
        lock(&self.state).checkpoint = Some(lsn);
    }

    /// A batch committed in OLAP.
    pub fn batch_applied(
        &self,
        stats: &ApplyStats,
        transactions: u64,
        elapsed: Duration,
        checkpoint: Lsn,
    ) {
        for (table, op, n) in &stats.by_table {
            self.changes
                .get_or_create(&ChangeLabels {
                    table: table.to_string(),
                    op: op.label(),
                })
                .inc_by(*n);
        }
        self.transactions.inc_by(transactions);
        self.dead_letters.inc_by(stats.dead_letters as u64);
        self.batch_seconds.observe(elapsed.as_secs_f64());
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
        self.heartbeat_emitted_at.set(unix_now());
    }

    /// The sequence number if `content` is one of this process's heartbeats.
    pub fn heartbeat_seq(&self, content: &[u8]) -> Option<u64> {
        lock(&self.heartbeats).parse(content)
    }

    pub fn heartbeat_applied(&self, seq: u64) {
        lock(&self.heartbeats).applied(seq, Instant::now());
        self.heartbeat_applied_at.set(unix_now());
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
            self.lag_seconds.set(l);
        }
    }

    /// A reading of the slot by the monitor; also records a point of lag history.
    pub fn slot_reading(&self, reading: SlotReading, over_threshold: bool) {
        if let Some(b) = reading.lag_bytes {
            self.lag_bytes.set(b);
        }
        if let Some(b) = reading.retained_wal_bytes {
            self.retained_wal.set(b);
        }
        if let Some(b) = reading.max_slot_wal_keep_size_bytes {
            self.max_wal_keep_size.set(b);
        }
        self.retained_wal_warning.set(i64::from(over_threshold));
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
            self.wal_status
                .get_or_create(&StatusLabels { status: old })
                .set(0);
        }
        for known in WAL_STATUSES.iter().copied().chain(other.as_deref()) {
            self.wal_status
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
        self.copy_rows.get_or_create(&labels).set(rows);
        if let Some(e) = estimate {
            self.copy_estimate.get_or_create(&labels).set(e);
        }
        let mut s = lock(&self.state);
        let rate = rows_per_second.or_else(|| {
            s.copy
                .as_ref()
                .filter(|b| b.table == table && b.kind == kind)
                .and_then(|b| b.rows_per_second)
        });
        if let Some(r) = rate {
            self.copy_rate.get_or_create(&labels).set(r);
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_has_the_design_names() {
        let t = Telemetry::new();
        t.batch_applied(
            &ApplyStats {
                events: 3,
                dead_letters: 1,
                by_table: vec![
                    (Arc::from("orders"), Op::Insert, 2),
                    (Arc::from("order_items"), Op::Delete, 1),
                ],
            },
            2,
            Duration::from_millis(12),
            Lsn(0x1_0000_0010),
        );
        t.error("stream", "connection reset".into());
        t.slot_reading(
            SlotReading {
                exists: true,
                wal_status: Some("reserved".into()),
                lag_bytes: Some(120),
                retained_wal_bytes: Some(4096),
                ..Default::default()
            },
            false,
        );
        let text = t.encode();
        for needle in [
            "brewlytics_replication_lag_bytes 120",
            "brewlytics_replication_lag_seconds",
            "brewlytics_slot_retained_wal_bytes 4096",
            "brewlytics_slot_wal_status{status=\"reserved\"} 1",
            "brewlytics_changes_applied_total{table=\"orders\",op=\"insert\"} 2",
            "brewlytics_changes_applied_total{table=\"order_items\",op=\"delete\"} 1",
            "brewlytics_transactions_applied_total 2",
            "brewlytics_apply_batch_seconds_bucket",
            "brewlytics_checkpoint_lsn 4294967312",
            "brewlytics_replicator_errors_total{kind=\"stream\"} 1",
            "brewlytics_dead_letters_total 1",
        ] {
            assert!(text.contains(needle), "{needle} missing from\n{text}");
        }
        let live = t.live();
        assert_eq!(live.changes_applied, 3);
        assert_eq!(live.history.len(), 1);
        assert_eq!(live.last_error.unwrap().kind, "stream");
    }

    /// The value of the series `series` (name and labels, as encoded) in `text`.
    fn sample(text: &str, series: &str) -> Option<f64> {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))?
            .parse()
            .ok()
    }

    #[test]
    fn a_fresh_replicator_exports_every_known_series_at_zero() {
        let t = Telemetry::new();
        let text = t.encode();
        for kind in ERROR_KINDS {
            let series = format!("brewlytics_replicator_errors_total{{kind=\"{kind}\"}}");
            assert_eq!(sample(&text, &series), Some(0.0), "{series} in\n{text}");
        }
        for status in WAL_STATUSES {
            let series = format!("brewlytics_slot_wal_status{{status=\"{status}\"}}");
            assert_eq!(sample(&text, &series), Some(0.0), "{series} in\n{text}");
        }
        for name in [
            "brewlytics_dead_letters_total",
            "brewlytics_transactions_applied_total",
            "brewlytics_heartbeat_last_emitted_timestamp_seconds",
            "brewlytics_heartbeat_last_applied_timestamp_seconds",
            "brewlytics_heartbeat_interval_seconds",
            "brewlytics_slot_max_wal_keep_size_bytes",
            "brewlytics_slot_retained_wal_threshold_bytes",
        ] {
            assert_eq!(sample(&text, name), Some(0.0), "{name} in\n{text}");
        }
        assert!(!text.contains("brewlytics_changes_applied_total{"));

        // The publication's tables: every operation at 0; counts survive a second call.
        t.publication_tables(&["orders", "payments"]);
        t.batch_applied(
            &ApplyStats {
                events: 2,
                dead_letters: 0,
                by_table: vec![(Arc::from("orders"), Op::Insert, 2)],
            },
            1,
            Duration::from_millis(3),
            Lsn(16),
        );
        t.publication_tables(&["orders".to_owned(), "payments".to_owned()]);
        let text = t.encode();
        for table in ["orders", "payments"] {
            for op in ["snapshot", "insert", "update", "delete", "truncate"] {
                let series =
                    format!("brewlytics_changes_applied_total{{table=\"{table}\",op=\"{op}\"}}");
                let want = if (table, op) == ("orders", "insert") {
                    2.0
                } else {
                    0.0
                };
                assert_eq!(sample(&text, &series), Some(want), "{series} in\n{text}");
            }
        }
        assert_eq!(
            text.matches("brewlytics_changes_applied_total{").count(),
            10
        );
    }

    #[test]
    fn ops_lists_every_operation() {
        for op in OPS {
            // A new Op fails to compile here until it is added to OPS.
            match op {
                Op::Snapshot | Op::Insert | Op::Update | Op::Delete | Op::Truncate => {}
                // Not row changes: never counted in brewlytics_changes_applied_total.
                Op::Schema | Op::Backfill => panic!("{op:?} is not a row operation"),
            }
        }
        let labels: std::collections::HashSet<_> = OPS.iter().map(|o| o.label()).collect();
        assert_eq!(labels.len(), 5);
    }

    #[test]
    fn wal_status_keeps_every_state_with_one_current() {
        let t = Telemetry::new();
        let read = |status: Option<&str>, exists: bool| {
            t.slot_reading(
                SlotReading {
                    exists,
                    wal_status: status.map(str::to_owned),
                    max_slot_wal_keep_size_bytes: Some(1 << 30),
                    ..Default::default()
                },
                false,
            );
            t.encode()
        };
        let current = |text: &str| -> Vec<String> {
            text.lines()
                .filter_map(|l| l.strip_prefix("brewlytics_slot_wal_status{status=\""))
                .filter(|l| l.ends_with(" 1"))
                .map(|l| l.split('"').next().unwrap().to_owned())
                .collect()
        };
        let text = read(Some("reserved"), true);
        assert_eq!(current(&text), ["reserved"]);
        assert_eq!(
            sample(&text, "brewlytics_slot_max_wal_keep_size_bytes"),
            Some((1u64 << 30) as f64)
        );
        let text = read(Some("lost"), true);
        assert_eq!(current(&text), ["lost"]);
        assert_eq!(
            sample(&text, "brewlytics_slot_wal_status{status=\"reserved\"}"),
            Some(0.0)
        );
        // A state this version does not know is shown, and set back to 0 when it goes.
        let text = read(Some("someday"), true);
        assert_eq!(current(&text), ["someday"]);
        let text = read(None, false);
        assert_eq!(current(&text), ["missing"]);
        assert_eq!(
            sample(&text, "brewlytics_slot_wal_status{status=\"someday\"}"),
            Some(0.0)
        );
    }

    #[test]
    fn a_standby_forgets_its_heartbeats_and_reports_no_lag() {
        let t = Telemetry::new();
        t.set_role(Role::Starting);
        let (seq, _) = t.prepare_heartbeat();
        t.heartbeat_emitted(seq, Instant::now() - Duration::from_secs(30));
        assert!(t.lag_seconds().unwrap() >= 30.0);
        t.set_role(Role::Standby);
        assert_eq!(t.lag_seconds(), None);
        assert_eq!(
            sample(&t.encode(), "brewlytics_replication_lag_seconds"),
            Some(0.0)
        );
        // One sent while it stood by is not waited for either.
        let (seq, _) = t.prepare_heartbeat();
        t.heartbeat_emitted(seq, Instant::now() - Duration::from_secs(5));
        assert_eq!(t.lag_seconds(), None);
        // Leading again, heartbeats count.
        t.set_role(Role::Streaming);
        let (seq, _) = t.prepare_heartbeat();
        t.heartbeat_emitted(seq, Instant::now());
        t.heartbeat_applied(seq);
        assert!(t.lag_seconds().unwrap() < 5.0);
    }

    #[test]
    fn heartbeats_and_monitor_settings_are_exported() {
        let t = Telemetry::new();
        t.monitor_settings(Some(Duration::from_millis(250)), 64 << 20);
        let before = unix_now();
        let (seq, _) = t.prepare_heartbeat();
        t.heartbeat_emitted(seq, Instant::now());
        let text = t.encode();
        let emitted = sample(&text, "brewlytics_heartbeat_last_emitted_timestamp_seconds").unwrap();
        assert!(emitted >= before && emitted <= unix_now(), "{emitted}");
        assert_eq!(
            sample(&text, "brewlytics_heartbeat_last_applied_timestamp_seconds"),
            Some(0.0)
        );
        assert_eq!(
            sample(&text, "brewlytics_heartbeat_interval_seconds"),
            Some(0.25)
        );
        assert_eq!(
            sample(&text, "brewlytics_slot_retained_wal_threshold_bytes"),
            Some((64u64 << 20) as f64)
        );
        t.heartbeat_applied(seq);
        let applied = sample(
            &t.encode(),
            "brewlytics_heartbeat_last_applied_timestamp_seconds",
        )
        .unwrap();
        assert!(applied >= emitted, "{applied} < {emitted}");
        t.monitor_settings(None, 0);
        assert_eq!(
            sample(&t.encode(), "brewlytics_heartbeat_interval_seconds"),
            Some(0.0)
        );
    }
}
