//! `brewlytics replay --from-lsn LSN`: rebuild replica and star tables from the journal, on
//! the same set-based path the stream takes (typed stage tables, the last change per key, the
//! star for what each run touched).
//!
//! From an LSN at or before the latest initial copy (op `r`, xid 0), the replica and star
//! tables are emptied and rebuilt from that copy onward: the journal alone rebuilds OLAP.
//! The journal's schema events (op `s`) are applied again in their place, as the stream did:
//! each replica table takes the shape it had at the copy, then every change of shape after it
//! (the star's inputs following each, values of dropped columns kept where they were), so the
//! star is rebuilt as it was streamed. From a later LSN, the events after it are applied again
//! over the current state, which leaves it as it is when nothing was lost; images written
//! before a column was renamed are then read with the column's current name (schema events
//! carry the source attnums). Backfill chunks are merged again as the stream merged them.
//! Running it twice changes nothing.

use std::collections::HashMap;
use std::sync::Arc;

use sqlx::PgConnection;

use crate::change::{Body, Change, Op, Pos, SchemaChange};
use crate::lsn::Lsn;
use crate::schema::plan::{self, Knowledge};
use crate::schema::store;
use crate::sink::olap::backfill::{replace_range, Snapshot, Within};
use crate::sink::olap::encode::encode;
use crate::sink::olap::journal::{self, table_from_json, JournalEncoder, JournalRow};
use crate::sink::olap::{ApplyError, OlapWriter, OnError};
use crate::table::{ident, SourceTable, REPLICA_SCHEMA};
use brewlytics_support::DbUrl;

const CHUNK: i64 = 20_000;

#[derive(Debug, Default)]
pub struct ReplayStats {
    pub events: u64,
    pub rebuilt: bool,
    pub from: Lsn,
}

/// Star tables emptied by a full rebuild (the walk-in customer member is kept).
pub const STAR_RESET: [&str; 5] = [
    "truncate fact_sales, fact_payments, fact_inventory",
    "delete from dim_product",
    "delete from dim_store",
    "delete from dim_employee",
    "delete from dim_customer where customer_key <> 0",
];

/// Each table's shapes over the journal (from its schema events), and how a shape's column
/// names map to the current ones.
struct History {
    current: HashMap<(String, String), Arc<SourceTable>>,
    shapes: HashMap<(String, String), Vec<(Pos, SourceTable)>>,
}

impl History {
    async fn load(conn: &mut PgConnection) -> Result<Self, ApplyError> {
        let current = store::load_all(conn)
            .await?
            .into_iter()
            .map(|t| ((t.schema.to_string(), t.name.to_string()), Arc::new(t)))
            .collect();
        let rows: Vec<(String, i32, String)> = sqlx::query_as(
            "select e.lsn::text, e.seq, e.after::text from cdc_events e where e.op = 's'
             order by e.lsn, e.seq",
        )
        .fetch_all(&mut *conn)
        .await?;
        let mut shapes: HashMap<(String, String), Vec<(Pos, SourceTable)>> = HashMap::new();
        for (lsn, seq, after) in rows {
            let (Ok(lsn), Ok(v)) = (lsn.parse(), serde_json::from_str(&after)) else {
                continue;
            };
            if let Some(t) = table_from_json(&v) {
                shapes
                    .entry((t.schema.to_string(), t.name.to_string()))
                    .or_default()
                    .push((Pos { lsn, seq }, t));
            }
        }
        Ok(Self { current, shapes })
    }

    /// Old column name → current name, for images written at `at`.
    fn renamed(&self, key: &(String, String), at: Pos) -> HashMap<String, String> {
        let (Some(now), Some(list)) = (self.current.get(key), self.shapes.get(key)) else {
            return HashMap::new();
        };
        let Some((_, then)) = list.iter().rev().find(|(p, _)| *p <= at) else {
            return HashMap::new();
        };
        then.columns
            .iter()
            .filter_map(|c| {
                let a = c.attnum?;
                let n = now.columns.iter().find(|x| x.attnum == Some(a))?;
                (n.name != c.name).then(|| (c.name.clone(), n.name.clone()))
            })
            .collect()
    }
}

/// What the journal's reader hands the writer.
enum Piece {
    /// Changes in journal order; whether their last source transaction goes on in the next
    /// piece (its star work then waits for the piece that ends it).
    Changes(Vec<crate::change::Change>, bool),
    /// A backfill chunk's watermark: merged again in its place.
    Merge(Arc<SourceTable>, JournalRow),
}

/// Replays the journal of the OLAP database at `url`: one connection reads the journal (and
/// turns its rows into changes) while another applies the previous piece.
pub async fn replay(url: &DbUrl, from: Lsn) -> Result<ReplayStats, ApplyError> {
    replay_in_pieces(url, from, CHUNK).await
}

/// [`replay`], reading the journal `piece_rows` changes at a time: a source transaction
/// longer than that is applied in parts, its star work once it is whole.
pub async fn replay_in_pieces(
    url: &DbUrl,
    from: Lsn,
    piece_rows: i64,
) -> Result<ReplayStats, ApplyError> {
    use sqlx::Connection;
    let mut w = OlapWriter::connect(url, OnError::DeadLetter).await?;
    w.set_replaying();
    let mut reader = PgConnection::connect_with(&url.connect_options()?).await?;
    w.begin().await?;
    // The replica gate alone (see OlapWriter::begin): a replicator's batch in flight finishes
    // first, the next waits for the replay to commit.
    sqlx::query("select pg_advisory_xact_lock(hashtext('brewlytics replica'))")
        .execute(w.conn())
        .await?;
    // No compaction while the journal is read (see crate::journal::compact); before its
    // latest cut, the history is gone.
    sqlx::query(crate::journal::compact::LOCK_SHARED)
        .execute(w.conn())
        .await?;
    if let Some(earliest) = crate::journal::compact::replayable_from(w.conn()).await? {
        if from < earliest {
            return Err(ApplyError::Compacted { from, earliest });
        }
    }
    // A compaction's images are the state at its cut, not a copy to rebuild from.
    let images = crate::journal::compact::image_cuts(w.conn()).await?;
    let latest_copy: Option<String> = sqlx::query_scalar(
        "select max(lsn)::text from cdc_events
         where op = 'r' and coalesce(xid, 0) = 0 and lsn <> all ($1::text[]::pg_lsn[])",
    )
    .bind(images.iter().map(|l| l.to_string()).collect::<Vec<_>>())
    .fetch_one(w.conn())
    .await?;
    let latest_copy: Option<Lsn> = latest_copy.and_then(|l| l.parse().ok());
    let mut stats = ReplayStats {
        from,
        ..Default::default()
    };
    let mut pos = Pos {
        lsn: from,
        seq: i32::MIN,
    };
    if let Some(copy) = latest_copy.filter(|c| from <= *c) {
        stats.rebuilt = true;
        reset_replica_and_star(w.conn()).await?;
        pos = Pos {
            lsn: copy,
            seq: i32::MIN,
        };
        stats.from = copy;
    }
    let history = History::load(w.conn()).await?;
    let rebuilt = stats.rebuilt;
    // Rebuilding, each table's shape at the position read: the replica's now (emptied), then
    // each schema event's.
    let mut shapes = Shapes::new(&history.current);
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Piece>(2);
    let read = async move {
        let mut renamed_cache: HashMap<(String, String), (Pos, HashMap<String, String>)> =
            HashMap::new();
        let mut merged_at: Option<Lsn> = None;
        let mut events = 0u64;
        // The changes of a transaction the last piece cut, carried into this one.
        let mut carried = Vec::new();
        loop {
            let rows = journal::read_after(&mut reader, pos, piece_rows.max(1)).await?;
            let Some(last) = rows.last() else { break };
            pos = last.pos;
            events += rows.len() as u64;
            let mut changes: Vec<Change> = std::mem::take(&mut carried);
            for row in rows {
                if row.pos.seq < 0 && images.contains(&row.pos.lsn) {
                    // Applying the state at a cut again is no change: what follows it is.
                    continue;
                }
                let key = (row.schema.clone(), row.table.clone());
                if rebuilt && row.op == Op::Schema {
                    if let Some(c) = shapes.change(&row) {
                        changes.push(c);
                    }
                    continue;
                }
                let table = if rebuilt {
                    shapes.at(&key)
                } else {
                    history.current.get(&key)
                };
                let Some(table) = table.cloned() else {
                    continue;
                };
                if row.op == Op::Backfill {
                    merged_at = Some(row.pos.lsn);
                    let done = std::mem::take(&mut changes);
                    if tx.send(Piece::Changes(done, false)).await.is_err()
                        || tx.send(Piece::Merge(table.clone(), row)).await.is_err()
                    {
                        return Ok(events);
                    }
                    continue;
                }
                if row.op == Op::Snapshot && row.xid != 0 && merged_at == Some(row.pos.lsn) {
                    // A backfill chunk's rows: merged with its watermark.
                    continue;
                }
                let renamed = match renamed_cache.get(&key) {
                    _ if rebuilt => HashMap::new(),
                    Some((at, map)) if shape_unchanged(&history, &key, *at, row.pos) => map.clone(),
                    _ => {
                        let map = history.renamed(&key, row.pos);
                        renamed_cache.insert(key.clone(), (row.pos, map.clone()));
                        map
                    }
                };
                match row.to_change(&table, &renamed) {
                    Ok(Some(c)) => changes.push(c),
                    Ok(None) => {}
                    Err(e) => {
                        tracing::warn!(lsn = %row.pos.lsn, seq = row.pos.seq, error = %e,
                            "journal event skipped: its image cannot be read");
                    }
                }
            }
            // A transaction's changes share its position. One cut by the read limit goes
            // with the next piece whole; one longer than a piece is applied in parts, and the
            // star follows it once it is whole (an order's lines may come before the order,
            // as in an initial copy).
            let mut ends_inside = journal::continues_at(&mut reader, pos).await?;
            if ends_inside {
                let cut = changes.partition_point(|c| c.pos.lsn < pos.lsn);
                if cut > 0 {
                    carried = changes.split_off(cut);
                    ends_inside = false;
                }
            }
            if tx.send(Piece::Changes(changes, ends_inside)).await.is_err() {
                break;
            }
        }
        if !carried.is_empty() && tx.send(Piece::Changes(carried, false)).await.is_err() {
            return Ok(events);
        }
        // Whatever shape the journal leaves a table in, it ends as the replica knows it now.
        if rebuilt {
            let last = Pos {
                lsn: pos.lsn,
                seq: i32::MAX,
            };
            let back = shapes.back_to(&history.current, last);
            if !back.is_empty() && tx.send(Piece::Changes(back, false)).await.is_err() {
                return Ok(events);
            }
        }
        Ok::<_, ApplyError>(events)
    };
    let apply = async {
        let mut encoder = JournalEncoder::default();
        while let Some(piece) = rx.recv().await {
            match piece {
                Piece::Changes(changes, ends_inside) => {
                    apply_changes(&mut w, &mut encoder, changes, ends_inside).await?
                }
                Piece::Merge(table, row) => merge_again(&mut w, &table, &row).await?,
            }
        }
        Ok::<_, ApplyError>(())
    };
    let (read, applied) = tokio::join!(read, apply);
    applied?;
    stats.events = read?;
    w.commit_without_checkpoint().await?;
    Ok(stats)
}

/// Each table's shape at the position replay has read to (a rebuild), keyed by its source
/// name then (a renamed table's old changes are under its old name).
struct Shapes {
    now: HashMap<(String, String), Arc<SourceTable>>,
}

impl Shapes {
    fn new(current: &HashMap<(String, String), Arc<SourceTable>>) -> Self {
        Self {
            now: current.clone(),
        }
    }

    fn at(&self, key: &(String, String)) -> Option<&Arc<SourceTable>> {
        self.now.get(key)
    }

    /// A schema event: the replica goes from the table's shape so far to the event's.
    fn change(&mut self, row: &JournalRow) -> Option<Change> {
        let v: serde_json::Value = serde_json::from_str(row.after.as_deref()?).ok()?;
        let after = Arc::new(table_from_json(&v)?);
        let key = (after.schema.to_string(), after.name.to_string());
        let before = self.take(&key, after.oid);
        self.now.insert(key, after.clone());
        Some(schema_change(
            before,
            after,
            row.pos,
            row.xid,
            row.commit_ts,
        ))
    }

    /// The table `key` (or the one with `oid`, renamed since) out of the map.
    fn take(&mut self, key: &(String, String), oid: u32) -> Option<Arc<SourceTable>> {
        if let Some(t) = self.now.remove(key) {
            return Some(t);
        }
        let old = self
            .now
            .iter()
            .find(|(_, t)| oid != 0 && t.oid == oid)
            .map(|(k, _)| k.clone())?;
        self.now.remove(&old)
    }

    /// Changes taking every table from its shape so far to `current`'s.
    fn back_to(
        &mut self,
        current: &HashMap<(String, String), Arc<SourceTable>>,
        at: Pos,
    ) -> Vec<Change> {
        let mut out = Vec::new();
        for (key, t) in current {
            let before = self.take(key, t.oid);
            if before.as_deref() != Some(&**t) {
                out.push(schema_change(before, t.clone(), at, 0, 0));
            }
        }
        out
    }
}

/// The replica following a table from `before` to `after`, as a journal change would.
fn schema_change(
    before: Option<Arc<SourceTable>>,
    after: Arc<SourceTable>,
    pos: Pos,
    xid: u32,
    commit_ts: i64,
) -> Change {
    let know = Knowledge {
        exact: true,
        ..Default::default()
    };
    let steps = match before.as_deref() {
        Some(b) => plan::plan(Some(b), &after, &know).steps,
        None => vec![crate::schema::plan::Step::CreateTable],
    };
    Change {
        pos,
        xid,
        commit_ts,
        body: Body::Schema(Arc::new(SchemaChange {
            before,
            after,
            steps,
            backfill: None,
        })),
    }
}

fn shape_unchanged(h: &History, key: &(String, String), a: Pos, b: Pos) -> bool {
    h.shapes
        .get(key)
        .is_none_or(|list| !list.iter().any(|(p, _)| *p > a && *p <= b))
}

async fn apply_changes(
    w: &mut OlapWriter,
    encoder: &mut JournalEncoder,
    changes: Vec<crate::change::Change>,
    ends_inside: bool,
) -> Result<(), ApplyError> {
    let encoded = encode(encoder, &changes);
    w.apply_journaled(&encoded.segments, ends_inside).await
}

/// A backfill chunk merged again from its journaled rows, as the stream merged it.
async fn merge_again(
    w: &mut OlapWriter,
    table: &Arc<SourceTable>,
    b: &JournalRow,
) -> Result<(), ApplyError> {
    type Chunk = (
        Option<Vec<String>>,
        Option<Vec<String>>,
        String,
        String,
        Option<String>,
        Option<String>,
    );
    let chunk: Option<Chunk> = sqlx::query_as(
        "select lo, hi, snapshot, from_lsn::text, scope, kept from cdc_backfill_chunks
         where merged_lsn = $1::pg_lsn and attempt = ($2::json ->> 'attempt')",
    )
    .bind(b.pos.lsn.to_string())
    .bind(b.after.as_deref().unwrap_or("{}"))
    .fetch_optional(w.conn())
    .await?;
    let Some((lo, hi, snapshot, from_lsn, scope, kept)) = chunk else {
        return Ok(());
    };
    // The chunk's rows, from the journal, into a temporary table shaped like the replica.
    let tmp = "pg_temp.cdc_replay_chunk";
    sqlx::query(&format!("drop table if exists {tmp}"))
        .execute(w.conn())
        .await?;
    sqlx::query(&format!(
        "create temp table cdc_replay_chunk (_cdc_row bigint, like {})",
        table.replica_ident()
    ))
    .execute(w.conn())
    .await?;
    let rows: Vec<(i32, Option<String>, Vec<String>)> = sqlx::query_as(
        "select seq, after::text, coalesce(json_nulls, '{}') from cdc_events
         where lsn = $1::pg_lsn and op = 'r' order by seq",
    )
    .bind(b.pos.lsn.to_string())
    .fetch_all(w.conn())
    .await?;
    let cols: Vec<String> = table.columns.iter().map(|c| ident(&c.name)).collect();
    let mut data = Vec::new();
    let mut spans = Vec::new();
    for (seq, after, nulls) in rows {
        let Some(after) = after else { continue };
        let Ok(t) = crate::image::parse(table, &after, &nulls, &HashMap::new()) else {
            continue;
        };
        let start = data.len();
        data.extend_from_slice(seq.to_string().as_bytes());
        for v in &t.columns {
            data.push(b'\t');
            match v.data() {
                Some(d) => crate::image::copy_escape(&mut data, d),
                None => data.extend_from_slice(b"\\N"),
            }
        }
        data.push(b'\n');
        spans.push((start, data.len()));
    }
    let sql = format!("copy {tmp} (_cdc_row, {}) from stdin", cols.join(", "));
    w.copy_checked(&sql, &data, &spans).await?;
    let within = Within { scope, kept };
    replace_range(w, table, tmp, lo.as_deref(), hi.as_deref(), &within).await?;
    // Changes the chunk's snapshot did not see, again on top.
    let from: Lsn = from_lsn.parse().unwrap_or(b.pos.lsn);
    let snapshot = Snapshot::parse(&snapshot);
    let rows = journal::read_table_range(w.conn(), &table.schema, &table.name, from, b.pos).await?;
    let changes: Vec<_> = rows
        .iter()
        .filter(|r| !snapshot.as_ref().is_some_and(|s| s.sees(r.xid)))
        .filter_map(|r| r.to_change(table, &HashMap::new()).ok().flatten())
        .collect();
    apply_changes(w, &mut JournalEncoder::default(), changes, false).await
}

/// Empties every replica table and the star schema (not the journal).
pub async fn reset_replica_and_star(conn: &mut PgConnection) -> Result<(), sqlx::Error> {
    let tables: Vec<String> =
        sqlx::query_scalar("select tablename::text from pg_tables where schemaname = $1")
            .bind(REPLICA_SCHEMA)
            .fetch_all(&mut *conn)
            .await?;
    for t in tables {
        let sql = format!("truncate {}.{}", ident(REPLICA_SCHEMA), ident(&t));
        sqlx::query(&sql).execute(&mut *conn).await?;
    }
    for sql in STAR_RESET {
        sqlx::query(sql).execute(&mut *conn).await?;
    }
    crate::star::store::reset(conn).await
}
