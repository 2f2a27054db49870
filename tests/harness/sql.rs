//! SQL the drills run against either database, and rows read back to compare.

use sqlx::PgConnection;

/// Runs `sql` (several statements allowed); panics with the statement on an error.
pub async fn exec(c: &mut PgConnection, sql: &str) {
    sqlx::raw_sql(sql)
        .execute(c)
        .await
        .unwrap_or_else(|e| panic!("{e}: {sql}"));
}

/// The rows of `sql` as sorted text.
pub async fn rows(c: &mut PgConnection, sql: &str) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar(&format!("select (q.*)::text from ({sql}) q order by 1"))
        .fetch_all(c)
        .await
}
