//! Where changes go. Each sink is one module here and one implementation of [`Sink`]:
//!
//! - `olap/`: the OLAP database — journal (`cdc_events`), replica, star schema — which also
//!   keeps the pipeline's durable state (checkpoint, backfill progress, dead letters);
//! - `nats/`: NATS JetStream — every change as a Debezium-compatible envelope, published
//!   beside the OLAP sink (and `brewlytics load --from nats`, which applies such a stream to
//!   another OLAP database).
//!
//! A new sink (another log, another warehouse) is a new module implementing [`Sink`], handed
//! its part of each batch by the pipeline (`pipeline::apply_loop`) and made durable before
//! the OLAP commit — not a branch inside an existing sink.

pub mod nats;
pub mod olap;

use crate::batch::CommitMark;
use crate::lsn::Lsn;

/// A destination of the pipeline's changes.
///
/// # Contract
///
/// - **Ordered.** [`Sink::write`] is given changes in journal order `(lsn, seq)`: whole source
///   transactions, or the parts of one larger than a batch, before its commit. A sink stores
///   them in that order.
/// - **Idempotent by position.** After a crash or an error, everything after the last commit
///   the pipeline saw returned is written again, at the same positions (`lsn` the source
///   transaction's commit LSN, `seq` the change's place in it). A sink stores each position
///   once, whatever became of the first attempt (rolled back, or stored and never
///   acknowledged): `(lsn, seq)` is a change's identity. [`Sink::resume`] tells a sink, at
///   start, where the pipeline resumes; nothing at or before that point is written again.
/// - **Acknowledged only once durable.** [`Sink::commit`] returns only when everything
///   written is durable in the sink (committed, acknowledged by a quorum) — or, for the OLAP
///   sink with asynchronous commits, once it is committed and visible, its durability then
///   learned from OLAP's WAL flush position ([`crate::flush`]). The pipeline confirms a
///   position to the source (the slot's flush LSN, after which the source may recycle the
///   WAL) only once every sink has made it durable: a sink never lets the source forget a
///   change it could still lose.
///
/// [`Sink::abandon`] forgets what was written since the last commit, when the pipeline stops
/// or fails between two commits; it is written again later.
///
/// `tests/sink_contract.rs` checks the three points against every implementation.
#[allow(async_fn_in_trait)]
pub trait Sink {
    /// The sink's form of a run of changes, encoded off the apply path (in the reader task).
    type Part;
    /// What a commit reports (counts, positions) for telemetry.
    type Receipt;
    type Error: std::error::Error;

    /// The pipeline resumes after `checkpoint` (None: a first start, nothing committed).
    async fn resume(&mut self, checkpoint: Option<Lsn>) -> Result<(), Self::Error>;

    /// Stores changes, in order; not yet durable.
    async fn write(&mut self, part: &Self::Part) -> Result<(), Self::Error>;

    /// Makes everything written durable, up to the end of the batch (`mark`: its last
    /// transaction's end, what the source is told once every sink has committed).
    async fn commit(&mut self, mark: &CommitMark) -> Result<Self::Receipt, Self::Error>;

    /// Forgets what was written since the last commit.
    async fn abandon(&mut self) -> Result<(), Self::Error>;
}

/// The OLAP writer as a [`Sink`]: a batch is one OLAP transaction, committed with the slot's
/// checkpoint (written last, in the same transaction).
pub struct OlapSink {
    pub writer: olap::OlapWriter,
    pub slot: String,
}

impl Sink for OlapSink {
    type Part = olap::encode::Encoded;
    type Receipt = olap::ApplyStats;
    type Error = olap::ApplyError;

    /// Nothing to prepare: positions at or before the checkpoint are skipped by the reader
    /// (the checkpoint is committed with the changes it covers), and an uncommitted
    /// transaction left nothing behind.
    async fn resume(&mut self, _checkpoint: Option<Lsn>) -> Result<(), Self::Error> {
        Ok(())
    }

    async fn write(&mut self, part: &Self::Part) -> Result<(), Self::Error> {
        self.writer.apply(part).await
    }

    async fn commit(&mut self, mark: &CommitMark) -> Result<Self::Receipt, Self::Error> {
        self.writer
            .commit(&self.slot, mark.end_lsn, mark.commit_ts)
            .await
    }

    async fn abandon(&mut self) -> Result<(), Self::Error> {
        self.writer.rollback().await
    }
}
