//! The CLI's first contact with its databases, through the built binary: a second
//! `brewlytics up` in the data directory of a running one says so in one line (its pid, its
//! URLs, what to do) and leaves it untouched; a database nobody listens for is named at once,
//! with its host, port and the OS's reason.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_brewlytics");

/// A scratch directory (under the system's temp dir, which the `postgres` user can reach when
/// the tests run as root), removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("brewlytics-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A child killed (SIGKILL) if still running on drop.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_addr() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().to_string()
}

/// `brewlytics args` with no database URLs from the environment, to completion (≤ `limit`).
fn run(args: &[&str], data_dir: &Path, limit: Duration) -> (Output, Duration) {
    let started = Instant::now();
    let child = Command::new(BIN)
        .args(args)
        .arg("--data-dir")
        .arg(data_dir)
        .env_remove("OLTP_DATABASE_URL")
        .env_remove("OLAP_DATABASE_URL")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let out = rx
        .recv_timeout(limit)
        .unwrap_or_else(|_| panic!("brewlytics {args:?} ran over {limit:?}"))
        .unwrap();
    (out, started.elapsed())
}

fn text(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_second_up_says_who_runs_and_leaves_it_untouched() {
    let scratch = Scratch::new("second-up");
    let data = scratch.0.join("data");
    let (api, replicator, dashboard) = (free_addr(), free_addr(), free_addr());
    let mut first = Running(
        Command::new(BIN)
            .args(["up", "--seed-orders", "0", "--data-dir"])
            .arg(&data)
            .args(["--api-listen", &api, "--replicator-listen", &replicator])
            .args(["--dashboard-listen", &dashboard])
            .env_remove("OLTP_DATABASE_URL")
            .env_remove("OLAP_DATABASE_URL")
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let pid = first.0.id();
    let stdout = first.0.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let line = rx
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .expect("the first `up` printed that it is up within 180 s");
        if line.starts_with("Press Ctrl-C") {
            break;
        }
    }
    let claim = data.join("brewlytics.up");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !std::fs::read_to_string(&claim).is_ok_and(|t| t.contains("dashboard=")) {
        assert!(
            Instant::now() < deadline,
            "no endpoints in {}",
            claim.display()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let pgdata = data.join("pgdata");
    let files = |names: &[&str]| -> Vec<String> {
        names
            .iter()
            .map(|n| std::fs::read_to_string(pgdata.join(n)).unwrap_or_default())
            .collect()
    };
    let watched = ["brewlytics.port.conf", "brewlytics.conf", "postmaster.pid"];
    let before = files(&watched);
    let password = std::fs::read_to_string(data.join("superuser.password")).unwrap();

    // The second: other ports, same directory.
    let (out, took) = run(
        &[
            "up",
            "--api-listen",
            &free_addr(),
            "--replicator-listen",
            &free_addr(),
            "--dashboard-listen",
            &free_addr(),
        ],
        &data,
        Duration::from_secs(60),
    );
    let (so, se) = text(&out);
    assert!(!out.status.success(), "the second `up` started: {so}{se}");
    assert!(took < Duration::from_secs(10), "it took {took:?} to say so");
    assert!(so.is_empty(), "stdout: {so}");
    let lines: Vec<&str> = se.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "one line, not: {se}");
    let line = lines[0];
    let data_shown = std::fs::canonicalize(&data).unwrap();
    for needle in [
        format!(
            "brewlytics up is already running in {}",
            data_shown.display()
        ),
        format!("pid {pid}"),
        format!("API http://{api}"),
        format!("replicator http://{replicator}"),
        format!("dashboard http://{dashboard}"),
        format!("`kill {pid}`"),
        "--data-dir".to_owned(),
    ] {
        assert!(line.contains(&needle), "{needle:?} not in {line:?}");
    }

    // Nothing of the running one was touched, and it still serves every command.
    assert_eq!(files(&watched), before);
    assert_eq!(
        std::fs::read_to_string(data.join("superuser.password")).unwrap(),
        password
    );
    let (out, _) = run(&["status", "--json"], &data, Duration::from_secs(60));
    let (so, se) = text(&out);
    assert!(out.status.success(), "status of the first failed: {so}{se}");
    let status: serde_json::Value = serde_json::from_str(&so).unwrap();
    assert_eq!(status["slot_name"], "brewlytics", "{so}");

    // Stopped, it releases the directory.
    assert!(Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap()
        .success());
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(s) = first.0.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "up did not stop within 60 s");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(status.success(), "{status}");
    assert!(!claim.exists(), "the claim outlived its `up`");
}

#[test]
fn an_unreachable_database_is_named_at_once() {
    let scratch = Scratch::new("unreachable");
    // A port nobody listens on: bound, then released.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = |db: &str| format!("postgres://brewlytics:s3cret@127.0.0.1:{port}/{db}");
    for args in [
        &["status"][..],
        &["migrate"],
        &["report", "daily-revenue"],
        &["up", "--api-listen", "127.0.0.1:0"],
    ] {
        let started = Instant::now();
        let out = Command::new(BIN)
            .args(args)
            .arg("--data-dir")
            .arg(&scratch.0)
            .env("OLTP_DATABASE_URL", url("coffee_oltp"))
            .env("OLAP_DATABASE_URL", url("coffee_olap"))
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let took = started.elapsed();
        let (so, se) = text(&out);
        assert!(!out.status.success(), "{args:?}: {so}{se}");
        assert!(took < Duration::from_secs(5), "{args:?} took {took:?}");
        let expected = format!("cannot reach PostgreSQL at 127.0.0.1:{port}");
        assert!(se.contains(&expected), "{args:?}: {se}");
        assert!(se.contains("Connection refused"), "{args:?}: {se}");
        assert!(
            !se.contains("s3cret") && !se.contains("pool timed out"),
            "{args:?}: {se}"
        );
    }
}
