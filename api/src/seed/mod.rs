//! Realistic sample data: master data that is added only where missing (run it twice, get
//! the same stores, staff, customers and menu), and optionally historical orders written
//! through the API's own order transaction ([`data::orders::place_orders`]) and status
//! machine ([`data::orders::change_statuses`]) — prices read from the products inside the
//! transaction, payments and inventory movements included — so seeded data obeys every rule
//! live data does.

mod history;
mod menu;

use std::collections::HashMap;
use std::fmt;

use anyhow::Context;
use chrono::{Duration, NaiveDate, Utc};
use rand::SeedableRng;
use rust_decimal::Decimal;
use serde::Serialize;
use sqlx::{PgConnection, PgPool};

use crate::data::{self, DataError};
use crate::domain::order::{OrderDraft, OrderError, OrderStatus, StatusChange};
use history::{PlannedOrder, Shop};

/// Orders written per transaction.
const CHUNK: usize = 1000;

/// What to seed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeedOptions {
    /// Historical orders to add (0: master data only). Orders are added on every run.
    pub orders: u32,
    /// The orders fall on the `days` whole days before today (UTC).
    pub days: u32,
    /// Seed of the order generator; the same seed and master data give the same orders.
    pub rng_seed: u64,
}

impl Default for SeedOptions {
    fn default() -> Self {
        Self {
            orders: 0,
            days: 28,
            rng_seed: 42,
        }
    }
}

/// What a run added.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct SeedSummary {
    pub stores_added: u64,
    pub employees_added: u64,
    pub customers_added: u64,
    pub products_added: u64,
    pub orders_added: u64,
    pub orders_cancelled: u64,
}

impl fmt::Display for SeedSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "added {} stores, {} employees, {} customers, {} products, {} orders ({} cancelled)",
            self.stores_added,
            self.employees_added,
            self.customers_added,
            self.products_added,
            self.orders_added,
            self.orders_cancelled
        )
    }
}

/// Why seeding stopped.
#[derive(Debug, thiserror::Error)]
pub enum SeedError {
    #[error("seeding orders needs --days of at least 1")]
    NoDays,
    #[error("seeding orders needs {0}, and the database has none")]
    Missing(&'static str),
    #[error("a planned order was refused: {0}")]
    Order(#[from] OrderError),
    #[error(transparent)]
    Data(#[from] DataError),
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
}

/// Seeds master data (skipping rows that exist) and `opts.orders` historical orders.
pub async fn seed(pool: &PgPool, opts: &SeedOptions) -> anyhow::Result<SeedSummary> {
    let mut summary = SeedSummary::default();
    let mut tx = pool.begin().await?;
    seed_master_data(&mut tx, &mut summary)
        .await
        .context("seeding master data")?;
    tx.commit().await?;
    if opts.orders > 0 {
        seed_orders(pool, opts, &mut summary)
            .await
            .context("seeding orders")?;
    }
    tracing::info!(
        orders = summary.orders_added,
        customers = summary.customers_added,
        "seed done"
    );
    Ok(summary)
}

async fn seed_master_data(
    conn: &mut PgConnection,
    summary: &mut SeedSummary,
) -> Result<(), SeedError> {
    let date = |(y, m, d): menu::Ymd| NaiveDate::from_ymd_opt(y, m, d).unwrap_or_default();
    summary.stores_added = sqlx::query(
        "insert into stores (name, city, opened_on)
         select * from unnest($1::text[], $2::text[], $3::date[])
         on conflict (name) do nothing",
    )
    .bind(menu::STORES.iter().map(|s| s.name).collect::<Vec<_>>())
    .bind(menu::STORES.iter().map(|s| s.city).collect::<Vec<_>>())
    .bind(
        menu::STORES
            .iter()
            .map(|s| date(s.opened))
            .collect::<Vec<_>>(),
    )
    .execute(&mut *conn)
    .await?
    .rows_affected();

    // Employee names are not unique in the schema; the seed's own are matched by name.
    summary.employees_added = sqlx::query(
        "insert into employees (name, role, store_id, active, hired_on)
         select e.name, e.role, s.id, e.active, e.hired_on
         from unnest($1::text[], $2::text[], $3::text[], $4::bool[], $5::date[])
              with ordinality as e(name, role, store, active, hired_on, n)
         join stores s on s.name = e.store
         where not exists (select 1 from employees x where x.name = e.name)
         order by e.n",
    )
    .bind(menu::EMPLOYEES.iter().map(|e| e.name).collect::<Vec<_>>())
    .bind(menu::EMPLOYEES.iter().map(|e| e.role).collect::<Vec<_>>())
    .bind(menu::EMPLOYEES.iter().map(|e| e.store).collect::<Vec<_>>())
    .bind(menu::EMPLOYEES.iter().map(|e| e.active).collect::<Vec<_>>())
    .bind(
        menu::EMPLOYEES
            .iter()
            .map(|e| date(e.hired))
            .collect::<Vec<_>>(),
    )
    .execute(&mut *conn)
    .await?
    .rows_affected();

    let customers = menu::customers();
    let now = Utc::now();
    // sign-ups spread over the past year, oldest first
    let signed_up: Vec<_> = (0..customers.len() as i64)
        .map(|i| now - Duration::days(365 - i * 365 / customers.len() as i64))
        .collect();
    summary.customers_added = sqlx::query(
        "insert into customers (name, email, created_at)
         select * from unnest($1::text[], $2::text[], $3::timestamptz[])
         on conflict do nothing",
    )
    .bind(customers.iter().map(|c| c.0.as_str()).collect::<Vec<_>>())
    .bind(customers.iter().map(|c| c.1.as_str()).collect::<Vec<_>>())
    .bind(&signed_up)
    .execute(&mut *conn)
    .await?
    .rows_affected();

    summary.products_added = sqlx::query(
        "insert into products (name, category, price, is_available, description)
         select * from unnest($1::text[], $2::text[], $3::numeric[], $4::bool[], $5::text[])
         on conflict (name) do nothing",
    )
    .bind(menu::PRODUCTS.iter().map(|p| p.0).collect::<Vec<_>>())
    .bind(menu::PRODUCTS.iter().map(|p| p.1).collect::<Vec<_>>())
    .bind(
        menu::PRODUCTS
            .iter()
            .map(|p| Decimal::new(p.2, 2))
            .collect::<Vec<_>>(),
    )
    .bind(menu::PRODUCTS.iter().map(|p| p.3).collect::<Vec<_>>())
    .bind(menu::PRODUCTS.iter().map(|p| p.4).collect::<Vec<_>>())
    .execute(&mut *conn)
    .await?
    .rows_affected();
    Ok(())
}

/// Reads what orders can be built from: every store (the seed's weighted by their share,
/// others at 10%), active staff, available products, customers.
async fn read_shop(pool: &PgPool) -> Result<Shop, SeedError> {
    let mut shop = Shop::default();
    let stores: Vec<(i64, String)> = sqlx::query_as("select id, name from stores order by id")
        .fetch_all(pool)
        .await?;
    shop.stores = stores
        .into_iter()
        .map(|(id, name)| {
            let share = menu::STORES
                .iter()
                .find(|s| s.name == name)
                .map_or(0.1, |s| s.share);
            (id, share)
        })
        .collect();
    let staff: Vec<(i64, Option<i64>)> =
        sqlx::query_as("select id, store_id from employees where active order by id")
            .fetch_all(pool)
            .await?;
    for (id, store) in staff {
        shop.staff.entry(store).or_default().push(id);
    }
    let products: Vec<(i64, String)> =
        sqlx::query_as("select id, category from products where is_available order by id")
            .fetch_all(pool)
            .await?;
    for (id, category) in products {
        shop.menu.entry(category).or_default().push(id);
    }
    shop.customers = sqlx::query_scalar("select id from customers order by id")
        .fetch_all(pool)
        .await?;
    Ok(shop)
}

async fn seed_orders(
    pool: &PgPool,
    opts: &SeedOptions,
    summary: &mut SeedSummary,
) -> Result<(), SeedError> {
    let shop = read_shop(pool).await?;
    let mut rng = rand::rngs::StdRng::seed_from_u64(opts.rng_seed);
    let today = Utc::now().date_naive();
    let plans = history::plan_orders(&shop, opts.orders, opts.days, today, &mut rng)?;
    for chunk in plans.chunks(CHUNK) {
        summary.orders_cancelled += write_chunk(pool, chunk).await?;
        summary.orders_added += chunk.len() as u64;
    }
    Ok(())
}

/// Places a chunk of orders and walks them through their status changes, in one
/// transaction. Returns how many ended cancelled.
async fn write_chunk(pool: &PgPool, chunk: &[PlannedOrder]) -> Result<u64, SeedError> {
    let mut tx = pool.begin().await?;
    let drafts: Vec<OrderDraft> = chunk.iter().map(|p| p.draft.clone()).collect();
    data::orders::place_orders(&mut tx, &drafts).await?;
    // The n-th change of every order goes in the n-th batch: each batch names an order once.
    let mut steps: HashMap<usize, Vec<StatusChange>> = HashMap::new();
    for plan in chunk {
        for (n, change) in plan.changes.iter().enumerate() {
            steps.entry(n).or_default().push(*change);
        }
    }
    for n in 0..steps.len() {
        if let Some(batch) = steps.get(&n) {
            data::orders::change_statuses(&mut tx, batch).await?;
        }
    }
    tx.commit().await?;
    Ok(chunk
        .iter()
        .filter(|p| p.changes.last().map(|c| c.status) == Some(OrderStatus::Cancelled))
        .count() as u64)
}
