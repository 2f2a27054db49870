//! The backfill worker: beside the stream, for as long as a session runs, it follows the
//! publications ([`super::follow`]) and the partition trees ([`super::partitions`]), audits
//! OLAP for unpublished data now and then, and runs the backfills they ask for, one chunk at a
//! time ([`super::backfill`]). Errors are logged and the worker starts again with backoff; the
//! stream goes on.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sqlx::{Connection, PgConnection};
use tokio::sync::watch;

use super::backfill::{chunk, finish, BackfillError, Conns, Task, WorkerConfig};
use crate::backoff::Backoff;
use crate::schema::{publication, source};
use crate::telemetry::Telemetry;

/// How often the worker audits OLAP for unpublished data when nothing prompts it.
const AUDIT_EVERY: Duration = Duration::from_secs(600);

/// Runs backfills until `shutdown`; errors are logged and retried (the stream goes on).
pub async fn run(
    cfg: WorkerConfig,
    telemetry: Arc<Telemetry>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut retry = Backoff::new(Duration::from_secs(1), Duration::from_secs(30)).start();
    loop {
        if *shutdown.borrow() {
            return;
        }
        let result = tokio::select! {
            r = work(&cfg, &telemetry) => r,
            _ = shutdown.changed() => return,
        };
        match result {
            Ok(()) => retry.reset(),
            Err(e) => {
                tracing::warn!(error = %e, retry_in_s = retry.delay().as_secs(), "backfill worker interrupted");
                if !retry.wait(&mut shutdown).await {
                    return;
                }
            }
        }
    }
}

/// One life of the worker's connections: follow the publication, run backfills.
async fn work(cfg: &WorkerConfig, telemetry: &Arc<Telemetry>) -> Result<(), BackfillError> {
    let mut oltp = PgConnection::connect_with(&cfg.oltp_url.connect_options()?).await?;
    let mut olap = PgConnection::connect_with(&cfg.olap_url.connect_options()?).await?;
    let mut types = HashMap::new();
    let mut last_sync = Instant::now() - Duration::from_secs(60);
    // The audit of unpublished data in OLAP, run while no backfill waits: at start, after a
    // copy ended or the publications changed, and every few minutes.
    let mut last_audit = Instant::now();
    let mut audit_due = true;
    let mut partitions = super::partitions::Watch::default();
    loop {
        if last_sync.elapsed() >= Duration::from_secs(5) {
            audit_due |= super::follow::sync(&mut oltp, &mut olap, &cfg.publication).await?;
            let publications = publication::names(&cfg.publication);
            partitions.look(&mut oltp, &mut olap, &publications).await?;
            last_sync = Instant::now();
        }
        type Next = (
            i64,
            String,
            String,
            Option<Vec<String>>,
            String,
            i64,
            Option<String>,
            Option<i64>,
            Option<bool>,
        );
        let next: Option<Next> = sqlx::query_as(
            "select id, source_schema, source_table, last_key, state, rows_copied, scope,
                    partition_oid, partition_attached
                 from cdc_backfills where state in ('pending', 'running')
                 order by state = 'running' desc, id limit 1",
        )
        .fetch_optional(&mut olap)
        .await?;
        let Some((id, schema_name, table_name, last_key, state, copied, scope, part, attached)) =
            next
        else {
            telemetry.copy_idle();
            if audit_due || last_audit.elapsed() >= AUDIT_EVERY {
                let publications = publication::names(&cfg.publication);
                crate::schema::audit::run(&mut oltp, &mut olap, &publications).await?;
                (audit_due, last_audit) = (false, Instant::now());
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        };
        let Some(info) = source::table_by_name(&mut oltp, &schema_name, &table_name).await? else {
            finish(
                &mut olap,
                id,
                "failed",
                Some("the table no longer exists on the source"),
            )
            .await?;
            continue;
        };
        let publications = publication::names(&cfg.publication);
        let def = match publication::definition(&mut oltp, &publications, info.oid).await? {
            Some(Ok(def)) => def,
            found => {
                let why = match found {
                    Some(Err(why)) => format!("the table cannot be streamed: {why}"),
                    _ => "the table is no longer published".to_owned(),
                };
                finish(&mut olap, id, "cancelled", Some(&why)).await?;
                continue;
            }
        };
        let table = Arc::new(publication::describe(&mut oltp, &mut types, &info, &def).await?);
        let scoped = super::partitions::Scoped::from_row(scope, part, attached);
        if state == "pending" {
            // A partition's copy: its own statistics.
            let of = scoped
                .as_ref()
                .and_then(|s| s.partition)
                .unwrap_or(info.oid);
            let estimate: i64 = sqlx::query_scalar(
                "select coalesce((select greatest(reltuples, 0)::bigint from pg_class
                                  where oid = $1::oid), 0)",
            )
            .bind(i64::from(of))
            .fetch_one(&mut oltp)
            .await?;
            sqlx::query(
                "update cdc_backfills set state = 'running', started_at = now(), updated_at = now(),
                        rows_estimate = $2 where id = $1 and state = 'pending'",
            )
            .bind(id)
            .bind(estimate)
            .execute(&mut olap)
            .await?;
            tracing::info!(table = %table.qualified_source(), rows_estimate = estimate,
                "backfill started");
        }
        let task = Task {
            id,
            table,
            last_key,
            copied,
            scoped,
        };
        let conns = Conns {
            oltp: &mut oltp,
            olap: &mut olap,
        };
        audit_due |= chunk(cfg, conns, &task, telemetry).await?;
    }
}
