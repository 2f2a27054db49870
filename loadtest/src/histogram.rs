//! A log-bucket latency histogram in microseconds: exact below 128 µs, then 64 sub-buckets per
//! power of two (relative error under 1.6 %), fixed size whatever the number of samples.
//! Percentiles report the upper edge of the bucket holding the rank, never above the largest
//! value seen, so they never under-state a latency.

use std::time::Duration;

const SUB_BITS: u32 = 6;
const SUB: u64 = 1 << SUB_BITS; // 64
const EXACT: u64 = 2 * SUB; // values below are their own bucket
const BUCKETS: usize = (EXACT + (64 - SUB_BITS as u64 - 1) * SUB) as usize;

#[derive(Clone)]
pub struct Histogram {
    counts: Vec<u64>,
    count: u64,
    sum: u128,
    min: u64,
    max: u64,
}

impl Default for Histogram {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for Histogram {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Histogram")
            .field("count", &self.count)
            .field("min", &self.min)
            .field("max", &self.max)
            .finish()
    }
}

fn index_of(v: u64) -> usize {
    if v < EXACT {
        return v as usize;
    }
    let msb = 63 - v.leading_zeros() as u64; // ≥ 7
    let shift = msb - SUB_BITS as u64; // v >> shift is in [64, 127]
    (EXACT + (shift - 1) * SUB + ((v >> shift) - SUB)) as usize
}

/// The largest value that falls in bucket `i`.
fn upper_edge(i: usize) -> u64 {
    let i = i as u64;
    if i < EXACT {
        return i;
    }
    let shift = (i - EXACT) / SUB + 1;
    let mantissa = (i - EXACT) % SUB + SUB;
    let low = mantissa << shift;
    low.saturating_add((1u64 << shift) - 1)
}

impl Histogram {
    pub fn new() -> Self {
        Self {
            counts: vec![0; BUCKETS],
            count: 0,
            sum: 0,
            min: u64::MAX,
            max: 0,
        }
    }

    /// Records one value in microseconds.
    pub fn record_us(&mut self, v: u64) {
        self.counts[index_of(v)] += 1;
        self.count += 1;
        self.sum += v as u128;
        self.min = self.min.min(v);
        self.max = self.max.max(v);
    }

    pub fn record(&mut self, d: Duration) {
        self.record_us(u64::try_from(d.as_micros()).unwrap_or(u64::MAX));
    }

    pub fn merge(&mut self, other: &Histogram) {
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
        self.count += other.count;
        self.sum += other.sum;
        self.min = self.min.min(other.min);
        self.max = self.max.max(other.max);
    }

    pub fn count(&self) -> u64 {
        self.count
    }

    pub fn max_us(&self) -> u64 {
        self.max
    }

    pub fn min_us(&self) -> u64 {
        if self.count == 0 {
            0
        } else {
            self.min
        }
    }

    pub fn mean_us(&self) -> f64 {
        if self.count == 0 {
            0.0
        } else {
            self.sum as f64 / self.count as f64
        }
    }

    /// The value at quantile `q` (0 < q ≤ 1), in µs: the smallest bucket whose cumulative
    /// count reaches `ceil(q · count)`. 0 when empty.
    pub fn quantile_us(&self, q: f64) -> u64 {
        if self.count == 0 {
            return 0;
        }
        let q = q.clamp(0.0, 1.0);
        let rank = ((q * self.count as f64).ceil() as u64).clamp(1, self.count);
        let mut seen = 0u64;
        for (i, c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return upper_edge(i).min(self.max).max(self.min);
            }
        }
        self.max
    }

    /// The quantile in milliseconds.
    pub fn quantile_ms(&self, q: f64) -> f64 {
        self.quantile_us(q) as f64 / 1000.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_monotonic_and_cover_their_values() {
        let mut last = 0;
        for v in (0..5000u64).chain([1 << 20, (1 << 20) + 12345, u64::MAX / 3, u64::MAX]) {
            let i = index_of(v);
            assert!(i < BUCKETS, "{v} → {i}");
            assert!(i >= last || v > 5000, "index not monotonic at {v}");
            last = i;
            assert!(
                upper_edge(i) >= v,
                "{v} above its bucket's edge {}",
                upper_edge(i)
            );
            if i > 0 {
                assert!(upper_edge(i - 1) < v, "{v} also fits the bucket below");
            }
        }
    }

    #[test]
    fn relative_error_is_small() {
        for v in [200u64, 1_000, 4_321, 99_999, 1_234_567, 60_000_000] {
            let edge = upper_edge(index_of(v));
            assert!((edge - v) as f64 / v as f64 <= 1.0 / 64.0, "{v} → {edge}");
        }
    }

    #[test]
    fn exact_percentiles_for_small_values() {
        let mut h = Histogram::new();
        for v in 1..=100 {
            h.record_us(v);
        }
        assert_eq!(h.count(), 100);
        assert_eq!(h.quantile_us(0.5), 50);
        assert_eq!(h.quantile_us(0.95), 95);
        assert_eq!(h.quantile_us(0.99), 99);
        assert_eq!(h.quantile_us(1.0), 100);
        assert_eq!(h.min_us(), 1);
        assert!((h.mean_us() - 50.5).abs() < 1e-9);
    }

    #[test]
    fn percentiles_of_a_skewed_distribution() {
        // 990 fast requests at 2 ms, 10 slow ones at 500 ms.
        let mut h = Histogram::new();
        for _ in 0..990 {
            h.record(Duration::from_millis(2));
        }
        for _ in 0..10 {
            h.record(Duration::from_millis(500));
        }
        let p50 = h.quantile_ms(0.5);
        assert!((2.0..2.04).contains(&p50), "p50 {p50}");
        assert!(h.quantile_ms(0.99) < 2.04, "p99 is still a fast one");
        assert!(h.quantile_ms(0.995) >= 500.0, "p99.5 is a slow one");
        assert_eq!(h.quantile_ms(1.0), 500.0, "max is exact");
    }

    #[test]
    fn merge_adds_up_and_empty_is_zero() {
        let mut a = Histogram::new();
        assert_eq!(a.quantile_us(0.99), 0);
        assert_eq!(a.min_us(), 0);
        let mut b = Histogram::new();
        b.record_us(1000);
        b.record_us(3000);
        a.record_us(10);
        a.merge(&b);
        assert_eq!(a.count(), 3);
        assert_eq!(a.max_us(), 3000);
        assert_eq!(a.min_us(), 10);
        assert_eq!(a.quantile_us(0.01), 10);
    }
}
