//! Shared by the integration tests: an OLAP database with the migrations applied and a small
//! star schema of known orders, written straight into the dimensions and facts.
#![allow(dead_code)]

use brewlytics_dashboards::question::{self, ParamValue, Params};
use brewlytics_dashboards::report::{self, Table};
use brewlytics_support::testing::TestDb;
use sqlx::postgres::PgPoolOptions;
use sqlx::PgPool;

/// A fresh migrated OLAP database (dropped with the `TestDb`).
pub async fn olap(prefix: &str) -> (TestDb, PgPool) {
    let db = tokio::task::spawn_blocking({
        let prefix = prefix.to_owned();
        move || TestDb::new(&prefix)
    })
    .await
    .unwrap();
    let pool = PgPoolOptions::new()
        .max_connections(4)
        .connect_with(db.url().connect_options().unwrap())
        .await
        .unwrap();
    brewlytics_support::migrate::olap(&pool).await.unwrap();
    (db, pool)
}

/// Six orders over 2024-05-01..03 in two stores (UTC):
///
/// | order | when             | store | customer | employee | status    | lines                          | pay    |
/// |-------|------------------|-------|----------|----------|-----------|--------------------------------|--------|
/// | 1     | 05-01 08:15      | 1     | Ada      | Ana      | completed | 2 latte v1 @3.00, 1 croissant  | card   |
/// | 2     | 05-01 09:30      | 2     | walk-in  | Ben      | completed | 1 tea @2.00                    | cash   |
/// | 3     | 05-01 08:45      | 1     | Bob      | Ana      | cancelled | 3 latte v1 @3.00               | card   |
/// | 4     | 05-02 08:05      | 1     | Ada      | Ana      | completed | 1 latte v2 @3.50, 2 croissant  | mobile |
/// | 5     | 05-03 14:20      | 2     | Bob      | Ben      | placed    | 2 latte v2 @3.50               | card   |
/// | 6     | 05-03 15:00      | 1     | walk-in  | Ana      | preparing | 1 croissant @2.50, 2 tea @2.00 | cash   |
///
/// The latte has two SCD2 versions (3.00 "Latte", then 3.50 "Caffè latte" from 05-02).
pub const FIXTURE: &str = r#"
insert into dim_store (store_key, store_id, name, city) values
    (1, 1, 'Downtown', 'Lisbon'), (2, 2, 'Harbour', 'Porto');
insert into dim_employee (employee_key, employee_id, name, role, store_id, active) values
    (1, 1, 'Ana', 'barista', 1, true), (2, 2, 'Ben', 'barista', 2, true);
insert into dim_customer (customer_key, customer_id, name, email) values
    (1, 1, 'Ada', 'ada@example.com'), (2, 2, 'Bob', 'bob@example.com');
insert into dim_product (product_key, product_id, name, category, price, is_available, version, valid_from, valid_to, is_current) values
    (101, 10, 'Latte', 'coffee', 3.00, true, 1, '-infinity', '2024-05-02 00:00Z', false),
    (102, 10, 'Caffè latte', 'coffee', 3.50, true, 2, '2024-05-02 00:00Z', 'infinity', true),
    (111, 11, 'Croissant', 'pastry', 2.50, true, 1, '-infinity', 'infinity', true),
    (121, 12, 'Tea', 'tea', 2.00, true, 1, '-infinity', 'infinity', true);

insert into fact_sales (order_item_id, order_id, date_key, customer_key, product_key, employee_key,
                        store_key, quantity, unit_price, revenue, status, payment_method, ordered_at, hour_of_day)
select i.item, ('00000000-0000-0000-0000-00000000000' || i.ord)::uuid,
       dim_date_key((i.at at time zone 'UTC')::date), i.cust, i.prod, i.emp, i.store,
       i.qty, i.price, i.qty * i.price, i.status, i.pay, i.at, extract(hour from i.at at time zone 'UTC')
from (values
    (1, 1, timestamptz '2024-05-01 08:15Z', 1, 101, 1, 1, 2, 3.00, 'completed', 'card'),
    (2, 1, timestamptz '2024-05-01 08:15Z', 1, 111, 1, 1, 1, 2.50, 'completed', 'card'),
    (3, 2, timestamptz '2024-05-01 09:30Z', 0, 121, 2, 2, 1, 2.00, 'completed', 'cash'),
    (4, 3, timestamptz '2024-05-01 08:45Z', 2, 101, 1, 1, 3, 3.00, 'cancelled', 'card'),
    (5, 4, timestamptz '2024-05-02 08:05Z', 1, 102, 1, 1, 1, 3.50, 'completed', 'mobile'),
    (6, 4, timestamptz '2024-05-02 08:05Z', 1, 111, 1, 1, 2, 2.50, 'completed', 'mobile'),
    (7, 5, timestamptz '2024-05-03 14:20Z', 2, 102, 2, 2, 2, 3.50, 'placed', 'card'),
    (8, 6, timestamptz '2024-05-03 15:00Z', 0, 111, 1, 1, 1, 2.50, 'preparing', 'cash'),
    (9, 6, timestamptz '2024-05-03 15:00Z', 0, 121, 1, 1, 2, 2.00, 'preparing', 'cash')
) as i(item, ord, at, cust, prod, emp, store, qty, price, status, pay);

insert into fact_payments (payment_id, order_id, date_key, customer_key, employee_key, store_key,
                           amount, method, order_status, paid_at)
select o.ord, ('00000000-0000-0000-0000-00000000000' || o.ord)::uuid,
       dim_date_key((o.at at time zone 'UTC')::date), o.cust, o.emp, o.store, o.amount, o.method, o.status, o.at
from (values
    (1, timestamptz '2024-05-01 08:15Z', 1, 1, 1, 8.50, 'card', 'completed'),
    (2, timestamptz '2024-05-01 09:30Z', 0, 2, 2, 2.00, 'cash', 'completed'),
    (3, timestamptz '2024-05-01 08:45Z', 2, 1, 1, 9.00, 'card', 'cancelled'),
    (4, timestamptz '2024-05-02 08:05Z', 1, 1, 1, 8.50, 'mobile', 'completed'),
    (5, timestamptz '2024-05-03 14:20Z', 2, 2, 2, 7.00, 'card', 'placed'),
    (6, timestamptz '2024-05-03 15:00Z', 0, 1, 1, 6.50, 'cash', 'preparing')
) as o(ord, at, cust, emp, store, amount, method, status);

insert into fact_inventory (date_key, store_id, product_id, reason, store_key, product_key, quantity_delta, movements) values
    (20240501, 1, 10, 'restock', 1, 101, 50, 1),
    (20240501, 1, 10, 'sale', 1, 101, -5, 2),
    (20240501, 1, 10, 'cancel', 1, 101, 3, 1),
    (20240502, 1, 10, 'sale', 1, 102, -1, 1),
    (20240501, 1, 11, 'sale', 1, 111, -1, 1),
    (20240502, 1, 11, 'sale', 1, 111, -2, 1),
    (20240502, 1, 11, 'adjustment', 1, 111, -1, 1),
    (20240501, 2, 12, 'restock', 2, 121, 20, 1);

-- Menu browsing on 05-01: the latte shown 4 times and clicked twice (one click explains order
-- 1's latte line), the tea shown once and clicked once (no order); on 05-02 the croissant
-- shown twice, never clicked.
insert into fact_impressions (event_id, session_id, date_key, product_id, product_key, customer_id,
                              customer_key, occurred_at, received_at)
select ('00000000-0000-7000-8000-00000000000' || e.n)::uuid, e.session, dim_date_key(e.at::date),
       e.product, e.key, null, 0, e.at, e.at
from (values
    (1, 's1', timestamptz '2024-05-01 08:00Z', 10, 101), (2, 's1', timestamptz '2024-05-01 08:01Z', 10, 101),
    (3, 's2', timestamptz '2024-05-01 09:00Z', 10, 101), (4, 's2', timestamptz '2024-05-01 09:01Z', 10, 101),
    (5, 's2', timestamptz '2024-05-01 09:02Z', 12, 121), (6, 's3', timestamptz '2024-05-02 10:00Z', 11, 111),
    (7, 's3', timestamptz '2024-05-02 10:01Z', 11, 111)
) as e(n, session, at, product, key);
insert into fact_clicks (event_id, session_id, date_key, product_id, product_key, customer_id,
                         customer_key, occurred_at, received_at)
select ('00000000-0000-7000-9000-00000000000' || e.n)::uuid, e.session, dim_date_key(e.at::date),
       e.product, e.key, null, 0, e.at, e.at
from (values
    (1, 's1', timestamptz '2024-05-01 08:05Z', 10, 101), (2, 's2', timestamptz '2024-05-01 09:03Z', 10, 101),
    (3, 's2', timestamptz '2024-05-01 09:04Z', 12, 121)
) as e(n, session, at, product, key);
insert into fact_attribution (order_item_id, order_id, session_id, date_key, product_id, product_key,
                              customer_key, click_event_id, clicked_at, ordered_at,
                              minutes_to_convert, quantity, revenue) values
    (1, '00000000-0000-0000-0000-000000000001', 's1', 20240501, 10, 101, 1,
     '00000000-0000-7000-9000-000000000001', '2024-05-01 08:05Z', '2024-05-01 08:15Z', 10.00, 2, 6.00);
"#;

pub async fn load_fixture(pool: &PgPool) {
    sqlx::raw_sql(FIXTURE).execute(pool).await.unwrap();
}

pub fn date(s: &str) -> ParamValue {
    ParamValue::Date(s.parse().unwrap())
}

/// Runs a question with `(name, value)` parameters.
pub async fn run(pool: &PgPool, name: &str, params: &[(&str, ParamValue)]) -> Table {
    let q = question::find(name).unwrap();
    let params: Params = params.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect();
    report::run(pool, &q, &params).await.unwrap()
}

/// The question's CSV for a parameter set.
pub async fn csv(pool: &PgPool, name: &str, params: &[(&str, ParamValue)]) -> String {
    run(pool, name, params).await.to_csv()
}
