//! The applier's side of asynchronous OLAP commits ([`crate::flush`]): batches committed
//! but not yet known to be on OLAP's disk wait in a [`FlushMap`]; the reader hears of them
//! ([`Applied`]) once OLAP's WAL flush has passed them.

use std::time::Duration;

use sqlx::{Executor, PgConnection};
use tokio::sync::watch;

use super::read::Applied;
use crate::flush::{flush_lsn, CommitAt, FlushMap, OlapCommit};
use crate::lsn::Lsn;
use crate::sink::olap::ApplyError;

/// How often OLAP's flush position is read while batches wait for it and none commits (the
/// WAL writer flushes every `wal_writer_delay`, 200 ms by default).
pub const POLL: Duration = Duration::from_millis(100);

/// What the reader is told is durable.
pub struct Durable {
    mode: OlapCommit,
    map: FlushMap,
    applied: watch::Sender<Applied>,
}

impl Durable {
    pub fn new(mode: OlapCommit, applied: watch::Sender<Applied>) -> Self {
        Self {
            mode,
            map: FlushMap::default(),
            applied,
        }
    }

    /// Batches wait for OLAP's flush.
    pub fn waiting(&self) -> bool {
        !self.map.is_empty()
    }

    /// The batch ending at `source` committed; `at`: where its commit ended when it did not
    /// wait for the disk (None: durable already).
    pub fn committed(&mut self, at: Option<CommitAt>, source: Lsn) {
        match (self.mode, at) {
            (OlapCommit::Asynchronous, Some(at)) => {
                self.map.committed(source, at.end);
                let released = self.map.flushed(at.flushed);
                self.release(released);
            }
            // A synchronous commit is durable once it returns.
            _ => self.release(Some((source, 1))),
        }
    }

    /// Reads OLAP's flush position (on `conn`, the primary's) and releases what it passed.
    pub async fn poll(&mut self, conn: &mut PgConnection) -> Result<(), ApplyError> {
        let flush = flush_lsn(conn).await?;
        let released = self.map.flushed(flush);
        self.release(released);
        Ok(())
    }

    /// At the end, no transaction open on `conn`: makes every commit durable (a synchronous
    /// commit of its own flushes the WAL before it) and releases them all. On error nothing
    /// more is released: those batches are streamed again, and skipped by the checkpoint if
    /// they survived.
    pub async fn drain(&mut self, conn: &mut PgConnection) -> Result<(), ApplyError> {
        if self.map.is_empty() {
            return Ok(());
        }
        // A string without parameters is sent as one simple query, several statements in it.
        conn.execute(
            "begin; set local synchronous_commit = on; select pg_current_xact_id(); commit",
        )
        .await?;
        let released = self.map.all();
        self.release(released);
        Ok(())
    }

    fn release(&self, released: Option<(Lsn, u64)>) {
        if let Some((lsn, batches)) = released {
            self.applied.send_modify(|a| {
                a.lsn = a.lsn.max(lsn);
                a.batches += batches;
            });
        }
    }
}
