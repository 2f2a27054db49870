//! Waiting before trying again: one backoff for every loop that waits out an outage (the
//! stream's sessions, the loader's, the backfill worker, the leader lock). Each loop says
//! its own bounds ([`Backoff`]); the doubling, the cap and the early stop on shutdown are
//! written here once.

use std::time::Duration;

use tokio::sync::watch;

/// How long to wait between attempts: `first`, doubling after each failure up to `max`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    pub first: Duration,
    pub max: Duration,
}

/// An attempt that ran this long before it failed counted as a success: the next wait is
/// `first` again, not the doubled one of an outage long past.
pub const STABLE_AFTER: Duration = Duration::from_secs(60);

impl Backoff {
    /// A replication or loading session: reconnects quickly, waits out long outages.
    pub const RECONNECT: Backoff =
        Backoff::new(Duration::from_millis(250), Duration::from_secs(30));
    /// Reaching OLAP to contend for the leader lock.
    pub const LOCK: Backoff = Backoff::new(Duration::from_millis(250), Duration::from_secs(10));

    pub const fn new(first: Duration, max: Duration) -> Self {
        Self { first, max }
    }

    /// The state of one retry loop.
    pub fn start(self) -> Retry {
        Retry {
            bounds: self,
            next: self.first,
        }
    }
}

/// One loop's waits: [`Retry::wait`] after each failure, [`Retry::reset`] after a success.
#[derive(Clone, Debug)]
pub struct Retry {
    bounds: Backoff,
    next: Duration,
}

impl Retry {
    /// The wait the next failure gets.
    pub fn delay(&self) -> Duration {
        self.next
    }

    /// The next wait, and the one after it doubled (up to the cap).
    pub fn next_delay(&mut self) -> Duration {
        let d = self.next;
        self.next = (self.next * 2).min(self.bounds.max).max(self.bounds.first);
        d
    }

    pub fn reset(&mut self) {
        self.next = self.bounds.first;
    }

    /// An attempt that ran `ran` before failing: reset when it ran [`STABLE_AFTER`] or more.
    pub fn after_attempt(&mut self, ran: Duration) {
        if ran > STABLE_AFTER {
            self.reset();
        }
    }

    /// Waits the next delay; `false` when `shutdown` turned true first (stop trying).
    pub async fn wait(&mut self, shutdown: &mut watch::Receiver<bool>) -> bool {
        let d = self.next_delay();
        tokio::select! {
            _ = tokio::time::sleep(d) => true,
            _ = shutdown.changed() => false,
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
    fn doubles_up_to_the_cap() {
        let mut r = Backoff::new(ms(250), ms(1500)).start();
        let waits: Vec<_> = (0..5).map(|_| r.next_delay()).collect();
        assert_eq!(waits, [ms(250), ms(500), ms(1000), ms(1500), ms(1500)]);
        assert_eq!(r.delay(), ms(1500));
        r.reset();
        assert_eq!(r.next_delay(), ms(250));
    }

    #[test]
    fn a_long_attempt_counts_as_a_success() {
        let mut r = Backoff::RECONNECT.start();
        for _ in 0..10 {
            r.next_delay();
        }
        assert_eq!(r.delay(), Duration::from_secs(30));
        r.after_attempt(Duration::from_secs(5));
        assert_eq!(
            r.delay(),
            Duration::from_secs(30),
            "a short attempt keeps the wait"
        );
        r.after_attempt(STABLE_AFTER + ms(1));
        assert_eq!(r.delay(), ms(250));
    }

    #[tokio::test]
    async fn shutdown_ends_the_wait() {
        let (tx, mut rx) = watch::channel(false);
        let mut r = Backoff::new(Duration::from_secs(3600), Duration::from_secs(3600)).start();
        let waiting = tokio::spawn(async move { r.wait(&mut rx).await });
        tokio::task::yield_now().await;
        tx.send(true).unwrap();
        assert!(!waiting.await.unwrap(), "stopped, not waited out");
        let (_tx, mut rx) = watch::channel(false);
        let mut r = Backoff::new(ms(10), ms(10)).start();
        assert!(r.wait(&mut rx).await, "waited out");
    }
}
