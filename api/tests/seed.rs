//! The sample-data seed: master data once, historical orders through the order code path.

mod common;

use std::time::Instant;

use axum::http::StatusCode;
use brewlytics_api::seed::{seed, SeedOptions};
use common::TestApp;
use serde_json::json;

async fn scalar(t: &TestApp, sql: &str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(&t.pool).await.unwrap()
}

#[tokio::test]
async fn master_data_is_seeded_once() {
    let t = TestApp::new("seed_master").await;
    let first = seed(&t.pool, &SeedOptions::default()).await.unwrap();
    assert_eq!(
        (
            first.stores_added,
            first.employees_added,
            first.customers_added,
            first.products_added
        ),
        (4, 13, 200, 32)
    );
    assert_eq!(first.orders_added, 0);
    assert_eq!(
        scalar(&t, "select count(*) from employees where not active").await,
        2
    );
    assert_eq!(
        scalar(&t, "select count(*) from employees where store_id is null").await,
        0
    );
    assert_eq!(
        scalar(&t, "select count(distinct lower(email)) from customers").await,
        200
    );
    assert_eq!(
        scalar(&t, "select count(distinct category) from products").await,
        5
    );
    assert_eq!(
        scalar(&t, "select count(*) from products where category not in ('coffee', 'tea', 'pastries', 'sandwiches', 'merchandise')").await,
        0
    );
    assert_eq!(
        scalar(&t, "select count(*) from products where not is_available").await,
        1
    );
    assert_eq!(
        scalar(
            &t,
            "select count(*) from products where price < 2 or price > 20"
        )
        .await,
        0
    );
    assert_eq!(
        scalar(
            &t,
            "select count(*) from products where category = 'coffee' and price > 5"
        )
        .await,
        0,
        "coffee is priced like coffee"
    );

    let before = t.counts().await;
    let second = seed(&t.pool, &SeedOptions::default()).await.unwrap();
    assert_eq!(second, Default::default(), "a second run adds nothing");
    assert_eq!(t.counts().await, before);
}

#[tokio::test]
async fn seeded_orders_are_consistent_and_patterned() {
    let t = TestApp::new("seed_orders").await;
    let opts = SeedOptions {
        orders: 3000,
        days: 28,
        rng_seed: 7,
    };
    let summary = seed(&t.pool, &opts).await.unwrap();
    assert_eq!(summary.orders_added, 3000);
    let counts = t.counts().await;
    assert_eq!(counts["orders"], 3000);
    assert_eq!(counts["payments"], 3000);
    assert_eq!(
        scalar(&t, "select count(*) from orders where status = 'cancelled'").await,
        summary.orders_cancelled as i64
    );
    assert!((50..300).contains(&summary.orders_cancelled), "{summary}");
    assert_eq!(
        scalar(
            &t,
            "select count(*) from orders where status not in ('completed', 'cancelled')"
        )
        .await,
        0
    );
    // sum of items = total = payment amount, one payment each, one sale movement per item
    let inconsistent = scalar(
        &t,
        "select count(*) from orders o
         where o.total <> (select sum(i.quantity * i.unit_price) from order_items i where i.order_id = o.id)
            or o.total <> (select sum(p.amount) from payments p where p.order_id = o.id)
            or (select count(*) from payments p where p.order_id = o.id) <> 1
            or (select count(*) from inventory_movements m where m.order_id = o.id and m.reason = 'sale')
               <> (select count(*) from order_items i where i.order_id = o.id)",
    )
    .await;
    assert_eq!(inconsistent, 0);
    // unit prices are the products' prices; cancellations are compensated line by line
    assert_eq!(
        scalar(&t, "select count(*) from order_items i join products p on p.id = i.product_id where i.unit_price <> p.price or not p.is_available").await,
        0
    );
    assert_eq!(
        scalar(&t, "select count(*) from orders o where o.status = 'cancelled' and
                    coalesce((select sum(delta) from inventory_movements m where m.order_id = o.id), -1) <> 0").await,
        0
    );
    // walk-ins about a quarter, only active staff, all in the past 28 days
    let walk_ins = scalar(&t, "select count(*) from orders where customer_id is null").await;
    assert!((600..900).contains(&walk_ins), "walk-ins {walk_ins}");
    assert_eq!(
        scalar(&t, "select count(*) from orders o join employees e on e.id = o.employee_id where not e.active").await,
        0
    );
    assert_eq!(
        scalar(&t, "select count(*) from orders where ordered_at >= current_date or ordered_at < current_date - 28").await,
        0
    );
    // a weekday morning peak (7-10 h) well above the afternoon (the weights give 3.3x; weekends,
    // whose share depends on which days fall in the window, have a flatter 2.4x), weekends busier
    // per day
    let weekday_hours = |from: i32, to: i32| {
        let t = &t;
        async move {
            scalar(t, &format!("select count(*) from orders where extract(isodow from ordered_at at time zone 'UTC') <= 5 \
                and extract(hour from ordered_at at time zone 'UTC') between {from} and {to}")).await
        }
    };
    let morning = weekday_hours(7, 10).await;
    let afternoon = weekday_hours(15, 18).await;
    assert!(
        morning * 2 > 5 * afternoon,
        "morning {morning}, afternoon {afternoon}"
    );
    let per_day = |dow: &'static str| {
        let t = &t;
        async move {
            scalar(t, &format!("select count(*) / count(distinct ordered_at::date) from orders where extract(isodow from ordered_at at time zone 'UTC') {dow}")).await
        }
    };
    let weekday = per_day("<= 5").await;
    let weekend = per_day(">= 6").await;
    assert!(
        weekend > weekday,
        "weekend {weekend}/day, weekday {weekday}/day"
    );

    // the API works on seeded data
    let (customer, employee, store, product): (i64, i64, i64, i64) = sqlx::query_as(
        "select (select min(id) from customers), (select min(id) from employees where active),
                (select min(id) from stores), (select min(id) from products where is_available)",
    )
    .fetch_one(&t.pool)
    .await
    .unwrap();
    let body = json!({"customer_id": customer, "employee_id": employee, "store_id": store,
        "payment_method": "card", "items": [{"product_id": product, "quantity": 1}]});
    assert_eq!(
        t.call("POST", "/orders", Some(body)).await.status,
        StatusCode::CREATED
    );
}

#[tokio::test]
async fn ten_thousand_orders_seed_quickly_and_add_up() {
    let t = TestApp::new("seed_10k").await;
    seed(&t.pool, &SeedOptions::default()).await.unwrap();
    let started = Instant::now();
    let summary = seed(
        &t.pool,
        &SeedOptions {
            orders: 10_000,
            days: 56,
            rng_seed: 1,
        },
    )
    .await
    .unwrap();
    let elapsed = started.elapsed();
    eprintln!("seeded 10000 orders in {elapsed:?}");
    assert_eq!(summary.orders_added, 10_000);
    assert_eq!(summary.customers_added, 0, "master data already there");
    assert_eq!(scalar(&t, "select count(*) from orders").await, 10_000);
    let mismatched = scalar(
        &t,
        "select count(*) from orders o join payments p on p.order_id = o.id
         where p.amount <> o.total or o.total <> (select sum(quantity * unit_price) from order_items where order_id = o.id)",
    )
    .await;
    assert_eq!(mismatched, 0);
}
