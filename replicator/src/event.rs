//! Journal events: one per source change, as they are written to `cdc_events`.
//!
//! Pure: decoded pgoutput changes in, events out. `lsn` is the source transaction's commit LSN
//! and `seq` the change's place in it (from 1), so a transaction the server sends again maps
//! to the same `(lsn, seq)`. Row images are JSON objects of PostgreSQL's text output per
//! column; an unchanged TOASTed column is left out of `after` (the replica keeps its value).

use std::fmt::Write;
use std::sync::Arc;

use crate::decode::{OldTuple, RelationBody, TupleData, TupleValue};
use crate::lsn::Lsn;

/// What a journal event records.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Op {
    /// A row of the initial copy.
    Snapshot,
    Insert,
    Update,
    Delete,
    Truncate,
}

impl Op {
    pub fn code(self) -> char {
        match self {
            Op::Snapshot => 'r',
            Op::Insert => 'i',
            Op::Update => 'u',
            Op::Delete => 'd',
            Op::Truncate => 't',
        }
    }

    /// The label used in metrics.
    pub fn label(self) -> &'static str {
        match self {
            Op::Snapshot => "snapshot",
            Op::Insert => "insert",
            Op::Update => "update",
            Op::Delete => "delete",
            Op::Truncate => "truncate",
        }
    }
}

/// A position in the journal: `(lsn, seq)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Pos {
    pub lsn: Lsn,
    pub seq: i32,
}

#[derive(Clone, Debug, PartialEq)]
pub struct JournalEvent {
    pub lsn: Lsn,
    pub seq: i32,
    pub xid: u32,
    /// Source commit time, microseconds since 2000-01-01 UTC.
    pub commit_ts: i64,
    pub schema: Arc<str>,
    pub table: Arc<str>,
    pub op: Op,
    pub key: Option<String>,
    pub before: Option<String>,
    pub after: Option<String>,
}

impl JournalEvent {
    pub fn pos(&self) -> Pos {
        Pos {
            lsn: self.lsn,
            seq: self.seq,
        }
    }

    /// Approximate memory held by the event, for batch bounds.
    pub fn weight(&self) -> usize {
        96 + self.key.as_ref().map_or(0, String::len)
            + self.before.as_ref().map_or(0, String::len)
            + self.after.as_ref().map_or(0, String::len)
    }
}

/// The source transaction an event belongs to.
#[derive(Clone, Copy, Debug)]
pub struct TxContext {
    pub lsn: Lsn,
    pub xid: u32,
    pub commit_ts: i64,
}

/// A source table as the journal names it, with the positions of its key columns in the
/// relation's column list.
#[derive(Clone, Debug)]
pub struct SourceTable {
    pub schema: Arc<str>,
    pub table: Arc<str>,
    pub key_positions: Vec<usize>,
}

/// Builds the event of one row change.
pub fn row_event(
    tx: TxContext,
    seq: i32,
    rel: &RelationBody,
    source: &SourceTable,
    op: Op,
    old: Option<&OldTuple>,
    new: Option<&TupleData>,
) -> JournalEvent {
    let key_source = match (op, new, old) {
        (Op::Delete, _, Some(o)) => Some(o.tuple()),
        (_, Some(n), _) => Some(n),
        (_, None, Some(o)) => Some(o.tuple()),
        _ => None,
    };
    let key = key_source.map(|t| image(rel, t, Some(&source.key_positions)));
    let before = old.map(|o| image(rel, o.tuple(), None));
    let after = new.map(|t| image(rel, t, None));
    JournalEvent {
        lsn: tx.lsn,
        seq,
        xid: tx.xid,
        commit_ts: tx.commit_ts,
        schema: source.schema.clone(),
        table: source.table.clone(),
        op,
        key,
        before,
        after,
    }
}

/// An UPDATE that moved a row to another key (the old key image differs from the new one),
/// as the two changes it is for every consumer: a delete of the old key and an insert of the
/// new row. Columns the new tuple left out as unchanged TOAST are taken from the old image
/// when it has them (REPLICA IDENTITY FULL). `None` when the key did not change.
pub fn key_change_events(
    tx: TxContext,
    seqs: (i32, i32),
    rel: &RelationBody,
    source: &SourceTable,
    old: Option<&OldTuple>,
    new: Option<&TupleData>,
) -> Option<[JournalEvent; 2]> {
    let (old, new) = (old?, new?);
    // Compared value by value (no images built): this runs for every UPDATE of a table with
    // REPLICA IDENTITY FULL. A key column left out of the new tuple as unchanged TOAST did
    // not change.
    let changed = source.key_positions.iter().any(|&i| {
        match (old.tuple().columns.get(i), new.columns.get(i)) {
            (_, Some(TupleValue::UnchangedToast)) | (None, _) | (_, None) => false,
            (Some(a), Some(b)) => a != b,
        }
    });
    if !changed {
        return None;
    }
    let delete = row_event(tx, seqs.0, rel, source, Op::Delete, Some(old), None);
    let mut insert = row_event(tx, seqs.1, rel, source, Op::Insert, None, Some(new));
    let has_unchanged = new
        .columns
        .iter()
        .any(|c| matches!(c, TupleValue::UnchangedToast));
    if has_unchanged {
        if let (Some(before), Some(after)) = (&delete.before, &insert.after) {
            insert.after = Some(merge_images(before, after));
        }
    }
    Some([delete, insert])
}

/// `after` with the columns it lacks taken from `before` (both JSON objects of our making).
fn merge_images(before: &str, after: &str) -> String {
    let parse = |s: &str| serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(s);
    match (parse(before), parse(after)) {
        (Ok(mut merged), Ok(a)) => {
            merged.extend(a);
            serde_json::Value::Object(merged).to_string()
        }
        _ => after.to_owned(),
    }
}

/// The event of a TRUNCATE of one table.
pub fn truncate_event(
    tx: TxContext,
    seq: i32,
    schema: Arc<str>,
    table: Arc<str>,
    cascade: bool,
    restart_identity: bool,
) -> JournalEvent {
    JournalEvent {
        lsn: tx.lsn,
        seq,
        xid: tx.xid,
        commit_ts: tx.commit_ts,
        schema,
        table,
        op: Op::Truncate,
        key: None,
        before: None,
        after: Some(format!(
            "{{\"cascade\":{cascade},\"restart_identity\":{restart_identity}}}"
        )),
    }
}

/// A JSON object of column name → text value (or null). `only` restricts it to the given
/// column positions (the key). Unchanged TOAST columns are left out.
pub fn image(rel: &RelationBody, tuple: &TupleData, only: Option<&[usize]>) -> String {
    let mut out = String::with_capacity(16 + tuple.columns.len() * 24);
    out.push('{');
    let mut first = true;
    let mut push = |name: &str, value: &TupleValue, out: &mut String| {
        let text = match value {
            TupleValue::UnchangedToast => return,
            TupleValue::Null => None,
            TupleValue::Text(b) => Some(String::from_utf8_lossy(b)),
            TupleValue::Binary(b) => {
                let mut hex = String::with_capacity(2 + b.len() * 2);
                hex.push_str("\\x");
                for byte in b.iter() {
                    let _ = write!(hex, "{byte:02x}");
                }
                Some(hex.into())
            }
        };
        if !first {
            out.push(',');
        }
        first = false;
        json_string(out, name);
        out.push(':');
        match text {
            Some(t) => json_string(out, &t),
            None => out.push_str("null"),
        }
    };
    match only {
        Some(positions) => {
            for &i in positions {
                if let (Some(col), Some(v)) = (rel.columns.get(i), tuple.columns.get(i)) {
                    push(&col.name, v, &mut out);
                }
            }
        }
        None => {
            for (col, v) in rel.columns.iter().zip(tuple.columns.iter()) {
                push(&col.name, v, &mut out);
            }
        }
    }
    out.push('}');
    out
}

/// Appends `s` as a JSON string literal.
pub fn json_string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::{RelationColumn, ReplicaIdentity};
    use bytes::Bytes;

    fn rel() -> RelationBody {
        let col = |name: &str, is_key| RelationColumn {
            is_key,
            name: name.into(),
            type_oid: 25,
            type_modifier: -1,
        };
        RelationBody {
            id: 1,
            namespace: "public".into(),
            name: "products".into(),
            replica_identity: ReplicaIdentity::Default,
            columns: vec![
                col("id", true),
                col("name", false),
                col("description", false),
            ],
        }
    }

    fn text(s: &str) -> TupleValue {
        TupleValue::Text(Bytes::copy_from_slice(s.as_bytes()))
    }

    fn source() -> SourceTable {
        SourceTable {
            schema: "public".into(),
            table: "products".into(),
            key_positions: vec![0],
        }
    }

    const TX: TxContext = TxContext {
        lsn: Lsn(0x1_0000_0010),
        xid: 7,
        commit_ts: 0,
    };

    #[test]
    fn update_leaves_out_unchanged_toast_and_keys_by_primary_key() {
        let new = TupleData {
            columns: vec![
                text("3"),
                text("Mocha \"dark\"\n"),
                TupleValue::UnchangedToast,
            ],
        };
        let e = row_event(TX, 2, &rel(), &source(), Op::Update, None, Some(&new));
        assert_eq!(e.key.as_deref(), Some(r#"{"id":"3"}"#));
        assert_eq!(
            e.after.as_deref(),
            Some(r#"{"id":"3","name":"Mocha \"dark\"\n"}"#)
        );
        assert_eq!(e.before, None);
        assert_eq!((e.lsn, e.seq, e.op.code()), (TX.lsn, 2, 'u'));
        let parsed: serde_json::Value = serde_json::from_str(e.after.as_deref().unwrap()).unwrap();
        assert_eq!(parsed["name"], "Mocha \"dark\"\n");
    }

    #[test]
    fn delete_keys_from_old_tuple_and_keeps_nulls() {
        let old = OldTuple::Key(TupleData {
            columns: vec![text("9"), TupleValue::Null, TupleValue::Null],
        });
        let e = row_event(TX, 1, &rel(), &source(), Op::Delete, Some(&old), None);
        assert_eq!(e.key.as_deref(), Some(r#"{"id":"9"}"#));
        assert_eq!(
            e.before.as_deref(),
            Some(r#"{"id":"9","name":null,"description":null}"#)
        );
        assert_eq!(e.after, None);
    }

    #[test]
    fn control_characters_are_escaped() {
        let mut s = String::new();
        json_string(&mut s, "a\u{1}b\\");
        assert_eq!(s, r#""a\u0001b\\""#);
        let v: String = serde_json::from_str(&s).unwrap();
        assert_eq!(v, "a\u{1}b\\");
    }

    #[test]
    fn binary_values_are_hex() {
        let t = TupleData {
            columns: vec![
                text("1"),
                TupleValue::Binary(Bytes::from_static(&[0, 255])),
                TupleValue::Null,
            ],
        };
        assert_eq!(
            image(&rel(), &t, None),
            r#"{"id":"1","name":"\\x00ff","description":null}"#
        );
    }
}
