//! pgoutput protocol version 2: large transactions streamed while they are in progress
//! (`streaming = on`).
//!
//! The source sends a transaction too large for its decoding memory
//! (`logical_decoding_work_mem`) in blocks before it commits: Stream Start (`S`, the
//! transaction's xid), its changes so far, Stream Stop (`E`); more blocks of it — or of other
//! transactions, interleaved — may follow, and finally Stream Commit (`c`) or Stream Abort
//! (`A`, with the xid of the subtransaction rolled back: the whole transaction when it equals
//! the xid). Inside a block, Relation, Type, Insert, Update, Delete, Truncate and Message carry
//! the xid of the (sub)transaction that made them, right after their tag; outside blocks
//! messages are as in version 1.
//!
//! [`decode_v2`] decodes one message given whether it is inside a block; [`StreamDecoder`]
//! keeps that state for a stream of messages and rejects what is out of place. Like the rest of
//! this module: no I/O, never panics, zero-copy.

use bytes::{BufMut, Bytes, BytesMut};
use chrono::{DateTime, Utc};

use super::encode::{encode_into, EncodeError};
use super::error::DecodeErrorKind;
use super::reader::{Reader, Result};
use super::timestamp::pg_timestamp_to_chrono;
use super::{read_body, PgOutputMessage};
use crate::lsn::Lsn;

pub const STREAM_START_TAG: u8 = b'S';
pub const STREAM_STOP_TAG: u8 = b'E';
pub const STREAM_COMMIT_TAG: u8 = b'c';
pub const STREAM_ABORT_TAG: u8 = b'A';

/// `S`: a block of transaction `xid`'s changes begins.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamStartBody {
    pub xid: u32,
    /// The transaction's first block.
    pub first_segment: bool,
}

/// `c`: a streamed transaction committed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamCommitBody {
    pub xid: u32,
    /// Unused by PostgreSQL 15 (always 0); kept as sent.
    pub flags: u8,
    /// The LSN of the commit record.
    pub commit_lsn: Lsn,
    /// The LSN just past the commit record.
    pub end_lsn: Lsn,
    /// Commit time, microseconds since 2000-01-01 UTC.
    pub commit_ts: i64,
}

impl StreamCommitBody {
    /// The commit time as an instant; `None` if outside chrono's range.
    pub fn commit_time(&self) -> Option<DateTime<Utc>> {
        pg_timestamp_to_chrono(self.commit_ts)
    }
}

/// `A`: a streamed transaction (`subxid == xid`) or one of its subtransactions rolled back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamAbortBody {
    pub xid: u32,
    pub subxid: u32,
}

impl StreamAbortBody {
    /// The whole transaction rolled back (not a subtransaction of it).
    pub fn is_toplevel(&self) -> bool {
        self.xid == self.subxid
    }
}

/// One message of protocol version 2.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StreamedMessage {
    /// Outside a stream block: a version 1 message.
    Plain(PgOutputMessage),
    StreamStart(StreamStartBody),
    StreamStop,
    StreamCommit(StreamCommitBody),
    StreamAbort(StreamAbortBody),
    /// Inside a stream block: a change or metadata message of (sub)transaction `xid`.
    InStream {
        xid: u32,
        message: PgOutputMessage,
    },
}

/// Whether `message` is one a stream block carries with an xid.
fn carries_xid(message: &PgOutputMessage) -> bool {
    matches!(
        message,
        PgOutputMessage::Relation(_)
            | PgOutputMessage::Type(_)
            | PgOutputMessage::Insert(_)
            | PgOutputMessage::Update(_)
            | PgOutputMessage::Delete(_)
            | PgOutputMessage::Truncate(_)
            | PgOutputMessage::Message(_)
    )
}

/// Decodes one complete version 2 message; `in_stream`: between a Stream Start and its Stream
/// Stop. Bytes left after it are an error, and so is a message out of place (Begin or Commit
/// inside a block; Stream Stop, Commit or Abort inside or outside where they cannot be).
pub fn decode_v2(buf: &Bytes, in_stream: bool) -> Result<StreamedMessage> {
    let mut reader = Reader::new(buf);
    let tag = reader.u8()?;
    let out_of_place =
        |reader: &Reader<'_>, what| Err(reader.error_at(0, DecodeErrorKind::OutOfPlace(what)));
    let message = match (tag, in_stream) {
        (STREAM_START_TAG, false) => StreamedMessage::StreamStart(StreamStartBody {
            xid: reader.u32()?,
            first_segment: reader.u8()? == 1,
        }),
        (STREAM_START_TAG, true) => {
            return out_of_place(&reader, "Stream Start inside a stream block")
        }
        (STREAM_STOP_TAG, true) => StreamedMessage::StreamStop,
        (STREAM_STOP_TAG, false) => {
            return out_of_place(&reader, "Stream Stop outside a stream block")
        }
        (STREAM_COMMIT_TAG, false) => StreamedMessage::StreamCommit(StreamCommitBody {
            xid: reader.u32()?,
            flags: reader.u8()?,
            commit_lsn: reader.lsn()?,
            end_lsn: reader.lsn()?,
            commit_ts: reader.i64()?,
        }),
        (STREAM_ABORT_TAG, false) => StreamedMessage::StreamAbort(StreamAbortBody {
            xid: reader.u32()?,
            subxid: reader.u32()?,
        }),
        (STREAM_COMMIT_TAG | STREAM_ABORT_TAG, true) => {
            return out_of_place(&reader, "Stream Commit or Abort inside a stream block")
        }
        (_, false) => StreamedMessage::Plain(read_body(&mut reader, tag)?),
        (super::BEGIN_TAG | super::COMMIT_TAG, true) => {
            return out_of_place(&reader, "Begin or Commit inside a stream block")
        }
        (super::ORIGIN_TAG, true) => StreamedMessage::Plain(read_body(&mut reader, tag)?),
        (_, true) => {
            let xid = reader.u32()?;
            StreamedMessage::InStream {
                xid,
                message: read_body(&mut reader, tag)?,
            }
        }
    };
    reader.finish()?;
    Ok(message)
}

/// Encodes a version 2 message: the inverse of [`decode_v2`].
pub fn encode_v2(message: &StreamedMessage) -> std::result::Result<Bytes, EncodeError> {
    let mut out = BytesMut::new();
    match message {
        StreamedMessage::Plain(m) => encode_into(m, &mut out)?,
        StreamedMessage::StreamStart(b) => {
            out.put_u8(STREAM_START_TAG);
            out.put_u32(b.xid);
            out.put_u8(u8::from(b.first_segment));
        }
        StreamedMessage::StreamStop => out.put_u8(STREAM_STOP_TAG),
        StreamedMessage::StreamCommit(b) => {
            out.put_u8(STREAM_COMMIT_TAG);
            out.put_u32(b.xid);
            out.put_u8(b.flags);
            out.put_u64(b.commit_lsn.0);
            out.put_u64(b.end_lsn.0);
            out.put_i64(b.commit_ts);
        }
        StreamedMessage::StreamAbort(b) => {
            out.put_u8(STREAM_ABORT_TAG);
            out.put_u32(b.xid);
            out.put_u32(b.subxid);
        }
        StreamedMessage::InStream { xid, message } => {
            let mut body = BytesMut::new();
            encode_into(message, &mut body)?;
            if carries_xid(message) {
                out.put_u8(body[0]);
                out.put_u32(*xid);
                out.put_slice(&body[1..]);
            } else {
                out.put_slice(&body);
            }
        }
    }
    Ok(out.freeze())
}

/// Decodes a stream of version 2 messages, knowing whether each is inside a stream block.
#[derive(Debug, Default)]
pub struct StreamDecoder {
    /// The xid of the open block.
    block: Option<u32>,
}

impl StreamDecoder {
    /// The transaction whose block is open.
    pub fn in_block(&self) -> Option<u32> {
        self.block
    }

    pub fn decode(&mut self, buf: &Bytes) -> Result<StreamedMessage> {
        let message = decode_v2(buf, self.block.is_some())?;
        match &message {
            StreamedMessage::StreamStart(s) => self.block = Some(s.xid),
            StreamedMessage::StreamStop => self.block = None,
            _ => {}
        }
        Ok(message)
    }

    /// The connection ended: a new one starts outside any block.
    pub fn reset(&mut self) {
        self.block = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::{InsertBody, MessageBody, TupleData, TupleValue};

    fn insert(rel: u32, text: &'static str) -> PgOutputMessage {
        PgOutputMessage::Insert(InsertBody {
            relation_id: rel,
            new: TupleData {
                columns: vec![TupleValue::Text(Bytes::from_static(text.as_bytes()))],
            },
        })
    }

    /// Bytes as PostgreSQL 15 sends them (`logicalrep_write_stream_start` and the rest),
    /// written out by hand from the protocol's documentation.
    fn wire() -> Vec<(Vec<u8>, bool, StreamedMessage)> {
        let mut start = vec![b'S'];
        start.extend(1234u32.to_be_bytes());
        start.push(1);
        let mut ins = vec![b'I'];
        ins.extend(1240u32.to_be_bytes()); // a subtransaction's xid
        ins.extend(16384u32.to_be_bytes());
        ins.push(b'N');
        ins.extend(1i16.to_be_bytes());
        ins.push(b't');
        ins.extend(2i32.to_be_bytes());
        ins.extend(b"42");
        let mut commit = vec![b'c'];
        commit.extend(1234u32.to_be_bytes());
        commit.push(0);
        commit.extend(0x0100_0028u64.to_be_bytes());
        commit.extend(0x0100_0058u64.to_be_bytes());
        commit.extend(7_000_000i64.to_be_bytes());
        let mut abort = vec![b'A'];
        abort.extend(1234u32.to_be_bytes());
        abort.extend(1240u32.to_be_bytes());
        vec![
            (
                start,
                false,
                StreamedMessage::StreamStart(StreamStartBody {
                    xid: 1234,
                    first_segment: true,
                }),
            ),
            (
                ins,
                true,
                StreamedMessage::InStream {
                    xid: 1240,
                    message: insert(16384, "42"),
                },
            ),
            (vec![b'E'], true, StreamedMessage::StreamStop),
            (
                abort,
                false,
                StreamedMessage::StreamAbort(StreamAbortBody {
                    xid: 1234,
                    subxid: 1240,
                }),
            ),
            (
                commit,
                false,
                StreamedMessage::StreamCommit(StreamCommitBody {
                    xid: 1234,
                    flags: 0,
                    commit_lsn: Lsn(0x0100_0028),
                    end_lsn: Lsn(0x0100_0058),
                    commit_ts: 7_000_000,
                }),
            ),
        ]
    }

    #[test]
    fn decodes_the_wire_form_and_encodes_it_back() {
        for (bytes, in_stream, expected) in wire() {
            let buf = Bytes::from(bytes.clone());
            assert_eq!(decode_v2(&buf, in_stream), Ok(expected.clone()));
            assert_eq!(&encode_v2(&expected).unwrap()[..], &bytes[..]);
        }
    }

    #[test]
    fn every_truncation_is_an_error() {
        for (bytes, in_stream, _) in wire() {
            let buf = Bytes::from(bytes);
            for len in 0..buf.len() {
                let err = decode_v2(&buf.slice(..len), in_stream).unwrap_err();
                assert!(err.offset <= len);
            }
            let mut longer = buf.to_vec();
            longer.push(0);
            assert!(matches!(
                decode_v2(&Bytes::from(longer), in_stream).unwrap_err().kind,
                DecodeErrorKind::TrailingBytes(1)
            ));
        }
    }

    #[test]
    fn messages_out_of_place_are_errors() {
        for (bytes, in_stream) in [
            (vec![b'E'], false),
            (vec![b'S', 0, 0, 0, 1, 1], true),
            (vec![b'A', 0, 0, 0, 1, 0, 0, 0, 1], true),
            (vec![b'B'; 21], true),
        ] {
            let err = decode_v2(&Bytes::from(bytes), in_stream).unwrap_err();
            assert!(matches!(err.kind, DecodeErrorKind::OutOfPlace(_)), "{err}");
        }
    }

    #[test]
    fn the_decoder_follows_blocks_of_interleaved_transactions() {
        let mut d = StreamDecoder::default();
        let msgs = [
            StreamedMessage::StreamStart(StreamStartBody {
                xid: 10,
                first_segment: true,
            }),
            StreamedMessage::InStream {
                xid: 10,
                message: insert(1, "a"),
            },
            StreamedMessage::StreamStop,
            StreamedMessage::StreamStart(StreamStartBody {
                xid: 11,
                first_segment: true,
            }),
            StreamedMessage::InStream {
                xid: 12,
                message: PgOutputMessage::Message(MessageBody {
                    transactional: true,
                    lsn: Lsn(5),
                    prefix: "p".into(),
                    content: Bytes::from_static(b"x"),
                }),
            },
            StreamedMessage::StreamStop,
            StreamedMessage::Plain(insert(1, "outside")),
            StreamedMessage::StreamAbort(StreamAbortBody {
                xid: 11,
                subxid: 11,
            }),
        ];
        for m in &msgs {
            let decoded = d.decode(&encode_v2(m).unwrap()).unwrap();
            assert_eq!(&decoded, m);
        }
        assert_eq!(d.in_block(), None);
        // An insert inside a block, read as if outside, is not the same message.
        let inside = encode_v2(&msgs[1]).unwrap();
        assert_ne!(decode_v2(&inside, false), Ok(msgs[1].clone()));
    }

    #[test]
    fn version_1_rejects_the_version_2_tags() {
        for (bytes, _, _) in wire() {
            if matches!(bytes[0], b'S' | b'E' | b'c' | b'A') {
                assert!(matches!(
                    crate::decode::decode(&Bytes::from(bytes)).unwrap_err().kind,
                    DecodeErrorKind::UnknownTag(_)
                ));
            }
        }
    }
}
