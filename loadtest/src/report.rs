//! What a run measured: per-endpoint counts and latencies, errors by status, end-to-end
//! freshness; rendered as a table for people or JSON for scripts.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use serde::Serialize;

use crate::histogram::Histogram;

/// How one request ended, as counted in the report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// An HTTP response with this status (2xx counts as success).
    Status(u16),
    /// No response within the request timeout.
    Timeout,
    /// Connection refused, reset, or another transport failure.
    Transport,
}

impl Outcome {
    pub fn is_ok(&self) -> bool {
        matches!(self, Outcome::Status(s) if (200..300).contains(s))
    }

    /// The error key: the status code, `timeout` or `transport`.
    pub fn key(&self) -> String {
        match self {
            Outcome::Status(s) => s.to_string(),
            Outcome::Timeout => "timeout".into(),
            Outcome::Transport => "transport".into(),
        }
    }
}

/// Counts and latencies of one endpoint (method and path template).
#[derive(Debug, Default, Clone)]
pub struct EndpointStats {
    pub latency: Histogram,
    pub ok: u64,
    pub errors: BTreeMap<String, u64>,
}

/// Everything the workers record while the load runs.
#[derive(Debug, Default, Clone)]
pub struct Recorder {
    pub endpoints: BTreeMap<&'static str, EndpointStats>,
}

impl Recorder {
    pub fn record(&mut self, endpoint: &'static str, latency: Duration, outcome: &Outcome) {
        let e = self.endpoints.entry(endpoint).or_default();
        e.latency.record(latency);
        if outcome.is_ok() {
            e.ok += 1;
        } else {
            *e.errors.entry(outcome.key()).or_default() += 1;
        }
    }

    pub fn requests(&self) -> u64 {
        self.endpoints.values().map(|e| e.latency.count()).sum()
    }

    pub fn errors(&self) -> u64 {
        self.endpoints
            .values()
            .map(|e| e.errors.values().sum::<u64>())
            .sum()
    }
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Latency {
    pub p50: f64,
    pub p95: f64,
    pub p99: f64,
    pub max: f64,
    pub mean: f64,
}

impl Latency {
    pub fn of(h: &Histogram) -> Self {
        let round = |v: f64| (v * 1000.0).round() / 1000.0;
        Self {
            p50: round(h.quantile_ms(0.50)),
            p95: round(h.quantile_ms(0.95)),
            p99: round(h.quantile_ms(0.99)),
            max: round(h.max_us() as f64 / 1000.0),
            mean: round(h.mean_us() / 1000.0),
        }
    }
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct EndpointReport {
    pub endpoint: String,
    pub requests: u64,
    pub ok: u64,
    pub errors: u64,
    pub requests_per_s: f64,
    pub latency_ms: Latency,
    pub errors_by_status: BTreeMap<String, u64>,
}

/// Time from the API's 201 to the order's facts being visible in OLAP `fact_sales`.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct FreshnessReport {
    /// Orders whose freshness was followed.
    pub sampled: u64,
    /// Of those, seen in `fact_sales`.
    pub arrived: u64,
    /// Not seen by the end of the wait after the run.
    pub missing: u64,
    /// Deleted by the test before they were seen (not counted either way).
    pub dropped: u64,
    /// How long the run waited for stragglers after the load stopped, in seconds.
    pub waited_s: f64,
    /// The poll interval, which bounds the resolution.
    pub poll_ms: u64,
    pub latency_ms: Latency,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Report {
    pub api: String,
    /// `open` (fixed arrival rate) or `closed` (fixed number of users).
    pub mode: String,
    pub rate: Option<f64>,
    pub users: Option<usize>,
    pub mix: String,
    pub duration_s: f64,
    /// How long the load actually ran (shorter when interrupted).
    pub elapsed_s: f64,
    pub interrupted: bool,
    pub requests: u64,
    pub ok: u64,
    pub errors: u64,
    pub requests_per_s: f64,
    pub endpoints: Vec<EndpointReport>,
    pub errors_by_status: BTreeMap<String, u64>,
    pub freshness: Option<FreshnessReport>,
}

/// The run's settings, as the report states them.
#[derive(Debug, Clone)]
pub struct RunInfo {
    pub api: String,
    pub rate: Option<f64>,
    pub users: Option<usize>,
    pub mix: String,
    pub duration: Duration,
    pub elapsed: Duration,
    pub interrupted: bool,
}

fn per_s(n: u64, elapsed: Duration) -> f64 {
    let s = elapsed.as_secs_f64();
    if s <= 0.0 {
        0.0
    } else {
        ((n as f64 / s) * 10.0).round() / 10.0
    }
}

impl Report {
    pub fn build(info: &RunInfo, rec: &Recorder, freshness: Option<FreshnessReport>) -> Self {
        let mut errors_by_status = BTreeMap::new();
        let endpoints = rec
            .endpoints
            .iter()
            .map(|(name, e)| {
                for (k, v) in &e.errors {
                    *errors_by_status.entry(k.clone()).or_default() += v;
                }
                let requests = e.latency.count();
                EndpointReport {
                    endpoint: (*name).to_owned(),
                    requests,
                    ok: e.ok,
                    errors: requests - e.ok,
                    requests_per_s: per_s(requests, info.elapsed),
                    latency_ms: Latency::of(&e.latency),
                    errors_by_status: e.errors.clone(),
                }
            })
            .collect();
        let requests = rec.requests();
        let errors = rec.errors();
        Self {
            api: info.api.clone(),
            mode: if info.users.is_some() {
                "closed"
            } else {
                "open"
            }
            .into(),
            rate: info.rate,
            users: info.users,
            mix: info.mix.clone(),
            duration_s: info.duration.as_secs_f64(),
            elapsed_s: (info.elapsed.as_secs_f64() * 1000.0).round() / 1000.0,
            interrupted: info.interrupted,
            requests,
            ok: requests - errors,
            errors,
            requests_per_s: per_s(requests, info.elapsed),
            endpoints,
            errors_by_status,
            freshness,
        }
    }

    /// The human-readable table.
    pub fn to_table(&self) -> String {
        let mut out = String::new();
        let load = match (self.rate, self.users) {
            (_, Some(u)) => format!("closed loop, {u} users"),
            (Some(r), None) => format!("open loop, {r} req/s scheduled"),
            (None, None) => "open loop".into(),
        };
        let _ = writeln!(
            out,
            "brewlytics loadtest — {} — {load}, mix {}, {:.1} s{}",
            self.api,
            self.mix,
            self.elapsed_s,
            if self.interrupted {
                " (interrupted)"
            } else {
                ""
            }
        );
        let _ = writeln!(
            out,
            "{:<24} {:>9} {:>8} {:>7} {:>9} {:>9} {:>9} {:>9}",
            "endpoint", "requests", "req/s", "errors", "p50 ms", "p95 ms", "p99 ms", "max ms"
        );
        for e in &self.endpoints {
            let _ = writeln!(
                out,
                "{:<24} {:>9} {:>8.1} {:>7} {:>9.2} {:>9.2} {:>9.2} {:>9.2}",
                e.endpoint,
                e.requests,
                e.requests_per_s,
                e.errors,
                e.latency_ms.p50,
                e.latency_ms.p95,
                e.latency_ms.p99,
                e.latency_ms.max
            );
        }
        let _ = writeln!(
            out,
            "{:<24} {:>9} {:>8.1} {:>7}",
            "total", self.requests, self.requests_per_s, self.errors
        );
        if self.errors_by_status.is_empty() {
            let _ = writeln!(out, "errors: none");
        } else {
            let list: Vec<String> = self
                .errors_by_status
                .iter()
                .map(|(k, v)| format!("{k}: {v}"))
                .collect();
            let _ = writeln!(out, "errors by status: {}", list.join(", "));
        }
        match &self.freshness {
            None => {
                let _ = writeln!(out, "freshness: not measured");
            }
            Some(f) => {
                let _ = writeln!(
                    out,
                    "freshness (201 → facts visible in OLAP), {} sampled orders: p50 {:.1} ms, p95 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
                    f.sampled, f.latency_ms.p50, f.latency_ms.p95, f.latency_ms.p99, f.latency_ms.max
                );
                let _ = writeln!(
                    out,
                    "  arrived {}, missing {} (waited {:.1} s after the load), deleted before seen {}; polled every {} ms",
                    f.arrived, f.missing, f.waited_s, f.dropped, f.poll_ms
                );
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Report {
        let mut rec = Recorder::default();
        for i in 0..100u64 {
            rec.record(
                "POST /orders",
                Duration::from_micros(1000 + i * 10),
                &Outcome::Status(201),
            );
        }
        rec.record(
            "PATCH /orders/{id}",
            Duration::from_millis(3),
            &Outcome::Status(200),
        );
        rec.record(
            "PATCH /orders/{id}",
            Duration::from_millis(4),
            &Outcome::Status(409),
        );
        rec.record("POST /orders", Duration::from_secs(10), &Outcome::Timeout);
        let mut fh = Histogram::new();
        fh.record(Duration::from_millis(40));
        fh.record(Duration::from_millis(60));
        let info = RunInfo {
            api: "http://127.0.0.1:8000".into(),
            rate: Some(20.0),
            users: None,
            mix: "rush".into(),
            duration: Duration::from_secs(5),
            elapsed: Duration::from_secs(5),
            interrupted: false,
        };
        Report::build(
            &info,
            &rec,
            Some(FreshnessReport {
                sampled: 3,
                arrived: 2,
                missing: 1,
                dropped: 0,
                waited_s: 10.0,
                poll_ms: 10,
                latency_ms: Latency::of(&fh),
            }),
        )
    }

    #[test]
    fn totals_rates_and_errors() {
        let r = sample();
        assert_eq!(r.requests, 103);
        assert_eq!(r.errors, 2);
        assert_eq!(r.ok, 101);
        assert_eq!(r.requests_per_s, 20.6);
        assert_eq!(r.mode, "open");
        assert_eq!(r.errors_by_status.get("409"), Some(&1));
        assert_eq!(r.errors_by_status.get("timeout"), Some(&1));
        let orders = r
            .endpoints
            .iter()
            .find(|e| e.endpoint == "POST /orders")
            .unwrap();
        assert_eq!(orders.requests, 101);
        assert_eq!(orders.errors, 1);
        assert_eq!(orders.latency_ms.max, 10_000.0);
        assert!(orders.latency_ms.p50 > 1.4 && orders.latency_ms.p50 < 1.6);
    }

    #[test]
    fn table_has_every_endpoint_errors_and_freshness() {
        let t = sample().to_table();
        assert!(t.contains("POST /orders"), "{t}");
        assert!(t.contains("PATCH /orders/{id}"), "{t}");
        assert!(t.contains("total"), "{t}");
        assert!(t.contains("409: 1") && t.contains("timeout: 1"), "{t}");
        assert!(t.contains("p50 40.4 ms"), "{t}"); // 40 ms, bucket edge within 1.6 %
        assert!(t.contains("missing 1"), "{t}");
        assert!(t.contains("open loop, 20 req/s"), "{t}");
    }

    #[test]
    fn json_has_the_documented_fields() {
        let v = serde_json::to_value(sample()).unwrap();
        for key in [
            "api",
            "mode",
            "rate",
            "users",
            "requests",
            "errors",
            "requests_per_s",
            "endpoints",
            "errors_by_status",
            "freshness",
        ] {
            assert!(v.get(key).is_some(), "missing {key}");
        }
        assert_eq!(v["freshness"]["missing"], 1);
        let p50 = v["freshness"]["latency_ms"]["p50"].as_f64().unwrap();
        assert!((40.0..40.7).contains(&p50), "{p50}");
        assert!(v["endpoints"][0]["latency_ms"]["p99"].as_f64().is_some());
    }

    #[test]
    fn no_errors_and_no_freshness() {
        let info = RunInfo {
            api: "x".into(),
            rate: None,
            users: Some(4),
            mix: "orders".into(),
            duration: Duration::from_secs(1),
            elapsed: Duration::from_millis(500),
            interrupted: true,
        };
        let r = Report::build(&info, &Recorder::default(), None);
        assert_eq!(r.mode, "closed");
        let t = r.to_table();
        assert!(t.contains("errors: none"));
        assert!(t.contains("freshness: not measured"));
        assert!(t.contains("(interrupted)"));
        assert!(t.contains("closed loop, 4 users"));
    }
}
