//! What the source's catalog says of a table (the I/O half of schema tracking): its columns
//! with their attnums, defaults and key, and the OLAP type each source type is held in.

use std::collections::HashMap;

use sqlx::PgConnection;

/// A table as the source catalog describes it — from a query, or from the DDL event
/// trigger's message (schema/oltp/logic/10_ddl_capture.sql), which has the same shape.
#[derive(Clone, Debug, PartialEq, Eq, serde::Deserialize)]
pub struct CatalogTable {
    pub oid: u32,
    pub schema: String,
    pub table: String,
    /// relreplident: d, n, f or i.
    pub identity: String,
    /// Attnums of the replica identity index, else of the primary key.
    #[serde(default)]
    pub key: Option<Vec<i16>>,
    pub columns: Vec<CatalogColumn>,
    /// The publication's column list (attnums), when it has one: what [`Self::published_columns`]
    /// keeps. Not part of the catalog's description: set from the publication's definition.
    #[serde(default)]
    pub column_list: Option<Vec<i16>>,
}

#[derive(Clone, Debug, PartialEq, Eq, serde::Deserialize)]
pub struct CatalogColumn {
    pub attnum: i16,
    pub name: String,
    pub type_oid: u32,
    pub typmod: i32,
    #[serde(default)]
    pub hasdef: bool,
    #[serde(default)]
    pub hasmissing: bool,
    #[serde(default)]
    pub generated: bool,
    /// A generated column's expression, as the source prints it.
    #[serde(default)]
    pub expression: Option<String>,
    /// What a generated column's expression uses that is the source's own (functions,
    /// operators, types, columns of such types), as the source describes them (read apart:
    /// `schema::publication::published_of`).
    #[serde(default)]
    pub uses: Option<Vec<String>>,
}

impl CatalogTable {
    /// The columns logical replication sends: not generated, and in the column list if any.
    pub fn published_columns(&self) -> impl Iterator<Item = &CatalogColumn> {
        self.columns.iter().filter(|c| {
            !c.generated
                && self
                    .column_list
                    .as_ref()
                    .is_none_or(|list| list.contains(&c.attnum))
        })
    }

    /// The attnums of the columns that are not generated (what a column list may name).
    pub fn ordinary_attnums(&self) -> Vec<i16> {
        self.columns
            .iter()
            .filter(|c| !c.generated)
            .map(|c| c.attnum)
            .collect()
    }
}

const TABLE_SQL: &str = "
    select json_build_object(
        'oid', c.oid::bigint,
        'schema', n.nspname,
        'table', c.relname,
        'identity', c.relreplident,
        'key', (select array_agg(k.attnum order by k.n)
                from pg_index i, unnest(i.indkey) with ordinality k(attnum, n)
                where i.indrelid = c.oid
                  and (case when c.relreplident = 'i' then i.indisreplident else i.indisprimary end)),
        'columns', coalesce((select json_agg(json_build_object(
                               'attnum', a.attnum, 'name', a.attname, 'type_oid', a.atttypid::bigint,
                               'typmod', a.atttypmod, 'hasdef', a.atthasdef,
                               'hasmissing', a.atthasmissing, 'generated', a.attgenerated <> '',
                               'expression', case when a.attgenerated <> ''
                                                  then pg_get_expr(d.adbin, d.adrelid) end)
                           order by a.attnum)
                    from pg_attribute a
                    left join pg_attrdef d on d.adrelid = a.attrelid and d.adnum = a.attnum
                    where a.attrelid = c.oid and a.attnum > 0 and not a.attisdropped), '[]'))::text
    from pg_class c join pg_namespace n on n.oid = c.relnamespace
    where ";

/// The table with OID `oid`, as the catalog has it now.
pub async fn table_by_oid(
    conn: &mut PgConnection,
    oid: u32,
) -> Result<Option<CatalogTable>, sqlx::Error> {
    let json: Option<String> = sqlx::query_scalar(&format!("{TABLE_SQL} c.oid = $1::oid"))
        .bind(oid as i64)
        .fetch_optional(&mut *conn)
        .await?;
    Ok(json.and_then(|j| serde_json::from_str(&j).ok()))
}

/// The table `schema.table`, as the catalog has it now.
pub async fn table_by_name(
    conn: &mut PgConnection,
    schema: &str,
    table: &str,
) -> Result<Option<CatalogTable>, sqlx::Error> {
    let json: Option<String> =
        sqlx::query_scalar(&format!("{TABLE_SQL} n.nspname = $1 and c.relname = $2"))
            .bind(schema)
            .bind(table)
            .fetch_optional(&mut *conn)
            .await?;
    Ok(json.and_then(|j| serde_json::from_str(&j).ok()))
}

/// The OLAP type that holds each `(type oid, typmod)`: built-in types as they are (their OIDs
/// are the same on every server), a domain over a built-in type as its base type, anything
/// else (enums, composites, extension types, arrays of them) as `text` — their text output,
/// value for value.
pub async fn olap_types(
    conn: &mut PgConnection,
    types: &[(u32, i32)],
) -> Result<HashMap<(u32, i32), String>, sqlx::Error> {
    let oids: Vec<i64> = types.iter().map(|t| t.0 as i64).collect();
    let mods: Vec<i32> = types.iter().map(|t| t.1).collect();
    let rows: Vec<(i64, i32, String)> = sqlx::query_as(
        "select x.oid::bigint, x.typmod,
                case when x.oid < 16384 then format_type(x.oid::oid, x.typmod)
                     when t.typtype = 'd' and t.typbasetype < 16384
                          then format_type(t.typbasetype, t.typtypmod)
                     else 'text' end
         from unnest($1::bigint[], $2::int[]) x(oid, typmod)
         left join pg_type t on t.oid = x.oid::oid",
    )
    .bind(&oids)
    .bind(&mods)
    .fetch_all(&mut *conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(oid, typmod, name)| ((oid as u32, typmod), name))
        .collect())
}

/// Reads into `types` the OLAP type of each of `wanted` it does not hold yet.
pub async fn cache_olap_types(
    conn: &mut PgConnection,
    types: &mut HashMap<(u32, i32), String>,
    wanted: impl IntoIterator<Item = (u32, i32)>,
) -> Result<(), sqlx::Error> {
    let missing: Vec<(u32, i32)> = wanted
        .into_iter()
        .filter(|t| !types.contains_key(t))
        .collect::<std::collections::HashSet<_>>()
        .into_iter()
        .collect();
    if !missing.is_empty() {
        types.extend(olap_types(conn, &missing).await?);
    }
    Ok(())
}

/// Tables published by any of `publications` (schema, table).
pub async fn published_tables(
    conn: &mut PgConnection,
    publications: &[String],
) -> Result<Vec<(String, String)>, sqlx::Error> {
    sqlx::query_as(
        "select distinct schemaname::text, tablename::text from pg_publication_tables
         where pubname = any($1) order by 1, 2",
    )
    .bind(publications)
    .fetch_all(&mut *conn)
    .await
}
