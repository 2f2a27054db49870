//! What `/status`, `/ready` and the status page show of the running replicator: its role,
//! the slot as last read, the last batch and error, a copy's progress, a few minutes of lag.

use std::collections::VecDeque;
use std::time::Instant;

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::nats::PublisherLive;
use crate::lsn::Lsn;

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
    pub(super) fn code(self) -> i64 {
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
    /// Large transactions received while they run (`--streaming on`).
    pub in_progress: InProgress,
    /// The NATS publisher, when changes are also published.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nats: Option<PublisherLive>,
}

/// Large transactions received while they run: whether the session receives them so (false
/// with `--streaming off`, an older source, or after the spool could not be written), how
/// many are open and what the spool holds of them.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct InProgress {
    pub receiving: bool,
    pub open: i64,
    pub spool_bytes: i64,
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

pub(super) struct State {
    pub(super) role: Role,
    pub(super) since: DateTime<Utc>,
    pub(super) slot: SlotReading,
    pub(super) retained_wal_warning: bool,
    pub(super) checkpoint: Option<Lsn>,
    pub(super) changes: u64,
    pub(super) transactions: u64,
    pub(super) dead_letters: u64,
    pub(super) last_batch: Option<LastBatch>,
    pub(super) last_error: Option<LastError>,
    pub(super) history: VecDeque<Sample>,
    pub(super) copy: Option<CopyLive>,
    pub(super) changes_at_last_sample: (u64, Instant),
    /// A wal_status outside [`WAL_STATUSES`] last reported (set back to 0 when it changes).
    pub(super) other_wal_status: Option<String>,
}
