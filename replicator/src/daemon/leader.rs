//! One streaming replicator per slot: a session advisory lock in OLAP, held on its own
//! connection for as long as this process streams. A second `brewlytics replicate` for the
//! same slot waits as a standby and takes over when the lock is released — at once when the
//! holder exits, and as soon as the server notices the connection gone when it is killed.
//!
//! The lock keeps standbys quiet; correctness does not rest on it. The source lets only one
//! walsender use a slot, and the checkpoint in OLAP never moves backward, so even two
//! processes that both believed they led could not apply a change twice.

use std::time::Duration;

use sqlx::{Connection, PgConnection};

use brewlytics_support::DbUrl;

pub struct LeaderLock {
    conn: PgConnection,
}

/// Takes the slot's lock if free: `Ok(None)` when another process holds it.
pub async fn try_acquire(olap: &DbUrl, slot: &str) -> Result<Option<LeaderLock>, sqlx::Error> {
    let opts = olap
        .connect_options()?
        .application_name("brewlytics-replicator-lock");
    let mut conn = tokio::time::timeout(Duration::from_secs(5), PgConnection::connect_with(&opts))
        .await
        .map_err(|_| sqlx::Error::PoolTimedOut)??;
    // TCP keepalives from the server side would take minutes; a killed holder's socket is
    // closed by its kernel, which the server sees at once.
    let got: bool = sqlx::query_scalar(
        "select pg_try_advisory_lock(hashtext('brewlytics replicator'), hashtext($1))",
    )
    .bind(slot)
    .fetch_one(&mut conn)
    .await?;
    if got {
        Ok(Some(LeaderLock { conn }))
    } else {
        let _ = conn.close().await;
        Ok(None)
    }
}

impl LeaderLock {
    /// Whether the lock is still ours (its connection is alive).
    pub async fn still_held(&mut self) -> bool {
        matches!(
            tokio::time::timeout(Duration::from_secs(5), self.conn.ping()).await,
            Ok(Ok(()))
        )
    }

    pub async fn release(self) {
        let _ = self.conn.close().await;
    }
}
