//! Backfills on the OLAP side: requesting one (in the transaction of the change that needs
//! it), and merging a copied chunk into the replica at its high watermark in the stream.
//!
//! The worker (source/backfill.rs) copies a chunk of rows under a source snapshot S into
//! `cdc_staging.chunk_<id>`, records S and a position `from_lsn` before which every
//! transaction S does not see had not committed, then emits the high watermark through the
//! slot. When the stream reaches it, the chunk replaces the replica's rows in its key range
//! (rows the range has and the chunk lacks are deleted), and the changes of the table
//! between `from_lsn` and the watermark made by transactions S does not see are applied again
//! on top — so the range holds exactly the source's state at the watermark.

use std::sync::Arc;

use sqlx::PgConnection;

use super::encode::encode;
use super::journal::{self, JournalEncoder};
use super::stage::stage_name;
use super::{merge, ApplyError, OlapWriter};
use crate::change::{ChunkMerge, Pos};
use crate::lsn::Lsn;
use crate::table::{ident, SourceTable};

pub const STAGING_SCHEMA: &str = "cdc_staging";

/// The table a backfill's chunks are copied into.
pub fn chunk_table(backfill_id: i64) -> String {
    format!(
        "{}.{}",
        ident(STAGING_SCHEMA),
        ident(&format!("chunk_{backfill_id}"))
    )
}

/// `create unlogged table` of a backfill's chunk table: a row number, the journal images
/// (rendered by the worker as the stream renders them) and the table's columns.
pub fn chunk_table_sql(backfill_id: i64, t: &SourceTable) -> String {
    let mut defs = vec![
        "_cdc_row bigint".to_owned(),
        "_cdc_key json".to_owned(),
        "_cdc_image json".to_owned(),
        "_cdc_nulls text[]".to_owned(),
    ];
    defs.extend(
        t.columns
            .iter()
            .map(|c| format!("{} {}", ident(&c.name), c.olap_type)),
    );
    format!(
        "create unlogged table {} ({})",
        chunk_table(backfill_id),
        defs.join(", ")
    )
}

/// What a chunk's merge replaces of the replica beyond its key range: the rows satisfying
/// `scope` (a partition's constraint; None: every row), except those satisfying `kept` (the
/// rows of detached partitions kept as history; None: none). Both are the source's own
/// predicates over the table's columns, checked by the worker to hold in OLAP.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Within {
    pub scope: Option<String>,
    pub kept: Option<String>,
}

impl Within {
    /// The condition a replica row must meet to be replaced (None: no condition).
    pub fn condition(&self) -> Option<String> {
        let mut parts = Vec::new();
        if let Some(s) = &self.scope {
            parts.push(format!("coalesce(({s}), false)"));
        }
        if let Some(k) = &self.kept {
            parts.push(format!("not coalesce(({k}), false)"));
        }
        (!parts.is_empty()).then(|| parts.join(" and "))
    }
}

/// Requests a copy of `t` (one at a time per table). `restart`: an active backfill of the
/// table was copying columns that no longer are: it is cancelled and a new one requested.
pub async fn request(
    conn: &mut PgConnection,
    t: &SourceTable,
    reason: &str,
    restart: bool,
) -> Result<(), sqlx::Error> {
    if restart {
        sqlx::query(
            "update cdc_backfills set state = 'cancelled', finished_at = now(), updated_at = now(),
                    error = 'the table''s columns or row filter changed: copied again by a new backfill'
             where source_schema = $1 and source_table = $2 and state in ('pending', 'running')",
        )
        .bind(t.schema.as_ref())
        .bind(t.name.as_ref())
        .execute(&mut *conn)
        .await?;
    }
    sqlx::query(
        "insert into cdc_backfills (source_schema, source_table, reason) values ($1, $2, $3)
         on conflict (source_schema, source_table) where state in ('pending', 'running')
                                                      and scope is null do nothing",
    )
    .bind(t.schema.as_ref())
    .bind(t.name.as_ref())
    .bind(reason)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// A source snapshot (`pg_snapshot` text: `xmin:xmax:xip,…`), to tell which transactions it
/// sees.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Snapshot {
    pub xmin: u64,
    pub xmax: u64,
    pub xip: Vec<u64>,
}

impl Snapshot {
    pub fn parse(s: &str) -> Option<Self> {
        let mut parts = s.split(':');
        let xmin = parts.next()?.parse().ok()?;
        let xmax = parts.next()?.parse().ok()?;
        let xip = match parts.next() {
            Some("") | None => Vec::new(),
            Some(list) => list
                .split(',')
                .map(|x| x.parse().ok())
                .collect::<Option<Vec<u64>>>()?,
        };
        Some(Self { xmin, xmax, xip })
    }

    /// Whether the transaction with 32-bit id `xid` (as pgoutput sends it; a recent one)
    /// had committed for this snapshot.
    pub fn sees(&self, xid: u32) -> bool {
        let epoch = self.xmax >> 32;
        let mut full = (epoch << 32) | u64::from(xid);
        if full > self.xmax + (1 << 31) && epoch > 0 {
            full -= 1 << 32;
        }
        full < self.xmin || (full < self.xmax && !self.xip.contains(&full))
    }
}

/// Merges a chunk at its watermark `pos` (see the module docs). A watermark whose chunk is
/// not waiting (an attempt given up, or one already merged) changes nothing.
pub async fn merge(w: &mut OlapWriter, m: &ChunkMerge, pos: Pos) -> Result<(), ApplyError> {
    type Chunk = (
        Option<Vec<String>>,
        Option<Vec<String>>,
        String,
        String,
        i64,
        Option<String>,
        Option<String>,
    );
    let chunk: Option<Chunk> = sqlx::query_as(
        "select lo, hi, snapshot, from_lsn::text, rows, scope, kept from cdc_backfill_chunks
         where backfill_id = $1 and attempt = $2 and merged_at is null",
    )
    .bind(m.backfill_id)
    .bind(&m.attempt)
    .fetch_optional(w.conn())
    .await?;
    let Some((lo, hi, snapshot, from_lsn, rows, scope, kept)) = chunk else {
        return Ok(());
    };
    let within = Within { scope, kept };
    let t = &m.table;
    let source = chunk_table(m.backfill_id);
    if !same_columns(w.conn(), &source, &t.replica_ident()).await? {
        // The table's columns changed between the chunk's copy and its watermark (a DDL the
        // stream has followed since): the copy starts again with the columns as they are.
        tracing::info!(table = %t.qualified_source(),
            "the table's columns changed while a backfill chunk was copied: copying it again");
        request(
            w.conn(),
            t,
            "the table's columns changed during its copy",
            true,
        )
        .await?;
        sqlx::query(&format!("drop table if exists {source}"))
            .execute(w.conn())
            .await?;
        return Ok(());
    }
    replace_range(w, t, &source, lo.as_deref(), hi.as_deref(), &within).await?;
    // The chunk's rows are journaled as copies (op r) after the watermark's own event.
    sqlx::query(&format!(
        "insert into cdc_events (lsn, seq, xid, commit_ts, source_schema, source_table, op, key,
                                 before, after, json_nulls)
         select b.lsn, b.seq + c._cdc_row::integer, b.xid, b.commit_ts, b.source_schema,
                b.source_table, 'r', c._cdc_key, null, c._cdc_image, c._cdc_nulls
         from {source} c,
              (select * from cdc_events where lsn = $1::pg_lsn and seq = $2) b
         on conflict (lsn, seq) do nothing"
    ))
    .bind(pos.lsn.to_string())
    .bind(pos.seq)
    .execute(w.conn())
    .await?;
    let snapshot = Snapshot::parse(&snapshot);
    let from: Lsn = from_lsn.parse().unwrap_or(pos.lsn);
    reapply(w, t, from, pos, snapshot.as_ref()).await?;
    sqlx::query(
        "update cdc_backfill_chunks set merged_at = now(), merged_lsn = $3::pg_lsn
         where backfill_id = $1 and attempt = $2",
    )
    .bind(m.backfill_id)
    .bind(&m.attempt)
    .bind(pos.lsn.to_string())
    .execute(w.conn())
    .await?;
    sqlx::query(
        "update cdc_backfills
         set last_key = $2, chunks_merged = chunks_merged + 1, rows_copied = rows_copied + $3,
             state = case when $2::text[] is null then 'done' else 'running' end,
             finished_at = case when $2::text[] is null then now() end, updated_at = now()
         where id = $1 and state in ('pending', 'running')",
    )
    .bind(m.backfill_id)
    .bind(&hi)
    .bind(rows)
    .execute(w.conn())
    .await?;
    let sql = if hi.is_none() {
        format!("drop table if exists {source}")
    } else {
        format!("truncate {source}")
    };
    sqlx::query(&sql).execute(w.conn()).await?;
    Ok(())
}

/// Whether two tables have the same columns, names and types (the bookkeeping `_cdc_*`
/// columns and the generated columns OLAP computes aside).
async fn same_columns(conn: &mut PgConnection, a: &str, b: &str) -> Result<bool, sqlx::Error> {
    let sql = r"select coalesce(array_agg(attname::text || ' ' || format_type(atttypid, atttypmod)
                                 order by attname), '{}')
                from pg_attribute
                where attrelid = $1::regclass and attnum > 0 and not attisdropped
                  and attgenerated = '' and attname::text not like '\_cdc\_%'";
    let left: Vec<String> = sqlx::query_scalar(sql)
        .bind(a)
        .fetch_one(&mut *conn)
        .await?;
    let right: Vec<String> = sqlx::query_scalar(sql)
        .bind(b)
        .fetch_one(&mut *conn)
        .await?;
    Ok(left == right)
}

/// The replica's rows in the key range `(lo, hi]` (and `within`) become `source`'s (a table
/// or query with the table's columns and `_cdc_row`): rows there and not in `source` are
/// deleted, the others upserted — through the stage table, so the star follows. Without a
/// key: the whole table (`within`).
pub async fn replace_range(
    w: &mut OlapWriter,
    t: &Arc<SourceTable>,
    source: &str,
    lo: Option<&[String]>,
    hi: Option<&[String]>,
    within: &Within,
) -> Result<(), ApplyError> {
    let cols: Vec<String> = t.columns.iter().map(|c| ident(&c.name)).collect();
    let r = t.replica_ident();
    let condition = within.condition();
    if t.is_keyless() {
        let filter = condition
            .as_ref()
            .map_or(String::new(), |c| format!(" where {c}"));
        sqlx::query(&format!("delete from {r}{filter}"))
            .execute(w.conn())
            .await?;
        sqlx::query(&format!(
            "insert into {r} ({c}) select {c} from {source}",
            c = cols.join(", ")
        ))
        .execute(w.conn())
        .await?;
        return Ok(());
    }
    let star = w.star_sources().await?;
    let is_star = star.iter().any(|n| n == t.replica.as_ref());
    w.ensure_stage(t).await?;
    if is_star {
        for name in &star {
            if name != t.replica.as_ref() {
                w.ensure_star_stage(name).await?;
            }
        }
    }
    let stage = format!("pg_temp.{}", ident(&stage_name(t)));
    sqlx::query(&format!(
        "insert into {stage} (_cdc_pos, _cdc_op, _cdc_last, _cdc_new, _cdc_ts, {c})
         select _cdc_row, 'r', true, false, now(), {c} from {source}",
        c = cols.join(", ")
    ))
    .execute(w.conn())
    .await?;
    let key: Vec<String> = t.key_names().iter().map(|k| ident(k)).collect();
    let typed = |param: usize| -> String {
        t.key
            .iter()
            .enumerate()
            .map(|(n, &k)| format!("(${param}::text[])[{}]::{}", n + 1, t.columns[k].olap_type))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let r_key = key
        .iter()
        .map(|k| format!("r.{k}"))
        .collect::<Vec<_>>()
        .join(", ");
    let mut range = Vec::new();
    if lo.is_some() {
        range.push(format!("row({r_key}) > row({})", typed(1)));
    }
    if hi.is_some() {
        range.push(format!("row({r_key}) <= row({})", typed(2)));
    }
    // Its own columns' names: the predicates read the replica row `r`.
    range.extend(condition);
    range.push(format!(
        "not exists (select 1 from {source} c where {})",
        key.iter()
            .map(|k| format!("c.{k} = r.{k}"))
            .collect::<Vec<_>>()
            .join(" and ")
    ));
    sqlx::query(&format!(
        "insert into {stage} (_cdc_pos, _cdc_op, _cdc_last, _cdc_new, _cdc_ts, {k})
         select -row_number() over (), 'd', true, false, now(), {r_key} from {r} r where {}",
        range.join(" and "),
        k = key.join(", "),
    ))
    .bind(lo)
    .bind(hi)
    .execute(w.conn())
    .await?;
    if is_star {
        // (copied rows: no insert times to keep; rows the star cannot read are listed)
        w.star_note_batch(&[]).await?;
        w.star_call("select star_before()").await?;
    }
    for sql in merge::merge_sql(t, true) {
        sqlx::query(&sql).execute(w.conn()).await?;
    }
    if is_star {
        w.star_call("select star_after()").await?;
    }
    Ok(())
}

/// Applies again the table's changes from `from` up to `to` that `snapshot` did not see
/// (all of them without a snapshot).
async fn reapply(
    w: &mut OlapWriter,
    t: &Arc<SourceTable>,
    from: Lsn,
    to: Pos,
    snapshot: Option<&Snapshot>,
) -> Result<(), ApplyError> {
    let rows = journal::read_table_range(w.conn(), &t.schema, &t.name, from, to).await?;
    let renamed = Default::default();
    let mut changes = Vec::new();
    for row in rows {
        if snapshot.is_some_and(|s| s.sees(row.xid)) {
            continue;
        }
        if let Ok(Some(c)) = row.to_change(t, &renamed) {
            changes.push(c);
        }
    }
    if changes.is_empty() {
        return Ok(());
    }
    let encoded = encode(&mut JournalEncoder::default(), &changes);
    Box::pin(w.apply_segments(&encoded.segments)).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_visibility() {
        let s = Snapshot::parse("100:110:102,105").unwrap();
        assert_eq!(s.xip, vec![102, 105]);
        assert!(s.sees(99));
        assert!(s.sees(101));
        assert!(!s.sees(102));
        assert!(!s.sees(110));
        assert!(!s.sees(200));
        let empty = Snapshot::parse("7:7:").unwrap();
        assert!(empty.sees(6) && !empty.sees(7));
        // Across an epoch: xmax in epoch 1, an xid of the previous epoch's end.
        let e = Snapshot::parse(&format!("{}:{}:", (1u64 << 32) + 5, (1u64 << 32) + 10)).unwrap();
        assert!(e.sees(u32::MAX - 3));
        assert!(e.sees(4));
        assert!(!e.sees(12));
    }
}
