//! Malformed input: every case must be an error naming the right place, never a panic.

use bytes::Bytes;

use super::fixtures::{self, Wire};
use super::*;

fn decode_err(bytes: Vec<u8>) -> DecodeError {
    match decode(&Bytes::from(bytes)) {
        Ok(message) => panic!("decoded malformed input as {message:?}"),
        Err(err) => err,
    }
}

#[test]
fn empty_buffer() {
    let err = decode_err(vec![]);
    assert_eq!(err.tag, None);
    assert_eq!(err.offset, 0);
    assert_eq!(
        err.kind,
        DecodeErrorKind::UnexpectedEof {
            needed: 1,
            available: 0
        }
    );
}

#[test]
fn unknown_tags_including_protocol_v2_streaming() {
    // S/E/c/A are stream start/stop/commit/abort (protocol 2), b/P/K/r/p two-phase (3).
    for tag in [
        b'X', 0, 0xFF, b'S', b'E', b'c', b'A', b'b', b'P', b'K', b'r', b'p', b'w',
    ] {
        let err = decode_err(vec![tag, 0, 0, 0, 0]);
        assert_eq!(err.tag, Some(tag));
        assert_eq!(err.offset, 0);
        assert_eq!(err.kind, DecodeErrorKind::UnknownTag(tag));
    }
}

#[test]
fn every_truncation_of_every_fixture_is_an_error() {
    for (name, bytes) in fixtures::all() {
        let buf = Bytes::from(bytes);
        for len in 0..buf.len() {
            let err =
                decode(&buf.slice(..len)).expect_err(&format!("{name} cut to {len} bytes decoded"));
            assert!(
                err.offset <= len,
                "{name} cut to {len}: offset {}",
                err.offset
            );
            assert!(
                matches!(
                    err.kind,
                    DecodeErrorKind::UnexpectedEof { .. }
                        | DecodeErrorKind::InvalidLength(_)
                        | DecodeErrorKind::InvalidString(StringDefect::MissingTerminator)
                ),
                "{name} cut to {len}: {err}"
            );
        }
        assert!(decode(&buf).is_ok(), "{name} whole");
    }
}

#[test]
fn trailing_bytes_after_every_fixture() {
    for (name, mut bytes) in fixtures::all() {
        let complete = bytes.len();
        bytes.extend_from_slice(b"xy");
        let err = decode_err(bytes);
        assert_eq!(err.kind, DecodeErrorKind::TrailingBytes(2), "{name}");
        assert_eq!(err.offset, complete, "{name}");
    }
}

#[test]
fn negative_column_counts() {
    let err = decode_err(Wire::tag(b'I').u32(1).u8(b'N').i16(-1).build());
    assert_eq!(
        (err.offset, err.kind),
        (6, DecodeErrorKind::InvalidCount(-1))
    );
    let err = decode_err(Wire::tag(b'U').u32(1).u8(b'K').i16(i16::MIN).build());
    assert_eq!(
        (err.offset, err.kind),
        (6, DecodeErrorKind::InvalidCount(-32_768))
    );
    let relation = Wire::tag(b'R')
        .u32(1)
        .cstr("s")
        .cstr("t")
        .u8(b'd')
        .i16(-3)
        .build();
    let err = decode_err(relation);
    assert_eq!(
        (err.offset, err.kind),
        (10, DecodeErrorKind::InvalidCount(-3))
    );
    assert_eq!(err.tag, Some(b'R'));
}

#[test]
fn counts_larger_than_the_message() {
    // Claims 30 000 columns but carries one: fails at the end, allocates little.
    let err = decode_err(Wire::tag(b'I').u32(1).u8(b'N').i16(30_000).u8(b'n').build());
    assert!(
        matches!(err.kind, DecodeErrorKind::UnexpectedEof { .. }),
        "{err}"
    );
    assert_eq!(err.offset, 9);
    let err = decode_err(Wire::tag(b'T').u32(u32::MAX).u8(0).u32(7).build());
    assert_eq!(err.offset, 10);
    assert!(matches!(
        err.kind,
        DecodeErrorKind::UnexpectedEof {
            needed: 4,
            available: 0
        }
    ));
}

#[test]
fn negative_and_too_long_value_lengths() {
    let insert = |len: i32, data: &[u8]| {
        Wire::tag(b'I')
            .u32(1)
            .u8(b'N')
            .i16(1)
            .u8(b't')
            .i32(len)
            .raw(data)
            .build()
    };
    let err = decode_err(insert(-1, b""));
    assert_eq!(
        (err.offset, err.kind),
        (9, DecodeErrorKind::InvalidLength(-1))
    );
    let err = decode_err(insert(i32::MIN, b"abc"));
    assert_eq!(err.kind, DecodeErrorKind::InvalidLength(i32::MIN.into()));
    let err = decode_err(insert(4, b"abc"));
    assert_eq!(
        (err.offset, err.kind),
        (9, DecodeErrorKind::InvalidLength(4))
    );
    let err = decode_err(insert(i32::MAX, b"abc"));
    assert_eq!(err.kind, DecodeErrorKind::InvalidLength(i32::MAX.into()));

    let binary = Wire::tag(b'I')
        .u32(1)
        .u8(b'N')
        .i16(1)
        .u8(b'b')
        .i32(-7)
        .build();
    assert_eq!(decode_err(binary).kind, DecodeErrorKind::InvalidLength(-7));
    let message = |len: i32| {
        Wire::tag(b'M')
            .u8(1)
            .i64(1)
            .cstr("p")
            .i32(len)
            .raw(b"ab")
            .build()
    };
    let err = decode_err(message(-2));
    assert_eq!(
        (err.offset, err.kind),
        (12, DecodeErrorKind::InvalidLength(-2))
    );
    assert_eq!(
        decode_err(message(3)).kind,
        DecodeErrorKind::InvalidLength(3)
    );
}

#[test]
fn strings_without_terminator() {
    let missing = DecodeErrorKind::InvalidString(StringDefect::MissingTerminator);
    let err = decode_err(Wire::tag(b'O').i64(1).raw(b"no-nul").build());
    assert_eq!((err.offset, err.kind.clone()), (9, missing.clone()));
    let err = decode_err(Wire::tag(b'Y').u32(1).cstr("public").raw(b"t").build());
    assert_eq!((err.offset, err.kind.clone()), (12, missing.clone()));
    let err = decode_err(Wire::tag(b'M').u8(0).i64(1).raw(b"prefix").build());
    assert_eq!((err.offset, err.kind), (10, missing));
}

#[test]
fn strings_with_invalid_utf8() {
    let invalid = DecodeErrorKind::InvalidString(StringDefect::InvalidUtf8);
    let err = decode_err(
        Wire::tag(b'R')
            .u32(1)
            .raw(b"pu\xffblic\0")
            .cstr("t")
            .build(),
    );
    assert_eq!((err.offset, err.kind.clone()), (7, invalid.clone()));
    let column = Wire::tag(b'R')
        .u32(1)
        .cstr("s")
        .cstr("t")
        .u8(b'd')
        .i16(1)
        .u8(0);
    let err = decode_err(column.raw(b"\xc3(\0").u32(23).i32(-1).build());
    assert_eq!((err.offset, err.kind), (13, invalid));
}

#[test]
fn unknown_replica_identity() {
    let err = decode_err(
        Wire::tag(b'R')
            .u32(1)
            .cstr("s")
            .cstr("t")
            .u8(b'x')
            .i16(0)
            .build(),
    );
    assert_eq!(
        (err.offset, err.kind),
        (9, DecodeErrorKind::UnknownReplicaIdentity(b'x'))
    );
}

#[test]
fn unknown_tuple_column_kind() {
    let err = decode_err(
        Wire::tag(b'I')
            .u32(1)
            .u8(b'N')
            .i16(2)
            .u8(b'n')
            .u8(b'z')
            .build(),
    );
    assert_eq!(
        (err.offset, err.kind),
        (9, DecodeErrorKind::UnknownTupleKind(b'z'))
    );
}

#[test]
fn tuple_markers_out_of_place() {
    let marker = |tag: u8, marker: u8| Wire::tag(tag).u32(1).u8(marker).i16(0).build();
    for (tag, wrong) in [
        (b'I', b'K'),
        (b'I', b'O'),
        (b'U', b'X'),
        (b'D', b'N'),
        (b'D', b'n'),
    ] {
        let err = decode_err(marker(tag, wrong));
        assert_eq!(err.offset, 5, "{}", char::from(tag));
        assert_eq!(err.kind, DecodeErrorKind::UnexpectedTupleMarker(wrong));
    }
    // An Update's old image must be followed by `N`, not another old image.
    let twice = Wire::tag(b'U')
        .u32(1)
        .u8(b'K')
        .i16(0)
        .u8(b'O')
        .i16(0)
        .build();
    let err = decode_err(twice);
    assert_eq!(
        (err.offset, err.kind),
        (8, DecodeErrorKind::UnexpectedTupleMarker(b'O'))
    );
}

#[test]
fn errors_render_readably() {
    let err = decode_err(Wire::tag(b'I').u32(1).u8(b'N').i16(-1).build());
    assert_eq!(
        err.to_string(),
        "cannot decode message 'I' at byte 6: invalid count -1"
    );
}
