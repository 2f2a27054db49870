//! Partition trees as the source's catalog has them (the I/O half), read with the function
//! the event trigger's messages are made of, `public.brewlytics_partition_tree`
//! (schema/oltp/logic/10_ddl_capture.sql): one definition of what a tree is. It reads
//! `pg_inherits` with SQL, so under an imported snapshot it is the tree of that snapshot.

use std::sync::atomic::{AtomicBool, Ordering};

use sqlx::PgConnection;

use super::Tree;

/// The tree of partitioned table `oid` (None: not a partitioned table, or gone).
pub async fn tree(conn: &mut PgConnection, oid: u32) -> Result<Option<Tree>, sqlx::Error> {
    let json: Option<String> =
        match sqlx::query_scalar("select public.brewlytics_partition_tree($1::oid)::text")
            .bind(i64::from(oid))
            .fetch_one(&mut *conn)
            .await
        {
            Ok(j) => j,
            Err(e) if missing_function(&e) => {
                say_missing();
                return Ok(None);
            }
            Err(e) => return Err(e),
        };
    Ok(json.and_then(|j| serde_json::from_str(&j).ok()))
}

/// Whether `oid` is the root of its tree now (not since attached under another table).
pub async fn is_root(conn: &mut PgConnection, oid: u32) -> Result<bool, sqlx::Error> {
    let root: Option<i64> = sqlx::query_scalar("select pg_partition_root($1::oid)::bigint")
        .bind(i64::from(oid))
        .fetch_one(&mut *conn)
        .await?;
    Ok(root == Some(i64::from(oid)))
}

/// How a table is partitioned: its OID, whether it is partitioned itself, and the root of
/// its tree when it is a partition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Kind {
    pub oid: u32,
    pub partitioned: bool,
    pub root: Option<u32>,
}

/// [`Kind`] of each of the tables `names` (schema, table) that is partitioned or a partition.
pub async fn kinds(
    conn: &mut PgConnection,
    names: &[(String, String)],
) -> Result<Vec<((String, String), Kind)>, sqlx::Error> {
    let rows: Vec<(String, String, i64, bool, Option<i64>)> = sqlx::query_as(
        "select n.nspname::text, c.relname::text, c.oid::bigint, c.relkind = 'p',
                case when c.relispartition then pg_partition_root(c.oid)::bigint end
         from pg_class c join pg_namespace n on n.oid = c.relnamespace
         join unnest($1::text[], $2::text[]) x(s, t) on x.s = n.nspname and x.t = c.relname
         where c.relkind = 'p' or c.relispartition",
    )
    .bind(names.iter().map(|n| n.0.clone()).collect::<Vec<_>>())
    .bind(names.iter().map(|n| n.1.clone()).collect::<Vec<_>>())
    .fetch_all(&mut *conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(s, t, oid, partitioned, root)| {
            (
                (s, t),
                Kind {
                    oid: oid as u32,
                    partitioned,
                    root: root.map(|r| r as u32),
                },
            )
        })
        .collect())
}

/// The source lacks the tree function (not migrated by this version): partitions are not
/// followed until `brewlytics migrate` has run there.
fn missing_function(e: &sqlx::Error) -> bool {
    e.as_database_error()
        .and_then(|d| d.code())
        .is_some_and(|c| c == "42883")
}

fn say_missing() {
    static SAID: AtomicBool = AtomicBool::new(false);
    if !SAID.swap(true, Ordering::Relaxed) {
        tracing::warn!(
            "the source has no public.brewlytics_partition_tree(): partitions attached, \
             detached or dropped are not followed; run `brewlytics migrate` against it"
        );
    }
}
