//! The `cdc_events` journal: one row per change, written with COPY (text format).

use sqlx::PgConnection;

use crate::change::{Body, Change, Op};
use crate::decode::pg_timestamp_to_chrono;
use crate::image::{self, copy_escape, CopyField, JsonOut};
use crate::table::SourceTable;

pub const COPY_SQL: &str = "copy cdc_events (lsn, seq, xid, commit_ts, source_schema, source_table, op, key, before, after, json_nulls) from stdin";

/// The journal's COPY data of `changes`.
#[derive(Default)]
pub struct JournalEncoder {
    ts: Option<(i64, String)>,
}

impl JournalEncoder {
    pub fn encode(&mut self, changes: &[Change]) -> Vec<u8> {
        let mut out = Vec::with_capacity(changes.len() * 160);
        for c in changes {
            self.line(&mut out, c);
        }
        out
    }

    /// Appends the COPY text line of `c`.
    pub fn line(&mut self, out: &mut Vec<u8>, c: &Change) {
        if self.ts.as_ref().map(|t| t.0) != Some(c.commit_ts) {
            let s = pg_timestamp_to_chrono(c.commit_ts)
                .map(|t| t.format("%Y-%m-%d %H:%M:%S%.6f+00").to_string())
                .unwrap_or_else(|| "2000-01-01 00:00:00+00".into());
            self.ts = Some((c.commit_ts, s));
        }
        let ts = &self.ts.as_ref().expect("set above").1;
        let table = c.table();
        out.extend_from_slice(
            format!("{}\t{}\t{}\t{ts}\t", c.pos.lsn, c.pos.seq, c.xid).as_bytes(),
        );
        copy_escape(out, table.schema.as_bytes());
        out.push(b'\t');
        copy_escape(out, table.name.as_bytes());
        out.push(b'\t');
        out.push(c.op().code() as u8);
        let mut nulls: Vec<usize> = Vec::new();
        match &c.body {
            Body::Row(r) => {
                out.push(b'\t');
                match (r.identity(), table.is_keyless()) {
                    (Some(id), false) => {
                        image::write(&mut CopyField(out), table, id, Some(&table.key), &mut nulls)
                    }
                    _ => out.extend_from_slice(b"\\N"),
                }
                out.push(b'\t');
                // An insert that moved a row from another key carries that key as `before`.
                let before = if matches!(r.op, Op::Update | Op::Delete | Op::Insert) {
                    r.old.as_ref()
                } else {
                    None
                };
                match before {
                    Some(old) => image::write(&mut CopyField(out), table, old, None, &mut nulls),
                    None => out.extend_from_slice(b"\\N"),
                }
                out.push(b'\t');
                match (&r.new, r.op) {
                    (Some(new), op) if op != Op::Delete => {
                        image::write(&mut CopyField(out), table, new, None, &mut nulls)
                    }
                    _ => out.extend_from_slice(b"\\N"),
                }
            }
            Body::Truncate {
                cascade,
                restart_identity,
                ..
            } => {
                out.extend_from_slice(
                    format!(
                        "\t\\N\t\\N\t{{\"cascade\":{cascade},\"restart_identity\":{restart_identity}}}"
                    )
                    .as_bytes(),
                );
            }
            Body::Schema(s) => {
                out.extend_from_slice(b"\t\\N\t\\N\t");
                let mut doc = serde_json::json!({
                    "table": table_json(&s.after),
                    "backfill": s.backfill,
                });
                // What changed of its partitions (attached, detached, …, and what was done).
                let partitions: Vec<_> = s.partitions().collect();
                if !partitions.is_empty() {
                    doc["partitions"] = serde_json::json!(partitions);
                }
                CopyField(out).put(doc.to_string().as_bytes());
            }
            Body::Backfill(m) => {
                out.extend_from_slice(b"\t\\N\t\\N\t");
                let doc = serde_json::json!({"backfill": m.backfill_id, "attempt": m.attempt});
                CopyField(out).put(doc.to_string().as_bytes());
            }
        }
        out.push(b'\t');
        if nulls.is_empty() {
            out.extend_from_slice(b"\\N");
        } else {
            let names: Vec<String> = nulls
                .iter()
                .map(|&i| {
                    let n = table.columns[i]
                        .name
                        .replace('\\', "\\\\")
                        .replace('"', "\\\"");
                    format!("\"{n}\"")
                })
                .collect();
            copy_escape(out, format!("{{{}}}", names.join(",")).as_bytes());
        }
        out.push(b'\n');
    }
}

/// A table's shape as the journal's schema events record it (read back by replay).
pub fn table_json(t: &SourceTable) -> serde_json::Value {
    serde_json::json!({
        "oid": t.oid,
        "schema": &*t.schema,
        "name": &*t.name,
        "replica": &*t.replica,
        "columns": &t.columns,
        "key": t.key_names(),
        "identity": (t.identity.as_byte() as char).to_string(),
        "published": &*t.published,
    })
}

/// The table of a schema event's `after`.
pub fn table_from_json(v: &serde_json::Value) -> Option<SourceTable> {
    let t = v.get("table")?;
    let columns: Vec<crate::table::Column> =
        serde_json::from_value(t.get("columns")?.clone()).ok()?;
    let key: Vec<String> = serde_json::from_value(t.get("key")?.clone()).ok()?;
    Some(SourceTable {
        oid: t.get("oid")?.as_u64()? as u32,
        schema: t.get("schema")?.as_str()?.into(),
        name: t.get("name")?.as_str()?.into(),
        replica: t.get("replica")?.as_str()?.into(),
        key: key
            .iter()
            .filter_map(|k| columns.iter().position(|c| &c.name == k))
            .collect(),
        columns,
        identity: t
            .get("identity")
            .and_then(|i| i.as_str())
            .and_then(|i| i.bytes().next())
            .and_then(crate::decode::ReplicaIdentity::from_byte)
            .unwrap_or(crate::decode::ReplicaIdentity::Default),
        published: std::sync::Arc::new(
            t.get("published")
                .and_then(|p| serde_json::from_value(p.clone()).ok())
                .unwrap_or_default(),
        ),
    })
}

/// One journal row as read back (for replay, and to re-apply changes over a backfill chunk).
#[derive(Clone, Debug, PartialEq)]
pub struct JournalRow {
    pub pos: crate::change::Pos,
    pub xid: u32,
    pub commit_ts: i64,
    pub schema: String,
    pub table: String,
    pub op: Op,
    pub key: Option<String>,
    pub before: Option<String>,
    pub after: Option<String>,
    pub json_nulls: Vec<String>,
}

/// The columns of a journal row as [`JournalRow`] reads them. `lsn` goes out as text: a
/// query ordering by it must name the table's column (`e.lsn`), or PostgreSQL orders by the
/// output column — the text — and `0/10000000` sorts before `0/F0000000`.
const READ_COLUMNS: &str = "lsn::text, seq, coalesce(xid, 0), \
    (extract(epoch from commit_ts - '2000-01-01 00:00:00+00'::timestamptz) * 1000000)::bigint, \
    source_schema, source_table, op::text, key::text, before::text, after::text, \
    coalesce(json_nulls, '{}')";

type RawRow = (
    String,
    i32,
    i64,
    i64,
    String,
    String,
    String,
    Option<String>,
    Option<String>,
    Option<String>,
    Vec<String>,
);

fn to_row(r: RawRow) -> Option<JournalRow> {
    Some(JournalRow {
        pos: crate::change::Pos {
            lsn: r.0.parse().ok()?,
            seq: r.1,
        },
        xid: r.2 as u32,
        commit_ts: r.3,
        schema: r.4,
        table: r.5,
        op: Op::from_code(r.6.chars().next()?)?,
        key: r.7,
        before: r.8,
        after: r.9,
        json_nulls: r.10,
    })
}

/// Up to `limit` journal rows after `after`, in journal order.
pub async fn read_after(
    conn: &mut PgConnection,
    after: crate::change::Pos,
    limit: i64,
) -> Result<Vec<JournalRow>, sqlx::Error> {
    let rows: Vec<RawRow> = sqlx::query_as(&format!(
        "select {READ_COLUMNS} from cdc_events e where (e.lsn, e.seq) > ($1::pg_lsn, $2)
         order by e.lsn, e.seq limit $3"
    ))
    .bind(after.lsn.to_string())
    .bind(after.seq)
    .bind(limit)
    .fetch_all(&mut *conn)
    .await?;
    Ok(rows.into_iter().filter_map(to_row).collect())
}

/// Whether the journal holds another change of the transaction at `pos` after it (a
/// transaction's changes share its position's LSN).
pub async fn continues_at(
    conn: &mut PgConnection,
    pos: crate::change::Pos,
) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar(
        "select exists (select 1 from cdc_events e where e.lsn = $1::pg_lsn and e.seq > $2)",
    )
    .bind(pos.lsn.to_string())
    .bind(pos.seq)
    .fetch_one(conn)
    .await
}

/// The journal rows of one table from `from` (inclusive) to `to` (exclusive).
pub async fn read_table_range(
    conn: &mut PgConnection,
    schema: &str,
    table: &str,
    from: crate::lsn::Lsn,
    to: crate::change::Pos,
) -> Result<Vec<JournalRow>, sqlx::Error> {
    let rows: Vec<RawRow> = sqlx::query_as(&format!(
        "select {READ_COLUMNS} from cdc_events e
         where e.source_schema = $1 and e.source_table = $2 and e.lsn >= $3::pg_lsn
           and (e.lsn, e.seq) < ($4::pg_lsn, $5)
         order by e.lsn, e.seq"
    ))
    .bind(schema)
    .bind(table)
    .bind(from.to_string())
    .bind(to.lsn.to_string())
    .bind(to.seq)
    .fetch_all(&mut *conn)
    .await?;
    Ok(rows.into_iter().filter_map(to_row).collect())
}

impl JournalRow {
    /// The change this row records, read with `table`'s columns (`renamed` maps older column
    /// names to the table's). Schema and backfill rows are not changes to re-apply: `None`.
    pub fn to_change(
        &self,
        table: &std::sync::Arc<SourceTable>,
        renamed: &std::collections::HashMap<String, String>,
    ) -> Result<Option<Change>, image::ImageError> {
        let parse =
            |img: &Option<String>| -> Result<Option<crate::decode::TupleData>, image::ImageError> {
                img.as_deref()
                    .map(|i| image::parse(table, i, &self.json_nulls, renamed))
                    .transpose()
            };
        let body = match self.op {
            Op::Snapshot | Op::Insert => Body::Row(crate::change::RowChange {
                table: table.clone(),
                op: self.op,
                old: parse(&self.before)?,
                new: parse(&self.after)?,
            }),
            Op::Update => Body::Row(crate::change::RowChange {
                table: table.clone(),
                op: Op::Update,
                old: parse(&self.before)?,
                new: parse(&self.after)?,
            }),
            Op::Delete => Body::Row(crate::change::RowChange {
                table: table.clone(),
                op: Op::Delete,
                old: match parse(&self.before)? {
                    Some(b) => Some(b),
                    None => parse(&self.key)?,
                },
                new: None,
            }),
            Op::Truncate => {
                let opts: serde_json::Value = self
                    .after
                    .as_deref()
                    .and_then(|a| serde_json::from_str(a).ok())
                    .unwrap_or_default();
                Body::Truncate {
                    table: table.clone(),
                    cascade: opts["cascade"].as_bool().unwrap_or(false),
                    restart_identity: opts["restart_identity"].as_bool().unwrap_or(false),
                }
            }
            Op::Schema | Op::Backfill => return Ok(None),
        };
        Ok(Some(Change {
            pos: self.pos,
            xid: self.xid,
            commit_ts: self.commit_ts,
            body,
        }))
    }
}

/// A second OLAP connection the streamed journal is written on, while the batch's own
/// transaction applies the same changes to the replica and the star. Its transaction commits
/// just before the batch's (which holds the checkpoint): after a crash between the two, the
/// journal holds rows past the checkpoint, and [`delete_after`] removes them before the
/// stream sends those transactions again.
pub struct Side {
    conn: PgConnection,
    in_tx: bool,
}

impl Side {
    pub async fn connect(
        url: &brewlytics_support::DbUrl,
        mode: crate::flush::OlapCommit,
    ) -> Result<Self, sqlx::Error> {
        use sqlx::Connection;
        let mut conn = PgConnection::connect_with(&url.connect_options()?).await?;
        // Its rows must be on disk before the checkpoint that follows them: synchronously,
        // or (asynchronous commits) because its commit record precedes the checkpoint's in
        // the WAL, which is flushed in order.
        sqlx::query("select set_config('synchronous_commit', $1, false)")
            .bind(mode.setting())
            .execute(&mut conn)
            .await?;
        Ok(Self { conn, in_tx: false })
    }

    /// Journals `data` (COPY lines) in this connection's open transaction.
    pub async fn write(&mut self, data: &[u8]) -> Result<(), sqlx::Error> {
        if data.is_empty() {
            return Ok(());
        }
        if !self.in_tx {
            sqlx::query("begin").execute(&mut self.conn).await?;
            self.in_tx = true;
        }
        write(&mut self.conn, data).await.map(|_| ())
    }

    /// Makes what was written visible (and durable).
    pub async fn commit(&mut self) -> Result<(), sqlx::Error> {
        if self.in_tx {
            sqlx::query("commit").execute(&mut self.conn).await?;
            self.in_tx = false;
        }
        Ok(())
    }

    pub async fn rollback(&mut self) -> Result<(), sqlx::Error> {
        if self.in_tx {
            self.in_tx = false;
            sqlx::query("rollback").execute(&mut self.conn).await?;
        }
        Ok(())
    }
}

/// At a session's start: deletes journal rows past `slot`'s checkpoint, expected at
/// `expected`, holding the checkpoint's row meanwhile — a batch whose commit is still under way
/// (a session that ended a moment ago) finishes first. `Ok(Err(lsn))` when the checkpoint is
/// no longer `expected`: nothing was deleted, and the session must start again from there.
pub async fn delete_past_checkpoint(
    conn: &mut PgConnection,
    slot: &str,
    expected: crate::lsn::Lsn,
) -> Result<Result<u64, crate::lsn::Lsn>, sqlx::Error> {
    sqlx::query("begin").execute(&mut *conn).await?;
    let result = async {
        let now: Option<String> = sqlx::query_scalar(
            "select lsn::text from replication_checkpoint where slot_name = $1 for update",
        )
        .bind(slot)
        .fetch_optional(&mut *conn)
        .await?;
        let now = now.and_then(|l| l.parse::<crate::lsn::Lsn>().ok());
        if now != Some(expected) {
            return Ok(Err(now.unwrap_or_default()));
        }
        delete_after(conn, expected).await.map(Ok)
    }
    .await;
    let end = if matches!(result, Ok(Ok(_))) {
        "commit"
    } else {
        "rollback"
    };
    sqlx::query(end).execute(&mut *conn).await?;
    result
}

/// Deletes journal rows past `checkpoint`: written by a [`Side`] whose batch never committed.
/// Returns how many.
pub async fn delete_after(
    conn: &mut PgConnection,
    checkpoint: crate::lsn::Lsn,
) -> Result<u64, sqlx::Error> {
    // The journal's last position first, by its key (backwards, one row): a plain range
    // delete on a large journal whose statistics are stale can be planned as a full scan.
    // Qualified: a bare `order by lsn` would sort by the output column `lsn::text`, as text
    // (a full scan, and 0/F000000 after 0/20000000).
    let last: Option<String> = sqlx::query_scalar(
        "select e.lsn::text from cdc_events e order by e.lsn desc, e.seq desc limit 1",
    )
    .fetch_optional(&mut *conn)
    .await?;
    let ahead = last
        .and_then(|l| l.parse::<crate::lsn::Lsn>().ok())
        .is_some_and(|l| l > checkpoint);
    if !ahead {
        return Ok(0);
    }
    let done = sqlx::query("delete from cdc_events where lsn > $1::pg_lsn")
        .bind(checkpoint.to_string())
        .execute(&mut *conn)
        .await?;
    Ok(done.rows_affected())
}

/// Writes COPY data into the journal, sent in pieces of about 1 MiB.
pub async fn write(conn: &mut PgConnection, data: &[u8]) -> Result<u64, sqlx::Error> {
    if data.is_empty() {
        return Ok(0);
    }
    let mut copy = conn.copy_in_raw(COPY_SQL).await?;
    for piece in data.chunks(1 << 20) {
        copy.send(piece).await?;
    }
    copy.finish().await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::change::{RowChange, TxContext};
    use crate::decode::{TupleData, TupleValue};
    use crate::lsn::Lsn;
    use crate::table::fixtures;
    use bytes::Bytes;
    use std::sync::Arc;

    fn text(s: &str) -> TupleValue {
        TupleValue::Text(Bytes::copy_from_slice(s.as_bytes()))
    }

    #[test]
    fn row_lines_escape_and_list_json_nulls() {
        let t = Arc::new(fixtures::products());
        let c = Change::new(
            TxContext {
                lsn: Lsn(0x16_B374_D848),
                xid: 42,
                commit_ts: 0,
            },
            3,
            Body::Row(RowChange {
                table: t.clone(),
                op: Op::Insert,
                old: None,
                new: Some(TupleData {
                    columns: vec![
                        text("1"),
                        text("a\\b\ttab"),
                        text("2.5"),
                        TupleValue::Null,
                        text("null"),
                    ],
                }),
            }),
        );
        let line = String::from_utf8(JournalEncoder::default().encode(&[c])).unwrap();
        assert_eq!(
            line,
            "16/B374D848\t3\t42\t2000-01-01 00:00:00.000000+00\tpublic\tproducts\ti\t{\"id\":1}\t\\N\t{\"id\":1,\"name\":\"a\\\\\\\\b\\\\ttab\",\"price\":2.5,\"description\":null,\"tags\":null}\t{\"tags\"}\n"
        );
    }

    #[test]
    fn schema_events_record_what_changed_of_the_partitions() {
        use crate::schema::partitions::{
            Action, Event, Member, MirroredAs, PartitionStep, Rel, State,
        };
        let t = Arc::new(fixtures::products());
        let jan = Member {
            oid: 7,
            schema: "public".into(),
            table: "products_2026_01".into(),
            parent: 5,
            level: 1,
            leaf: true,
            bound: Some("FOR VALUES FROM (1) TO (100)".into()),
            scope: Some("((id >= 1) AND (id < 100))".into()),
        };
        let step = PartitionStep {
            root: Rel {
                oid: 5,
                schema: "public".into(),
                table: "products".into(),
            },
            mirrored_as: MirroredAs::Root,
            partitions: Vec::new(),
            whole: false,
            events: vec![Event {
                partition: jan,
                state: State::Detached,
                action: Action::Keep,
            }],
        };
        let change = |steps| {
            Change::new(
                TxContext {
                    lsn: Lsn(0x100),
                    xid: 9,
                    commit_ts: 0,
                },
                1,
                Body::Schema(Arc::new(crate::change::SchemaChange {
                    before: Some(t.clone()),
                    after: t.clone(),
                    steps,
                    backfill: None,
                })),
            )
        };
        let after = |c: Change| -> serde_json::Value {
            let line = String::from_utf8(JournalEncoder::default().encode(&[c])).unwrap();
            let field = line
                .trim_end()
                .split('\t')
                .nth(9)
                .unwrap()
                .replace("\\\\", "\\");
            serde_json::from_str(&field).unwrap()
        };
        let doc = after(change(vec![crate::schema::plan::Step::Partitions(step)]));
        assert_eq!(doc["partitions"][0]["events"][0]["action"], "keep");
        assert_eq!(
            doc["partitions"][0]["events"][0]["partition"]["scope"],
            "((id >= 1) AND (id < 100))"
        );
        assert_eq!(table_from_json(&doc), Some((*t).clone()));
        // Other schema events are as they were.
        assert!(after(change(Vec::new())).get("partitions").is_none());
    }

    #[test]
    fn schema_events_round_trip_the_table() {
        let t = fixtures::products();
        let v = serde_json::json!({"table": table_json(&t)});
        assert_eq!(table_from_json(&v), Some(t));
        // With what the publication publishes: a filter, a generated column.
        let mut t = fixtures::products();
        t.published = std::sync::Arc::new(crate::published::Published {
            row_filter: Some("(price > 1)".into()),
            column_list: None,
            generated: vec![crate::published::Generated {
                name: "price2".into(),
                attnum: 6,
                type_oid: 1700,
                typmod: -1,
                olap_type: "numeric".into(),
                expression: "(price * 2)".into(),
                not_carried: None,
            }],
            last_attnum: 6,
        });
        let v = serde_json::json!({"table": table_json(&t)});
        assert_eq!(table_from_json(&v), Some(t));
    }
}
