//! The OLAP sink: each batch in one transaction — the journal, the replica (from typed stage
//! tables, the last change per key), the star schema for what the batch touched, and the
//! checkpoint, written last.
//!
//! A change OLAP cannot take (a value the replica's type refuses) is found by halving the
//! COPY that failed, and dead-lettered (`cdc_dead_letters`, with the server's full text) or,
//! with [`OnError::Stop`], stops the replicator with its position and table. A dead-lettered
//! change is not staged, so it reaches neither the replica nor the star. Transient errors
//! (connection lost, serialization failure, deadlock, timeouts) are returned for the caller to
//! retry the whole transaction; other errors stop, naming what failed.
//!
//! By responsibility: [`sink`] (the primary sink the pipeline drives), [`transaction`] (the
//! batch's transaction and the checkpoint), [`encode`] and [`stage`] (a batch made into
//! journal COPY data and typed stage tables, pure), [`journal`], [`replica`] and [`merge`]
//! (the replica's merge SQL), [`star`] (the star's refresh) and [`star_inputs`] (its inputs
//! bound to source columns, crate::star), [`refused`] (dead letters), [`backfill`] (a chunk
//! merged where its watermark arrives), [`partitions`] (partitions attached, detached and
//! dropped), [`error`].

pub mod backfill;
pub mod encode;
pub mod error;
pub mod journal;
pub mod merge;
pub mod partitions;
mod plans;
pub mod refused;
pub mod replica;
pub mod sink;
pub mod stage;
pub mod star;
pub mod star_inputs;
pub mod transaction;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Instant;

use sqlx::{Connection, PgConnection};

use crate::flush::{CommitAt, OlapCommit};
use crate::table::SourceTable;
use crate::telemetry::ApplyStats;
use brewlytics_support::DbUrl;

pub use error::{ApplyError, OnError};
pub use refused::deadletter;
pub use sink::{OlapEncoder, OlapSink};

/// A connection to OLAP that batches are applied through. Stage tables are temporary tables
/// of this connection, made once per table shape.
pub struct OlapWriter {
    conn: PgConnection,
    on_error: OnError,
    in_tx: bool,
    /// Stage tables made on this connection, and the table shape each was made for (None:
    /// made `like` its replica table, for the star).
    stages: HashMap<String, Option<Arc<SourceTable>>>,
    /// Stage tables written in the open transaction (emptied before they are used again).
    dirty: HashSet<String>,
    /// The star's inputs in this session.
    star: star_inputs::StarInputs,
    /// Replay: schema changes are carried out on the replica but neither recorded in
    /// `cdc_tables` (it holds the current shapes) nor followed by a copy.
    replaying: bool,
    /// A source transaction applied in chunks: its star work is gathered (the stage rows of
    /// star sources, in `pg_temp.acc_<table>`) and done once, with its last chunk — so an
    /// order whose lines arrive in a later chunk still takes the fast path for new orders.
    deferring: bool,
    acc: HashMap<String, Arc<SourceTable>>,
    acc_rows: i64,
    totals: ApplyStats,
    started: Option<Instant>,
    /// Where the journal is written when it is not in this connection's transaction.
    side: Option<journal::Side>,
    /// How batches commit (see [`crate::flush`]), and where the last asynchronous one ended.
    commit_mode: OlapCommit,
    last_commit: Option<CommitAt>,
    /// The sizes this session's cached plans were made for ([`plans`]).
    planned: plans::PlannedSizes,
}

impl OlapWriter {
    pub async fn connect(url: &DbUrl, on_error: OnError) -> Result<Self, ApplyError> {
        let conn = PgConnection::connect_with(&url.connect_options()?).await?;
        Ok(Self::from_conn(conn, on_error))
    }

    pub fn from_conn(conn: PgConnection, on_error: OnError) -> Self {
        Self {
            conn,
            on_error,
            in_tx: false,
            stages: HashMap::new(),
            dirty: HashSet::new(),
            star: Default::default(),
            replaying: false,
            deferring: false,
            acc: HashMap::new(),
            acc_rows: 0,
            totals: ApplyStats::default(),
            started: None,
            side: None,
            commit_mode: OlapCommit::Synchronous,
            last_commit: None,
            planned: Default::default(),
        }
    }

    /// Commits from now on as `mode` says (synchronous until told otherwise).
    pub fn set_commit_mode(&mut self, mode: OlapCommit) {
        self.commit_mode = mode;
    }

    /// Where the last commit ended, when it was asynchronous.
    pub fn last_commit(&self) -> Option<CommitAt> {
        self.last_commit
    }

    pub fn conn(&mut self) -> &mut PgConnection {
        &mut self.conn
    }

    pub fn in_transaction(&self) -> bool {
        self.in_tx
    }

    /// Replay's writer: see [`OlapWriter::replaying`].
    pub fn set_replaying(&mut self) {
        self.replaying = true;
    }

    /// Changes applied in the open transaction so far.
    pub fn events(&self) -> usize {
        self.totals.events
    }
}
