//! The changes the pipeline carries from the source to its sinks (pure; no I/O).
//!
//! A [`Change`] sits at a journal position `(lsn, seq)`: `lsn` is the source transaction's
//! commit LSN and `seq` the change's place in it (from 1), so a transaction the server sends
//! again maps to the same positions. Row images are the tuples pgoutput sent (PostgreSQL's text
//! output per column, shared with the received message, not copied).

use std::sync::Arc;

use crate::decode::{TupleData, TupleValue};
use crate::lsn::Lsn;
use crate::table::SourceTable;

/// What a change does; its journal code and metrics label.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Op {
    /// A row of a copy: the initial copy or a backfill chunk.
    Snapshot,
    Insert,
    Update,
    Delete,
    Truncate,
    /// A schema change of the source table, followed by the replica.
    Schema,
    /// A backfill chunk merged into the replica.
    Backfill,
}

impl Op {
    pub const ROW_OPS: [Op; 5] = [
        Op::Snapshot,
        Op::Insert,
        Op::Update,
        Op::Delete,
        Op::Truncate,
    ];

    pub fn code(self) -> char {
        match self {
            Op::Snapshot => 'r',
            Op::Insert => 'i',
            Op::Update => 'u',
            Op::Delete => 'd',
            Op::Truncate => 't',
            Op::Schema => 's',
            Op::Backfill => 'b',
        }
    }

    pub fn from_code(c: char) -> Option<Self> {
        Some(match c {
            'r' => Op::Snapshot,
            'i' => Op::Insert,
            'u' => Op::Update,
            'd' => Op::Delete,
            't' => Op::Truncate,
            's' => Op::Schema,
            'b' => Op::Backfill,
            _ => return None,
        })
    }

    /// The label used in metrics.
    pub fn label(self) -> &'static str {
        match self {
            Op::Snapshot => "snapshot",
            Op::Insert => "insert",
            Op::Update => "update",
            Op::Delete => "delete",
            Op::Truncate => "truncate",
            Op::Schema => "schema",
            Op::Backfill => "backfill",
        }
    }
}

/// A position in the journal: `(lsn, seq)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Default, Hash)]
pub struct Pos {
    pub lsn: Lsn,
    pub seq: i32,
}

/// The first `seq` of the first start's copy, journaled at the slot's consistent point:
/// copied rows sort before any streamed change at the same LSN.
pub const FIRST_COPY_SEQ: i32 = i32::MIN + 1;

impl std::fmt::Display for Pos {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.lsn, self.seq)
    }
}

/// The source transaction a change belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TxContext {
    pub lsn: Lsn,
    pub xid: u32,
    /// Source commit time, microseconds since 2000-01-01 UTC.
    pub commit_ts: i64,
}

/// One change of one source row.
#[derive(Clone, Debug, PartialEq)]
pub struct RowChange {
    pub table: Arc<SourceTable>,
    /// Snapshot, Insert, Update or Delete.
    pub op: Op,
    /// Delete: the old key (default identity) or whole old row (FULL). Update: the whole old
    /// row under FULL identity, else none. Insert: for the insert half of an UPDATE that moved
    /// a row to another key, the old row's image (key, or whole under FULL), so that columns
    /// the update did not carry can be taken from it.
    pub old: Option<TupleData>,
    /// Snapshot, Insert, Update: the new row; unchanged TOAST columns are
    /// [`TupleValue::UnchangedToast`].
    pub new: Option<TupleData>,
}

impl RowChange {
    /// The image that identifies the row: the new row, or for a delete the old one.
    pub fn identity(&self) -> Option<&TupleData> {
        match self.op {
            Op::Delete => self.old.as_ref(),
            _ => self.new.as_ref().or(self.old.as_ref()),
        }
    }
}

/// A schema change of a source table: the replica follows it in the change's place.
#[derive(Clone, Debug, PartialEq)]
pub struct SchemaChange {
    /// The table as it was (None: first seen).
    pub before: Option<Arc<SourceTable>>,
    pub after: Arc<SourceTable>,
    pub steps: Vec<crate::schema::plan::Step>,
    /// Why the table must be copied again, if it must (a value the stream cannot carry over).
    pub backfill: Option<String>,
}

impl SchemaChange {
    /// The partition steps among its steps (what changed of the table's partitions).
    pub fn partitions(
        &self,
    ) -> impl Iterator<Item = &crate::schema::partitions::PartitionStep> + Clone {
        self.steps.iter().filter_map(|s| match s {
            crate::schema::plan::Step::Partitions(p) => Some(p),
            _ => None,
        })
    }
}

/// A backfill chunk reaching its high watermark in the stream: merged into the replica here.
#[derive(Clone, Debug, PartialEq)]
pub struct ChunkMerge {
    pub table: Arc<SourceTable>,
    pub backfill_id: i64,
    pub attempt: String,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Body {
    Row(RowChange),
    Truncate {
        table: Arc<SourceTable>,
        cascade: bool,
        restart_identity: bool,
    },
    Schema(Arc<SchemaChange>),
    Backfill(Arc<ChunkMerge>),
}

#[derive(Clone, Debug, PartialEq)]
pub struct Change {
    pub pos: Pos,
    pub xid: u32,
    /// Source commit time, microseconds since 2000-01-01 UTC.
    pub commit_ts: i64,
    pub body: Body,
}

impl Change {
    pub fn new(tx: TxContext, seq: i32, body: Body) -> Self {
        Self {
            pos: Pos { lsn: tx.lsn, seq },
            xid: tx.xid,
            commit_ts: tx.commit_ts,
            body,
        }
    }

    pub fn op(&self) -> Op {
        match &self.body {
            Body::Row(r) => r.op,
            Body::Truncate { .. } => Op::Truncate,
            Body::Schema(_) => Op::Schema,
            Body::Backfill(_) => Op::Backfill,
        }
    }

    pub fn table(&self) -> &Arc<SourceTable> {
        match &self.body {
            Body::Row(r) => &r.table,
            Body::Truncate { table, .. } => table,
            Body::Schema(s) => &s.after,
            Body::Backfill(m) => &m.table,
        }
    }

    /// Approximate memory held by the change, for batch bounds.
    pub fn weight(&self) -> usize {
        let tuple = |t: &Option<TupleData>| {
            t.as_ref().map_or(0, |t| {
                t.columns
                    .iter()
                    .map(|v| 16 + v.data().map_or(0, |d| d.len()))
                    .sum::<usize>()
            })
        };
        match &self.body {
            Body::Row(r) => 64 + tuple(&r.old) + tuple(&r.new),
            _ => 64,
        }
    }

    /// Row changes of a table, in order (a barrier — truncate, schema, backfill — splits runs).
    pub fn is_row(&self) -> bool {
        matches!(self.body, Body::Row(_))
    }
}

/// The values of a tuple at `positions`, for comparing keys.
pub fn key_values<'a>(
    tuple: &'a TupleData,
    positions: &'a [usize],
) -> impl Iterator<Item = Option<&'a TupleValue>> + 'a {
    positions.iter().map(move |&i| tuple.columns.get(i))
}

/// Whether an UPDATE moved its row to another key: the old image's key differs from the new
/// row's (a key column sent as unchanged TOAST did not change).
pub fn key_changed(table: &SourceTable, old: &TupleData, new: &TupleData) -> bool {
    table
        .key
        .iter()
        .any(|&i| match (old.columns.get(i), new.columns.get(i)) {
            (_, Some(TupleValue::UnchangedToast)) | (None, _) | (_, None) => false,
            (Some(a), Some(b)) => a != b,
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::table::fixtures;
    use bytes::Bytes;

    fn text(s: &str) -> TupleValue {
        TupleValue::Text(Bytes::copy_from_slice(s.as_bytes()))
    }

    #[test]
    fn op_codes_round_trip() {
        for op in [
            Op::Snapshot,
            Op::Insert,
            Op::Update,
            Op::Delete,
            Op::Truncate,
            Op::Schema,
            Op::Backfill,
        ] {
            assert_eq!(Op::from_code(op.code()), Some(op));
        }
        assert_eq!(Op::from_code('x'), None);
    }

    #[test]
    fn key_change_ignores_unchanged_toast_keys() {
        let t = fixtures::products();
        let old = TupleData {
            columns: vec![
                text("1"),
                text("a"),
                TupleValue::Null,
                TupleValue::Null,
                TupleValue::Null,
            ],
        };
        let mut new = old.clone();
        assert!(!key_changed(&t, &old, &new));
        new.columns[0] = text("2");
        assert!(key_changed(&t, &old, &new));
        new.columns[0] = TupleValue::UnchangedToast;
        assert!(!key_changed(&t, &old, &new));
    }
}
