//! The journal's partitions in OLAP: listing them, creating them ahead of the stream, and
//! dropping those wholly before a compaction's cut. DDL on `cdc_events` waits at most
//! [`LOCK_TIMEOUT`] for its lock: the apply path's COPY is never held up longer than that,
//! and a DDL that could not get its lock is tried again on the next pass.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;

use super::policy::{self, Part};
use super::COMMITTED_END;
use crate::lsn::Lsn;
use crate::table::ident;

/// The schema partitions live in (owned by the replicator's role).
pub const SCHEMA: &str = "cdc_journal";
/// The partition that catches rows no other partition covers (empty while all is well).
pub const DEFAULT: &str = "cdc_events_default";
/// How long partition DDL waits for the journal's lock.
pub const LOCK_TIMEOUT: &str = "200ms";

/// A partition of `cdc_events`.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Partition {
    pub name: String,
    pub lo: Lsn,
    pub hi: Lsn,
    pub bytes: i64,
    /// The position and commit time of its last row (`None`: empty).
    pub last_lsn: Option<Lsn>,
    pub last_commit_ts: Option<DateTime<Utc>>,
}

impl Partition {
    pub fn part(&self) -> Part {
        Part {
            lo: self.lo,
            hi: self.hi,
            bytes: self.bytes,
            newest: self.last_commit_ts,
        }
    }
}

/// The journal's partitions in LSN order, and the rows of the default partition (whose size
/// is counted apart).
#[derive(Clone, Debug, Default)]
pub struct Layout {
    pub partitions: Vec<Partition>,
    pub default_rows: i64,
    pub default_bytes: i64,
}

impl Layout {
    /// Where the partitions end (`None`: there are none).
    pub fn tail(&self) -> Option<Lsn> {
        self.partitions.last().map(|p| p.hi)
    }

    pub fn bytes(&self) -> i64 {
        self.partitions.iter().map(|p| p.bytes).sum::<i64>() + self.default_bytes
    }

    pub fn parts(&self) -> Vec<Part> {
        self.partitions.iter().map(Partition::part).collect()
    }
}

/// Whether `cdc_events` is partitioned (the migration to 0016 ran).
pub async fn partitioned(conn: &mut PgConnection) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar(
        "select exists (select from pg_partitioned_table where partrelid = to_regclass('cdc_events'))",
    )
    .fetch_one(&mut *conn)
    .await
}

/// Reads the partitions, each one's size and last committed row (by its key, backwards: one
/// index probe each).
pub async fn layout(conn: &mut PgConnection) -> Result<Layout, sqlx::Error> {
    let mut out = Layout::default();
    if !partitioned(conn).await? {
        return Ok(out);
    }
    let rows: Vec<(String, String, String, i64)> = sqlx::query_as(
        "select n.nspname::text, c.relname::text, pg_get_expr(c.relpartbound, c.oid),
                pg_total_relation_size(c.oid)
         from pg_inherits i join pg_class c on c.oid = i.inhrelid
         join pg_namespace n on n.oid = c.relnamespace
         where i.inhparent = 'cdc_events'::regclass",
    )
    .fetch_all(&mut *conn)
    .await?;
    for (schema, name, bound, bytes) in rows {
        let table = format!("{}.{}", ident(&schema), ident(&name));
        let Some((lo, hi)) = policy::parse_bound(&bound) else {
            out.default_bytes = bytes;
            out.default_rows = sqlx::query_scalar(&format!(
                "select count(*) from (select from {table} limit 1000000) d"
            ))
            .fetch_one(&mut *conn)
            .await?;
            continue;
        };
        let last: Option<(String, DateTime<Utc>)> = sqlx::query_as(&format!(
            "select e.lsn::text, e.commit_ts from {table} e where e.lsn <= {COMMITTED_END}
             order by e.lsn desc, e.seq desc limit 1"
        ))
        .fetch_optional(&mut *conn)
        .await?;
        out.partitions.push(Partition {
            name,
            lo,
            hi,
            bytes,
            last_lsn: last.as_ref().and_then(|l| l.0.parse().ok()),
            last_commit_ts: last.map(|l| l.1),
        });
    }
    out.partitions.sort_by_key(|p| p.lo);
    Ok(out)
}

/// Runs `sql` under [`LOCK_TIMEOUT`] in a savepoint of the open transaction. `Ok(false)`:
/// the lock was busy (the savepoint is rolled back, the transaction goes on).
async fn ddl(conn: &mut PgConnection, sql: &str) -> Result<bool, sqlx::Error> {
    sqlx::query("savepoint cdc_journal_ddl")
        .execute(&mut *conn)
        .await?;
    sqlx::query(&format!("set local lock_timeout = '{LOCK_TIMEOUT}'"))
        .execute(&mut *conn)
        .await?;
    let done = sqlx::query(sql).execute(&mut *conn).await;
    let end = match &done {
        Ok(_) => "release savepoint cdc_journal_ddl",
        Err(_) => "rollback to savepoint cdc_journal_ddl",
    };
    sqlx::query(end).execute(&mut *conn).await?;
    sqlx::query("set local lock_timeout = 0")
        .execute(&mut *conn)
        .await?;
    match done {
        Ok(_) => Ok(true),
        Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("55P03") => Ok(false),
        Err(e) => Err(e),
    }
}

/// Creates the partitions `(lo, hi)` (each in its own transaction, created apart and then
/// attached, which does not stop writers of the journal). Returns how many were created;
/// stops at the first one whose lock was busy.
pub async fn create(conn: &mut PgConnection, bounds: &[(Lsn, Lsn)]) -> Result<usize, sqlx::Error> {
    let mut made = 0;
    for &(lo, hi) in bounds {
        let name = format!("{}.{}", ident(SCHEMA), ident(&policy::partition_name(lo)));
        sqlx::query("begin").execute(&mut *conn).await?;
        let attached = async {
            sqlx::query(&format!(
                "create table {name} (like cdc_events including defaults including constraints)"
            ))
            .execute(&mut *conn)
            .await?;
            // The bound as a constraint first: attaching then reads nothing.
            sqlx::query(&format!(
                "alter table {name} add constraint cdc_events_range
                 check (lsn >= '{lo}'::pg_lsn and lsn < '{hi}'::pg_lsn)"
            ))
            .execute(&mut *conn)
            .await?;
            let ok = ddl(
                conn,
                &format!("alter table cdc_events attach partition {name} for values from ('{lo}') to ('{hi}')"),
            )
            .await?;
            if ok {
                sqlx::query(&format!("alter table {name} drop constraint cdc_events_range"))
                    .execute(&mut *conn)
                    .await?;
            }
            Ok::<_, sqlx::Error>(ok)
        }
        .await;
        if !end(conn, attached).await? {
            break;
        }
        made += 1;
    }
    Ok(made)
}

/// Ends the open transaction: committed when `outcome` is `Ok(true)`, rolled back otherwise.
/// Returns the outcome.
pub async fn end(
    conn: &mut PgConnection,
    outcome: Result<bool, sqlx::Error>,
) -> Result<bool, sqlx::Error> {
    match outcome {
        Ok(true) => {
            sqlx::query("commit").execute(&mut *conn).await?;
            Ok(true)
        }
        Ok(false) => {
            sqlx::query("rollback").execute(&mut *conn).await?;
            Ok(false)
        }
        Err(e) => {
            let _ = sqlx::query("rollback").execute(&mut *conn).await;
            Err(e)
        }
    }
}

/// In the open transaction: drops the partitions wholly before `cut`. Returns how many and
/// their size; a partition whose lock was busy is left for the next pass.
pub async fn drop_before(
    conn: &mut PgConnection,
    layout: &Layout,
    cut: Lsn,
) -> Result<(i32, i64), sqlx::Error> {
    let mut dropped = (0, 0);
    for p in layout.partitions.iter().filter(|p| p.hi <= cut) {
        let name = format!("{}.{}", ident(SCHEMA), ident(&p.name));
        if ddl(conn, &format!("drop table {name}")).await? {
            dropped.0 += 1;
            dropped.1 += p.bytes;
        }
    }
    Ok(dropped)
}

/// The partition `cut` falls inside of (not at its lower bound): the rows before the cut in
/// it are deleted rather than dropped.
pub fn straddled(layout: &Layout, cut: Lsn) -> Option<&Partition> {
    layout.partitions.iter().find(|p| p.lo < cut && cut < p.hi)
}

/// Moves rows the default partition caught (no partition covered them when they were
/// written) into a partition of their own: the default is detached, attached again with the
/// range from the end of the partitions to past its last row, and a new default made —
/// briefly holding the journal's lock. Returns whether it moved anything.
pub async fn adopt_default(
    conn: &mut PgConnection,
    layout: &Layout,
    width: u64,
) -> Result<bool, sqlx::Error> {
    if layout.default_rows == 0 {
        return Ok(false);
    }
    let default = format!("{}.{}", ident(SCHEMA), ident(DEFAULT));
    let range: (Option<String>, Option<String>) = sqlx::query_as(&format!(
        "select min(lsn)::text, max(lsn)::text from {default}"
    ))
    .fetch_one(&mut *conn)
    .await?;
    let (Some(Ok(first)), Some(Ok(last))) = (
        range.0.map(|l| l.parse::<Lsn>()),
        range.1.map(|l| l.parse::<Lsn>()),
    ) else {
        return Ok(false);
    };
    let lo = layout.tail().unwrap_or(Lsn::ZERO);
    if first < lo {
        tracing::warn!(first = %first, partitions_end = %lo,
            "the journal's default partition holds rows below the last partition; left there");
        return Ok(false);
    }
    let hi = Lsn((last.0 / width + 1).saturating_mul(width));
    let name = format!("{}.{}", ident(SCHEMA), ident(&policy::partition_name(lo)));
    sqlx::query("begin").execute(&mut *conn).await?;
    let moved = async {
        if !ddl(
            conn,
            &format!("alter table cdc_events detach partition {default}"),
        )
        .await?
        {
            return Ok(false);
        }
        sqlx::query(&format!(
            "alter table {default} rename to {}",
            ident(&policy::partition_name(lo))
        ))
        .execute(&mut *conn)
        .await?;
        sqlx::query(&format!(
            "alter table cdc_events attach partition {name} for values from ('{lo}') to ('{hi}')"
        ))
        .execute(&mut *conn)
        .await?;
        sqlx::query(&format!(
            "create table {default} partition of cdc_events default"
        ))
        .execute(&mut *conn)
        .await?;
        Ok::<_, sqlx::Error>(true)
    }
    .await;
    let moved = end(conn, moved).await?;
    if moved {
        tracing::info!(from = %lo, to = %hi, rows = layout.default_rows,
            "journal rows of the default partition given a partition of their own");
    }
    Ok(moved)
}
