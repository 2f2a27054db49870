//! Checking OLAP against OLTP: every replica table row for row, and the facts against what a
//! from-scratch rebuild from OLTP gives — while the source columns the facts read are the
//! ones they were (after a schema change of them, the star is checked against its rebuild
//! from the replica instead: `star_refresh_all`, or a replay). Used by the tests and the
//! crash drills.

use std::collections::HashMap;

use sqlx::PgConnection;

use crate::schema::{publication, source};
use crate::table::ident;

/// One table's comparison.
#[derive(Debug, Clone, PartialEq)]
pub struct TableCheck {
    pub table: String,
    pub source_rows: i64,
    pub replica_rows: i64,
    /// Replica rows of detached partitions kept as history (`--partition-detach keep`): left
    /// out of the comparison on both sides, as are the source's rows of their bounds.
    pub kept_rows: i64,
    pub equal: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    pub tables: Vec<TableCheck>,
    pub sales_equal: bool,
    pub payments_equal: bool,
    /// Fact rows naming a dimension member that does not exist (the foreign keys are not
    /// re-checked during apply, so this is checked here).
    pub orphan_facts: i64,
    /// Whether the facts were compared with OLTP: not once a source column they read was
    /// renamed, retyped or dropped (the star's bindings say so).
    pub facts_compared: bool,
}

impl Report {
    pub fn all_equal(&self) -> bool {
        self.sales_equal
            && self.payments_equal
            && self.orphan_facts == 0
            && self.tables.iter().all(|t| t.equal)
    }
}

/// The published tables of `publication` (one name, or several comma-separated), compared
/// row for row (as multisets) by a digest of their text: what the publications publish —
/// `select <published columns> from <table> where <row filter>` on the source, the
/// generated columns the replica computes included — against the replica.
pub async fn compare(
    oltp: &mut PgConnection,
    olap: &mut PgConnection,
    publication: &str,
) -> Result<Report, sqlx::Error> {
    let publications = crate::slot::publication_names(publication);
    let tables = source::published_tables(oltp, &publications).await?;
    let defs = publication::definitions(oltp, &publications, None).await?;
    let mut types = HashMap::new();
    let mut checks = Vec::new();
    for (schema, t) in tables {
        let Some(info) = source::table_by_name(oltp, &schema, &t).await? else {
            continue;
        };
        let Some(Ok(def)) = defs.get(&info.oid) else {
            continue;
        };
        let table = publication::describe(oltp, &mut types, &info, def).await?;
        let list = table
            .columns
            .iter()
            .map(|c| c.name.as_str())
            .chain(table.published.generated_carried().map(|g| g.name.as_str()))
            .map(ident)
            .collect::<Vec<_>>()
            .join(", ");
        let digest = |qualified: String, filter: &str| {
            format!(
                // The row as text through a qualified star: a bare alias could name a column.
                "select count(*), coalesce(md5(string_agg(x, E'\\n' order by x)), '')
                 from (select (_cdc_row.*)::text as x
                       from (select {list} from {qualified}{filter}) _cdc_row) _cdc_rows"
            )
        };
        let kept = kept(olap, &schema, &t).await?;
        let (source_filter, replica_filter) = match &kept {
            Some(k) => (
                format!(
                    "{} not coalesce(({k}), false)",
                    match &table.published.row_filter {
                        Some(_) => format!("{} and", table.published.where_clause()),
                        None => " where".into(),
                    }
                ),
                format!(" where not coalesce(({k}), false)"),
            ),
            None => (table.published.where_clause(), String::new()),
        };
        let (n_src, d_src): (i64, String) = sqlx::query_as(&digest(
            format!("{}.{}", ident(&schema), ident(&t)),
            &source_filter,
        ))
        .fetch_one(&mut *oltp)
        .await?;
        let replica = format!(
            "{}.{}",
            ident(crate::table::REPLICA_SCHEMA),
            ident(&crate::table::replica_name(&schema, &t))
        );
        let kept_rows: i64 = match &kept {
            Some(k) => sqlx::query_scalar(&format!(
                "select count(*) from {replica} where coalesce(({k}), false)"
            ))
            .fetch_one(&mut *olap)
            .await
            .unwrap_or(-1),
            None => 0,
        };
        let (n_rep, d_rep): (i64, String) = match sqlx::query_as(&digest(replica, &replica_filter))
            .fetch_one(&mut *olap)
            .await
        {
            Ok(r) => r,
            // No replica (yet), or not the source's columns (yet): not equal.
            Err(sqlx::Error::Database(e))
                if matches!(e.code().as_deref(), Some("42P01") | Some("42703")) =>
            {
                (-1, String::new())
            }
            Err(e) => return Err(e),
        };
        let table = if schema == "public" {
            t
        } else {
            format!("{schema}.{t}")
        };
        checks.push(TableCheck {
            table,
            source_rows: n_src,
            replica_rows: n_rep,
            kept_rows,
            equal: n_src == n_rep && d_src == d_rep,
        });
    }
    let mut facts_compared: bool = sqlx::query_scalar(FACT_INPUTS_AS_THEY_WERE)
        .fetch_one(&mut *olap)
        .await?;
    let [mut sales_src, mut sales_olap, mut pay_src, mut pay_olap]: [String; 4] =
        Default::default();
    if facts_compared {
        // The source may have changed since OLAP last heard of it: a column gone is no error.
        match source_digests(oltp).await? {
            Some((sales, payments)) => {
                (sales_src, pay_src) = (sales, payments);
                sales_olap = sqlx::query_scalar(SALES_FROM_OLAP)
                    .fetch_one(&mut *olap)
                    .await?;
                pay_olap = sqlx::query_scalar(PAYMENTS_FROM_OLAP)
                    .fetch_one(&mut *olap)
                    .await?;
            }
            None => facts_compared = false,
        }
    }
    let orphan_facts: i64 = sqlx::query_scalar(ORPHAN_FACTS)
        .fetch_one(&mut *olap)
        .await?;
    Ok(Report {
        tables: checks,
        sales_equal: sales_src == sales_olap,
        payments_equal: pay_src == pay_olap,
        orphan_facts,
        facts_compared,
    })
}

/// The rows of `schema.table` kept from its detached partitions (one predicate), if any.
async fn kept(
    olap: &mut PgConnection,
    schema: &str,
    table: &str,
) -> Result<Option<String>, sqlx::Error> {
    let migrated: bool = sqlx::query_scalar("select to_regclass('cdc_partitions') is not null")
        .fetch_one(&mut *olap)
        .await?;
    if !migrated {
        return Ok(None);
    }
    let scopes = crate::sink::olap::partitions::kept_scopes(olap, schema, table).await?;
    Ok((!scopes.is_empty()).then(|| {
        scopes
            .iter()
            .map(|s| format!("({s})"))
            .collect::<Vec<_>>()
            .join(" or ")
    }))
}

/// The sales and payments digests of OLTP; None when a column they read is not there (any
/// more) under its name and type.
async fn source_digests(oltp: &mut PgConnection) -> Result<Option<(String, String)>, sqlx::Error> {
    let changed = |e: &sqlx::Error| {
        e.as_database_error()
            .and_then(|d| d.code())
            .is_some_and(|c| matches!(c.as_ref(), "42703" | "42P01" | "42883" | "42804"))
    };
    let sales = match sqlx::query_scalar(SALES_FROM_OLTP)
        .fetch_one(&mut *oltp)
        .await
    {
        Err(e) if changed(&e) => return Ok(None),
        r => r?,
    };
    let payments = match sqlx::query_scalar(PAYMENTS_FROM_OLTP)
        .fetch_one(&mut *oltp)
        .await
    {
        Err(e) if changed(&e) => return Ok(None),
        r => r?,
    };
    Ok(Some((sales, payments)))
}

/// The orders, their lines and payments are read by the star as they were first bound.
const FACT_INPUTS_AS_THEY_WERE: &str = "select to_regclass('star_bindings') is null
    or not exists (select 1 from star_bindings b join star_input_tables t using (input)
                   where b.input in ('orders', 'order_items', 'payments')
                     and (b.state <> 'bound' or t.state <> 'bound'))";

const SALES_FROM_OLTP: &str = "select coalesce(md5(string_agg(x, E'\\n' order by x)), '') from (
    select concat_ws('|', i.id, o.id, to_char(o.ordered_at at time zone 'UTC', 'YYYYMMDD'),
                     coalesce(o.customer_id::text, 'walk-in'), i.product_id, o.employee_id, o.store_id,
                     i.quantity, i.unit_price, i.quantity * i.unit_price, o.status) as x
    from order_items i join orders o on o.id = i.order_id) s";

const SALES_FROM_OLAP: &str = "select coalesce(md5(string_agg(x, E'\\n' order by x)), '') from (
    select concat_ws('|', f.order_item_id, f.order_id, f.date_key,
                     coalesce(c.customer_id::text, 'walk-in'), p.product_id, e.employee_id, s.store_id,
                     f.quantity, f.unit_price, f.revenue, f.status) as x
    from fact_sales f
    join dim_customer c using (customer_key) join dim_product p using (product_key)
    join dim_employee e using (employee_key) join dim_store s using (store_key)) s";

const PAYMENTS_FROM_OLTP: &str = "select coalesce(md5(string_agg(x, E'\\n' order by x)), '') from (
    select concat_ws('|', p.id, o.id, p.amount, p.method, o.status) as x
    from payments p join orders o on o.id = p.order_id) s";

const PAYMENTS_FROM_OLAP: &str = "select coalesce(md5(string_agg(x, E'\\n' order by x)), '') from (
    select concat_ws('|', payment_id, order_id, amount, method, order_status) as x
    from fact_payments) s";

const ORPHAN_FACTS: &str = "select
    (select count(*) from fact_sales f
     where not exists (select 1 from dim_date d where d.date_key = f.date_key)
        or not exists (select 1 from dim_customer d where d.customer_key = f.customer_key)
        or not exists (select 1 from dim_product d where d.product_key = f.product_key)
        or not exists (select 1 from dim_employee d where d.employee_key = f.employee_key)
        or not exists (select 1 from dim_store d where d.store_key = f.store_key))
  + (select count(*) from fact_payments f
     where not exists (select 1 from dim_date d where d.date_key = f.date_key)
        or not exists (select 1 from dim_customer d where d.customer_key = f.customer_key)
        or not exists (select 1 from dim_employee d where d.employee_key = f.employee_key)
        or not exists (select 1 from dim_store d where d.store_key = f.store_key))
  + (select count(*) from fact_inventory f
     where not exists (select 1 from dim_date d where d.date_key = f.date_key)
        or not exists (select 1 from dim_product d where d.product_key = f.product_key)
        or not exists (select 1 from dim_store d where d.store_key = f.store_key))";
