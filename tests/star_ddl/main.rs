//! Schema changes never stop the star, against the built binary on two PostgreSQL servers,
//! orders coming through the API and written straight to the source: every column that feeds
//! the star renamed, retyped and dropped, one at a time and several in one transaction, each
//! followed by writes; source tables renamed, dropped, their key dropped. Each drill ends with
//! OLAP equal to OLTP, the star equal to its rebuild from the replica (`star_refresh_all`) and
//! to a `replay` of the journal across the DDL, `status` naming what degraded and the metric
//! saying so, the replicator still running.

mod drill;
#[path = "../harness/mod.rs"]
mod harness;
mod source;

use std::time::{Duration, Instant};

use drill::{Drill, LineFacts};
use source::{exec, Source, RETYPES, TABLES};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_feeding_column_renamed_retyped_and_dropped_one_at_a_time() {
    // Retyping keys and references to text needs the source's constraints out of the way
    // (a foreign key between a uuid and a text column, a check comparing a text to 0).
    let mut d = Drill::start(
        "star-each",
        "do $$ declare r record; begin
           for r in select conrelid::regclass as t, conname from pg_constraint
                    where contype in ('f', 'c') and connamespace = 'public'::regnamespace loop
             execute format('alter table %s drop constraint %I', r.t, r.conname);
           end loop; end $$",
    )
    .await;
    let mut oltp = d.c.oltp_conn().await;
    let mut src = Source::capture(&mut oltp).await;
    let mut last_line = None;
    src.round(&mut oltp).await;
    d.converged("before any DDL").await;
    let mut olap = d.c.olap_conn().await;
    let before_email: Option<String> =
        sqlx::query_scalar("select email from dim_customer where customer_id = $1")
            .bind(src.customers[0])
            .fetch_one(&mut olap)
            .await
            .unwrap();
    assert!(before_email.is_some());

    // Renamed, each followed by writes: the star does not change.
    for (t, cols) in TABLES {
        for col in cols
            .iter()
            .filter(|c| RETYPES.iter().any(|r| r.0 == *t && r.1 == **c))
        {
            let (name, _) = src.column(&mut oltp, t, col).await.unwrap();
            exec(
                &mut oltp,
                &format!("alter table {t} rename column {name} to {name}_v2"),
            )
            .await;
            src.round(&mut oltp).await;
        }
    }
    d.converged("after renaming every feeding column").await;
    assert!(
        d.degraded().is_empty(),
        "renames degrade nothing: {:?}",
        d.degraded()
    );
    d.star_is_its_rebuild("after the renames").await;

    // Retyped, each followed by writes.
    for (t, col, ty) in RETYPES {
        let (name, _) = src.column(&mut oltp, t, col).await.unwrap();
        exec(
            &mut oltp,
            &format!("alter table {t} alter column {name} type {ty} using {name}::text::{ty}"),
        )
        .await;
        src.round(&mut oltp).await;
    }
    // A value the star's type for payments.amount (numeric) cannot read: that payment is
    // left out of fact_payments and listed, the stream goes on.
    let order = src.orders[0].clone();
    let bad = src
        .insert(
            &mut oltp,
            "payments",
            &[
                ("order_id", order),
                ("amount", "n/a".into()),
                ("method", "cash".into()),
            ],
        )
        .await
        .unwrap();
    src.round(&mut oltp).await;
    d.converged("after retyping every feeding column").await;
    let q: String = sqlx::query_scalar(
        "select format_type(atttypid, atttypmod) from pg_attribute
         where attrelid = 'fact_sales'::regclass and attname = 'quantity'",
    )
    .fetch_one(&mut olap)
    .await
    .unwrap();
    assert_eq!(
        q, "numeric",
        "fact_sales.quantity widened with order_items.quantity"
    );
    let half: i64 = sqlx::query_scalar("select count(*) from fact_sales where quantity = 1.5")
        .fetch_one(&mut olap)
        .await
        .unwrap();
    assert!(half > 0, "a fractional quantity reaches the star");
    let (listed, in_facts): (i64, i64) = sqlx::query_as(
        "select (select count(*) from star_dead_letters where input = 'payments' and row_key = $1),
                (select count(*) from fact_payments where payment_id = $1::bigint)",
    )
    .bind(&bad)
    .fetch_one(&mut olap)
    .await
    .unwrap();
    assert_eq!(
        (listed, in_facts),
        (1, 0),
        "the unreadable amount is a star dead letter"
    );
    let degraded = d.degraded();
    assert_eq!(
        degraded.get("fact_payments.amount").map(String::as_str),
        Some("incompatible"),
        "{degraded:?}"
    );
    d.star_is_its_rebuild("after the retypes").await;

    // Dropped, each followed by writes (keys: see the table drill); an order line's and a
    // payment's order last, so that lines written after the other drops are facts.
    let (references, others): (Vec<_>, Vec<_>) = RETYPES
        .iter()
        .filter(|r| r.1 != "id")
        .partition(|r| r.1 == "order_id");
    let before_customers: i64 = sqlx::query_scalar("select count(*) from dim_customer")
        .fetch_one(&mut olap)
        .await
        .unwrap();
    for (i, (t, col, _)) in others.iter().chain(&references).enumerate() {
        if i == others.len() {
            // The lines of the last round: written once every attribute of a line but its
            // order was dropped.
            let id = src.column(&mut oltp, "order_items", "id").await.unwrap().0;
            let last: i64 =
                sqlx::query_scalar(&format!("select max(\"{id}\")::bigint from order_items"))
                    .fetch_one(&mut oltp)
                    .await
                    .unwrap();
            last_line = Some(last);
        }
        let (name, _) = src.column(&mut oltp, t, col).await.unwrap();
        exec(&mut oltp, &format!("alter table {t} drop column {name}")).await;
        src.round(&mut oltp).await;
    }
    d.converged("after dropping every feeding column").await;
    let degraded = d.degraded();
    for must in [
        "dim_customer.email",
        "dim_store.city",
        "dim_employee.active",
        "dim_product.price",
        "fact_sales.quantity",
        "fact_sales.employee_key",
        "fact_sales.ordered_at",
        "fact_sales.order_id",
        "fact_payments.amount",
        "fact_inventory.quantity_delta",
    ] {
        assert_eq!(
            degraded.get(must).map(String::as_str),
            Some("dropped"),
            "{must}: {degraded:?}"
        );
    }
    // Rows keep what they had; rows written later take the documented fallback.
    let kept: Option<String> =
        sqlx::query_scalar("select email from dim_customer where customer_id = $1")
            .bind(src.customers[0])
            .fetch_one(&mut olap)
            .await
            .unwrap();
    assert_eq!(kept, before_email, "a customer keeps the email it had");
    let newest: (String, Option<String>) = sqlx::query_as(
        "select name, email from dim_customer where customer_id = (select max(customer_id) from dim_customer)",
    )
    .fetch_one(&mut olap)
    .await
    .unwrap();
    assert_eq!(
        newest,
        ("unknown".to_owned(), None),
        "a customer added after the drops"
    );
    assert!(
        sqlx::query_scalar::<_, i64>("select count(*) from dim_customer")
            .fetch_one(&mut olap)
            .await
            .unwrap()
            > before_customers
    );
    let last = last_line.expect("the last round before the references were dropped");
    let lines: Vec<LineFacts> = sqlx::query_as(
        "select customer_key, employee_key, store_key, product_key, quantity::text,
                    revenue::text, status, isfinite(ordered_at)
             from fact_sales where order_item_id in ($1, $1 - 1) order by order_item_id",
    )
    .bind(last)
    .fetch_all(&mut olap)
    .await
    .unwrap();
    assert_eq!(
        lines.len(),
        2,
        "the lines written after the drops are facts"
    );
    for l in &lines {
        assert_eq!(
            l,
            &(-1, -1, -1, -1, None, None, "unknown".to_owned(), true),
            "unknown members, no quantity or revenue, status unknown, the insert's time"
        );
    }
    let (left_out, in_facts): (i64, i64) = sqlx::query_as(
        "select (select count(*) from star_dead_letters
                 where input = 'order_items' and row_key::bigint > $1),
                (select count(*) from fact_sales where order_item_id > $1)",
    )
    .bind(last)
    .fetch_one(&mut olap)
    .await
    .unwrap();
    assert!(
        left_out >= 2 && in_facts == 0,
        "lines without their order are dead letters of the star: {left_out} listed, {in_facts} facts"
    );
    let metrics = d.metrics().await;
    assert!(
        metrics.contains(
            "brewlytics_star_degraded_inputs{star_table=\"dim_customer\",attribute=\"email\"} 1"
        ),
        "{metrics}"
    );
    let table = d.c.run(&["status"]);
    assert!(
        table.contains("dim_customer.email: source column public.customers.email_v2 dropped at"),
        "{table}"
    );
    // Said once, at the change.
    let log = d.replicator.log_text();
    assert_eq!(
        log.matches("source column public.customers.email_v2 dropped")
            .count(),
        1,
        "{log}"
    );
    d.star_is_its_rebuild("after the drops").await;
    let api = d.stop_orders();
    assert!(api >= 3, "orders through the API: {api}");
    d.converged("at the end").await;
    d.replay_gives_the_same_star("a replay across every DDL")
        .await;
    d.star_is_its_rebuild("after the replay").await;
    drop(d.api);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_changes_in_one_transaction_with_writes_in_it() {
    let mut d = Drill::start("star-together", "").await;
    let mut oltp = d.c.oltp_conn().await;
    let mut src = Source::capture(&mut oltp).await;
    src.round(&mut oltp).await;
    d.converged("before the DDL").await;
    let mut olap = d.c.olap_conn().await;
    let (old_customer, old_email): (i64, Option<String>) = sqlx::query_as(
        "select customer_id, email from dim_customer where customer_id is not null order by 1 limit 1",
    )
    .fetch_one(&mut olap)
    .await
    .unwrap();

    // One source transaction: renames, retypes and drops on four tables, rows written
    // between them and after them.
    exec(
        &mut oltp,
        "begin;
         alter table orders rename column status to state;
         alter table orders drop column employee_id;
         update orders set state = 'preparing' where state = 'placed';
         alter table order_items alter column quantity type numeric(10,2);
         alter table order_items rename column unit_price to price_each;
         alter table customers drop column email;
         alter table customers rename column name to display_name;
         insert into customers (display_name) values ('No-Email');
         alter table products alter column price type numeric(14,4);
         alter table products drop column category;
         commit;",
    )
    .await;
    for _ in 0..4 {
        src.round(&mut oltp).await;
    }
    d.converged("after one transaction of DDL").await;
    let degraded = d.degraded();
    let mut names: Vec<&str> = degraded.keys().map(String::as_str).collect();
    names.sort();
    assert_eq!(
        names,
        [
            "dim_customer.email",
            "dim_product.category",
            "fact_payments.employee_key",
            "fact_sales.employee_key"
        ],
        "what degraded, and only that (renames and retypes are followed): {degraded:?}"
    );
    let (email, newest, category, fractional): (Option<String>, Option<String>, String, i64) =
        sqlx::query_as(
            "select (select email from dim_customer where customer_id = $1),
                    (select email from dim_customer where name = 'No-Email'),
                    (select category from dim_product where product_id = (select max(product_id) from dim_product where product_id > 0) and is_current),
                    (select count(*) from fact_sales where quantity <> trunc(quantity))",
        )
        .bind(old_customer)
        .fetch_one(&mut olap)
        .await
        .unwrap();
    assert_eq!(email, old_email, "a customer keeps the email it had");
    assert_eq!(newest, None, "a customer added after the drop has none");
    assert_ne!(category, "", "a product keeps its category");
    assert!(fractional > 0, "the retyped quantity carries fractions");
    let (kept_staff, new_staff): (i64, i64) = sqlx::query_as(
        "select count(*) filter (where status = 'preparing' and employee_key > 0),
                count(*) filter (where employee_key = -1)
         from fact_sales",
    )
    .fetch_one(&mut olap)
    .await
    .unwrap();
    assert!(
        kept_staff > 0 && new_staff > 0,
        "orders moved on in the DDL's transaction keep their employee (the renamed status \
         followed); orders written later name the unknown one: {kept_staff}, {new_staff}"
    );
    d.star_is_its_rebuild("after one transaction of DDL").await;
    d.stop_orders();
    d.converged("at the end").await;
    d.replay_gives_the_same_star("a replay across the transaction")
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn source_tables_renamed_dropped_or_without_their_key() {
    let mut d = Drill::start(
        "star-tables",
        "alter table order_items drop constraint order_items_order_id_fkey;
         alter table payments drop constraint payments_order_id_fkey;
         alter table inventory_movements drop constraint inventory_movements_order_id_fkey;",
    )
    .await;
    let mut oltp = d.c.oltp_conn().await;
    let mut src = Source::capture(&mut oltp).await;
    src.round(&mut oltp).await;
    d.converged("before the DDL").await;

    // Renamed: followed.
    exec(
        &mut oltp,
        "alter table customers rename to clients;
         alter table payments rename to payments_2024;
         alter table payments_2024 rename column amount to paid",
    )
    .await;
    src.round(&mut oltp).await;
    d.converged("after renaming tables").await;
    assert!(d.degraded().is_empty(), "{:?}", d.degraded());
    let mut olap = d.c.olap_conn().await;
    let newest: String = sqlx::query_scalar(
        "select name from dim_customer where customer_id = (select max(customer_id) from dim_customer)",
    )
    .fetch_one(&mut olap)
    .await
    .unwrap();
    assert!(
        newest.starts_with("Guest"),
        "clients feed dim_customer: {newest}"
    );
    d.star_is_its_rebuild("after renaming tables").await;

    // The key of order lines dropped: the star keeps the lines it had; the rest goes on.
    exec(&mut oltp, "alter table order_items drop column id").await;
    src.round(&mut oltp).await;
    src.round(&mut oltp).await;
    d.converged("after dropping the key of order_items").await;
    let degraded = d.degraded();
    assert_eq!(
        degraded.get("fact_sales.quantity").map(String::as_str),
        Some("frozen"),
        "{degraded:?}"
    );
    let latest: Vec<String> = src.orders.iter().rev().take(2).cloned().collect();
    let (lines, payments): (i64, i64) = sqlx::query_as(
        "select (select count(*) from fact_sales where order_id::text = any ($1)),
                (select count(*) from fact_payments where order_id::text = any ($1))",
    )
    .bind(&latest)
    .fetch_one(&mut olap)
    .await
    .unwrap();
    assert_eq!(
        (lines, payments),
        (0, 2),
        "lines written after the key was dropped are not read; their payments are"
    );
    d.star_is_its_rebuild("after dropping a key").await;

    // A table dropped: the star keeps what it has, the other tables stream on.
    let inventory: i64 = sqlx::query_scalar("select count(*) from fact_inventory")
        .fetch_one(&mut olap)
        .await
        .unwrap();
    exec(&mut oltp, "drop table inventory_movements").await;
    let paid_before: i64 = sqlx::query_scalar("select count(*) from fact_payments")
        .fetch_one(&mut olap)
        .await
        .unwrap();
    src.round(&mut oltp).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let degraded = d.degraded();
        let metrics = d.metrics().await;
        if degraded.get("fact_inventory.quantity_delta").map(String::as_str) == Some("dropped")
            && metrics.contains(
                "brewlytics_star_degraded_inputs{star_table=\"fact_inventory\",attribute=\"quantity_delta\"} 1",
            )
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the dropped table is not reported: {degraded:?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    src.round(&mut oltp).await;
    d.converged("after dropping a table").await;
    let (inventory_now, paid_now): (i64, i64) = sqlx::query_as(
        "select (select count(*) from fact_inventory), (select count(*) from fact_payments)",
    )
    .fetch_one(&mut olap)
    .await
    .unwrap();
    assert_eq!(inventory_now, inventory, "fact_inventory keeps what it had");
    assert!(paid_now > paid_before, "payments stream on");
    let log = d.replicator.log_text();
    assert_eq!(
        log.matches("source table public.inventory_movements dropped on the source")
            .count(),
        1,
        "{log}"
    );
    d.star_is_its_rebuild("after dropping a table").await;
    d.stop_orders();
    d.converged("at the end").await;
    d.replay_gives_the_same_star("a replay across table changes")
        .await;
    assert_eq!(
        d.degraded()
            .get("fact_inventory.quantity_delta")
            .map(String::as_str),
        Some("dropped"),
        "a replay keeps the table dropped"
    );
}
