//! A real Prometheus in the tests: its binaries (Debian's `prometheus` package), the server
//! started on a free port, its HTTP API (instant queries, active alerts), and the scrape jobs
//! of deploy/prometheus.yml turned into a configuration that points at the test's ports.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use brewlytics_support::ports;
use serde_json::Value;

use super::{free_addr, http, Proc};

/// The repository's deploy/ directory.
pub fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy")
}

/// `prometheus` (PROMETHEUS_BIN, /usr/bin/prometheus or on PATH). A missing binary fails the
/// test, naming the package: a check that cannot run is not a check that passed.
pub fn prometheus_binary() -> PathBuf {
    find_binary("PROMETHEUS_BIN", "prometheus")
}

/// `promtool`, from the same package (PROMTOOL_BIN, beside prometheus, or on PATH).
pub fn promtool() -> PathBuf {
    if std::env::var_os("PROMTOOL_BIN").is_none() {
        let beside = prometheus_binary().with_file_name("promtool");
        if beside.is_file() {
            return beside;
        }
    }
    find_binary("PROMTOOL_BIN", "promtool")
}

fn find_binary(var: &str, name: &str) -> PathBuf {
    if let Some(p) = std::env::var_os(var) {
        return PathBuf::from(p);
    }
    let default = Path::new("/usr/bin").join(name);
    if default.is_file() {
        return default;
    }
    std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("{name} not found (apt-get install prometheus, or set {var})"))
}

/// Percent-encodes a query-string value.
pub fn encode(s: &str) -> String {
    brewlytics_support::web::percent_encode(s)
}

/// An instant query through Prometheus's HTTP API: each series' labels and value (NaN and
/// ±Inf included). Err with the server's answer when the query is refused or nothing answers.
pub fn try_query(prometheus: &str, promql: &str) -> Result<Vec<(Value, f64)>, String> {
    let (status, body) = http(
        prometheus,
        "GET",
        &format!("/api/v1/query?query={}", encode(promql)),
        None,
    )
    .ok_or_else(|| format!("no answer from Prometheus at {prometheus}"))?;
    if status == 503 {
        // Prometheus answers 503 until its storage is ready (after a start or a reload).
        return Err(format!(
            "no answer yet from Prometheus at {prometheus}: {body}"
        ));
    }
    let json: Value = serde_json::from_str(&body).map_err(|e| format!("{e}: {body}"))?;
    if status != 200 || json["status"] != "success" {
        return Err(format!("{status}: {body}"));
    }
    let series = json["data"]["result"]
        .as_array()
        .ok_or_else(|| format!("not a vector: {body}"))?;
    Ok(series
        .iter()
        .filter_map(|s| {
            let v: f64 = match s["value"][1].as_str()? {
                "NaN" => f64::NAN,
                "+Inf" => f64::INFINITY,
                "-Inf" => f64::NEG_INFINITY,
                v => v.parse().ok()?,
            };
            Some((s["metric"].clone(), v))
        })
        .collect())
}

/// [`try_query`], with nothing for no answer; panics on a refused query (a bug in the test).
pub fn query(prometheus: &str, promql: &str) -> Vec<(Value, f64)> {
    match try_query(prometheus, promql) {
        Ok(v) => v,
        Err(e) if e.starts_with("no answer") => Vec::new(),
        Err(e) => panic!("query {promql}: {e}"),
    }
}

/// The alerts Prometheus holds now (`/api/v1/alerts`: pending and firing), each with its
/// labels, annotations and state.
pub fn active_alerts(prometheus: &str) -> Vec<Value> {
    let Some((200, body)) = http(prometheus, "GET", "/api/v1/alerts", None) else {
        return Vec::new();
    };
    let json: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
    json["data"]["alerts"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// A scrape job of deploy/prometheus.yml: its name, metrics path, the port it targets, its
/// target labels, and the file of the API key it sends (`authorization: credentials_file`).
#[derive(Debug)]
pub struct ScrapeJob {
    pub name: String,
    pub metrics_path: String,
    pub port: u16,
    pub labels: Vec<(String, String)>,
    pub credentials_file: Option<String>,
}

/// Reads the scrape jobs of a Prometheus configuration written like deploy/prometheus.yml:
/// `- job_name:` blocks, each naming port 8000 (the API) or 8001 (the replicator) in its
/// targets, optionally with `labels:` and an `authorization:` block's `credentials_file:`. No
/// YAML library: the file is ours and simple; the
/// tests fail if it changes shape.
pub fn scrape_jobs(text: &str) -> Vec<ScrapeJob> {
    let mut jobs: Vec<ScrapeJob> = Vec::new();
    let mut ports: Vec<Vec<u16>> = Vec::new();
    let mut labels_indent: Option<usize> = None;
    for line in text.lines() {
        let code = line.split('#').next().unwrap_or("").trim_end();
        let indent = code.len() - code.trim_start().len();
        let code = code.trim();
        if code.is_empty() {
            continue;
        }
        if let Some(name) = code.strip_prefix("- job_name:") {
            jobs.push(ScrapeJob {
                name: unquote(name),
                metrics_path: "/metrics".into(),
                port: 0,
                labels: Vec::new(),
                credentials_file: None,
            });
            ports.push(Vec::new());
            labels_indent = None;
            continue;
        }
        let (Some(job), Some(seen)) = (jobs.last_mut(), ports.last_mut()) else {
            continue;
        };
        match labels_indent {
            Some(i) if indent > i => {
                if let Some((k, v)) = code.split_once(':') {
                    job.labels.push((k.trim().to_owned(), unquote(v)));
                }
                continue;
            }
            _ => labels_indent = None,
        }
        if code == "labels:" {
            labels_indent = Some(indent);
        } else if let Some(path) = code.strip_prefix("metrics_path:") {
            job.metrics_path = unquote(path);
        } else if let Some(file) = code.strip_prefix("credentials_file:") {
            job.credentials_file = Some(unquote(file));
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

fn unquote(s: &str) -> String {
    s.trim().trim_matches('"').to_owned()
}

/// A configuration with deploy/prometheus.yml's jobs (names, paths, labels), each scraping
/// `targets(job)` every second — with the API key in `key_file` where the job sends one —;
/// evaluating `rule_files` every second.
pub fn test_config(
    jobs: &[ScrapeJob],
    targets: impl Fn(&ScrapeJob) -> Vec<String>,
    key_file: &Path,
    rule_files: &[PathBuf],
) -> String {
    let mut config = String::from(
        "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n",
    );
    if !rule_files.is_empty() {
        config.push_str("rule_files:\n");
        for f in rule_files {
            config.push_str(&format!("  - \"{}\"\n", f.display()));
        }
    }
    config.push_str("scrape_configs:\n");
    for job in jobs {
        let targets: Vec<String> = targets(job).iter().map(|t| format!("\"{t}\"")).collect();
        config.push_str(&format!(
            "  - job_name: \"{}\"\n    metrics_path: \"{}\"\n",
            job.name, job.metrics_path,
        ));
        if job.credentials_file.is_some() {
            config.push_str(&format!(
                "    authorization:\n      type: Bearer\n      credentials_file: \"{}\"\n",
                key_file.display()
            ));
        }
        config.push_str(&format!(
            "    static_configs:\n      - targets: [{}]\n",
            targets.join(", ")
        ));
        if !job.labels.is_empty() {
            config.push_str("        labels:\n");
            for (k, v) in &job.labels {
                config.push_str(&format!("          {k}: \"{v}\"\n"));
            }
        }
    }
    config
}

/// Prometheus on `config`, its storage and log (`prometheus.log`) under `dir`, on a free port,
/// ready (≤ 60 s): the process and its address. Started again on another port if its port was
/// taken before it bound it.
pub fn start(config: &Path, dir: &Path) -> (Proc, String) {
    let log = dir.join("prometheus.log");
    ports::retry_in_use(
        3,
        || {
            let addr = free_addr();
            let mut cmd = Command::new(prometheus_binary());
            cmd.arg(format!("--config.file={}", config.display()))
                .arg(format!(
                    "--storage.tsdb.path={}",
                    dir.join("tsdb").display()
                ))
                .arg(format!("--web.listen-address={addr}"))
                .arg("--log.level=warn");
            let mut server = Proc::spawn(cmd, log.clone());
            let start = Instant::now();
            while !matches!(http(&addr, "GET", "/-/ready", None), Some((200, _))) {
                if server.exited().is_some() {
                    return Err(server.log_text());
                }
                assert!(
                    start.elapsed() < Duration::from_secs(60),
                    "Prometheus not ready within 60 s; log:\n{}",
                    server.log_text()
                );
                std::thread::sleep(Duration::from_millis(250));
            }
            Ok((server, addr))
        },
        |log| ports::says_in_use(log),
    )
    .unwrap_or_else(|log| panic!("Prometheus did not start; log:\n{log}"))
}
