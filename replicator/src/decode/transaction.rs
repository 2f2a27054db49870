//! Transaction framing and metadata: Begin, Commit, Origin and logical decoding Message.

use bytes::Bytes;
use chrono::{DateTime, Utc};

use super::reader::{Reader, Result};
use super::timestamp::pg_timestamp_to_chrono;
use crate::lsn::Lsn;

/// `B`: the start of a source transaction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BeginBody {
    /// The LSN of the transaction's commit record.
    pub final_lsn: Lsn,
    /// Commit time, microseconds since 2000-01-01 UTC.
    pub commit_ts: i64,
    pub xid: u32,
}

impl BeginBody {
    /// The commit time as an instant; `None` if outside chrono's range.
    pub fn commit_time(&self) -> Option<DateTime<Utc>> {
        pg_timestamp_to_chrono(self.commit_ts)
    }
}

/// `C`: the end of a source transaction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CommitBody {
    /// Unused by PostgreSQL 15 (always 0); kept as sent.
    pub flags: u8,
    /// The LSN of the commit record.
    pub commit_lsn: Lsn,
    /// The LSN just past the commit record: where a restart after this transaction begins.
    pub end_lsn: Lsn,
    /// Commit time, microseconds since 2000-01-01 UTC.
    pub commit_ts: i64,
}

impl CommitBody {
    /// The commit time as an instant; `None` if outside chrono's range.
    pub fn commit_time(&self) -> Option<DateTime<Utc>> {
        pg_timestamp_to_chrono(self.commit_ts)
    }
}

/// `O`: the replication origin the transaction came from (sent after Begin, if any).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OriginBody {
    /// The commit LSN on the origin server.
    pub commit_lsn: Lsn,
    pub name: String,
}

/// Message flag bit: the message was emitted inside a transaction.
pub const MESSAGE_FLAG_TRANSACTIONAL: u8 = 1;

/// `M`: a message written with `pg_logical_emit_message` (needs the `messages` option).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MessageBody {
    /// Whether it was emitted transactionally (flag bit 1): then it sits between
    /// Begin and Commit and is only sent if the transaction committed.
    pub transactional: bool,
    /// The LSN of the message's WAL record.
    pub lsn: Lsn,
    pub prefix: String,
    /// The payload, a zero-copy slice of the received buffer.
    pub content: Bytes,
}

pub(crate) fn read_begin(reader: &mut Reader<'_>) -> Result<BeginBody> {
    Ok(BeginBody {
        final_lsn: reader.lsn()?,
        commit_ts: reader.i64()?,
        xid: reader.u32()?,
    })
}

pub(crate) fn read_commit(reader: &mut Reader<'_>) -> Result<CommitBody> {
    Ok(CommitBody {
        flags: reader.u8()?,
        commit_lsn: reader.lsn()?,
        end_lsn: reader.lsn()?,
        commit_ts: reader.i64()?,
    })
}

pub(crate) fn read_origin(reader: &mut Reader<'_>) -> Result<OriginBody> {
    Ok(OriginBody {
        commit_lsn: reader.lsn()?,
        name: reader.cstr()?,
    })
}

pub(crate) fn read_message(reader: &mut Reader<'_>) -> Result<MessageBody> {
    Ok(MessageBody {
        transactional: reader.u8()? & MESSAGE_FLAG_TRANSACTIONAL != 0,
        lsn: reader.lsn()?,
        prefix: reader.cstr()?,
        content: reader.length_prefixed()?,
    })
}
