//! Reading the change stream's messages back (pure): the journal row, schema change or
//! backfill merge point a message carries, and its place in its transaction — what
//! `brewlytics load` rebuilds changes from.

use serde_json::value::RawValue;
use serde_json::{json, Value};

use super::envelope::{
    parse_message_id, ChunkMeta, JSON_NULLS, KEY_MOVED, MSG_ID, TX_EVENTS, TX_ID, TX_LAST, TX_ORDER,
};
use crate::change::{Op, Pos};
use crate::decode::PG_EPOCH_UNIX_MICROS;
use crate::schema::plan::Step;
use crate::sink::olap::journal::JournalRow;
use crate::table::SourceTable;

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
    use crate::change::FIRST_COPY_SEQ;
    use crate::change::{Body, Change, RowChange, SchemaChange, TxContext};
    use crate::decode::{TupleData, TupleValue};
    use crate::lsn::Lsn;
    use crate::sink::nats::envelope::*;
    use crate::table::fixtures;
    use bytes::Bytes;
    use std::collections::HashMap;
    use std::sync::Arc;

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
            scope: Some("(day >= '2026-02-01'::date)".into()),
            kept: None,
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
