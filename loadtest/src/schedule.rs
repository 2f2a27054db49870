//! When each request is meant to start. In open-loop mode arrival `i` is due at
//! `start + i / rate`, whatever happened to the earlier ones: a slow response delays nothing
//! and its latency counts from the intended start (no coordinated omission).

use std::time::Duration;

/// The fixed-rate arrival plan of an open-loop run.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct OpenSchedule {
    rate: f64,
    duration: Duration,
}

impl OpenSchedule {
    /// `rate` arrivals per second (> 0) for `duration`.
    pub fn new(rate: f64, duration: Duration) -> Self {
        assert!(rate > 0.0 && rate.is_finite(), "rate must be positive");
        Self { rate, duration }
    }

    /// How many arrivals the run has: those due strictly before the end.
    pub fn total(&self) -> u64 {
        let n = (self.duration.as_secs_f64() * self.rate).ceil();
        if n <= 0.0 {
            0
        } else {
            n as u64
        }
    }

    /// Offset from the start at which arrival `i` is due.
    pub fn due(&self, i: u64) -> Duration {
        Duration::from_secs_f64(i as f64 / self.rate)
    }

    /// The arrivals due by `elapsed` (those with index < the result), capped at the total:
    /// a scheduler that woke late sends them all at once, each keeping its own due time.
    pub fn due_by(&self, elapsed: Duration) -> u64 {
        let n = (elapsed.as_secs_f64() * self.rate).floor() as u64 + 1;
        n.min(self.total())
    }
}

/// Parses `90`, `90s`, `1500ms`, `2m`, `1m30s`, `1h`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if text.is_empty() {
        return Err("empty duration".into());
    }
    if let Ok(secs) = text.parse::<f64>() {
        return secs_to_duration(secs, text);
    }
    let mut total = 0.0f64;
    let mut rest = text;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(|| format!("duration {text:?} lacks a unit (ms, s, m, h)"))?;
        if digits == 0 {
            return Err(format!("invalid duration {text:?}"));
        }
        let value: f64 = rest[..digits]
            .parse()
            .map_err(|_| format!("invalid number in duration {text:?}"))?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let factor = match &rest[..unit_len] {
            "ms" => 0.001,
            "s" => 1.0,
            "m" | "min" => 60.0,
            "h" => 3600.0,
            other => return Err(format!("unknown unit {other:?} in duration {text:?}")),
        };
        total += value * factor;
        rest = &rest[unit_len..];
    }
    secs_to_duration(total, text)
}

fn secs_to_duration(secs: f64, text: &str) -> Result<Duration, String> {
    if !secs.is_finite() || secs <= 0.0 || secs > 7.0 * 86400.0 {
        return Err(format!(
            "duration {text:?} must be positive and at most a week"
        ));
    }
    Ok(Duration::from_secs_f64(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arrivals_are_evenly_spaced_from_zero() {
        let s = OpenSchedule::new(20.0, Duration::from_secs(5));
        assert_eq!(s.total(), 100);
        assert_eq!(s.due(0), Duration::ZERO);
        assert_eq!(s.due(1), Duration::from_millis(50));
        assert_eq!(s.due(99), Duration::from_millis(4950));
        // Nothing is due after the end.
        assert!(s.due(s.total()) >= Duration::from_secs(5));
    }

    #[test]
    fn fractional_rates_and_short_runs() {
        let s = OpenSchedule::new(0.5, Duration::from_secs(3));
        assert_eq!(s.total(), 2); // at 0 s and 2 s
        assert_eq!(s.due(1), Duration::from_secs(2));
        let s = OpenSchedule::new(1000.0, Duration::from_millis(1));
        assert_eq!(s.total(), 1);
    }

    #[test]
    fn a_late_scheduler_catches_up_without_skipping() {
        let s = OpenSchedule::new(100.0, Duration::from_secs(1));
        assert_eq!(s.due_by(Duration::ZERO), 1);
        assert_eq!(s.due_by(Duration::from_millis(9)), 1);
        assert_eq!(s.due_by(Duration::from_millis(10)), 2);
        // Woke up 300 ms late: 31 arrivals are due, each with its own due time.
        assert_eq!(s.due_by(Duration::from_millis(300)), 31);
        // Never more than the total.
        assert_eq!(s.due_by(Duration::from_secs(60)), 100);
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_duration("90"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("1500ms"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("0.5s"), Ok(Duration::from_millis(500)));
        assert!(parse_duration("").is_err());
        assert!(parse_duration("0").is_err());
        assert!(parse_duration("5x").is_err());
        assert!(parse_duration("s").is_err());
        assert!(parse_duration("-3").is_err());
        assert!(parse_duration("30d").is_err());
    }
}
