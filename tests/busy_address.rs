//! A listening address that is already taken, for every listener of `up` and of the
//! standalone `api`, `replicate`, `dashboard` and `load`: the command binds before it announces
//! or starts anything, so it stops at once with one line — the address, the service that
//! wanted it, the flag and environment variable that move it — exits non-zero (not a panic),
//! prints nothing on stdout, and leaves nothing running (no embedded PostgreSQL, no process
//! that names its data directory).

mod harness;

use std::net::TcpListener;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use harness::{free_addr, free_port, Scratch};

const BIN: &str = env!("CARGO_BIN_EXE_brewlytics");

/// A listener on a leased address: the address is busy while it lives. Should something
/// outside the leases take the port between the lease and the bind, another is leased.
fn busy() -> (TcpListener, String) {
    for _ in 0..5 {
        let addr = free_addr();
        match TcpListener::bind(&addr) {
            Ok(listener) => return (listener, addr),
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => continue,
            Err(e) => panic!("binding {addr}: {e}"),
        }
    }
    panic!("five leased addresses were all taken before they could be bound");
}

/// Runs `cmd` to its end (it must end within 20 s): the output and how long it took.
fn run(mut cmd: Command) -> (Output, Duration) {
    let started = Instant::now();
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > Duration::from_secs(20) {
            let _ = child.kill();
            panic!("{cmd:?} still runs after 20 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    (child.wait_with_output().unwrap(), started.elapsed())
}

/// The refusal: one line on stderr naming `addr`, the service and how to move it; exit 1.
fn assert_refused(
    what: &str,
    out: &Output,
    took: Duration,
    addr: &str,
    service: &str,
    flag: &str,
    env: &str,
) {
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{what}: exit {}; stdout: {stdout}; stderr: {stderr}",
        out.status
    );
    assert!(took < Duration::from_secs(10), "{what} took {took:?}");
    assert!(stdout.is_empty(), "{what} announced something: {stdout}");
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "{what}: one line, not: {stderr}");
    let expected = format!(
        "error: {addr} is already in use, so the {service} cannot listen there: stop what holds \
         it, or move the {service} with {flag} ADDR (or {env}=ADDR)"
    );
    assert_eq!(lines[0], expected, "{what}");
}

/// Processes whose command line names `dir` (an embedded PostgreSQL, its watchdog).
fn processes_naming(dir: &Path) -> Vec<String> {
    let needle = dir.to_string_lossy().into_owned();
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().parse::<u32>().is_ok())
        .filter_map(|e| {
            let raw = std::fs::read(e.path().join("cmdline")).ok()?;
            let line = String::from_utf8_lossy(&raw).replace('\0', " ");
            line.contains(&needle)
                .then(|| format!("{}: {line}", e.file_name().to_string_lossy()))
        })
        .collect()
}

#[test]
fn up_stops_in_one_line_when_any_of_its_addresses_is_taken() {
    for (i, (service, flag, env)) in [
        ("API", "--api-listen", "API_LISTEN"),
        ("replicator", "--replicator-listen", "REPLICATOR_LISTEN"),
        ("dashboard", "--dashboard-listen", "DASHBOARD_LISTEN"),
    ]
    .into_iter()
    .enumerate()
    {
        let scratch = Scratch::new("busy-up");
        let data = scratch.join("data");
        let (_held, addr) = busy();
        // The others on port 0: only this one is taken.
        let mut addrs = ["127.0.0.1:0"; 3];
        addrs[i] = &addr;
        let (out, took) = run(harness::up::command_on(&data, addrs));
        assert_refused(&format!("up {flag}"), &out, took, &addr, service, flag, env);
        assert!(
            !data.join("pgdata").exists(),
            "up {flag}: the embedded PostgreSQL was set up"
        );
        assert!(
            !data.join("brewlytics.up").exists(),
            "up {flag}: its claim on the data directory was left behind"
        );
        let left = processes_naming(&data);
        assert!(
            left.is_empty(),
            "up {flag} left processes running: {left:?}"
        );
    }
}

#[test]
fn up_with_database_urls_stops_the_same_way() {
    // Nothing listens for the databases either: the address is bound, and refused, first.
    let db = format!("postgres://brewlytics:s3cret@127.0.0.1:{}/x", free_port());
    let (_held, addr) = busy();
    let scratch = Scratch::new("busy-up-urls");
    // Moved by the environment variable this time, not the flag.
    let mut cmd = Command::new(BIN);
    cmd.args(["up", "--data-dir"])
        .arg(scratch.join("data"))
        .args(["--replicator-listen", "127.0.0.1:0"])
        .args(["--dashboard-listen", "127.0.0.1:0"])
        .env("OLTP_DATABASE_URL", &db)
        .env("OLAP_DATABASE_URL", &db)
        .env("API_LISTEN", &addr);
    let (out, took) = run(cmd);
    assert_refused(
        "up (API_LISTEN)",
        &out,
        took,
        &addr,
        "API",
        "--api-listen",
        "API_LISTEN",
    );
}

#[test]
fn the_standalone_services_stop_in_one_line_when_their_address_is_taken() {
    let db = format!("postgres://brewlytics:s3cret@127.0.0.1:{}/x", free_port());
    let nats = format!("nats://127.0.0.1:{}", free_port());
    let scratch = Scratch::new("busy-services");
    type Case<'a> = (&'a str, &'a [&'a str], &'a str, &'a str, &'a str);
    let cases: [Case; 4] = [
        ("api", &["api"], "API", "--listen", "API_LISTEN"),
        (
            "replicate",
            &["replicate"],
            "replicator",
            "--replicator-listen",
            "REPLICATOR_LISTEN",
        ),
        (
            "dashboard",
            &["dashboard"],
            "dashboard",
            "--listen",
            "DASHBOARD_LISTEN",
        ),
        (
            "load",
            &["load", "--from", "nats", "--nats-url", &nats],
            "loader",
            "--listen",
            "LOADER_LISTEN",
        ),
    ];
    for (what, args, service, flag, env) in cases {
        let (_held, addr) = busy();
        let mut cmd = Command::new(BIN);
        cmd.args(args)
            .args([flag, &addr])
            .env("OLTP_DATABASE_URL", &db)
            .env("OLAP_DATABASE_URL", &db)
            .env("BREWLYTICS_DATA_DIR", scratch.join("unused"))
            .env_remove("RUST_LOG");
        let (out, took) = run(cmd);
        assert_refused(what, &out, took, &addr, service, flag, env);
    }
}
