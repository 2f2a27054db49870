//! What the running replicator knows about itself: the Prometheus metrics of DESIGN.md and
//! the live state behind `/ready`, `/status` and the status page (role, last error, a few
//! minutes of lag history).
//!
//! Error texts kept here come from our own error types (database URLs print `***` for the
//! password; database errors carry the server's primary message, which names constraints
//! and tables, never the failing row's values).

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

use crate::heartbeat::Heartbeats;
use crate::lsn::Lsn;
use crate::sink::olap::ApplyStats;

/// Samples of lag kept for the status page's chart.
const HISTORY: usize = 600;

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
struct TableLabels {
    table: String,
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
    /// The backfill running now, if any.
    pub backfill: Option<BackfillLive>,
}

/// A backfill's progress (no row values: counts and a rate).
#[derive(Clone, Debug, Serialize)]
pub struct BackfillLive {
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
    backfill: Option<BackfillLive>,
    changes_at_last_sample: (u64, Instant),
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
    backfill_rows: Family<TableLabels, Gauge<i64, AtomicI64>>,
    backfill_estimate: Family<TableLabels, Gauge<i64, AtomicI64>>,
    backfill_rate: Family<TableLabels, Gauge<f64, AtomicU64>>,
    heartbeats: Mutex<Heartbeats>,
    state: Mutex<State>,
}

impl std::fmt::Debug for Telemetry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Telemetry").finish_non_exhaustive()
    }
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
        let backfill_rows = Family::<TableLabels, Gauge<i64, AtomicI64>>::default();
        registry.register(
            "brewlytics_backfill_rows",
            "Rows copied so far by the running backfill of a table (a copy made while streaming)",
            backfill_rows.clone(),
        );
        let backfill_estimate = Family::<TableLabels, Gauge<i64, AtomicI64>>::default();
        registry.register(
            "brewlytics_backfill_rows_estimate",
            "Rows the source's statistics expect the running backfill of a table to copy",
            backfill_estimate.clone(),
        );
        let backfill_rate = Family::<TableLabels, Gauge<f64, AtomicU64>>::default();
        registry.register(
            "brewlytics_backfill_rows_per_second",
            "Rows per second of the running backfill of a table (its last chunk)",
            backfill_rate.clone(),
        );
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
            backfill_rows,
            backfill_estimate,
            backfill_rate,
            heartbeats: Mutex::new(Heartbeats::new(instance)),
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
                backfill: None,
                changes_at_last_sample: (0, Instant::now()),
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
        lock(&self.heartbeats).emitted(seq, at);
    }

    /// The sequence number if `content` is one of this process's heartbeats.
    pub fn heartbeat_seq(&self, content: &[u8]) -> Option<u64> {
        lock(&self.heartbeats).parse(content)
    }

    pub fn heartbeat_applied(&self, seq: u64) {
        lock(&self.heartbeats).applied(seq, Instant::now());
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
        self.retained_wal_warning.set(i64::from(over_threshold));
        self.wal_status.clear();
        let status = if reading.exists {
            reading
                .wal_status
                .clone()
                .unwrap_or_else(|| "unknown".into())
        } else {
            "missing".into()
        };
        self.wal_status
            .get_or_create(&StatusLabels { status })
            .set(1);
        self.refresh_lag();
        let lag_seconds = self.lag_seconds();
        let mut s = lock(&self.state);
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
            backfill: s.backfill.clone(),
        }
    }

    /// A backfill chunk of `table` was merged: `rows` copied so far of about `estimate`.
    pub fn backfill_progress(&self, table: &str, rows: i64, estimate: Option<i64>) {
        let labels = TableLabels {
            table: table.to_owned(),
        };
        self.backfill_rows.get_or_create(&labels).set(rows);
        if let Some(e) = estimate {
            self.backfill_estimate.get_or_create(&labels).set(e);
        }
        let mut s = lock(&self.state);
        let rate = s
            .backfill
            .as_ref()
            .filter(|b| b.table == table)
            .and_then(|b| b.rows_per_second);
        s.backfill = Some(BackfillLive {
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

    /// The last chunk's rate of `table`'s backfill.
    pub fn backfill_rate(&self, table: &str, rows_per_second: f64) {
        self.backfill_rate
            .get_or_create(&TableLabels {
                table: table.to_owned(),
            })
            .set(rows_per_second);
        if let Some(b) = lock(&self.state)
            .backfill
            .as_mut()
            .filter(|b| b.table == table)
        {
            b.rows_per_second = Some(rows_per_second);
            b.eta_seconds = b
                .rows_estimate
                .map(|e| (e - b.rows_copied).max(0) as f64 / rows_per_second.max(1e-9));
        }
    }

    /// No backfill runs.
    pub fn backfill_idle(&self) {
        lock(&self.state).backfill = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::change::Op;

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
}
