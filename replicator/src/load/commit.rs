//! A batch into OLAP: the changes gathered so far applied as parts through the OLAP sink
//! (backfill chunks rebuilt first, as the replicator's worker made them), then committed with
//! the stream position and the checkpoint, and only then acknowledged to JetStream.

use std::collections::HashMap;
use std::time::Instant;

use async_nats::jetstream::AckKind;
use sqlx::PgConnection;

use super::message::PendingChunk;
use super::{LoadError, Loader};
use crate::batch::CommitMark;
use crate::decode::pg_timestamp_to_chrono;
use crate::image;
use crate::sink::olap::backfill::{chunk_table, chunk_table_sql};
use crate::sink::{Encode, PartEnd, PrimarySink};
use crate::table::{ident, SourceTable};

/// Backfill requests a schema change made in OLAP that no chunk answers: the loader copies
/// no table itself (tables come through the stream).
const DROP_REQUESTS: &str = "delete from cdc_backfills b where state = 'pending'
     and not exists (select 1 from cdc_backfill_chunks c where c.backfill_id = b.id)";

impl Loader<'_> {
    /// Applies the changes gathered so far — complete transactions, then what the open one
    /// has received — into the open OLAP transaction (not committed). Part of a transaction
    /// defers its star work to the transaction's end, as the replicator's chunks do.
    pub(super) async fn apply_part(&mut self) -> Result<(), LoadError> {
        let b = &mut self.batch;
        let partial = !b.open.is_empty() || !b.open_chunks.is_empty();
        if partial {
            b.open_applied = true;
        }
        b.changes.append(&mut b.open);
        b.chunks.append(&mut b.open_chunks);
        if b.changes.is_empty() && b.chunks.is_empty() && (partial || !b.deferred) {
            return Ok(());
        }
        let writer = self.olap.writer();
        writer.begin().await?;
        // The loader copies no table itself: tables come through the stream, so the requests
        // a schema change makes in OLAP are dropped.
        sqlx::query(DROP_REQUESTS).execute(writer.conn()).await?;
        for chunk in std::mem::take(&mut self.batch.chunks) {
            prepare_chunk(writer.conn(), &chunk).await?;
        }
        let changes = std::mem::take(&mut self.batch.changes);
        let part = self.encoder.encode(&changes);
        let end = if partial {
            PartEnd::InTransaction
        } else {
            PartEnd::TransactionEnd
        };
        self.olap.write(&part, end).await?;
        self.batch.deferred = partial;
        sqlx::query(DROP_REQUESTS)
            .execute(self.olap.writer().conn())
            .await?;
        Ok(())
    }

    /// A table's copy starts again (the first start's copy, sent again): its replica is
    /// emptied in the open transaction, and the rows that follow fill it.
    pub(super) async fn empty_replica(&mut self, t: &SourceTable) -> Result<(), LoadError> {
        if !self
            .tables
            .contains_key(&(t.schema.to_string(), t.name.to_string()))
        {
            return Ok(());
        }
        let writer = self.olap.writer();
        writer.begin().await?;
        sqlx::query(&format!("truncate {}", t.replica_ident()))
            .execute(writer.conn())
            .await?;
        Ok(())
    }

    /// Applies and commits the complete transactions gathered, with the stream position;
    /// then acknowledges them.
    pub(super) async fn flush(&mut self) -> Result<(), LoadError> {
        let Some((seq, pos, commit_ts)) = self.batch.complete else {
            return Ok(());
        };
        if self.batch.open_applied {
            // Part of the next transaction is in OLAP's open transaction: committed with it.
            return Ok(());
        }
        let t0 = Instant::now();
        // The complete transactions only (the open one waits in `open`).
        let open = std::mem::take(&mut self.batch.open);
        let open_chunks = std::mem::take(&mut self.batch.open_chunks);
        self.apply_part().await?;
        self.batch.open = open;
        self.batch.open_chunks = open_chunks;
        self.batch.open_applied = false;
        let writer = self.olap.writer();
        if std::mem::take(&mut self.batch.copy_done) && !writer.star_sources().await?.is_empty() {
            writer.star_call("select star_refresh_all()").await?;
        }
        // The stream position reached, committed with the checkpoint.
        sqlx::query(
            "insert into cdc_nats_loader (stream, consumer, stream_seq, lsn, seq, commit_ts, messages)
             values ($1, $2, $3, $4::pg_lsn, $5, $6, $7)
             on conflict (stream, consumer) do update
               set stream_seq = excluded.stream_seq, lsn = excluded.lsn, seq = excluded.seq,
                   commit_ts = excluded.commit_ts,
                   messages = cdc_nats_loader.messages + excluded.messages, updated_at = now()",
        )
        .bind(&self.cfg.nats.stream)
        .bind(&self.cfg.consumer)
        .bind(seq as i64)
        .bind(pos.lsn.to_string())
        .bind(pos.seq)
        .bind(pg_timestamp_to_chrono(commit_ts))
        .bind(self.batch.messages as i64)
        .execute(self.olap.tx().conn())
        .await?;
        self.olap.set_slot(self.slot.as_deref().unwrap_or_default());
        let mark = CommitMark {
            end_lsn: pos.lsn,
            commit_ts: pg_timestamp_to_chrono(commit_ts),
        };
        self.olap.commit(&mark).await?;
        self.applied_seq = seq;
        if let Some(m) = self.ack.take() {
            // Cumulative: every message up to this one (AckPolicy::All).
            if let Err(e) = m.ack_with(AckKind::Ack).await {
                // Committed in OLAP: a lost ack only means a redelivery, which is dropped.
                tracing::warn!(error = %e, "acknowledging to JetStream failed");
            }
        }
        self.metrics.committed(
            self.batch.messages,
            self.batch.transactions,
            seq,
            pos.to_string(),
            t0.elapsed(),
        );
        let b = std::mem::take(&mut self.batch);
        self.batch.open = b.open;
        self.batch.open_chunks = b.open_chunks;
        self.batch.open_messages = b.open_messages;
        Ok(())
    }
}

/// The chunk table, its row in `cdc_backfill_chunks` (and its backfill's), as the worker of
/// the replicator made them, in the loader's open transaction.
async fn prepare_chunk(conn: &mut PgConnection, c: &PendingChunk) -> Result<(), LoadError> {
    sqlx::query(
        "insert into cdc_backfills (id, source_schema, source_table, reason, state, started_at)
         overriding system value values ($1, $2, $3, 'copied by the replicator (change stream)', 'running', now())
         on conflict do nothing",
    )
    .bind(c.backfill_id)
    .bind(c.table.schema.as_ref())
    .bind(c.table.name.as_ref())
    .execute(&mut *conn)
    .await?;
    sqlx::query(
        "select setval(pg_get_serial_sequence('cdc_backfills', 'id'),
                       greatest((select max(id) from cdc_backfills), 1))",
    )
    .execute(&mut *conn)
    .await?;
    sqlx::query(
        "insert into cdc_backfill_chunks (backfill_id, attempt, chunk, lo, hi, snapshot, from_lsn,
                                          rows, scope, kept)
         values ($1, $2, (select coalesce(max(chunk), 0) + 1 from cdc_backfill_chunks where backfill_id = $1),
                 $3, $4, $5, $6::pg_lsn, $7, $8, $9)
         on conflict (backfill_id, attempt) do nothing",
    )
    .bind(c.backfill_id)
    .bind(&c.attempt)
    .bind(&c.meta.lo)
    .bind(&c.meta.hi)
    .bind(&c.meta.snapshot)
    .bind(&c.meta.from_lsn)
    .bind(c.meta.rows)
    .bind(&c.meta.scope)
    .bind(&c.meta.kept)
    .execute(&mut *conn)
    .await?;
    let t = &c.table;
    sqlx::query(&format!(
        "drop table if exists {}",
        chunk_table(c.backfill_id)
    ))
    .execute(&mut *conn)
    .await?;
    sqlx::query(&chunk_table_sql(c.backfill_id, t))
        .execute(&mut *conn)
        .await?;
    let cols: Vec<String> = t.columns.iter().map(|c| ident(&c.name)).collect();
    let mut data = Vec::new();
    for (n, after, nulls) in &c.rows {
        let tuple =
            image::parse(t, after, nulls, &HashMap::new()).map_err(|e| LoadError::Message {
                seq: 0,
                what: e.to_string(),
            })?;
        data.extend_from_slice(format!("{n}\t").as_bytes());
        if t.is_keyless() {
            data.extend_from_slice(b"\\N");
        } else {
            image::copy_escape(
                &mut data,
                image::to_string(t, &tuple, Some(&t.key)).as_bytes(),
            );
        }
        data.push(b'\t');
        image::copy_escape(&mut data, after.as_bytes());
        data.push(b'\t');
        if nulls.is_empty() {
            data.extend_from_slice(b"\\N");
        } else {
            let names: Vec<String> = nulls
                .iter()
                .map(|n| format!("\"{}\"", n.replace('\\', "\\\\").replace('"', "\\\"")))
                .collect();
            image::copy_escape(&mut data, format!("{{{}}}", names.join(",")).as_bytes());
        }
        for v in &tuple.columns {
            data.push(b'\t');
            match v.data() {
                Some(d) => image::copy_escape(&mut data, d),
                None => data.extend_from_slice(b"\\N"),
            }
        }
        data.push(b'\n');
    }
    let mut copy = conn
        .copy_in_raw(&format!(
            "copy {} (_cdc_row, _cdc_key, _cdc_image, _cdc_nulls, {}) from stdin",
            chunk_table(c.backfill_id),
            cols.join(", ")
        ))
        .await?;
    for piece in data.chunks(1 << 20) {
        copy.send(piece).await?;
    }
    copy.finish().await?;
    Ok(())
}
