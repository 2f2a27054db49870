//! SQL against the OLTP database. Every write runs in one transaction; the rules it applies
//! come from `domain/`. Runtime-checked queries only (no `query!`): there is no database at
//! build time.
//!
//! The source schema may change under a running API (a column widened, dropped, renamed).
//! sqlx keeps each connection's prepared statements, and PostgreSQL refuses to run one whose
//! result columns changed type ("cached plan must not change result type"), so every request
//! runs through [`with_statements`]: on that refusal the connection's statements are dropped
//! and the request runs once more, freshly prepared. Columns are read as the types the API
//! serves (`quantity::int4`), so a widened column keeps its JSON shape; a column the API
//! needs that is gone is reported by [`schema_drift`] (a 503 naming it, not a bare 500).

pub mod catalog;
pub mod events;
pub mod orders;

use crate::domain::catalog::CatalogError;
use crate::domain::order::OrderError;

/// A failed read or write: a broken rule (the client's fault) or a database failure.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error(transparent)]
    Order(#[from] OrderError),
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
}

/// The constraint a unique (23505) or foreign-key (23503) violation names, if `err` is one.
pub(crate) fn violated_constraint<'e>(err: &'e sqlx::Error, code: &str) -> Option<&'e str> {
    let db = err.as_database_error()?;
    if db.code().as_deref() == Some(code) {
        db.constraint()
    } else {
        None
    }
}

pub(crate) const UNIQUE_VIOLATION: &str = "23505";
pub(crate) const FOREIGN_KEY_VIOLATION: &str = "23503";

/// PostgreSQL's refusal to run a prepared statement whose result columns changed type.
const STALE_PLAN_CODE: &str = "0A000";
const STALE_PLAN_MESSAGE: &str = "cached plan must not change result type";

/// Whether `err` is PostgreSQL refusing a prepared statement that a schema change made stale.
pub fn is_stale_statement(err: &sqlx::Error) -> bool {
    err.as_database_error().is_some_and(|db| {
        db.code().as_deref() == Some(STALE_PLAN_CODE) && db.message().contains(STALE_PLAN_MESSAGE)
    })
}

/// Runs `$body` — an async block of type `Result<T, DataError>` that uses `$conn`, a
/// `&mut PgConnection` from `$pool` — and gives its result. When PostgreSQL refuses one of
/// the connection's cached statements because the schema changed under it, the connection's
/// statement cache is cleared (closing them on the server) and `$body` runs once more on
/// fresh statements. `$body` must be safe to run again after a failed first run: a
/// transaction it began was rolled back. (A macro rather than a function taking an async
/// closure: the closure's borrowed future cannot yet be shown to be `Send`.)
macro_rules! with_statements {
    ($pool:expr, |$conn:ident| $body:expr) => {{
        match $pool.acquire().await {
            Err(e) => Err($crate::data::DataError::from(e)),
            Ok(mut pooled) => {
                let first: Result<_, $crate::data::DataError> = {
                    let $conn: &mut sqlx::PgConnection = &mut pooled;
                    $body.await
                };
                match first {
                    Err($crate::data::DataError::Database(e))
                        if $crate::data::is_stale_statement(&e) =>
                    {
                        tracing::warn!(
                            "a prepared statement went stale after a schema change; \
                             preparing it again"
                        );
                        match sqlx::Connection::clear_cached_statements(&mut *pooled).await {
                            Err(e) => Err($crate::data::DataError::from(e)),
                            Ok(()) => {
                                let $conn: &mut sqlx::PgConnection = &mut pooled;
                                $body.await
                            }
                        }
                    }
                    other => other,
                }
            }
        }
    }};
}
pub(crate) use with_statements;

/// What the API cannot work without, when a schema change took it away: a column, a table, or
/// a column whose type it cannot read any more. `None` for any other error.
pub fn schema_drift(err: &sqlx::Error) -> Option<String> {
    if let sqlx::Error::ColumnDecode { index, .. } = err {
        return Some(format!(
            "the API cannot read column {index}: its type changed in the database"
        ));
    }
    let db = err.as_database_error()?;
    let names = quoted_names(db.message());
    match db.code().as_deref()? {
        UNDEFINED_COLUMN => Some(match names.as_slice() {
            [column, table, ..] => format!(
                "the API needs column {table}.{column}, which the database does not have \
                 (the schema changed under the API)"
            ),
            [column] => format!(
                "the API needs column {column}, which the database does not have \
                 (the schema changed under the API)"
            ),
            [] => "the API needs a column the database does not have \
                   (the schema changed under the API)"
                .to_owned(),
        }),
        UNDEFINED_TABLE => Some(format!(
            "the API needs table {}, which the database does not have \
             (the schema changed under the API)",
            names.first().map(String::as_str).unwrap_or("?")
        )),
        _ => None,
    }
}

/// The identifiers PostgreSQL quotes in a message (`column "x" of relation "t" ...`), made
/// plain: only identifier characters are kept, so nothing else from the message travels on.
fn quoted_names(message: &str) -> Vec<String> {
    message
        .split('"')
        .skip(1)
        .step_by(2)
        .map(|name| {
            name.chars()
                .filter(|c| c.is_alphanumeric() || *c == '_' || *c == '.')
                .collect::<String>()
        })
        .filter(|name| !name.is_empty())
        .collect()
}

const UNDEFINED_COLUMN: &str = "42703";
const UNDEFINED_TABLE: &str = "42P01";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoted_names_keep_identifiers_only() {
        assert_eq!(
            quoted_names(r#"column "email" of relation "customers" does not exist"#),
            ["email", "customers"]
        );
        assert_eq!(quoted_names(r#"column "a b;--" does not exist"#), ["ab"]);
        assert!(quoted_names("no quotes").is_empty());
    }
}
