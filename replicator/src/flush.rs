//! When a batch's OLAP commit may be reported to the source.
//!
//! With `--olap-commit async` (the default) the batch's transaction commits with
//! `synchronous_commit = off`, as PostgreSQL's own apply worker does: the commit returns once
//! its WAL record is written to OLAP's buffers, without waiting for the disk. The batch is
//! visible at once, but a crash of the OLAP server can still lose it. So its source position
//! is reported to the source (the slot's flush LSN, after which the source may recycle that
//! WAL) only once OLAP's WAL flush position has passed the commit: [`FlushMap`] keeps each
//! batch's source end LSN beside the end of its OLAP commit record and releases, in order,
//! those the flush has passed. After a crash, OLAP's checkpoint table (committed in the same
//! transaction as the batch) says where to resume, and the slot was never confirmed past it.
//!
//! `--olap-commit sync` waits for the flush at every commit (one disk flush per batch).

use std::collections::VecDeque;

use sqlx::{Executor, PgConnection, Row};

use crate::lsn::Lsn;

/// How a batch's OLAP transaction commits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum OlapCommit {
    /// `synchronous_commit = off`; the source hears of a batch once OLAP flushed it.
    #[default]
    Asynchronous,
    /// Every commit waits for OLAP's WAL flush.
    Synchronous,
}

impl std::str::FromStr for OlapCommit {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "async" | "off" => Ok(Self::Asynchronous),
            "sync" | "on" => Ok(Self::Synchronous),
            other => Err(format!("unknown --olap-commit {other:?} (async or sync)")),
        }
    }
}

impl OlapCommit {
    /// The transaction's `synchronous_commit`.
    pub fn setting(self) -> &'static str {
        match self {
            Self::Asynchronous => "off",
            Self::Synchronous => "on",
        }
    }
}

/// Committed batches not yet known to be on OLAP's disk, oldest first: (source end LSN, end
/// of the OLAP commit record — or a position at or after it).
#[derive(Debug, Default)]
pub struct FlushMap {
    pending: VecDeque<(Lsn, Lsn)>,
}

impl FlushMap {
    /// A batch committed: `source` once `olap` is flushed.
    pub fn committed(&mut self, source: Lsn, olap: Lsn) {
        self.pending.push_back((source, olap));
    }

    /// OLAP flushed its WAL up to `flush`: the newest source position now durable and how
    /// many batches that releases (None: none).
    pub fn flushed(&mut self, flush: Lsn) -> Option<(Lsn, u64)> {
        let mut released = None;
        let mut n = 0;
        while let Some(&(source, olap)) = self.pending.front() {
            if olap > flush {
                break;
            }
            self.pending.pop_front();
            n += 1;
            released = Some(source);
        }
        released.map(|s| (s, n))
    }

    /// Every batch, as after a flush that passed them all.
    pub fn all(&mut self) -> Option<(Lsn, u64)> {
        let n = self.pending.len() as u64;
        let last = self.pending.back().map(|&(s, _)| (s, n));
        self.pending.clear();
        last
    }

    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }
}

/// Where an asynchronous commit ended, read in the commit's round trip.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CommitAt {
    /// OLAP's WAL insert position right after the commit: at or after its record's end.
    pub end: Lsn,
    /// OLAP's WAL flush position at that moment.
    pub flushed: Lsn,
}

/// `commit`, then where it ended, in one round trip.
pub async fn commit_reading_position(conn: &mut PgConnection) -> Result<CommitAt, sqlx::Error> {
    let row = conn
        .fetch_one(
            "commit; select pg_current_wal_insert_lsn()::text, pg_current_wal_flush_lsn()::text",
        )
        .await?;
    Ok(CommitAt {
        end: lsn_column(&row, 0)?,
        flushed: lsn_column(&row, 1)?,
    })
}

/// OLAP's WAL flush position.
pub async fn flush_lsn(conn: &mut PgConnection) -> Result<Lsn, sqlx::Error> {
    let row = conn
        .fetch_one("select pg_current_wal_flush_lsn()::text")
        .await?;
    lsn_column(&row, 0)
}

/// Waits until every commit so far is on OLAP's disk: a synchronous commit of its own
/// flushes the WAL up to it. No transaction may be open on `conn`.
pub async fn flush_all(conn: &mut PgConnection) -> Result<(), sqlx::Error> {
    // A string without parameters is sent as one simple query, several statements in it.
    conn.execute("begin; set local synchronous_commit = on; select pg_current_xact_id(); commit")
        .await?;
    Ok(())
}

fn lsn_column(row: &sqlx::postgres::PgRow, i: usize) -> Result<Lsn, sqlx::Error> {
    let text: String = row.try_get(i)?;
    text.parse()
        .map_err(|_| sqlx::Error::Decode(format!("not an LSN: {text}").into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn l(n: u64) -> Lsn {
        Lsn(n)
    }

    #[test]
    fn releases_in_order_only_what_the_flush_passed() {
        let mut m = FlushMap::default();
        m.committed(l(100), l(1000));
        m.committed(l(200), l(2000));
        m.committed(l(300), l(3000));
        assert_eq!(m.flushed(l(999)), None);
        assert_eq!(m.flushed(l(1000)), Some((l(100), 1)));
        assert_eq!(m.flushed(l(2999)), Some((l(200), 1)));
        assert!(!m.is_empty());
        assert_eq!(m.flushed(l(5000)), Some((l(300), 1)));
        assert!(m.is_empty());
        assert_eq!(m.flushed(l(9000)), None);
    }

    #[test]
    fn a_flush_past_several_batches_releases_the_newest() {
        let mut m = FlushMap::default();
        for i in 1..=4 {
            m.committed(l(i * 10), l(i * 100));
        }
        assert_eq!(m.flushed(l(350)), Some((l(30), 3)));
        assert_eq!(m.all(), Some((l(40), 1)));
        assert_eq!(m.all(), None);
    }

    #[test]
    fn a_later_batch_is_never_released_before_an_earlier_one() {
        // Commit positions are read after each commit and only grow; a flush between two
        // of them releases the first alone.
        let mut m = FlushMap::default();
        m.committed(l(10), l(500));
        m.committed(l(20), l(600));
        assert_eq!(m.flushed(l(550)), Some((l(10), 1)));
        assert_eq!(m.flushed(l(550)), None);
    }

    #[test]
    fn the_setting_parses() {
        assert_eq!("async".parse(), Ok(OlapCommit::Asynchronous));
        assert_eq!("sync".parse(), Ok(OlapCommit::Synchronous));
        assert!("maybe".parse::<OlapCommit>().is_err());
        assert_eq!(OlapCommit::default(), OlapCommit::Asynchronous);
        assert_eq!(OlapCommit::Synchronous.setting(), "on");
    }
}
