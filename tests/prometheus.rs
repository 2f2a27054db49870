//! deploy/prometheus.yml and deploy/alerts.rules.yml with Debian's Prometheus:
//! - `promtool check config` and `check rules`, and `promtool test rules` on
//!   deploy/alerts.test.yml (each alert fires where it should and stays silent where it must
//!   not); every alert has a severity, a summary naming what it is about, a runbook section,
//!   and both kinds of test case;
//! - `brewlytics up` (embedded PostgreSQL, API and replicator on ports they chose) scraped
//!   by `prometheus` with the scrape jobs of deploy/prometheus.yml (targets rewritten to the
//!   test's ports, 1 s interval); the replicator's lag and the API's request counts are read
//!   back through Prometheus's HTTP API. Both servers are stopped with SIGTERM at the end
//!   (and killed by their guards if the test fails first).
//!
//! The alerts against a live pipeline (OLAP stopped, the lag alert firing and resolving) are
//! in tests/alerting.rs. Needs the `prometheus` package (/usr/bin/prometheus and promtool;
//! `scripts/test` installs it). Without it the tests fail, naming the package: a check that cannot
//! run is not a check that passed.

mod harness;

use std::process::Command;
use std::time::Duration;

use harness::prom::{self, query};
use harness::{http, wait_for, Proc, Scratch};

/// Runs promtool in deploy/ (so the rule files' relative paths resolve as Prometheus does);
/// (success, stdout + stderr).
fn promtool(args: &[&str]) -> (bool, String) {
    let out = Command::new(prom::promtool())
        .args(args)
        .current_dir(prom::deploy_dir())
        .output()
        .expect("running promtool");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn promtool_accepts_the_config_and_the_rules_it_loads() {
    // promtool reads the files a config names (the API key, the CA): each config is checked
    // beside its rules, with those paths pointing at files that exist. prometheus-tls.yml
    // (docker-compose.tls.yml) is prometheus.yml over HTTPS: the same jobs.
    let scratch = Scratch::new("promtool-config");
    let deploy = prom::deploy_dir();
    let key = scratch.join("prometheus.key");
    std::fs::write(&key, "brw_0123456789abcdef_any").unwrap();
    let tls = brewlytics_support::testing::TestCertificate::make(&scratch.join("tls"));
    std::fs::copy(
        deploy.join("alerts.rules.yml"),
        scratch.join("alerts.rules.yml"),
    )
    .unwrap();
    let plain_jobs =
        prom::scrape_jobs(&std::fs::read_to_string(deploy.join("prometheus.yml")).unwrap());
    for file in ["prometheus.yml", "prometheus-tls.yml"] {
        let config = std::fs::read_to_string(deploy.join(file)).unwrap();
        assert!(config.contains("/etc/prometheus/keys/prometheus"), "{file}");
        let jobs = prom::scrape_jobs(&config);
        let summary = |jobs: &[prom::ScrapeJob]| {
            jobs.iter()
                .map(|j| {
                    format!(
                        "{} {} {:?} {:?}",
                        j.name, j.port, j.labels, j.credentials_file
                    )
                })
                .collect::<Vec<_>>()
        };
        assert_eq!(
            summary(&jobs),
            summary(&plain_jobs),
            "{file}: the jobs of prometheus.yml"
        );
        let https = config
            .lines()
            .filter(|l| l.trim() == "scheme: https")
            .count();
        assert_eq!(
            https,
            if file == "prometheus.yml" {
                0
            } else {
                jobs.len()
            },
            "{file}"
        );
        let config = config
            .replace(
                "/etc/prometheus/keys/prometheus",
                &key.display().to_string(),
            )
            .replace("/etc/prometheus/tls/ca.crt", &tls.ca.display().to_string());
        std::fs::write(scratch.join("prometheus.yml"), config).unwrap();
        let checked = Command::new(prom::promtool())
            .args(["check", "config", "prometheus.yml"])
            .current_dir(scratch.path())
            .output()
            .expect("running promtool");
        let out = format!(
            "{}{}",
            String::from_utf8_lossy(&checked.stdout),
            String::from_utf8_lossy(&checked.stderr)
        );
        assert!(
            checked.status.success(),
            "promtool check config deploy/{file}: {out}"
        );
        assert!(
            out.contains("alerts.rules.yml") && out.contains("SUCCESS: 1 rule files found"),
            "deploy/{file} should load alerts.rules.yml: {out}"
        );
    }
    let (ok, out) = promtool(&["check", "rules", "alerts.rules.yml"]);
    assert!(ok, "promtool check rules deploy/alerts.rules.yml: {out}");
    let rules = alert_rules();
    assert!(
        out.contains(&format!("SUCCESS: {} rules found", rules.len())),
        "promtool counts other rules than the {} alerts read here: {out}",
        rules.len()
    );
}

#[test]
fn the_rules_pass_their_unit_tests() {
    let (ok, out) = promtool(&["test", "rules", "alerts.test.yml"]);
    assert!(ok, "promtool test rules deploy/alerts.test.yml:\n{out}");
    assert!(out.contains("SUCCESS"), "{out}");

    // And a wrong expectation does fail: a lag of 0.1 s is not an alert.
    let scratch = Scratch::new("prometheus");
    let wrong = scratch.join("wrong.test.yml");
    std::fs::write(
        &wrong,
        format!(
            "rule_files:\n  - {}\nevaluation_interval: 1m\ntests:\n  - interval: 1m\n    input_series:\n      - series: 'brewlytics_replication_lag_seconds{{instance=\"r1\"}}'\n        values: '0.1x10'\n    alert_rule_test:\n      - eval_time: 5m\n        alertname: BrewlyticsReplicationLag\n        exp_alerts:\n          - exp_labels: {{severity: warning, instance: r1}}\n",
            prom::deploy_dir().join("alerts.rules.yml").display()
        ),
    )
    .unwrap();
    let (ok, out) = promtool(&["test", "rules", wrong.to_str().unwrap()]);
    assert!(
        !ok,
        "promtool passed an expectation that cannot hold: {out}"
    );
    assert!(out.contains("FAILED") && out.contains("got:[]"), "{out}");
}

/// An alerting rule of deploy/alerts.rules.yml, read line by line (the file is ours).
#[derive(Debug, Default)]
struct AlertRule {
    name: String,
    severity: String,
    summary: String,
    runbook_url: String,
}

fn alert_rules() -> Vec<AlertRule> {
    let text = std::fs::read_to_string(prom::deploy_dir().join("alerts.rules.yml"))
        .expect("deploy/alerts.rules.yml");
    let mut rules: Vec<AlertRule> = Vec::new();
    for line in text.lines().map(str::trim) {
        let value = |key: &str| {
            line.strip_prefix(key)
                .map(|v| v.trim().trim_matches('"').to_owned())
        };
        if let Some(name) = value("- alert:") {
            rules.push(AlertRule {
                name,
                ..Default::default()
            });
        } else if let Some(rule) = rules.last_mut() {
            if let Some(v) = value("severity:") {
                rule.severity = v;
            } else if let Some(v) = value("summary:") {
                rule.summary = v;
            } else if let Some(v) = value("runbook_url:") {
                rule.runbook_url = v;
            }
        }
    }
    rules
}

#[test]
fn every_alert_is_labelled_documented_and_tested_both_ways() {
    let rules = alert_rules();
    let names: std::collections::BTreeSet<&str> = rules.iter().map(|r| r.name.as_str()).collect();
    for must in [
        "BrewlyticsReplicatorDown",
        "BrewlyticsReplicatorNotScraped",
        "BrewlyticsReplicatorNotStreaming",
        "BrewlyticsReplicationLag",
        "BrewlyticsSlotRetainedWalHigh",
        "BrewlyticsSlotWalLimitPredicted",
        "BrewlyticsSlotWalUnreserved",
        "BrewlyticsSlotLost",
        "BrewlyticsReplicatorErrors",
        "BrewlyticsDeadLetters",
        "BrewlyticsStarDegraded",
        "BrewlyticsHeartbeatsStale",
        "BrewlyticsApiErrors",
        "BrewlyticsApiLatency",
        "BrewlyticsAuthFailureBurst",
    ] {
        assert!(
            names.contains(must),
            "no alert {must} in deploy/alerts.rules.yml"
        );
    }
    let runbook =
        std::fs::read_to_string(prom::deploy_dir().join("RUNBOOK.md")).expect("deploy/RUNBOOK.md");
    let headings: Vec<&str> = runbook
        .lines()
        .filter_map(|l| l.strip_prefix("## "))
        .map(str::trim)
        .collect();
    for rule in &rules {
        assert!(
            ["critical", "warning"].contains(&rule.severity.as_str()),
            "{rule:?}: severity critical or warning"
        );
        assert!(
            ["$labels.slot", "$labels.instance", "$labels.job"]
                .iter()
                .any(|l| rule.summary.contains(l)),
            "{rule:?}: the summary should name the slot, instance or job"
        );
        assert_eq!(
            rule.runbook_url,
            format!("deploy/RUNBOOK.md#{}", rule.name.to_lowercase()),
            "{rule:?}"
        );
        assert!(
            headings.contains(&rule.name.as_str()),
            "deploy/RUNBOOK.md has no section \"## {}\"",
            rule.name
        );
    }

    // Each alert has a case where it fires and one where it must not.
    let tests = std::fs::read_to_string(prom::deploy_dir().join("alerts.test.yml"))
        .expect("deploy/alerts.test.yml");
    let mut fires = std::collections::BTreeSet::new();
    let mut silent = std::collections::BTreeSet::new();
    let mut current = String::new();
    for line in tests.lines().map(str::trim) {
        if let Some(name) = line.strip_prefix("alertname:") {
            current = name.trim().to_owned();
        } else if let Some(rest) = line.strip_prefix("exp_alerts:") {
            if rest.trim() == "[]" {
                silent.insert(current.clone());
            } else {
                fires.insert(current.clone());
            }
        }
    }
    for name in &names {
        assert!(fires.contains(*name), "no test case where {name} fires");
        assert!(
            silent.contains(*name),
            "no test case where {name} must stay silent"
        );
    }
}

#[test]
fn prometheus_scrapes_the_replicator_and_the_api() {
    // Without Prometheus this fails now, naming the package, not after `up` started.
    prom::prometheus_binary();
    let deploy_text = std::fs::read_to_string(prom::deploy_dir().join("prometheus.yml"))
        .expect("deploy/prometheus.yml");
    let jobs = prom::scrape_jobs(&deploy_text);
    let api_job = jobs
        .iter()
        .find(|j| j.port == 8000)
        .expect("a scrape job for the API (port 8000) in deploy/prometheus.yml");
    let replicator_job = jobs
        .iter()
        .find(|j| j.port == 8001)
        .expect("a scrape job for the replicator (port 8001) in deploy/prometheus.yml");
    for job in &jobs {
        assert!(
            job.credentials_file.is_some(),
            "job {} of deploy/prometheus.yml sends no API key (/metrics needs ops:read)",
            job.name
        );
    }

    let scratch = Scratch::new("prometheus");

    // The pipeline: embedded PostgreSQL, a few seeded orders, API and replicator.
    let mut up_cmd = harness::up::command(&scratch.join("brewlytics"));
    up_cmd.args(["--seed-orders", "20"]).env("RUST_LOG", "info");
    let mut up = Proc::spawn(up_cmd, scratch.join("up.log")).gentle();
    let harness::up::UpAddrs {
        api, replicator, ..
    } = harness::up::wait(&mut up);
    wait_for(
        Duration::from_secs(60),
        "the API's /health",
        &mut [&mut up],
        || match http(&api, "GET", "/health", None) {
            Some((200, _)) => Some(()),
            _ => None,
        },
    );

    // Prometheus with deploy/prometheus.yml's jobs, pointed at this test's ports, with a key
    // that holds ops:read and nothing else.
    let key_file = scratch.join("prometheus.key");
    let made = std::process::Command::new(env!("CARGO_BIN_EXE_brewlytics"))
        .args([
            "api-key",
            "create",
            "--name",
            "prometheus",
            "--scope",
            "ops:read",
        ])
        .arg("--data-dir")
        .arg(scratch.join("brewlytics"))
        .env_remove("OLTP_DATABASE_URL")
        .env_remove("OLAP_DATABASE_URL")
        .output()
        .unwrap();
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    std::fs::write(&key_file, &made.stdout).unwrap();
    let config = prom::test_config(
        &jobs,
        |job| {
            vec![if job.port == 8000 {
                api.clone()
            } else {
                replicator.clone()
            }]
        },
        &key_file,
        &[],
    );
    let config_path = scratch.join("prometheus.yml");
    std::fs::write(&config_path, config).unwrap();
    let (mut prom, prometheus) = prom::start(&config_path, scratch.path());

    // Some API traffic to count: health checks and one order.
    const HEALTH_CHECKS: usize = 5;
    for _ in 0..HEALTH_CHECKS {
        let (status, _) = http(&api, "GET", "/health", None).expect("the API answers");
        assert_eq!(status, 200);
    }
    let order = r#"{"customer_id": 1, "employee_id": 1, "store_id": 1, "payment_method": "card",
                    "items": [{"product_id": 1, "quantity": 2}]}"#;
    let (status, body) = http(&api, "POST", "/orders", Some(order)).expect("the API answers");
    assert_eq!(status, 201, "POST /orders: {body}");
    // And a wrong key, refused and counted.
    let wrong = harness::exchange(
        &api,
        "GET",
        "/stores",
        &[("Authorization", "Bearer brw_wrong")],
        None,
    )
    .expect("the API answers");
    assert_eq!(wrong.status, 401);

    // Both jobs scraped successfully.
    for job in [api_job, replicator_job] {
        let promql = format!("up{{job=\"{}\"}}", job.name);
        wait_for(
            Duration::from_secs(60),
            &format!("{promql} == 1"),
            &mut [&mut up, &mut prom],
            || {
                query(&prometheus, &promql)
                    .first()
                    .filter(|(_, v)| *v == 1.0)
                    .map(|_| ())
            },
        );
    }

    // The replicator's lag, in bytes: present and sane.
    let lag_query = format!(
        "brewlytics_replication_lag_bytes{{job=\"{}\"}}",
        replicator_job.name
    );
    let lag = wait_for(
        Duration::from_secs(60),
        &lag_query,
        &mut [&mut up, &mut prom],
        || query(&prometheus, &lag_query).first().map(|(_, v)| *v),
    );
    assert!(
        lag.is_finite() && (0.0..(1u64 << 30) as f64).contains(&lag),
        "brewlytics_replication_lag_bytes = {lag}"
    );

    // The API's request counter: at least the health checks made above, and the order.
    let health_query = format!(
        "sum(brewlytics_api_requests_total{{job=\"{}\",route=\"/health\",method=\"GET\",status=\"200\"}})",
        api_job.name
    );
    let health = wait_for(
        Duration::from_secs(60),
        &health_query,
        &mut [&mut up, &mut prom],
        || {
            query(&prometheus, &health_query)
                .first()
                .map(|(_, v)| *v)
                .filter(|v| *v >= HEALTH_CHECKS as f64)
        },
    );
    assert!(
        health.fract() == 0.0,
        "a request count that is not whole: {health}"
    );
    let orders_query = format!(
        "sum(brewlytics_api_requests_total{{job=\"{}\",route=\"/orders\",method=\"POST\",status=\"201\"}})",
        api_job.name
    );
    let orders = wait_for(
        Duration::from_secs(60),
        &orders_query,
        &mut [&mut up, &mut prom],
        || query(&prometheus, &orders_query).first().map(|(_, v)| *v),
    );
    assert_eq!(orders, 1.0, "POST /orders answered 201 once");
    let refused_query = format!(
        "sum(brewlytics_auth_failures_total{{job=\"{}\",reason=\"malformed\"}})",
        api_job.name
    );
    let refused = wait_for(
        Duration::from_secs(60),
        &refused_query,
        &mut [&mut up, &mut prom],
        || query(&prometheus, &refused_query).first().map(|(_, v)| *v),
    );
    assert_eq!(refused, 1.0, "the wrong key counted once");
    eprintln!(
        "through Prometheus: replication lag {lag} bytes, GET /health 200 x{health}, POST /orders 201 x{orders}"
    );

    // Stop both; nothing may be left running.
    prom.terminate(Duration::from_secs(30));
    let up_exit = up.terminate(Duration::from_secs(60));
    assert!(
        up_exit.success(),
        "brewlytics up exited with {up_exit}; log:\n{}",
        up.log_text()
    );
    let up_log = up.log_text();
    let password_file = scratch.join("brewlytics/superuser.password");
    if let Ok(password) = std::fs::read_to_string(password_file) {
        assert!(
            !up_log.contains(password.trim()),
            "brewlytics up printed the superuser password"
        );
    }
}
