//! Pure decoding of PostgreSQL's `pgoutput` logical replication protocol.
//!
//! [`decode`] turns one pgoutput message (the `data` of an XLogData CopyData payload) into a
//! typed [`PgOutputMessage`]: Begin, Commit, Origin, Relation, Type, Insert, Update, Delete,
//! Truncate and Message, with row images whose columns are NULL, unchanged TOAST, text or
//! binary. [`ReplicationMessage`] parses the CopyData payloads around it (XLogData, primary
//! keepalive) and [`standby_status_update`] builds the reply. [`encode`] writes the same
//! messages back, for tests, fuzzing and benchmark streams.
//!
//! Scope: PostgreSQL 15, pgoutput **protocol version 1** ([`decode`]) and **version 2**
//! ([`decode_v2`], [`StreamDecoder`]): streaming of in-progress transactions (`streaming =
//! on`: Stream Start/Stop/Commit/Abort, and the xid that change and metadata messages carry
//! inside a stream block). [`decode`] rejects the version 2 tags as
//! [`DecodeErrorKind::UnknownTag`]; two-phase commit (version 3) is not decoded.
//!
//! This module does no I/O and never panics, whatever the bytes: every read is bounds-checked,
//! counts and lengths are validated before use, and a malformed message is a [`DecodeError`]
//! naming the tag and the byte offset. Values are zero-copy [`Bytes`] slices of the input.

mod change;
mod encode;
mod error;
mod reader;
mod relation;
mod replication;
mod streamed;
mod timestamp;
mod transaction;
mod tuple;

#[cfg(test)]
mod captured;
#[cfg(test)]
mod fixtures;
#[cfg(test)]
mod malformed;
#[cfg(test)]
mod proptests;

use bytes::Bytes;

pub use change::{DeleteBody, InsertBody, TruncateBody, UpdateBody};
pub use change::{TRUNCATE_CASCADE, TRUNCATE_RESTART_IDENTITY};
pub use encode::{encode, encode_into, EncodeError};
pub use error::{DecodeError, DecodeErrorKind, StringDefect};
pub use relation::COLUMN_FLAG_KEY;
pub use relation::{RelationBody, RelationCache, RelationColumn, ReplicaIdentity, TypeBody};
pub use replication::{standby_status_update, ReplicationMessage};
pub use replication::{PRIMARY_KEEPALIVE_TAG, STANDBY_STATUS_UPDATE_TAG, XLOG_DATA_TAG};
pub use streamed::{decode_v2, encode_v2, StreamDecoder, StreamedMessage};
pub use streamed::{StreamAbortBody, StreamCommitBody, StreamStartBody};
pub use streamed::{STREAM_ABORT_TAG, STREAM_COMMIT_TAG, STREAM_START_TAG, STREAM_STOP_TAG};
pub use timestamp::{chrono_to_pg_timestamp, pg_timestamp_to_chrono, PG_EPOCH_UNIX_MICROS};
pub use transaction::MESSAGE_FLAG_TRANSACTIONAL;
pub use transaction::{BeginBody, CommitBody, MessageBody, OriginBody};
pub use tuple::{OldTuple, TupleData, TupleValue};
pub use tuple::{BINARY_VALUE_TAG, NULL_VALUE_TAG, TEXT_VALUE_TAG, UNCHANGED_TOAST_VALUE_TAG};
pub use tuple::{KEY_TUPLE_TAG, NEW_TUPLE_TAG, OLD_TUPLE_TAG};

use reader::Reader;

pub const BEGIN_TAG: u8 = b'B';
pub const COMMIT_TAG: u8 = b'C';
pub const ORIGIN_TAG: u8 = b'O';
pub const RELATION_TAG: u8 = b'R';
pub const TYPE_TAG: u8 = b'Y';
pub const INSERT_TAG: u8 = b'I';
pub const UPDATE_TAG: u8 = b'U';
pub const DELETE_TAG: u8 = b'D';
pub const TRUNCATE_TAG: u8 = b'T';
pub const MESSAGE_TAG: u8 = b'M';

/// One pgoutput (protocol version 1) message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PgOutputMessage {
    Begin(BeginBody),
    Commit(CommitBody),
    Origin(OriginBody),
    Relation(RelationBody),
    Type(TypeBody),
    Insert(InsertBody),
    Update(UpdateBody),
    Delete(DeleteBody),
    Truncate(TruncateBody),
    Message(MessageBody),
}

impl PgOutputMessage {
    /// The message's tag byte on the wire.
    pub fn tag(&self) -> u8 {
        match self {
            PgOutputMessage::Begin(_) => BEGIN_TAG,
            PgOutputMessage::Commit(_) => COMMIT_TAG,
            PgOutputMessage::Origin(_) => ORIGIN_TAG,
            PgOutputMessage::Relation(_) => RELATION_TAG,
            PgOutputMessage::Type(_) => TYPE_TAG,
            PgOutputMessage::Insert(_) => INSERT_TAG,
            PgOutputMessage::Update(_) => UPDATE_TAG,
            PgOutputMessage::Delete(_) => DELETE_TAG,
            PgOutputMessage::Truncate(_) => TRUNCATE_TAG,
            PgOutputMessage::Message(_) => MESSAGE_TAG,
        }
    }
}

/// Decodes one complete pgoutput message; bytes left after it are an error.
///
/// Text and binary column values and Message contents share `buf`'s storage.
pub fn decode(buf: &Bytes) -> Result<PgOutputMessage, DecodeError> {
    let mut reader = Reader::new(buf);
    let tag = reader.u8()?;
    let message = read_body(&mut reader, tag)?;
    reader.finish()?;
    Ok(message)
}

/// The body of a version 1 message whose tag was read.
fn read_body(reader: &mut Reader<'_>, tag: u8) -> Result<PgOutputMessage, DecodeError> {
    let reader = &mut *reader;
    Ok(match tag {
        BEGIN_TAG => PgOutputMessage::Begin(transaction::read_begin(reader)?),
        COMMIT_TAG => PgOutputMessage::Commit(transaction::read_commit(reader)?),
        ORIGIN_TAG => PgOutputMessage::Origin(transaction::read_origin(reader)?),
        RELATION_TAG => PgOutputMessage::Relation(relation::read_relation(reader)?),
        TYPE_TAG => PgOutputMessage::Type(relation::read_type(reader)?),
        INSERT_TAG => PgOutputMessage::Insert(change::read_insert(reader)?),
        UPDATE_TAG => PgOutputMessage::Update(change::read_update(reader)?),
        DELETE_TAG => PgOutputMessage::Delete(change::read_delete(reader)?),
        TRUNCATE_TAG => PgOutputMessage::Truncate(change::read_truncate(reader)?),
        MESSAGE_TAG => PgOutputMessage::Message(transaction::read_message(reader)?),
        other => return Err(reader.error_at(0, DecodeErrorKind::UnknownTag(other))),
    })
}
