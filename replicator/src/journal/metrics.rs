//! The journal in `/metrics` (set by the background task after each pass):
//!
//! - `brewlytics_journal_bytes`: the size of `cdc_events` (every partition, indexes included)
//! - `brewlytics_journal_partitions`: how many partitions it has (the default one left out)
//! - `brewlytics_journal_default_partition_rows`: rows no partition covered (0 while healthy)
//! - `brewlytics_journal_replayable_lsn`: the oldest position `replay` can start from
//! - `brewlytics_journal_oldest_change_timestamp_seconds`: the commit time of the oldest
//!   change kept (the start of the audit trail)
//! - `brewlytics_journal_retention_seconds` / `brewlytics_journal_retention_bytes`: the
//!   `--journal-retention` in force (0: off, or not of that kind)
//! - `brewlytics_journal_last_compaction_timestamp_seconds`: when the latest compaction ended
//! - `brewlytics_journal_compactions_total`, `brewlytics_journal_maintenance_errors_total`

use std::sync::atomic::{AtomicI64, AtomicU64};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use super::Retention;

#[derive(Default)]
pub struct JournalMetrics {
    bytes: Gauge<i64, AtomicI64>,
    partitions: Gauge<i64, AtomicI64>,
    default_rows: Gauge<i64, AtomicI64>,
    replayable_lsn: Gauge<f64, AtomicU64>,
    oldest_change: Gauge<f64, AtomicU64>,
    retention_seconds: Gauge<f64, AtomicU64>,
    retention_bytes: Gauge<i64, AtomicI64>,
    last_compaction: Gauge<f64, AtomicU64>,
    compactions: Counter,
    errors: Counter,
}

impl std::fmt::Debug for JournalMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JournalMetrics").finish_non_exhaustive()
    }
}

/// What one pass read of the journal.
#[derive(Clone, Debug, Default)]
pub struct JournalReading {
    pub bytes: i64,
    pub partitions: i64,
    pub default_rows: i64,
    pub replayable_lsn: u64,
    pub oldest_change: Option<f64>,
    pub last_compaction: Option<f64>,
}

impl JournalMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let mut r = crate::telemetry::metrics::Register(registry);
        Self {
            bytes: r.plain("brewlytics_journal_bytes", "Size of the journal cdc_events, every partition and index"),
            partitions: r.plain("brewlytics_journal_partitions", "Partitions of the journal (the default one left out)"),
            default_rows: r.plain("brewlytics_journal_default_partition_rows", "Journal rows no partition covered when they were written (0 while partitions are created ahead)"),
            replayable_lsn: r.plain("brewlytics_journal_replayable_lsn", "The oldest LSN replay can start from (the latest compaction's cut; 0 when never compacted)"),
            oldest_change: r.plain("brewlytics_journal_oldest_change_timestamp_seconds", "Commit time of the oldest change the journal keeps"),
            retention_seconds: r.plain("brewlytics_journal_retention_seconds", "The --journal-retention age in force (0: off or a size)"),
            retention_bytes: r.plain("brewlytics_journal_retention_bytes", "The --journal-retention size in force (0: off or an age)"),
            last_compaction: r.plain("brewlytics_journal_last_compaction_timestamp_seconds", "When the latest compaction of the journal ended (0: never)"),
            compactions: r.plain("brewlytics_journal_compactions", "Compactions of the journal run by this process"),
            errors: r.plain("brewlytics_journal_maintenance_errors", "Passes of the journal's background task that failed (retried on the next pass)"),
        }
    }

    pub fn retention(&self, r: Retention) {
        let (secs, bytes) = match r {
            Retention::Off => (0.0, 0),
            Retention::Age(d) => (d.as_secs_f64(), 0),
            Retention::Size(b) => (0.0, i64::try_from(b).unwrap_or(i64::MAX)),
        };
        self.retention_seconds.set(secs);
        self.retention_bytes.set(bytes);
    }

    pub fn reading(&self, r: &JournalReading) {
        self.bytes.set(r.bytes);
        self.partitions.set(r.partitions);
        self.default_rows.set(r.default_rows);
        self.replayable_lsn.set(r.replayable_lsn as f64);
        self.oldest_change.set(r.oldest_change.unwrap_or(0.0));
        self.last_compaction.set(r.last_compaction.unwrap_or(0.0));
    }

    pub fn compacted(&self) {
        self.compactions.inc();
    }

    pub fn failed(&self) {
        self.errors.inc();
    }
}
