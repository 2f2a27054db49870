//! Lag in seconds, measured with heartbeats sent through the source (pure; no I/O).
//!
//! The monitor emits a transactional logical message (`pg_logical_emit_message`, prefix
//! [`PREFIX`]) on the source every interval. It travels the same path as an order: WAL →
//! slot → stream → batch → OLAP commit. When the batch holding it commits, the time since
//! it was emitted is the pipeline's lag, measured on this process's monotonic clock (no
//! clock skew between hosts). While heartbeats are emitted but not yet applied, the lag is
//! at least the age of the oldest of them, so it grows when OLAP stops even though no
//! orders flow.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// The logical message prefix of heartbeats.
pub const PREFIX: &str = "brewlytics_heartbeat";

/// Emitted heartbeats remembered while unapplied; beyond this, newer ones are not tracked
/// (the oldest still gives the lag).
const MAX_TRACKED: usize = 100_000;

#[derive(Debug)]
pub struct Heartbeats {
    /// Distinguishes this process's heartbeats from those of another replicator of the slot.
    instance: u64,
    next_seq: u64,
    /// Emitted and not yet applied, oldest first.
    pending: VecDeque<(u64, Instant)>,
    last_latency: Option<Duration>,
}

impl Heartbeats {
    pub fn new(instance: u64) -> Self {
        Self {
            instance,
            next_seq: 1,
            pending: VecDeque::new(),
            last_latency: None,
        }
    }

    /// The payload of the next heartbeat and its sequence number.
    pub fn prepare(&mut self) -> (u64, String) {
        let seq = self.next_seq;
        self.next_seq += 1;
        (seq, format!("{:x}:{seq}", self.instance))
    }

    /// The heartbeat `seq`, prepared at `at`, was committed on the source.
    pub fn emitted(&mut self, seq: u64, at: Instant) {
        if self.pending.len() < MAX_TRACKED {
            self.pending.push_back((seq, at));
        }
    }

    /// The sequence number of a heartbeat payload of this process, if it is one.
    pub fn parse(&self, content: &[u8]) -> Option<u64> {
        let text = std::str::from_utf8(content).ok()?;
        let (instance, seq) = text.split_once(':')?;
        if u64::from_str_radix(instance, 16).ok()? != self.instance {
            return None;
        }
        seq.parse().ok()
    }

    /// Heartbeats up to `seq` are durable in OLAP as of `now`.
    pub fn applied(&mut self, seq: u64, now: Instant) {
        let mut newest = None;
        while let Some(&(s, at)) = self.pending.front() {
            if s > seq {
                break;
            }
            newest = Some(at);
            self.pending.pop_front();
        }
        if let Some(at) = newest {
            self.last_latency = Some(now.saturating_duration_since(at));
        }
    }

    /// Forgets emitted heartbeats and the last latency: this process stands by, and another
    /// one applies (and ignores) what it emitted, so they would otherwise wait for ever.
    pub fn forget(&mut self) {
        self.pending.clear();
        self.last_latency = None;
    }

    /// The lag as of `now`: the latency of the last applied heartbeat, or the age of the
    /// oldest unapplied one when that is larger. `None` before any heartbeat was applied
    /// or emitted.
    pub fn lag(&self, now: Instant) -> Option<Duration> {
        let waiting = self
            .pending
            .front()
            .map(|&(_, at)| now.saturating_duration_since(at));
        match (self.last_latency, waiting) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn payloads_round_trip_and_foreign_ones_are_ignored() {
        let mut h = Heartbeats::new(0xabc);
        let (seq, payload) = h.prepare();
        assert_eq!(h.parse(payload.as_bytes()), Some(seq));
        let other = Heartbeats::new(0xdef);
        assert_eq!(other.parse(payload.as_bytes()), None);
        assert_eq!(h.parse(b"garbage"), None);
        assert_eq!(h.parse(b"abc:x"), None);
        assert_eq!(h.parse(&[0xff, 0xfe]), None);
    }

    #[test]
    fn lag_is_latency_when_caught_up_and_age_when_stuck() {
        let t0 = Instant::now();
        let mut h = Heartbeats::new(1);
        assert_eq!(h.lag(t0), None);
        let (s1, _) = h.prepare();
        h.emitted(s1, t0);
        assert_eq!(h.lag(t0 + ms(10)), Some(ms(10)));
        h.applied(s1, t0 + ms(30));
        assert_eq!(h.lag(t0 + ms(500)), Some(ms(30)));
        // OLAP stops: heartbeats pile up and the lag grows with the oldest
        let (s2, _) = h.prepare();
        h.emitted(s2, t0 + ms(1000));
        let (s3, _) = h.prepare();
        h.emitted(s3, t0 + ms(2000));
        assert_eq!(h.lag(t0 + ms(5000)), Some(ms(4000)));
        // catching up applies both at once; the newest gives the latency
        h.applied(s3, t0 + ms(5100));
        assert_eq!(h.lag(t0 + ms(6000)), Some(ms(3100)));
        let (s4, _) = h.prepare();
        h.emitted(s4, t0 + ms(6000));
        h.applied(s4, t0 + ms(6020));
        assert_eq!(h.lag(t0 + ms(6500)), Some(ms(20)));
    }

    #[test]
    fn forgetting_clears_the_lag() {
        let t0 = Instant::now();
        let mut h = Heartbeats::new(1);
        let (s1, _) = h.prepare();
        h.emitted(s1, t0);
        h.applied(s1, t0 + ms(5));
        let (s2, _) = h.prepare();
        h.emitted(s2, t0 + ms(10));
        h.forget();
        assert_eq!(h.lag(t0 + ms(60_000)), None);
        // Heartbeats after standing by count again; the sequence goes on.
        let (s3, _) = h.prepare();
        assert!(s3 > s2);
        h.emitted(s3, t0 + ms(70_000));
        h.applied(s3, t0 + ms(70_020));
        assert_eq!(h.lag(t0 + ms(70_500)), Some(ms(20)));
    }

    #[test]
    fn applying_an_unknown_or_old_sequence_changes_nothing() {
        let t0 = Instant::now();
        let mut h = Heartbeats::new(1);
        let (s1, _) = h.prepare();
        h.emitted(s1, t0);
        h.applied(0, t0 + ms(5));
        assert_eq!(h.lag(t0 + ms(7)), Some(ms(7)));
    }
}
