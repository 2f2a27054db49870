//! The CLI's first contact with its databases, through the built binary: a second
//! `brewlytics up` in the data directory of a running one says so in one line (its pid, its
//! URLs, what to do) and leaves it untouched; a database nobody listens for is named at once,
//! with its host, port and the OS's reason.

mod harness;

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use harness::{free_port, Proc, Scratch};

const BIN: &str = env!("CARGO_BIN_EXE_brewlytics");

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
    let data = scratch.join("data");
    let mut up = harness::up::command(&data);
    up.args(["--seed-orders", "0"]).env("RUST_LOG", "warn");
    let mut first = Proc::spawn(up, scratch.join("first-up.log")).gentle();
    let pid = first.pid();
    let harness::up::UpAddrs {
        api,
        replicator,
        dashboard,
        ..
    } = harness::up::wait(&mut first);
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
            "127.0.0.1:0",
            "--replicator-listen",
            "127.0.0.1:0",
            "--dashboard-listen",
            "127.0.0.1:0",
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
    let status = first.terminate(Duration::from_secs(60));
    assert!(status.success(), "{status}");
    assert!(!claim.exists(), "the claim outlived its `up`");
}

#[test]
fn an_unreachable_database_is_named_at_once() {
    let scratch = Scratch::new("unreachable");
    // A port nobody listens on (leased: no other test's server is given it).
    let port = free_port();
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
            .arg(scratch.path())
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
