//! Messages captured from a real PostgreSQL 15 server (see the header of each file under
//! `testdata/` for the schema, workload and slot options that produced them).

use bytes::Bytes;

use super::*;
use crate::lsn::Lsn;

struct Captured {
    lsn: Lsn,
    xid: u32,
    bytes: Bytes,
    message: PgOutputMessage,
}

fn hex(text: &str) -> Vec<u8> {
    assert!(text.len().is_multiple_of(2), "odd hex length");
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).expect("hex digit"))
        .collect()
}

/// Decodes every `lsn|xid|hex` line and checks that encoding gives the same bytes back.
fn load(file: &str) -> Vec<Captured> {
    let lines = file
        .lines()
        .filter(|line| !line.is_empty() && !line.starts_with('#'));
    lines
        .map(|line| {
            let mut fields = line.split('|');
            let lsn = fields.next().unwrap().parse().unwrap();
            let xid = fields.next().unwrap().parse().unwrap();
            let bytes = Bytes::from(hex(fields.next().unwrap()));
            let message = decode(&bytes).unwrap_or_else(|err| panic!("{line}: {err}"));
            assert_eq!(encode(&message).unwrap(), bytes, "re-encoding {line}");
            Captured {
                lsn,
                xid,
                bytes,
                message,
            }
        })
        .collect()
}

fn text_stream() -> Vec<Captured> {
    load(include_str!("testdata/pg15_text.txt"))
}

fn tags(stream: &[Captured]) -> String {
    stream.iter().map(|m| char::from(m.message.tag())).collect()
}

fn text(value: &str) -> TupleValue {
    TupleValue::Text(Bytes::copy_from_slice(value.as_bytes()))
}

#[test]
fn text_stream_has_the_expected_message_sequence() {
    let stream = text_stream();
    assert_eq!(tags(&stream), "BRIIYRIIRICBUCBUCBUCMBMDDCBRICBRYRRTC");
    assert!(stream.iter().all(|m| m.bytes[0] == m.message.tag()));
}

#[test]
fn begin_and_commit_agree_with_the_server() {
    let stream = text_stream();
    let mut open: Option<BeginBody> = None;
    for captured in &stream {
        match &captured.message {
            PgOutputMessage::Begin(begin) => {
                assert_eq!(begin.xid, captured.xid);
                assert!(begin
                    .commit_time()
                    .is_some_and(|t| t.timestamp() > 1_600_000_000));
                open = Some(begin.clone());
            }
            PgOutputMessage::Commit(commit) => {
                let begin = open.take().expect("commit without begin");
                assert_eq!(commit.commit_lsn, begin.final_lsn);
                assert_eq!(commit.commit_ts, begin.commit_ts);
                assert_eq!(
                    commit.end_lsn, captured.lsn,
                    "end LSN is the commit row's LSN"
                );
                assert_eq!(commit.flags, 0);
            }
            _ => {}
        }
    }
    assert!(open.is_none());
}

#[test]
fn relations_types_and_schema_change() {
    let stream = text_stream();
    let mut cache = RelationCache::new();
    let mut changes = Vec::new();
    for captured in &stream {
        match &captured.message {
            PgOutputMessage::Relation(relation) => changes.push(cache.update(relation.clone())),
            PgOutputMessage::Type(ty) => {
                assert_eq!(
                    (ty.namespace.as_str(), ty.name.as_str()),
                    ("public", "order_status")
                );
            }
            _ => {}
        }
    }
    // customers, orders, payments; customers after ADD COLUMN; all three again at TRUNCATE.
    assert_eq!(changes, [false, false, false, true, false, false, false]);

    let PgOutputMessage::Type(ty) = &stream[4].message else {
        panic!("not Type")
    };
    let orders = cache.get(16_398).expect("orders relation");
    assert_eq!(
        (orders.namespace.as_str(), orders.name.as_str()),
        ("public", "orders")
    );
    assert_eq!(orders.replica_identity, ReplicaIdentity::Default);
    let columns: Vec<_> = orders
        .columns
        .iter()
        .map(|c| (c.is_key, c.name.as_str(), c.type_oid, c.type_modifier))
        .collect();
    assert_eq!(
        columns,
        [
            (true, "id", 23, -1),
            (false, "customer_id", 23, -1),
            (false, "status", ty.id, -1),
            (false, "total", 1700, (10 << 16 | 2) + 4),
            (false, "note", 25, -1),
            (false, "code", 1043, 8 + 4),
        ]
    );
    let customers = cache.get(16_391).expect("customers relation");
    let names: Vec<_> = customers.columns.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["id", "name", "email"]);
    let payments = cache.get(16_411).expect("payments relation");
    assert_eq!(payments.replica_identity, ReplicaIdentity::Full);
    assert!(
        payments.columns.iter().all(|c| c.is_key),
        "FULL marks every column as key"
    );
}

#[test]
fn row_changes_carry_toast_keys_and_full_rows() {
    let stream = text_stream();
    let PgOutputMessage::Insert(order) = &stream[6].message else {
        panic!("not Insert")
    };
    let note = "x".repeat(5000);
    assert_eq!(
        order.new.columns,
        [
            text("10"),
            text("1"),
            text("placed"),
            text("7.60"),
            text(&note),
            text("A1")
        ]
    );
    let PgOutputMessage::Insert(walk_in) = &stream[7].message else {
        panic!("not Insert")
    };
    assert_eq!(walk_in.new.columns[1], TupleValue::Null);

    let PgOutputMessage::Update(ready) = &stream[12].message else {
        panic!("not Update")
    };
    assert_eq!(ready.old, None);
    assert_eq!(ready.new.columns[2], text("ready"));
    assert_eq!(ready.new.columns[4], TupleValue::UnchangedToast);

    let PgOutputMessage::Update(rekey) = &stream[15].message else {
        panic!("not Update")
    };
    let Some(OldTuple::Key(old_key)) = &rekey.old else {
        panic!("no old key")
    };
    assert_eq!(old_key.columns[0], text("11"));
    assert!(old_key.columns[1..].iter().all(|v| *v == TupleValue::Null));
    assert_eq!(rekey.new.columns[0], text("12"));

    let PgOutputMessage::Update(amount) = &stream[18].message else {
        panic!("not Update")
    };
    let Some(OldTuple::Full(old_row)) = &amount.old else {
        panic!("no old row")
    };
    assert_eq!(old_row.columns, [text("1"), text("10"), text("7.60")]);
    assert_eq!(amount.new.columns, [text("1"), text("10"), text("8.00")]);

    let PgOutputMessage::Delete(payment) = &stream[23].message else {
        panic!("not Delete")
    };
    assert_eq!(
        payment.old,
        OldTuple::Full(TupleData {
            columns: vec![text("1"), text("10"), text("8.00")]
        })
    );
    let PgOutputMessage::Delete(gone) = &stream[24].message else {
        panic!("not Delete")
    };
    assert!(matches!(&gone.old, OldTuple::Key(key) if key.columns[0] == text("12")));
}

#[test]
fn messages_and_truncate() {
    let stream = text_stream();
    let PgOutputMessage::Message(hello) = &stream[20].message else {
        panic!("not Message")
    };
    assert!(!hello.transactional);
    assert_eq!(stream[20].xid, 0);
    assert_eq!(
        (hello.prefix.as_str(), &hello.content[..]),
        ("brewlytics", &b"hello"[..])
    );
    assert_eq!(hello.lsn, stream[20].lsn);
    let PgOutputMessage::Message(in_tx) = &stream[22].message else {
        panic!("not Message")
    };
    assert!(in_tx.transactional);
    assert_eq!(&in_tx.content[..], b"tx-msg");

    let PgOutputMessage::Truncate(truncate) = &stream[35].message else {
        panic!("not Truncate")
    };
    assert!(truncate.cascade() && truncate.restart_identity());
    assert_eq!(truncate.relation_ids, [16_391, 16_398, 16_411]);
}

#[test]
fn binary_stream_sends_binary_values() {
    let stream = load(include_str!("testdata/pg15_binary.txt"));
    assert_eq!(tags(&stream), "BRIIYRIIRICBUCBUCBUCBDDCBRICBRYRRTC");
    let PgOutputMessage::Insert(ada) = &stream[2].message else {
        panic!("not Insert")
    };
    assert_eq!(
        ada.new.columns,
        [
            TupleValue::Binary(Bytes::from_static(&[0, 0, 0, 1])),
            TupleValue::Binary(Bytes::from_static(b"Ada")),
        ]
    );
    let values = stream.iter().flat_map(|captured| match &captured.message {
        PgOutputMessage::Insert(body) => body.new.columns.clone(),
        PgOutputMessage::Update(body) => body.new.columns.clone(),
        _ => Vec::new(),
    });
    assert!(values
        .into_iter()
        .all(|v| !matches!(v, TupleValue::Text(_))));
}

#[test]
fn every_truncation_of_captured_messages_is_an_error() {
    for file in [
        include_str!("testdata/pg15_text.txt"),
        include_str!("testdata/pg15_binary.txt"),
    ] {
        for captured in load(file) {
            for len in 0..captured.bytes.len() {
                let prefix = captured.bytes.slice(..len);
                assert!(decode(&prefix).is_err(), "{} cut to {len}", captured.lsn);
            }
        }
    }
}
