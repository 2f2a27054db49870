//! A one-line progress bar on stderr (carriage return, no escape codes beyond "clear line"),
//! drawn only when stderr is a terminal.

use std::io::{IsTerminal, Write};
use std::time::Duration;

/// What the bar shows.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Snapshot {
    pub elapsed: Duration,
    pub duration: Duration,
    pub requests: u64,
    pub errors: u64,
    pub in_flight: u64,
    pub fresh_pending: Option<usize>,
    pub fresh_p50_ms: Option<f64>,
    /// After the load: waiting for freshness stragglers.
    pub waiting: bool,
}

pub fn stderr_is_tty() -> bool {
    std::io::stderr().is_terminal()
}

/// The bar's text, `width` cells of bar.
pub fn render(s: &Snapshot, width: usize) -> String {
    let frac = if s.duration.is_zero() {
        1.0
    } else {
        (s.elapsed.as_secs_f64() / s.duration.as_secs_f64()).clamp(0.0, 1.0)
    };
    let filled = (frac * width as f64).round() as usize;
    let rate = if s.elapsed.as_secs_f64() > 0.0 {
        s.requests as f64 / s.elapsed.as_secs_f64()
    } else {
        0.0
    };
    let mut line = format!(
        "[{}{}] {:>5.1}/{:.0}s  {} req ({:.0}/s)  {} err  {} in flight",
        "#".repeat(filled),
        ".".repeat(width - filled),
        s.elapsed.as_secs_f64().min(s.duration.as_secs_f64()),
        s.duration.as_secs_f64(),
        s.requests,
        rate,
        s.errors,
        s.in_flight
    );
    if let Some(p) = s.fresh_pending {
        line.push_str(&format!("  fresh pending {p}"));
    }
    if let Some(ms) = s.fresh_p50_ms {
        line.push_str(&format!(" p50 {ms:.0} ms"));
    }
    if s.waiting {
        line.push_str("  (waiting for OLAP)");
    }
    line
}

pub fn draw(s: &Snapshot) {
    let mut err = std::io::stderr().lock();
    let _ = write!(err, "\r\x1b[2K{}", render(s, 30));
    let _ = err.flush();
}

pub fn clear() {
    let mut err = std::io::stderr().lock();
    let _ = write!(err, "\r\x1b[2K");
    let _ = err.flush();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_fill_and_counts() {
        let s = Snapshot {
            elapsed: Duration::from_secs(5),
            duration: Duration::from_secs(10),
            requests: 100,
            errors: 2,
            in_flight: 3,
            fresh_pending: Some(4),
            fresh_p50_ms: Some(42.0),
            waiting: false,
        };
        let line = render(&s, 10);
        assert!(line.starts_with("[#####.....]"), "{line}");
        assert!(line.contains("100 req (20/s)"), "{line}");
        assert!(line.contains("2 err"), "{line}");
        assert!(line.contains("fresh pending 4 p50 42 ms"), "{line}");
        let done = render(
            &Snapshot {
                elapsed: Duration::from_secs(12),
                waiting: true,
                ..s
            },
            10,
        );
        assert!(done.starts_with("[##########]"), "{done}");
        assert!(done.contains("waiting for OLAP"));
    }
}
