//! A bounds-checked big-endian cursor over a message buffer.
//!
//! Every read checks the remaining length first and reports the offset where it failed, so
//! the message parsers built on it cannot index out of bounds or panic.

use bytes::Bytes;

use super::error::{DecodeError, DecodeErrorKind, StringDefect};
use crate::lsn::Lsn;

pub(crate) type Result<T> = std::result::Result<T, DecodeError>;

pub(crate) struct Reader<'a> {
    buf: &'a Bytes,
    pos: usize,
    tag: Option<u8>,
}

impl<'a> Reader<'a> {
    /// A reader positioned at the start of `buf`, whose first byte (if any) is the tag.
    pub(crate) fn new(buf: &'a Bytes) -> Self {
        Reader {
            buf,
            pos: 0,
            tag: buf.first().copied(),
        }
    }

    pub(crate) fn position(&self) -> usize {
        self.pos
    }

    pub(crate) fn remaining(&self) -> usize {
        self.buf.len().saturating_sub(self.pos)
    }

    /// An error of `kind` at byte `offset` of this message.
    pub(crate) fn error_at(&self, offset: usize, kind: DecodeErrorKind) -> DecodeError {
        DecodeError {
            tag: self.tag,
            offset,
            kind,
        }
    }

    /// The next `n` bytes as a slice, or an end-of-message error.
    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        let buf: &'a [u8] = self.buf;
        let slice = self
            .pos
            .checked_add(n)
            .and_then(|end| buf.get(self.pos..end))
            .ok_or_else(|| {
                self.error_at(
                    self.pos,
                    DecodeErrorKind::UnexpectedEof {
                        needed: n,
                        available: self.remaining(),
                    },
                )
            })?;
        self.pos += n;
        Ok(slice)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N]> {
        let start = self.pos;
        let slice = self.take(N)?;
        <[u8; N]>::try_from(slice).map_err(|_| {
            self.error_at(
                start,
                DecodeErrorKind::UnexpectedEof {
                    needed: N,
                    available: slice.len(),
                },
            )
        })
    }

    pub(crate) fn u8(&mut self) -> Result<u8> {
        Ok(u8::from_be_bytes(self.array()?))
    }

    pub(crate) fn i16(&mut self) -> Result<i16> {
        Ok(i16::from_be_bytes(self.array()?))
    }

    pub(crate) fn i32(&mut self) -> Result<i32> {
        Ok(i32::from_be_bytes(self.array()?))
    }

    pub(crate) fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_be_bytes(self.array()?))
    }

    pub(crate) fn i64(&mut self) -> Result<i64> {
        Ok(i64::from_be_bytes(self.array()?))
    }

    pub(crate) fn lsn(&mut self) -> Result<Lsn> {
        Ok(Lsn(u64::from_be_bytes(self.array()?)))
    }

    /// An Int16 count, which must not be negative.
    pub(crate) fn count_i16(&mut self) -> Result<usize> {
        let start = self.pos;
        let count = self.i16()?;
        usize::try_from(count)
            .map_err(|_| self.error_at(start, DecodeErrorKind::InvalidCount(count.into())))
    }

    /// A UInt32 count.
    pub(crate) fn count_u32(&mut self) -> Result<usize> {
        let start = self.pos;
        let count = self.u32()?;
        usize::try_from(count)
            .map_err(|_| self.error_at(start, DecodeErrorKind::InvalidCount(count.into())))
    }

    /// A vector capacity for `count` items of at least `min_item_len` bytes each that the
    /// rest of the buffer could hold: a forged count cannot make the decoder allocate more
    /// than the message size.
    pub(crate) fn capacity_for(&self, count: usize, min_item_len: usize) -> usize {
        count.min(self.remaining() / min_item_len.max(1))
    }

    /// An Int32 length prefix followed by that many bytes, as a zero-copy slice.
    pub(crate) fn length_prefixed(&mut self) -> Result<Bytes> {
        let start = self.pos;
        let len = self.i32()?;
        let len = usize::try_from(len)
            .ok()
            .filter(|&n| n <= self.remaining())
            .ok_or_else(|| self.error_at(start, DecodeErrorKind::InvalidLength(len.into())))?;
        let data = self.buf.slice(self.pos..self.pos + len);
        self.pos += len;
        Ok(data)
    }

    /// Everything up to the end of the buffer, as a zero-copy slice.
    pub(crate) fn rest(&mut self) -> Bytes {
        let start = self.pos.min(self.buf.len());
        self.pos = self.buf.len();
        self.buf.slice(start..)
    }

    /// A NUL-terminated UTF-8 string; the terminator is consumed, not returned.
    pub(crate) fn cstr(&mut self) -> Result<String> {
        let start = self.pos;
        let rest = self.buf.get(start..).unwrap_or_default();
        let len = rest.iter().position(|&b| b == 0).ok_or_else(|| {
            let defect = StringDefect::MissingTerminator;
            self.error_at(start, DecodeErrorKind::InvalidString(defect))
        })?;
        let bytes = rest.get(..len).unwrap_or_default();
        let text = std::str::from_utf8(bytes).map_err(|err| {
            let defect = StringDefect::InvalidUtf8;
            self.error_at(
                start + err.valid_up_to(),
                DecodeErrorKind::InvalidString(defect),
            )
        })?;
        self.pos = start + len + 1;
        Ok(text.to_owned())
    }

    /// Succeeds only when the whole buffer has been read.
    pub(crate) fn finish(self) -> Result<()> {
        match self.remaining() {
            0 => Ok(()),
            extra => Err(self.error_at(self.pos, DecodeErrorKind::TrailingBytes(extra))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_big_endian_integers_and_tracks_position() {
        let buf = Bytes::from_static(&[0x01, 0x00, 0x02, 0xFF, 0xFF, 0xFF, 0xFE, 0x07]);
        let mut reader = Reader::new(&buf);
        assert_eq!(reader.u8().unwrap(), 1);
        assert_eq!(reader.i16().unwrap(), 2);
        assert_eq!(reader.i32().unwrap(), -2);
        assert_eq!(reader.position(), 7);
        assert_eq!(reader.remaining(), 1);
        let err = reader.i16().unwrap_err();
        assert_eq!(err.offset, 7);
        assert_eq!(err.tag, Some(1));
        assert_eq!(
            err.kind,
            DecodeErrorKind::UnexpectedEof {
                needed: 2,
                available: 1
            }
        );
    }

    #[test]
    fn length_prefixed_slices_without_copying() {
        let buf = Bytes::from_static(&[0, 0, 0, 3, b'a', b'b', b'c', b'!']);
        let mut reader = Reader::new(&buf);
        let value = reader.length_prefixed().unwrap();
        assert_eq!(&value[..], b"abc");
        assert_eq!(value.as_ptr(), buf[4..].as_ptr());
        assert_eq!(reader.rest(), Bytes::from_static(b"!"));
        assert!(reader.finish().is_ok());
    }

    #[test]
    fn counts_must_not_be_negative_and_do_not_drive_allocation() {
        let buf = Bytes::from_static(&[0, 2, 0xAA, 0xBB]);
        let mut reader = Reader::new(&buf);
        assert_eq!(reader.count_i16().unwrap(), 2);
        assert_eq!(reader.capacity_for(2, 1), 2);
        assert_eq!(reader.capacity_for(2, 2), 1);
        assert_eq!(reader.capacity_for(usize::MAX, 0), 2);
        let negative = Bytes::from_static(&[0xFF, 0xFF]);
        let err = Reader::new(&negative).count_i16().unwrap_err();
        assert_eq!(err.kind, DecodeErrorKind::InvalidCount(-1));
        assert_eq!(err.offset, 0);
        let huge = Bytes::from_static(&[0xFF, 0xFF, 0xFF, 0xFF]);
        let mut reader = Reader::new(&huge);
        assert_eq!(reader.count_u32().unwrap(), u32::MAX as usize);
        assert_eq!(reader.capacity_for(u32::MAX as usize, 4), 0);
    }

    #[test]
    fn strings_need_a_terminator_and_utf8() {
        let buf = Bytes::from_static(b"caf\xc3\xa9\0x");
        let mut reader = Reader::new(&buf);
        assert_eq!(reader.cstr().unwrap(), "café");
        let err = reader.cstr().unwrap_err();
        assert_eq!(err.offset, 6);
        assert_eq!(
            err.kind,
            DecodeErrorKind::InvalidString(StringDefect::MissingTerminator)
        );
        let bad = Bytes::from_static(b"ab\xff\0");
        let err = Reader::new(&bad).cstr().unwrap_err();
        assert_eq!(err.offset, 2);
        assert_eq!(
            err.kind,
            DecodeErrorKind::InvalidString(StringDefect::InvalidUtf8)
        );
    }
}
