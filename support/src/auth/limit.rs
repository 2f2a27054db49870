//! Failed authentications per client address: a token bucket each, in memory.
//!
//! Each failure takes a token; a client with none left is answered 429 with `Retry-After`
//! instead of 401 until its bucket refills. Only failures are charged: a request with a
//! valid key is served whatever its address did before, so a client sharing an address
//! (behind NAT, or a proxy) cannot lock the shop's tills out. Keys carry 256 random bits,
//! so guessing is not what this guards against; it bounds the work, log lines and answers a
//! misbehaving client gets, and its refusals are counted for the alert on bursts.
//!
//! Memory is bounded: past [`MAX_CLIENTS`] addresses, buckets that have refilled are
//! forgotten, then the fullest ones.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Addresses tracked at most.
pub const MAX_CLIENTS: usize = 10_000;

/// How many failures a client may have in a burst, and how fast it earns them back.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LimitConfig {
    pub burst: u32,
    pub per_second: f64,
}

impl Default for LimitConfig {
    /// 10 at once, then one every 2 seconds.
    fn default() -> Self {
        Self {
            burst: 10,
            per_second: 0.5,
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// The buckets of one server.
#[derive(Debug)]
pub struct FailureLimiter {
    config: LimitConfig,
    buckets: Mutex<HashMap<IpAddr, Bucket>>,
}

impl FailureLimiter {
    pub fn new(config: LimitConfig) -> Self {
        Self {
            config,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Charges one failure of `client` at `now`: `Ok` while it had a token (answer 401),
    /// else how long until it has one (answer 429 with that `Retry-After`).
    pub fn charge(&self, client: IpAddr, now: Instant) -> Result<(), Duration> {
        let cfg = self.config;
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        if buckets.len() >= MAX_CLIENTS && !buckets.contains_key(&client) {
            prune(&mut buckets, cfg, now);
        }
        let bucket = buckets.entry(client).or_insert(Bucket {
            tokens: f64::from(cfg.burst),
            at: now,
        });
        bucket.tokens = refilled(bucket, cfg, now);
        bucket.at = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            let wait = (1.0 - bucket.tokens) / cfg.per_second.max(1e-9);
            Err(Duration::from_secs_f64(wait.min(86_400.0)))
        }
    }

    /// Addresses currently tracked.
    pub fn tracked(&self) -> usize {
        self.buckets.lock().map(|b| b.len()).unwrap_or(0)
    }
}

fn refilled(b: &Bucket, cfg: LimitConfig, now: Instant) -> f64 {
    let earned = now.saturating_duration_since(b.at).as_secs_f64() * cfg.per_second;
    (b.tokens + earned).min(f64::from(cfg.burst))
}

/// Forgets refilled buckets; if that frees nothing, the fullest tenth.
fn prune(buckets: &mut HashMap<IpAddr, Bucket>, cfg: LimitConfig, now: Instant) {
    let full = f64::from(cfg.burst);
    buckets.retain(|_, b| refilled(b, cfg, now) < full);
    if buckets.len() >= MAX_CLIENTS {
        let mut levels: Vec<(f64, IpAddr)> = buckets
            .iter()
            .map(|(ip, b)| (refilled(b, cfg, now), *ip))
            .collect();
        levels.sort_by(|a, b| b.0.total_cmp(&a.0));
        for (_, ip) in levels.into_iter().take(MAX_CLIENTS / 10) {
            buckets.remove(&ip);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(n: u32) -> IpAddr {
        IpAddr::from(n.to_be_bytes())
    }

    #[test]
    fn a_burst_is_allowed_then_refused_until_refilled() {
        let l = FailureLimiter::new(LimitConfig {
            burst: 3,
            per_second: 0.5,
        });
        let t0 = Instant::now();
        for _ in 0..3 {
            assert!(l.charge(ip(1), t0).is_ok());
        }
        let wait = l.charge(ip(1), t0).unwrap_err();
        assert_eq!(wait, Duration::from_secs(2));
        // Another client is not affected.
        assert!(l.charge(ip(2), t0).is_ok());
        // Half-way: still refused, with the rest of the wait.
        let wait = l.charge(ip(1), t0 + Duration::from_secs(1)).unwrap_err();
        assert_eq!(wait, Duration::from_secs(1));
        assert!(l.charge(ip(1), t0 + Duration::from_secs(2)).is_ok());
        assert!(l.charge(ip(1), t0 + Duration::from_secs(2)).is_err());
        // Long idle: the whole burst again, not more.
        let later = t0 + Duration::from_secs(3600);
        for _ in 0..3 {
            assert!(l.charge(ip(1), later).is_ok());
        }
        assert!(l.charge(ip(1), later).is_err());
    }

    #[test]
    fn memory_stays_bounded() {
        let l = FailureLimiter::new(LimitConfig::default());
        let t0 = Instant::now();
        for n in 0..(MAX_CLIENTS as u32 + 500) {
            let _ = l.charge(ip(n), t0);
        }
        assert!(l.tracked() <= MAX_CLIENTS, "{}", l.tracked());
        // A client that has been refused is still remembered after pruning the others.
        let bad = ip(u32::MAX);
        for _ in 0..20 {
            let _ = l.charge(bad, t0);
        }
        for n in 0..(MAX_CLIENTS as u32) {
            let _ = l.charge(ip(1_000_000 + n), t0);
        }
        assert!(l.charge(bad, t0).is_err());
    }
}
