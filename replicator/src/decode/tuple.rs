//! Row images (`TupleData`) carried by Insert, Update and Delete messages.

use bytes::Bytes;

use super::error::DecodeErrorKind;
use super::reader::{Reader, Result};

/// Marker before the new row image of an Insert or Update.
pub const NEW_TUPLE_TAG: u8 = b'N';
/// Marker before an old row image holding only the replica-identity key columns.
pub const KEY_TUPLE_TAG: u8 = b'K';
/// Marker before an old row image holding every column (`REPLICA IDENTITY FULL`).
pub const OLD_TUPLE_TAG: u8 = b'O';

/// Column kind: SQL NULL.
pub const NULL_VALUE_TAG: u8 = b'n';
/// Column kind: an unchanged TOASTed value that the server did not send.
pub const UNCHANGED_TOAST_VALUE_TAG: u8 = b'u';
/// Column kind: a value in text format.
pub const TEXT_VALUE_TAG: u8 = b't';
/// Column kind: a value in binary format (only with the `binary` publication option).
pub const BINARY_VALUE_TAG: u8 = b'b';

/// One row image: a value per column, in the order of the relation's columns.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TupleData {
    pub columns: Vec<TupleValue>,
}

/// The value of one column in a row image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TupleValue {
    /// SQL NULL.
    Null,
    /// A TOASTed value that did not change; the server does not send it again, so the
    /// consumer must keep the value it already has.
    UnchangedToast,
    /// The value in PostgreSQL's text output format (bytes in the server encoding).
    Text(Bytes),
    /// The value in the type's binary send format.
    Binary(Bytes),
}

impl TupleValue {
    /// The wire kind byte of this value (`n`, `u`, `t` or `b`).
    pub fn kind(&self) -> u8 {
        match self {
            TupleValue::Null => NULL_VALUE_TAG,
            TupleValue::UnchangedToast => UNCHANGED_TOAST_VALUE_TAG,
            TupleValue::Text(_) => TEXT_VALUE_TAG,
            TupleValue::Binary(_) => BINARY_VALUE_TAG,
        }
    }

    /// The bytes of a text or binary value; `None` for NULL and unchanged TOAST.
    pub fn data(&self) -> Option<&Bytes> {
        match self {
            TupleValue::Text(data) | TupleValue::Binary(data) => Some(data),
            TupleValue::Null | TupleValue::UnchangedToast => None,
        }
    }
}

/// The old row image of an Update or Delete.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OldTuple {
    /// `K`: only the replica-identity key columns are set; the others are NULL.
    Key(TupleData),
    /// `O`: the whole old row (`REPLICA IDENTITY FULL`).
    Full(TupleData),
}

impl OldTuple {
    /// The wire marker of this image (`K` or `O`).
    pub fn marker(&self) -> u8 {
        match self {
            OldTuple::Key(_) => KEY_TUPLE_TAG,
            OldTuple::Full(_) => OLD_TUPLE_TAG,
        }
    }

    /// The row image, whichever kind it is.
    pub fn tuple(&self) -> &TupleData {
        match self {
            OldTuple::Key(tuple) | OldTuple::Full(tuple) => tuple,
        }
    }
}

/// Reads a TupleData: an Int16 column count, then a kind byte and maybe a value per column.
pub(crate) fn read_tuple(reader: &mut Reader<'_>) -> Result<TupleData> {
    let count = reader.count_i16()?;
    // Each column takes at least its kind byte.
    let mut columns = Vec::with_capacity(reader.capacity_for(count, 1));
    for _ in 0..count {
        let start = reader.position();
        let value = match reader.u8()? {
            NULL_VALUE_TAG => TupleValue::Null,
            UNCHANGED_TOAST_VALUE_TAG => TupleValue::UnchangedToast,
            TEXT_VALUE_TAG => TupleValue::Text(reader.length_prefixed()?),
            BINARY_VALUE_TAG => TupleValue::Binary(reader.length_prefixed()?),
            other => return Err(reader.error_at(start, DecodeErrorKind::UnknownTupleKind(other))),
        };
        columns.push(value);
    }
    Ok(TupleData { columns })
}

/// Reads the `N` marker and the new row image after it.
pub(crate) fn read_new_tuple(reader: &mut Reader<'_>) -> Result<TupleData> {
    let start = reader.position();
    match reader.u8()? {
        NEW_TUPLE_TAG => read_tuple(reader),
        other => Err(reader.error_at(start, DecodeErrorKind::UnexpectedTupleMarker(other))),
    }
}

/// Reads the old row image that follows `marker`, which must be `K` or `O`.
pub(crate) fn read_old_tuple(reader: &mut Reader<'_>, marker: u8, at: usize) -> Result<OldTuple> {
    match marker {
        KEY_TUPLE_TAG => Ok(OldTuple::Key(read_tuple(reader)?)),
        OLD_TUPLE_TAG => Ok(OldTuple::Full(read_tuple(reader)?)),
        other => Err(reader.error_at(at, DecodeErrorKind::UnexpectedTupleMarker(other))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tuple(bytes: &'static [u8]) -> Result<TupleData> {
        let buf = Bytes::from_static(bytes);
        let mut reader = Reader::new(&buf);
        let tuple = read_tuple(&mut reader)?;
        reader.finish()?;
        Ok(tuple)
    }

    #[test]
    fn reads_every_column_kind() {
        let data = tuple(b"\0\x05n u t\0\0\0\x0242b\0\0\0\x01\xfft\0\0\0\0").unwrap_err();
        // The spaces above are not kinds: this proves the error path first.
        assert_eq!(data.kind, DecodeErrorKind::UnknownTupleKind(b' '));
        assert_eq!(data.offset, 3);

        let data = tuple(b"\0\x05nut\0\0\0\x0242b\0\0\0\x01\xfft\0\0\0\0").unwrap();
        assert_eq!(
            data.columns,
            vec![
                TupleValue::Null,
                TupleValue::UnchangedToast,
                TupleValue::Text(Bytes::from_static(b"42")),
                TupleValue::Binary(Bytes::from_static(b"\xff")),
                TupleValue::Text(Bytes::new()),
            ]
        );
        assert_eq!(data.columns[2].kind(), b't');
        assert_eq!(data.columns[0].data(), None);
        assert_eq!(data.columns[3].data(), Some(&Bytes::from_static(b"\xff")));
    }

    #[test]
    fn rejects_bad_counts_and_lengths() {
        let err = tuple(b"\xff\xfe").unwrap_err();
        assert_eq!(
            (err.offset, err.kind),
            (0, DecodeErrorKind::InvalidCount(-2))
        );
        let err = tuple(b"\0\x01t\xff\xff\xff\xff").unwrap_err();
        assert_eq!(
            (err.offset, err.kind),
            (3, DecodeErrorKind::InvalidLength(-1))
        );
        let err = tuple(b"\0\x01t\0\0\0\x03ab").unwrap_err();
        assert_eq!(
            (err.offset, err.kind),
            (3, DecodeErrorKind::InvalidLength(3))
        );
        let err = tuple(b"\0\x02n").unwrap_err();
        assert!(matches!(
            err.kind,
            DecodeErrorKind::UnexpectedEof { needed: 1, .. }
        ));
    }

    #[test]
    fn old_tuple_markers() {
        let buf = Bytes::from_static(b"\0\x01n");
        let key = read_old_tuple(&mut Reader::new(&buf), b'K', 0).unwrap();
        assert_eq!(key.marker(), b'K');
        assert_eq!(key.tuple().columns, vec![TupleValue::Null]);
        let full = read_old_tuple(&mut Reader::new(&buf), b'O', 0).unwrap();
        assert!(matches!(full, OldTuple::Full(_)));
        let err = read_old_tuple(&mut Reader::new(&buf), b'N', 7).unwrap_err();
        assert_eq!(
            (err.offset, err.kind),
            (7, DecodeErrorKind::UnexpectedTupleMarker(b'N'))
        );
    }
}
