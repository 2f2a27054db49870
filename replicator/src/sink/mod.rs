//! Where changes go: the contract every sink keeps, and one folder per sink.
//!
//! - `olap/`: the OLAP database — journal (`cdc_events`), replica, star schema — and the
//!   **primary** sink: its transaction holds the pipeline's durable state (the checkpoint,
//!   backfill progress, dead letters, and every other sink's progress);
//! - `nats/`: NATS JetStream — every change as a Debezium-compatible envelope, a **secondary**
//!   sink published beside OLAP (and `brewlytics load --from nats`, which applies such a
//!   stream to another OLAP database through the OLAP sink).
//!
//! A new sink (another log, another warehouse) is a new folder here with an [`Encode`] for
//! its part of each batch and an implementation of [`Sink`]; the pipeline
//! (`pipeline::apply`) drives it beside OLAP. It is never a branch inside an existing sink.
//!
//! # The contract
//!
//! The pipeline hands every sink the same changes, as parts each sink's [`Encode`] made from
//! them (in the reader task, while the previous part is applied). For every part:
//!
//! - **Ordered.** Parts come in journal order `(lsn, seq)`: whole source transactions, or a
//!   transaction larger than a batch in several parts, each saying where it ends
//!   ([`PartEnd`]). A sink stores changes in that order. Nothing is committed inside a
//!   source transaction: after a part that ends [`PartEnd::InTransaction`] comes another part
//!   (or an abandon), never a commit — so a sink may keep work for the transaction's end, as
//!   OLAP keeps the star schema's refresh for the last part.
//! - **Idempotent by position.** After a crash or an error, everything after the last
//!   checkpoint is written again, at the same positions (`lsn` the source transaction's
//!   commit LSN, `seq` the change's place in it). A sink stores each position once, whatever
//!   became of the first attempt (rolled back, or stored and never recorded): `(lsn, seq)` is
//!   a change's identity. `resume` tells a sink where the pipeline resumes.
//! - **Acknowledged only once durable.** `commit` returns only when everything written is
//!   durable in the sink (committed, acknowledged by a quorum) — or, for the primary with
//!   asynchronous commits (`--olap-commit async`), once it is committed and visible, its
//!   durability then learned from OLAP's WAL flush position ([`crate::flush`]). The pipeline
//!   confirms a position to the source (the slot's flush LSN, after which the source may
//!   recycle the WAL) only once every sink made it durable: a sink never lets the source
//!   forget a change it could still lose.
//! - `abandon` forgets what was written since the last commit, when the pipeline stops or
//!   fails between two commits; it is written again later.
//!
//! # Who owns the transaction
//!
//! The checkpoint lives in OLAP: the primary sink ([`PrimarySink`]) writes it last in the
//! transaction that holds the batch, so the batch and the position it reaches commit together
//! or not at all. Every other sink ([`Sink`]) is handed that open transaction
//! ([`PrimaryTx`]) in each call: it may read what the primary wrote there (a backfill
//! chunk's rows, the first start's copy as journaled) and it records its own durable progress
//! there (the NATS sink: the stream sequence reached, `cdc_nats_published`), so its progress
//! commits with the checkpoint. It never commits or rolls that transaction back.
//!
//! Per batch the order is fixed: the primary writes the part, then each secondary (reading
//! the primary's transaction if it must); at the batch's end each secondary commits (durable
//! in the sink, progress recorded in the transaction), then the primary commits with the
//! checkpoint; then the source hears of the position. A crash between a secondary's commit
//! and the primary's leaves the secondary ahead of the checkpoint: what it stored is written
//! again, and the secondary finds it, by position, after its recorded progress (`resume`).
//!
//! `tests/sink_contract.rs` drives the pipeline's own applier (`pipeline::apply::Sinks`)
//! over OLAP alone and over OLAP with NATS, and checks each point.

pub mod nats;
pub mod olap;

use sqlx::PgConnection;

use crate::batch::CommitMark;
use crate::change::Change;
use crate::lsn::Lsn;
use crate::telemetry::ApplyStats;

/// Where a part ends in the source's transactions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PartEnd {
    /// Inside a source transaction larger than a batch: more of it follows, and no commit
    /// comes before its end.
    InTransaction,
    /// At the end of a source transaction: a commit may follow.
    TransactionEnd,
}

/// A sink's form of a run of changes, made in the reader task (pure; no I/O), off the apply
/// path.
pub trait Encode: Send + 'static {
    type Part: Send + 'static;
    fn encode(&mut self, changes: &[Change]) -> Self::Part;
}

/// No sink of this kind: nothing to encode.
impl<E: Encode> Encode for Option<E> {
    type Part = Option<E::Part>;
    fn encode(&mut self, changes: &[Change]) -> Self::Part {
        self.as_mut().map(|e| e.encode(changes))
    }
}

/// The primary's and the other sinks' parts, encoded together.
impl<A: Encode, B: Encode> Encode for (A, B) {
    type Part = (A::Part, B::Part);
    fn encode(&mut self, changes: &[Change]) -> Self::Part {
        (self.0.encode(changes), self.1.encode(changes))
    }
}

/// The primary sink's connection to OLAP, lent to a secondary sink for one call. In `write`
/// and `commit` it is in the batch's open transaction: what a secondary writes there commits
/// with the checkpoint, or not at all. In `resume` no transaction is open yet: what is
/// written is committed at once.
pub struct PrimaryTx<'a> {
    conn: &'a mut PgConnection,
}

impl<'a> PrimaryTx<'a> {
    pub fn new(conn: &'a mut PgConnection) -> Self {
        Self { conn }
    }

    pub fn conn(&mut self) -> &mut PgConnection {
        self.conn
    }
}

/// The sink whose transaction holds the checkpoint (OLAP). See the module's contract.
#[allow(async_fn_in_trait)]
pub trait PrimarySink {
    type Part: Send + 'static;
    type Encoder: Encode<Part = Self::Part>;
    type Error: std::error::Error + Send + 'static;

    fn encoder(&self) -> Self::Encoder;

    /// Streaming resumes after `start` (the checkpoint, or where the first start's copy
    /// ended): whatever the sink holds past it that the checkpoint does not cover is dropped.
    async fn resume(&mut self, start: Lsn) -> Result<(), Self::Error>;

    /// Stores a part in the batch's transaction (opened by the first part), in order.
    async fn write(&mut self, part: &Self::Part, end: PartEnd) -> Result<(), Self::Error>;

    /// The batch's transaction, for the secondary sinks.
    fn tx(&mut self) -> PrimaryTx<'_>;

    /// Writes the checkpoint `mark` (its last transaction's end, what the source is told
    /// next) and commits; returns what the transaction applied.
    async fn commit(&mut self, mark: &CommitMark) -> Result<ApplyStats, Self::Error>;

    /// Rolls back what was written since the last commit.
    async fn abandon(&mut self) -> Result<(), Self::Error>;

    /// Where the last commit ended in the primary's own log, when it returned before being
    /// durable (OLAP's `--olap-commit async`); None when it was durable on return. The
    /// pipeline reports its position to the source once [`PrimarySink::durable_upto`] has
    /// passed it ([`crate::flush`]).
    fn last_commit(&self) -> Option<crate::flush::CommitAt> {
        None
    }

    /// How far the primary's log is durable now; asked, with no transaction open, while
    /// commits wait for it.
    async fn durable_upto(&mut self) -> Result<Lsn, Self::Error> {
        Ok(Lsn(u64::MAX))
    }

    /// Makes every commit so far durable (at a clean stop, no transaction open).
    async fn make_durable(&mut self) -> Result<(), Self::Error> {
        Ok(())
    }
}

/// A sink beside the primary (NATS JetStream; a new sink). See the module's contract.
#[allow(async_fn_in_trait)]
pub trait Sink {
    type Part: Send + 'static;
    type Encoder: Encode<Part = Self::Part>;
    /// What a commit reports (counts, positions) for telemetry.
    type Receipt;
    type Error: std::error::Error + Send + 'static;

    fn encoder(&self) -> Self::Encoder;

    /// The pipeline resumes after `checkpoint` (None: a first start, nothing committed). The
    /// sink reads its own progress as the primary recorded it, and what it stored past that
    /// (written, never committed with a checkpoint) it does not store again.
    async fn resume(
        &mut self,
        primary: PrimaryTx<'_>,
        checkpoint: Option<Lsn>,
    ) -> Result<(), Self::Error>;

    /// Stores a part, in order, after the primary wrote it; not yet durable.
    async fn write(
        &mut self,
        primary: PrimaryTx<'_>,
        part: &Self::Part,
        end: PartEnd,
    ) -> Result<(), Self::Error>;

    /// Stores the first start's copy as the primary journaled it in its open transaction
    /// (each table's schema event, then its rows, at `at`, the slot's consistent point);
    /// returns how many changes it stored. A commit follows.
    async fn write_copy(&mut self, primary: PrimaryTx<'_>, at: Lsn) -> Result<u64, Self::Error>;

    /// Makes everything written durable in the sink, up to the end of the batch (`mark`), and
    /// records how far it got in the primary's transaction, which commits next.
    async fn commit(
        &mut self,
        primary: PrimaryTx<'_>,
        mark: &CommitMark,
    ) -> Result<Self::Receipt, Self::Error>;

    /// Forgets what was written since the last commit.
    async fn abandon(&mut self) -> Result<(), Self::Error>;
}

/// No secondary sink: every call does nothing (`--sink olap`).
impl<S: Sink> Sink for Option<S> {
    type Part = Option<S::Part>;
    type Encoder = Option<S::Encoder>;
    type Receipt = Option<S::Receipt>;
    type Error = S::Error;

    fn encoder(&self) -> Self::Encoder {
        self.as_ref().map(S::encoder)
    }

    async fn resume(
        &mut self,
        primary: PrimaryTx<'_>,
        checkpoint: Option<Lsn>,
    ) -> Result<(), S::Error> {
        match self {
            Some(s) => s.resume(primary, checkpoint).await,
            None => Ok(()),
        }
    }

    async fn write(
        &mut self,
        primary: PrimaryTx<'_>,
        part: &Self::Part,
        end: PartEnd,
    ) -> Result<(), S::Error> {
        match (self, part) {
            (Some(s), Some(part)) => s.write(primary, part, end).await,
            _ => Ok(()),
        }
    }

    async fn write_copy(&mut self, primary: PrimaryTx<'_>, at: Lsn) -> Result<u64, S::Error> {
        match self {
            Some(s) => s.write_copy(primary, at).await,
            None => Ok(0),
        }
    }

    async fn commit(
        &mut self,
        primary: PrimaryTx<'_>,
        mark: &CommitMark,
    ) -> Result<Self::Receipt, S::Error> {
        match self {
            Some(s) => s.commit(primary, mark).await.map(Some),
            None => Ok(None),
        }
    }

    async fn abandon(&mut self) -> Result<(), S::Error> {
        match self {
            Some(s) => s.abandon().await,
            None => Ok(()),
        }
    }
}
