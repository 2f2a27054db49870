//! Encoding of pgoutput messages: the exact inverse of [`decode`](super::decode).
//!
//! The replicator never sends these; tests, the fuzz target and benchmarks use them to build
//! streams. `decode(&encode(m)?) == m` for every message `encode` accepts.

use bytes::{BufMut, Bytes, BytesMut};

use super::relation::COLUMN_FLAG_KEY;
use super::transaction::MESSAGE_FLAG_TRANSACTIONAL;
use super::tuple::{OldTuple, TupleData, TupleValue, NEW_TUPLE_TAG};
use super::PgOutputMessage;

/// A message that cannot be represented on the wire.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    /// A string contains a NUL byte, which would end it early on the wire.
    #[error("{field} contains a NUL byte")]
    InteriorNul { field: &'static str },
    /// More columns than an Int16 count can hold.
    #[error("{0} columns exceed the Int16 column count")]
    TooManyColumns(usize),
    /// More relations than a UInt32 count can hold.
    #[error("{0} relations exceed the UInt32 relation count")]
    TooManyRelations(usize),
    /// A value longer than an Int32 length can hold.
    #[error("a value of {0} bytes exceeds the Int32 length")]
    TooLong(usize),
}

type Result<T> = std::result::Result<T, EncodeError>;

/// Encodes `message` into a new buffer.
pub fn encode(message: &PgOutputMessage) -> Result<Bytes> {
    let mut out = BytesMut::new();
    encode_into(message, &mut out)?;
    Ok(out.freeze())
}

/// Appends `message` to `out`; on error `out` is left as it was.
pub fn encode_into(message: &PgOutputMessage, out: &mut BytesMut) -> Result<()> {
    let start = out.len();
    let result = write_message(message, out);
    if result.is_err() {
        out.truncate(start);
    }
    result
}

fn write_message(message: &PgOutputMessage, out: &mut BytesMut) -> Result<()> {
    out.put_u8(message.tag());
    match message {
        PgOutputMessage::Begin(body) => {
            out.put_u64(body.final_lsn.0);
            out.put_i64(body.commit_ts);
            out.put_u32(body.xid);
        }
        PgOutputMessage::Commit(body) => {
            out.put_u8(body.flags);
            out.put_u64(body.commit_lsn.0);
            out.put_u64(body.end_lsn.0);
            out.put_i64(body.commit_ts);
        }
        PgOutputMessage::Origin(body) => {
            out.put_u64(body.commit_lsn.0);
            put_cstr(out, &body.name, "origin name")?;
        }
        PgOutputMessage::Relation(body) => {
            out.put_u32(body.id);
            put_cstr(out, &body.namespace, "relation namespace")?;
            put_cstr(out, &body.name, "relation name")?;
            out.put_u8(body.replica_identity.as_byte());
            put_count_i16(out, body.columns.len())?;
            for column in &body.columns {
                out.put_u8(if column.is_key { COLUMN_FLAG_KEY } else { 0 });
                put_cstr(out, &column.name, "column name")?;
                out.put_u32(column.type_oid);
                out.put_i32(column.type_modifier);
            }
        }
        PgOutputMessage::Type(body) => {
            out.put_u32(body.id);
            put_cstr(out, &body.namespace, "type namespace")?;
            put_cstr(out, &body.name, "type name")?;
        }
        PgOutputMessage::Insert(body) => {
            out.put_u32(body.relation_id);
            out.put_u8(NEW_TUPLE_TAG);
            put_tuple(out, &body.new)?;
        }
        PgOutputMessage::Update(body) => {
            out.put_u32(body.relation_id);
            if let Some(old) = &body.old {
                put_old_tuple(out, old)?;
            }
            out.put_u8(NEW_TUPLE_TAG);
            put_tuple(out, &body.new)?;
        }
        PgOutputMessage::Delete(body) => {
            out.put_u32(body.relation_id);
            put_old_tuple(out, &body.old)?;
        }
        PgOutputMessage::Truncate(body) => {
            let count = u32::try_from(body.relation_ids.len())
                .map_err(|_| EncodeError::TooManyRelations(body.relation_ids.len()))?;
            out.put_u32(count);
            out.put_u8(body.options);
            for id in &body.relation_ids {
                out.put_u32(*id);
            }
        }
        PgOutputMessage::Message(body) => {
            out.put_u8(if body.transactional {
                MESSAGE_FLAG_TRANSACTIONAL
            } else {
                0
            });
            out.put_u64(body.lsn.0);
            put_cstr(out, &body.prefix, "message prefix")?;
            put_length_prefixed(out, &body.content)?;
        }
    }
    Ok(())
}

fn put_cstr(out: &mut BytesMut, text: &str, field: &'static str) -> Result<()> {
    if text.as_bytes().contains(&0) {
        return Err(EncodeError::InteriorNul { field });
    }
    out.put_slice(text.as_bytes());
    out.put_u8(0);
    Ok(())
}

fn put_count_i16(out: &mut BytesMut, count: usize) -> Result<()> {
    let count = i16::try_from(count).map_err(|_| EncodeError::TooManyColumns(count))?;
    out.put_i16(count);
    Ok(())
}

fn put_length_prefixed(out: &mut BytesMut, data: &[u8]) -> Result<()> {
    let len = i32::try_from(data.len()).map_err(|_| EncodeError::TooLong(data.len()))?;
    out.put_i32(len);
    out.put_slice(data);
    Ok(())
}

fn put_old_tuple(out: &mut BytesMut, old: &OldTuple) -> Result<()> {
    out.put_u8(old.marker());
    put_tuple(out, old.tuple())
}

fn put_tuple(out: &mut BytesMut, tuple: &TupleData) -> Result<()> {
    put_count_i16(out, tuple.columns.len())?;
    for value in &tuple.columns {
        out.put_u8(value.kind());
        if let TupleValue::Text(data) | TupleValue::Binary(data) = value {
            put_length_prefixed(out, data)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::{decode, InsertBody, OriginBody, TruncateBody};
    use crate::lsn::Lsn;

    #[test]
    fn rejects_what_the_wire_cannot_carry() {
        let origin = PgOutputMessage::Origin(OriginBody {
            commit_lsn: Lsn(1),
            name: "a\0b".to_owned(),
        });
        let mut out = BytesMut::from(&b"keep"[..]);
        let err = encode_into(&origin, &mut out).unwrap_err();
        assert_eq!(
            err,
            EncodeError::InteriorNul {
                field: "origin name"
            }
        );
        assert_eq!(
            &out[..],
            b"keep",
            "a failed encode leaves the buffer as it was"
        );

        let wide = PgOutputMessage::Insert(InsertBody {
            relation_id: 1,
            new: TupleData {
                columns: vec![TupleValue::Null; 40_000],
            },
        });
        assert_eq!(encode(&wide), Err(EncodeError::TooManyColumns(40_000)));
    }

    #[test]
    fn appends_several_messages_to_one_buffer() {
        let truncate = PgOutputMessage::Truncate(TruncateBody {
            options: 0,
            relation_ids: vec![7],
        });
        let mut out = BytesMut::new();
        encode_into(&truncate, &mut out).unwrap();
        let first_len = out.len();
        encode_into(&truncate, &mut out).unwrap();
        assert_eq!(out.len(), 2 * first_len);
        let second = out.freeze().slice(first_len..);
        assert_eq!(decode(&second), Ok(truncate));
    }
}
