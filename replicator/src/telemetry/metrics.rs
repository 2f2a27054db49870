//! The replicator's series, registered once in one registry: names, help and units as
//! operators and the alert rules know them (`<namespace>_<name>_<unit>[_total]`; labels from
//! fixed sets).

use std::sync::atomic::{AtomicI64, AtomicU64};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Metric, Registry, Unit};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct ChangeLabels {
    pub(super) table: String,
    pub(super) op: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct KindLabels {
    pub(super) kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct CopyLabels {
    pub(super) table: String,
    /// `initial` (the first start's copy) or `backfill` (a copy while streaming).
    pub(super) kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct OutcomeLabels {
    pub(super) outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct StatusLabels {
    pub(super) status: String,
}

/// Every series of `/metrics` but the NATS publisher's ([`super::nats`]).
pub(super) struct Metrics {
    pub(super) lag_bytes: Gauge<i64, AtomicI64>,
    pub(super) lag_seconds: Gauge<f64, AtomicU64>,
    pub(super) retained_wal: Gauge<i64, AtomicI64>,
    pub(super) retained_wal_warning: Gauge<i64, AtomicI64>,
    pub(super) wal_status: Family<StatusLabels, Gauge<i64, AtomicI64>>,
    pub(super) role: Gauge<i64, AtomicI64>,
    pub(super) changes: Family<ChangeLabels, Counter>,
    pub(super) transactions: Counter,
    pub(super) batch_seconds: Histogram,
    pub(super) checkpoint_lsn: Gauge<f64, AtomicU64>,
    pub(super) errors: Family<KindLabels, Counter>,
    pub(super) dead_letters: Counter,
    pub(super) copy_rows: Family<CopyLabels, Gauge<i64, AtomicI64>>,
    pub(super) copy_estimate: Family<CopyLabels, Gauge<i64, AtomicI64>>,
    pub(super) copy_rate: Family<CopyLabels, Gauge<f64, AtomicU64>>,
    pub(super) max_wal_keep_size: Gauge<i64, AtomicI64>,
    pub(super) retained_wal_threshold: Gauge<i64, AtomicI64>,
    pub(super) heartbeat_interval: Gauge<f64, AtomicU64>,
    pub(super) heartbeat_emitted_at: Gauge<f64, AtomicU64>,
    pub(super) heartbeat_applied_at: Gauge<f64, AtomicU64>,
    pub(super) streams_open: Gauge<i64, AtomicI64>,
    pub(super) streaming_in_progress: Gauge<i64, AtomicI64>,
    pub(super) streams_spooled: Gauge<i64, AtomicI64>,
    pub(super) streams_ended: Family<OutcomeLabels, Counter>,
}

impl Metrics {
    pub(super) fn register(registry: &mut Registry) -> Self {
        let mut r = Register(registry);
        Self {
            lag_bytes: r.unit(
                "brewlytics_replication_lag",
                "Source WAL not yet confirmed as applied (current WAL LSN minus the slot's confirmed flush LSN)",
                Unit::Bytes,
            ),
            lag_seconds: r.unit(
                "brewlytics_replication_lag",
                "Time from a heartbeat's commit on the source until it is applied in OLAP (or the age of the oldest unapplied heartbeat)",
                Unit::Seconds,
            ),
            retained_wal: r.unit(
                "brewlytics_slot_retained_wal",
                "WAL the slot keeps on the source (current WAL LSN minus restart LSN)",
                Unit::Bytes,
            ),
            retained_wal_warning: r.plain(
                "brewlytics_slot_retained_wal_over_threshold",
                "1 while the slot retains more WAL than the warning threshold",
            ),
            wal_status: r.plain(
                "brewlytics_slot_wal_status",
                "1 for the slot's current wal_status (reserved, extended, unreserved, lost, missing)",
            ),
            role: r.plain(
                "brewlytics_replicator_role",
                "0 starting, 1 standby, 2 leader (not streaming yet), 3 streaming, 4 stopped",
            ),
            changes: r.plain(
                "brewlytics_changes_applied",
                "Row changes applied to OLAP, by source table and operation",
            ),
            transactions: r.plain(
                "brewlytics_transactions_applied",
                "Source transactions applied to OLAP (including heartbeats)",
            ),
            batch_seconds: r.add(
                "brewlytics_apply_batch",
                "Time to apply and commit one OLAP batch",
                Some(Unit::Seconds),
                Histogram::new(exponential_buckets(0.001, 2.0, 16)),
            ),
            checkpoint_lsn: r.plain(
                "brewlytics_checkpoint_lsn",
                "The LSN durably applied in OLAP, as a number",
            ),
            errors: r.plain(
                "brewlytics_replicator_errors",
                "Errors that interrupted replication (then retried), by kind",
            ),
            dead_letters: r.plain(
                "brewlytics_dead_letters",
                "Changes that could not be applied and went to cdc_dead_letters",
            ),
            copy_rows: r.plain(
                "brewlytics_copy_rows",
                "Rows copied so far of a table by the running copy (initial: the first start; backfill: while streaming)",
            ),
            copy_estimate: r.plain(
                "brewlytics_copy_rows_estimate",
                "Rows the source's statistics expect the running copy of a table to copy",
            ),
            copy_rate: r.plain(
                "brewlytics_copy_rows_per_second",
                "Rows per second of the running copy of a table",
            ),
            max_wal_keep_size: r.unit(
                "brewlytics_slot_max_wal_keep_size",
                "The source's max_slot_wal_keep_size: retained WAL beyond it invalidates the slot (-1: unlimited)",
                Unit::Bytes,
            ),
            retained_wal_threshold: r.unit(
                "brewlytics_slot_retained_wal_threshold",
                "The retained-WAL warning threshold (--retained-wal-warn-mb)",
                Unit::Bytes,
            ),
            heartbeat_interval: r.unit(
                "brewlytics_heartbeat_interval",
                "How often a heartbeat is sent through the source (0: heartbeats off)",
                Unit::Seconds,
            ),
            heartbeat_emitted_at: r.plain(
                "brewlytics_heartbeat_last_emitted_timestamp_seconds",
                "Unix time the last heartbeat was committed on the source (0: none yet)",
            ),
            heartbeat_applied_at: r.plain(
                "brewlytics_heartbeat_last_applied_timestamp_seconds",
                "Unix time the last heartbeat was applied in OLAP (0: none yet)",
            ),
            streams_open: r.plain(
                "brewlytics_streamed_transactions_open",
                "Source transactions received while in progress (--streaming on) that have not ended yet",
            ),
            streaming_in_progress: r.plain(
                "brewlytics_streaming_in_progress",
                "1 while the session receives large transactions in progress (--streaming on, a source of PostgreSQL 14 or later, a spool that can be written); 0 otherwise",
            ),
            streams_spooled: r.unit(
                "brewlytics_streamed_spool",
                "Local disk holding the transactions in progress until they end",
                Unit::Bytes,
            ),
            streams_ended: r.plain(
                "brewlytics_streamed_transactions",
                "Source transactions received while in progress, by how they ended (committed, rolled_back)",
            ),
        }
    }
}

/// Registers a series and hands back the handle it is updated through.
/// Registers series in one list (also the journal's, crate::journal::metrics).
pub(crate) struct Register<'a>(pub(crate) &'a mut Registry);

impl Register<'_> {
    fn add<M: Metric + Clone>(&mut self, name: &str, help: &str, unit: Option<Unit>, m: M) -> M {
        match unit {
            Some(unit) => self.0.register_with_unit(name, help, unit, m.clone()),
            None => self.0.register(name, help, m.clone()),
        }
        m
    }

    pub(crate) fn plain<M: Metric + Clone + Default>(&mut self, name: &str, help: &str) -> M {
        self.add(name, help, None, M::default())
    }

    pub(crate) fn unit<M: Metric + Clone + Default>(
        &mut self,
        name: &str,
        help: &str,
        unit: Unit,
    ) -> M {
        self.add(name, help, Some(unit), M::default())
    }
}
