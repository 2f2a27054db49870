//! `brewlytics loadtest` end to end: `brewlytics up` on a throwaway data directory (embedded
//! PostgreSQL, API, replicator, on ports they chose), then a short low-rate load test whose
//! JSON report must show successful requests and freshness samples that reached OLAP — with
//! the API key `up` wrote, which the load generator takes from the data directory (a wrong
//! `BREWLYTICS_API_KEY` stops it at once, saying so). Also parse-checks the k6 script with
//! node.

mod harness;

use std::path::Path;
use std::process::{Command, Stdio};

use harness::{Proc, Scratch};

const BIN: &str = env!("CARGO_BIN_EXE_brewlytics");

#[test]
fn a_short_load_test_reports_requests_and_freshness() {
    let scratch = Scratch::new("loadtest");
    let data = scratch.join("data");
    let mut up = harness::up::command(&data);
    up.args(["--seed-orders", "20"]);
    let mut up = Proc::spawn(up, scratch.join("up.log")).gentle();
    let api = harness::up::wait(&mut up).api;

    let out = Command::new(BIN)
        .args(["loadtest", "--data-dir"])
        .arg(&data)
        .args(["--api", &format!("http://{api}")])
        .args(["--duration", "5s", "--rate", "20", "--json", "--seed", "42"])
        .args(["--freshness-wait", "60s"])
        .env_remove("OLTP_DATABASE_URL")
        .env_remove("OLAP_DATABASE_URL")
        .stdin(Stdio::null())
        .output()
        .expect("running brewlytics loadtest");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "loadtest failed: {stderr}\n{stdout}\nup's log:\n{}",
        up.log_text()
    );
    let report: serde_json::Value = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {stdout}\n{stderr}"));

    // 5 s at 20 req/s: 100 scheduled requests, all answered with success.
    assert_eq!(report["mode"], "open");
    assert_eq!(report["requests"], 100, "{report:#}");
    assert_eq!(report["errors"], 0, "{report:#}");
    let endpoints = report["endpoints"].as_array().unwrap();
    let orders = endpoints
        .iter()
        .find(|e| e["endpoint"] == "POST /orders")
        .expect("orders were placed");
    assert!(orders["requests"].as_u64().unwrap() > 20, "{report:#}");
    assert!(orders["latency_ms"]["p99"].as_f64().unwrap() > 0.0);
    assert!(
        endpoints
            .iter()
            .any(|e| e["endpoint"] == "PATCH /orders/{id}"),
        "statuses were advanced: {report:#}"
    );

    // Every sampled order reached fact_sales.
    let fresh = &report["freshness"];
    assert!(fresh["sampled"].as_u64().unwrap() > 20, "{report:#}");
    assert_eq!(fresh["arrived"], fresh["sampled"], "{report:#}");
    assert_eq!(fresh["missing"], 0, "{report:#}");
    assert!(fresh["latency_ms"]["p50"].as_f64().unwrap() > 0.0);

    // A key the API refuses stops the load test before any load, naming the variable.
    let out = Command::new(BIN)
        .args(["loadtest", "--no-freshness", "--duration", "2s"])
        .args(["--api", &format!("http://{api}")])
        .env(
            "BREWLYTICS_API_KEY",
            "brw_0123456789abcdef_wrongwrongwrongwrongwrongwrongwrongwrongwro",
        )
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("401") && stderr.contains("BREWLYTICS_API_KEY"),
        "{stderr}"
    );

    let status = up.terminate(std::time::Duration::from_secs(60));
    assert!(status.success(), "up: {status}; log:\n{}", up.log_text());
}

/// The k6 script must stay valid JavaScript (k6 itself is not installed here).
#[test]
fn the_k6_script_parses() {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("loadtest/k6/orders.js");
    let source = std::fs::read_to_string(&script).expect("loadtest/k6/orders.js exists");
    assert!(source.contains("__ENV"), "knobs come from __ENV");
    assert!(
        source.contains("__ENV.BREWLYTICS_API_KEY") && source.contains("Authorization: `Bearer"),
        "the key comes from BREWLYTICS_API_KEY"
    );
    let node = ["/usr/bin/node", "node"]
        .into_iter()
        .find(|n| Command::new(n).arg("--version").output().is_ok())
        .expect("node is needed to parse-check loadtest/k6/orders.js (apt-get install nodejs)");
    // k6 scripts are ES modules: check as one, with k6's own imports left unresolved.
    let scratch = Scratch::new("k6");
    let tmp = scratch.join("orders.mjs");
    std::fs::write(&tmp, &source).unwrap();
    let out = Command::new(node)
        .arg("--check")
        .arg(&tmp)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "node --check failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
