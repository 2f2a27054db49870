//! The change stream's messages (pure; no I/O): a Debezium-compatible JSON envelope per change,
//! its subject, its message id and its headers — and the way back, from a message to the
//! journal row it was made from (for `brewlytics load`).
//!
//! Row changes (`c`, `u`, `d`, `t`, `r`) go to `<prefix>.<schema>.<table>`; a table's schema
//! change to `<prefix>.schema`; a backfill chunk's merge point to `<prefix>.backfill` (its rows
//! follow as `r` on the table's subject). Values are the journal's typed JSON images
//! ([`crate::image`]): numbers as numbers, booleans as booleans, json embedded, the rest as
//! PostgreSQL's text; a column missing from `after` is an unchanged TOAST value.
//!
//! Every message is one journal position `(lsn, seq)`: its id is `<slot>:<lsn>:<seq>` (header
//! `Nats-Msg-Id`, so JetStream drops a resend), and it carries its transaction in headers —
//! `Brewlytics-Tx-Id` (`<xid>:<lsn>`, as Debezium's `transaction.id`), `Brewlytics-Tx-Order`
//! (its place in the transaction, from 1) and, on the transaction's last message,
//! `Brewlytics-Tx-Last: true` with `Brewlytics-Tx-Events` (how many it has). The same three are
//! in the envelope's `transaction` block (`id`, `total_order`, `data_collection_order`).

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::value::RawValue;
use serde_json::{json, Value};

use crate::change::{Body, Change, Op, Pos};
use crate::decode::pg_timestamp_to_chrono;
use crate::decode::PG_EPOCH_UNIX_MICROS;
use crate::image;
use crate::lsn::Lsn;
use crate::schema::plan::Step;
use crate::sink::olap::journal::{table_json, JournalRow};
use crate::source::snapshot::FIRST_COPY_SEQ;
use crate::table::SourceTable;

pub const MSG_ID: &str = "Nats-Msg-Id";
pub const TX_ID: &str = "Brewlytics-Tx-Id";
pub const TX_ORDER: &str = "Brewlytics-Tx-Order";
pub const TX_LAST: &str = "Brewlytics-Tx-Last";
pub const TX_EVENTS: &str = "Brewlytics-Tx-Events";
pub const OP: &str = "Brewlytics-Op";
pub const JSON_NULLS: &str = "Brewlytics-Json-Nulls";
/// On the delete and the insert an UPDATE that moved its row to another key became.
pub const KEY_MOVED: &str = "Brewlytics-Key-Moved";

/// The connector's name in `source.connector`.
pub const CONNECTOR: &str = "brewlytics";

/// What every message of one replicator says about where it comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Origin {
    /// The subject prefix (`brewlytics`).
    pub prefix: String,
    /// The replication slot: `source.name`, and the first part of every message id.
    pub slot: String,
    /// The source database: `source.db`.
    pub db: String,
}

impl Origin {
    /// `<prefix>.<schema>.<table>`, each name made a valid subject token.
    pub fn table_subject(&self, schema: &str, table: &str) -> String {
        format!("{}.{}.{}", self.prefix, token(schema), token(table))
    }

    pub fn schema_subject(&self) -> String {
        format!("{}.schema", self.prefix)
    }

    pub fn backfill_subject(&self) -> String {
        format!("{}.backfill", self.prefix)
    }

    pub fn message_id(&self, pos: Pos) -> String {
        format!("{}:{}:{}", self.slot, pos.lsn, pos.seq)
    }
}

/// A name as one subject token: `.`, `*`, `>` and whitespace (which NATS does not allow in a
/// token) become `_`. The envelope's `source` names the table exactly.
pub fn token(name: &str) -> String {
    let t: String = name
        .chars()
        .map(|c| {
            if c == '.' || c == '*' || c == '>' || c.is_whitespace() || c.is_control() {
                '_'
            } else {
                c
            }
        })
        .collect();
    if t.is_empty() {
        "_".into()
    } else {
        t
    }
}

/// The position a message id names: `<slot>:<lsn>:<seq>` (the slot is checked).
pub fn parse_message_id(slot: Option<&str>, id: &str) -> Option<(String, Pos)> {
    let mut parts = id.rsplitn(3, ':');
    let seq: i32 = parts.next()?.parse().ok()?;
    let lsn: Lsn = parts.next()?.parse().ok()?;
    let s = parts.next()?;
    if slot.is_some_and(|want| want != s) {
        return None;
    }
    Some((s.to_owned(), Pos { lsn, seq }))
}

/// One message, ready to publish but for its place in the transaction, which the publisher
/// completes ([`Message::finish`]): whether it is the transaction's last.
#[derive(Clone, Debug, PartialEq)]
pub struct Message {
    pub subject: String,
    pub pos: Pos,
    /// `<xid>:<lsn>`.
    pub tx: String,
    /// Place in the transaction, from 1.
    pub order: i64,
    pub headers: Vec<(&'static str, String)>,
    pub payload: Vec<u8>,
}

impl Message {
    /// Marks the transaction's last message.
    pub fn finish(&mut self) {
        self.headers.push((TX_LAST, "true".into()));
        self.headers.push((TX_EVENTS, self.order.to_string()));
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// A backfill chunk's merge point, completed by the publisher after OLAP merged it (the
/// chunk's range and rows are read from OLAP's open transaction).
#[derive(Clone, Debug, PartialEq)]
pub struct BackfillMark {
    pub pos: Pos,
    pub xid: u32,
    pub commit_ts: i64,
    pub table: Arc<SourceTable>,
    pub backfill_id: i64,
    pub attempt: String,
    pub order: i64,
    pub table_order: i64,
}

/// What the reader hands the publisher for one run of changes, in journal order.
#[derive(Clone, Debug, PartialEq)]
pub enum Item {
    Ready(Message),
    Backfill(BackfillMark),
}

/// A run of changes for the publisher.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Part {
    pub items: Vec<Item>,
}

/// How `source.snapshot` reads: `true` for the first start's copy, `incremental` for a
/// backfill chunk's rows, `false` for streamed changes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Snapshot {
    No,
    Initial,
    Incremental,
}

impl Snapshot {
    fn as_str(self) -> &'static str {
        match self {
            Snapshot::No => "false",
            Snapshot::Initial => "true",
            Snapshot::Incremental => "incremental",
        }
    }
}

/// One journal position, its images as JSON text: what an envelope is made from.
pub struct Event<'a> {
    pub pos: Pos,
    pub xid: u32,
    pub commit_ts: i64,
    pub schema: &'a str,
    pub table: &'a str,
    pub op: Op,
    pub before: Option<&'a str>,
    pub after: Option<&'a str>,
    pub json_nulls: &'a [String],
    pub snapshot: Snapshot,
    pub order: i64,
    pub table_order: i64,
}

fn ms(commit_ts: i64) -> i64 {
    pg_timestamp_to_chrono(commit_ts).map_or(0, |t| t.timestamp_millis())
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// The transaction id, as Debezium's PostgreSQL connector writes it: `<txId>:<lsn>`.
pub fn tx_id(xid: u32, lsn: Lsn) -> String {
    format!("{xid}:{}", lsn.0)
}

fn source(o: &Origin, e: &Event<'_>) -> Value {
    json!({
        "version": env!("CARGO_PKG_VERSION"),
        "connector": CONNECTOR,
        "name": o.slot,
        "ts_ms": ms(e.commit_ts),
        "ts_us": e.commit_ts.saturating_add(PG_EPOCH_UNIX_MICROS),
        "snapshot": e.snapshot.as_str(),
        "db": o.db,
        "schema": e.schema,
        "table": e.table,
        "txId": e.xid,
        "lsn": e.pos.lsn.0,
        "commit_lsn": e.pos.lsn.to_string(),
        "seq": e.pos.seq,
        "xmin": null,
    })
}

fn transaction(e: &Event<'_>) -> Value {
    json!({
        "id": tx_id(e.xid, e.pos.lsn),
        "total_order": e.order,
        "data_collection_order": e.table_order,
    })
}

fn raw(s: Option<&str>) -> Option<&RawValue> {
    s.and_then(|s| serde_json::from_str::<&RawValue>(s).ok())
}

fn headers(o: &Origin, e: &Event<'_>) -> Vec<(&'static str, String)> {
    let mut h = vec![
        (MSG_ID, o.message_id(e.pos)),
        (OP, e.op.code().to_string()),
        (TX_ID, tx_id(e.xid, e.pos.lsn)),
        (TX_ORDER, e.order.to_string()),
    ];
    if !e.json_nulls.is_empty() {
        h.push((
            JSON_NULLS,
            serde_json::to_string(e.json_nulls).unwrap_or_default(),
        ));
    }
    h
}

fn message(o: &Origin, e: &Event<'_>, subject: String, payload: Value) -> Message {
    Message {
        subject,
        pos: e.pos,
        tx: tx_id(e.xid, e.pos.lsn),
        order: e.order,
        headers: headers(o, e),
        payload: serde_json::to_vec(&payload).unwrap_or_default(),
    }
}

/// The Debezium op of a journal op (row changes only).
pub fn debezium_op(op: Op) -> Option<&'static str> {
    Some(match op {
        Op::Snapshot => "r",
        Op::Insert => "c",
        Op::Update => "u",
        Op::Delete => "d",
        Op::Truncate => "t",
        Op::Schema | Op::Backfill => return None,
    })
}

/// A row envelope. The images are embedded as the journal wrote them (`RawValue`): a
/// numeric's digits, a json column's text are carried exactly, never through a float.
#[derive(serde::Serialize)]
struct RowEnvelope<'a> {
    before: Option<&'a RawValue>,
    after: Option<&'a RawValue>,
    source: Value,
    op: &'a str,
    ts_ms: i64,
    transaction: Value,
}

/// The message of a row change or a truncate (`after`, for a truncate: its options as the
/// journal keeps them, `{"cascade":…,"restart_identity":…}`, carried in `source.truncate`).
pub fn row_message(o: &Origin, e: &Event<'_>) -> Message {
    let op = debezium_op(e.op).unwrap_or("r");
    let mut src = source(o, e);
    let (before, after) = if e.op == Op::Truncate {
        if let Some(opts) = e.after.and_then(|a| serde_json::from_str::<Value>(a).ok()) {
            src["truncate"] = opts;
        }
        (None, None)
    } else {
        (raw(e.before), raw(e.after))
    };
    let envelope = RowEnvelope {
        before,
        after,
        source: src,
        op,
        ts_ms: now_ms(),
        transaction: transaction(e),
    };
    Message {
        subject: o.table_subject(e.schema, e.table),
        pos: e.pos,
        tx: tx_id(e.xid, e.pos.lsn),
        order: e.order,
        headers: headers(o, e),
        payload: serde_json::to_vec(&envelope).unwrap_or_default(),
    }
}

/// The message of a schema change: the table before and after (columns with their source
/// attnums and OLAP types, key, identity), the replica's steps, and whether the table is
/// copied again. `copy`: the first start's event before a table's copied rows (the replica is
/// made, emptied and filled by the rows that follow).
#[allow(clippy::too_many_arguments)]
pub fn schema_message(
    o: &Origin,
    e: &Event<'_>,
    before: Option<&SourceTable>,
    after: Value,
    steps: &[Step],
    backfill: Option<&str>,
    copy: bool,
) -> Message {
    let payload = json!({
        "op": "s",
        "ts_ms": now_ms(),
        "source": source(o, e),
        "table": after,
        "before": before.map(table_json),
        "steps": steps,
        "backfill": backfill,
        "copy": copy,
        "transaction": transaction(e),
    });
    message(o, e, o.schema_subject(), payload)
}

/// A backfill chunk's range, as `cdc_backfill_chunks` holds it.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ChunkMeta {
    pub lo: Option<Vec<String>>,
    pub hi: Option<Vec<String>>,
    pub snapshot: String,
    pub from_lsn: String,
    pub rows: i64,
}

/// The message of a backfill chunk's merge point; `chunk` is None when no chunk was waiting
/// (an attempt given up): nothing is merged and no rows follow.
pub fn backfill_message(o: &Origin, b: &BackfillMark, chunk: Option<&ChunkMeta>) -> Message {
    let e = Event {
        pos: b.pos,
        xid: b.xid,
        commit_ts: b.commit_ts,
        schema: &b.table.schema,
        table: &b.table.name,
        op: Op::Backfill,
        before: None,
        after: None,
        json_nulls: &[],
        snapshot: Snapshot::Incremental,
        order: b.order,
        table_order: b.table_order,
    };
    let payload = json!({
        "op": "b",
        "ts_ms": now_ms(),
        "source": source(o, &e),
        "backfill": {"id": b.backfill_id, "attempt": b.attempt},
        "chunk": chunk,
        "transaction": transaction(&e),
    });
    message(o, &e, o.backfill_subject(), payload)
}

/// Counts of the transaction being encoded: its place and each table's.
#[derive(Default)]
struct TxCounts {
    tx: Option<(Lsn, u32)>,
    tables: HashMap<(Arc<str>, Arc<str>), i64>,
}

impl TxCounts {
    fn next(&mut self, c: &Change) -> (i64, i64) {
        if self.tx != Some((c.pos.lsn, c.xid)) {
            self.tx = Some((c.pos.lsn, c.xid));
            self.tables.clear();
        }
        let t = c.table();
        let n = self
            .tables
            .entry((t.schema.clone(), t.name.clone()))
            .or_default();
        *n += 1;
        (order_of(c.pos.seq), *n)
    }
}

/// A change's place in its transaction: its `seq` (each change of a streamed transaction is
/// one message), counted from the first copy `seq` for the first start's copy.
pub fn order_of(seq: i32) -> i64 {
    if seq < 0 {
        i64::from(seq) - i64::from(FIRST_COPY_SEQ) + 1
    } else {
        i64::from(seq)
    }
}

/// Encodes streamed changes for the publisher (in the reader task, while the previous batch
/// is applied).
pub struct Encoder {
    origin: Origin,
    counts: TxCounts,
}

impl Encoder {
    pub fn new(origin: Origin) -> Self {
        Self {
            origin,
            counts: TxCounts::default(),
        }
    }

    pub fn encode(&mut self, changes: &[Change]) -> Part {
        let mut items = Vec::with_capacity(changes.len());
        for (i, c) in changes.iter().enumerate() {
            let (order, table_order) = self.counts.next(c);
            items.push(self.item(c, order, table_order, changes.get(i + 1)));
        }
        Part { items }
    }

    fn item(&self, c: &Change, order: i64, table_order: i64, next: Option<&Change>) -> Item {
        let t = c.table();
        let mut e = Event {
            pos: c.pos,
            xid: c.xid,
            commit_ts: c.commit_ts,
            schema: &t.schema,
            table: &t.name,
            op: c.op(),
            before: None,
            after: None,
            json_nulls: &[],
            snapshot: Snapshot::No,
            order,
            table_order,
        };
        match &c.body {
            Body::Row(r) => {
                let mut nulls = Vec::new();
                let mut render = |tuple: Option<&crate::decode::TupleData>| {
                    tuple.map(|t| {
                        let mut out = Vec::new();
                        image::write(&mut out, &r.table, t, None, &mut nulls);
                        String::from_utf8(out).unwrap_or_default()
                    })
                };
                // As the journal has it: an insert that moved a row from another key carries
                // the old key (or row) as `before`.
                let before = match r.op {
                    Op::Update | Op::Delete | Op::Insert => render(r.old.as_ref()),
                    _ => None,
                };
                let after = match r.op {
                    Op::Delete => None,
                    _ => render(r.new.as_ref()),
                };
                let names: Vec<String> = nulls
                    .iter()
                    .map(|&i| r.table.columns[i].name.clone())
                    .collect();
                e.before = before.as_deref();
                e.after = after.as_deref();
                e.json_nulls = &names;
                if r.op == Op::Snapshot {
                    e.snapshot = Snapshot::Initial;
                }
                let mut m = row_message(&self.origin, &e);
                // The two halves of an UPDATE that moved its row to another key: the insert
                // carries the old row's image (`old`), for TOAST values it did not resend.
                let moved = match r.op {
                    Op::Insert => r.old.is_some(),
                    Op::Delete => next.is_some_and(|n| {
                        n.pos.lsn == c.pos.lsn
                            && n.pos.seq == c.pos.seq + 1
                            && matches!(&n.body, Body::Row(nr) if nr.op == Op::Insert && nr.old.is_some())
                    }),
                    _ => false,
                };
                if moved {
                    m.headers.push((KEY_MOVED, "true".into()));
                }
                Item::Ready(m)
            }
            Body::Truncate {
                cascade,
                restart_identity,
                ..
            } => {
                let opts =
                    format!("{{\"cascade\":{cascade},\"restart_identity\":{restart_identity}}}");
                e.after = Some(&opts);
                Item::Ready(row_message(&self.origin, &e))
            }
            Body::Schema(s) => Item::Ready(schema_message(
                &self.origin,
                &e,
                s.before.as_deref(),
                table_json(&s.after),
                &s.steps,
                s.backfill.as_deref(),
                false,
            )),
            Body::Backfill(m) => Item::Backfill(BackfillMark {
                pos: c.pos,
                xid: c.xid,
                commit_ts: c.commit_ts,
                table: m.table.clone(),
                backfill_id: m.backfill_id,
                attempt: m.attempt.clone(),
                order,
                table_order,
            }),
        }
    }
}

/// The message of a journal row read back from OLAP: the first start's copy (a schema event
/// per table, then its rows) and a backfill chunk's rows. `table_order` counts the table's
/// messages in the transaction.
pub fn journal_message(o: &Origin, row: &JournalRow, table_order: i64) -> Option<Message> {
    let snapshot = if row.xid == 0 {
        Snapshot::Initial
    } else {
        Snapshot::Incremental
    };
    let e = Event {
        pos: row.pos,
        xid: row.xid,
        commit_ts: row.commit_ts,
        schema: &row.schema,
        table: &row.table,
        op: row.op,
        before: row.before.as_deref(),
        after: row.after.as_deref(),
        json_nulls: &row.json_nulls,
        snapshot: if row.op == Op::Snapshot {
            snapshot
        } else {
            Snapshot::No
        },
        order: order_of(row.pos.seq),
        table_order,
    };
    match row.op {
        Op::Schema => {
            let doc: Value = serde_json::from_str(row.after.as_deref()?).ok()?;
            let copy = row.xid == 0 && row.pos.seq < 0;
            let steps = if copy {
                vec![Step::CreateTable, Step::SetKey]
            } else {
                Vec::new()
            };
            Some(schema_message(
                o,
                &e,
                None,
                doc.get("table").cloned().unwrap_or(Value::Null),
                &steps,
                doc.get("backfill").and_then(|b| b.as_str()),
                copy,
            ))
        }
        Op::Backfill => None,
        _ => Some(row_message(o, &e)),
    }
}

/// A message read back: the journal row it carries, and what else the loader needs.
#[derive(Clone, Debug, PartialEq)]
pub enum Decoded {
    Row {
        row: JournalRow,
        key_moved: bool,
    },
    Schema {
        pos: Pos,
        xid: u32,
        commit_ts: i64,
        after: SourceTable,
        before: Option<SourceTable>,
        steps: Vec<Step>,
        backfill: Option<String>,
        copy: bool,
    },
    Backfill {
        pos: Pos,
        xid: u32,
        commit_ts: i64,
        schema: String,
        table: String,
        backfill_id: i64,
        attempt: String,
        chunk: Option<ChunkMeta>,
    },
}

/// Where a message sits in its transaction (from its headers).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TxPlace {
    pub id: String,
    pub order: i64,
    /// Set on the transaction's last message: how many it has.
    pub last: Option<i64>,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum EnvelopeError {
    #[error("a message without a valid {MSG_ID} header")]
    NoId,
    #[error("message {id}: {what}")]
    Malformed { id: String, what: String },
}

/// Reads a message back (`headers` as name → value).
pub fn decode(
    headers: &dyn Fn(&str) -> Option<String>,
    payload: &[u8],
) -> Result<(String, TxPlace, Decoded), EnvelopeError> {
    let id = headers(MSG_ID).ok_or(EnvelopeError::NoId)?;
    let (slot, pos) = parse_message_id(None, &id).ok_or(EnvelopeError::NoId)?;
    let bad = |what: &str| EnvelopeError::Malformed {
        id: id.clone(),
        what: what.to_owned(),
    };
    let place = TxPlace {
        id: headers(TX_ID).ok_or_else(|| bad("no transaction id"))?,
        order: headers(TX_ORDER)
            .and_then(|o| o.parse().ok())
            .ok_or_else(|| bad("no transaction order"))?,
        last: match headers(TX_LAST).as_deref() {
            Some("true") => Some(
                headers(TX_EVENTS)
                    .and_then(|n| n.parse().ok())
                    .ok_or_else(|| bad("a last message without its count"))?,
            ),
            _ => None,
        },
    };
    #[derive(serde::Deserialize)]
    struct Env<'a> {
        op: String,
        #[serde(borrow, default)]
        before: Option<&'a RawValue>,
        #[serde(borrow, default)]
        after: Option<&'a RawValue>,
        source: Value,
        #[serde(default)]
        table: Option<Value>,
        #[serde(default)]
        steps: Vec<Step>,
        #[serde(default)]
        backfill: Option<Value>,
        #[serde(default)]
        copy: bool,
        #[serde(default)]
        chunk: Option<ChunkMeta>,
    }
    let env: Env<'_> = serde_json::from_slice(payload).map_err(|e| bad(&format!("{e}")))?;
    let src = &env.source;
    let xid = src["txId"].as_u64().unwrap_or(0) as u32;
    let commit_ts = src["ts_us"]
        .as_i64()
        .ok_or_else(|| bad("source.ts_us"))?
        .saturating_sub(PG_EPOCH_UNIX_MICROS);
    let schema = src["schema"].as_str().unwrap_or_default().to_owned();
    let table = src["table"].as_str().unwrap_or_default().to_owned();
    let not_null = |v: Option<&RawValue>| v.map(|r| r.get().to_owned()).filter(|s| s != "null");
    let decoded = match env.op.as_str() {
        "s" => {
            let after = crate::sink::olap::journal::table_from_json(
                &json!({"table": env.table.unwrap_or(Value::Null)}),
            )
            .ok_or_else(|| bad("a schema event without its table"))?;
            let before = env
                .before
                .and_then(|b| serde_json::from_str::<Value>(b.get()).ok())
                .filter(|b| !b.is_null())
                .and_then(|b| crate::sink::olap::journal::table_from_json(&json!({"table": b})));
            Decoded::Schema {
                pos,
                xid,
                commit_ts,
                after,
                before,
                steps: env.steps,
                backfill: env.backfill.and_then(|b| b.as_str().map(str::to_owned)),
                copy: env.copy,
            }
        }
        "b" => {
            let b = env
                .backfill
                .ok_or_else(|| bad("a backfill event without its id"))?;
            Decoded::Backfill {
                pos,
                xid,
                commit_ts,
                schema,
                table,
                backfill_id: b["id"].as_i64().ok_or_else(|| bad("backfill id"))?,
                attempt: b["attempt"].as_str().unwrap_or_default().to_owned(),
                chunk: env.chunk,
            }
        }
        op => {
            let op = match op {
                "r" => Op::Snapshot,
                "c" => Op::Insert,
                "u" => Op::Update,
                "d" => Op::Delete,
                "t" => Op::Truncate,
                _ => return Err(bad("an unknown op")),
            };
            let after = if op == Op::Truncate {
                src.get("truncate").map(|t| t.to_string())
            } else {
                not_null(env.after)
            };
            let json_nulls = headers(JSON_NULLS)
                .and_then(|n| serde_json::from_str(&n).ok())
                .unwrap_or_default();
            Decoded::Row {
                row: JournalRow {
                    pos,
                    xid,
                    commit_ts,
                    schema,
                    table,
                    op,
                    key: None,
                    before: not_null(env.before),
                    after,
                    json_nulls,
                },
                key_moved: headers(KEY_MOVED).as_deref() == Some("true"),
            }
        }
    };
    Ok((slot, place, decoded))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::change::{RowChange, SchemaChange, TxContext};
    use crate::decode::{TupleData, TupleValue};
    use crate::table::fixtures;
    use bytes::Bytes;

    fn text(s: &str) -> TupleValue {
        TupleValue::Text(Bytes::copy_from_slice(s.as_bytes()))
    }

    fn origin() -> Origin {
        Origin {
            prefix: "brewlytics".into(),
            slot: "brewlytics".into(),
            db: "coffee_oltp".into(),
        }
    }

    fn ctx() -> TxContext {
        TxContext {
            lsn: Lsn(0x16_B374_D848),
            xid: 771,
            // 2024-03-05T12:34:56.789Z
            commit_ts: 762_957_296_789_000,
        }
    }

    fn headers_of(m: &Message) -> impl Fn(&str) -> Option<String> + '_ {
        move |n| m.header(n).map(str::to_owned)
    }

    #[test]
    fn subjects_ids_and_tokens() {
        let o = origin();
        assert_eq!(
            o.table_subject("public", "orders"),
            "brewlytics.public.orders"
        );
        assert_eq!(
            o.table_subject("my.schema", "a b*>"),
            "brewlytics.my_schema.a_b__"
        );
        assert_eq!(token(""), "_");
        let id = o.message_id(Pos {
            lsn: Lsn(0x16_B374_D848),
            seq: -2147483647,
        });
        assert_eq!(id, "brewlytics:16/B374D848:-2147483647");
        assert_eq!(
            parse_message_id(Some("brewlytics"), &id).map(|p| p.1.seq),
            Some(-2147483647)
        );
        assert_eq!(parse_message_id(Some("other"), &id), None);
        assert_eq!(
            parse_message_id(None, "a:b:c:1/0:3").map(|p| p.0),
            Some("a:b:c".into())
        );
    }

    #[test]
    fn update_envelope_field_by_field_and_back() {
        let t = Arc::new(fixtures::products());
        let mut full = (*t).clone();
        full.identity = crate::decode::ReplicaIdentity::Full;
        let t = Arc::new(full);
        let old = TupleData {
            columns: vec![
                text("3"),
                text("Mocha"),
                text("3.50"),
                text("x"),
                text("null"),
            ],
        };
        let mut new = old.clone();
        new.columns[2] = text("3.80");
        new.columns[3] = TupleValue::UnchangedToast;
        let c = Change::new(
            ctx(),
            2,
            Body::Row(RowChange {
                table: t.clone(),
                op: Op::Update,
                old: Some(old),
                new: Some(new),
            }),
        );
        let first = Change::new(
            ctx(),
            1,
            Body::Row(RowChange {
                table: t.clone(),
                op: Op::Insert,
                old: None,
                new: Some(TupleData {
                    columns: vec![
                        text("4"),
                        text("Latte"),
                        text("3"),
                        text("y"),
                        TupleValue::Null,
                    ],
                }),
            }),
        );
        let part = Encoder::new(origin()).encode(&[first, c]);
        let Item::Ready(m) = &part.items[1] else {
            panic!("a row is ready")
        };
        assert_eq!(m.subject, "brewlytics.public.products");
        assert_eq!(m.header(MSG_ID), Some("brewlytics:16/B374D848:2"));
        assert_eq!(m.header(TX_ID), Some("771:97500059720"));
        assert_eq!(m.header(TX_ORDER), Some("2"));
        assert_eq!(m.header(JSON_NULLS), Some(r#"["tags"]"#));
        let v: Value = serde_json::from_slice(&m.payload).unwrap();
        assert_eq!(v["op"], "u");
        assert_eq!(v["before"]["price"], json!(3.50));
        assert_eq!(v["after"]["price"], json!(3.80));
        let payload_text = String::from_utf8(m.payload.clone()).unwrap();
        assert!(
            payload_text.contains(r#""after":{"id":3,"name":"Mocha","price":3.80,"tags":null}"#),
            "images are embedded exactly: {payload_text}"
        );
        assert_eq!(v["after"]["name"], "Mocha");
        assert!(
            v["after"].get("description").is_none(),
            "unchanged TOAST is left out"
        );
        assert_eq!(v["after"]["tags"], Value::Null);
        let s = &v["source"];
        assert_eq!(s["connector"], "brewlytics");
        assert_eq!(s["name"], "brewlytics");
        assert_eq!(s["db"], "coffee_oltp");
        assert_eq!(s["schema"], "public");
        assert_eq!(s["table"], "products");
        assert_eq!(s["txId"], 771);
        assert_eq!(s["lsn"], 0x16_B374_D848u64);
        assert_eq!(s["ts_ms"], 1_709_642_096_789i64);
        assert_eq!(s["snapshot"], "false");
        assert_eq!(v["transaction"]["id"], "771:97500059720");
        assert_eq!(v["transaction"]["total_order"], 2);
        assert_eq!(v["transaction"]["data_collection_order"], 2);
        assert!(v["ts_ms"].as_i64().unwrap() > 1_709_642_096_789);

        let mut last = m.clone();
        last.finish();
        let (slot, place, d) = decode(&headers_of(&last), &last.payload).unwrap();
        assert_eq!(slot, "brewlytics");
        assert_eq!(place.last, Some(2));
        let Decoded::Row { row, key_moved } = d else {
            panic!("a row")
        };
        assert!(!key_moved);
        assert_eq!(row.pos.seq, 2);
        assert_eq!(row.commit_ts, ctx().commit_ts);
        assert_eq!(row.op, Op::Update);
        assert_eq!(row.json_nulls, vec!["tags".to_string()]);
        let back = row.to_change(&t, &HashMap::new()).unwrap().unwrap();
        let Body::Row(r) = back.body else { panic!() };
        assert_eq!(r.new.unwrap().columns[3], TupleValue::UnchangedToast);
        assert_eq!(r.old.unwrap().columns[4], text("null"));
    }

    #[test]
    fn truncate_schema_and_backfill_messages() {
        let t = Arc::new(fixtures::products());
        let o = origin();
        let changes = [
            Change::new(
                ctx(),
                1,
                Body::Schema(Arc::new(SchemaChange {
                    before: Some(t.clone()),
                    after: t.clone(),
                    steps: vec![Step::RenameColumn {
                        from: "title".into(),
                        to: "name".into(),
                    }],
                    backfill: Some("a type changed".into()),
                })),
            ),
            Change::new(
                ctx(),
                2,
                Body::Truncate {
                    table: t.clone(),
                    cascade: true,
                    restart_identity: false,
                },
            ),
            Change::new(
                ctx(),
                3,
                Body::Backfill(Arc::new(crate::change::ChunkMerge {
                    table: t.clone(),
                    backfill_id: 7,
                    attempt: "a-1".into(),
                })),
            ),
        ];
        let part = Encoder::new(o.clone()).encode(&changes);
        let Item::Ready(s) = &part.items[0] else {
            panic!()
        };
        assert_eq!(s.subject, "brewlytics.schema");
        let (_, _, d) = decode(&headers_of(s), &s.payload).unwrap();
        let Decoded::Schema {
            after,
            before,
            steps,
            backfill,
            copy,
            ..
        } = d
        else {
            panic!()
        };
        assert_eq!(after, *t);
        assert_eq!(before.as_ref(), Some(&*t));
        assert_eq!(steps.len(), 1);
        assert_eq!(backfill.as_deref(), Some("a type changed"));
        assert!(!copy);

        let Item::Ready(tr) = &part.items[1] else {
            panic!()
        };
        let v: Value = serde_json::from_slice(&tr.payload).unwrap();
        assert_eq!(
            (
                v["op"].as_str(),
                v["before"].is_null(),
                v["after"].is_null()
            ),
            (Some("t"), true, true)
        );
        assert_eq!(v["source"]["truncate"]["cascade"], true);
        let (_, _, d) = decode(&headers_of(tr), &tr.payload).unwrap();
        let Decoded::Row { row, .. } = d else {
            panic!()
        };
        let back = row.to_change(&t, &HashMap::new()).unwrap().unwrap();
        assert!(matches!(
            back.body,
            Body::Truncate {
                cascade: true,
                restart_identity: false,
                ..
            }
        ));

        let Item::Backfill(b) = &part.items[2] else {
            panic!()
        };
        let meta = ChunkMeta {
            lo: None,
            hi: Some(vec!["200".into()]),
            snapshot: "10:12:".into(),
            from_lsn: "0/1000".into(),
            rows: 200,
        };
        let m = backfill_message(&o, b, Some(&meta));
        assert_eq!(m.subject, "brewlytics.backfill");
        assert_eq!(m.header(TX_ORDER), Some("3"));
        let (_, _, d) = decode(&headers_of(&m), &m.payload).unwrap();
        assert_eq!(
            d,
            Decoded::Backfill {
                pos: b.pos,
                xid: 771,
                commit_ts: ctx().commit_ts,
                schema: "public".into(),
                table: "products".into(),
                backfill_id: 7,
                attempt: "a-1".into(),
                chunk: Some(meta),
            }
        );
    }

    #[test]
    fn a_key_move_marks_both_halves_and_copies_count_from_one() {
        let t = Arc::new(fixtures::products());
        let row = |id: &str| TupleData {
            columns: vec![
                text(id),
                text("n"),
                text("1"),
                TupleValue::Null,
                TupleValue::Null,
            ],
        };
        let del = Change::new(
            ctx(),
            4,
            Body::Row(RowChange {
                table: t.clone(),
                op: Op::Delete,
                old: Some(row("1")),
                new: None,
            }),
        );
        let ins = Change::new(
            ctx(),
            5,
            Body::Row(RowChange {
                table: t.clone(),
                op: Op::Insert,
                old: Some(row("1")),
                new: Some(row("2")),
            }),
        );
        let part = Encoder::new(origin()).encode(&[del, ins]);
        for item in &part.items {
            let Item::Ready(m) = item else { panic!() };
            assert_eq!(m.header(KEY_MOVED), Some("true"));
        }
        assert_eq!(order_of(FIRST_COPY_SEQ), 1);
        assert_eq!(order_of(FIRST_COPY_SEQ + 9), 10);
        assert_eq!(order_of(3), 3);
    }
}
