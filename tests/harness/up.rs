//! `brewlytics up` as the tests run it: on an embedded PostgreSQL in a scratch directory, every
//! service on port 0 — it binds what it is given and prints the addresses it got, which is
//! where the tests read them, with the file of the API key it made (remembered for its
//! addresses: `http` and `http_get` send it).

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use super::{wait_for, Proc};

/// Where a running `up` serves.
#[derive(Debug, Clone)]
pub struct UpAddrs {
    pub api: String,
    pub replicator: String,
    pub dashboard: String,
    /// The key `up` made (every scope), read from the file it named.
    pub key: String,
}

/// `brewlytics up --data-dir DIR` with its three listeners on port 0 and nothing from the
/// environment that would point it elsewhere (database URLs, listen addresses).
pub fn command(data_dir: &Path) -> Command {
    const ANY: &str = "127.0.0.1:0";
    command_on(data_dir, [ANY, ANY, ANY])
}

/// [`command`] with the API, replicator and dashboard on these addresses.
pub fn command_on(data_dir: &Path, [api, replicator, dashboard]: [&str; 3]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_brewlytics"));
    cmd.arg("up")
        .arg("--data-dir")
        .arg(data_dir)
        .args(["--api-listen", api])
        .args(["--replicator-listen", replicator])
        .args(["--dashboard-listen", dashboard])
        .env("NO_COLOR", "1");
    for var in [
        "OLTP_DATABASE_URL",
        "OLAP_DATABASE_URL",
        "API_LISTEN",
        "REPLICATOR_LISTEN",
        "DASHBOARD_LISTEN",
        "BREWLYTICS_DATA_DIR",
    ] {
        cmd.env_remove(var);
    }
    cmd
}

/// The addresses `up` printed once it was up, from its output; None before.
pub fn addrs(output: &str) -> Option<UpAddrs> {
    if !output.contains("Press Ctrl-C to stop.") {
        return None;
    }
    let find = |label: &str| {
        output.lines().find_map(|l| {
            let url = l.trim_start().strip_prefix(label)?.trim_start();
            let addr = url
                .strip_prefix("http://")
                .or_else(|| url.strip_prefix("https://"))?
                .split_whitespace()
                .next()?;
            Some(addr.to_owned())
        })
    };
    let key_file = output.lines().find_map(|l| {
        let rest = l.trim_start().strip_prefix("API key")?;
        let file = rest.split_once(" in ")?.1.split(" (mode").next()?;
        Some(file.trim().to_owned())
    })?;
    let key = std::fs::read_to_string(key_file).ok()?.trim().to_owned();
    let addrs = UpAddrs {
        api: find("API")?,
        replicator: find("Replicator")?,
        dashboard: find("Dashboard")?,
        key,
    };
    for addr in [&addrs.api, &addrs.replicator, &addrs.dashboard] {
        super::remember_key(addr, &addrs.key);
    }
    Some(addrs)
}

/// Waits (≤ 180 s) until `up`, whose output is in its log, printed where it serves.
pub fn wait(up: &mut Proc) -> UpAddrs {
    let log = up.log.clone();
    wait_for(
        Duration::from_secs(180),
        "brewlytics up printing its URLs",
        &mut [up],
        || addrs(&std::fs::read_to_string(&log).unwrap_or_default()),
    )
}
