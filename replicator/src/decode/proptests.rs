//! Property tests: arbitrary messages survive encode → decode, and no input makes the
//! decoders panic.

use bytes::Bytes;
use proptest::collection::vec;
use proptest::prelude::*;

use super::*;
use crate::lsn::Lsn;

fn lsn() -> impl Strategy<Value = Lsn> {
    any::<u64>().prop_map(Lsn)
}

/// Any UTF-8 text without NUL, which the wire cannot carry inside a string.
fn text() -> impl Strategy<Value = String> {
    "[^\u{0}]{0,12}"
}

fn payload() -> impl Strategy<Value = Bytes> {
    vec(any::<u8>(), 0..24).prop_map(Bytes::from)
}

fn tuple_value() -> impl Strategy<Value = TupleValue> {
    prop_oneof![
        Just(TupleValue::Null),
        Just(TupleValue::UnchangedToast),
        payload().prop_map(TupleValue::Text),
        payload().prop_map(TupleValue::Binary),
    ]
}

fn tuple() -> impl Strategy<Value = TupleData> {
    vec(tuple_value(), 0..8).prop_map(|columns| TupleData { columns })
}

fn old_tuple() -> impl Strategy<Value = OldTuple> {
    prop_oneof![
        tuple().prop_map(OldTuple::Key),
        tuple().prop_map(OldTuple::Full)
    ]
}

fn replica_identity() -> impl Strategy<Value = ReplicaIdentity> {
    prop_oneof![
        Just(ReplicaIdentity::Default),
        Just(ReplicaIdentity::Nothing),
        Just(ReplicaIdentity::Full),
        Just(ReplicaIdentity::Index),
    ]
}

fn relation_column() -> impl Strategy<Value = RelationColumn> {
    (any::<bool>(), text(), any::<u32>(), any::<i32>()).prop_map(
        |(is_key, name, type_oid, type_modifier)| RelationColumn {
            is_key,
            name,
            type_oid,
            type_modifier,
        },
    )
}

fn relation() -> impl Strategy<Value = RelationBody> {
    let columns = vec(relation_column(), 0..6);
    (any::<u32>(), text(), text(), replica_identity(), columns).prop_map(
        |(id, namespace, name, replica_identity, columns)| RelationBody {
            id,
            namespace,
            name,
            replica_identity,
            columns,
        },
    )
}

fn message() -> impl Strategy<Value = PgOutputMessage> {
    use PgOutputMessage as M;
    prop_oneof![
        (lsn(), any::<i64>(), any::<u32>()).prop_map(|(final_lsn, commit_ts, xid)| {
            M::Begin(BeginBody {
                final_lsn,
                commit_ts,
                xid,
            })
        }),
        (any::<u8>(), lsn(), lsn(), any::<i64>()).prop_map(
            |(flags, commit_lsn, end_lsn, commit_ts)| {
                M::Commit(CommitBody {
                    flags,
                    commit_lsn,
                    end_lsn,
                    commit_ts,
                })
            }
        ),
        (lsn(), text()).prop_map(|(commit_lsn, name)| M::Origin(OriginBody { commit_lsn, name })),
        relation().prop_map(M::Relation),
        (any::<u32>(), text(), text()).prop_map(|(id, namespace, name)| M::Type(TypeBody {
            id,
            namespace,
            name
        })),
        (any::<u32>(), tuple())
            .prop_map(|(relation_id, new)| M::Insert(InsertBody { relation_id, new })),
        (any::<u32>(), proptest::option::of(old_tuple()), tuple()).prop_map(
            |(relation_id, old, new)| M::Update(UpdateBody {
                relation_id,
                old,
                new
            })
        ),
        (any::<u32>(), old_tuple())
            .prop_map(|(relation_id, old)| M::Delete(DeleteBody { relation_id, old })),
        (any::<u8>(), vec(any::<u32>(), 0..6)).prop_map(|(options, relation_ids)| {
            M::Truncate(TruncateBody {
                options,
                relation_ids,
            })
        }),
        (any::<bool>(), lsn(), text(), payload()).prop_map(
            |(transactional, lsn, prefix, content)| {
                M::Message(MessageBody {
                    transactional,
                    lsn,
                    prefix,
                    content,
                })
            }
        ),
    ]
}

fn replication_message() -> impl Strategy<Value = ReplicationMessage> {
    prop_oneof![
        (lsn(), lsn(), any::<i64>(), payload()).prop_map(
            |(wal_start, wal_end, send_time, data)| ReplicationMessage::XLogData {
                wal_start,
                wal_end,
                send_time,
                data,
            }
        ),
        (lsn(), any::<i64>(), any::<bool>()).prop_map(|(wal_end, send_time, reply_requested)| {
            ReplicationMessage::PrimaryKeepalive {
                wal_end,
                send_time,
                reply_requested,
            }
        }),
    ]
}

/// Decoding must not panic; whatever decodes must re-encode to something that decodes the
/// same (unknown flag bits are dropped, so the bytes themselves may differ).
fn check_decode_is_total(bytes: Vec<u8>) -> Result<(), TestCaseError> {
    if let Ok(message) = decode(&Bytes::from(bytes)) {
        let encoded = encode(&message).map_err(|err| TestCaseError::fail(err.to_string()))?;
        prop_assert_eq!(decode(&encoded), Ok(message));
    }
    Ok(())
}

const TAGS: &[u8] = b"BCORYIUDTM";

proptest! {
    #[test]
    fn messages_round_trip(message in message()) {
        let encoded = encode(&message).unwrap();
        prop_assert_eq!(encoded[0], message.tag());
        prop_assert_eq!(decode(&encoded), Ok(message));
    }

    #[test]
    fn decode_never_panics_on_arbitrary_bytes(bytes in vec(any::<u8>(), 0..64)) {
        check_decode_is_total(bytes)?;
    }

    #[test]
    fn decode_never_panics_after_a_valid_tag(
        tag in proptest::sample::select(TAGS),
        body in vec(any::<u8>(), 0..64),
    ) {
        let mut bytes = vec![tag];
        bytes.extend(body);
        check_decode_is_total(bytes)?;
    }

    #[test]
    fn decode_never_panics_on_corrupted_messages(
        message in message(),
        index in any::<prop::sample::Index>(),
        byte in any::<u8>(),
        cut in any::<prop::sample::Index>(),
    ) {
        let mut bytes = encode(&message).unwrap().to_vec();
        let at = index.index(bytes.len());
        bytes[at] = byte;
        check_decode_is_total(bytes.clone())?;
        bytes.truncate(cut.index(bytes.len()));
        check_decode_is_total(bytes)?;
    }

    #[test]
    fn replication_messages_round_trip(message in replication_message()) {
        prop_assert_eq!(ReplicationMessage::parse(&message.encode()), Ok(message));
    }

    #[test]
    fn replication_parse_never_panics(
        tag in proptest::sample::select(b"wkrh".as_slice()),
        body in vec(any::<u8>(), 0..40),
    ) {
        let mut bytes = vec![tag];
        bytes.extend(body);
        if let Ok(message) = ReplicationMessage::parse(&Bytes::from(bytes.clone())) {
            prop_assert_eq!(ReplicationMessage::parse(&message.encode()), Ok(message));
        }
        let _ = ReplicationMessage::parse(&Bytes::from(bytes[1..].to_vec()));
    }

    #[test]
    fn lsn_text_round_trips(value in any::<u64>()) {
        prop_assert_eq!(Lsn(value).to_string().parse::<Lsn>(), Ok(Lsn(value)));
    }

    #[test]
    fn lsn_parse_never_panics(text in "\\PC{0,20}") {
        if let Ok(lsn) = text.parse::<Lsn>() {
            prop_assert_eq!(lsn.to_string().parse::<Lsn>(), Ok(lsn));
        }
    }

    #[test]
    fn relation_cache_reports_exactly_column_changes(
        first in relation(),
        second_columns in vec(relation_column(), 0..6),
    ) {
        let mut cache = RelationCache::new();
        prop_assert!(!cache.update(first.clone()));
        let second = RelationBody { columns: second_columns, ..first.clone() };
        let changed = first.columns != second.columns;
        prop_assert_eq!(cache.update(second.clone()), changed);
        let stored = cache.get(first.id);
        prop_assert_eq!(stored.as_deref(), Some(&second));
    }
}

/// A protocol 2 message and whether it belongs inside a stream block.
fn streamed_message() -> impl Strategy<Value = (StreamedMessage, bool)> {
    prop_oneof![
        message().prop_map(|m| (StreamedMessage::Plain(m), false)),
        (any::<u32>(), any::<bool>()).prop_map(|(xid, first_segment)| (
            StreamedMessage::StreamStart(StreamStartBody { xid, first_segment }),
            false
        )),
        Just((StreamedMessage::StreamStop, true)),
        (any::<u32>(), any::<u8>(), lsn(), lsn(), any::<i64>()).prop_map(
            |(xid, flags, commit_lsn, end_lsn, commit_ts)| (
                StreamedMessage::StreamCommit(StreamCommitBody {
                    xid,
                    flags,
                    commit_lsn,
                    end_lsn,
                    commit_ts,
                }),
                false
            )
        ),
        (any::<u32>(), any::<u32>()).prop_map(|(xid, subxid)| (
            StreamedMessage::StreamAbort(StreamAbortBody { xid, subxid }),
            false
        )),
        (
            any::<u32>(),
            message().prop_filter("carried inside a block with an xid", |m| !matches!(
                m,
                PgOutputMessage::Begin(_) | PgOutputMessage::Commit(_) | PgOutputMessage::Origin(_)
            ))
        )
            .prop_map(|(xid, message)| (StreamedMessage::InStream { xid, message }, true)),
    ]
}

proptest! {
    #[test]
    fn streamed_messages_round_trip((message, in_stream) in streamed_message()) {
        let encoded = encode_v2(&message).unwrap();
        prop_assert_eq!(decode_v2(&encoded, in_stream), Ok(message));
    }

    #[test]
    fn decode_v2_never_panics(
        tag in proptest::sample::select(b"BCORYIUDTMSEcA".as_slice()),
        body in vec(any::<u8>(), 0..64),
        in_stream in any::<bool>(),
    ) {
        let mut bytes = vec![tag];
        bytes.extend(body);
        if let Ok(message) = decode_v2(&Bytes::from(bytes), in_stream) {
            let encoded = encode_v2(&message).map_err(|err| TestCaseError::fail(err.to_string()))?;
            prop_assert_eq!(decode_v2(&encoded, in_stream), Ok(message));
        }
    }
}
