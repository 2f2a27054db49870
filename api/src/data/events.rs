//! Events on the embedded path: inserted into the published `click_events` table, one
//! statement per request, which the replicator carries to OLAP like any change.

use sqlx::PgPool;

use super::{with_statements, DataError};
use crate::domain::event::Event;

/// Inserts `events` in one statement (one transaction: all or none).
pub async fn insert_events(pool: &PgPool, events: &[Event]) -> Result<(), DataError> {
    let ids: Vec<_> = events.iter().map(|e| e.id).collect();
    let kinds: Vec<&str> = events.iter().map(|e| e.kind.as_str()).collect();
    let sessions: Vec<&str> = events.iter().map(|e| e.session_id.as_str()).collect();
    let customers: Vec<Option<i64>> = events.iter().map(|e| e.customer_id).collect();
    let products: Vec<i64> = events.iter().map(|e| e.product_id).collect();
    let occurred: Vec<_> = events.iter().map(|e| e.occurred_at).collect();
    let received: Vec<_> = events.iter().map(|e| e.received_at).collect();
    let contexts: Vec<&serde_json::Value> = events.iter().map(|e| &e.context).collect();
    let contexts = serde_json::Value::from(contexts.into_iter().cloned().collect::<Vec<_>>());
    with_statements!(pool, |conn| async {
        sqlx::query(
            "insert into click_events (id, kind, session_id, customer_id, product_id,
                                       occurred_at, received_at, context)
             select e.id, e.kind, e.session_id, e.customer_id, e.product_id, e.occurred_at,
                    e.received_at, c.context
             from unnest($1::uuid[], $2::text[], $3::text[], $4::int8[], $5::int8[],
                         $6::timestamptz[], $7::timestamptz[])
                  with ordinality as e(id, kind, session_id, customer_id, product_id,
                                       occurred_at, received_at, n)
             join jsonb_array_elements($8::jsonb) with ordinality as c(context, n) using (n)",
        )
        .bind(&ids)
        .bind(&kinds)
        .bind(&sessions)
        .bind(&customers)
        .bind(&products)
        .bind(&occurred)
        .bind(&received)
        .bind(&contexts)
        .execute(&mut *conn)
        .await?;
        Ok(())
    })
}
