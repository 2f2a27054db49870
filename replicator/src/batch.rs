//! Grouping source transactions into batches (pure; no I/O).
//!
//! Whole transactions are batched, bounded by changes, bytes and time. A transaction larger
//! than the bound is handed out in chunks before its commit: the caller applies them inside
//! one open OLAP transaction, so memory stays bounded whatever the source transaction's size.

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

use crate::change::{Change, TxContext};
use crate::lsn::Lsn;

#[derive(Clone, Copy, Debug)]
pub struct BatchLimits {
    pub max_changes: usize,
    pub max_bytes: usize,
    /// How long committed transactions may wait for more to join them.
    pub max_delay: Duration,
}

impl Default for BatchLimits {
    fn default() -> Self {
        Self {
            max_changes: 10_000,
            max_bytes: 16 << 20,
            max_delay: Duration::from_millis(20),
        }
    }
}

/// How many times the batch delay a batch may wait while more data keeps arriving.
pub const CATCH_UP_FACTOR: u32 = 25;

/// The source transaction being received.
#[derive(Clone, Copy, Debug)]
struct OpenTx {
    ctx: TxContext,
    seq: i32,
    /// Already applied before (commit LSN below the checkpoint): its changes are dropped.
    skip: bool,
}

/// The last commit the batch contains: what the checkpoint becomes once it is applied.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CommitMark {
    pub end_lsn: Lsn,
    pub commit_ts: Option<DateTime<Utc>>,
}

#[derive(Debug)]
pub struct Batcher {
    limits: BatchLimits,
    events: Vec<Change>,
    bytes: usize,
    open: Option<OpenTx>,
    /// Set once a commit is in the batch (or in chunks already handed out).
    last_commit: Option<CommitMark>,
    transactions: u64,
    first_commit_at: Option<Instant>,
    /// Whether chunks of this batch were handed out (an OLAP transaction is open).
    chunked: bool,
}

impl Batcher {
    pub fn new(limits: BatchLimits) -> Self {
        Self {
            limits,
            events: Vec::new(),
            bytes: 0,
            open: None,
            last_commit: None,
            transactions: 0,
            first_commit_at: None,
            chunked: false,
        }
    }

    /// A transaction begins. `applied_to` is the checkpoint: transactions committed before
    /// it were applied already and are skipped.
    pub fn begin(&mut self, ctx: TxContext, applied_to: Lsn) {
        self.open = Some(OpenTx {
            ctx,
            seq: 0,
            skip: ctx.lsn < applied_to,
        });
    }

    /// The context and next `seq` for a change of the open transaction, or `None` when the
    /// transaction is being skipped (or none is open).
    pub fn next_change(&mut self) -> Option<(TxContext, i32)> {
        let open = self.open.as_mut()?;
        if open.skip {
            return None;
        }
        open.seq += 1;
        Some((open.ctx, open.seq))
    }

    /// Whether the open transaction is being applied (not skipped), without using a `seq`.
    pub fn next_change_would_apply(&self) -> bool {
        self.open.is_some_and(|o| !o.skip)
    }

    pub fn push(&mut self, event: Change) {
        self.bytes += event.weight();
        self.events.push(event);
    }

    /// The open transaction commits. Returns whether it was skipped.
    pub fn commit(&mut self, end_lsn: Lsn, commit_ts: Option<DateTime<Utc>>, now: Instant) -> bool {
        let skipped = self.open.take().map(|o| o.skip).unwrap_or(true);
        if !skipped {
            self.last_commit = Some(CommitMark { end_lsn, commit_ts });
            self.transactions += 1;
            self.first_commit_at.get_or_insert(now);
        }
        skipped
    }

    pub fn in_transaction(&self) -> bool {
        self.open.is_some()
    }

    /// Nothing received that is not yet durable in OLAP.
    pub fn is_idle(&self) -> bool {
        self.open.is_none() && self.events.is_empty() && self.last_commit.is_none() && !self.chunked
    }

    /// Events are over the bound: hand them out now (inside a transaction, or a batch of
    /// many). The caller applies them into its open OLAP transaction.
    pub fn take_chunk_if_full(&mut self) -> Option<Vec<Change>> {
        if self.events.len() >= self.limits.max_changes || self.bytes >= self.limits.max_bytes {
            self.chunked = true;
            self.bytes = 0;
            Some(std::mem::take(&mut self.events))
        } else {
            None
        }
    }

    /// When the batch should be committed if nothing else arrives.
    pub fn deadline(&self) -> Option<Instant> {
        if self.open.is_some() {
            return None;
        }
        self.first_commit_at.map(|t| t + self.limits.max_delay)
    }

    /// Between transactions, with committed work that is full, or due: past the delay
    /// while the stream has nothing more ready (`stream_idle`), or past
    /// [`CATCH_UP_FACTOR`] times the delay whatever the stream does. While catching up a
    /// backlog the stream is never idle, so batches grow towards the change bound instead of
    /// being cut every few milliseconds.
    pub fn should_commit(&self, now: Instant, stream_idle: bool) -> bool {
        if self.open.is_some() || self.last_commit.is_none() {
            return false;
        }
        if self.events.len() >= self.limits.max_changes || self.bytes >= self.limits.max_bytes {
            return true;
        }
        match self.first_commit_at {
            Some(t) => {
                let waited = now.saturating_duration_since(t);
                (stream_idle && waited >= self.limits.max_delay)
                    || waited >= self.limits.max_delay * CATCH_UP_FACTOR
            }
            None => false,
        }
    }

    /// Takes the batch: its remaining events, the commit it ends with, and how many source
    /// transactions it holds. Only between transactions.
    pub fn take_batch(&mut self) -> Option<(Vec<Change>, CommitMark, u64)> {
        if self.open.is_some() {
            return None;
        }
        let mark = self.last_commit.take()?;
        let tx = std::mem::take(&mut self.transactions);
        self.bytes = 0;
        self.first_commit_at = None;
        self.chunked = false;
        Some((std::mem::take(&mut self.events), mark, tx))
    }

    /// Forgets everything not yet durable (the connection was lost).
    pub fn reset(&mut self) {
        *self = Self::new(self.limits);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::change::{Body, Op, RowChange};
    use crate::table::fixtures;
    use std::sync::Arc;

    fn ev(ctx: TxContext, seq: i32) -> Change {
        Change::new(
            ctx,
            seq,
            Body::Row(RowChange {
                table: Arc::new(fixtures::products()),
                op: Op::Insert,
                old: None,
                new: None,
            }),
        )
    }

    fn ctx(lsn: u64) -> TxContext {
        TxContext {
            lsn: Lsn(lsn),
            xid: 1,
            commit_ts: 0,
        }
    }

    fn limits(max_changes: usize) -> BatchLimits {
        BatchLimits {
            max_changes,
            max_bytes: usize::MAX,
            max_delay: Duration::from_millis(10),
        }
    }

    #[test]
    fn transactions_below_checkpoint_are_skipped() {
        let mut b = Batcher::new(limits(100));
        b.begin(ctx(50), Lsn(100));
        assert!(b.next_change().is_none());
        assert!(b.commit(Lsn(60), None, Instant::now()));
        assert!(b.is_idle());
        b.begin(ctx(150), Lsn(100));
        let (c, seq) = b.next_change().unwrap();
        assert_eq!((c.lsn, seq), (Lsn(150), 1));
        assert_eq!(b.next_change().unwrap().1, 2);
    }

    #[test]
    fn batch_commits_after_delay_and_carries_last_commit() {
        let mut b = Batcher::new(limits(100));
        let t0 = Instant::now();
        for (i, lsn) in [10u64, 20].iter().enumerate() {
            b.begin(ctx(*lsn), Lsn(0));
            let (c, s) = b.next_change().unwrap();
            b.push(ev(c, s));
            b.commit(Lsn(lsn + 1), None, t0 + Duration::from_millis(i as u64));
        }
        assert!(!b.should_commit(t0, true));
        assert!(b.should_commit(t0 + Duration::from_millis(11), true));
        // more data ready: wait, up to the catch-up bound
        assert!(!b.should_commit(t0 + Duration::from_millis(11), false));
        assert!(b.should_commit(t0 + Duration::from_millis(250), false));
        let (events, mark, txs) = b.take_batch().unwrap();
        assert_eq!(events.len(), 2);
        assert_eq!(mark.end_lsn, Lsn(21));
        assert_eq!(txs, 2);
        assert!(b.is_idle());
    }

    #[test]
    fn large_transaction_is_chunked_and_not_committable_midway() {
        let mut b = Batcher::new(limits(3));
        b.begin(ctx(10), Lsn(0));
        let mut chunks = 0;
        for _ in 0..10 {
            let (c, s) = b.next_change().unwrap();
            b.push(ev(c, s));
            if let Some(chunk) = b.take_chunk_if_full() {
                assert_eq!(chunk.len(), 3);
                chunks += 1;
            }
            assert!(!b.should_commit(Instant::now() + Duration::from_secs(1), true));
            assert!(b.take_batch().is_none());
        }
        assert_eq!(chunks, 3);
        assert!(!b.is_idle());
        b.commit(Lsn(11), None, Instant::now());
        let (rest, mark, _) = b.take_batch().unwrap();
        assert_eq!(rest.len(), 1);
        assert_eq!(rest[0].pos.seq, 10);
        assert_eq!(mark.end_lsn, Lsn(11));
    }
}
