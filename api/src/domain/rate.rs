//! A token bucket: how many events per second `POST /events` takes, with a burst.

use std::time::Instant;

/// `rate` tokens a second, at most `burst` saved; a request takes one per event.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Option<Instant>,
}

impl TokenBucket {
    /// A full bucket. `rate` 0 takes everything (no limit).
    pub fn new(rate: u32, burst: u32) -> Self {
        Self {
            rate: f64::from(rate),
            burst: f64::from(burst.max(rate)),
            tokens: f64::from(burst.max(rate)),
            last: None,
        }
    }

    pub fn rate(&self) -> u32 {
        self.rate as u32
    }

    /// Takes `n` tokens at `now` if there are that many, else takes none.
    pub fn take(&mut self, n: usize, now: Instant) -> bool {
        if self.rate <= 0.0 {
            return true;
        }
        if let Some(last) = self.last {
            let refill = now.saturating_duration_since(last).as_secs_f64() * self.rate;
            self.tokens = (self.tokens + refill).min(self.burst);
        }
        self.last = Some(now);
        let n = n as f64;
        if n <= self.tokens {
            self.tokens -= n;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn takes_up_to_the_burst_then_refills_at_the_rate() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(100, 200);
        assert!(b.take(150, t0));
        assert!(!b.take(51, t0), "only 50 left");
        assert!(b.take(50, t0));
        assert!(!b.take(1, t0));
        assert!(
            b.take(10, t0 + Duration::from_millis(100)),
            "10 back after 100 ms"
        );
        assert!(!b.take(1, t0 + Duration::from_millis(100)));
        assert!(
            b.take(200, t0 + Duration::from_secs(60)),
            "never more than the burst"
        );
        assert!(!b.take(1, t0 + Duration::from_secs(60)));
    }

    #[test]
    fn rate_zero_is_no_limit() {
        let mut b = TokenBucket::new(0, 0);
        assert!(b.take(1_000_000, Instant::now()));
    }
}
