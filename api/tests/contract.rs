//! The API against its own OpenAPI document: schemathesis (PyPI) with every check — status
//! codes, content types, response headers and bodies against their schemas, schema-valid
//! requests accepted, schema-invalid ones refused, no server error, deleted resources gone —
//! over a served API on a throwaway database seeded with the sample shop.
//!
//! Authenticated: every request carries an `admin` key, and schemathesis's `ignored_auth`
//! check (part of `--checks all`) sends each secured operation again without credentials and
//! with wrong ones, and fails unless they are refused with 401 — the server's own count of
//! refusals must show it did.
//!
//! Bounded: at most `CONTRACT_MAX_EXAMPLES` cases per operation (default 30) and
//! `CONTRACT_MAX_SECONDS` for the run (default 60); the process is killed past twice that.
//! schemathesis comes from `.venv/bin/schemathesis` at the repository root (`scripts/test` makes
//! it from `api/tests/contract/requirements.txt`), else `$SCHEMATHESIS`, else `PATH`; when it
//! is missing, the test fails and says how to install it.

mod common;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use brewlytics_api::seed::{seed, SeedOptions};
use brewlytics_api::Service;
use common::TestApp;

const INSTALL: &str = "python3 -m venv .venv && \
     .venv/bin/pip install -r api/tests/contract/requirements.txt   (from the repository root; \
     `scripts/test` does this)";

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the api crate is in the workspace")
        .to_path_buf()
}

/// The schemathesis command, or why there is none.
fn schemathesis() -> Result<PathBuf, String> {
    let venv = repo_root().join(".venv/bin/schemathesis");
    if venv.is_file() {
        return Ok(venv);
    }
    if let Some(p) = std::env::var_os("SCHEMATHESIS").filter(|p| !p.is_empty()) {
        let p = PathBuf::from(p);
        return if p.is_file() {
            Ok(p)
        } else {
            Err(format!("$SCHEMATHESIS is {} but no such file", p.display()))
        };
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join("schemathesis"))
        .find(|p| p.is_file())
        .ok_or_else(|| {
            format!(
                "schemathesis not found (looked for {}, $SCHEMATHESIS and PATH); install it: {INSTALL}",
                venv.display()
            )
        })
}

fn setting(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_keeps_its_openapi_contract() {
    let st = schemathesis().unwrap_or_else(|why| panic!("{why}"));
    let t = TestApp::new("contract").await;
    seed(
        &t.pool,
        &SeedOptions {
            orders: 30,
            days: 3,
            rng_seed: 7,
        },
    )
    .await
    .expect("seeding the sample shop");

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(brewlytics_api::serve(
        listener,
        t.state.clone(),
        &Service::ALL,
        async move {
            let _ = stopped.await;
        },
    ));

    let examples = setting("CONTRACT_MAX_EXAMPLES", 30);
    let seconds = setting("CONTRACT_MAX_SECONDS", 60);
    let work = Path::new(env!("CARGO_TARGET_TMPDIR")).join("contract");
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work).unwrap();
    let junit = work.join("junit.xml");
    let mut cmd = tokio::process::Command::new(&st);
    cmd.arg("run")
        .arg(format!("http://{addr}/openapi.json"))
        .args(["--checks", "all"])
        .arg("--header")
        .arg(format!("Authorization: Bearer {}", t.admin_key))
        .args(["--max-examples", &examples.to_string()])
        .args(["--max-time", &seconds.to_string()])
        .args(["--seed", "20261128"])
        .args(["--workers", "2"])
        .args(["--request-timeout", "10"])
        .args(["--report", "junit"])
        .arg("--report-junit-path")
        .arg(&junit)
        .arg("--no-color")
        .current_dir(&work)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let started = std::time::Instant::now();
    let child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("starting {}: {e}; install it: {INSTALL}", st.display()));
    let output = tokio::time::timeout(
        Duration::from_secs(2 * seconds + 30),
        child.wait_with_output(),
    )
    .await
    .unwrap_or_else(|_| panic!("schemathesis ran over {} s (killed)", 2 * seconds + 30))
    .expect("waiting for schemathesis");
    let elapsed = started.elapsed();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let summary: Vec<&str> = stdout
        .lines()
        .skip_while(|l| !l.contains("SUMMARY"))
        .collect();
    println!(
        "schemathesis ran {:.0} s; summary:\n{}",
        elapsed.as_secs_f64(),
        summary.join("\n")
    );

    let _ = stop.send(());
    server.await.unwrap().unwrap();

    // The server's own count of what it answered, by status class.
    let (mut requests, mut server_errors) = (0u64, 0u64);
    for line in t.state.metrics.encode().lines() {
        let Some(labels) = line.strip_prefix("brewlytics_api_requests_total{") else {
            continue;
        };
        let n: u64 = line
            .rsplit(' ')
            .next()
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        requests += n;
        if labels.contains("status=\"5") {
            server_errors += n;
            println!("5xx: {line}");
        }
    }
    println!("the API answered {requests} requests, {server_errors} with a 5xx");
    let auth = t.state.guard.metrics();
    use brewlytics_support::auth::metrics::Reason;
    let (missing, invalid) = (auth.get(Reason::Missing), auth.get(Reason::Invalid));
    println!("refused: {missing} without credentials, {invalid} with a wrong key");

    assert!(
        output.status.success(),
        "schemathesis found contract violations ({}):\n{stdout}\n{stderr}",
        output.status
    );
    // It ran and counted what it did.
    let generated = summary
        .iter()
        .find(|l| l.contains(" generated"))
        .unwrap_or_else(|| panic!("no test-case count in the summary:\n{stdout}"));
    let count: u64 = generated
        .split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(count >= 100, "only {count} cases generated:\n{stdout}");
    assert!(requests >= count, "{requests} requests for {count} cases");
    assert_eq!(server_errors, 0, "the API answered 5xx:\n{stdout}");
    assert!(
        missing + invalid + auth.get(Reason::Malformed) > 0,
        "schemathesis never tried an operation without its key"
    );
}
