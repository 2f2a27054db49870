//! A batch encoded for OLAP (pure; runs while the previous batch is being applied): the
//! journal's COPY data, and the batch cut into segments — runs of row changes, staged per
//! table, between the changes that must be applied on their own (truncate, schema change,
//! backfill chunk).

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::change::{Body, Change, ChunkMerge, Op, Pos, SchemaChange};
use crate::table::SourceTable;

use super::journal::JournalEncoder;
use super::stage::{stage, Stage};

pub enum Segment {
    /// Row changes, one stage per table (in the order the tables first appear).
    Rows(Vec<Stage>),
    Truncate(Arc<SourceTable>),
    /// A schema change, at its position and source commit time.
    Schema(Arc<SchemaChange>, Pos, i64),
    Backfill(Arc<ChunkMerge>, Pos),
}

/// Changes applied per (table, op), for metrics.
pub type Counts = BTreeMap<(Arc<str>, Op), u64>;

pub struct Encoded {
    pub journal: Vec<u8>,
    pub segments: Vec<Segment>,
    pub counts: Counts,
    pub changes: usize,
    pub first: Option<Pos>,
    pub last: Option<Pos>,
}

/// Encodes `changes` (in journal order).
pub fn encode(journal: &mut JournalEncoder, changes: &[Change]) -> Encoded {
    let mut counts = Counts::new();
    for c in changes
        .iter()
        .filter(|c| c.is_row() || c.op() == Op::Truncate)
    {
        *counts.entry((c.table().name.clone(), c.op())).or_default() += 1;
    }
    let mut segments = Vec::new();
    let mut run: Vec<&Change> = Vec::new();
    let flush = |run: &mut Vec<&Change>, segments: &mut Vec<Segment>| {
        if run.is_empty() {
            return;
        }
        // Group by table, keeping the order of first appearance.
        let mut order: Vec<Arc<SourceTable>> = Vec::new();
        let mut by_table: Vec<Vec<&Change>> = Vec::new();
        for c in run.drain(..) {
            let t = c.table();
            match order.iter().position(|o| Arc::ptr_eq(o, t) || **o == **t) {
                Some(i) => by_table[i].push(c),
                None => {
                    order.push(t.clone());
                    by_table.push(vec![c]);
                }
            }
        }
        segments.push(Segment::Rows(
            order
                .iter()
                .zip(&by_table)
                .map(|(t, cs)| stage(t, cs))
                .collect(),
        ));
    };
    for c in changes {
        match &c.body {
            Body::Row(_) => {
                // A table whose shape changed within the run starts a new run (its stage
                // table is made again).
                run.push(c);
            }
            Body::Truncate { table, .. } => {
                flush(&mut run, &mut segments);
                segments.push(Segment::Truncate(table.clone()));
            }
            Body::Schema(s) => {
                flush(&mut run, &mut segments);
                segments.push(Segment::Schema(s.clone(), c.pos, c.commit_ts));
            }
            Body::Backfill(m) => {
                flush(&mut run, &mut segments);
                segments.push(Segment::Backfill(m.clone(), c.pos));
            }
        }
    }
    flush(&mut run, &mut segments);
    Encoded {
        journal: journal.encode(changes),
        segments,
        counts,
        changes: changes.len(),
        first: changes.first().map(|c| c.pos),
        last: changes.last().map(|c| c.pos),
    }
}
