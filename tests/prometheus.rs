//! deploy/prometheus.yml against a real Prometheus server: `brewlytics up` (embedded
//! PostgreSQL, API and replicator on free loopback ports) is scraped by `prometheus` with the
//! scrape jobs of deploy/prometheus.yml (targets rewritten to the test's ports, 1 s interval),
//! and the replicator's lag and the API's request counts are read back through Prometheus's
//! HTTP API. Both servers are stopped with SIGTERM at the end (and killed by their guards if
//! the test fails first).
//!
//! Needs the `prometheus` package (/usr/bin/prometheus; `.ci/run` installs it). Without it
//! the test fails, naming the package: a check that cannot run is not a check that passed.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// A child process killed (and reaped) when dropped.
struct Proc {
    name: &'static str,
    child: Option<Child>,
    log: PathBuf,
}

impl Proc {
    fn spawn(name: &'static str, mut cmd: Command, log: PathBuf) -> Self {
        let file = std::fs::File::create(&log).expect("creating a log file");
        cmd.stdin(Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file);
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("starting {name}: {e}"));
        Self {
            name,
            child: Some(child),
            log,
        }
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Panics (with the log) if the process has exited.
    fn assert_running(&mut self) {
        if let Some(c) = self.child.as_mut() {
            if let Ok(Some(status)) = c.try_wait() {
                self.child = None;
                panic!(
                    "{} exited early ({status}); log:\n{}",
                    self.name,
                    self.log_text()
                );
            }
        }
    }

    /// SIGTERM, then wait up to `within`; None if it is still running (the guard kills it).
    fn terminate(&mut self, within: Duration) -> Option<ExitStatus> {
        let child = self.child.as_mut()?;
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let start = Instant::now();
        while start.elapsed() < within {
            if let Ok(Some(status)) = child.try_wait() {
                self.child = None;
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        None
    }
}

impl Drop for Proc {
    /// SIGTERM first, so `brewlytics up` stops its embedded PostgreSQL itself; SIGKILL after
    /// 30 s (its cluster's watchdog then stops the server).
    fn drop(&mut self) {
        if self.child.is_some() && self.terminate(Duration::from_secs(30)).is_none() {
            if let Some(mut c) = self.child.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
}

/// A scratch directory removed on drop (after the processes using it: declare it first).
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        let dir = std::env::temp_dir().join(format!(
            "brewlytics-prometheus-{}-{nanos:x}",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir).expect("scratch directory");
        Self(dir)
    }
}

impl Drop for Scratch {
    /// Waits (≤ 15 s) for an embedded PostgreSQL still shutting down in here before removing
    /// the directory: its watchdog needs the data directory to stop it.
    fn drop(&mut self) {
        let pid_file = self.0.join("brewlytics/pgdata/postmaster.pid");
        let start = Instant::now();
        while pid_file.exists() && start.elapsed() < Duration::from_secs(15) {
            std::thread::sleep(Duration::from_millis(200));
        }
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn free_addr() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
    l.local_addr().unwrap().to_string()
}

/// One HTTP/1.0 exchange (the server closes the connection, so the body needs no framing).
/// Returns (status, body) or None when nothing answers.
fn http(addr: &str, method: &str, path: &str, body: Option<&str>) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect(addr).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .ok()?;
    stream
        .set_write_timeout(Some(Duration::from_secs(10)))
        .ok()?;
    let mut request = format!("{method} {path} HTTP/1.0\r\nHost: {addr}\r\n");
    if let Some(b) = body {
        request.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            b.len()
        ));
    }
    request.push_str("\r\n");
    if let Some(b) = body {
        request.push_str(b);
    }
    stream.write_all(request.as_bytes()).ok()?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).ok()?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text.split_once("\r\n\r\n")?;
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, body.to_owned()))
}

/// Percent-encodes a query-string value.
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// An instant query through Prometheus's HTTP API: each series' labels and value.
fn query(prometheus: &str, promql: &str) -> Vec<(Value, f64)> {
    let Some((200, body)) = http(
        prometheus,
        "GET",
        &format!("/api/v1/query?query={}", encode(promql)),
        None,
    ) else {
        return Vec::new();
    };
    let json: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
    assert_eq!(json["status"], "success", "query {promql}: {body}");
    json["data"]["result"]
        .as_array()
        .map(|series| {
            series
                .iter()
                .filter_map(|s| {
                    let v: f64 = s["value"][1].as_str()?.parse().ok()?;
                    Some((s["metric"].clone(), v))
                })
                .collect()
        })
        .unwrap_or_default()
}

/// A scrape job of deploy/prometheus.yml: its name, metrics path and the port it targets.
#[derive(Debug)]
struct Job {
    name: String,
    metrics_path: String,
    port: u16,
}

/// Reads the scrape jobs of a Prometheus configuration written like deploy/prometheus.yml:
/// `- job_name:` blocks, each naming port 8000 (the API) or 8001 (the replicator) in its
/// targets. No YAML library: the file is ours and simple; the test fails if it changes shape.
fn scrape_jobs(text: &str) -> Vec<Job> {
    let mut jobs: Vec<Job> = Vec::new();
    let mut ports: Vec<Vec<u16>> = Vec::new();
    for line in text.lines() {
        let code = line.split('#').next().unwrap_or("").trim();
        if let Some(name) = code.strip_prefix("- job_name:") {
            jobs.push(Job {
                name: name.trim().trim_matches('"').to_owned(),
                metrics_path: "/metrics".into(),
                port: 0,
            });
            ports.push(Vec::new());
            continue;
        }
        let (Some(job), Some(seen)) = (jobs.last_mut(), ports.last_mut()) else {
            continue;
        };
        if let Some(path) = code.strip_prefix("metrics_path:") {
            job.metrics_path = path.trim().trim_matches('"').to_owned();
        }
        for port in [8000u16, 8001] {
            let p = port.to_string();
            if code.contains(&format!(":{p}\"")) || code.contains(&format!("port: {p}")) {
                seen.push(port);
            }
        }
    }
    for (job, seen) in jobs.iter_mut().zip(ports) {
        assert_eq!(
            seen.len(),
            1,
            "job {} in deploy/prometheus.yml should target exactly one of port 8000 (API) or 8001 (replicator)",
            job.name
        );
        job.port = seen[0];
    }
    jobs
}

fn prometheus_binary() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("PROMETHEUS_BIN") {
        return Some(PathBuf::from(p));
    }
    let default = Path::new("/usr/bin/prometheus");
    if default.is_file() {
        return Some(default.to_path_buf());
    }
    std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
        .map(|d| d.join("prometheus"))
        .find(|p| p.is_file())
}

/// Waits until `check` returns Some, up to `within`; panics with `what` and the logs.
fn wait_for<T>(
    within: Duration,
    what: &str,
    procs: &mut [&mut Proc],
    mut check: impl FnMut() -> Option<T>,
) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = check() {
            return v;
        }
        for p in procs.iter_mut() {
            p.assert_running();
        }
        if start.elapsed() > within {
            let logs: String = procs
                .iter()
                .map(|p| format!("--- {} log:\n{}\n", p.name, p.log_text()))
                .collect();
            panic!("{what}: nothing within {within:?}\n{logs}");
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

#[test]
fn prometheus_scrapes_the_replicator_and_the_api() {
    let Some(prometheus_bin) = prometheus_binary() else {
        panic!("prometheus not found (apt-get install prometheus, or set PROMETHEUS_BIN)");
    };
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let deploy_config = root.join("deploy/prometheus.yml");
    let deploy_text = std::fs::read_to_string(&deploy_config).expect("deploy/prometheus.yml");

    // The shipped file is valid (promtool comes with the prometheus package).
    let promtool = prometheus_bin.with_file_name("promtool");
    if promtool.is_file() {
        let out = Command::new(&promtool)
            .args(["check", "config"])
            .arg(&deploy_config)
            .output()
            .expect("running promtool");
        assert!(
            out.status.success(),
            "promtool check config deploy/prometheus.yml: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    let jobs = scrape_jobs(&deploy_text);
    let api_job = jobs
        .iter()
        .find(|j| j.port == 8000)
        .expect("a scrape job for the API (port 8000) in deploy/prometheus.yml");
    let replicator_job = jobs
        .iter()
        .find(|j| j.port == 8001)
        .expect("a scrape job for the replicator (port 8001) in deploy/prometheus.yml");

    let scratch = Scratch::new();
    let api = free_addr();
    let replicator = free_addr();
    let dashboard = free_addr();
    let prometheus = free_addr();

    // The pipeline: embedded PostgreSQL, a few seeded orders, API and replicator.
    let mut up_cmd = Command::new(env!("CARGO_BIN_EXE_brewlytics"));
    up_cmd
        .args(["up", "--seed-orders", "20", "--data-dir"])
        .arg(scratch.0.join("brewlytics"))
        .env("API_LISTEN", &api)
        .env("REPLICATOR_LISTEN", &replicator)
        .env("DASHBOARD_LISTEN", &dashboard)
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .env_remove("OLTP_DATABASE_URL")
        .env_remove("OLAP_DATABASE_URL");
    let mut up = Proc::spawn("brewlytics up", up_cmd, scratch.0.join("up.log"));
    wait_for(
        Duration::from_secs(180),
        "the API's /health",
        &mut [&mut up],
        || match http(&api, "GET", "/health", None) {
            Some((200, _)) => Some(()),
            _ => None,
        },
    );

    // Prometheus with deploy/prometheus.yml's jobs, pointed at this test's ports.
    let mut config = String::from(
        "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\nscrape_configs:\n",
    );
    for job in &jobs {
        let target = if job.port == 8000 { &api } else { &replicator };
        config.push_str(&format!(
            "  - job_name: \"{}\"\n    metrics_path: \"{}\"\n    static_configs:\n      - targets: [\"{}\"]\n",
            job.name, job.metrics_path, target
        ));
    }
    let config_path = scratch.0.join("prometheus.yml");
    std::fs::write(&config_path, config).unwrap();
    let mut prom_cmd = Command::new(&prometheus_bin);
    prom_cmd
        .arg(format!("--config.file={}", config_path.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            scratch.0.join("tsdb").display()
        ))
        .arg(format!("--web.listen-address={prometheus}"))
        .arg("--log.level=warn");
    let mut prom = Proc::spawn("prometheus", prom_cmd, scratch.0.join("prometheus.log"));
    wait_for(
        Duration::from_secs(60),
        "Prometheus ready",
        &mut [&mut up, &mut prom],
        || match http(&prometheus, "GET", "/-/ready", None) {
            Some((200, _)) => Some(()),
            _ => None,
        },
    );

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
    eprintln!(
        "through Prometheus: replication lag {lag} bytes, GET /health 200 x{health}, POST /orders 201 x{orders}"
    );

    // Stop both; nothing may be left running.
    let prom_exit = prom.terminate(Duration::from_secs(30));
    assert!(
        prom_exit.is_some(),
        "prometheus did not stop within 30 s of SIGTERM"
    );
    let up_exit = up.terminate(Duration::from_secs(60));
    match up_exit {
        Some(s) if s.success() => {}
        Some(s) => panic!("brewlytics up exited with {s}; log:\n{}", up.log_text()),
        None => panic!(
            "brewlytics up did not stop within 60 s of SIGTERM; log:\n{}",
            up.log_text()
        ),
    }
    let up_log = up.log_text();
    let password_file = scratch.0.join("brewlytics/superuser.password");
    if let Ok(password) = std::fs::read_to_string(password_file) {
        assert!(
            !up_log.contains(password.trim()),
            "brewlytics up printed the superuser password"
        );
    }
}
