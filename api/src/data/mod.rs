//! SQL against the OLTP database. Every write runs in one transaction; the rules it applies
//! come from `domain/`. Runtime-checked queries only (no `query!`): there is no database at
//! build time.

pub mod catalog;
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
