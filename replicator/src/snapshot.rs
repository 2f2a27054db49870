//! First start: copy every published table, as of the slot's exported snapshot, into the
//! journal (op `r`, at the slot's consistent point) and the replica, then build the star
//! schema — all in one OLAP transaction with the checkpoint at the consistent point, so the
//! stream continues exactly where the copy ends. Rows go from the source's COPY straight into
//! the replica's COPY as the bytes arrive (memory stays bounded); the server then journals
//! them and builds the star schema set-based.

use futures_util::StreamExt;
use sqlx::{Connection, PgConnection};

use std::sync::Arc;

use bytes::{Bytes, BytesMut};

use crate::apply::{apply_journaled, ApplyError, ApplySession, ApplyStats, OnError, Star};
use crate::decode::{
    chrono_to_pg_timestamp, RelationBody, RelationColumn, ReplicaIdentity, TupleData, TupleValue,
};
use crate::event::{row_event, JournalEvent, Op, SourceTable, TxContext};
use crate::lsn::Lsn;
use crate::replica::{ident, Catalog, REPLICA_SCHEMA};

/// Rows per chunk written to OLAP by the careful (journal-first) copy.
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
    let commit_ts: chrono::DateTime<chrono::Utc> = sqlx::query_scalar("select now()")
        .fetch_one(&mut *tx)
        .await
        .map_err(SnapshotError::Source)?;
    let mut stats = CopyStats::default();
    let mut seq: i64 = 0;
    for (schema, table) in tables {
        let rel = relation_of(&mut tx, &schema, &table).await?;
        let shape = catalog
            .ensure(session.conn(), &rel)
            .await
            .map_err(ApplyError::from)?;
        let columns: Vec<&str> = rel.columns.iter().map(|c| c.name.as_str()).collect();
        let list = columns
            .iter()
            .map(|c| ident(c))
            .collect::<Vec<_>>()
            .join(", ");
        let replica = format!("{}.{}", ident(REPLICA_SCHEMA), ident(&shape.replica_table));
        let out_sql = format!(
            "copy (select {list} from {}.{}) to stdout",
            ident(&schema),
            ident(&table)
        );
        sqlx::query("savepoint copy_table")
            .execute(session.conn())
            .await?;
        let fast = copy_straight(&mut tx, session, &replica, &list, &out_sql).await;
        let journaled = match fast {
            Ok(()) => {
                sqlx::query("release savepoint copy_table")
                    .execute(session.conn())
                    .await?;
                // Their journal events (op `r`), made by the server from the replica: the
                // same text images the stream writes, so replay groups them with later
                // changes of each key.
                sqlx::query(&journal_copied_sql(&replica, &columns, &shape.primary_key))
                    .bind(lsn.to_string())
                    .bind(seq)
                    .bind(commit_ts)
                    .bind(&schema)
                    .bind(&table)
                    .execute(session.conn())
                    .await?
                    .rows_affected()
            }
            Err(e) => {
                // A row OLAP refuses (a constraint the source does not have): copy this
                // table again row by row through the journal, so only the refused rows go
                // to the dead letters.
                sqlx::query("rollback to savepoint copy_table")
                    .execute(session.conn())
                    .await?;
                tracing::warn!(%table, error = %e,
                    "the bulk copy was refused; copying the table through the journal instead");
                let ctx = TxContext {
                    lsn,
                    xid: 0,
                    commit_ts: chrono_to_pg_timestamp(commit_ts),
                };
                copy_through_journal(
                    &mut tx,
                    session,
                    catalog,
                    &rel,
                    &shape.primary_key,
                    &out_sql,
                    ctx,
                    seq,
                )
                .await?
            }
        };
        seq += journaled as i64;
        stats.tables += 1;
    }
    if seq > i64::from(i32::MAX) {
        return Err(SnapshotError::Malformed {
            table: format!("(more than {} rows: journal seq overflows)", i32::MAX),
        });
    }
    stats.rows = seq as u64;
    tx.commit().await.map_err(SnapshotError::Source)?;
    sqlx::query("select star_refresh_all()")
        .execute(session.conn())
        .await?;
    Ok(stats)
}

/// The source's COPY text straight into the replica table as it arrives (nothing parsed,
/// memory bounded by one network chunk). The source stream is always read to its end, so
/// the snapshot transaction stays usable when OLAP refuses the data.
async fn copy_straight(
    tx: &mut PgConnection,
    session: &mut ApplySession,
    replica: &str,
    list: &str,
    out_sql: &str,
) -> Result<(), SnapshotError> {
    sqlx::query(&format!("truncate {replica}"))
        .execute(session.conn())
        .await?;
    let mut copy_in = session
        .conn()
        .copy_in_raw(&format!("copy {replica} ({list}) from stdin"))
        .await?;
    let mut refused = None;
    {
        let mut stream = tx
            .copy_out_raw(out_sql)
            .await
            .map_err(SnapshotError::Source)?;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(SnapshotError::Source)?;
            if refused.is_none() {
                if let Err(e) = copy_in.send(chunk).await {
                    refused = Some(e);
                }
            }
        }
    }
    match refused {
        Some(e) => {
            let _ = copy_in.abort("refused").await;
            Err(e.into())
        }
        None => {
            copy_in.finish().await?;
            Ok(())
        }
    }
}

/// The careful copy of one table: rows parsed into journal events and applied like
/// streamed changes (a refused row goes to the dead letters). Returns the rows journaled.
#[allow(clippy::too_many_arguments)]
async fn copy_through_journal(
    tx: &mut PgConnection,
    session: &mut ApplySession,
    catalog: &mut Catalog,
    rel: &RelationBody,
    primary_key: &[String],
    out_sql: &str,
    ctx: TxContext,
    first_seq: i64,
) -> Result<u64, SnapshotError> {
    let source = SourceTable {
        schema: Arc::from(rel.namespace.as_str()),
        table: Arc::from(rel.name.as_str()),
        key_positions: primary_key
            .iter()
            .filter_map(|k| rel.columns.iter().position(|c| &c.name == k))
            .collect(),
    };
    let mut seq = first_seq;
    let mut stats = ApplyStats::default();
    let mut events: Vec<JournalEvent> = Vec::with_capacity(CHUNK_ROWS);
    let mut pending = BytesMut::new();
    let mut stream = tx
        .copy_out_raw(out_sql)
        .await
        .map_err(SnapshotError::Source)?;
    while let Some(chunk) = stream.next().await {
        pending.extend_from_slice(&chunk.map_err(SnapshotError::Source)?);
        while let Some(nl) = pending.iter().position(|b| *b == b'\n') {
            let line = pending.split_to(nl + 1).freeze();
            let tuple =
                parse_copy_line(&line[..line.len() - 1], rel.columns.len()).ok_or_else(|| {
                    SnapshotError::Malformed {
                        table: rel.name.clone(),
                    }
                })?;
            seq += 1;
            let s = i32::try_from(seq).map_err(|_| SnapshotError::Malformed {
                table: format!("{} (journal seq overflows)", rel.name),
            })?;
            events.push(row_event(
                ctx,
                s,
                rel,
                &source,
                Op::Snapshot,
                None,
                Some(&tuple),
            ));
            if events.len() >= CHUNK_ROWS {
                write_chunk(session, catalog, &mut events, &mut stats).await?;
            }
        }
    }
    write_chunk(session, catalog, &mut events, &mut stats).await?;
    Ok((seq - first_seq) as u64)
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
    events.clear();
    Ok(())
}

/// `INSERT … SELECT` of one journal event per replica row: `$1` lsn, `$2` the seq before
/// the first row, `$3` commit time, `$4`/`$5` source schema and table. Values are the
/// columns' text output, like pgoutput's text format (`jsonb_build_object` takes at most
/// 100 arguments: wide tables are built in parts).
fn journal_copied_sql(replica: &str, columns: &[&str], key: &[String]) -> String {
    let object = |cols: &mut dyn Iterator<Item = &str>| -> String {
        let cols: Vec<&str> = cols.collect();
        if cols.is_empty() {
            return "'{}'::jsonb".into();
        }
        cols.chunks(50)
            .map(|part| {
                let pairs = part
                    .iter()
                    .map(|c| format!("'{}', {}::text", c.replace('\'', "''"), ident(c)))
                    .collect::<Vec<_>>()
                    .join(", ");
                format!("jsonb_build_object({pairs})")
            })
            .collect::<Vec<_>>()
            .join(" || ")
    };
    format!(
        "insert into cdc_events (lsn, seq, xid, commit_ts, source_schema, source_table, op, key, before, after)
         select $1::pg_lsn, ($2 + row_number() over ())::integer, 0, $3, $4, $5, 'r', {}, null, {}
         from {replica}",
        object(&mut key.iter().map(String::as_str)),
        object(&mut columns.iter().copied()),
    )
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
