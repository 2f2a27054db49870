//! Whether OLAP holds only what the publications publish — for an OLAP written before the
//! replicator followed row filters and column lists, or one whose publication was narrowed
//! since: `status` warns where it finds unpublished data, and `snapshot --table NAME` cleans
//! the table (its journal here, its replica by the copy it requests).
//!
//! Cheap checks run with every `status` ([`warnings`]): replica columns the replica does not
//! mirror, and generated columns it goes without. The scans — replica rows outside their
//! row filter, journal images holding values of columns the publications do not publish —
//! are run by the backfill worker ([`run`]: at its start, after a copy ends, after the
//! publications changed, and every few minutes), which records what it finds in
//! `cdc_publication_findings` for `status` to show.

use sqlx::{Connection, PgConnection};

use super::{generated, publication, source, store};
use crate::table::{ident, SourceTable};

/// How long one table's scan may take before it is reported as not checked.
const SCAN_TIMEOUT: &str = "60s";

/// What `status` says of unpublished data (no row values).
pub async fn warnings(olap: &mut PgConnection) -> Result<Vec<String>, sqlx::Error> {
    let mut out = Vec::new();
    for t in store::load(olap).await? {
        if t.published.generated.is_empty() {
            continue;
        }
        for (column, why) in generated::missing(olap, &t).await? {
            out.push(format!(
                "replica.{} has no generated column {column} of {}: {why}",
                t.replica,
                t.qualified_source()
            ));
        }
    }
    let extra: Vec<(String, String, String)> =
        sqlx::query_as(UNMIRRORED_SQL).fetch_all(&mut *olap).await?;
    for (replica, source, column) in extra {
        out.push(format!(
            "{replica} has column {column}, which the publication does not publish for \
             {source}: run `brewlytics snapshot --table {source}` to clean it"
        ));
    }
    let migrated: bool =
        sqlx::query_scalar("select to_regclass('cdc_publication_findings') is not null")
            .fetch_one(&mut *olap)
            .await?;
    if migrated {
        let found: Vec<String> = sqlx::query_scalar(
            "select format('%s (found %s)', finding, to_char(found_at, 'YYYY-MM-DD HH24:MI:SS TZ'))
             from cdc_publication_findings order by source_schema, source_table, finding",
        )
        .fetch_all(&mut *olap)
        .await?;
        out.extend(found);
    }
    Ok(out)
}

/// Replica columns of every mirrored table that are neither its mirrored columns nor its
/// generated ones: (replica, source table, column).
const UNMIRRORED_SQL: &str = "
    select 'replica.' || t.replica_table, format('%s.%s', t.source_schema, t.source_table),
           a.attname::text
    from cdc_tables t
    join pg_attribute a on a.attrelid = to_regclass(format('%I.%I', 'replica', t.replica_table))
                       and a.attnum > 0 and not a.attisdropped and a.attgenerated = ''
    where t.published
      and not exists (select 1 from jsonb_array_elements(t.columns) c where c ->> 'name' = a.attname)
      and not exists (select 1 from jsonb_array_elements(coalesce(t.publication -> 'generated', '[]')) g
                      where g ->> 'name' = a.attname)
    order by 1, a.attnum";

/// The replica columns of `t` that are neither its mirrored columns nor its generated ones.
async fn unmirrored_columns(
    olap: &mut PgConnection,
    t: &SourceTable,
) -> Result<Vec<String>, sqlx::Error> {
    let mut known: Vec<String> = t.columns.iter().map(|c| c.name.clone()).collect();
    known.extend(t.published.generated.iter().map(|g| g.name.clone()));
    sqlx::query_scalar(
        "select attname::text from pg_attribute
         where attrelid = to_regclass($1) and attnum > 0 and not attisdropped
           and attgenerated = '' and not attname::text = any($2)
         order by attnum",
    )
    .bind(t.replica_ident())
    .bind(&known)
    .fetch_all(&mut *olap)
    .await
}

/// The columns of `t`'s source that `publications` do not publish (that a journal image could
/// hold values of): the source's ordinary columns outside their column list.
async fn unpublished_columns(
    oltp: &mut PgConnection,
    publications: &[String],
    t: &SourceTable,
) -> Result<Vec<String>, sqlx::Error> {
    let Some(mut info) = source::table_by_name(oltp, &t.schema, &t.name).await? else {
        return Ok(Vec::new());
    };
    let Some(Ok(def)) = publication::definition(oltp, publications, info.oid).await? else {
        return Ok(Vec::new());
    };
    info.column_list = def.column_list;
    let published: Vec<&str> = info.published_columns().map(|c| c.name.as_str()).collect();
    Ok(info
        .columns
        .iter()
        .filter(|c| !c.generated && !published.contains(&c.name.as_str()))
        .map(|c| c.name.clone())
        .collect())
}

/// The worker's scans (see the module docs): what they find replaces the findings recorded.
pub async fn run(
    oltp: &mut PgConnection,
    olap: &mut PgConnection,
    publications: &[String],
) -> Result<(), sqlx::Error> {
    let mut found: Vec<(SourceTable, String)> = Vec::new();
    for t in store::load(olap).await? {
        let copying: bool = sqlx::query_scalar(
            "select exists (select 1 from cdc_backfills where source_schema = $1
                            and source_table = $2 and state in ('pending', 'running'))",
        )
        .bind(t.schema.as_ref())
        .bind(t.name.as_ref())
        .fetch_one(&mut *olap)
        .await?;
        if !copying {
            if let Some(f) = rows_outside_filter(olap, &t).await? {
                found.push((t.clone(), f));
            }
        }
        let unpublished = unpublished_columns(oltp, publications, &t).await?;
        if let Some(f) = journal_holding(olap, &t, &unpublished).await? {
            found.push((t, f));
        }
    }
    let mut tx = olap.begin().await?;
    sqlx::query("delete from cdc_publication_findings")
        .execute(&mut *tx)
        .await?;
    for (t, finding) in found {
        sqlx::query(
            "insert into cdc_publication_findings (source_schema, source_table, finding)
             values ($1, $2, $3)",
        )
        .bind(t.schema.as_ref())
        .bind(t.name.as_ref())
        .bind(finding)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await
}

/// A count in a transaction of its own, bounded by [`SCAN_TIMEOUT`]: Err when it cannot be
/// run (a filter over a column the replica does not have) or does not finish in time.
async fn bounded_count(
    olap: &mut PgConnection,
    sql: &str,
) -> Result<Result<i64, String>, sqlx::Error> {
    let mut tx = olap.begin().await?;
    sqlx::query(&format!("set local statement_timeout = '{SCAN_TIMEOUT}'"))
        .execute(&mut *tx)
        .await?;
    let n = match sqlx::query_scalar::<_, i64>(sql).fetch_one(&mut *tx).await {
        Ok(n) => Ok(n),
        Err(sqlx::Error::Database(e)) => Err(e.message().to_owned()),
        Err(e) => return Err(e),
    };
    tx.rollback().await?;
    Ok(n)
}

/// Replica rows the table's row filter does not take (evaluated in OLAP: a row filter uses
/// built-in functions and types only).
async fn rows_outside_filter(
    olap: &mut PgConnection,
    t: &SourceTable,
) -> Result<Option<String>, sqlx::Error> {
    let Some(filter) = &t.published.row_filter else {
        return Ok(None);
    };
    let sql = format!(
        "select count(*) from {} where not coalesce(({filter}), false)",
        t.replica_ident()
    );
    Ok(match bounded_count(olap, &sql).await? {
        Ok(0) => None,
        Ok(n) => Some(format!(
            "replica.{} holds {n} rows outside the publication's row filter of {}: run \
             `brewlytics snapshot --table {}` to clean it",
            t.replica,
            t.qualified_source(),
            t.qualified_source()
        )),
        // Its columns are not all in the replica (a column list): nothing to tell.
        Err(_) => None,
    })
}

/// Journal images of the table holding values of `unpublished` columns.
async fn journal_holding(
    olap: &mut PgConnection,
    t: &SourceTable,
    unpublished: &[String],
) -> Result<Option<String>, sqlx::Error> {
    if unpublished.is_empty() {
        return Ok(None);
    }
    let mut tx = olap.begin().await?;
    sqlx::query(&format!("set local statement_timeout = '{SCAN_TIMEOUT}'"))
        .execute(&mut *tx)
        .await?;
    let found: Result<(Vec<String>, i64), sqlx::Error> = sqlx::query_as(
        "select coalesce(array_agg(distinct k order by k), '{}'), count(distinct (e.lsn, e.seq))
         from cdc_events e,
              lateral (select json_object_keys(x) k from (values (e.key), (e.before), (e.after)) v(x)
                       where json_typeof(x) = 'object') keys
         where e.source_schema = $1 and e.source_table = $2 and e.op in ('r', 'i', 'u', 'd')
           and k = any ($3)",
    )
    .bind(t.schema.as_ref())
    .bind(t.name.as_ref())
    .bind(unpublished)
    .fetch_one(&mut *tx)
    .await;
    tx.rollback().await?;
    Ok(match found {
        Ok((columns, _)) if columns.is_empty() => None,
        Ok((columns, events)) => Some(format!(
            "the journal holds values of {} of {} in {events} events, which the publication \
             does not publish: run `brewlytics snapshot --table {}` to clean it",
            columns.join(", "),
            t.qualified_source(),
            t.qualified_source()
        )),
        Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("57014") => Some(format!(
            "the journal of {} was not checked for unpublished columns: the scan took over \
             {SCAN_TIMEOUT}",
            t.qualified_source()
        )),
        Err(e) => return Err(e),
    })
}

/// The condition that a journal row's images name any of the columns `names` (a text[]).
fn holds_any(names: &str) -> String {
    ["key", "before", "after"]
        .iter()
        .map(|c| format!("coalesce({c}::jsonb ?| {names}, false)"))
        .collect::<Vec<_>>()
        .join(" or ")
}

/// `snapshot --table`'s cleaning of `t` (as the publications publish it now): the values of
/// columns they do not publish taken out of its journal images, and replica columns it does
/// not mirror dropped. Returns the journal events changed.
pub async fn scrub(
    oltp: &mut PgConnection,
    olap: &mut PgConnection,
    publications: &[String],
    t: &SourceTable,
) -> Result<u64, sqlx::Error> {
    let mut tx = olap.begin().await?;
    for column in unmirrored_columns(&mut tx, t).await? {
        sqlx::query(&format!(
            "alter table {} drop column {}",
            t.replica_ident(),
            ident(&column)
        ))
        .execute(&mut *tx)
        .await?;
    }
    let unpublished = unpublished_columns(oltp, publications, t).await?;
    let mut changed = 0;
    if !unpublished.is_empty() {
        changed = sqlx::query(&format!(
            "update cdc_events
             set key = cdc_image_without(key, $3), before = cdc_image_without(before, $3),
                 after = cdc_image_without(after, $3),
                 json_nulls = array(select n from unnest(json_nulls) n where n <> all ($3))
             where source_schema = $1 and source_table = $2 and op in ('r', 'i', 'u', 'd')
               and ({})",
            holds_any("$3")
        ))
        .bind(t.schema.as_ref())
        .bind(t.name.as_ref())
        .bind(&unpublished)
        .execute(&mut *tx)
        .await?
        .rows_affected();
    }
    // Found again, if still there, by the next audit (after the copy this command asks for).
    sqlx::query(
        "delete from cdc_publication_findings where source_schema = $1 and source_table = $2",
    )
    .bind(t.schema.as_ref())
    .bind(t.name.as_ref())
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(changed)
}

/// The table `schema.table` as the replica mirrors it, if it does.
pub async fn mirrored(
    olap: &mut PgConnection,
    schema: &str,
    table: &str,
) -> Result<Option<SourceTable>, sqlx::Error> {
    Ok(store::load(olap)
        .await?
        .into_iter()
        .find(|t| &*t.schema == schema && &*t.name == table))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_journal_condition_looks_in_every_image() {
        assert_eq!(
            holds_any("$3"),
            "coalesce(key::jsonb ?| $3, false) or coalesce(before::jsonb ?| $3, false) \
             or coalesce(after::jsonb ?| $3, false)"
        );
    }
}
