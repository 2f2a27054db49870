//! A local Apache Superset for `brewlytics up --superset`: installed in its own virtual
//! environment (`scripts/install-superset`), its state under `<data dir>/superset/`:
//!
//! - `secret_key` (signs sessions) and `admin.password` (the `admin` login), both made once,
//!   mode 0600, never printed;
//! - `superset_config.py`, written on every start: those two, the SQLite metadata database
//!   `superset.db` beside it, nothing else;
//! - `initialized`: the Superset version whose `db upgrade`, admin and `init` are done (the
//!   first start takes about a minute; later ones a few seconds);
//! - `superset.log`: what gunicorn and Superset said.
//!
//! gunicorn serves it on the address given, in a process group of its own: stopping sends
//! the group SIGTERM, then SIGKILL after a grace period; a watchdog shell stops it too if
//! `up` dies without stopping it (kill -9), so nothing outlives `up`.

use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use brewlytics_dashboards::connection::Secret;

/// The administrator `up` creates.
pub const ADMIN: &str = crate::cli::SUPERSET_ADMIN;
/// How long Superset may take to answer its health check after gunicorn starts.
const START_TIMEOUT: Duration = Duration::from_secs(180);
/// How long it may take to stop after SIGTERM before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(15);

/// Superset's files in a data directory.
pub fn state_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("superset")
}

/// The admin password file of the Superset `up` runs in `data_dir`.
pub fn admin_password_file(data_dir: &Path) -> PathBuf {
    state_dir(data_dir).join("admin.password")
}

/// What can be said before anything starts: Superset is installed in `venv`, and `listen`
/// is free.
pub fn preflight(venv: &Path, listen: SocketAddr) -> anyhow::Result<()> {
    let bin = |name: &str| venv.join("bin").join(name);
    if !bin("superset").is_file() || !bin("gunicorn").is_file() {
        bail!(
            "Superset is not installed in {}: run scripts/install-superset (or point \
             --superset-venv / SUPERSET_VENV at its virtual environment)",
            venv.display()
        );
    }
    std::net::TcpListener::bind(listen).with_context(|| {
        format!("Superset's address {listen} is in use: choose another with --superset-listen")
    })?;
    Ok(())
}

/// A running Superset.
pub struct LocalSuperset {
    gunicorn: std::process::Child,
    watchdog: std::process::Child,
    pub url: String,
    pub password: Secret,
    pub password_file: PathBuf,
    pub log: PathBuf,
}

impl LocalSuperset {
    /// Prepares the state directory (first start: metadata, admin, roles) and starts
    /// gunicorn; returns once Superset answers its health check.
    pub async fn start(venv: &Path, data_dir: &Path, listen: SocketAddr) -> anyhow::Result<Self> {
        preflight(venv, listen)?;
        let venv = std::path::absolute(venv)?;
        let bin = |name: &str| venv.join("bin").join(name);
        let dir = std::path::absolute(state_dir(data_dir))?;
        std::fs::create_dir_all(&dir)?;
        secret_file(&dir.join("secret_key"), 48)?;
        let password_file = dir.join("admin.password");
        let password = Secret::new(secret_file(&password_file, 20)?);
        let config = dir.join("superset_config.py");
        std::fs::write(&config, CONFIG)?;
        let log = dir.join("superset.log");
        let env = [
            ("SUPERSET_CONFIG_PATH", config.as_os_str()),
            ("SUPERSET_HOME", dir.as_os_str()),
        ];

        let version = installed_version(&venv)?;
        let marker = dir.join("initialized");
        if std::fs::read_to_string(&marker).ok().as_deref() != Some(version.as_str()) {
            tracing::info!(%version, "preparing superset's metadata (about a minute)");
            let superset = |args: &[&str]| {
                let mut c = tokio::process::Command::new(bin("superset"));
                c.args(args).envs(env).current_dir(&dir);
                c
            };
            run(superset(&["db", "upgrade"]), &log).await?;
            let mut admin = superset(&[
                "fab",
                "create-admin",
                "--username",
                ADMIN,
                "--firstname",
                "Brewlytics",
                "--lastname",
                "Admin",
                "--email",
                "admin@localhost",
            ]);
            // Through the environment (click reads it), never on a command line.
            admin.env("FLASK_FAB_CREATE_ADMIN_PASSWORD", password.expose());
            if run(admin, &log).await?.contains("already exists") {
                // Metadata of an earlier version: the admin keeps this password.
                let mut reset = superset(&["fab", "reset-password", "--username", ADMIN]);
                reset.env("FLASK_FAB_RESET_PASSWORD_PASSWORD", password.expose());
                run(reset, &log).await?;
            }
            run(superset(&["init"]), &log).await?;
            std::fs::write(&marker, &version)?;
        }

        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)?;
        let gunicorn = std::process::Command::new(bin("gunicorn"))
            .args(["--bind", &listen.to_string(), "--workers", "1"])
            .args([
                "--worker-class",
                "gthread",
                "--threads",
                "8",
                "--timeout",
                "120",
            ])
            .args(["--graceful-timeout", "10", "superset.app:create_app()"])
            .envs(env)
            .current_dir(&dir)
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .process_group(0)
            .spawn()
            .context("starting gunicorn")?;
        let watchdog = watchdog(gunicorn.id())?;
        let mut this = Self {
            gunicorn,
            watchdog,
            url: format!("http://{listen}"),
            password,
            password_file,
            log,
        };
        if let Err(e) = this.wait_healthy().await {
            this.stop().await;
            return Err(e);
        }
        Ok(this)
    }

    async fn wait_healthy(&mut self) -> anyhow::Result<()> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(status) = self.gunicorn.try_wait()? {
                bail!(
                    "Superset stopped at start ({status}): {}",
                    tail(&self.log, 5)
                );
            }
            if brewlytics_dashboards::superset::healthy(&self.url).await {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "Superset did not answer on {} within {START_TIMEOUT:?}: {}",
                    self.url,
                    tail(&self.log, 5)
                );
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// SIGTERM to gunicorn's process group, SIGKILL after the grace period.
    pub async fn stop(mut self) {
        let group = format!("-{}", self.gunicorn.id());
        signal_group("-TERM", &group);
        let deadline = Instant::now() + STOP_GRACE;
        while matches!(self.gunicorn.try_wait(), Ok(None)) && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        signal_group("-KILL", &group);
        let _ = self.gunicorn.wait();
        // The watchdog shell and its `sleep`.
        signal_group("-KILL", &format!("-{}", self.watchdog.id()));
        let _ = self.watchdog.wait();
    }
}

/// `superset_config.py`: everything is under the directory of the file itself.
const CONFIG: &str = r#"# Written by `brewlytics up --superset` on every start: edits are lost.
import os

_here = os.path.dirname(os.path.abspath(__file__))
with open(os.path.join(_here, "secret_key")) as _f:
    SECRET_KEY = _f.read().strip()
# One user on loopback: SQLite holds the metadata (dashboards, charts, users).
SQLALCHEMY_DATABASE_URI = "sqlite:///" + os.path.join(_here, "superset.db")
DATA_DIR = _here
# Chart data is not cached: every refresh reads coffee_olap as it is now.
DATA_CACHE_CONFIG = {"CACHE_TYPE": "NullCache"}
"#;

/// The text of `path`, made of `len` random letters and digits (mode 0600) when missing.
fn secret_file(path: &Path, len: usize) -> anyhow::Result<String> {
    use std::io::{Read, Write};
    use std::os::unix::fs::OpenOptionsExt;
    if let Ok(text) = std::fs::read_to_string(path) {
        if !text.trim().is_empty() {
            return Ok(text.trim().to_owned());
        }
    }
    const ALPHABET: &[u8] = b"abcdefghijkmnopqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789";
    let mut raw = vec![0u8; len];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut raw)?;
    let text: String = raw
        .iter()
        .map(|b| ALPHABET[*b as usize % ALPHABET.len()] as char)
        .collect();
    std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .mode(0o600)
        .open(path)?
        .write_all(text.as_bytes())?;
    Ok(text)
}

/// The installed apache-superset's version, from its package metadata.
fn installed_version(venv: &Path) -> anyhow::Result<String> {
    for lib in std::fs::read_dir(venv.join("lib"))?.flatten() {
        let site = lib.path().join("site-packages");
        for entry in std::fs::read_dir(&site).into_iter().flatten().flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if let Some(rest) = name.strip_prefix("apache_superset-") {
                if let Some(version) = rest.strip_suffix(".dist-info") {
                    return Ok(version.to_owned());
                }
            }
        }
    }
    bail!("no apache-superset package in {}", venv.display())
}

/// Runs one `superset` set-up command, its output appended to `log` and returned; killed if
/// `up` stops waiting for it.
async fn run(mut cmd: tokio::process::Command, log: &Path) -> anyhow::Result<String> {
    use std::io::Write;
    let what = format!("{:?}", cmd.as_std().get_args().take(2).collect::<Vec<_>>());
    let out = cmd
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .with_context(|| format!("running superset {what}"))?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)?
        .write_all(text.as_bytes())?;
    if !out.status.success() {
        bail!("superset {what} failed ({}): {}", out.status, tail(log, 5));
    }
    Ok(text)
}

/// A shell that stops gunicorn's group once `up` is gone, and ends by itself when gunicorn
/// does.
fn watchdog(gunicorn: u32) -> anyhow::Result<std::process::Child> {
    let stop = format!(
        "kill -TERM -{gunicorn} 2>/dev/null; sleep {}; kill -KILL -{gunicorn} 2>/dev/null",
        STOP_GRACE.as_secs()
    );
    Ok(brewlytics_support::watchdog::spawn(&stop, Some(gunicorn))?)
}

fn signal_group(signal: &str, group: &str) {
    // `kill -SIG -PGID` reaches gunicorn's workers too; the workspace forbids `unsafe`.
    let _ = std::process::Command::new("kill")
        .args([signal, "--", group])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// The last `n` lines of a log, on one line.
fn tail(log: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let start = lines.len().saturating_sub(n);
    format!("{} (log: {})", lines[start..].join(" | "), log.display())
}
