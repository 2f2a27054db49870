//! dbt over the warehouse: the project in `dbt/`, run by the pinned dbt (a virtual environment
//! at `.venv`, from `dbt/requirements.txt`) against coffee_olap filled by the replicator from
//! orders posted through the API. One embedded PostgreSQL with both databases, as `brewlytics
//! up` runs it, but with the API and the replicator as separate processes so the replicator
//! can be stopped; dbt connects through `eval "$(brewlytics dbt-env)"`, as the README says.
//!
//! 1. `dbt build` and `dbt source freshness` pass; the marts agree with what the API was told.
//! 2. More orders: the incremental model adds exactly the journal's new events.
//! 3. The replicator stops. One fact row corrupted: `dbt build` fails naming the test that
//!    caught it, and skips the marts. Then one corruption per kind of test, each caught.
//! 4. Past the freshness threshold, `dbt source freshness` reports every source stale; with
//!    the replicator back, fresh again. No password in any file dbt wrote.
//!
//! The pipeline and dbt's runs are in `dbt/shop.rs` and `dbt/runner.rs`; each step above is
//! a function here.

mod harness;
#[path = "dbt/runner.rs"]
mod runner;
#[path = "dbt/shop.rs"]
mod shop;

use std::net::TcpStream;
use std::time::{Duration, Instant};

use harness::{free_addr, scratch_dir, wait_streaming};
use runner::{dbt_bin, grep_files, Dbt};
use serde_json::{json, Value};
use shop::{api_json, call, checkpoint_age, execute, order, scalar, Shop};
use sqlx::PgConnection;

const BIN: &str = env!("CARGO_BIN_EXE_brewlytics");
/// The freshness thresholds (minutes) for this test: the shortest dbt allows.
const VARS: &str = "{freshness_warn_after_minutes: 1, freshness_error_after_minutes: 1}";
const STALE_AFTER_SECS: f64 = 60.0;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dbt_builds_tests_and_watches_freshness_of_the_warehouse() {
    let bin = dbt_bin();
    let started = Instant::now();
    let root = scratch_dir("dbt");
    let shop = Shop::start(&root);
    shop.run(&["migrate"]);
    shop.run(&["seed", "--orders", "120"]);

    // The API and the replicator's endpoints need a key: one made as a user makes it.
    let key = shop.run(&["api-key", "create", "--name", "dbt", "--scope", "admin"]);
    let api = free_addr();
    let replicator_addr = free_addr();
    harness::remember_key(&api, key.trim());
    harness::remember_key(&replicator_addr, key.trim());
    let _api = shop.spawn("api", &["api"], &[("API_LISTEN", &api)]);
    let mut replicator = shop.spawn(
        "replicator",
        &["replicate"],
        &[("REPLICATOR_LISTEN", &replicator_addr)],
    );
    wait_streaming(&replicator_addr, &replicator).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(&api).is_err() {
        assert!(Instant::now() < deadline, "the API never listened");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let told = post_orders(&api);
    shop.converged().await;
    eprintln!(
        "pipeline ready and converged after {:.1} s",
        started.elapsed().as_secs_f64()
    );

    let dbt = Dbt {
        bin,
        data: shop.data.clone(),
        target: root.join("dbt-target"),
        logs: root.join("dbt-logs"),
    };
    let mut olap = shop.olap().await;
    green(&dbt, &mut olap, &told).await;
    incremental(&dbt, &mut olap, &shop, &api, &told).await;
    // The replicator stops (freshness is checked below).
    assert!(replicator.terminate(Duration::from_secs(30)).success());
    a_corrupted_fact_fails_the_build(&dbt, &mut olap).await;
    each_kind_of_corruption_is_caught(&dbt, &mut olap, &told).await;
    stale_then_fresh(&dbt, &mut olap, &shop, &replicator_addr).await;
    no_secret_written(&dbt, &shop);
    eprintln!("done in {:.1} s", started.elapsed().as_secs_f64());
}

/// What the API was told, for the checks to come back to.
struct Told {
    customer: i64,
    product: i64,
    /// A seeded product.
    other: i64,
    /// An active employee and their store.
    staff: (i64, i64),
    o1: Value,
    o2: Value,
    o4: Value,
    o5: Value,
    o6: Value,
}

fn id(o: &Value) -> String {
    o["id"].as_str().unwrap().to_owned()
}

/// Orders through the API: a new customer and product, a price change between orders
/// (a second product version), a walk-in, status changes, a cancellation, a deletion and a
/// restock.
fn post_orders(api: &str) -> Told {
    let pid = std::process::id();
    let customer = call(
        api,
        "POST",
        "/customers",
        json!({"name": "Dee Beetee", "email": format!("dbt-{pid}@example.com")}),
        201,
    )["id"]
        .as_i64()
        .unwrap();
    let product = call(
        api,
        "POST",
        "/products",
        json!({"name": format!("dbt cortado {pid}"), "category": "coffee", "price": "2.50"}),
        201,
    )["id"]
        .as_i64()
        .unwrap();
    let (status, staff) = api_json(api, "GET", "/employees/active", None);
    assert_eq!(status, 200);
    let staff = staff
        .as_array()
        .unwrap()
        .iter()
        .find_map(|e| Some((e["id"].as_i64()?, e["store_id"].as_i64()?)))
        .expect("an active employee with a store");
    let other = 1; // a seeded product
    let o1 = order(
        api,
        Some(customer),
        staff,
        "card",
        &[(product, 2), (other, 1)],
    );
    let o2 = order(api, Some(customer), staff, "mobile", &[(product, 1)]);
    let _walk_in = order(api, None, staff, "cash", &[(other, 2)]);
    let o4 = order(api, Some(customer), staff, "card", &[(other, 1)]);
    let o5 = order(api, Some(customer), staff, "card", &[(product, 3)]);
    call(
        api,
        "PATCH",
        &format!("/products/{product}"),
        json!({"price": "2.90"}),
        200,
    );
    let o6 = order(api, Some(customer), staff, "card", &[(product, 4)]);
    for status in ["preparing", "ready", "completed"] {
        call(
            api,
            "PATCH",
            &format!("/orders/{}", id(&o1)),
            json!({"status": status}),
            200,
        );
    }
    call(
        api,
        "PATCH",
        &format!("/orders/{}", id(&o4)),
        json!({"status": "cancelled"}),
        200,
    );
    let (status, answer) = api_json(api, "DELETE", &format!("/orders/{}", id(&o5)), None);
    assert!((200..300).contains(&status), "DELETE /orders: {answer}");
    call(
        api,
        "POST",
        "/inventory/restock",
        json!({"store_id": staff.1, "product_id": product, "quantity": 40}),
        201,
    );
    // Menu browsing: two impressions and a click, then an order in the same session.
    let at = (chrono::Utc::now() - chrono::Duration::minutes(3)).to_rfc3339();
    let event = |kind: &str| json!({"kind": kind, "session_id": "dbt-1", "product_id": product, "occurred_at": at});
    call(
        api,
        "POST",
        "/events",
        json!([event("impression"), event("impression"), event("click")]),
        202,
    );
    call(
        api,
        "POST",
        "/orders",
        json!({"customer_id": null, "employee_id": staff.0, "store_id": staff.1,
               "payment_method": "card", "session_id": "dbt-1",
               "items": [{"product_id": product, "quantity": 1}]}),
        201,
    );
    Told {
        customer,
        product,
        other,
        staff,
        o1,
        o2,
        o4,
        o5,
        o6,
    }
}

/// Step 1, green: every data test passes, every model builds, every source is fresh; the
/// marts agree with what the API was told.
async fn green(dbt: &Dbt, olap: &mut PgConnection, told: &Told) {
    let (customer, product) = (told.customer, told.product);
    let build = dbt.run(&["build"]);
    assert!(build.ok, "dbt build failed: {}", build.output);
    let statuses = build.statuses();
    assert!(build.failed().is_empty(), "{:?}", build.failed());
    for name in [
        "assert_fact_sales_revenue_matches_replica",
        "assert_fact_sales_matches_replica",
        "assert_fact_payments_match_replica",
        "assert_fact_inventory_matches_movements",
        "assert_dim_product_versions_do_not_overlap",
        "assert_dim_product_one_current_version",
        "assert_dim_product_versions_are_contiguous",
        "assert_dimensions_match_replica",
        "warehouse_as_of",
        "order_status_history",
        "mart_store_daily",
        "mart_customer_lifetime_value",
        "mart_customer_cohorts",
        "mart_product_weekly",
        "mart_order_fulfilment",
        "mart_product_conversion",
        "assert_attribution_is_the_last_click",
        "assert_product_conversion_counts_the_events",
    ] {
        assert!(
            statuses.contains_key(name),
            "{name} did not run: {statuses:?}"
        );
    }
    let relationships = statuses
        .keys()
        .filter(|n| n.starts_with("source_relationships_star_fact_"))
        .count();
    assert_eq!(
        relationships, 13,
        "fact → dimension relationship tests: {statuses:?}"
    );
    assert_eq!(
        scalar(
            olap,
            &format!("select count(*)::text from dim_product where product_id = {product}")
        )
        .await,
        "2",
        "the price change opened a second version of the product"
    );

    // The marts agree with what the API was told.
    let paid = |o: &Value| o["total"].as_str().unwrap().parse::<f64>().unwrap();
    let expected_value = paid(&told.o1) + paid(&told.o2) + paid(&told.o6);
    let clv = scalar(
        olap,
        &format!(
            "select concat_ws(' ', orders, cancelled_orders, lifetime_revenue)
             from analytics.mart_customer_lifetime_value where customer_id = {customer}"
        ),
    )
    .await;
    let clv: Vec<f64> = clv.split(' ').map(|v| v.parse().unwrap()).collect();
    assert_eq!(
        clv[..2],
        [3.0, 1.0],
        "orders and cancelled orders of the customer"
    );
    assert!(
        (clv[2] - expected_value).abs() < 0.001,
        "lifetime revenue {clv:?} vs {expected_value}"
    );
    let weekly = scalar(
        olap,
        &format!(
            "select concat_ws(' ', sum(units), sum(revenue), count(distinct product_name))
             from analytics.mart_product_weekly where product_id = {product}"
        ),
    )
    .await;
    let weekly: Vec<f64> = weekly.split(' ').map(|v| v.parse().unwrap()).collect();
    assert!(
        weekly.len() == 3
            && weekly[0] == 8.0
            && (weekly[1] - (3.0 * 2.5 + 5.0 * 2.9)).abs() < 0.001
            && weekly[2] == 1.0,
        "units, revenue (3 at 2.50, 5 at 2.90: the last in a browsing session) and one name for \
         the product's two versions: {weekly:?}"
    );
    assert_eq!(
        scalar(
            olap,
            &format!(
                "select concat_ws(' ', impressions, clicks, orders, conversion_rate)
                 from analytics.mart_product_conversion where product_id = {product}"
            ),
        )
        .await,
        "2 1 1 1.0000",
        "two impressions, a click and the order it led to"
    );
    assert_eq!(
        scalar(
            olap,
            "select ((select sum(revenue) from analytics.mart_store_daily)
                     = (select sum(revenue) from fact_sales where status <> 'cancelled'))::text"
        )
        .await,
        "true",
        "store-day revenue adds up to the facts"
    );
    assert_eq!(
        scalar(
            olap,
            "select (count(distinct data_as_of) = 1 and min(data_as_of) <= now())::text
             from analytics.mart_store_daily"
        )
        .await,
        "true",
        "every row of a mart says as of when its data is"
    );
    let fulfilment = scalar(
        olap,
        &format!(
            "select string_agg(concat(current_status, ':', (seconds_to_complete >= 0 and ready_at >= preparing_at)::text),
                               ',' order by current_status)
             from analytics.mart_order_fulfilment
             where order_id in ('{}', '{}', '{}')",
            id(&told.o1),
            id(&told.o4),
            id(&told.o5)
        ),
    )
    .await;
    assert_eq!(
        fulfilment, "cancelled:,completed:true,deleted:",
        "fulfilment of o1, o4, o5"
    );

    let fresh = dbt.run(&["source", "freshness"]);
    assert!(fresh.ok, "dbt source freshness failed: {}", fresh.output);
    let sources = fresh.statuses();
    assert_eq!(sources.len(), 22, "sources: {sources:?}");
    assert!(sources.values().all(|s| s == "pass"), "{sources:?}");
    for r in fresh.artifact["results"].as_array().unwrap() {
        let age = r["max_loaded_at_time_ago_in_s"].as_f64().unwrap();
        assert!(
            age < 30.0,
            "{} is {age} s old while the replicator runs",
            r["unique_id"]
        );
    }
}

/// Step 2, incremental: the next run adds the journal's new order events, and only those.
async fn incremental(dbt: &Dbt, olap: &mut PgConnection, shop: &Shop, api: &str, told: &Told) {
    let o7 = order(
        api,
        Some(told.customer),
        told.staff,
        "cash",
        &[(told.other, 1)],
    );
    order(api, None, told.staff, "card", &[(told.product, 1)]);
    call(
        api,
        "PATCH",
        &format!("/orders/{}", id(&o7)),
        json!({"status": "preparing"}),
        200,
    );
    shop.converged().await;
    let new_events: u64 = scalar(
        olap,
        "select count(*)::text from cdc_events
         where source_table = 'orders' and op in ('r', 'i', 'u', 'd')
           and lsn > (select max(lsn) from analytics.order_status_history)",
    )
    .await
    .parse()
    .unwrap();
    assert!(
        new_events >= 3,
        "the new orders are journaled ({new_events})"
    );
    let incremental = dbt.run(&["build", "--select", "order_status_history+"]);
    assert!(incremental.ok, "{}", incremental.output);
    let model = incremental.result("order_status_history");
    assert_eq!(
        model["adapter_response"]["rows_affected"].as_u64(),
        Some(new_events),
        "the incremental run inserts only the new events: {model}"
    );
    assert_eq!(
        scalar(
            olap,
            "select ((select count(*) from analytics.order_status_history)
                     = (select count(*) from cdc_events
                        where source_table = 'orders' and op in ('r', 'i', 'u', 'd')))::text"
        )
        .await,
        "true"
    );
}

/// Step 3, post-load validation with the replicator stopped: a hidden corruption of one fact
/// row fails `dbt build`, naming the test, and no mart is built from it.
async fn a_corrupted_fact_fails_the_build(dbt: &Dbt, olap: &mut PgConnection) {
    let item = scalar(
        olap,
        "update fact_sales set revenue = revenue + 1
         where order_item_id = (select min(order_item_id) from fact_sales where status <> 'cancelled')
         returning order_item_id::text",
    )
    .await;
    let broken = dbt.run(&["build"]);
    assert!(
        !broken.ok,
        "dbt build passed over a corrupted fact: {}",
        broken.output
    );
    assert!(
        broken
            .output
            .contains("Failure in test assert_fact_sales_revenue_matches_replica"),
        "the revenue test names the failure: {}",
        broken.output
    );
    let failed = broken.failed();
    let caught_by = [
        "assert_fact_sales_revenue_matches_replica=fail",
        "assert_fact_sales_matches_replica=fail",
    ];
    assert!(
        failed
            .iter()
            .all(|f| caught_by.contains(&f.as_str()) || f.ends_with("=skipped")),
        "only the tests about that row fail (the rest pass or are skipped): {failed:?}"
    );
    assert!(failed.iter().any(|f| f == caught_by[0]), "{failed:?}");
    let rows = broken.result("assert_fact_sales_revenue_matches_replica")["failures"].as_u64();
    assert_eq!(rows, Some(1), "one order line differs");
    let statuses = broken.statuses();
    for mart in [
        "warehouse_as_of",
        "order_status_history",
        "mart_store_daily",
        "mart_customer_lifetime_value",
        "mart_customer_cohorts",
        "mart_product_weekly",
        "mart_order_fulfilment",
    ] {
        assert_eq!(
            statuses.get(mart).map(String::as_str),
            Some("skipped"),
            "the corrupted data must not reach {mart}"
        );
    }
    eprintln!(
        "dbt build caught the corrupted fact_sales row {item}: {:?}",
        failed
            .iter()
            .filter(|f| f.ends_with("=fail"))
            .collect::<Vec<_>>()
    );
    execute(
        olap,
        &format!("update fact_sales set revenue = revenue - 1 where order_item_id = {item}"),
    )
    .await;
}

/// One corruption per kind of test, each caught by its test.
async fn each_kind_of_corruption_is_caught(dbt: &Dbt, olap: &mut PgConnection, told: &Told) {
    let (product, other) = (told.product, told.other);
    for sql in [
        // SCD2: a closed version reaching into the next one.
        format!(
            "update dim_product set valid_to = valid_to + interval '1 hour'
             where product_id = {product} and not is_current"
        ),
        // SCD2: a product left without a current version.
        format!("update dim_product set is_current = false where product_id = {other} and is_current"),
        // fact_inventory off by 5 units in one group.
        "update fact_inventory set quantity_delta = quantity_delta + 5
         where (date_key, store_id, product_id, reason) =
               (select date_key, store_id, product_id, reason from fact_inventory order by 1, 2, 3, 4 limit 1)"
            .to_owned(),
        // A status no order can have.
        "update fact_sales set status = 'lost' where order_item_id = (select max(order_item_id) from fact_sales)"
            .to_owned(),
    ] {
        execute(olap, &sql).await;
    }
    // A payment pointing at no store (foreign keys are not enforced for the replicator's
    // role either: session_replication_role = replica).
    let mut tx = sqlx::Connection::begin(&mut *olap).await.unwrap();
    sqlx::query("set local session_replication_role = replica")
        .execute(&mut *tx)
        .await
        .unwrap();
    sqlx::query(
        "update fact_payments set store_key = -42 where payment_id = (select min(payment_id) from fact_payments)",
    )
    .execute(&mut *tx)
    .await
    .unwrap();
    tx.commit().await.unwrap();

    let tests = dbt.run(&["test", "--select", "source:star"]);
    assert!(
        !tests.ok,
        "dbt test passed over corruptions: {}",
        tests.output
    );
    let failed = tests.failed();
    for caught in [
        "assert_dim_product_versions_do_not_overlap=fail",
        "assert_dim_product_versions_are_contiguous=fail",
        "assert_dim_product_one_current_version=fail",
        "assert_fact_inventory_matches_movements=fail",
        "source_relationships_star_fact_payments_store_key",
        "source_accepted_values_star_fact_sales_status",
    ] {
        assert!(
            failed
                .iter()
                .any(|f| f.starts_with(caught) && f.ends_with("=fail")),
            "{caught} not caught: {failed:?}"
        );
    }
    eprintln!("dbt test caught: {failed:?}");
    assert!(
        !failed.iter().any(|f| f.ends_with("=error")),
        "a test errored instead of failing: {failed:?}\n{}",
        tests.output
    );
}

/// Step 4, freshness: the replicator stopped, past the threshold every source is stale; with
/// the replicator back, fresh again within seconds.
async fn stale_then_fresh(dbt: &Dbt, olap: &mut PgConnection, shop: &Shop, replicator_addr: &str) {
    let age = checkpoint_age(olap).await;
    if age < STALE_AFTER_SECS + 2.0 {
        tokio::time::sleep(Duration::from_secs_f64(STALE_AFTER_SECS + 2.0 - age)).await;
    }
    let stale = dbt.run(&["source", "freshness"]);
    assert!(
        !stale.ok,
        "freshness passed with the replicator stopped: {}",
        stale.output
    );
    assert!(stale.output.contains("ERROR STALE"), "{}", stale.output);
    let sources = stale.statuses();
    assert_eq!(sources.len(), 22);
    assert!(
        sources.values().all(|s| s == "error"),
        "every source stale: {sources:?}"
    );

    // The replicator back: fresh again within seconds.
    let replicator = shop.spawn(
        "replicator-2",
        &["replicate"],
        &[("REPLICATOR_LISTEN", replicator_addr)],
    );
    wait_streaming(replicator_addr, &replicator).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while checkpoint_age(olap).await > 5.0 {
        assert!(Instant::now() < deadline, "the checkpoint never advanced");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let fresh = dbt.run(&["source", "freshness"]);
    assert!(fresh.ok, "{}", fresh.output);
    assert!(fresh.statuses().values().all(|s| s == "pass"));
}

/// No secret in anything dbt wrote.
fn no_secret_written(dbt: &Dbt, shop: &Shop) {
    let mut leaks = Vec::new();
    for dir in [&dbt.target, &dbt.logs] {
        grep_files(dir, &shop.password(), &mut leaks);
    }
    assert!(leaks.is_empty(), "the password is in {leaks:?}");
}
