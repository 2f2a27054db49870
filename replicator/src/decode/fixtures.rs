//! Hand-built wire bytes for every message type, decoded field by field.
//!
//! The bytes are written with [`Wire`] straight from the protocol documentation, not with the
//! encoder, so each test also checks that `encode` reproduces them exactly.

use bytes::Bytes;

use super::*;
use crate::lsn::Lsn;

/// A test-only big-endian byte writer, independent of the encoder under test.
pub(super) struct Wire(Vec<u8>);

impl Wire {
    pub(super) fn tag(tag: u8) -> Self {
        Wire(vec![tag])
    }
    pub(super) fn u8(mut self, value: u8) -> Self {
        self.0.push(value);
        self
    }
    pub(super) fn i16(mut self, value: i16) -> Self {
        self.0.extend_from_slice(&value.to_be_bytes());
        self
    }
    pub(super) fn i32(mut self, value: i32) -> Self {
        self.0.extend_from_slice(&value.to_be_bytes());
        self
    }
    pub(super) fn u32(mut self, value: u32) -> Self {
        self.0.extend_from_slice(&value.to_be_bytes());
        self
    }
    pub(super) fn i64(mut self, value: i64) -> Self {
        self.0.extend_from_slice(&value.to_be_bytes());
        self
    }
    pub(super) fn raw(mut self, bytes: &[u8]) -> Self {
        self.0.extend_from_slice(bytes);
        self
    }
    pub(super) fn cstr(self, text: &str) -> Self {
        self.raw(text.as_bytes()).u8(0)
    }
    /// A text column: kind `t`, Int32 length, the bytes.
    pub(super) fn text(self, value: &str) -> Self {
        self.u8(b't').i32(value.len() as i32).raw(value.as_bytes())
    }
    pub(super) fn build(self) -> Vec<u8> {
        self.0
    }
}

const COMMIT_TS: i64 = 762_957_296_789_012; // 2024-03-05T12:34:56.789012Z
const ORDERS: u32 = 16_397;

pub(super) fn begin() -> Vec<u8> {
    Wire::tag(b'B')
        .i64(0x16_B374_D848)
        .i64(COMMIT_TS)
        .u32(771)
        .build()
}

pub(super) fn commit() -> Vec<u8> {
    let wire = Wire::tag(b'C').u8(0).i64(0x16_B374_D848);
    wire.i64(0x16_B374_D878).i64(COMMIT_TS).build()
}

pub(super) fn origin() -> Vec<u8> {
    Wire::tag(b'O').i64(0x2_0000_0010).cstr("pg_16385").build()
}

#[rustfmt::skip]
pub(super) fn relation() -> Vec<u8> {
    Wire::tag(b'R').u32(ORDERS).cstr("public").cstr("orders").u8(b'd').i16(3)
        .u8(1).cstr("id").u32(2950).i32(-1)
        .u8(0).cstr("status").u32(1043).i32(24) // varchar(20)
        .u8(0).cstr("total").u32(1700).i32(655_366) // numeric(10,2)
        .build()
}

pub(super) fn type_message() -> Vec<u8> {
    Wire::tag(b'Y')
        .u32(16_390)
        .cstr("public")
        .cstr("order_status")
        .build()
}

#[rustfmt::skip]
pub(super) fn insert() -> Vec<u8> {
    Wire::tag(b'I').u32(ORDERS).u8(b'N').i16(4)
        .text("42").u8(b'n').u8(b'u').u8(b'b').i32(2).raw(&[0x00, 0xFF])
        .build()
}

#[rustfmt::skip]
pub(super) fn update_with_key() -> Vec<u8> {
    Wire::tag(b'U').u32(ORDERS)
        .u8(b'K').i16(3).text("41").u8(b'n').u8(b'n')
        .u8(b'N').i16(3).text("42").text("ready").u8(b'u')
        .build()
}

#[rustfmt::skip]
pub(super) fn update_with_full_old() -> Vec<u8> {
    Wire::tag(b'U').u32(ORDERS)
        .u8(b'O').i16(2).text("42").text("placed")
        .u8(b'N').i16(2).text("42").text("ready")
        .build()
}

pub(super) fn update_without_old() -> Vec<u8> {
    Wire::tag(b'U')
        .u32(ORDERS)
        .u8(b'N')
        .i16(2)
        .text("42")
        .text("")
        .build()
}

pub(super) fn delete() -> Vec<u8> {
    Wire::tag(b'D')
        .u32(ORDERS)
        .u8(b'K')
        .i16(2)
        .text("42")
        .u8(b'n')
        .build()
}

pub(super) fn truncate() -> Vec<u8> {
    Wire::tag(b'T')
        .u32(3)
        .u8(1)
        .u32(16_397)
        .u32(16_405)
        .u32(16_412)
        .build()
}

pub(super) fn message() -> Vec<u8> {
    Wire::tag(b'M')
        .u8(1)
        .i64(0x16_B374_D800)
        .cstr("brewlytics")
        .i32(5)
        .raw(b"hello")
        .build()
}

/// Every fixture with its name, for the table-driven tests.
pub(super) fn all() -> Vec<(&'static str, Vec<u8>)> {
    vec![
        ("begin", begin()),
        ("commit", commit()),
        ("origin", origin()),
        ("relation", relation()),
        ("type", type_message()),
        ("insert", insert()),
        ("update_with_key", update_with_key()),
        ("update_with_full_old", update_with_full_old()),
        ("update_without_old", update_without_old()),
        ("delete", delete()),
        ("truncate", truncate()),
        ("message", message()),
    ]
}

fn decoded(bytes: Vec<u8>) -> PgOutputMessage {
    let buf = Bytes::from(bytes);
    let message = decode(&buf).expect("fixture decodes");
    assert_eq!(
        encode(&message).expect("fixture encodes"),
        buf,
        "encode reproduces the bytes"
    );
    message
}

fn text(value: &'static str) -> TupleValue {
    TupleValue::Text(Bytes::from_static(value.as_bytes()))
}

#[test]
fn begin_fields() {
    let PgOutputMessage::Begin(body) = decoded(begin()) else {
        panic!("not Begin")
    };
    assert_eq!(body.final_lsn, "16/B374D848".parse().unwrap());
    assert_eq!(body.commit_ts, COMMIT_TS);
    assert_eq!(
        body.commit_time().unwrap().to_rfc3339(),
        "2024-03-05T12:34:56.789012+00:00"
    );
    assert_eq!(body.xid, 771);
}

#[test]
fn commit_fields() {
    let PgOutputMessage::Commit(body) = decoded(commit()) else {
        panic!("not Commit")
    };
    assert_eq!(body.flags, 0);
    assert_eq!(body.commit_lsn, Lsn(0x16_B374_D848));
    assert_eq!(body.end_lsn, Lsn(0x16_B374_D878));
    assert_eq!(body.commit_ts, COMMIT_TS);
    assert!(body.commit_time().is_some());
}

#[test]
fn origin_fields() {
    let message = decoded(origin());
    assert_eq!(message.tag(), ORIGIN_TAG);
    let expected = OriginBody {
        commit_lsn: Lsn(0x2_0000_0010),
        name: "pg_16385".to_owned(),
    };
    assert_eq!(message, PgOutputMessage::Origin(expected));
}

#[test]
fn relation_fields() {
    let PgOutputMessage::Relation(body) = decoded(relation()) else {
        panic!("not Relation")
    };
    assert_eq!(body.id, ORDERS);
    assert_eq!(body.namespace, "public");
    assert_eq!(body.name, "orders");
    assert_eq!(body.replica_identity, ReplicaIdentity::Default);
    let column = |is_key, name: &str, type_oid, type_modifier| RelationColumn {
        is_key,
        name: name.to_owned(),
        type_oid,
        type_modifier,
    };
    assert_eq!(
        body.columns,
        vec![
            column(true, "id", 2950, -1),
            column(false, "status", 1043, 24),
            column(false, "total", 1700, 655_366),
        ]
    );
}

#[test]
fn relation_identities_and_unknown_flag_bits() {
    for (byte, identity) in [
        (b'n', ReplicaIdentity::Nothing),
        (b'f', ReplicaIdentity::Full),
        (b'i', ReplicaIdentity::Index),
    ] {
        let bytes = Wire::tag(b'R')
            .u32(1)
            .cstr("s")
            .cstr("t")
            .u8(byte)
            .i16(1)
            .u8(0b11)
            .cstr("c")
            .u32(23)
            .i32(-1)
            .build();
        let Ok(PgOutputMessage::Relation(body)) = decode(&Bytes::from(bytes)) else {
            panic!("not Relation")
        };
        assert_eq!(body.replica_identity, identity);
        assert!(
            body.columns[0].is_key,
            "only bit 1 means key; other bits are ignored"
        );
    }
}

#[test]
fn type_fields() {
    let expected = TypeBody {
        id: 16_390,
        namespace: "public".into(),
        name: "order_status".into(),
    };
    assert_eq!(decoded(type_message()), PgOutputMessage::Type(expected));
}

#[test]
fn insert_fields_with_every_column_kind() {
    let buf = Bytes::from(insert());
    let PgOutputMessage::Insert(body) = decode(&buf).unwrap() else {
        panic!("not Insert")
    };
    assert_eq!(body.relation_id, ORDERS);
    assert_eq!(
        body.new.columns,
        vec![
            text("42"),
            TupleValue::Null,
            TupleValue::UnchangedToast,
            TupleValue::Binary(Bytes::from_static(&[0x00, 0xFF])),
        ]
    );
    // Values are slices of the input buffer, not copies.
    let value = body.new.columns[0].data().unwrap();
    assert_eq!(value.as_ptr(), buf[13..].as_ptr());
}

#[test]
fn update_with_old_key() {
    let PgOutputMessage::Update(body) = decoded(update_with_key()) else {
        panic!("not Update")
    };
    assert_eq!(body.relation_id, ORDERS);
    let old = TupleData {
        columns: vec![text("41"), TupleValue::Null, TupleValue::Null],
    };
    assert_eq!(body.old, Some(OldTuple::Key(old)));
    assert_eq!(
        body.new.columns,
        vec![text("42"), text("ready"), TupleValue::UnchangedToast]
    );
}

#[test]
fn update_with_old_full_row() {
    let PgOutputMessage::Update(body) = decoded(update_with_full_old()) else {
        panic!("not Update")
    };
    let old = TupleData {
        columns: vec![text("42"), text("placed")],
    };
    assert_eq!(body.old, Some(OldTuple::Full(old)));
    assert_eq!(body.new.columns, vec![text("42"), text("ready")]);
}

#[test]
fn update_without_old_tuple() {
    let PgOutputMessage::Update(body) = decoded(update_without_old()) else {
        panic!("not Update")
    };
    assert_eq!(body.relation_id, ORDERS);
    assert_eq!(body.old, None);
    assert_eq!(body.new.columns, vec![text("42"), text("")]);
}

#[test]
fn delete_fields() {
    let PgOutputMessage::Delete(body) = decoded(delete()) else {
        panic!("not Delete")
    };
    assert_eq!(body.relation_id, ORDERS);
    let old = TupleData {
        columns: vec![text("42"), TupleValue::Null],
    };
    assert_eq!(body.old, OldTuple::Key(old));
}

#[test]
fn truncate_of_three_relations_with_cascade() {
    let PgOutputMessage::Truncate(body) = decoded(truncate()) else {
        panic!("not Truncate")
    };
    assert_eq!(body.relation_ids, vec![16_397, 16_405, 16_412]);
    assert_eq!(body.options, TRUNCATE_CASCADE);
    assert!(body.cascade());
    assert!(!body.restart_identity());
    let both = TruncateBody {
        options: 3,
        relation_ids: vec![],
    };
    assert!(both.cascade() && both.restart_identity());
}

#[test]
fn logical_message_fields() {
    let buf = Bytes::from(message());
    let PgOutputMessage::Message(body) = decode(&buf).unwrap() else {
        panic!("not Message")
    };
    assert!(body.transactional);
    assert_eq!(body.lsn, Lsn(0x16_B374_D800));
    assert_eq!(body.prefix, "brewlytics");
    assert_eq!(&body.content[..], b"hello");
    assert_eq!(body.content.as_ptr(), buf[buf.len() - 5..].as_ptr());
    assert_eq!(encode(&PgOutputMessage::Message(body)).unwrap(), buf);
}

#[test]
fn non_transactional_message_with_empty_content() {
    let bytes = Wire::tag(b'M').u8(0).i64(9).cstr("").i32(0).build();
    let expected = MessageBody {
        transactional: false,
        lsn: Lsn(9),
        prefix: String::new(),
        content: Bytes::new(),
    };
    assert_eq!(decoded(bytes), PgOutputMessage::Message(expected));
}
