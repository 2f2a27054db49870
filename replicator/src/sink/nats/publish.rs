//! The publisher: a batch's messages to JetStream, acknowledged before the batch commits.
//!
//! Messages are sent without waiting for each acknowledgement (a bounded number in flight);
//! [`NatsSink::commit`] waits for all of them. The last message of a run is held back until
//! the next one shows whether its transaction ends there (a transaction larger than a batch
//! arrives in parts): the last message of every transaction carries `Brewlytics-Tx-Last`.
//!
//! Every message names the stream sequence it must follow (`Nats-Expected-Last-Sequence`):
//! when one in flight is lost (its leader died before storing it), JetStream refuses the ones
//! after it instead of storing them ahead of it, the batch fails and is sent again from the
//! last message the stream holds — the stream keeps the source's order through any failure.
//! So a stream takes one replicator's changes; another writer is found at [`Sink::resume`]
//! and stops the replicator with what to do.

use std::collections::{HashMap, HashSet, VecDeque};
use std::future::{Future, IntoFuture};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use async_nats::jetstream::{self, context::PublishAckFuture, stream};
use async_nats::HeaderMap;
use sqlx::PgConnection;

use super::envelope::{self, BackfillMark, ChunkMeta, Item, Message, Origin};
use super::{ensure_stream, NatsConfig, NatsError};
use crate::batch::CommitMark;
use crate::change::{Change, Op, Pos};
use crate::lsn::Lsn;
use crate::sink::olap::journal;
use crate::sink::{Encode, PartEnd, PrimaryTx, Sink};
use crate::telemetry::nats::PublisherMetrics;

/// Messages in flight before the oldest acknowledgement is waited for.
const MAX_IN_FLIGHT: usize = 4096;
const MAX_IN_FLIGHT_BYTES: usize = 16 << 20;
/// Journal rows read back per query (the first start's copy).
const COPY_CHUNK: i64 = 20_000;

type AckFuture = Pin<
    Box<
        dyn Future<
                Output = Result<jetstream::publish::PublishAck, jetstream::context::PublishError>,
            > + Send,
    >,
>;

struct InFlight {
    ack: AckFuture,
    bytes: usize,
    sent: Instant,
}

/// What a commit reports.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Published {
    /// Messages JetStream stored (or had stored: duplicates) since the last commit.
    pub messages: u64,
    pub duplicates: u64,
    /// Messages not sent because the stream held them already.
    pub skipped: u64,
    /// The stream sequence of the last message acknowledged so far.
    pub stream_seq: u64,
}

pub struct NatsSink {
    origin: Origin,
    stream_name: String,
    stream: stream::Stream,
    js: jetstream::Context,
    metrics: Arc<PublisherMetrics>,
    in_flight: VecDeque<InFlight>,
    in_flight_bytes: usize,
    /// The run's last message, and whether it is to be skipped.
    held: Option<(Message, bool)>,
    /// Positions the stream already holds after the committed stream sequence.
    skip: HashSet<Pos>,
    /// The stream sequence stored in OLAP with the checkpoint.
    committed_seq: Option<u64>,
    acked_seq: u64,
    /// The stream sequence the next message must follow (the stream's last, plus what is in
    /// flight); read again after any failure.
    last_seq: Option<u64>,
    /// Abandoned since the last scan: what the stream holds is read again before a send.
    stale: bool,
    batch: Published,
    /// When the stream's consumers were last looked at (for `/status`).
    reported: Option<Instant>,
    ack_timeout: std::time::Duration,
}

impl NatsSink {
    pub async fn connect(
        cfg: &NatsConfig,
        origin: Origin,
        metrics: Arc<PublisherMetrics>,
    ) -> Result<Self, NatsError> {
        metrics.enabled(&cfg.stream, &cfg.shown_servers());
        let m = metrics.clone();
        let client =
            super::connect(cfg, "brewlytics-replicator", move |up| m.connected(up)).await?;
        metrics.connected(true);
        let js = super::context(cfg, client);
        let stream = ensure_stream(&js, cfg).await?;
        Ok(Self {
            origin,
            stream_name: cfg.stream.clone(),
            stream,
            js,
            metrics,
            in_flight: VecDeque::new(),
            in_flight_bytes: 0,
            held: None,
            skip: HashSet::new(),
            committed_seq: None,
            acked_seq: 0,
            last_seq: None,
            stale: false,
            batch: Published::default(),
            reported: None,
            ack_timeout: cfg.ack_timeout,
        })
    }

    pub fn origin(&self) -> &Origin {
        &self.origin
    }

    pub fn stream_name(&self) -> &str {
        &self.stream_name
    }

    /// The stream's (first, last) sequence.
    async fn sequences(&mut self) -> Result<(u64, u64), NatsError> {
        let info = self
            .stream
            .get_info()
            .await
            .map_err(|e| NatsError::Stream {
                stream: self.stream_name.clone(),
                message: e.to_string(),
            })?;
        Ok((info.state.first_sequence, info.state.last_sequence))
    }

    /// Reads the stream sequence OLAP committed last. The first time this slot publishes to
    /// this stream, the stream's current end is recorded (committed at once): what comes after
    /// it is this slot's.
    async fn load_committed(&mut self, olap: &mut PgConnection) -> Result<(), NatsError> {
        let row: Option<i64> = sqlx::query_scalar(
            "select stream_seq from cdc_nats_published where slot_name = $1 and stream = $2",
        )
        .bind(&self.origin.slot)
        .bind(&self.stream_name)
        .fetch_optional(&mut *olap)
        .await?;
        let seq = match row {
            Some(s) => s as u64,
            None => {
                let (_, last) = self.sequences().await?;
                record(olap, &self.origin.slot, &self.stream_name, last).await?;
                last
            }
        };
        self.committed_seq = Some(seq);
        self.acked_seq = seq;
        Ok(())
    }

    fn send_error(&self, e: impl std::fmt::Display) -> NatsError {
        NatsError::Publish(e.to_string())
    }

    async fn send(&mut self, mut m: Message) -> Result<(), NatsError> {
        let after = match self.last_seq {
            Some(s) => s,
            None => self.sequences().await?.1,
        };
        let mut headers = HeaderMap::new();
        for (name, value) in m.headers.drain(..) {
            headers.insert(name, value.as_str());
        }
        headers.insert(
            async_nats::header::NATS_EXPECTED_LAST_SEQUENCE,
            after.to_string().as_str(),
        );
        let bytes = m.payload.len();
        let publish = jetstream::message::PublishMessage::build()
            .payload(m.payload.into())
            .headers(headers);
        let ack: PublishAckFuture = self
            .js
            .send_publish(m.subject, publish)
            .await
            .map_err(|e| self.send_error(e))?;
        self.last_seq = Some(after + 1);
        self.in_flight.push_back(InFlight {
            ack: ack.into_future(),
            bytes,
            sent: Instant::now(),
        });
        self.in_flight_bytes += bytes;
        if self.in_flight.len() >= MAX_IN_FLIGHT || self.in_flight_bytes >= MAX_IN_FLIGHT_BYTES {
            self.await_oldest().await?;
        }
        self.metrics
            .in_flight(self.in_flight.len() as i64, self.in_flight_bytes as i64);
        Ok(())
    }

    async fn await_oldest(&mut self) -> Result<(), NatsError> {
        let Some(f) = self.in_flight.pop_front() else {
            return Ok(());
        };
        self.in_flight_bytes -= f.bytes;
        let ack = f.ack.await.map_err(|e| {
            self.last_seq = None;
            if matches!(
                e.kind(),
                jetstream::context::PublishErrorKind::WrongLastSequence
            ) {
                NatsError::Ack(
                    "the stream's last message is not the one this change follows (a publish \
                     before it was lost, or another writer): the batch is sent again"
                        .into(),
                )
            } else {
                NatsError::Ack(e.to_string())
            }
        })?;
        if ack.stream != self.stream_name {
            return Err(NatsError::Config(format!(
                "a change was stored by stream {} instead of {}: two streams take the subject prefix",
                ack.stream, self.stream_name
            )));
        }
        self.metrics
            .acked(f.bytes, f.sent.elapsed(), ack.duplicate, ack.sequence);
        self.acked_seq = self.acked_seq.max(ack.sequence);
        self.batch.messages += 1;
        if ack.duplicate {
            self.batch.duplicates += 1;
            // Not stored again: the stream's last is not where the next send would expect.
            self.last_seq = None;
        }
        Ok(())
    }

    /// Takes `m` into the run: the held message before it is sent, marked as its
    /// transaction's last when `m` belongs to another.
    async fn push(&mut self, m: Message) -> Result<(), NatsError> {
        if self.stale {
            self.rescan(false).await?;
        }
        let skip = self.skip.contains(&m.pos);
        if let Some((mut h, h_skip)) = self.held.take() {
            if h.tx != m.tx {
                h.finish();
            }
            self.release(h, h_skip).await?;
        }
        self.held = Some((m, skip));
        Ok(())
    }

    async fn release(&mut self, m: Message, skip: bool) -> Result<(), NatsError> {
        if skip {
            self.batch.skipped += 1;
            self.metrics.skipped(1);
            Ok(())
        } else {
            self.send(m).await
        }
    }

    /// Publishes the first start's copy, as OLAP's open transaction journaled it (a schema
    /// event per table, then its rows, at the slot's consistent point `lsn`), in pieces.
    async fn publish_copy(&mut self, olap: &mut PgConnection, lsn: Lsn) -> Result<u64, NatsError> {
        let mut after = Pos { lsn, seq: i32::MIN };
        let mut tables: HashMap<(String, String), i64> = HashMap::new();
        let mut n = 0;
        loop {
            let rows = journal::read_after(olap, after, COPY_CHUNK).await?;
            let rows: Vec<_> = rows
                .into_iter()
                .take_while(|r| r.pos.lsn == lsn && r.pos.seq < 0)
                .collect();
            let Some(last) = rows.last() else { break };
            after = last.pos;
            for row in &rows {
                let count = tables
                    .entry((row.schema.clone(), row.table.clone()))
                    .or_default();
                *count += 1;
                if let Some(m) = envelope::journal_message(&self.origin, row, *count) {
                    self.push(m).await?;
                    n += 1;
                }
            }
        }
        Ok(n)
    }

    /// Completes a run from the reader: a backfill chunk's merge point with its range, and
    /// its rows as OLAP's open transaction has just journaled them.
    async fn write_items(
        &mut self,
        olap: &mut PgConnection,
        part: &envelope::Part,
    ) -> Result<(), NatsError> {
        for item in &part.items {
            match item {
                Item::Ready(m) => self.push(m.clone()).await?,
                Item::Backfill(b) => {
                    for m in backfill_messages(&self.origin, olap, b).await? {
                        self.push(m).await?;
                    }
                }
            }
        }
        Ok(())
    }

    /// Reads what the stream holds after the committed stream sequence: this slot's changes
    /// of a batch OLAP did not commit. They are not sent again (`skip`) — or, when `delete`,
    /// deleted (a first start over: the pipeline will not produce them again). A message of
    /// another writer stops the replicator. The next message follows the stream's last.
    async fn rescan(&mut self, delete: bool) -> Result<(), NatsError> {
        self.skip.clear();
        self.stale = false;
        // Messages the stream no longer holds (its limits) need no look.
        let (first, last) = self.sequences().await?;
        let from = (self.committed_seq.unwrap_or(0) + 1).max(first);
        let mut deleted = 0u64;
        for seq in from..=last {
            let msg = match self.stream.get_raw_message(seq).await {
                Ok(m) => m,
                Err(e) if e.kind() == stream::RawMessageErrorKind::NoMessageFound => continue,
                Err(e) => {
                    return Err(NatsError::Stream {
                        stream: self.stream_name.clone(),
                        message: format!("reading message {seq}: {e}"),
                    })
                }
            };
            let Some((_, pos)) = msg
                .headers
                .get(envelope::MSG_ID)
                .and_then(|id| envelope::parse_message_id(Some(&self.origin.slot), id.as_str()))
            else {
                return Err(NatsError::Config(format!(
                    "JetStream stream {} holds message {seq} (subject {}) that this replicator \
                     did not publish, after the last one it committed: a stream takes one \
                     replicator's changes, in order; give each replicator its own --nats-stream",
                    self.stream_name, msg.subject
                )));
            };
            if delete {
                self.stream
                    .delete_message(seq)
                    .await
                    .map_err(|e| NatsError::Stream {
                        stream: self.stream_name.clone(),
                        message: format!("deleting message {seq}: {e}"),
                    })?;
                deleted += 1;
            } else {
                self.skip.insert(pos);
            }
        }
        self.last_seq = Some(self.sequences().await?.1);
        if !self.skip.is_empty() || deleted > 0 {
            tracing::info!(stream = %self.stream_name, already_published = self.skip.len(),
                deleted_uncommitted = deleted, "read the stream's messages after the last commit");
        }
        Ok(())
    }

    /// Messages published since the start (acknowledged).
    pub fn acked_seq(&self) -> u64 {
        self.acked_seq
    }
}

/// A backfill chunk's merge point and its rows (none when no chunk was merged there).
async fn backfill_messages(
    origin: &Origin,
    olap: &mut PgConnection,
    b: &BackfillMark,
) -> Result<Vec<Message>, NatsError> {
    type Row = (
        Option<Vec<String>>,
        Option<Vec<String>>,
        String,
        String,
        i64,
        Option<String>,
        Option<String>,
    );
    let meta: Option<Row> = sqlx::query_as(
        "select lo, hi, snapshot, from_lsn::text, rows, scope, kept from cdc_backfill_chunks
         where backfill_id = $1 and attempt = $2 and merged_lsn = $3::pg_lsn",
    )
    .bind(b.backfill_id)
    .bind(&b.attempt)
    .bind(b.pos.lsn.to_string())
    .fetch_optional(&mut *olap)
    .await?;
    let meta = meta.map(
        |(lo, hi, snapshot, from_lsn, rows, scope, kept)| ChunkMeta {
            lo,
            hi,
            snapshot,
            from_lsn,
            rows,
            scope,
            kept,
        },
    );
    let mut out = vec![envelope::backfill_message(origin, b, meta.as_ref())];
    if meta.is_some() {
        let rows = journal::read_table_range(
            olap,
            &b.table.schema,
            &b.table.name,
            b.pos.lsn,
            Pos {
                lsn: b.pos.lsn,
                seq: i32::MAX,
            },
        )
        .await?;
        let mut order = b.table_order;
        for row in rows
            .iter()
            .filter(|r| r.pos.seq > b.pos.seq && r.op == Op::Snapshot)
        {
            order += 1;
            out.extend(envelope::journal_message(origin, row, order));
        }
    }
    Ok(out)
}

/// Stores the stream sequence reached, in OLAP's open transaction (with the checkpoint).
async fn record(
    olap: &mut PgConnection,
    slot: &str,
    stream: &str,
    seq: u64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "insert into cdc_nats_published (slot_name, stream, stream_seq) values ($1, $2, $3)
         on conflict (slot_name) do update
           set stream = excluded.stream,
               stream_seq = case when cdc_nats_published.stream = excluded.stream
                                 then greatest(cdc_nats_published.stream_seq, excluded.stream_seq)
                                 else excluded.stream_seq end,
               updated_at = now()",
    )
    .bind(slot)
    .bind(stream)
    .bind(seq as i64)
    .execute(olap)
    .await?;
    Ok(())
}

impl Encode for envelope::Encoder {
    type Part = envelope::Part;
    fn encode(&mut self, changes: &[Change]) -> envelope::Part {
        envelope::Encoder::encode(self, changes)
    }
}

impl Sink for NatsSink {
    type Part = envelope::Part;
    type Encoder = envelope::Encoder;
    type Receipt = Published;
    type Error = NatsError;

    fn encoder(&self) -> envelope::Encoder {
        envelope::Encoder::new(self.origin.clone())
    }

    /// Reads the stream sequence OLAP committed, then what the stream holds after it. With a
    /// checkpoint, those are changes of a batch OLAP did not commit: they are not sent again
    /// (the pipeline resends them, at the same positions). Without one (a first start over),
    /// they were never committed and the pipeline will not produce them again (a new slot, a
    /// new copy): they are deleted from the stream.
    async fn resume(
        &mut self,
        mut primary: PrimaryTx<'_>,
        checkpoint: Option<Lsn>,
    ) -> Result<(), NatsError> {
        self.load_committed(primary.conn()).await?;
        self.held = None;
        self.in_flight.clear();
        self.in_flight_bytes = 0;
        self.rescan(checkpoint.is_none()).await
    }

    /// A backfill chunk's rows are read from the primary's transaction, where its merge has
    /// just journaled them. The last message is held until the next one (or the commit)
    /// shows whether it ends its transaction.
    async fn write(
        &mut self,
        mut primary: PrimaryTx<'_>,
        part: &envelope::Part,
        _end: PartEnd,
    ) -> Result<(), NatsError> {
        self.write_items(primary.conn(), part).await
    }

    async fn write_copy(&mut self, mut primary: PrimaryTx<'_>, at: Lsn) -> Result<u64, NatsError> {
        self.publish_copy(primary.conn(), at).await
    }

    /// The held message ends its transaction (a batch holds whole transactions); every
    /// acknowledgement is waited for; the stream sequence reached is recorded in the
    /// primary's transaction.
    async fn commit(
        &mut self,
        mut primary: PrimaryTx<'_>,
        _mark: &CommitMark,
    ) -> Result<Published, NatsError> {
        if let Some((mut h, skip)) = self.held.take() {
            h.finish();
            self.release(h, skip).await?;
        }
        while !self.in_flight.is_empty() {
            self.await_oldest().await?;
            self.metrics
                .in_flight(self.in_flight.len() as i64, self.in_flight_bytes as i64);
        }
        self.metrics.batch_done();
        if self
            .reported
            .is_none_or(|t| t.elapsed() >= std::time::Duration::from_secs(2))
        {
            self.reported = Some(Instant::now());
            let report = super::stream_report(&self.stream);
            if let Ok(Ok(r)) = tokio::time::timeout(std::time::Duration::from_secs(1), report).await
            {
                self.metrics.stream_report(&r);
            }
        }
        record(
            primary.conn(),
            &self.origin.slot,
            &self.stream_name,
            self.acked_seq,
        )
        .await?;
        self.committed_seq = Some(self.acked_seq);
        let mut done = std::mem::take(&mut self.batch);
        done.stream_seq = self.acked_seq;
        Ok(done)
    }

    /// Unacknowledged messages may or may not be stored: they are given until the
    /// acknowledgement timeout to settle, and before the next send the stream is read again
    /// (what it holds is not sent twice, and the next message follows its last).
    async fn abandon(&mut self) -> Result<(), NatsError> {
        self.held = None;
        self.last_seq = None;
        self.stale = true;
        let pending: Vec<_> = self.in_flight.drain(..).map(|f| f.ack).collect();
        let _ =
            tokio::time::timeout(self.ack_timeout, futures_util::future::join_all(pending)).await;
        self.in_flight_bytes = 0;
        self.batch = Published::default();
        self.metrics.in_flight(0, 0);
        Ok(())
    }
}
