//! A message of the stream into the batch being gathered: turned back into the change it was
//! made from (a row, a schema event, a backfill chunk's merge point and rows), and, on its
//! transaction's last message, the transaction made complete.

use std::collections::HashMap;
use std::sync::Arc;

use async_nats::jetstream;

use super::{LoadError, Loader};
use crate::change::{Body, Change, ChunkMerge, Op, Pos, SchemaChange};
use crate::sink::nats::envelope::{self, ChunkMeta, Decoded, TxPlace};
use crate::sink::olap::journal::JournalRow;
use crate::table::SourceTable;

/// A chunk's rows as they arrive (after its merge point, in its transaction).
pub(super) struct PendingChunk {
    pub(super) backfill_id: i64,
    pub(super) attempt: String,
    pub(super) table: Arc<SourceTable>,
    pub(super) meta: ChunkMeta,
    /// (row number, image, json nulls)
    pub(super) rows: Vec<(i64, String, Vec<String>)>,
    first_seq: i32,
}

/// Changes gathered for the next OLAP transaction: complete source transactions, then the
/// one being received.
#[derive(Default)]
pub(super) struct Batch {
    /// Changes of complete transactions not yet applied.
    pub(super) changes: Vec<Change>,
    pub(super) chunks: Vec<PendingChunk>,
    /// The open transaction's changes not yet applied, and its backfill chunks.
    pub(super) open: Vec<Change>,
    pub(super) open_chunks: Vec<PendingChunk>,
    /// Part of the open transaction is applied in OLAP's open transaction: no commit until it
    /// ends.
    pub(super) open_applied: bool,
    /// Source transactions complete, and their messages.
    pub(super) transactions: u64,
    pub(super) messages: u64,
    pub(super) open_messages: u64,
    /// The last complete transaction's (stream sequence, position, commit time).
    pub(super) complete: Option<(u64, Pos, i64)>,
    /// The first start's copy ended in this batch.
    pub(super) copy_done: bool,
    /// Star work of a transaction applied in parts waits for its end.
    pub(super) deferred: bool,
}

impl Loader<'_> {
    /// Takes message `m` into the batch (a redelivery of one already seen is dropped).
    pub(super) async fn message(&mut self, m: jetstream::Message) -> Result<(), LoadError> {
        let seq = m.info().map(|i| i.stream_sequence).unwrap_or(0);
        if seq <= self.seen_seq {
            return Ok(());
        }
        self.seen_seq = seq;
        let headers = m.headers.clone();
        let get = |name: &str| {
            headers
                .as_ref()
                .and_then(|h| h.get(name))
                .map(|v| v.as_str().to_owned())
        };
        let (slot, place, decoded) =
            envelope::decode(&get, &m.payload).map_err(|e| LoadError::Message {
                seq,
                what: e.to_string(),
            })?;
        self.slot = Some(slot);
        self.batch.open_messages += 1;
        match decoded {
            Decoded::Row { row, .. } => self.row(row, seq)?,
            Decoded::Schema {
                pos,
                xid,
                commit_ts,
                after,
                before,
                steps,
                backfill,
                copy,
            } => {
                if copy {
                    // The first start's copy of a table: made, emptied, filled by its rows.
                    self.apply_part().await?;
                    self.empty_replica(&after).await?;
                }
                let change = SchemaChange {
                    before: before.map(Arc::new),
                    after: Arc::new(after),
                    steps,
                    backfill,
                };
                self.schema(change, copy, pos, xid, commit_ts);
            }
            Decoded::Backfill {
                pos,
                xid,
                commit_ts,
                schema,
                table,
                backfill_id,
                attempt,
                chunk,
            } => {
                let table = self.table(&schema, &table, seq)?;
                if chunk.is_some()
                    && self
                        .batch
                        .chunks
                        .iter()
                        .any(|c| c.backfill_id == backfill_id)
                {
                    // A backfill's chunks share one staging table: the chunk before is merged
                    // (and committed) before this one is staged.
                    self.flush().await?;
                }
                let merge = ChunkMerge {
                    table,
                    backfill_id,
                    attempt,
                };
                self.backfill(merge, chunk, pos, xid, commit_ts);
            }
        }
        match place.last {
            Some(_) => self.transaction_end(&place, seq, m),
            None => {
                let b = &self.batch;
                if b.open.len() >= self.cfg.max_changes && b.open_chunks.is_empty() {
                    // A transaction larger than a batch: applied in parts, committed at its end.
                    self.apply_part().await?;
                }
                Ok(())
            }
        }
    }

    /// A row change; a backfill chunk's row goes into its chunk, merged at its merge point.
    fn row(&mut self, row: JournalRow, seq: u64) -> Result<(), LoadError> {
        let table = self.table(&row.schema, &row.table, seq)?;
        if row.op == Op::Snapshot && row.xid != 0 {
            let chunk = self
                .batch
                .open_chunks
                .last_mut()
                .filter(|c| c.table.schema == table.schema && c.table.name == table.name)
                .ok_or_else(|| LoadError::Message {
                    seq,
                    what: "a backfill row without its merge point".into(),
                })?;
            let n = i64::from(row.pos.seq - chunk.first_seq);
            chunk
                .rows
                .push((n, row.after.unwrap_or_default(), row.json_nulls));
            return Ok(());
        }
        let change = row
            .to_change(&table, &HashMap::new())
            .map_err(|e| LoadError::Message {
                seq,
                what: e.to_string(),
            })?
            .ok_or_else(|| LoadError::Message {
                seq,
                what: "not a change".into(),
            })?;
        self.batch.open.push(change);
        Ok(())
    }

    /// A schema event: the table's shape from here on (a copy's event starts the table
    /// afresh; another names the shape before it when the message does not).
    fn schema(&mut self, mut change: SchemaChange, copy: bool, pos: Pos, xid: u32, commit_ts: i64) {
        let key = (
            change.after.schema.to_string(),
            change.after.name.to_string(),
        );
        if change.before.is_none() && !copy {
            change.before = self.tables.get(&key).cloned();
        }
        self.tables.insert(key, change.after.clone());
        self.batch.open.push(Change {
            pos,
            xid,
            commit_ts,
            body: Body::Schema(Arc::new(change)),
        });
    }

    /// A backfill chunk's merge point; its rows follow (none when no chunk was merged).
    fn backfill(
        &mut self,
        merge: ChunkMerge,
        chunk: Option<ChunkMeta>,
        pos: Pos,
        xid: u32,
        commit_ts: i64,
    ) {
        if let Some(meta) = chunk {
            self.batch.open_chunks.push(PendingChunk {
                backfill_id: merge.backfill_id,
                attempt: merge.attempt.clone(),
                table: merge.table.clone(),
                meta,
                rows: Vec::new(),
                first_seq: pos.seq,
            });
        }
        self.batch.open.push(Change {
            pos,
            xid,
            commit_ts,
            body: Body::Backfill(Arc::new(merge)),
        });
    }

    /// The transaction's last message (`m`, acknowledged once the batch commits): its
    /// changes join the complete ones.
    fn transaction_end(
        &mut self,
        place: &TxPlace,
        seq: u64,
        m: jetstream::Message,
    ) -> Result<(), LoadError> {
        if place.last != Some(place.order) {
            return Err(LoadError::Message {
                seq,
                what: format!(
                    "transaction {} ends at its message {} but says it has {}",
                    place.id,
                    place.order,
                    place.last.unwrap_or_default()
                ),
            });
        }
        let b = &mut self.batch;
        let (pos, ts) = b
            .open
            .last()
            .or(b.changes.last())
            .map(|c| (c.pos, c.commit_ts))
            .unwrap_or_default();
        b.complete = Some((seq, pos, ts));
        b.changes.append(&mut b.open);
        b.chunks.append(&mut b.open_chunks);
        b.open_applied = false;
        b.transactions += 1;
        b.messages += std::mem::take(&mut b.open_messages);
        if place.id.starts_with("0:") {
            b.copy_done = true;
        }
        self.ack = Some(m);
        Ok(())
    }

    /// The table a change names, as the stream's schema events described it.
    fn table(&self, schema: &str, name: &str, seq: u64) -> Result<Arc<SourceTable>, LoadError> {
        self.tables
            .get(&(schema.to_owned(), name.to_owned()))
            .cloned()
            .ok_or_else(|| LoadError::Message {
                seq,
                what: format!(
                    "a change of {schema}.{name} before its schema event: the stream must start \
                     with the replicator's first start (its copy sends each table's schema)"
                ),
            })
    }
}
