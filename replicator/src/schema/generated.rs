//! The replica's stored generated columns: PostgreSQL 15 does not send them, so the replica
//! computes them itself — a generated column in OLAP with the source's expression — through
//! the copy, the stream and replay alike, since every row written gets it computed.
//!
//! The replica is brought to the table's generated columns ([`crate::published::Published`])
//! around every change of its shape: those gone or with another expression or type are
//! dropped first ([`drop_stale`]), the others added last ([`add_missing`]) — adding one
//! computes it for every row. An expression OLAP refuses leaves the column out, logged here
//! and reported by `status`, with the column's name and why.

use sqlx::PgConnection;

use crate::published::Generated;
use crate::table::{ident, SourceTable};

/// The replica's generated columns as OLAP has them: (name, type, expression).
async fn present(
    conn: &mut PgConnection,
    t: &SourceTable,
) -> Result<Vec<(String, String, String)>, sqlx::Error> {
    sqlx::query_as(
        "select a.attname::text, format_type(a.atttypid, a.atttypmod), pg_get_expr(d.adbin, d.adrelid)
         from pg_attribute a join pg_attrdef d on d.adrelid = a.attrelid and d.adnum = a.attnum
         where a.attrelid = to_regclass($1) and a.attnum > 0 and not a.attisdropped
           and a.attgenerated <> ''",
    )
    .bind(t.replica_ident())
    .fetch_all(&mut *conn)
    .await
}

fn same(g: &Generated, have: &(String, String, String)) -> bool {
    g.name == have.0 && g.olap_type == have.1 && g.expression == have.2
}

/// Drops the replica's generated columns that `t` does not compute as they are.
pub async fn drop_stale(conn: &mut PgConnection, t: &SourceTable) -> Result<(), sqlx::Error> {
    for have in present(conn, t).await? {
        if !t.published.generated_carried().any(|g| same(g, &have)) {
            let sql = format!(
                "alter table {} drop column {}",
                t.replica_ident(),
                ident(&have.0)
            );
            sqlx::query(&sql).execute(&mut *conn).await?;
        }
    }
    Ok(())
}

/// Adds the generated columns of `t` the replica lacks. One OLAP refuses (a function it does
/// not have, say) is left out and logged; the rest of the change goes on.
pub async fn add_missing(conn: &mut PgConnection, t: &SourceTable) -> Result<(), sqlx::Error> {
    let have = present(conn, t).await?;
    for g in t.published.generated_carried() {
        if have.iter().any(|h| same(g, h)) {
            continue;
        }
        let sql = format!(
            "alter table {} add column {} {} generated always as ({}) stored",
            t.replica_ident(),
            ident(&g.name),
            g.olap_type,
            g.expression
        );
        sqlx::query("savepoint generated")
            .execute(&mut *conn)
            .await?;
        match sqlx::query(&sql).execute(&mut *conn).await {
            Ok(_) => {
                sqlx::query("release savepoint generated")
                    .execute(&mut *conn)
                    .await?;
            }
            Err(e) if crate::redact::classify(&e) == crate::redact::Class::Transient => {
                return Err(e)
            }
            Err(e) => {
                sqlx::query("rollback to savepoint generated")
                    .execute(&mut *conn)
                    .await?;
                tracing::warn!(table = %t.qualified_source(), column = %g.name,
                    error = %crate::redact::db_error(&e),
                    "OLAP refuses the expression of a generated column: the replica goes without it");
            }
        }
    }
    Ok(())
}

/// The generated columns of `t` its replica does not have, each with why (for `status`):
/// what the source's expression uses, or that OLAP refused it.
pub async fn missing(
    conn: &mut PgConnection,
    t: &SourceTable,
) -> Result<Vec<(String, String)>, sqlx::Error> {
    let have = present(conn, t).await?;
    Ok(t.published
        .generated
        .iter()
        .filter(|g| !have.iter().any(|h| same(g, h)))
        .map(|g| {
            let why = g
                .not_carried
                .clone()
                .unwrap_or_else(|| "OLAP refuses its expression (see the replicator's log)".into());
            (g.name.clone(), why)
        })
        .collect())
}
