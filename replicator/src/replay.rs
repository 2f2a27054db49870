//! `brewlytics replay --from-lsn LSN`: rebuild replica and star tables from the journal.
//!
//! From an LSN at or before the latest initial copy (op `r`), the replica and star tables are
//! emptied and rebuilt from that copy onward: the journal alone rebuilds OLAP. From a later
//! LSN, the events after it are applied again over the current state, which leaves it as it
//! is when nothing was lost. Running it twice changes nothing.

use std::sync::Arc;

use sqlx::{PgConnection, PgPool};

use crate::apply::{apply_journaled, ApplyError, ApplyStats, OnError, Star};
use crate::event::{JournalEvent, Op, Pos};
use crate::lsn::Lsn;
use crate::replica::{ident, Catalog, REPLICA_SCHEMA};

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

pub async fn replay(pool: &PgPool, from: Lsn) -> Result<ReplayStats, ApplyError> {
    let mut tx = pool.begin().await?;
    let latest_copy: Option<String> =
        sqlx::query_scalar("select max(lsn)::text from cdc_events where op = 'r'")
            .fetch_one(&mut *tx)
            .await?;
    let latest_copy: Option<Lsn> = latest_copy.and_then(|l| l.parse().ok());
    let mut stats = ReplayStats {
        from,
        ..Default::default()
    };
    let mut pos = Pos { lsn: from, seq: -1 };
    if let Some(copy) = latest_copy.filter(|c| from <= *c) {
        stats.rebuilt = true;
        reset_replica_and_star(&mut tx).await?;
        pos = Pos { lsn: copy, seq: -1 };
        stats.from = copy;
    }
    let mut catalog = Catalog::default();
    let mut apply_stats = ApplyStats::default();
    loop {
        let events = fetch(&mut tx, pos).await?;
        let Some(last) = events.last() else { break };
        pos = last.pos();
        stats.events += events.len() as u64;
        let star = if stats.rebuilt {
            Star::Deferred
        } else {
            Star::PerRun
        };
        apply_journaled(
            &mut tx,
            &mut catalog,
            &events,
            OnError::DeadLetter,
            star,
            &mut apply_stats,
        )
        .await?;
    }
    if stats.rebuilt {
        // SCD2 history comes from the product events in order.
        sqlx::query(
            "select star_apply_product_events($1::pg_lsn, -1, 'FFFFFFFF/FFFFFFFF', 2147483647)",
        )
        .bind(stats.from.to_string())
        .execute(&mut *tx)
        .await?;
        sqlx::query("select star_refresh_all()")
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    Ok(stats)
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
    Ok(())
}

async fn fetch(conn: &mut PgConnection, after: Pos) -> Result<Vec<JournalEvent>, sqlx::Error> {
    type Row = (
        String,
        i32,
        Option<i64>,
        String,
        String,
        String,
        Option<String>,
        Option<String>,
        Option<String>,
    );
    let rows: Vec<Row> = sqlx::query_as(
        "select lsn::text, seq, xid, source_schema, source_table, op::text,
                key::text, before::text, after::text
         from cdc_events where (lsn, seq) > ($1::pg_lsn, $2)
         order by lsn, seq limit $3",
    )
    .bind(after.lsn.to_string())
    .bind(after.seq)
    .bind(CHUNK)
    .fetch_all(&mut *conn)
    .await?;
    Ok(rows
        .into_iter()
        .filter_map(|r| {
            let op = match r.5.as_str() {
                "r" => Op::Snapshot,
                "i" => Op::Insert,
                "u" => Op::Update,
                "d" => Op::Delete,
                "t" => Op::Truncate,
                _ => return None,
            };
            Some(JournalEvent {
                lsn: r.0.parse().ok()?,
                seq: r.1,
                xid: r.2.unwrap_or(0) as u32,
                commit_ts: 0,
                schema: Arc::from(r.3.as_str()),
                table: Arc::from(r.4.as_str()),
                op,
                key: r.6,
                before: r.7,
                after: r.8,
            })
        })
        .collect())
}
