//! `brewlytics loadtest` end to end: `brewlytics up` on a throwaway data directory (embedded
//! PostgreSQL, API, replicator), then a short low-rate load test whose JSON report must show
//! successful requests and freshness samples that reached OLAP. Also parse-checks the k6
//! script with node.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_brewlytics");

/// A free loopback port in 28000–28999 (the range this test may use).
fn free_port(avoid: &[u16]) -> u16 {
    let start = 28000 + (std::process::id() % 1000) as u16;
    (0..1000)
        .map(|i| 28000 + (start - 28000 + i * 7) % 1000)
        .find(|p| !avoid.contains(p) && TcpListener::bind(("127.0.0.1", *p)).is_ok())
        .expect("a free port in 28000-28999")
}

/// `brewlytics up`, stopped with SIGTERM (and waited for) when dropped, even on panic.
struct Up {
    child: Child,
    dir: PathBuf,
    log: PathBuf,
}

impl Up {
    fn start(dir: &Path, api: u16, replicator: u16) -> Self {
        std::fs::create_dir_all(dir).unwrap();
        let log = dir.join("up.log");
        let out = std::fs::File::create(&log).unwrap();
        let child = Command::new(BIN)
            .args(["up", "--data-dir"])
            .arg(dir.join("data"))
            .args(["--api-listen", &format!("127.0.0.1:{api}")])
            .args(["--replicator-listen", &format!("127.0.0.1:{replicator}")])
            .args(["--seed-orders", "20"])
            .env_remove("OLTP_DATABASE_URL")
            .env_remove("OLAP_DATABASE_URL")
            .env_remove("API_LISTEN")
            .env_remove("REPLICATOR_LISTEN")
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .expect("spawning brewlytics up");
        Self {
            child,
            dir: dir.to_path_buf(),
            log,
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits (≤ 180 s) until the API accepts connections and `up` says it is up.
    fn wait_ready(&mut self, api: u16) {
        let addr: SocketAddr = ([127, 0, 0, 1], api).into();
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("brewlytics up exited early ({status}):\n{}", self.log());
            }
            if self.log().contains("Brewlytics is up.")
                && TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
            {
                return;
            }
            assert!(
                start.elapsed() < Duration::from_secs(180),
                "brewlytics up not ready after 180 s:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for Up {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(30) {
            if let Ok(Some(_)) = self.child.try_wait() {
                let _ = std::fs::remove_dir_all(&self.dir);
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn a_short_load_test_reports_requests_and_freshness() {
    let dir = std::env::temp_dir().join(format!("brewlytics-loadtest-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let api = free_port(&[]);
    let replicator = free_port(&[api]);
    let mut up = Up::start(&dir, api, replicator);
    up.wait_ready(api);

    let out = Command::new(BIN)
        .args(["loadtest", "--data-dir"])
        .arg(dir.join("data"))
        .args(["--api", &format!("http://127.0.0.1:{api}")])
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
        up.log()
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

    drop(up);
    assert!(!dir.exists(), "up stopped and its directory was removed");
}

/// The k6 script must stay valid JavaScript (k6 itself is not installed here).
#[test]
fn the_k6_script_parses() {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("loadtest/k6/orders.js");
    let source = std::fs::read_to_string(&script).expect("loadtest/k6/orders.js exists");
    assert!(source.contains("__ENV"), "knobs come from __ENV");
    let node = ["/usr/bin/node", "node"]
        .into_iter()
        .find(|n| Command::new(n).arg("--version").output().is_ok())
        .expect("node is needed to parse-check loadtest/k6/orders.js (apt-get install nodejs)");
    // k6 scripts are ES modules: check as one, with k6's own imports left unresolved.
    let tmp = std::env::temp_dir().join(format!("brewlytics-k6-{}.mjs", std::process::id()));
    std::fs::write(&tmp, &source).unwrap();
    let out = Command::new(node)
        .arg("--check")
        .arg(&tmp)
        .output()
        .unwrap();
    let _ = std::fs::remove_file(&tmp);
    assert!(
        out.status.success(),
        "node --check failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
