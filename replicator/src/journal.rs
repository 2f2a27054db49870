//! Writing events into the `cdc_events` journal with COPY (text format).

use sqlx::PgConnection;

use crate::decode::pg_timestamp_to_chrono;
use crate::event::JournalEvent;

pub const COPY_SQL: &str = "copy cdc_events (lsn, seq, xid, commit_ts, source_schema, source_table, op, key, before, after) from stdin";

/// Appends the COPY text line of `e` to `out`.
pub fn encode_line(out: &mut Vec<u8>, e: &JournalEvent) {
    use std::io::Write;
    let ts = pg_timestamp_to_chrono(e.commit_ts)
        .map(|t| t.format("%Y-%m-%d %H:%M:%S%.6f+00").to_string())
        .unwrap_or_else(|| "1970-01-01 00:00:00+00".into());
    let _ = write!(out, "{}\t{}\t{}\t{}\t", e.lsn, e.seq, e.xid, ts);
    field(out, Some(&e.schema));
    out.push(b'\t');
    field(out, Some(&e.table));
    out.push(b'\t');
    out.push(e.op.code() as u8);
    for v in [&e.key, &e.before, &e.after] {
        out.push(b'\t');
        field(out, v.as_deref());
    }
    out.push(b'\n');
}

/// A COPY text field: `\N` for null, backslash, tab, newline and carriage return escaped.
fn field(out: &mut Vec<u8>, value: Option<&str>) {
    match value {
        None => out.extend_from_slice(b"\\N"),
        Some(s) => {
            for &b in s.as_bytes() {
                match b {
                    b'\\' => out.extend_from_slice(b"\\\\"),
                    b'\t' => out.extend_from_slice(b"\\t"),
                    b'\n' => out.extend_from_slice(b"\\n"),
                    b'\r' => out.extend_from_slice(b"\\r"),
                    _ => out.push(b),
                }
            }
        }
    }
}

/// Writes `events` into the journal in one COPY, sent in pieces of about 1 MiB.
pub async fn write(conn: &mut PgConnection, events: &[JournalEvent]) -> Result<u64, sqlx::Error> {
    if events.is_empty() {
        return Ok(0);
    }
    let mut copy = conn.copy_in_raw(COPY_SQL).await?;
    let mut buf = Vec::with_capacity(1 << 20);
    for e in events {
        encode_line(&mut buf, e);
        if buf.len() >= 1 << 20 {
            copy.send(std::mem::take(&mut buf)).await?;
            buf.reserve(1 << 20);
        }
    }
    if !buf.is_empty() {
        copy.send(buf).await?;
    }
    copy.finish().await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Op;
    use crate::lsn::Lsn;

    #[test]
    fn line_escapes_and_nulls() {
        let e = JournalEvent {
            lsn: Lsn(0x16_B374_D848),
            seq: 3,
            xid: 42,
            commit_ts: 0,
            schema: "public".into(),
            table: "orders".into(),
            op: Op::Insert,
            key: Some(r#"{"id":"1"}"#.into()),
            before: None,
            after: Some("{\"n\":\"a\\\\b\ttab\"}".into()),
        };
        let mut out = Vec::new();
        encode_line(&mut out, &e);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "16/B374D848\t3\t42\t2000-01-01 00:00:00.000000+00\tpublic\torders\ti\t{\"id\":\"1\"}\t\\N\t{\"n\":\"a\\\\\\\\b\\ttab\"}\n"
        );
    }
}
