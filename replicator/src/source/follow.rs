//! The backfill worker's watch over the publications (every few seconds): a table added to
//! them is copied (a backfill), a table removed from them is no longer mirrored (its replica
//! is kept), and a mirrored table whose source differs from what the replica knows — its
//! columns, or what the publications publish of it: row filter, column list, generated
//! columns — is checked by the stream, in the stream's order (a row filter change, or a
//! change of a table nothing is written to, sends nothing through pgoutput).

use sqlx::PgConnection;

use super::backfill::{BackfillError, TableName, SCHEMA_CHECK_PREFIX};
use crate::published::Published;
use crate::schema::{publication, source, store};
use crate::table::Column;

/// One look at the publications `publication` names (see the module docs). Returns whether
/// it found a table added or changed.
pub async fn sync(
    oltp: &mut PgConnection,
    olap: &mut PgConnection,
    publication: &str,
) -> Result<bool, BackfillError> {
    let publications = publication::names(publication);
    let published = source::published_tables(oltp, &publications).await?;
    let known: Vec<(String, String, bool)> =
        sqlx::query_as("select source_schema, source_table, published from cdc_tables")
            .fetch_all(&mut *olap)
            .await?;
    // Only once the replicator has copied something (a first start in progress owns it).
    if known.is_empty() {
        return Ok(false);
    }
    let mut changed = false;
    for (s, t) in &published {
        if !known.iter().any(|k| &k.0 == s && &k.1 == t && k.2) {
            changed |= request_copy(olap, s, t).await?;
        }
    }
    changed |= check_mirrored(oltp, olap, &publications).await?;
    for (s, t, on) in &known {
        if *on
            && !published.iter().any(|p| &p.0 == s && &p.1 == t)
            && store::unpublish(olap, s, t).await?
        {
            tracing::info!(table = %format!("{s}.{t}"),
                "table removed from the publication: no longer mirrored, its replica is kept as it is");
            let dropped = source::table_by_name(oltp, s, t).await?.is_none();
            crate::star::store::table_gone(olap, s, t, dropped).await?;
        }
    }
    Ok(changed)
}

/// Requests the copy of a table added to the publications; whether it was not yet requested.
async fn request_copy(olap: &mut PgConnection, s: &str, t: &str) -> Result<bool, BackfillError> {
    let n = sqlx::query(
        "insert into cdc_backfills (source_schema, source_table, reason)
         values ($1, $2, 'added to the publication')
         on conflict (source_schema, source_table) where state in ('pending', 'running')
                                                      and scope is null
         do nothing",
    )
    .bind(s)
    .bind(t)
    .execute(&mut *olap)
    .await?
    .rows_affected();
    if n > 0 {
        tracing::info!(table = %format!("{s}.{t}"), "table added to the publication: copying it (backfill)");
    }
    Ok(n > 0)
}

/// A mirrored table whose source is not what the replica knows, with no change of it
/// streamed since: the stream is asked to look (in its order). Whether there was one.
async fn check_mirrored(
    oltp: &mut PgConnection,
    olap: &mut PgConnection,
    publications: &[String],
) -> Result<bool, BackfillError> {
    let defs = publication::definitions(oltp, publications, None).await?;
    let mirrored: Vec<(String, String, serde_json::Value, serde_json::Value)> = sqlx::query_as(
        "select source_schema, source_table, columns, publication from cdc_tables where published",
    )
    .fetch_all(&mut *olap)
    .await?;
    let mut asked = false;
    for (s, t, columns, published) in mirrored {
        let columns: Vec<Column> = serde_json::from_value(columns).unwrap_or_default();
        let published: Published = serde_json::from_value(published).unwrap_or_default();
        let Some(mut now) = source::table_by_name(oltp, &s, &t).await? else {
            continue;
        };
        // Not published (the loop above unmirrors it), or not streamable (the stream stops).
        let Some(Ok(def)) = defs.get(&now.oid) else {
            continue;
        };
        now.column_list = def.column_list.clone();
        if publication::stale(&columns, &published, &now, def) {
            let name = TableName {
                schema: s.clone(),
                table: t.clone(),
            };
            sqlx::query("select pg_logical_emit_message(true, $1, $2)")
                .bind(SCHEMA_CHECK_PREFIX)
                .bind(serde_json::to_string(&name).unwrap_or_default())
                .execute(&mut *oltp)
                .await?;
            asked = true;
        }
    }
    Ok(asked)
}
