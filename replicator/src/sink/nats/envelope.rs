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

use crate::change::FIRST_COPY_SEQ;
use crate::change::{Body, Change, Op, Pos};
use crate::decode::pg_timestamp_to_chrono;
use crate::decode::PG_EPOCH_UNIX_MICROS;
use crate::image;
use crate::lsn::Lsn;
use crate::schema::plan::Step;
use crate::sink::olap::journal::{table_json, JournalRow};
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
    /// The rows the merge replaces beyond the key range (a partition's constraint), and
    /// those it leaves (detached partitions' rows kept): see `sink::olap::backfill::Within`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kept: Option<String>,
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

pub use super::read::{decode, Decoded, EnvelopeError, TxPlace};
