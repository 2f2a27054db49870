//! Managing keys (`brewlytics api-key create|list|revoke`, and the key `brewlytics up`
//! makes): rows of `auth.api_keys`, written by a role that owns the table. The servers' roles
//! only read it (and write `last_used_at`).

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgPool;

use super::key::{KeyId, NewKey};
use super::scope::Scopes;

/// What `api-key list` shows of a key: never its secret or digest.
#[derive(Debug, Clone, Serialize)]
pub struct KeyInfo {
    pub id: String,
    pub name: String,
    pub scopes: Vec<String>,
    pub created_at: DateTime<Utc>,
    pub last_used_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
}

#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("a key named {0:?} exists (revoke it first, or choose another name)")]
    NameTaken(String),
    #[error("a key needs a name: 1 to 64 visible characters (got {0:?})")]
    BadName(String),
    #[error("a key needs at least one scope (--scope)")]
    NoScope,
    #[error("no key named or with the id {0:?} (`brewlytics api-key list` shows them)")]
    NotFound(String),
    #[error("{0:?} is already revoked")]
    AlreadyRevoked(String),
    #[error(
        "the API keys table is missing (auth.api_keys): run `brewlytics migrate` on the OLTP database"
    )]
    NoTable,
    #[error("{0}")]
    Database(#[source] sqlx::Error),
}

impl From<sqlx::Error> for AdminError {
    fn from(e: sqlx::Error) -> Self {
        match e.as_database_error().and_then(|d| d.code()).as_deref() {
            Some("42P01") | Some("3F000") => AdminError::NoTable,
            _ => AdminError::Database(e),
        }
    }
}

fn check_name(name: &str) -> Result<(), AdminError> {
    let ok = !name.is_empty()
        && name.chars().count() <= 64
        && name.chars().all(|c| !c.is_control())
        && name.trim() == name;
    ok.then_some(())
        .ok_or_else(|| AdminError::BadName(name.to_owned()))
}

/// Creates a key; the returned [`NewKey::text`] is the only time the key is seen.
pub async fn create(pool: &PgPool, name: &str, scopes: &Scopes) -> Result<NewKey, AdminError> {
    check_name(name)?;
    if scopes.is_empty() {
        return Err(AdminError::NoScope);
    }
    let key = NewKey::generate();
    let names = scopes.names();
    let inserted = sqlx::query(
        "insert into auth.api_keys (id, name, scopes, secret_hash) values ($1, $2, $3, $4)",
    )
    .bind(key.id.as_str())
    .bind(name)
    .bind(&names)
    .bind(key.digest.as_bytes())
    .execute(pool)
    .await;
    match inserted {
        Ok(_) => Ok(key),
        Err(e) if e.as_database_error().and_then(|d| d.code()).as_deref() == Some("23505") => {
            Err(AdminError::NameTaken(name.to_owned()))
        }
        Err(e) => Err(e.into()),
    }
}

/// Every key, newest first (revoked ones too, marked).
pub async fn list(pool: &PgPool) -> Result<Vec<KeyInfo>, AdminError> {
    let rows: Vec<KeyRow> = sqlx::query_as(
        "select id, name, scopes, created_at, last_used_at, revoked_at
         from auth.api_keys order by created_at desc, id",
    )
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().map(KeyInfo::from).collect())
}

type KeyRow = (
    String,
    String,
    Vec<String>,
    DateTime<Utc>,
    Option<DateTime<Utc>>,
    Option<DateTime<Utc>>,
);

impl From<KeyRow> for KeyInfo {
    fn from((id, name, scopes, created_at, last_used_at, revoked_at): KeyRow) -> Self {
        Self {
            id,
            name,
            scopes,
            created_at,
            last_used_at,
            revoked_at,
        }
    }
}

/// Revokes the key whose id or (active) name is `which`: servers refuse it at once.
pub async fn revoke(pool: &PgPool, which: &str) -> Result<KeyInfo, AdminError> {
    let by_id = KeyId::parse(which).map(|id| id.to_string());
    let row: Option<KeyRow> = sqlx::query_as(
        "update auth.api_keys set revoked_at = now()
         where id = (select id from auth.api_keys
                     where id = $1 or (name = $2 and revoked_at is null)
                     order by (id = $1) desc limit 1)
           and revoked_at is null
         returning id, name, scopes, created_at, last_used_at, revoked_at",
    )
    .bind(by_id.as_deref().unwrap_or(""))
    .bind(which)
    .fetch_optional(pool)
    .await?;
    if let Some(row) = row {
        return Ok(row.into());
    }
    let revoked: Option<String> =
        sqlx::query_scalar("select id from auth.api_keys where id = $1 or name = $2 limit 1")
            .bind(by_id.as_deref().unwrap_or(""))
            .bind(which)
            .fetch_optional(pool)
            .await?;
    Err(match revoked {
        Some(_) => AdminError::AlreadyRevoked(which.to_owned()),
        None => AdminError::NotFound(which.to_owned()),
    })
}

/// Whether the key with this id exists and is not revoked.
pub async fn is_active(pool: &PgPool, id: &KeyId) -> Result<bool, AdminError> {
    Ok(sqlx::query_scalar(
        "select exists (select from auth.api_keys where id = $1 and revoked_at is null)",
    )
    .bind(id.as_str())
    .fetch_one(pool)
    .await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_short_visible_text() {
        for good in ["till-1", "Manager's laptop", "prometheus"] {
            assert!(check_name(good).is_ok(), "{good}");
        }
        for bad in ["", " pad", "tab\there", &"x".repeat(65)] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
    }
}
