//! What the publications publish, read from the source's catalog: each table's memberships
//! (`pg_get_publication_tables`, the function the native table sync reads, with each
//! publication's operations) combined by the rules of [`crate::published`].
//!
//! `PUBLICATION` may name several publications, comma-separated: the stream subscribes to all
//! of them, as a subscription does, and their definitions of a table combine.
//!
//! A change of a definition while streaming reaches the stream in its order two ways: the
//! DDL event trigger (schema/oltp/logic/10_ddl_capture.sql) sends a logical message
//! ([`PREFIX`]) in the transaction of every `ALTER PUBLICATION`, and the backfill worker
//! compares the definitions with what the replica mirrors every few seconds and asks the
//! stream to look when they differ (a row filter change sends nothing through pgoutput).

use std::collections::HashMap;
use std::sync::Arc;

use sqlx::PgConnection;

use super::source::{self, CatalogTable};
use crate::decode::{TupleData, TupleValue};
use crate::published::{combine, not_carried, Definition, Generated, Member, Published};
use crate::table::{ident, Column, SourceTable};

/// The prefix of the event trigger's message on `ALTER PUBLICATION` (content: a JSON array
/// of the publications it altered; empty when it could not tell).
pub const PREFIX: &str = "brewlytics_publication";

/// The publications `PUBLICATION` names (comma-separated).
pub use crate::slot::{publication_names as names, validate_publications as validate};

/// Why a table is copied again when pgoutput sent an INSERT lacking a value: under a row
/// filter, an UPDATE that brings a row in is sent as an INSERT, and a TOASTed value the
/// UPDATE did not change is left out of it (unless REPLICA IDENTITY FULL logged it).
pub const TOAST_GAP: &str = "an UPDATE brought a row into the row filter and left a large \
    (TOASTed) value unchanged, which PostgreSQL does not send";

/// Whether an INSERT's row leaves values out (unchanged TOAST): see [`TOAST_GAP`].
pub fn leaves_out_toast(row: &TupleData) -> bool {
    row.columns
        .iter()
        .any(|v| matches!(v, TupleValue::UnchangedToast))
}

/// The decision to copy `table` again for `reason`, its shape unchanged.
pub fn copy_again(table: Arc<SourceTable>, reason: &str) -> super::Resolved {
    super::Resolved {
        table: table.clone(),
        change: Some((
            Some(table),
            super::plan::Plan {
                steps: Vec::new(),
                backfill: Some(reason.to_owned()),
            },
        )),
    }
}

/// Whether an `ALTER PUBLICATION` message concerns `publications`.
pub fn concerns(content: &[u8], publications: &[String]) -> bool {
    match serde_json::from_slice::<Vec<String>>(content) {
        Ok(altered) => altered.is_empty() || altered.iter().any(|a| publications.contains(a)),
        Err(_) => true,
    }
}

const MEMBERS_SQL: &str = "
    select g.relid::bigint, p.pubname::text, p.pubinsert, p.pubupdate, p.pubdelete,
           (select array_agg(x order by x) from unnest(g.attrs::int2[]) x),
           pg_get_expr(g.qual, g.relid),
           array(select a.attnum from pg_attribute a
                 where a.attrelid = g.relid and a.attnum > 0 and not a.attisdropped
                   and a.attgenerated = '' order by a.attnum)
    from pg_publication p, lateral pg_get_publication_tables(p.pubname::text) g
    where p.pubname = any($1) and ($2::oid is null or g.relid = $2::oid)";

type MemberRow = (
    i64,
    String,
    bool,
    bool,
    bool,
    Option<Vec<i16>>,
    Option<String>,
    Vec<i16>,
);

/// The definition of every table `publications` publish (of table `only`, if given), by
/// OID; Err: the publications cannot be streamed together for that table, and why.
pub async fn definitions(
    conn: &mut PgConnection,
    publications: &[String],
    only: Option<u32>,
) -> Result<HashMap<u32, Result<Definition, String>>, sqlx::Error> {
    let rows: Vec<MemberRow> = sqlx::query_as(MEMBERS_SQL)
        .bind(publications)
        .bind(only.map(i64::from))
        .fetch_all(&mut *conn)
        .await?;
    let mut members: HashMap<u32, (Vec<Member>, Vec<i16>)> = HashMap::new();
    for (relid, publication, insert, update, delete, columns, filter, live) in rows {
        let entry = members.entry(relid as u32).or_default();
        entry.0.push(Member {
            publication,
            insert,
            update,
            delete,
            columns,
            filter,
        });
        entry.1 = live;
    }
    Ok(members
        .into_iter()
        .map(|(oid, (m, live))| (oid, combine(&m, &live)))
        .collect())
}

/// A table the publications cannot stream together (PostgreSQL refuses it), said in one
/// line with the fix; None when there is none.
pub async fn unstreamable(
    conn: &mut PgConnection,
    publications: &[String],
) -> Result<Option<String>, sqlx::Error> {
    let defs = definitions(conn, publications, None).await?;
    let mut bad: Vec<(u32, &String)> = defs
        .iter()
        .filter_map(|(oid, d)| d.as_ref().err().map(|e| (*oid, e)))
        .collect();
    bad.sort();
    let Some((oid, why)) = bad.first() else {
        return Ok(None);
    };
    let name: String = sqlx::query_scalar(
        "select format('%I.%I', n.nspname, c.relname)
         from pg_class c join pg_namespace n on n.oid = c.relnamespace where c.oid = $1::oid",
    )
    .bind(i64::from(*oid))
    .fetch_one(&mut *conn)
    .await?;
    Ok(Some(format!(
        "table {name} cannot be streamed: {why}; make them publish the same columns \
         (ALTER PUBLICATION … SET TABLE {name} (…)), or stream one of them"
    )))
}

/// A digest of every publication's definition as `conn`'s snapshot sees it (plain catalog
/// reads: under an imported snapshot, the publications as of that snapshot).
/// `pg_get_publication_tables` reads the catalog as it is now, whatever the snapshot: the
/// first start compares the two to know that the definitions it read are the snapshot's.
pub async fn catalog_digest(conn: &mut PgConnection) -> Result<String, sqlx::Error> {
    sqlx::query_scalar(
        "select md5(concat_ws('|',
            (select string_agg(concat_ws(',', oid, pubname, puballtables, pubinsert, pubupdate,
                                         pubdelete, pubtruncate, pubviaroot), ';' order by oid)
             from pg_publication),
            (select string_agg(concat_ws(',', oid, prpubid, prrelid, prqual::text, prattrs::text),
                               ';' order by oid)
             from pg_publication_rel),
            (select string_agg(concat_ws(',', oid, pnpubid, pnnspid), ';' order by oid)
             from pg_publication_namespace)))",
    )
    .fetch_one(conn)
    .await
}

/// The definition of one table; None when the publications do not publish it.
pub async fn definition(
    conn: &mut PgConnection,
    publications: &[String],
    oid: u32,
) -> Result<Option<Result<Definition, String>>, sqlx::Error> {
    Ok(definitions(conn, publications, Some(oid))
        .await?
        .remove(&oid))
}

/// What a table's generated columns' expressions use that is the source's own, by attnum: a
/// function, operator or type it defines (OLAP may lack it, or define it otherwise), or a
/// column of a type OLAP holds as text (an enum: other comparisons, other functions).
const USES_SQL: &str = "
    select d.adnum, array(
        select pg_describe_object(dep.refclassid, dep.refobjid, 0) from pg_depend dep
        where dep.classid = 'pg_attrdef'::regclass and dep.objid = d.oid
          and dep.refclassid <> 'pg_class'::regclass and dep.refobjid >= 16384
        union
        select format('column %I of type %s', a.attname, format_type(a.atttypid, a.atttypmod))
        from pg_depend dep
        join pg_attribute a on a.attrelid = dep.refobjid and a.attnum = dep.refobjsubid
        join pg_type ty on ty.oid = a.atttypid
        where dep.classid = 'pg_attrdef'::regclass and dep.objid = d.oid
          and dep.refclassid = 'pg_class'::regclass and dep.refobjsubid > 0
          and ty.oid >= 16384 and ty.typtype <> 'd'
        order by 1)
    from pg_attrdef d
    join pg_attribute g on g.attrelid = d.adrelid and g.attnum = d.adnum and g.attgenerated <> ''
    where d.adrelid = $1::oid";

/// What is published of the table `info` describes under `def`, what its generated columns'
/// expressions use and their OLAP types read first.
pub async fn published_of(
    conn: &mut PgConnection,
    types: &mut HashMap<(u32, i32), String>,
    info: &CatalogTable,
    def: &Definition,
) -> Result<Published, sqlx::Error> {
    if def.column_list.is_some() || !info.columns.iter().any(|c| c.generated) {
        return Ok(published_from(info, def, types));
    }
    let uses: HashMap<i16, Vec<String>> = sqlx::query_as(USES_SQL)
        .bind(i64::from(info.oid))
        .fetch_all(&mut *conn)
        .await?
        .into_iter()
        .collect();
    let mut info = info.clone();
    for c in info.columns.iter_mut().filter(|c| c.generated) {
        c.uses = uses.get(&c.attnum).cloned();
    }
    let wanted = info
        .columns
        .iter()
        .filter(|c| c.generated)
        .map(|c| (c.type_oid, c.typmod));
    source::cache_olap_types(conn, types, wanted).await?;
    Ok(published_from(&info, def, types))
}

/// What is published of the table `info` describes under `def` (pure); `types` holds the
/// OLAP type of each of its generated columns' `(type oid, typmod)`.
pub fn published_from(
    info: &CatalogTable,
    def: &Definition,
    types: &HashMap<(u32, i32), String>,
) -> Published {
    let generated = match def.column_list {
        Some(_) => Vec::new(),
        None => info
            .columns
            .iter()
            .filter(|c| c.generated)
            .map(|c| Generated {
                name: c.name.clone(),
                attnum: c.attnum,
                type_oid: c.type_oid,
                typmod: c.typmod,
                olap_type: types
                    .get(&(c.type_oid, c.typmod))
                    .cloned()
                    .unwrap_or_else(|| "text".into()),
                expression: c.expression.clone().unwrap_or_default(),
                not_carried: match &c.expression {
                    Some(_) => not_carried(c.uses.as_deref().unwrap_or_default()),
                    None => Some("its expression could not be read".into()),
                },
            })
            .collect(),
    };
    Published {
        row_filter: def.row_filter.clone(),
        column_list: def.column_list.clone(),
        generated,
        last_attnum: info.columns.iter().map(|c| c.attnum).max().unwrap_or(0),
    }
}

/// The table `info` describes as `def` publishes it: its published columns (attnums known)
/// and key, and what is published of it — what the copy and backfills read.
pub async fn describe(
    conn: &mut PgConnection,
    types: &mut HashMap<(u32, i32), String>,
    info: &CatalogTable,
    def: &Definition,
) -> Result<SourceTable, sqlx::Error> {
    let mut info = info.clone();
    info.column_list = def.column_list.clone();
    let rel = super::relation_of(&info);
    let mut table = super::describe(conn, types, &rel, Some(&info), true).await?;
    table.published = Arc::new(published_of(conn, types, &info, def).await?);
    Ok(table)
}

/// Whether the replica's idea of a table (its `columns` and `published`) is behind the
/// source's: `now` (its column list applied) under `def` has other columns, another row
/// filter or column list, or other generated columns.
pub fn stale(
    columns: &[Column],
    published: &Published,
    now: &CatalogTable,
    def: &Definition,
) -> bool {
    let cols: Vec<_> = now.published_columns().collect();
    let same_columns = cols.len() == columns.len()
        && cols.iter().zip(columns).all(|(a, b)| {
            a.name == b.name
                && a.type_oid == b.type_oid
                && a.typmod == b.typmod
                && b.attnum.is_none_or(|n| n == a.attnum)
        });
    let generated_now: Vec<(&str, &str)> = match def.column_list {
        Some(_) => Vec::new(),
        None => now
            .columns
            .iter()
            .filter(|c| c.generated)
            .map(|c| (c.name.as_str(), c.expression.as_deref().unwrap_or_default()))
            .collect(),
    };
    let generated_known: Vec<(&str, &str)> = published
        .generated
        .iter()
        .map(|g| (g.name.as_str(), g.expression.as_str()))
        .collect();
    !same_columns
        || published.row_filter != def.row_filter
        || published.column_list != def.column_list
        || generated_now != generated_known
}

/// `select <published columns> from <table> [where <row filter>]`: the rows a copy of `t`
/// takes, its columns in the replica's order.
pub fn copy_query(t: &SourceTable) -> String {
    format!(
        "select {} from {}.{}{}",
        column_list(t),
        ident(&t.schema),
        ident(&t.name),
        t.published.where_clause()
    )
}

/// The table's columns, quoted, in order: the same list on both sides of a copy.
pub fn column_list(t: &SourceTable) -> String {
    t.columns
        .iter()
        .map(|c| ident(&c.name))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Why the table must be copied again because what is published of it changed from `before`
/// to `after`: a new row filter (rows it takes in were never sent), or a column the stream
/// starts sending that already had values — a column list took it in (or was dropped).
pub fn backfill_reason(before: &SourceTable, after: &SourceTable) -> Option<String> {
    let (b, a) = (&before.published, &after.published);
    if b.row_filter != a.row_filter {
        return Some(match &a.row_filter {
            Some(_) => "the publication's row filter changed".into(),
            None => "the publication's row filter was removed".into(),
        });
    }
    let listed = b.column_list.is_some() || a.column_list.is_some();
    after
        .columns
        .iter()
        .filter(|c| {
            let known = match c.attnum {
                Some(n) => before.columns.iter().any(|x| x.attnum == Some(n)),
                None => false,
            };
            !known && before.column(&c.name).is_none()
        })
        .find(|c| listed || c.attnum.is_some_and(|n| n <= b.last_attnum))
        .map(|c| {
            format!(
                "column {} is newly published (the publication's column list changed)",
                c.name
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::table::fixtures;

    fn catalog() -> CatalogTable {
        let column = |attnum: i16, name: &str, generated: Option<&str>| source::CatalogColumn {
            attnum,
            name: name.into(),
            type_oid: 23,
            typmod: -1,
            hasdef: generated.is_some(),
            hasmissing: false,
            generated: generated.is_some(),
            expression: generated.map(str::to_owned),
            uses: generated.map(|_| Vec::new()),
        };
        CatalogTable {
            oid: 7,
            schema: "public".into(),
            table: "gc".into(),
            identity: "d".into(),
            key: Some(vec![1]),
            columns: vec![
                column(1, "id", None),
                column(2, "a", None),
                column(4, "b", Some("(a * 2)")),
                column(5, "secret", None),
            ],
            column_list: None,
        }
    }

    #[test]
    fn what_is_published_of_a_table() {
        let types = HashMap::from([((23, -1), "integer".to_owned())]);
        let mut info = catalog();
        let p = published_from(&info, &Definition::default(), &types);
        assert_eq!(p.last_attnum, 5);
        assert_eq!(p.generated.len(), 1);
        assert_eq!(p.generated[0].expression, "(a * 2)");
        assert_eq!(p.generated[0].olap_type, "integer");
        assert!(p.generated[0].carried());
        // A function of the source's own: not carried, and why.
        info.columns[2].uses = Some(vec!["function public.dbl(integer)".into()]);
        let p = published_from(&info, &Definition::default(), &types);
        let why = p.generated[0].not_carried.clone().unwrap();
        assert!(why.contains("function public.dbl(integer)"), "{why}");
        // Under a column list: no generated column, and only the listed ones are sent.
        let listed = Definition {
            row_filter: Some("(a > 1)".into()),
            column_list: Some(vec![1, 2]),
        };
        let p = published_from(&info, &listed, &types);
        assert!(p.generated.is_empty());
        assert_eq!(p.row_filter.as_deref(), Some("(a > 1)"));
        info.column_list = listed.column_list.clone();
        let sent: Vec<&str> = info.published_columns().map(|c| c.name.as_str()).collect();
        assert_eq!(sent, ["id", "a"]);
    }

    #[test]
    fn a_mirrored_table_is_stale_when_its_columns_or_definition_differ() {
        let types = HashMap::from([((23, -1), "integer".to_owned())]);
        let info = catalog();
        let def = Definition::default();
        let columns: Vec<Column> = info
            .published_columns()
            .map(|c| Column {
                name: c.name.clone(),
                attnum: Some(c.attnum),
                type_oid: c.type_oid,
                typmod: c.typmod,
                olap_type: "integer".into(),
            })
            .collect();
        let known = published_from(&info, &def, &types);
        assert!(!stale(&columns, &known, &info, &def));
        // Another filter, another list, another expression, another column.
        let filtered = Definition {
            row_filter: Some("(a > 1)".into()),
            ..Default::default()
        };
        assert!(stale(&columns, &known, &info, &filtered));
        let mut listed = info.clone();
        listed.column_list = Some(vec![1, 2]);
        let list = Definition {
            column_list: Some(vec![1, 2]),
            ..Default::default()
        };
        assert!(stale(&columns, &known, &listed, &list));
        let mut changed = info.clone();
        changed.columns[2].expression = Some("(a * 3)".into());
        assert!(stale(&columns, &known, &changed, &def));
        assert!(stale(&columns[..2], &known, &info, &def));
    }

    #[test]
    fn an_insert_lacking_a_value_copies_the_table_again() {
        let row = |v| TupleData {
            columns: vec![TupleValue::Null, v],
        };
        assert!(leaves_out_toast(&row(TupleValue::UnchangedToast)));
        assert!(!leaves_out_toast(&row(TupleValue::Null)));
        let t = Arc::new(fixtures::products());
        let r = copy_again(t.clone(), TOAST_GAP);
        let (before, plan) = r.change.unwrap();
        assert_eq!(before.as_deref(), Some(&*t));
        assert!(plan.steps.is_empty());
        assert_eq!(plan.backfill.as_deref(), Some(TOAST_GAP));
    }

    #[test]
    fn alter_publication_messages() {
        let ours = vec!["brewlytics".to_owned()];
        assert!(concerns(br#"["brewlytics"]"#, &ours));
        assert!(!concerns(br#"["other"]"#, &ours));
        assert!(concerns(b"[]", &ours));
        assert!(concerns(b"not json", &ours));
    }

    #[test]
    fn the_copy_reads_the_published_columns_and_rows() {
        let mut t = fixtures::products();
        assert_eq!(
            copy_query(&t),
            "select \"id\", \"name\", \"price\", \"description\", \"tags\" from \"public\".\"products\""
        );
        Arc::make_mut(&mut t.published).row_filter = Some("(price > 1::numeric)".into());
        t.columns.truncate(2);
        assert_eq!(
            copy_query(&t),
            "select \"id\", \"name\" from \"public\".\"products\" where ((price > 1::numeric))"
        );
    }

    #[test]
    fn a_new_filter_or_a_newly_published_column_copies_the_table_again() {
        let before = fixtures::products();
        let mut after = before.clone();
        assert_eq!(backfill_reason(&before, &after), None);
        Arc::make_mut(&mut after.published).row_filter = Some("(price > 1)".into());
        assert!(backfill_reason(&before, &after)
            .unwrap()
            .contains("row filter changed"));
        let mut before_f = after.clone();
        Arc::make_mut(&mut before_f.published).row_filter = Some("(price > 2)".into());
        assert!(backfill_reason(&before_f, &after).is_some());

        // A column list taking in a column that already existed (attnum 6 of 6).
        let mut before = fixtures::products();
        Arc::make_mut(&mut before.published).last_attnum = 6;
        Arc::make_mut(&mut before.published).column_list = Some(vec![1, 2, 3, 4, 5]);
        let mut after = before.clone();
        Arc::make_mut(&mut after.published).column_list = None;
        after
            .columns
            .push(fixtures::column("secret", 25, "text", 6));
        assert!(backfill_reason(&before, &after)
            .unwrap()
            .contains("column secret is newly published"));
        // The same column seen after the list was already read as gone: its attnum tells.
        Arc::make_mut(&mut before.published).column_list = None;
        assert!(backfill_reason(&before, &after).is_some());
        // A column added by ALTER TABLE (a new attnum), no list: nothing to copy.
        Arc::make_mut(&mut before.published).last_attnum = 5;
        assert_eq!(backfill_reason(&before, &after), None);
        // A renamed column (same attnum) is not new.
        let mut renamed = fixtures::products();
        renamed.columns[1].name = "title".into();
        Arc::make_mut(&mut renamed.published).column_list = Some(vec![1, 2, 3, 4, 5]);
        assert_eq!(backfill_reason(&fixtures::products(), &renamed), None);
    }
}
