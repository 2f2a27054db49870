//! The one error type of the decoder: what went wrong, in which message, at which byte.

use std::fmt;

/// A message could not be decoded.
///
/// `tag` is the first byte of the buffer (the pgoutput message tag, or the CopyData tag for
/// [`ReplicationMessage`](super::ReplicationMessage)), `None` for an empty buffer; `offset`
/// is the byte position in that buffer where decoding stopped.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("cannot decode {} at byte {offset}: {kind}", TagName(*.tag))]
pub struct DecodeError {
    pub tag: Option<u8>,
    pub offset: usize,
    pub kind: DecodeErrorKind,
}

/// What was wrong with the bytes.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeErrorKind {
    /// The buffer ended inside a field that needed `needed` bytes.
    #[error("unexpected end of message: needed {needed} bytes, {available} left")]
    UnexpectedEof { needed: usize, available: usize },
    /// The first byte is not a known message tag.
    #[error("unknown message tag")]
    UnknownTag(u8),
    /// A count (columns, relations) is negative or larger than the rest of the message allows.
    #[error("invalid count {0}")]
    InvalidCount(i64),
    /// A length prefix is negative or larger than the rest of the message.
    #[error("invalid length {0}")]
    InvalidLength(i64),
    /// A NUL-terminated string is not terminated or not UTF-8.
    #[error("invalid string: {0}")]
    InvalidString(StringDefect),
    /// A tuple column kind is not one of `n`, `u`, `t`, `b`.
    #[error("unknown tuple column kind {}", ByteName(*.0))]
    UnknownTupleKind(u8),
    /// A tuple marker is not the one expected here (`N`, `K` or `O`).
    #[error("unexpected tuple marker {}", ByteName(*.0))]
    UnexpectedTupleMarker(u8),
    /// A relation's replica identity is not one of `d`, `n`, `f`, `i`.
    #[error("unknown replica identity {}", ByteName(*.0))]
    UnknownReplicaIdentity(u8),
    /// Bytes are left over after a complete message.
    #[error("{0} trailing bytes after a complete message")]
    TrailingBytes(usize),
    /// A message where the protocol does not allow it (protocol 2: a Begin inside a stream
    /// block, a Stream Stop outside one).
    #[error("{0}")]
    OutOfPlace(&'static str),
}

/// Why a NUL-terminated string was rejected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StringDefect {
    /// No NUL byte before the end of the message.
    MissingTerminator,
    /// The bytes before the NUL are not valid UTF-8.
    InvalidUtf8,
}

impl fmt::Display for StringDefect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            StringDefect::MissingTerminator => "missing NUL terminator",
            StringDefect::InvalidUtf8 => "not valid UTF-8",
        })
    }
}

/// Prints a tag as `message 'B'`, or `empty message` when there is none.
struct TagName(Option<u8>);

impl fmt::Display for TagName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(tag) => write!(f, "message {}", ByteName(tag)),
            None => f.write_str("empty message"),
        }
    }
}

/// Prints a byte as `'B'` when it is printable ASCII, as `0x07` otherwise.
struct ByteName(u8);

impl fmt::Display for ByteName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_ascii_graphic() {
            write!(f, "'{}'", char::from(self.0))
        } else {
            write!(f, "0x{:02x}", self.0)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_names_tag_offset_and_kind() {
        let err = DecodeError {
            tag: Some(b'I'),
            offset: 12,
            kind: DecodeErrorKind::UnknownTupleKind(b'x'),
        };
        assert_eq!(
            err.to_string(),
            "cannot decode message 'I' at byte 12: unknown tuple column kind 'x'"
        );
        let err = DecodeError {
            tag: None,
            offset: 0,
            kind: DecodeErrorKind::UnexpectedEof {
                needed: 1,
                available: 0,
            },
        };
        assert_eq!(
            err.to_string(),
            "cannot decode empty message at byte 0: unexpected end of message: needed 1 bytes, 0 left"
        );
        let err = DecodeError {
            tag: Some(0),
            offset: 0,
            kind: DecodeErrorKind::UnknownTag(0),
        };
        assert_eq!(
            err.to_string(),
            "cannot decode message 0x00 at byte 0: unknown message tag"
        );
        let kind = DecodeErrorKind::InvalidString(StringDefect::MissingTerminator);
        assert_eq!(kind.to_string(), "invalid string: missing NUL terminator");
    }
}
