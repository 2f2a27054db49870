//! First start: copy every published table, as of the slot's exported snapshot, into the
//! journal (op `r`, at the slot's consistent point) and the replica, then build the star
//! schema — all in one OLAP transaction with the checkpoint at the consistent point, so the
//! stream continues exactly where the copy ends. Memory stays bounded: rows move in chunks.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use sqlx::{Connection, PgConnection};

use crate::apply::{apply_journaled, ApplyError, ApplySession, ApplyStats, OnError, Star};
use crate::decode::{RelationBody, RelationColumn, ReplicaIdentity, TupleData, TupleValue};
use crate::event::{row_event, JournalEvent, Op, SourceTable, TxContext};
use crate::lsn::Lsn;
use crate::replica::{ident, Catalog};

/// Rows per chunk written to OLAP.
const CHUNK_ROWS: usize = 20_000;

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("OLTP during the initial copy: {0}")]
    Source(#[source] sqlx::Error),
    #[error(transparent)]
    Apply(#[from] ApplyError),
    #[error("the initial copy of {table} sent a malformed COPY line")]
    Malformed { table: String },
}

impl From<sqlx::Error> for SnapshotError {
    fn from(e: sqlx::Error) -> Self {
        Self::Apply(ApplyError::Sql(e))
    }
}

#[derive(Debug, Default)]
pub struct CopyStats {
    pub tables: usize,
    pub rows: u64,
}

/// Copies the published tables seen by `snapshot` into OLAP through `session`.
/// Rows are numbered `seq` 1.. at `lsn`.
pub async fn copy_published(
    source: &mut PgConnection,
    session: &mut ApplySession,
    catalog: &mut Catalog,
    publication: &str,
    snapshot: Option<&str>,
    lsn: Lsn,
) -> Result<CopyStats, SnapshotError> {
    let mut tx = source.begin().await.map_err(SnapshotError::Source)?;
    sqlx::query("set transaction isolation level repeatable read, read only")
        .execute(&mut *tx)
        .await
        .map_err(SnapshotError::Source)?;
    if let Some(name) = snapshot {
        if !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
            return Err(SnapshotError::Malformed {
                table: "(snapshot name)".into(),
            });
        }
        sqlx::query(&format!("set transaction snapshot '{name}'"))
            .execute(&mut *tx)
            .await
            .map_err(SnapshotError::Source)?;
    }
    let tables: Vec<(String, String)> = sqlx::query_as(
        "select schemaname::text, tablename::text from pg_publication_tables
         where pubname = $1 order by schemaname, tablename",
    )
    .bind(publication)
    .fetch_all(&mut *tx)
    .await
    .map_err(SnapshotError::Source)?;
    let commit_ts: i64 =
        sqlx::query_scalar("select ((extract(epoch from now()) - 946684800) * 1000000)::bigint")
            .fetch_one(&mut *tx)
            .await
            .map_err(SnapshotError::Source)?;
    let ctx = TxContext {
        lsn,
        xid: 0,
        commit_ts,
    };
    let mut stats = CopyStats::default();
    let mut seq: i32 = 0;
    let mut apply_stats = ApplyStats::default();
    for (schema, table) in tables {
        let rel = relation_of(&mut tx, &schema, &table).await?;
        let shape = catalog
            .ensure(session.conn(), &rel)
            .await
            .map_err(ApplyError::from)?;
        let key_positions = shape
            .primary_key
            .iter()
            .filter_map(|k| rel.columns.iter().position(|c| &c.name == k))
            .collect();
        let source = SourceTable {
            schema: Arc::from(schema.as_str()),
            table: Arc::from(table.as_str()),
            key_positions,
        };
        let cols = rel
            .columns
            .iter()
            .map(|c| ident(&c.name))
            .collect::<Vec<_>>()
            .join(", ");
        let sql = format!(
            "copy (select {cols} from {}.{}) to stdout",
            ident(&schema),
            ident(&table)
        );
        let mut events: Vec<JournalEvent> = Vec::with_capacity(CHUNK_ROWS);
        let mut pending = BytesMut::new();
        {
            let mut stream = tx.copy_out_raw(&sql).await.map_err(SnapshotError::Source)?;
            while let Some(chunk) = stream.next().await {
                pending.extend_from_slice(&chunk.map_err(SnapshotError::Source)?);
                while let Some(nl) = pending.iter().position(|b| *b == b'\n') {
                    let line = pending.split_to(nl + 1).freeze();
                    let tuple = parse_copy_line(&line[..line.len() - 1], rel.columns.len())
                        .ok_or_else(|| SnapshotError::Malformed {
                            table: table.clone(),
                        })?;
                    seq += 1;
                    events.push(row_event(
                        ctx,
                        seq,
                        &rel,
                        &source,
                        Op::Snapshot,
                        None,
                        Some(&tuple),
                    ));
                    if events.len() >= CHUNK_ROWS {
                        write_chunk(session, catalog, &mut events, &mut apply_stats).await?;
                    }
                }
            }
        }
        write_chunk(session, catalog, &mut events, &mut apply_stats).await?;
        stats.tables += 1;
    }
    stats.rows = seq as u64;
    tx.commit().await.map_err(SnapshotError::Source)?;
    sqlx::query("select star_refresh_all()")
        .execute(session.conn())
        .await?;
    Ok(stats)
}

async fn write_chunk(
    session: &mut ApplySession,
    catalog: &mut Catalog,
    events: &mut Vec<JournalEvent>,
    stats: &mut ApplyStats,
) -> Result<(), SnapshotError> {
    if events.is_empty() {
        return Ok(());
    }
    crate::journal::write(session.conn(), events).await?;
    apply_journaled(
        session.conn(),
        catalog,
        events,
        OnError::DeadLetter,
        Star::Deferred,
        stats,
    )
    .await?;
    session.events += events.len();
    events.clear();
    Ok(())
}

/// The source table's columns as a Relation message would describe them; key flags mark
/// the primary key.
async fn relation_of(
    conn: &mut PgConnection,
    schema: &str,
    table: &str,
) -> Result<RelationBody, SnapshotError> {
    let rows: Vec<(String, i64, i32, bool)> = sqlx::query_as(
        "select a.attname::text, a.atttypid::bigint, a.atttypmod,
                coalesce(a.attnum = any (i.indkey), false)
         from pg_attribute a
         left join pg_index i on i.indrelid = a.attrelid and i.indisprimary
         where a.attrelid = format('%I.%I', $1::text, $2::text)::regclass
           and a.attnum > 0 and not a.attisdropped and a.attgenerated = ''
         order by a.attnum",
    )
    .bind(schema)
    .bind(table)
    .fetch_all(&mut *conn)
    .await
    .map_err(SnapshotError::Source)?;
    Ok(RelationBody {
        id: 0,
        namespace: schema.to_owned(),
        name: table.to_owned(),
        replica_identity: ReplicaIdentity::Default,
        columns: rows
            .into_iter()
            .map(|(name, oid, typmod, is_key)| RelationColumn {
                is_key,
                name,
                type_oid: oid as u32,
                type_modifier: typmod,
            })
            .collect(),
    })
}

/// One line of COPY text output into column values (`\N` null, backslash escapes decoded).
pub fn parse_copy_line(line: &[u8], columns: usize) -> Option<TupleData> {
    let mut values = Vec::with_capacity(columns);
    for field in line.split(|b| *b == b'\t') {
        if field == b"\\N" {
            values.push(TupleValue::Null);
            continue;
        }
        if !field.contains(&b'\\') {
            values.push(TupleValue::Text(Bytes::copy_from_slice(field)));
            continue;
        }
        let mut out = Vec::with_capacity(field.len());
        let mut i = 0;
        while i < field.len() {
            let b = field[i];
            if b != b'\\' || i + 1 >= field.len() {
                out.push(b);
                i += 1;
                continue;
            }
            let n = field[i + 1];
            i += 2;
            match n {
                b'b' => out.push(8),
                b'f' => out.push(12),
                b'n' => out.push(b'\n'),
                b'r' => out.push(b'\r'),
                b't' => out.push(b'\t'),
                b'v' => out.push(11),
                b'0'..=b'7' => {
                    let mut v = u32::from(n - b'0');
                    let mut k = 0;
                    while k < 2 && i < field.len() && (b'0'..=b'7').contains(&field[i]) {
                        v = v * 8 + u32::from(field[i] - b'0');
                        i += 1;
                        k += 1;
                    }
                    out.push(v as u8);
                }
                other => out.push(other),
            }
        }
        values.push(TupleValue::Text(Bytes::from(out)));
    }
    (values.len() == columns).then_some(TupleData { columns: values })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_lines_decode_nulls_and_escapes() {
        let t = parse_copy_line(b"1\t\\N\ta\\tb\\\\c\\nd", 3).unwrap();
        assert_eq!(t.columns[0], TupleValue::Text(Bytes::from_static(b"1")));
        assert_eq!(t.columns[1], TupleValue::Null);
        assert_eq!(
            t.columns[2],
            TupleValue::Text(Bytes::from_static(b"a\tb\\c\nd"))
        );
        assert!(parse_copy_line(b"1\t2", 3).is_none());
    }
}
