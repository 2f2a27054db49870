//! The OLAP side of schema tracking: `cdc_tables` (what the replica knows of each source
//! table) and the DDL that makes a replica table follow its source.

use std::sync::Arc;

use sqlx::PgConnection;

use super::plan::Step;
use crate::decode::ReplicaIdentity;
use crate::table::{ident, Column, SourceTable, REPLICA_SCHEMA};

/// Every table the replica mirrors: from `cdc_tables`, and replica tables made before it
/// existed (their columns read from OLAP's catalog; attnums unknown until the source is read).
pub async fn load(conn: &mut PgConnection) -> Result<Vec<SourceTable>, sqlx::Error> {
    load_tables(conn, false).await
}

/// [`load`], with the tables no longer published (their replica is kept): replay reads their
/// changes too.
pub async fn load_all(conn: &mut PgConnection) -> Result<Vec<SourceTable>, sqlx::Error> {
    load_tables(conn, true).await
}

async fn load_tables(
    conn: &mut PgConnection,
    unpublished: bool,
) -> Result<Vec<SourceTable>, sqlx::Error> {
    type Row = (
        String,
        String,
        Option<i64>,
        String,
        serde_json::Value,
        Vec<String>,
        String,
        serde_json::Value,
    );
    let rows: Vec<Row> = sqlx::query_as(
        "select source_schema, source_table, source_oid, replica_table, columns, key_columns,
                identity::text, publication
         from cdc_tables where published or $1",
    )
    .bind(unpublished)
    .fetch_all(&mut *conn)
    .await?;
    let mut tables = Vec::new();
    for (schema, table, oid, replica, columns, key, identity, published) in rows {
        let columns: Vec<Column> = serde_json::from_value(columns).unwrap_or_default();
        let key = key
            .iter()
            .filter_map(|k| columns.iter().position(|c| &c.name == k))
            .collect();
        tables.push(SourceTable {
            oid: oid.unwrap_or(0) as u32,
            schema: schema.into(),
            name: table.into(),
            replica: replica.into(),
            columns,
            key,
            identity: identity
                .bytes()
                .next()
                .and_then(ReplicaIdentity::from_byte)
                .unwrap_or(ReplicaIdentity::Default),
            published: Arc::new(serde_json::from_value(published).unwrap_or_default()),
        });
    }
    // Replica tables of an earlier version, without a cdc_tables row.
    let adopted: Vec<(String, serde_json::Value, Vec<String>)> = sqlx::query_as(
        "select c.relname::text,
                json_agg(json_build_object('name', a.attname, 'type_oid', a.atttypid::bigint,
                                           'typmod', a.atttypmod,
                                           'olap_type', format_type(a.atttypid, a.atttypmod))
                         order by a.attnum)::jsonb,
                coalesce((select array_agg(k.attname::text order by x.ord)
                          from pg_index i
                          cross join lateral unnest(i.indkey) with ordinality x(attnum, ord)
                          join pg_attribute k on k.attrelid = i.indrelid and k.attnum = x.attnum
                          where i.indrelid = c.oid and i.indisprimary), '{}')
         from pg_class c
         join pg_namespace n on n.oid = c.relnamespace
         join pg_attribute a on a.attrelid = c.oid and a.attnum > 0 and not a.attisdropped
                             and a.attgenerated = ''
         where n.nspname = $1 and c.relkind = 'r'
           and not exists (select 1 from cdc_tables t where t.replica_table = c.relname)
         group by c.oid, c.relname",
    )
    .bind(REPLICA_SCHEMA)
    .fetch_all(&mut *conn)
    .await?;
    for (replica, columns, key) in adopted {
        let columns: Vec<Column> = serde_json::from_value(columns).unwrap_or_default();
        let (schema, table) = match replica.split_once("__") {
            Some((s, t)) => (s.to_owned(), t.to_owned()),
            None => ("public".to_owned(), replica.clone()),
        };
        let key = key
            .iter()
            .filter_map(|k| columns.iter().position(|c| &c.name == k))
            .collect();
        tables.push(SourceTable {
            oid: 0,
            schema: schema.into(),
            name: table.into(),
            replica: replica.into(),
            columns,
            key,
            identity: ReplicaIdentity::Default,
            published: Default::default(),
        });
    }
    Ok(tables)
}

/// Records what the replica now knows of `table` (replacing the row of `renamed_from`).
pub async fn save(
    conn: &mut PgConnection,
    table: &SourceTable,
    renamed_from: Option<&SourceTable>,
) -> Result<(), sqlx::Error> {
    if let Some(old) = renamed_from {
        sqlx::query("delete from cdc_tables where source_schema = $1 and source_table = $2")
            .bind(old.schema.as_ref())
            .bind(old.name.as_ref())
            .execute(&mut *conn)
            .await?;
    }
    let columns = serde_json::to_value(&table.columns).unwrap_or_default();
    let published = serde_json::to_value(&*table.published).unwrap_or_default();
    let key: Vec<&str> = table.key_names();
    sqlx::query(
        "insert into cdc_tables (source_schema, source_table, source_oid, replica_table, columns,
                                 key_columns, identity, publication, published, updated_at)
         values ($1, $2, $3, $4, $5, $6, $7::\"char\", $8, true, now())
         on conflict (source_schema, source_table) do update
            set source_oid = excluded.source_oid, replica_table = excluded.replica_table,
                columns = excluded.columns, key_columns = excluded.key_columns,
                identity = excluded.identity, publication = excluded.publication,
                published = true, updated_at = now()",
    )
    .bind(table.schema.as_ref())
    .bind(table.name.as_ref())
    .bind(table.oid as i64)
    .bind(table.replica.as_ref())
    .bind(columns)
    .bind(key)
    .bind((table.identity.as_byte() as char).to_string())
    .bind(published)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Marks tables no longer published (their replica and history are kept).
pub async fn unpublish(
    conn: &mut PgConnection,
    schema: &str,
    table: &str,
) -> Result<bool, sqlx::Error> {
    let n = sqlx::query(
        "update cdc_tables set published = false, updated_at = now()
         where source_schema = $1 and source_table = $2 and published",
    )
    .bind(schema)
    .bind(table)
    .execute(&mut *conn)
    .await?
    .rows_affected();
    Ok(n > 0)
}

/// The `create table` of a replica: every column, the key as its primary key (none: a
/// multiset, duplicates kept).
pub fn create_sql(t: &SourceTable) -> String {
    let mut defs: Vec<String> = t
        .columns
        .iter()
        .map(|c| format!("{} {}", ident(&c.name), c.olap_type))
        .collect();
    if !t.key.is_empty() {
        let key: Vec<String> = t.key_names().iter().map(|k| ident(k)).collect();
        defs.push(format!("primary key ({})", key.join(", ")));
    }
    format!(
        "create table if not exists {} ({})",
        t.replica_ident(),
        defs.join(", ")
    )
}

/// Carries out `steps` on the replica of `after`. A type change whose cast OLAP refuses
/// empties the column instead (the table is copied again after a type change).
pub async fn apply_steps(
    conn: &mut PgConnection,
    after: &SourceTable,
    steps: &[Step],
) -> Result<(), sqlx::Error> {
    let r = after.replica_ident();
    // Generated columns go first (a column they use could not be dropped or retyped), and
    // come back last (a column they use may only now be added).
    super::generated::drop_stale(conn, after).await?;
    for step in steps {
        match step {
            Step::CreateTable => {
                sqlx::query(&create_sql(after)).execute(&mut *conn).await?;
                reconcile(conn, after).await?;
            }
            Step::RenameTable { from } => {
                let sql = format!(
                    "alter table {}.{} rename to {}",
                    ident(REPLICA_SCHEMA),
                    ident(from),
                    ident(&after.replica)
                );
                sqlx::query(&sql).execute(&mut *conn).await?;
            }
            Step::DropColumn { name } => {
                let sql = format!("alter table {r} drop column if exists {}", ident(name));
                sqlx::query(&sql).execute(&mut *conn).await?;
            }
            Step::RenameColumn { from, to } => {
                let sql = format!(
                    "alter table {r} rename column {} to {}",
                    ident(from),
                    ident(to)
                );
                sqlx::query(&sql).execute(&mut *conn).await?;
            }
            Step::AddColumn { name, olap_type } => {
                let sql = format!(
                    "alter table {r} add column if not exists {} {olap_type}",
                    ident(name)
                );
                sqlx::query(&sql).execute(&mut *conn).await?;
            }
            Step::Retype { name, olap_type } => {
                let c = ident(name);
                sqlx::query("savepoint retype").execute(&mut *conn).await?;
                let cast = format!(
                    "alter table {r} alter column {c} type {olap_type} using {c}::text::{olap_type}"
                );
                match sqlx::query(&cast).execute(&mut *conn).await {
                    Ok(_) => {
                        sqlx::query("release savepoint retype")
                            .execute(&mut *conn)
                            .await?;
                    }
                    Err(_) => {
                        sqlx::query("rollback to savepoint retype")
                            .execute(&mut *conn)
                            .await?;
                        let sql =
                            format!("alter table {r} drop column {c}, add column {c} {olap_type}");
                        sqlx::query(&sql).execute(&mut *conn).await?;
                    }
                }
            }
            Step::SetKey => {
                let pk: Option<String> = sqlx::query_scalar(
                    "select conname::text from pg_constraint
                     where conrelid = to_regclass($1) and contype = 'p'",
                )
                .bind(&r)
                .fetch_optional(&mut *conn)
                .await?;
                if let Some(pk) = pk {
                    let sql = format!("alter table {r} drop constraint {}", ident(&pk));
                    sqlx::query(&sql).execute(&mut *conn).await?;
                }
                if !after.key.is_empty() {
                    let key: Vec<String> = after.key_names().iter().map(|k| ident(k)).collect();
                    let sql = format!("alter table {r} add primary key ({})", key.join(", "));
                    sqlx::query(&sql).execute(&mut *conn).await?;
                }
            }
            // Recorded by the sink (sink/olap/partitions.rs): no DDL of the replica.
            Step::Partitions(_) => {}
        }
    }
    super::generated::add_missing(conn, after).await?;
    Ok(())
}

/// An existing replica table made to have exactly the columns of `t` (by name), for a table
/// created again: missing columns added, others dropped, types changed where they differ
/// (its generated columns are [`super::generated`]'s).
async fn reconcile(conn: &mut PgConnection, t: &SourceTable) -> Result<(), sqlx::Error> {
    let r = t.replica_ident();
    let have: Vec<(String, String)> = sqlx::query_as(
        "select attname::text, format_type(atttypid, atttypmod) from pg_attribute
         where attrelid = to_regclass($1) and attnum > 0 and not attisdropped
           and attgenerated = ''",
    )
    .bind(&r)
    .fetch_all(&mut *conn)
    .await?;
    for (name, ty) in &have {
        match t.column(name) {
            None => {
                let sql = format!("alter table {r} drop column {}", ident(name));
                sqlx::query(&sql).execute(&mut *conn).await?;
            }
            Some(c) if &c.olap_type != ty => {
                let sql = format!(
                    "alter table {r} drop column {0}, add column {0} {1}",
                    ident(name),
                    c.olap_type
                );
                sqlx::query(&sql).execute(&mut *conn).await?;
            }
            Some(_) => {}
        }
    }
    for c in &t.columns {
        if !have.iter().any(|(n, _)| n == &c.name) {
            let sql = format!(
                "alter table {r} add column {} {}",
                ident(&c.name),
                c.olap_type
            );
            sqlx::query(&sql).execute(&mut *conn).await?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::table::fixtures;

    #[test]
    fn create_with_and_without_key() {
        let sql = create_sql(&fixtures::products());
        assert!(
            sql.starts_with("create table if not exists \"replica\".\"products\" (\"id\" bigint, ")
        );
        assert!(sql.ends_with("primary key (\"id\"))"));
        assert!(!create_sql(&fixtures::keyless()).contains("primary key"));
    }
}
