//! The applier's side of commits that return before they are durable (the primary's
//! asynchronous commits, [`crate::flush`]): such batches wait in a [`FlushMap`]; the reader
//! hears of them ([`Applied`]) once the primary's durable position has passed them. The
//! primary says where its commits end and how far it is durable
//! ([`crate::sink::PrimarySink::last_commit`], `durable_upto`); this module only keeps the
//! order.

use std::time::Duration;

use tokio::sync::watch;

use super::read::Applied;
use crate::flush::{CommitAt, FlushMap};
use crate::lsn::Lsn;

/// How often the primary's durable position is read while batches wait for it and none
/// commits (OLAP's WAL writer flushes every `wal_writer_delay`, 200 ms by default).
pub const POLL: Duration = Duration::from_millis(100);

/// What the reader is told is durable.
pub struct Durable {
    map: FlushMap,
    applied: watch::Sender<Applied>,
}

impl Durable {
    pub fn new(applied: watch::Sender<Applied>) -> Self {
        Self {
            map: FlushMap::default(),
            applied,
        }
    }

    /// Batches wait for the primary's flush.
    pub fn waiting(&self) -> bool {
        !self.map.is_empty()
    }

    /// The batch ending at `source` committed; `at`: where its commit ended when it did not
    /// wait for the disk (None: durable on return — and so is every commit before it).
    pub fn committed(&mut self, at: Option<CommitAt>, source: Lsn) {
        match at {
            Some(at) => {
                self.map.committed(source, at.end);
                let released = self.map.flushed(at.flushed);
                self.release(released);
            }
            None => {
                let earlier = self.map.all().map_or(0, |(_, n)| n);
                self.release(Some((source, earlier + 1)));
            }
        }
    }

    /// The primary is durable up to `flushed`: the batches that passed are released.
    pub fn flushed(&mut self, flushed: Lsn) {
        let released = self.map.flushed(flushed);
        self.release(released);
    }

    /// Every commit so far is durable (the primary made it so at a clean stop).
    pub fn all_durable(&mut self) {
        let released = self.map.all();
        self.release(released);
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

#[cfg(test)]
mod tests {
    use super::*;

    fn at(end: u64, flushed: u64) -> Option<CommitAt> {
        Some(CommitAt {
            end: Lsn(end),
            flushed: Lsn(flushed),
        })
    }

    #[test]
    fn the_reader_hears_of_a_batch_only_once_it_is_durable() {
        let (tx, rx) = watch::channel(Applied {
            lsn: Lsn(0),
            batches: 0,
        });
        let mut d = Durable::new(tx);
        d.committed(at(1000, 500), Lsn(10));
        d.committed(at(2000, 900), Lsn(20));
        assert_eq!(rx.borrow().lsn, Lsn(0), "neither commit is flushed yet");
        assert!(d.waiting());
        d.flushed(Lsn(1500));
        assert_eq!((rx.borrow().lsn, rx.borrow().batches), (Lsn(10), 1));
        // A commit durable on return flushed everything before it too.
        d.committed(None, Lsn(30));
        assert_eq!((rx.borrow().lsn, rx.borrow().batches), (Lsn(30), 3));
        assert!(!d.waiting());
        d.committed(at(4000, 3000), Lsn(40));
        d.all_durable();
        assert_eq!((rx.borrow().lsn, rx.borrow().batches), (Lsn(40), 4));
    }
}
