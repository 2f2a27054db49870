//! Feeds arbitrary bytes to the pgoutput decoders (protocol 1 and 2), the CopyData parser and the LSN parser.
//!
//! Beyond "never panics", it checks that whatever decodes re-encodes to bytes that decode to
//! the same value, and that an XLogData payload's data is decoded as pgoutput too.

#![no_main]

use brewlytics_replicator::decode::{decode, decode_v2, encode, encode_v2, ReplicationMessage};
use brewlytics_replicator::lsn::Lsn;
use bytes::Bytes;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let buf = Bytes::copy_from_slice(data);
    check_pgoutput(&buf);

    if let Ok(message) = ReplicationMessage::parse(&buf) {
        assert_eq!(
            ReplicationMessage::parse(&message.encode()).as_ref(),
            Ok(&message)
        );
        if let ReplicationMessage::XLogData { data, .. } = &message {
            check_pgoutput(data);
        }
    }

    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(lsn) = text.parse::<Lsn>() {
            assert_eq!(lsn.to_string().parse::<Lsn>(), Ok(lsn));
        }
    }
});

fn check_pgoutput(buf: &Bytes) {
    if let Ok(message) = decode(buf) {
        let encoded = encode(&message).expect("a decoded message encodes");
        assert_eq!(decode(&encoded), Ok(message));
    }
    // Protocol 2, outside and inside a stream block.
    for in_stream in [false, true] {
        if let Ok(message) = decode_v2(buf, in_stream) {
            let encoded = encode_v2(&message).expect("a decoded message encodes");
            assert_eq!(decode_v2(&encoded, in_stream), Ok(message));
        }
    }
}
