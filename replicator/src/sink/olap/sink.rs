//! The OLAP writer as the primary sink: a batch is one OLAP transaction, committed with the
//! slot's checkpoint (written last, in the same transaction). Its transaction is the one the
//! other sinks record their progress in ([`PrimaryTx`]).

use brewlytics_support::DbUrl;

use super::encode::{encode, Encoded};
use super::journal::{self, JournalEncoder};
use super::{ApplyError, OlapWriter, OnError};
use crate::batch::CommitMark;
use crate::change::Change;
use crate::lsn::Lsn;
use crate::sink::{Encode, PartEnd, PrimarySink, PrimaryTx};
use crate::telemetry::ApplyStats;

/// The OLAP part of a batch: the journal's COPY data and the replica's stages.
#[derive(Default)]
pub struct OlapEncoder {
    journal: JournalEncoder,
}

impl Encode for OlapEncoder {
    type Part = Encoded;
    fn encode(&mut self, changes: &[Change]) -> Encoded {
        encode(&mut self.journal, changes)
    }
}

pub struct OlapSink {
    writer: OlapWriter,
    url: DbUrl,
    slot: String,
}

impl OlapSink {
    pub async fn connect(url: &DbUrl, slot: &str, on_error: OnError) -> Result<Self, ApplyError> {
        Ok(Self {
            writer: OlapWriter::connect(url, on_error).await?,
            url: url.clone(),
            slot: slot.to_owned(),
        })
    }

    /// The writer, for what only OLAP does: the first start's copy, the loader's own tables.
    pub fn writer(&mut self) -> &mut OlapWriter {
        &mut self.writer
    }

    /// The checkpoint's slot (the loader learns it from the stream).
    pub fn set_slot(&mut self, slot: &str) {
        slot.clone_into(&mut self.slot);
    }
}

impl PrimarySink for OlapSink {
    type Part = Encoded;
    type Encoder = OlapEncoder;
    type Error = ApplyError;

    fn encoder(&self) -> OlapEncoder {
        OlapEncoder::default()
    }

    /// Journal rows past `start` were written for a batch that never committed (the journal
    /// is written on a connection of its own, committed just before the batch's transaction):
    /// they are deleted — holding the checkpoint's row, so a commit still under way finishes
    /// first — and the stream sends those transactions again. From here the journal is
    /// written on its own connection, beside each batch's transaction.
    async fn resume(&mut self, start: Lsn) -> Result<(), ApplyError> {
        let ahead = journal::delete_past_checkpoint(self.writer.conn(), &self.slot, start)
            .await?
            .map_err(|now| {
                ApplyError::JournalAhead(format!(
                    "the checkpoint moved from {start} to {now} as this session started"
                ))
            })?;
        if ahead > 0 {
            tracing::info!(rows = ahead, checkpoint = %start,
                "journal rows of a batch that never committed deleted; the stream sends them again");
        }
        self.writer.journal_apart(&self.url).await
    }

    /// A part that ends inside a source transaction keeps its star work for the part that
    /// ends it (an order whose lines arrive in a later part still takes the fast path).
    async fn write(&mut self, part: &Encoded, end: PartEnd) -> Result<(), ApplyError> {
        match end {
            PartEnd::InTransaction => self.writer.apply_chunk(part).await,
            PartEnd::TransactionEnd => self.writer.apply(part).await,
        }
    }

    fn tx(&mut self) -> PrimaryTx<'_> {
        PrimaryTx::new(self.writer.conn())
    }

    async fn commit(&mut self, mark: &CommitMark) -> Result<ApplyStats, ApplyError> {
        self.writer
            .commit(&self.slot, mark.end_lsn, mark.commit_ts)
            .await
    }

    async fn abandon(&mut self) -> Result<(), ApplyError> {
        self.writer.rollback().await
    }

    fn last_commit(&self) -> Option<crate::flush::CommitAt> {
        self.writer.last_commit()
    }

    async fn durable_upto(&mut self) -> Result<Lsn, ApplyError> {
        Ok(crate::flush::flush_lsn(self.writer.conn()).await?)
    }

    async fn make_durable(&mut self) -> Result<(), ApplyError> {
        Ok(crate::flush::flush_all(self.writer.conn()).await?)
    }
}
