//! The CopyData payloads of the streaming replication protocol (PostgreSQL 15,
//! "Streaming Replication Protocol", `START_REPLICATION … LOGICAL`).
//!
//! The server sends XLogData (`w`, whose data is one pgoutput message) and primary keepalives
//! (`k`); the client answers with standby status updates (`r`). Hot standby feedback (`h`) is
//! for physical replication and not used here.

use bytes::{BufMut, Bytes, BytesMut};

use super::error::DecodeErrorKind;
use super::reader::Reader;
use super::DecodeError;
use crate::lsn::Lsn;

/// Server → client: a chunk of WAL, here one pgoutput message.
pub const XLOG_DATA_TAG: u8 = b'w';
/// Server → client: a heartbeat, possibly asking for an immediate status update.
pub const PRIMARY_KEEPALIVE_TAG: u8 = b'k';
/// Client → server: how far the client has written, flushed and applied.
pub const STANDBY_STATUS_UPDATE_TAG: u8 = b'r';

/// Length of a standby status update: tag, three LSNs, clock and the reply flag.
const STANDBY_STATUS_UPDATE_LEN: usize = 1 + 8 + 8 + 8 + 8 + 1;

/// A CopyData payload sent by the server during logical replication.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReplicationMessage {
    /// `w`.
    XLogData {
        /// The WAL position of the start of `data`.
        wal_start: Lsn,
        /// The current end of WAL on the server.
        wal_end: Lsn,
        /// The server's clock at transmission, microseconds since 2000-01-01 UTC.
        send_time: i64,
        /// One pgoutput message, for [`decode`](super::decode); a zero-copy slice.
        data: Bytes,
    },
    /// `k`.
    PrimaryKeepalive {
        /// The current end of WAL on the server.
        wal_end: Lsn,
        /// The server's clock at transmission, microseconds since 2000-01-01 UTC.
        send_time: i64,
        /// The server asks for a status update now, or it may time the client out.
        reply_requested: bool,
    },
}

impl ReplicationMessage {
    /// Parses one CopyData payload; unknown tags and trailing bytes are errors.
    pub fn parse(buf: &Bytes) -> Result<Self, DecodeError> {
        let mut reader = Reader::new(buf);
        let message = match reader.u8()? {
            XLOG_DATA_TAG => ReplicationMessage::XLogData {
                wal_start: reader.lsn()?,
                wal_end: reader.lsn()?,
                send_time: reader.i64()?,
                data: reader.rest(),
            },
            PRIMARY_KEEPALIVE_TAG => ReplicationMessage::PrimaryKeepalive {
                wal_end: reader.lsn()?,
                send_time: reader.i64()?,
                reply_requested: reader.u8()? != 0,
            },
            other => return Err(reader.error_at(0, DecodeErrorKind::UnknownTag(other))),
        };
        reader.finish()?;
        Ok(message)
    }

    /// The payload as the server would send it (for tests and benchmarks).
    pub fn encode(&self) -> Bytes {
        let mut out = BytesMut::new();
        match self {
            ReplicationMessage::XLogData {
                wal_start,
                wal_end,
                send_time,
                data,
            } => {
                out.reserve(25 + data.len());
                out.put_u8(XLOG_DATA_TAG);
                out.put_u64(wal_start.0);
                out.put_u64(wal_end.0);
                out.put_i64(*send_time);
                out.put_slice(data);
            }
            ReplicationMessage::PrimaryKeepalive {
                wal_end,
                send_time,
                reply_requested,
            } => {
                out.put_u8(PRIMARY_KEEPALIVE_TAG);
                out.put_u64(wal_end.0);
                out.put_i64(*send_time);
                out.put_u8(u8::from(*reply_requested));
            }
        }
        out.freeze()
    }
}

/// The 34-byte standby status update (`r`) payload to send in a CopyData message.
///
/// `write`, `flush` and `apply` are each the last WAL byte + 1 received, durably stored and
/// applied; the server may recycle WAL (and the slot advances) up to `flush`, so it must
/// never exceed what is durably committed downstream. `now_pg_micros` is the client's clock,
/// microseconds since 2000-01-01 UTC.
pub fn standby_status_update(
    write: Lsn,
    flush: Lsn,
    apply: Lsn,
    now_pg_micros: i64,
    reply_requested: bool,
) -> Bytes {
    let mut out = BytesMut::with_capacity(STANDBY_STATUS_UPDATE_LEN);
    out.put_u8(STANDBY_STATUS_UPDATE_TAG);
    out.put_u64(write.0);
    out.put_u64(flush.0);
    out.put_u64(apply.0);
    out.put_i64(now_pg_micros);
    out.put_u8(u8::from(reply_requested));
    out.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn xlog_fixture() -> Vec<u8> {
        let mut bytes = vec![b'w'];
        bytes.extend_from_slice(&0x0000_0001_0000_0028u64.to_be_bytes());
        bytes.extend_from_slice(&0x0000_0001_0000_0100u64.to_be_bytes());
        bytes.extend_from_slice(&762_957_296_789_012i64.to_be_bytes());
        bytes.extend_from_slice(b"C\0payload");
        bytes
    }

    #[test]
    fn parses_xlog_data_with_a_zero_copy_payload() {
        let buf = Bytes::from(xlog_fixture());
        let message = ReplicationMessage::parse(&buf).unwrap();
        let ReplicationMessage::XLogData {
            wal_start,
            wal_end,
            send_time,
            ref data,
        } = message
        else {
            panic!("expected XLogData, got {message:?}");
        };
        assert_eq!(wal_start.to_string(), "1/28");
        assert_eq!(wal_end.to_string(), "1/100");
        assert_eq!(send_time, 762_957_296_789_012);
        assert_eq!(&data[..], b"C\0payload");
        assert_eq!(data.as_ptr(), buf[25..].as_ptr());
        assert_eq!(message.encode(), buf);
    }

    #[test]
    fn xlog_data_may_carry_an_empty_payload() {
        let buf = Bytes::from(xlog_fixture()).slice(..25);
        let message = ReplicationMessage::parse(&buf).unwrap();
        assert!(
            matches!(message, ReplicationMessage::XLogData { ref data, .. } if data.is_empty())
        );
    }

    #[test]
    fn parses_primary_keepalive() {
        let mut bytes = vec![b'k'];
        bytes.extend_from_slice(&0x16_B374_D848u64.to_be_bytes());
        bytes.extend_from_slice(&(-5i64).to_be_bytes());
        bytes.push(1);
        let buf = Bytes::from(bytes);
        let message = ReplicationMessage::parse(&buf).unwrap();
        assert_eq!(
            message,
            ReplicationMessage::PrimaryKeepalive {
                wal_end: Lsn(0x16_B374_D848),
                send_time: -5,
                reply_requested: true,
            }
        );
        assert_eq!(message.encode(), buf);
        for len in 0..buf.len() {
            let prefix = buf.slice(..len);
            assert!(ReplicationMessage::parse(&prefix).is_err(), "prefix {len}");
        }
        let mut longer = buf.to_vec();
        longer.push(0);
        let err = ReplicationMessage::parse(&Bytes::from(longer)).unwrap_err();
        assert_eq!(
            (err.offset, err.kind),
            (18, DecodeErrorKind::TrailingBytes(1))
        );
    }

    #[test]
    fn rejects_truncated_headers_and_unknown_tags() {
        let buf = Bytes::from(xlog_fixture());
        for len in 0..25 {
            assert!(
                ReplicationMessage::parse(&buf.slice(..len)).is_err(),
                "prefix {len}"
            );
        }
        let err = ReplicationMessage::parse(&Bytes::from_static(b"r")).unwrap_err();
        assert_eq!(err.kind, DecodeErrorKind::UnknownTag(b'r'));
        assert_eq!(err.tag, Some(b'r'));
        let err = ReplicationMessage::parse(&Bytes::new()).unwrap_err();
        assert_eq!(err.tag, None);
    }

    #[test]
    fn standby_status_update_layout() {
        let update = standby_status_update(Lsn(0x0102), Lsn(0x0304), Lsn(0x0506), 7, true);
        assert_eq!(update.len(), 34);
        let mut expected = vec![b'r'];
        for value in [0x0102u64, 0x0304, 0x0506, 7] {
            expected.extend_from_slice(&value.to_be_bytes());
        }
        expected.push(1);
        assert_eq!(&update[..], &expected[..]);
        let no_reply = standby_status_update(Lsn::ZERO, Lsn::ZERO, Lsn::ZERO, 0, false);
        assert_eq!(no_reply[33], 0);
    }
}
