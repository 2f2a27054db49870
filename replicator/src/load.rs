//! `brewlytics load --from nats`: a change stream applied to an OLAP database exactly once.
//!
//! A durable JetStream pull consumer reads the stream `replicate --sink nats` publishes. Each
//! message is turned back into the [`Change`] it was made from (table shapes from the schema
//! events, which the initial copy sends before each table's rows), and whole source
//! transactions are applied through the same [`OlapWriter`] as the replicator's — journal,
//! replica, star — in one OLAP transaction per batch that also stores the stream sequence
//! reached (`cdc_nats_loader`). Only after that commit are the messages acknowledged
//! (cumulatively). After a crash the consumer is made again from the stored sequence, so no
//! message is applied twice or skipped; a redelivered message at or before it is dropped.
//!
//! A backfill chunk travels as its merge point (`b`, with the chunk's range and snapshot) and
//! its rows; the loader rebuilds the chunk (`cdc_staging.chunk_<id>`, `cdc_backfill_chunks`)
//! in its transaction and the writer merges it exactly as the replicator's does.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, consumer, AckKind};
use futures_util::StreamExt;
use sqlx::PgConnection;
use tokio::sync::watch;

use crate::change::{Body, Change, ChunkMerge, Op, Pos, SchemaChange};
use crate::decode::pg_timestamp_to_chrono;
use crate::image;
use crate::schema::store;
use crate::sink::nats::envelope::{self, ChunkMeta, Decoded};
use crate::sink::nats::metrics::LoaderMetrics;
use crate::sink::nats::{NatsConfig, NatsError};
use crate::sink::olap::backfill::{chunk_table, chunk_table_sql};
use crate::sink::olap::encode::encode;
use crate::sink::olap::journal::JournalEncoder;
use crate::sink::olap::{ApplyError, OlapWriter, OnError};
use crate::table::{ident, SourceTable};
use brewlytics_support::DbUrl;

#[derive(Clone, Debug)]
pub struct LoaderConfig {
    pub olap_url: DbUrl,
    pub nats: NatsConfig,
    pub consumer: String,
    pub max_changes: usize,
    pub on_error: OnError,
}

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error(transparent)]
    Nats(#[from] NatsError),
    #[error(transparent)]
    Apply(#[from] ApplyError),
    #[error("a message at stream sequence {seq} cannot be applied: {what}")]
    Message { seq: u64, what: String },
}

impl From<sqlx::Error> for LoadError {
    fn from(e: sqlx::Error) -> Self {
        Self::Apply(ApplyError::Sql(e))
    }
}

impl LoadError {
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Nats(e) => e.is_retryable(),
            Self::Apply(e) => e.is_retryable(),
            Self::Message { .. } => false,
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Self::Nats(e) => e.kind(),
            Self::Apply(_) => "olap",
            Self::Message { .. } => "message",
        }
    }
}

/// Loads until `shutdown`; waits out NATS and OLAP outages with backoff.
pub async fn run(
    cfg: LoaderConfig,
    metrics: Arc<LoaderMetrics>,
    shutdown: watch::Receiver<bool>,
) -> Result<(), LoadError> {
    supervise(cfg, metrics, shutdown, changes_session).await
}

fn changes_session<'a>(
    cfg: &'a LoaderConfig,
    metrics: &'a LoaderMetrics,
    shutdown: &'a mut watch::Receiver<bool>,
) -> Pin<Box<dyn Future<Output = Result<(), LoadError>> + Send + 'a>> {
    Box::pin(Loader::session(cfg, metrics, shutdown))
}

/// One session of a loader: connect, load until `shutdown` (Ok) or an error.
pub type Session = for<'a> fn(
    &'a LoaderConfig,
    &'a LoaderMetrics,
    &'a mut watch::Receiver<bool>,
) -> Pin<Box<dyn Future<Output = Result<(), LoadError>> + Send + 'a>>;

/// Runs `session` again and again until `shutdown`: a retryable error is waited out with
/// backoff (250 ms doubling to 30 s, reset after a minute of work), any other stops it.
pub async fn supervise(
    cfg: LoaderConfig,
    metrics: Arc<LoaderMetrics>,
    mut shutdown: watch::Receiver<bool>,
    session: Session,
) -> Result<(), LoadError> {
    cfg.nats.validate().map_err(NatsError::Config)?;
    let mut backoff = Duration::from_millis(250);
    loop {
        if *shutdown.borrow() {
            return Ok(());
        }
        let started = Instant::now();
        let outcome = session(&cfg, &metrics, &mut shutdown).await;
        metrics.state("reconnecting");
        match outcome {
            Ok(()) => {
                metrics.state("stopped");
                return Ok(());
            }
            Err(e) if !e.is_retryable() => {
                metrics.state("stopped");
                metrics.error(e.kind(), e.to_string());
                tracing::error!(error = %e, stream = %cfg.nats.stream, "loading stopped");
                return Err(e);
            }
            Err(e) => {
                metrics.error(e.kind(), e.to_string());
                if started.elapsed() > Duration::from_secs(60) {
                    backoff = Duration::from_millis(250);
                }
                tracing::warn!(error = %e, stream = %cfg.nats.stream,
                    retry_in_ms = backoff.as_millis() as u64, "loading interrupted; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = shutdown.changed() => return Ok(()),
                }
                backoff = (backoff * 2).min(Duration::from_secs(30));
            }
        }
    }
}

/// A chunk's rows as they arrive (after its merge point, in its transaction).
struct PendingChunk {
    backfill_id: i64,
    attempt: String,
    table: Arc<SourceTable>,
    meta: ChunkMeta,
    /// (row number, image, json nulls)
    rows: Vec<(i64, String, Vec<String>)>,
    first_seq: i32,
}

/// Changes gathered for the next OLAP transaction: complete source transactions, then the
/// one being received.
#[derive(Default)]
struct Batch {
    /// Changes of complete transactions not yet applied.
    changes: Vec<Change>,
    chunks: Vec<PendingChunk>,
    /// The open transaction's changes not yet applied, and its backfill chunks.
    open: Vec<Change>,
    open_chunks: Vec<PendingChunk>,
    /// Part of the open transaction is applied in OLAP's open transaction: no commit until it
    /// ends.
    open_applied: bool,
    /// Source transactions complete, and their messages.
    transactions: u64,
    messages: u64,
    open_messages: u64,
    /// The last complete transaction's (stream sequence, position, commit time).
    complete: Option<(u64, Pos, i64)>,
    /// The first start's copy ended in this batch.
    copy_done: bool,
    /// Star work of a transaction applied in parts waits for its end.
    deferred: bool,
}

struct Loader<'a> {
    cfg: &'a LoaderConfig,
    metrics: &'a LoaderMetrics,
    writer: OlapWriter,
    journal: JournalEncoder,
    tables: HashMap<(String, String), Arc<SourceTable>>,
    /// The stream sequence committed in OLAP.
    applied_seq: u64,
    /// The last message seen (redeliveries at or before it are dropped).
    seen_seq: u64,
    slot: Option<String>,
    batch: Batch,
    /// The message whose acknowledgement covers the complete transactions (AckPolicy::All).
    ack: Option<jetstream::Message>,
}

impl<'a> Loader<'a> {
    async fn session(
        cfg: &'a LoaderConfig,
        metrics: &'a LoaderMetrics,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Result<(), LoadError> {
        let mut writer = OlapWriter::connect(&cfg.olap_url, cfg.on_error).await?;
        let stored: Option<i64> = sqlx::query_scalar(
            "select stream_seq from cdc_nats_loader where stream = $1 and consumer = $2",
        )
        .bind(&cfg.nats.stream)
        .bind(&cfg.consumer)
        .fetch_optional(writer.conn())
        .await?;
        let applied_seq = stored.unwrap_or(0).max(0) as u64;
        let tables = store::load(writer.conn())
            .await?
            .into_iter()
            .map(|t| ((t.schema.to_string(), t.name.to_string()), Arc::new(t)))
            .collect();
        let client = crate::sink::nats::connect(&cfg.nats, "brewlytics-loader", |_| {}).await?;
        let js = crate::sink::nats::context(&cfg.nats, client);
        let stream = js
            .get_stream(&cfg.nats.stream)
            .await
            .map_err(|e| NatsError::Stream {
                stream: cfg.nats.stream.clone(),
                message: e.to_string(),
            })?;
        let consumer = ensure_consumer(&stream, cfg, applied_seq).await?;
        let mut messages = consumer
            .stream()
            .max_messages_per_batch(1000)
            .heartbeat(Duration::from_secs(5))
            .expires(Duration::from_secs(30))
            .messages()
            .await
            .map_err(|e| NatsError::Consumer(e.to_string()))?;
        tracing::info!(stream = %cfg.nats.stream, consumer = %cfg.consumer, from = applied_seq + 1,
            "loading the change stream");
        metrics.state("loading");
        let mut loader = Loader {
            cfg,
            metrics,
            writer,
            journal: JournalEncoder::default(),
            tables,
            applied_seq,
            seen_seq: applied_seq,
            slot: None,
            batch: Batch::default(),
            ack: None,
        };
        let mut consumer = consumer;
        let mut next_info = Instant::now();
        loop {
            if Instant::now() >= next_info {
                if let Ok(info) = consumer.info().await {
                    metrics.consumer_info(info.num_pending as i64, info.num_ack_pending as i64);
                }
                next_info = Instant::now() + Duration::from_secs(1);
            }
            let idle = if loader.batch.complete.is_some() {
                Duration::from_millis(20)
            } else {
                Duration::from_millis(500)
            };
            let next = tokio::select! {
                _ = shutdown.changed() => {
                    loader.flush().await?;
                    return Ok(());
                }
                n = tokio::time::timeout(idle, messages.next()) => n,
            };
            match next {
                Err(_) => loader.flush().await?,
                Ok(None) => {
                    return Err(NatsError::Consumer("the message stream ended".into()).into())
                }
                Ok(Some(Err(e))) => return Err(NatsError::Consumer(e.to_string()).into()),
                Ok(Some(Ok(m))) => {
                    loader.message(m).await?;
                    if loader.batch.changes.len() >= cfg.max_changes {
                        loader.flush().await?;
                    }
                }
            }
        }
    }

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

    async fn message(&mut self, m: jetstream::Message) -> Result<(), LoadError> {
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
            Decoded::Row { row, .. } => {
                let table = self.table(&row.schema, &row.table, seq)?;
                if row.op == Op::Snapshot && row.xid != 0 {
                    // A backfill chunk's row: into the chunk, merged at its merge point.
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
                } else {
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
                }
            }
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
                let key = (after.schema.to_string(), after.name.to_string());
                if copy {
                    // The first start's copy of a table: made, emptied, filled by its rows.
                    self.apply_part().await?;
                    if self.tables.contains_key(&key) {
                        self.writer.begin().await?;
                        sqlx::query(&format!("truncate {}", after.replica_ident()))
                            .execute(self.writer.conn())
                            .await?;
                    }
                }
                let before = before
                    .map(Arc::new)
                    .or_else(|| self.tables.get(&key).cloned().filter(|_| !copy));
                let after = Arc::new(after);
                self.tables.insert(key, after.clone());
                self.batch.open.push(Change {
                    pos,
                    xid,
                    commit_ts,
                    body: Body::Schema(Arc::new(SchemaChange {
                        before,
                        after,
                        steps,
                        backfill,
                    })),
                });
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
                if let Some(meta) = chunk {
                    self.batch.open_chunks.push(PendingChunk {
                        backfill_id,
                        attempt: attempt.clone(),
                        table: table.clone(),
                        meta,
                        rows: Vec::new(),
                        first_seq: pos.seq,
                    });
                }
                self.batch.open.push(Change {
                    pos,
                    xid,
                    commit_ts,
                    body: Body::Backfill(Arc::new(ChunkMerge {
                        table,
                        backfill_id,
                        attempt,
                    })),
                });
            }
        }
        if let Some(events) = place.last {
            if events != place.order {
                return Err(LoadError::Message {
                    seq,
                    what: format!(
                        "transaction {} ends at its message {} but says it has {events}",
                        place.id, place.order
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
        } else if self.batch.open.len() >= self.cfg.max_changes && self.batch.open_chunks.is_empty()
        {
            // A transaction larger than a batch: applied in parts, committed at its end.
            self.apply_part().await?;
        }
        Ok(())
    }

    /// Applies the changes gathered so far — complete transactions, then what the open one
    /// has received — into the open OLAP transaction (not committed). Part of a transaction
    /// defers its star work to the transaction's end, as the replicator's chunks do.
    async fn apply_part(&mut self) -> Result<(), LoadError> {
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
        self.writer.begin().await?;
        // The loader copies no table itself: tables come through the stream, so the requests
        // a schema change makes in OLAP are dropped.
        let drop_requests = "delete from cdc_backfills b where state = 'pending'
             and not exists (select 1 from cdc_backfill_chunks c where c.backfill_id = b.id)";
        sqlx::query(drop_requests)
            .execute(self.writer.conn())
            .await?;
        for chunk in std::mem::take(&mut self.batch.chunks) {
            prepare_chunk(self.writer.conn(), &chunk).await?;
        }
        let changes = std::mem::take(&mut self.batch.changes);
        let encoded = encode(&mut self.journal, &changes);
        if partial {
            self.writer.apply_chunk(&encoded).await?;
            self.batch.deferred = true;
        } else {
            self.writer.apply(&encoded).await?;
            self.batch.deferred = false;
        }
        sqlx::query(drop_requests)
            .execute(self.writer.conn())
            .await?;
        Ok(())
    }

    /// Applies and commits the complete transactions gathered, with the stream position;
    /// then acknowledges them.
    async fn flush(&mut self) -> Result<(), LoadError> {
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
        if std::mem::take(&mut self.batch.copy_done)
            && !self.writer.star_sources().await?.is_empty()
        {
            self.writer.star_call("select star_refresh_all()").await?;
        }
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
        .execute(self.writer.conn())
        .await?;
        let slot = self.slot.clone().unwrap_or_default();
        self.writer
            .commit(&slot, pos.lsn, pg_timestamp_to_chrono(commit_ts))
            .await?;
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

/// The durable consumer, delivering from the message after `applied`. One left with
/// deliveries not committed here (a crash between delivery and commit, or before the
/// acknowledgement) is made again from there, so nothing waits for a redelivery.
pub(crate) async fn ensure_consumer(
    stream: &jetstream::stream::Stream,
    cfg: &LoaderConfig,
    applied: u64,
) -> Result<consumer::PullConsumer, NatsError> {
    let err = |e: String| NatsError::Consumer(format!("{}: {e}", cfg.consumer));
    if let Ok(mut c) = stream
        .get_consumer::<consumer::pull::Config>(&cfg.consumer)
        .await
    {
        let info = c.info().await.map_err(|e| err(e.to_string()))?;
        if info.ack_floor.stream_sequence == applied
            && info.delivered.stream_sequence == applied
            && info.num_ack_pending == 0
        {
            return Ok(c);
        }
        stream
            .delete_consumer(&cfg.consumer)
            .await
            .map_err(|e| err(e.to_string()))?;
    }
    stream
        .create_consumer(consumer::pull::Config {
            durable_name: Some(cfg.consumer.clone()),
            description: Some("brewlytics load: the change stream into an OLAP database".into()),
            deliver_policy: if applied == 0 {
                consumer::DeliverPolicy::All
            } else {
                consumer::DeliverPolicy::ByStartSequence {
                    start_sequence: applied + 1,
                }
            },
            ack_policy: consumer::AckPolicy::All,
            ack_wait: Duration::from_secs(300),
            max_ack_pending: -1,
            filter_subject: format!("{}.>", cfg.nats.prefix),
            ..Default::default()
        })
        .await
        .map_err(|e| err(e.to_string()))
}

/// The loader's position, as `brewlytics status` shows it (from OLAP).
#[derive(Clone, Debug, serde::Serialize)]
pub struct Position {
    pub stream: String,
    pub consumer: String,
    pub stream_seq: i64,
    pub lsn: Option<String>,
    pub messages: i64,
    pub updated_at: chrono::DateTime<chrono::Utc>,
}

type PositionRow = (
    String,
    String,
    i64,
    Option<String>,
    i64,
    chrono::DateTime<chrono::Utc>,
);

pub async fn positions(olap: &mut PgConnection) -> Result<Vec<Position>, sqlx::Error> {
    let rows: Vec<PositionRow> = sqlx::query_as(
        "select stream, consumer, stream_seq, lsn::text, messages, updated_at
             from cdc_nats_loader order by 1, 2",
    )
    .fetch_all(olap)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| Position {
            stream: r.0,
            consumer: r.1,
            stream_seq: r.2,
            lsn: r.3,
            messages: r.4,
            updated_at: r.5,
        })
        .collect())
}

/// The loader's metrics registry and live state, served on its listen address.
pub struct LoaderTelemetry {
    registry: prometheus_client::registry::Registry,
    pub metrics: Arc<LoaderMetrics>,
    /// The events loader's (`brewlytics_events_loader_*`, see [`crate::clickstream::load`]).
    pub events: Arc<LoaderMetrics>,
}

impl LoaderTelemetry {
    /// For the change stream `stream` and its consumer; `events` names the events stream
    /// and its consumer.
    pub fn new(stream: &str, consumer: &str) -> Arc<Self> {
        Self::with_events(
            stream,
            consumer,
            &format!("{stream}_EVENTS"),
            &format!("{consumer}-events"),
        )
    }

    pub fn with_events(
        stream: &str,
        consumer: &str,
        events_stream: &str,
        events_consumer: &str,
    ) -> Arc<Self> {
        let mut registry = prometheus_client::registry::Registry::default();
        let metrics = Arc::new(LoaderMetrics::register(&mut registry, stream, consumer));
        let events = Arc::new(LoaderMetrics::register_as(
            &mut registry,
            "events_loader",
            events_stream,
            events_consumer,
        ));
        Arc::new(Self {
            registry,
            metrics,
            events,
        })
    }

    pub fn encode(&self) -> String {
        let mut out = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            tracing::warn!(error = %e, "encoding the loader's metrics");
        }
        out
    }
}
