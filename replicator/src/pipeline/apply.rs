//! The apply stage: each piece of work the reader hands over goes to every sink through the
//! sink contract (`crate::sink`) — the primary first, then the secondary, which may read the
//! primary's open transaction — and a batch is committed by the secondary (durable, its
//! progress recorded in the primary's transaction) and then by the primary, with the
//! checkpoint. Only then — once OLAP flushed the commit, when it did not wait for the disk
//! ([`crate::flush`]) — is the position reported back to the reader.

use std::sync::Arc;

use tokio::sync::mpsc;
use tracing::Instrument;

use super::durable::{self, Durable};
use super::read::Work;
use crate::batch::CommitMark;
use crate::error::ReplicatorError;
use crate::sink::{PartEnd, PrimarySink, Sink};
use crate::telemetry::{ApplyStats, Telemetry};

/// The pipeline's sinks: the primary, whose transaction holds the checkpoint, and the one
/// beside it (`Option<_>` when there may be none). `tests/sink_contract.rs` drives this very
/// type.
pub struct Sinks<P, S> {
    pub primary: P,
    pub secondary: S,
}

/// What both sinks make of a run of changes.
pub type Parts<P, S> = (<P as PrimarySink>::Part, <S as Sink>::Part);

impl<P, S> Sinks<P, S>
where
    P: PrimarySink,
    S: Sink,
    ReplicatorError: From<P::Error> + From<S::Error>,
{
    pub fn new(primary: P, secondary: S) -> Self {
        Self { primary, secondary }
    }

    /// Encodes changes for both sinks (the reader's side of the contract).
    pub fn encoder(&self) -> (P::Encoder, S::Encoder) {
        (self.primary.encoder(), self.secondary.encoder())
    }

    /// The secondary reads its progress from the primary and learns where the pipeline
    /// resumes (None: a first start).
    pub async fn resume_secondary(
        &mut self,
        checkpoint: Option<crate::lsn::Lsn>,
    ) -> Result<(), ReplicatorError> {
        self.secondary.resume(self.primary.tx(), checkpoint).await?;
        Ok(())
    }

    /// One part, into the primary and then beside it.
    pub async fn write(
        &mut self,
        parts: &Parts<P, S>,
        end: PartEnd,
    ) -> Result<(), ReplicatorError> {
        self.primary.write(&parts.0, end).await?;
        self.secondary
            .write(self.primary.tx(), &parts.1, end)
            .await?;
        Ok(())
    }

    /// The batch ends at `mark`: durable in the secondary (its progress written into the
    /// primary's transaction), then committed with the checkpoint.
    pub async fn commit(
        &mut self,
        mark: &CommitMark,
    ) -> Result<(ApplyStats, S::Receipt), ReplicatorError> {
        let receipt = self.secondary.commit(self.primary.tx(), mark).await?;
        let stats = self.primary.commit(mark).await?;
        Ok((stats, receipt))
    }

    /// Forgets what was written since the last commit, in both.
    pub async fn abandon(&mut self) -> Result<(), ReplicatorError> {
        self.secondary.abandon().await?;
        self.primary.abandon().await?;
        Ok(())
    }

    /// A piece of the reader's work: written, and committed when it ends a batch.
    pub async fn apply(
        &mut self,
        work: &Work<Parts<P, S>>,
    ) -> Result<Option<(ApplyStats, S::Receipt)>, ReplicatorError> {
        match &work.commit {
            // Part of a transaction: nothing commits before its last part.
            None => {
                self.write(&work.parts, PartEnd::InTransaction).await?;
                Ok(None)
            }
            Some(c) => {
                self.write(&work.parts, PartEnd::TransactionEnd).await?;
                self.commit(&c.mark).await.map(Some)
            }
        }
    }
}

/// The applier task: the reader's work, in order, until the reader stops handing it over;
/// each batch reported (telemetry, and the position to the reader) once committed.
pub async fn run<P, S>(
    mut sinks: Sinks<P, S>,
    mut work: mpsc::Receiver<Work<Parts<P, S>>>,
    mut durable: Durable,
    telemetry: Arc<Telemetry>,
) -> Result<(), ReplicatorError>
where
    P: PrimarySink,
    S: Sink,
    ReplicatorError: From<P::Error> + From<S::Error>,
{
    loop {
        let w = tokio::select! {
            w = work.recv() => w,
            // Batches wait for the primary's flush and none commits: read where it is.
            _ = tokio::time::sleep(durable::POLL), if durable.waiting() => {
                durable.flushed(sinks.primary.durable_upto().await?);
                continue;
            }
        };
        let Some(w) = w else { break };
        let span = match &w.commit {
            None => tracing::info_span!("chunk", first = ?w.first.map(|p| p.to_string()),
                changes = w.changes),
            Some(c) => tracing::info_span!("batch", transactions = c.transactions,
                checkpoint = %c.mark.end_lsn, changes = w.changes),
        };
        let Some((totals, _)) = sinks.apply(&w).instrument(span).await? else {
            continue;
        };
        let Some(c) = &w.commit else { continue };
        telemetry.batch_applied(&totals, c.transactions, c.mark.end_lsn);
        if let Some(seq) = c.heartbeat {
            telemetry.heartbeat_applied(seq);
        }
        tracing::debug!(transactions = c.transactions, changes = totals.events,
            dead_letters = totals.dead_letters, checkpoint = %c.mark.end_lsn,
            ms = totals.elapsed.as_millis() as u64, "batch applied");
        durable.committed(sinks.primary.last_commit(), c.mark.end_lsn);
    }
    // The reader stopped in the middle of a source transaction: it is sent again.
    sinks.abandon().await?;
    // What committed is made durable before the last position is reported. On error
    // nothing more is: those batches are streamed again, and skipped by the checkpoint if
    // they survived.
    if durable.waiting() {
        sinks.primary.make_durable().await?;
        durable.all_durable();
    }
    Ok(())
}
