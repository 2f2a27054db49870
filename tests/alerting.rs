//! The alerting rules and the Grafana dashboard of deploy/ against a live pipeline and a real
//! Prometheus (Debian's `prometheus`): OLTP and OLAP as two PostgreSQL servers, a leader and
//! a standby `brewlytics replicate`, `brewlytics api` under a small order load, and Prometheus
//! scraping them every second with deploy/prometheus.yml's jobs and deploy/alerts.rules.yml
//! compressed in time (every `for` divided by 30, the lag thresholds lowered to 3 s and 10 s;
//! the rules' exact thresholds are unit-tested by deploy/alerts.test.yml).
//!
//! - A fresh replicator exports every series from its first readings: each error kind, each
//!   slot status, each table of the publication with each operation, at 0.
//! - Every rule evaluates without error, and none fires while the pipeline is healthy.
//! - OLAP stops: the lag alert is read back firing (warning, then critical) from Prometheus's
//!   HTTP API, its summary naming the slot and the replicator; OLAP returns: it resolves.
//! - Every query of every dashboard panel returns data from this Prometheus.

mod harness;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use brewlytics_replicator::telemetry::{ERROR_KINDS, OPS, WAL_STATUSES};
use harness::prom;
use harness::{free_addr, http, scratch_dir, wait_for, Clusters, Proc};
use serde_json::Value;

/// `for` durations are divided by this in the test's copy of the rules.
const TIME_SCALE: u64 = 30;
/// The lag thresholds of the test's copy (30 s and 300 s in deploy/).
const LAG_WARNING: &str = "3";
const LAG_CRITICAL: &str = "10";

/// deploy/alerts.rules.yml with every `for` divided by [`TIME_SCALE`] (at least 1 s) and the
/// lag thresholds lowered. Panics if a rule it rewrites has changed shape.
fn compressed_rules(text: &str) -> String {
    let mut out = String::new();
    for line in text.lines() {
        let trimmed = line.trim_start();
        if let Some(d) = trimmed.strip_prefix("for: ") {
            let (n, unit) = d.trim().split_at(d.trim().len() - 1);
            let n: u64 = n.parse().unwrap_or_else(|_| panic!("a `for` of {d:?}"));
            let secs = match unit {
                "s" => n,
                "m" => n * 60,
                "h" => n * 3600,
                _ => panic!("a `for` of {d:?}"),
            };
            let indent = &line[..line.len() - trimmed.len()];
            out.push_str(&format!("{indent}for: {}s\n", (secs / TIME_SCALE).max(1)));
        } else {
            out.push_str(line);
            out.push('\n');
        }
    }
    for (from, to) in [
        (
            "expr: brewlytics_replication_lag_seconds > 30\n",
            format!("expr: brewlytics_replication_lag_seconds > {LAG_WARNING}\n"),
        ),
        (
            "expr: brewlytics_replication_lag_seconds > 300\n",
            format!("expr: brewlytics_replication_lag_seconds > {LAG_CRITICAL}\n"),
        ),
    ] {
        assert_eq!(
            out.matches(from).count(),
            1,
            "deploy/alerts.rules.yml should have exactly one `{}`",
            from.trim()
        );
        out = out.replace(from, &to);
    }
    out
}

/// The active alerts named `name`, as (severity, state, summary, instance).
fn alerts_named(prometheus: &str, name: &str) -> Vec<(String, String, String, String)> {
    prom::active_alerts(prometheus)
        .into_iter()
        .filter(|a| a["labels"]["alertname"] == name)
        .map(|a| {
            let s = |v: &Value| v.as_str().unwrap_or_default().to_owned();
            (
                s(&a["labels"]["severity"]),
                s(&a["state"]),
                s(&a["annotations"]["summary"]),
                s(&a["labels"]["instance"]),
            )
        })
        .collect()
}

/// Checks a replicator's own exposition: every error kind, slot status and publication
/// table x operation is there. Returns what is missing.
fn missing_series(metrics: &str, tables: &[String]) -> Vec<String> {
    let mut want: Vec<String> = ERROR_KINDS
        .iter()
        .map(|k| format!("brewlytics_replicator_errors_total{{kind=\"{k}\"}} "))
        .chain(
            WAL_STATUSES
                .iter()
                .map(|s| format!("brewlytics_slot_wal_status{{status=\"{s}\"}} ")),
        )
        .collect();
    for reason in brewlytics_support::auth::metrics::Reason::ALL {
        want.push(format!(
            "brewlytics_auth_failures_total{{reason=\"{}\"}} ",
            reason.label()
        ));
    }
    for t in tables {
        for op in OPS {
            want.push(format!(
                "brewlytics_changes_applied_total{{table=\"{t}\",op=\"{}\"}} ",
                op.label()
            ));
        }
    }
    for name in [
        "brewlytics_replication_lag_seconds ",
        "brewlytics_replication_lag_bytes ",
        "brewlytics_slot_retained_wal_bytes ",
        "brewlytics_slot_max_wal_keep_size_bytes ",
        "brewlytics_slot_retained_wal_threshold_bytes ",
        "brewlytics_dead_letters_total ",
        "brewlytics_transactions_applied_total ",
        "brewlytics_heartbeat_last_emitted_timestamp_seconds ",
        "brewlytics_heartbeat_last_applied_timestamp_seconds ",
        "brewlytics_heartbeat_interval_seconds ",
        "brewlytics_replicator_role ",
        "brewlytics_apply_batch_seconds_count ",
    ] {
        want.push(name.to_owned());
    }
    want.into_iter()
        .filter(|w| !metrics.lines().any(|l| l.starts_with(w.as_str())))
        .collect()
}

/// Orders and reads through the API until `stop`: its request metrics, and changes for the
/// replicator. Counts the orders created.
fn api_load(api: String, stop: Arc<AtomicBool>, orders: Arc<AtomicU64>) {
    let order = r#"{"customer_id": 1, "employee_id": 1, "store_id": 1, "payment_method": "card",
                    "items": [{"product_id": 1, "quantity": 2}, {"product_id": 2, "quantity": 1}]}"#;
    let mut i = 0u64;
    while !stop.load(Ordering::Relaxed) {
        if let Some((201, _)) = http(&api, "POST", "/orders", Some(order)) {
            orders.fetch_add(1, Ordering::Relaxed);
        }
        let path = match i % 10 {
            0 => "/no-such-route",
            1..=4 => "/stores",
            _ => "/health",
        };
        let _ = http(&api, "GET", path, None);
        i += 1;
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn the_lag_alert_fires_while_olap_is_down_and_resolves_when_it_returns() {
    let started = Instant::now();
    // Without Prometheus this fails now, naming the package, not after the pipeline started.
    prom::prometheus_binary();
    let deploy = prom::deploy_dir();
    let rules = std::fs::read_to_string(deploy.join("alerts.rules.yml")).unwrap();
    let jobs = prom::scrape_jobs(&std::fs::read_to_string(deploy.join("prometheus.yml")).unwrap());
    let slot_label = jobs
        .iter()
        .find(|j| j.port == 8001)
        .and_then(|j| j.labels.iter().find(|(k, _)| k == "slot"))
        .map(|(_, v)| v.clone())
        .expect("deploy/prometheus.yml gives the replicator job a `slot` label");

    // The pipeline: a source that limits slot WAL (so the dashboard's limit line has data).
    let mut c = Clusters::start_with(&[("max_slot_wal_keep_size", "10GB")]);
    c.prepare(50);
    let tables: Vec<String> = tokio::runtime::Runtime::new().unwrap().block_on(async {
        let mut oltp = c.oltp_conn().await;
        sqlx::query_scalar(
            "select tablename::text from pg_publication_tables where pubname = 'brewlytics' order by 1",
        )
        .fetch_all(&mut oltp)
        .await
        .unwrap()
    });
    assert!(tables.len() >= 8, "published tables: {tables:?}");

    let leader_addr = free_addr();
    let standby_addr = free_addr();
    let api_addr = free_addr();
    let mut leader = c.replicator("alerting-leader", &leader_addr, &[]);
    wait_for(
        Duration::from_secs(60),
        "the leader streaming",
        &mut [&mut leader],
        || match http(&leader_addr, "GET", "/health", None) {
            Some((200, b)) if b.contains("streaming") => Some(()),
            _ => None,
        },
    );
    let mut standby = c.replicator("alerting-standby", &standby_addr, &[]);
    let mut api = {
        let mut cmd = c.command(&["api"]);
        cmd.env("API_LISTEN", &api_addr).env("RUST_LOG", "warn");
        Proc::spawn(cmd, scratch_dir("logs").join("alerting-api.log"))
    };
    harness::remember_key(&api_addr, &harness::test_key().text);

    // Fresh processes export every series; the standby, which has applied nothing, at 0.
    wait_for(
        Duration::from_secs(30),
        "the second replicator standing by",
        &mut [&mut standby],
        || match http(&standby_addr, "GET", "/health", None) {
            Some((200, b)) if b.contains("standby") => Some(()),
            _ => None,
        },
    );
    for (name, addr) in [("leader", &leader_addr), ("standby", &standby_addr)] {
        let text = wait_for(
            Duration::from_secs(30),
            &format!("every series on the {name}'s /metrics"),
            &mut [&mut leader, &mut standby],
            || {
                let (_, text) = http(addr, "GET", "/metrics", None)?;
                let missing = missing_series(&text, &tables);
                if !missing.is_empty() {
                    eprintln!("{name} lacks {missing:?}");
                }
                missing.is_empty().then_some(text)
            },
        );
        if name == "standby" {
            let applied: Vec<&str> = text
                .lines()
                .filter(|l| l.starts_with("brewlytics_changes_applied_total{"))
                .collect();
            assert_eq!(applied.len(), tables.len() * OPS.len(), "{applied:?}");
            assert!(applied.iter().all(|l| l.ends_with(" 0")), "{applied:?}");
        }
    }

    let stop = Arc::new(AtomicBool::new(false));
    let orders = Arc::new(AtomicU64::new(0));
    wait_for(
        Duration::from_secs(60),
        "the API's /health",
        &mut [&mut api],
        || matches!(http(&api_addr, "GET", "/health", None), Some((200, _))).then_some(()),
    );
    let load = std::thread::spawn({
        let (api_addr, stop, orders) = (api_addr.clone(), stop.clone(), orders.clone());
        move || api_load(api_addr, stop, orders)
    });

    // Prometheus: deploy/prometheus.yml's jobs on this test's ports, the compressed rules.
    let dir = scratch_dir("prometheus-alerting");
    let rules_path = dir.join("alerts.rules.yml");
    std::fs::write(&rules_path, compressed_rules(&rules)).unwrap();
    let key_file = dir.join("prometheus.key");
    std::fs::write(&key_file, &harness::test_key().text).unwrap();
    let config = prom::test_config(
        &jobs,
        |job| match job.port {
            8000 => vec![api_addr.clone()],
            _ => vec![leader_addr.clone(), standby_addr.clone()],
        },
        &key_file,
        &[rules_path],
    );
    let config_path = dir.join("prometheus.yml");
    std::fs::write(&config_path, config).unwrap();
    let (ok, out) = {
        let o = std::process::Command::new(prom::promtool())
            .args(["check", "config"])
            .arg(&config_path)
            .output()
            .unwrap();
        (
            o.status.success(),
            String::from_utf8_lossy(&o.stdout).into_owned(),
        )
    };
    assert!(ok, "the test's Prometheus configuration: {out}");
    let (mut server, prometheus) = prom::start(&config_path, &dir);
    let procs_ok = |procs: &mut [&mut Proc]| {
        for p in procs.iter_mut() {
            assert!(p.is_running(), "a process exited: {}", p.log_text());
        }
    };

    // Both jobs scraped, every rule evaluated without error, and nothing firing.
    wait_for(
        Duration::from_secs(60),
        "3 targets up",
        &mut [&mut server, &mut leader, &mut standby, &mut api],
        || {
            let up = prom::query(&prometheus, "sum(up)");
            (up.first().map(|(_, v)| *v) == Some(3.0)).then_some(())
        },
    );
    let rule_names = wait_for(
        Duration::from_secs(30),
        "every rule evaluated, healthy",
        &mut [&mut server],
        || {
            let (_, body) = http(&prometheus, "GET", "/api/v1/rules", None)?;
            let json: Value = serde_json::from_str(&body).ok()?;
            let rules: Vec<&Value> = json["data"]["groups"]
                .as_array()?
                .iter()
                .flat_map(|g| g["rules"].as_array().into_iter().flatten())
                .collect();
            let failing: Vec<String> = rules
                .iter()
                .filter(|r| r["health"] == "err")
                .map(|r| format!("{}: {}", r["name"], r["lastError"]))
                .collect();
            assert!(failing.is_empty(), "rules failing to evaluate: {failing:?}");
            let all_ok = !rules.is_empty() && rules.iter().all(|r| r["health"] == "ok");
            all_ok.then(|| {
                rules
                    .iter()
                    .filter_map(|r| r["name"].as_str().map(str::to_owned))
                    .collect::<BTreeSet<_>>()
            })
        },
    );
    assert!(
        rule_names.contains("BrewlyticsReplicationLag"),
        "{rule_names:?}"
    );
    let healthy_until = Instant::now() + Duration::from_secs(8);
    while Instant::now() < healthy_until {
        let firing: Vec<String> = prom::active_alerts(&prometheus)
            .iter()
            .filter(|a| a["state"] == "firing")
            .map(|a| format!("{} {}", a["labels"], a["annotations"]["summary"]))
            .collect();
        assert!(
            firing.is_empty(),
            "alerts firing on a healthy pipeline (leader {leader_addr}, standby {standby_addr}): {firing:?}"
        );
        procs_ok(&mut [&mut server, &mut leader, &mut standby, &mut api]);
        std::thread::sleep(Duration::from_millis(500));
    }

    // OLAP goes away: the lag alert fires, warning then critical, naming slot and replicator.
    c.olap.pause().expect("stopping OLAP");
    let outage = Instant::now();
    for severity in ["warning", "critical"] {
        let (_, _, summary, instance) = wait_for(
            Duration::from_secs(60),
            &format!("BrewlyticsReplicationLag {severity} firing"),
            &mut [&mut server, &mut leader, &mut standby],
            || {
                alerts_named(&prometheus, "BrewlyticsReplicationLag")
                    .into_iter()
                    .find(|(s, state, _, _)| s == severity && state == "firing")
            },
        );
        assert!(
            summary.contains(&format!("Slot {slot_label}:"))
                && summary.contains(&format!("({instance})"))
                && [&leader_addr, &standby_addr].contains(&&instance),
            "the summary should name the slot and the replicator: {summary:?} ({instance})"
        );
        println!(
            "{severity} firing {:.1} s into the outage: {summary}",
            outage.elapsed().as_secs_f64()
        );
    }
    assert!(
        leader.is_running() && standby.is_running(),
        "a replicator exited while OLAP was down"
    );

    // OLAP returns: the replicators catch up and every lag alert resolves.
    c.olap.resume().expect("starting OLAP again");
    let back = Instant::now();
    wait_for(
        Duration::from_secs(90),
        "BrewlyticsReplicationLag resolved",
        &mut [&mut server, &mut leader, &mut standby],
        || {
            alerts_named(&prometheus, "BrewlyticsReplicationLag")
                .is_empty()
                .then_some(())
        },
    );
    println!(
        "resolved {:.1} s after OLAP returned",
        back.elapsed().as_secs_f64()
    );
    let lag = prom::query(&prometheus, "max(brewlytics_replication_lag_seconds)");
    assert!(
        lag.first()
            .is_some_and(|(_, v)| *v < LAG_WARNING.parse().unwrap()),
        "lag after recovery: {lag:?}"
    );
    let streaming = prom::query(&prometheus, "count(brewlytics_replicator_role == 3)");
    assert_eq!(
        streaming.first().map(|(_, v)| *v),
        Some(1.0),
        "one replicator streams after the outage"
    );

    // Every query of every dashboard panel returns data.
    let dashboard: Value = serde_json::from_str(
        &std::fs::read_to_string(deploy.join("grafana-dashboard.json")).unwrap(),
    )
    .expect("deploy/grafana-dashboard.json is JSON");
    let mut checked = 0;
    let mut failures = Vec::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"].as_str().expect("a target with an expr");
            let promql = expr
                .replace("$__rate_interval", "1m")
                .replace("$slot", ".*");
            assert!(!promql.contains('$'), "an unknown variable in {expr}");
            checked += 1;
            match prom::try_query(&prometheus, &promql) {
                Ok(series) if series.iter().any(|(_, v)| v.is_finite()) => {}
                Ok(series) => {
                    failures.push(format!("{:?}: {promql} -> {series:?}", panel["title"]))
                }
                Err(e) => failures.push(format!("{:?}: {promql} -> {e}", panel["title"])),
            }
        }
    }
    assert!(checked >= 15, "only {checked} dashboard queries");
    assert!(
        failures.is_empty(),
        "dashboard queries without data:\n{}",
        failures.join("\n")
    );

    stop.store(true, Ordering::Relaxed);
    load.join().unwrap();
    assert!(
        orders.load(Ordering::Relaxed) > 20,
        "the API load created few orders"
    );
    println!(
        "{checked} dashboard queries answered; {} orders; {:.0} s in all",
        orders.load(Ordering::Relaxed),
        started.elapsed().as_secs_f64()
    );
}
