//! The order transaction and the status machine's writes, set-based: one statement per table
//! whatever the number of orders or lines, so the seed can place a thousand orders in the
//! same code path the API uses for one.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use sqlx::{Connection, PgConnection, PgPool, Row};
use uuid::Uuid;

use super::{with_statements, DataError};
use crate::domain::order::{
    check_transition, price_order, Order, OrderDraft, OrderError, OrderItem, OrderStatus,
    PaymentMethod, PricedLine, ProductRow, References, StatusChange,
};

/// Places `drafts` inside the caller's transaction: reads and share-locks the products,
/// customers, employees and stores they reference, prices every line from the product rows,
/// then inserts the orders (status `placed`), their items, one payment each (amount = total)
/// and one `sale` inventory movement per item (delta = -quantity). Nothing is written unless
/// every draft passes; on error the caller must roll back (dropping the transaction does).
pub async fn place_orders(
    conn: &mut PgConnection,
    drafts: &[OrderDraft],
) -> Result<Vec<Order>, DataError> {
    if drafts.is_empty() {
        return Ok(Vec::new());
    }
    let refs = read_references(conn, drafts).await?;
    let priced = drafts
        .iter()
        .map(|d| price_order(d, &refs))
        .collect::<Result<Vec<_>, OrderError>>()?;

    let ids: Vec<Uuid> = drafts.iter().map(|d| d.id).collect();
    let totals: Vec<Decimal> = priced.iter().map(|(_, total)| *total).collect();
    let methods: Vec<&str> = drafts.iter().map(|d| d.payment_method.as_str()).collect();
    let times: Vec<DateTime<Utc>> = drafts.iter().map(|d| d.ordered_at).collect();
    let lines: Vec<(&OrderDraft, &PricedLine)> = drafts
        .iter()
        .zip(&priced)
        .flat_map(|(d, (ls, _))| ls.iter().map(move |l| (d, l)))
        .collect();
    let line_orders: Vec<Uuid> = lines.iter().map(|(d, _)| d.id).collect();
    let line_products: Vec<i64> = lines.iter().map(|(_, l)| l.product_id).collect();
    let line_quantities: Vec<i32> = lines.iter().map(|(_, l)| l.quantity).collect();
    // One statement, one round trip: the orders, their lines (returned), payments and sale
    // movements. The foreign keys are checked at its end, with every row in.
    let item_rows = sqlx::query(
        "with placed as (
             insert into orders (id, customer_id, employee_id, store_id, status, payment_method,
                                 ordered_at, updated_at, total, session_id)
             select id, customer_id, employee_id, store_id, 'placed', payment_method,
                    ordered_at, ordered_at, total, session_id
             from unnest($1::uuid[], $2::int8[], $3::int8[], $4::int8[], $5::text[],
                         $6::timestamptz[], $7::numeric[], $8::text[])
                  as t(id, customer_id, employee_id, store_id, payment_method, ordered_at, total,
                       session_id)),
         paid as (
             insert into payments (order_id, amount, method, paid_at)
             select * from unnest($1::uuid[], $7::numeric[], $5::text[], $6::timestamptz[])),
         sold as (
             insert into inventory_movements (store_id, product_id, order_id, delta, reason,
                                              occurred_at)
             select store_id, product_id, order_id, -quantity, 'sale', occurred_at
             from unnest($9::int8[], $10::int8[], $11::uuid[], $12::int4[], $13::timestamptz[])
                  as t(store_id, product_id, order_id, quantity, occurred_at))
         insert into order_items (order_id, product_id, quantity, unit_price)
         select * from unnest($11::uuid[], $10::int8[], $12::int4[], $14::numeric[])
         returning id::int8 as id, order_id, product_id::int8 as product_id,
                   quantity::int4 as quantity, unit_price::numeric as unit_price",
    )
    .bind(&ids)
    .bind(drafts.iter().map(|d| d.customer_id).collect::<Vec<_>>())
    .bind(drafts.iter().map(|d| d.employee_id).collect::<Vec<_>>())
    .bind(drafts.iter().map(|d| d.store_id).collect::<Vec<_>>())
    .bind(&methods)
    .bind(&times)
    .bind(&totals)
    .bind(
        drafts
            .iter()
            .map(|d| d.session_id.clone())
            .collect::<Vec<_>>(),
    )
    .bind(lines.iter().map(|(d, _)| d.store_id).collect::<Vec<_>>())
    .bind(&line_products)
    .bind(&line_orders)
    .bind(&line_quantities)
    .bind(lines.iter().map(|(d, _)| d.ordered_at).collect::<Vec<_>>())
    .bind(lines.iter().map(|(_, l)| l.unit_price).collect::<Vec<_>>())
    .fetch_all(&mut *conn)
    .await?;

    let mut items: HashMap<Uuid, Vec<OrderItem>> = HashMap::with_capacity(drafts.len());
    for row in &item_rows {
        items
            .entry(row.try_get("order_id")?)
            .or_default()
            .push(item_from_row(row)?);
    }
    Ok(drafts
        .iter()
        .zip(totals)
        .map(|(d, total)| {
            let mut order_items = items.remove(&d.id).unwrap_or_default();
            order_items.sort_by_key(|i| i.id);
            Order {
                id: d.id,
                status: OrderStatus::Placed,
                total,
                customer_id: d.customer_id,
                employee_id: d.employee_id,
                store_id: d.store_id,
                payment_method: d.payment_method,
                ordered_at: d.ordered_at,
                items: order_items,
                session_id: d.session_id.clone(),
            }
        })
        .collect())
}

/// Reads the rows the drafts reference, locking them until commit: products `for share` (so
/// a concurrent price change waits and the price charged is the committed one), employees
/// `for share` (their active flag is checked), customers and stores `for key share`.
async fn read_references(
    conn: &mut PgConnection,
    drafts: &[OrderDraft],
) -> Result<References, sqlx::Error> {
    fn distinct(ids: impl Iterator<Item = i64>) -> Vec<i64> {
        let mut v: Vec<i64> = ids.collect();
        v.sort_unstable();
        v.dedup();
        v
    }
    let products = distinct(
        drafts
            .iter()
            .flat_map(|d| d.lines.iter().map(|l| l.product_id)),
    );
    let customers = distinct(drafts.iter().filter_map(|d| d.customer_id));
    let employees = distinct(drafts.iter().map(|d| d.employee_id));
    let stores = distinct(drafts.iter().map(|d| d.store_id));

    // One statement, one round trip; the rows are locked in the order of the four reads it
    // stands for (products, customers, employees, stores; each by id).
    let rows = sqlx::query(
        "with p as (select id::int8 as id, price::numeric as price, is_available from products
                    where id = any($1) order by id for share),
              c as (select id::int8 as id from customers
                    where id = any($2) order by id for key share),
              e as (select id::int8 as id, active from employees
                    where id = any($3) order by id for share),
              s as (select id::int8 as id from stores
                    where id = any($4) order by id for key share)
         select 'p' as kind, id, price, is_available as flag from p
         union all select 'c', id, null, null from c
         union all select 'e', id, null, active from e
         union all select 's', id, null, null from s",
    )
    .bind(&products)
    .bind(&customers)
    .bind(&employees)
    .bind(&stores)
    .fetch_all(&mut *conn)
    .await?;
    let mut refs = References::default();
    for row in rows {
        let id: i64 = row.try_get("id")?;
        match row.try_get::<&str, _>("kind")? {
            "p" => {
                let product = ProductRow {
                    price: row.try_get("price")?,
                    is_available: row.try_get("flag")?,
                };
                refs.products.insert(id, product);
            }
            "c" => {
                refs.customers.insert(id);
            }
            "e" => {
                refs.employees.insert(id, row.try_get("flag")?);
            }
            _ => {
                refs.stores.insert(id);
            }
        }
    }
    Ok(refs)
}

/// Applies status changes inside the caller's transaction. The orders are locked
/// `for update` first, so of two concurrent changes to one order the second sees the first's
/// result and is judged against it. A cancellation writes one `cancel` movement per item
/// (delta = +quantity) at the change's time.
pub async fn change_statuses(
    conn: &mut PgConnection,
    changes: &[StatusChange],
) -> Result<(), DataError> {
    let ids: Vec<Uuid> = changes.iter().map(|c| c.order_id).collect();
    let mut seen = std::collections::HashSet::with_capacity(ids.len());
    if let Some(dup) = ids.iter().find(|id| !seen.insert(**id)) {
        return Err(OrderError::DuplicateChange(*dup).into());
    }
    let current: HashMap<Uuid, String> =
        sqlx::query_as("select id, status from orders where id = any($1) order by id for update")
            .bind(&ids)
            .fetch_all(&mut *conn)
            .await?
            .into_iter()
            .collect();
    for change in changes {
        let from = current
            .get(&change.order_id)
            .ok_or(OrderError::NotFound(change.order_id))?;
        check_transition(decode_status(from)?, change.status)?;
    }
    sqlx::query(
        "update orders o set status = c.status, updated_at = c.at
         from unnest($1::uuid[], $2::text[], $3::timestamptz[]) as c(id, status, at)
         where o.id = c.id",
    )
    .bind(&ids)
    .bind(
        changes
            .iter()
            .map(|c| c.status.as_str())
            .collect::<Vec<_>>(),
    )
    .bind(changes.iter().map(|c| c.at).collect::<Vec<_>>())
    .execute(&mut *conn)
    .await?;

    let cancels: Vec<&StatusChange> = changes
        .iter()
        .filter(|c| c.status == OrderStatus::Cancelled)
        .collect();
    if !cancels.is_empty() {
        sqlx::query(
            "insert into inventory_movements (store_id, product_id, order_id, delta, reason, occurred_at)
             select o.store_id, i.product_id, o.id, i.quantity, 'cancel', c.at
             from unnest($1::uuid[], $2::timestamptz[]) as c(id, at)
             join orders o on o.id = c.id
             join order_items i on i.order_id = o.id
             order by o.id, i.id",
        )
        .bind(cancels.iter().map(|c| c.order_id).collect::<Vec<_>>())
        .bind(cancels.iter().map(|c| c.at).collect::<Vec<_>>())
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

/// One order with its items, or `None`.
pub async fn fetch_order(conn: &mut PgConnection, id: Uuid) -> Result<Option<Order>, sqlx::Error> {
    let Some(row) = sqlx::query(
        "select id, status, total::numeric as total, customer_id::int8 as customer_id,
                employee_id::int8 as employee_id, store_id::int8 as store_id, payment_method,
                ordered_at, session_id::text as session_id
         from orders where id = $1",
    )
    .bind(id)
    .fetch_optional(&mut *conn)
    .await?
    else {
        return Ok(None);
    };
    let items = sqlx::query(
        "select id::int8 as id, product_id::int8 as product_id, quantity::int4 as quantity,
                unit_price::numeric as unit_price
         from order_items where order_id = $1 order by id",
    )
    .bind(id)
    .fetch_all(&mut *conn)
    .await?
    .iter()
    .map(item_from_row)
    .collect::<Result<Vec<_>, _>>()?;
    let method: String = row.try_get("payment_method")?;
    Ok(Some(Order {
        id: row.try_get("id")?,
        status: decode_status(&row.try_get::<String, _>("status")?)?,
        total: row.try_get("total")?,
        customer_id: row.try_get("customer_id")?,
        employee_id: row.try_get("employee_id")?,
        store_id: row.try_get("store_id")?,
        payment_method: PaymentMethod::parse(&method)
            .ok_or_else(|| decode_error(format!("unknown payment method {method:?}")))?,
        ordered_at: row.try_get("ordered_at")?,
        items,
        session_id: row.try_get("session_id")?,
    }))
}

/// `POST /orders`: one draft, one transaction.
pub async fn place_order(pool: &PgPool, draft: OrderDraft) -> Result<Order, DataError> {
    with_statements!(pool, |conn| async {
        let mut tx = conn.begin().await?;
        let mut placed = place_orders(&mut tx, std::slice::from_ref(&draft)).await?;
        tx.commit().await?;
        Ok(placed.pop().expect("one order placed per draft"))
    })
}

/// `GET /orders/{id}`.
pub async fn get_order(pool: &PgPool, id: Uuid) -> Result<Order, DataError> {
    with_statements!(pool, |conn| async {
        fetch_order(conn, id)
            .await?
            .ok_or_else(|| OrderError::NotFound(id).into())
    })
}

/// `PATCH /orders/{id}`: validates and applies one transition, returns the updated order.
pub async fn set_status(
    pool: &PgPool,
    id: Uuid,
    status: OrderStatus,
    at: DateTime<Utc>,
) -> Result<Order, DataError> {
    let change = StatusChange {
        order_id: id,
        status,
        at,
    };
    with_statements!(pool, |conn| async {
        let mut tx = conn.begin().await?;
        change_statuses(&mut tx, &[change]).await?;
        let order = fetch_order(&mut tx, id)
            .await?
            .ok_or(OrderError::NotFound(id))?;
        tx.commit().await?;
        Ok(order)
    })
}

/// `DELETE /orders/{id}`: items, payment and movements go with it (on delete cascade).
pub async fn delete_order(pool: &PgPool, id: Uuid) -> Result<(), DataError> {
    let done = with_statements!(pool, |conn| async {
        Ok(sqlx::query("delete from orders where id = $1")
            .bind(id)
            .execute(conn)
            .await?)
    })?;
    if done.rows_affected() == 0 {
        return Err(OrderError::NotFound(id).into());
    }
    Ok(())
}

fn item_from_row(row: &sqlx::postgres::PgRow) -> Result<OrderItem, sqlx::Error> {
    Ok(OrderItem {
        id: row.try_get("id")?,
        product_id: row.try_get("product_id")?,
        quantity: row.try_get("quantity")?,
        unit_price: row.try_get("unit_price")?,
    })
}

fn decode_status(text: &str) -> Result<OrderStatus, sqlx::Error> {
    OrderStatus::parse(text).map_err(|_| decode_error(format!("unknown order status {text:?}")))
}

fn decode_error(message: String) -> sqlx::Error {
    sqlx::Error::Decode(message.into())
}
