//! Staging a run of row changes of one table for OLAP (pure): the rows of a COPY into the
//! table's temporary stage table, typed by the server as the replica's columns are.
//!
//! For a table with a key, every change is staged (the star reads them all, in order) with:
//! `_cdc_last` on the last change of each key (the one the replica merge keeps), `_cdc_new`
//! when the key's first change in the run inserts it, and the columns an update did not carry
//! (unchanged TOAST) filled from the key's earlier images in the run or the old row sent
//! under REPLICA IDENTITY FULL — or named in `_cdc_keep`, to be taken from the replica row
//! (of the old key, `_cdc_from_*`, when the update moved the row to another key).
//!
//! A table without a key is a multiset: the run is reduced to net counts per whole-row image
//! (`_cdc_n` copies to insert, or to delete, of each).

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;

use crate::change::{Change, Op, Pos, RowChange};
use crate::decode::{pg_timestamp_to_chrono, TupleData, TupleValue};
use crate::image::copy_escape;
use crate::table::{ident, SourceTable};

/// What a stage row holds for a column.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Known {
    Unknown,
    Null,
    Value(Bytes),
}

impl Known {
    fn of(v: &TupleValue) -> Self {
        match v {
            TupleValue::Null => Known::Null,
            TupleValue::UnchangedToast => Known::Unknown,
            TupleValue::Text(b) | TupleValue::Binary(b) => Known::Value(b.clone()),
        }
    }
}

/// One staged row: where it is in the COPY data and which journal changes it stands for.
#[derive(Clone, Debug)]
pub struct StagedRow {
    pub start: usize,
    pub end: usize,
    pub positions: Vec<Pos>,
    pub op: Op,
}

/// A COPY into one stage table.
#[derive(Clone, Debug)]
pub struct Stage {
    pub table: Arc<SourceTable>,
    /// The COPY's column list.
    pub columns: String,
    pub data: Vec<u8>,
    pub rows: Vec<StagedRow>,
    /// Some last change misses columns the replica must supply.
    pub has_keep: bool,
    /// Some key's last change deletes it (or, keyless, some rows are deleted).
    pub has_delete: bool,
    /// Every row is the first, inserting change of its key (the replica merge can skip
    /// looking for existing rows... but still upserts, for replays).
    pub only_inserts: bool,
}

impl Stage {
    /// The COPY data of the rows at `indexes` only.
    pub fn subset(&self, indexes: &[usize]) -> Vec<u8> {
        let mut out = Vec::new();
        for &i in indexes {
            let r = &self.rows[i];
            out.extend_from_slice(&self.data[r.start..r.end]);
        }
        out
    }
}

/// The name of a table's stage table (in `pg_temp`).
pub fn stage_name(t: &SourceTable) -> String {
    let name = format!("stage_{}", t.replica);
    if name.len() <= 63 {
        return name;
    }
    // Long names: a stable digest keeps them apart.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in t.replica.bytes() {
        h = (h ^ b as u64).wrapping_mul(0x0100_0000_01b3);
    }
    let mut cut = 40;
    while !name.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}_{h:016x}", &name[..cut])
}

/// `create temp table` of a table's stage table.
pub fn create_sql(t: &SourceTable) -> String {
    let mut defs = vec![
        "_cdc_pos integer".to_owned(),
        "_cdc_op \"char\"".to_owned(),
        "_cdc_last boolean".to_owned(),
        "_cdc_new boolean".to_owned(),
        "_cdc_keep text[]".to_owned(),
        "_cdc_n integer".to_owned(),
        "_cdc_ts timestamptz".to_owned(),
    ];
    for (n, &k) in t.key.iter().enumerate() {
        defs.push(format!("_cdc_from_{} {}", n + 1, t.columns[k].olap_type));
    }
    for c in &t.columns {
        defs.push(format!("{} {}", ident(&c.name), c.olap_type));
    }
    format!(
        "create temp table {} ({}) on commit delete rows",
        ident(&stage_name(t)),
        defs.join(", ")
    )
}

/// Commit times as stage text, formatted once per transaction.
#[derive(Default)]
struct Timestamps {
    last: Option<(i64, String)>,
}

impl Timestamps {
    fn text(&mut self, micros: i64) -> &str {
        if self.last.as_ref().map(|l| l.0) != Some(micros) {
            let s = pg_timestamp_to_chrono(micros)
                .map(|t| t.format("%Y-%m-%d %H:%M:%S%.6f+00").to_string())
                .unwrap_or_else(|| "2000-01-01 00:00:00+00".into());
            self.last = Some((micros, s));
        }
        &self.last.as_ref().expect("set above").1
    }
}

/// Stages `changes` (row changes of `table`, in journal order).
pub fn stage(table: &Arc<SourceTable>, changes: &[&Change]) -> Stage {
    if table.is_keyless() {
        stage_multiset(table, changes)
    } else {
        stage_keyed(table, changes)
    }
}

fn key_bytes(t: &SourceTable, tuple: &TupleData) -> Vec<u8> {
    let mut out = Vec::new();
    for &i in &t.key {
        match tuple.columns.get(i) {
            Some(TupleValue::Text(b)) | Some(TupleValue::Binary(b)) => {
                out.push(1);
                out.extend_from_slice(&(b.len() as u32).to_le_bytes());
                out.extend_from_slice(b);
            }
            _ => out.push(0),
        }
    }
    out
}

struct KeyState {
    first_new: bool,
    last: usize,
    /// The key's values as of its last change (all unknown after a delete).
    image: Vec<Known>,
    /// Its values just before it was deleted: what a row moved from it takes.
    deleted: Option<Vec<Known>>,
}

struct Pending {
    key: usize,
    pos: Pos,
    op: Op,
    ts: i64,
    values: Vec<Known>,
    from: Option<Vec<Known>>,
}

fn stage_keyed(table: &Arc<SourceTable>, changes: &[&Change]) -> Stage {
    let n = table.columns.len();
    let mut keys: HashMap<Vec<u8>, usize> = HashMap::new();
    let mut states: Vec<KeyState> = Vec::new();
    let mut pending: Vec<Pending> = Vec::with_capacity(changes.len());
    for c in changes {
        let crate::change::Body::Row(rc) = &c.body else {
            continue;
        };
        let Some(identity) = rc.identity() else {
            continue;
        };
        let k = key_bytes(table, identity);
        let idx = *keys.entry(k).or_insert_with(|| {
            states.push(KeyState {
                first_new: matches!(rc.op, Op::Insert | Op::Snapshot),
                last: 0,
                image: vec![Known::Unknown; n],
                deleted: None,
            });
            states.len() - 1
        });
        let (values, from) = row_values(table, rc, &states[idx].image, &keys, &states);
        let state = &mut states[idx];
        state.last = pending.len();
        if rc.op == Op::Delete {
            state.deleted = Some(std::mem::replace(&mut state.image, vec![Known::Unknown; n]));
        } else {
            state.image = values.clone();
        }
        pending.push(Pending {
            key: idx,
            pos: c.pos,
            op: rc.op,
            ts: c.commit_ts,
            values,
            from,
        });
    }
    let mut columns = "_cdc_pos, _cdc_op, _cdc_last, _cdc_new, _cdc_keep, _cdc_ts".to_owned();
    for n in 1..=table.key.len() {
        columns.push_str(&format!(", _cdc_from_{n}"));
    }
    for c in &table.columns {
        columns.push_str(", ");
        columns.push_str(&ident(&c.name));
    }
    let mut stage = Stage {
        table: table.clone(),
        columns,
        data: Vec::with_capacity(pending.len() * 96),
        rows: Vec::with_capacity(pending.len()),
        has_keep: false,
        has_delete: false,
        only_inserts: true,
    };
    let mut ts = Timestamps::default();
    for (i, p) in pending.iter().enumerate() {
        let state = &states[p.key];
        let last = state.last == i;
        let out = &mut stage.data;
        let start = out.len();
        out.extend_from_slice(format!("{i}\t{}\t", p.op.code()).as_bytes());
        out.extend_from_slice(if last { b"t\t" } else { b"f\t" });
        out.extend_from_slice(if state.first_new { b"t\t" } else { b"f\t" });
        let keep: Vec<&str> = if p.op == Op::Delete {
            Vec::new()
        } else {
            p.values
                .iter()
                .zip(&table.columns)
                .filter(|(v, _)| **v == Known::Unknown)
                .map(|(_, c)| c.name.as_str())
                .collect()
        };
        if keep.is_empty() {
            out.extend_from_slice(b"\\N");
        } else {
            if last {
                stage.has_keep = true;
            }
            text_array(out, &keep);
        }
        out.push(b'\t');
        out.extend_from_slice(ts.text(p.ts).as_bytes());
        for (n, &k) in table.key.iter().enumerate() {
            out.push(b'\t');
            let v = p.from.as_ref().map_or(&Known::Null, |f| &f[n]);
            field(out, v);
            let _ = k;
        }
        for v in &p.values {
            out.push(b'\t');
            field(out, v);
        }
        out.push(b'\n');
        if last && p.op == Op::Delete {
            stage.has_delete = true;
        }
        if !state.first_new || p.op != Op::Insert && p.op != Op::Snapshot {
            stage.only_inserts = false;
        }
        stage.rows.push(StagedRow {
            start,
            end: out.len(),
            positions: vec![p.pos],
            op: p.op,
        });
    }
    stage
}

/// A change's column values, with what it did not carry filled from earlier in the run or the
/// old row; and, for the insert half of a key move whose values are incomplete, the old key.
fn row_values(
    table: &SourceTable,
    rc: &RowChange,
    image: &[Known],
    keys: &HashMap<Vec<u8>, usize>,
    states: &[KeyState],
) -> (Vec<Known>, Option<Vec<Known>>) {
    let n = table.columns.len();
    if rc.op == Op::Delete {
        let mut v = vec![Known::Null; n];
        if let Some(old) = &rc.old {
            for &k in &table.key {
                if let Some(x) = old.columns.get(k) {
                    v[k] = Known::of(x);
                }
            }
        }
        return (v, None);
    }
    let Some(new) = &rc.new else {
        return (vec![Known::Null; n], None);
    };
    // An insert that moves a row from another key looks its missing values up there.
    let moved_from = (rc.op == Op::Insert)
        .then_some(rc.old.as_ref())
        .flatten()
        .map(|old| {
            let img = keys.get(&key_bytes(table, old)).map(|&i| {
                let s = &states[i];
                s.deleted.as_deref().unwrap_or(s.image.as_slice())
            });
            (old, img)
        });
    let mut values: Vec<Known> = (0..n)
        .map(|i| new.columns.get(i).map_or(Known::Null, Known::of))
        .collect();
    for (i, v) in values.iter_mut().enumerate() {
        if *v != Known::Unknown {
            continue;
        }
        let earlier = match &moved_from {
            Some((_, Some(img))) => &img[i],
            Some((_, None)) => &Known::Unknown,
            None => &image[i],
        };
        if *earlier != Known::Unknown {
            *v = earlier.clone();
            continue;
        }
        let old = moved_from.map(|m| m.0).or(rc.old.as_ref());
        if let Some(x) = old.and_then(|o| o.columns.get(i)) {
            let k = Known::of(x);
            if k != Known::Unknown && (table.key.contains(&i) || !is_key_only(table, old)) {
                *v = k;
            }
        }
    }
    let from = match moved_from {
        Some((old, _)) if values.contains(&Known::Unknown) => Some(
            table
                .key
                .iter()
                .map(|&k| old.columns.get(k).map_or(Known::Null, Known::of))
                .collect(),
        ),
        _ => None,
    };
    (values, from)
}

/// Whether an old image holds only the key (its other columns are not the row's values).
fn is_key_only(table: &SourceTable, old: Option<&TupleData>) -> bool {
    table.identity != crate::decode::ReplicaIdentity::Full && old.is_some()
}

fn stage_multiset(table: &Arc<SourceTable>, changes: &[&Change]) -> Stage {
    let n = table.columns.len();
    let mut index: HashMap<Vec<Known>, usize> = HashMap::new();
    let mut nets: Vec<(Vec<Known>, i64, Vec<Pos>)> = Vec::new();
    let mut add = |img: Vec<Known>, delta: i64, pos: Pos| {
        let i = *index.entry(img.clone()).or_insert_with(|| {
            nets.push((img, 0, Vec::new()));
            nets.len() - 1
        });
        nets[i].1 += delta;
        if !nets[i].2.contains(&pos) {
            nets[i].2.push(pos);
        }
    };
    for c in changes {
        let crate::change::Body::Row(rc) = &c.body else {
            continue;
        };
        let full = |t: &TupleData| -> Vec<Known> {
            (0..n)
                .map(|i| t.columns.get(i).map_or(Known::Null, Known::of))
                .collect()
        };
        if let (Some(old), true) = (&rc.old, matches!(rc.op, Op::Update | Op::Delete)) {
            add(full(old), -1, c.pos);
        }
        if let (Some(new), true) = (
            &rc.new,
            matches!(rc.op, Op::Insert | Op::Update | Op::Snapshot),
        ) {
            let mut img = full(new);
            if let Some(old) = &rc.old {
                for (i, v) in img.iter_mut().enumerate() {
                    if *v == Known::Unknown {
                        *v = old.columns.get(i).map_or(Known::Null, Known::of);
                    }
                }
            }
            add(img, 1, c.pos);
        }
    }
    let mut columns = "_cdc_pos, _cdc_op, _cdc_n".to_owned();
    for c in &table.columns {
        columns.push_str(", ");
        columns.push_str(&ident(&c.name));
    }
    let mut stage = Stage {
        table: table.clone(),
        columns,
        data: Vec::new(),
        rows: Vec::new(),
        has_keep: false,
        has_delete: false,
        only_inserts: true,
    };
    for (img, count, positions) in nets.into_iter().filter(|n| n.1 != 0) {
        let op = if count > 0 { Op::Insert } else { Op::Delete };
        stage.has_delete |= op == Op::Delete;
        stage.only_inserts &= op == Op::Insert;
        let out = &mut stage.data;
        let start = out.len();
        let i = stage.rows.len();
        out.extend_from_slice(format!("{i}\t{}\t{}", op.code(), count.abs()).as_bytes());
        for v in &img {
            out.push(b'\t');
            // A value the change did not carry cannot be matched: left NULL.
            field(out, v);
        }
        out.push(b'\n');
        stage.rows.push(StagedRow {
            start,
            end: out.len(),
            positions,
            op,
        });
    }
    stage
}

fn field(out: &mut Vec<u8>, v: &Known) {
    match v {
        Known::Value(b) => copy_escape(out, b),
        Known::Null | Known::Unknown => out.extend_from_slice(b"\\N"),
    }
}

/// A text[] literal of names, as a COPY field.
fn text_array(out: &mut Vec<u8>, items: &[&str]) {
    let mut lit = Vec::new();
    lit.push(b'{');
    for (i, s) in items.iter().enumerate() {
        if i > 0 {
            lit.push(b',');
        }
        lit.push(b'"');
        for &b in s.as_bytes() {
            if b == b'"' || b == b'\\' {
                lit.push(b'\\');
            }
            lit.push(b);
        }
        lit.push(b'"');
    }
    lit.push(b'}');
    copy_escape(out, &lit);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::change::{Body, TxContext};
    use crate::lsn::Lsn;
    use crate::table::fixtures;

    fn text(s: &str) -> TupleValue {
        TupleValue::Text(Bytes::copy_from_slice(s.as_bytes()))
    }

    fn row(v: &[Option<&str>]) -> TupleData {
        TupleData {
            columns: v
                .iter()
                .map(|x| match x {
                    Some("<toast>") => TupleValue::UnchangedToast,
                    Some(s) => text(s),
                    None => TupleValue::Null,
                })
                .collect(),
        }
    }

    fn change(
        t: &Arc<SourceTable>,
        seq: i32,
        op: Op,
        old: Option<TupleData>,
        new: Option<TupleData>,
    ) -> Change {
        Change::new(
            TxContext {
                lsn: Lsn(100),
                xid: 1,
                commit_ts: 0,
            },
            seq,
            Body::Row(RowChange {
                table: t.clone(),
                op,
                old,
                new,
            }),
        )
    }

    fn lines(s: &Stage) -> Vec<String> {
        String::from_utf8(s.data.clone())
            .unwrap()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    const TS: &str = "2000-01-01 00:00:00.000000+00";

    #[test]
    fn last_change_new_keys_and_toast_filled_in_the_run() {
        let t = Arc::new(fixtures::products());
        let cs = [
            change(
                &t,
                1,
                Op::Insert,
                None,
                Some(row(&[
                    Some("1"),
                    Some("a"),
                    Some("2.50"),
                    Some("long"),
                    None,
                ])),
            ),
            change(
                &t,
                2,
                Op::Update,
                None,
                Some(row(&[
                    Some("1"),
                    Some("b"),
                    Some("2.50"),
                    Some("<toast>"),
                    None,
                ])),
            ),
            change(
                &t,
                3,
                Op::Update,
                None,
                Some(row(&[
                    Some("2"),
                    Some("c"),
                    Some("1"),
                    Some("<toast>"),
                    None,
                ])),
            ),
            change(
                &t,
                4,
                Op::Delete,
                Some(row(&[Some("3"), None, None, None, None])),
                None,
            ),
        ];
        let refs: Vec<&Change> = cs.iter().collect();
        let s = stage(&t, &refs);
        let l = lines(&s);
        assert_eq!(
            l[0],
            format!("0\ti\tf\tt\t\\N\t{TS}\t\\N\t1\ta\t2.50\tlong\t\\N")
        );
        assert_eq!(
            l[1],
            format!("1\tu\tt\tt\t\\N\t{TS}\t\\N\t1\tb\t2.50\tlong\t\\N")
        );
        assert_eq!(
            l[2],
            format!("2\tu\tt\tf\t{{\"description\"}}\t{TS}\t\\N\t2\tc\t1\t\\N\t\\N")
        );
        assert_eq!(
            l[3],
            format!("3\td\tt\tf\t\\N\t{TS}\t\\N\t3\t\\N\t\\N\t\\N\t\\N")
        );
        assert!(s.has_keep && s.has_delete && !s.only_inserts);
        assert_eq!(s.rows[2].positions[0].seq, 3);
        assert_eq!(s.subset(&[1]), format!("{}\n", l[1]).into_bytes());
    }

    #[test]
    fn a_moved_row_takes_its_missing_values_from_the_old_key() {
        let t = Arc::new(fixtures::products());
        let cs = [change(
            &t,
            2,
            Op::Insert,
            Some(row(&[Some("1"), None, None, None, None])),
            Some(row(&[
                Some("5"),
                Some("x"),
                Some("1"),
                Some("<toast>"),
                None,
            ])),
        )];
        let refs: Vec<&Change> = cs.iter().collect();
        let l = lines(&stage(&t, &refs));
        // description must come from replica row 1 (the old key), not NULL.
        assert_eq!(
            l[0],
            format!("0\ti\tt\tt\t{{\"description\"}}\t{TS}\t1\t5\tx\t1\t\\N\t\\N")
        );
    }

    #[test]
    fn a_row_moved_in_the_run_takes_the_values_its_old_key_had() {
        let t = Arc::new(fixtures::products());
        let key1 = || row(&[Some("1"), None, None, None, None]);
        let cs = [
            change(
                &t,
                1,
                Op::Insert,
                None,
                Some(row(&[Some("1"), Some("a"), Some("1"), Some("long"), None])),
            ),
            change(&t, 2, Op::Delete, Some(key1()), None),
            change(
                &t,
                3,
                Op::Insert,
                Some(key1()),
                Some(row(&[
                    Some("5"),
                    Some("b"),
                    Some("1"),
                    Some("<toast>"),
                    None,
                ])),
            ),
        ];
        let refs: Vec<&Change> = cs.iter().collect();
        let s = stage(&t, &refs);
        assert!(!s.has_keep);
        assert!(
            lines(&s)[2].ends_with("\t5\tb\t1\tlong\t\\N"),
            "{:?}",
            lines(&s)
        );
    }

    #[test]
    fn full_identity_old_row_fills_unchanged_toast() {
        let mut t = fixtures::products();
        t.identity = crate::decode::ReplicaIdentity::Full;
        let t = Arc::new(t);
        let old = row(&[Some("1"), Some("a"), Some("1"), Some("kept"), None]);
        let new = row(&[Some("1"), Some("b"), Some("1"), Some("<toast>"), None]);
        let cs = [change(&t, 1, Op::Update, Some(old), Some(new))];
        let refs: Vec<&Change> = cs.iter().collect();
        let s = stage(&t, &refs);
        assert!(!s.has_keep);
        assert!(lines(&s)[0].ends_with("\t1\tb\t1\tkept\t\\N"));
    }

    #[test]
    fn multiset_nets_keep_duplicates_and_delete_one() {
        let t = Arc::new(fixtures::keyless());
        let a = || row(&[Some("x"), None]);
        let cs = [
            change(&t, 1, Op::Insert, None, Some(a())),
            change(&t, 2, Op::Insert, None, Some(a())),
            change(&t, 3, Op::Insert, None, Some(a())),
            change(&t, 4, Op::Delete, Some(a()), None),
            change(
                &t,
                5,
                Op::Update,
                Some(row(&[Some("y"), Some("n")])),
                Some(row(&[Some("y"), Some("m")])),
            ),
        ];
        let refs: Vec<&Change> = cs.iter().collect();
        let s = stage(&t, &refs);
        let l = lines(&s);
        assert_eq!(l, vec!["0\ti\t2\tx\t\\N", "1\td\t1\ty\tn", "2\ti\t1\ty\tm"]);
        assert_eq!(s.rows[0].positions.len(), 4);
    }

    #[test]
    fn escapes_and_names() {
        let mut out = Vec::new();
        field(&mut out, &Known::Value(Bytes::from_static(b"a\tb\\c\nd")));
        assert_eq!(out, b"a\\tb\\\\c\\nd");
        let mut arr = Vec::new();
        text_array(&mut arr, &["we\"ird", "x"]);
        assert_eq!(arr, b"{\"we\\\\\"ird\",\"x\"}");
        let t = fixtures::products();
        assert_eq!(stage_name(&t), "stage_products");
        let mut long = t.clone();
        long.replica = "x".repeat(80).into();
        assert!(stage_name(&long).len() <= 63);
        assert!(create_sql(&t).contains("_cdc_from_1 bigint, \"id\" bigint"));
    }
}
