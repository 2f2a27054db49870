//! Headless Chromium for tests of web pages: the DOM after scripts ran (with the console
//! messages of the run, where Content-Security-Policy violations show), or a screenshot.
//!
//! Each call starts `chromium --headless` with a fresh profile directory, waits at most
//! [`BrowserOptions::timeout`], and kills the whole process group on timeout (Chromium
//! starts helper processes), so nothing outlives the call. `--virtual-time-budget` lets the
//! page's scripts and fetches run before the DOM is dumped or the screenshot taken.
//!
//! For pages that need a session (a login, then a single-page application), see
//! [`crate::devtools`].
//!
//! The binary is `$CHROMIUM` if set, else the first of `chromium`, `chromium-browser`,
//! `google-chrome` found on `PATH` (or in `/usr/bin`).

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

#[derive(Debug, thiserror::Error)]
pub enum BrowserError {
    #[error("chromium not found (looked for $CHROMIUM, chromium, chromium-browser, google-chrome); install it with `apt-get install chromium`")]
    NotFound,
    #[error("starting {program}: {source}")]
    Spawn {
        program: String,
        #[source]
        source: std::io::Error,
    },
    #[error("chromium did not finish within {0:?} (killed)")]
    Timeout(Duration),
    #[error("chromium exited with {status}: {stderr}")]
    Failed { status: String, stderr: String },
    #[error("chromium wrote no screenshot to {0}")]
    NoScreenshot(PathBuf),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// How long to run and how large the window is.
#[derive(Debug, Clone)]
pub struct BrowserOptions {
    /// Wall-clock limit for the whole run; the process group is killed past it.
    pub timeout: Duration,
    /// Virtual time the page gets for its scripts, timers and fetches, in milliseconds.
    pub virtual_time_budget_ms: u64,
    pub window: (u32, u32),
}

impl Default for BrowserOptions {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(60),
            virtual_time_budget_ms: 5000,
            window: (1400, 1000),
        }
    }
}

/// The Chromium binary to use.
pub fn chromium_path() -> Result<PathBuf, BrowserError> {
    if let Some(p) = std::env::var_os("CHROMIUM").filter(|p| !p.is_empty()) {
        let p = PathBuf::from(p);
        return if p.exists() {
            Ok(p)
        } else {
            Err(BrowserError::NotFound)
        };
    }
    let names = ["chromium", "chromium-browser", "google-chrome"];
    let path = std::env::var_os("PATH").unwrap_or_default();
    let dirs = std::env::split_paths(&path).chain([PathBuf::from("/usr/bin")]);
    for dir in dirs {
        for name in names {
            let candidate = dir.join(name);
            if candidate.is_file() {
                return Ok(candidate);
            }
        }
    }
    Err(BrowserError::NotFound)
}

/// The page's DOM (outer HTML) after `options.virtual_time_budget_ms` of virtual time.
pub fn dump_dom(url: &str, options: &BrowserOptions) -> Result<String, BrowserError> {
    Ok(render(url, options)?.dom)
}

/// A page after its scripts ran: the DOM and what the page wrote to the console, including
/// the browser's own reports (a blocked script, a refused fetch, a CSP violation).
#[derive(Debug, Clone)]
pub struct Rendered {
    pub dom: String,
    /// Console messages, in order, each as Chromium logs it: `"text", source: url (line)`.
    pub console: Vec<String>,
}

impl Rendered {
    /// The console messages reporting a Content-Security-Policy violation.
    pub fn csp_violations(&self) -> Vec<&str> {
        self.console
            .iter()
            .map(String::as_str)
            .filter(|m| m.contains("Content Security Policy"))
            .collect()
    }
}

/// The page's DOM and console after `options.virtual_time_budget_ms` of virtual time.
pub fn render(url: &str, options: &BrowserOptions) -> Result<Rendered, BrowserError> {
    let (stdout, stderr) = run(&["--dump-dom".to_owned(), url.to_owned()], options)?;
    Ok(Rendered {
        dom: stdout,
        console: console_messages(&stderr),
    })
}

/// The console lines of Chromium's log (`[pid:tid:time:INFO:CONSOLE(7)] "text", source: …`;
/// newer builds write `CONSOLE:7`).
fn console_messages(log: &str) -> Vec<String> {
    log.lines()
        .filter_map(|line| {
            let at = line.find(":CONSOLE")?;
            let rest = &line[at..];
            Some(rest[rest.find("] ")? + 2..].to_owned())
        })
        .collect()
}

/// Saves a PNG screenshot of the page at `file` (its directory is created).
pub fn screenshot(url: &str, file: &Path, options: &BrowserOptions) -> Result<(), BrowserError> {
    if let Some(dir) = file.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let _ = std::fs::remove_file(file);
    let file = std::path::absolute(file)?;
    run(
        &[format!("--screenshot={}", file.display()), url.to_owned()],
        options,
    )?;
    if !file.is_file() {
        return Err(BrowserError::NoScreenshot(file));
    }
    Ok(())
}

static RUNS: AtomicU32 = AtomicU32::new(0);

/// A number for this process's next Chromium run (its profile directory's name).
pub(crate) fn next_run() -> u32 {
    RUNS.fetch_add(1, Ordering::Relaxed)
}

/// The flags of every headless run.
pub(crate) const BASE_FLAGS: &[&str] = &[
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--hide-scrollbars",
];

/// Starts `cmd` (which runs Chromium, `program`) as the leader of a process group of its own.
pub(crate) fn spawn_group(mut cmd: Command, program: &Path) -> Result<GroupGuard, BrowserError> {
    cmd.process_group(0)
        .spawn()
        .map(GroupGuard)
        .map_err(|source| BrowserError::Spawn {
            program: program.display().to_string(),
            source,
        })
}

/// Kills the process group of a child on drop (the child is its group's leader).
pub(crate) struct GroupGuard(pub(crate) Child);

impl Drop for GroupGuard {
    fn drop(&mut self) {
        let pgid = self.0.id();
        // `kill -KILL -PGID` reaches Chromium's helpers too; the workspace forbids `unsafe`.
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{pgid}")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn run(args: &[String], options: &BrowserOptions) -> Result<(String, String), BrowserError> {
    let program = chromium_path()?;
    let profile = std::env::temp_dir().join(format!(
        "brewlytics-chromium-{}-{}",
        std::process::id(),
        next_run()
    ));
    std::fs::create_dir_all(&profile)?;
    let result = run_in(&program, &profile, args, options);
    let _ = std::fs::remove_dir_all(&profile);
    result
}

fn run_in(
    program: &Path,
    profile: &Path,
    args: &[String],
    options: &BrowserOptions,
) -> Result<(String, String), BrowserError> {
    let mut cmd = Command::new(program);
    cmd.args(BASE_FLAGS)
        // Console messages (and CSP reports) to stderr, for `render`.
        .args(["--enable-logging=stderr", "--v=0"])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(format!(
            "--virtual-time-budget={}",
            options.virtual_time_budget_ms
        ))
        .arg(format!(
            "--window-size={},{}",
            options.window.0, options.window.1
        ))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    let child = cmd.spawn().map_err(|source| BrowserError::Spawn {
        program: program.display().to_string(),
        source,
    })?;
    let mut guard = GroupGuard(child);
    let mut stdout = guard.0.stdout.take().expect("piped");
    let mut stderr = guard.0.stderr.take().expect("piped");
    let out_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stdout.read_to_string(&mut s);
        s
    });
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + options.timeout;
    let status = loop {
        if let Some(status) = guard.0.try_wait()? {
            break status;
        }
        if Instant::now() >= deadline {
            drop(guard);
            return Err(BrowserError::Timeout(options.timeout));
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    // The leader is gone; the guard ends any helper left in its group.
    drop(guard);
    let out = out_reader.join().unwrap_or_default();
    let err = err_reader.join().unwrap_or_default();
    if !status.success() {
        let tail: Vec<&str> = err.lines().rev().take(5).collect();
        return Err(BrowserError::Failed {
            status: status.to_string(),
            stderr: tail.into_iter().rev().collect::<Vec<_>>().join(" | "),
        });
    }
    Ok((out, err))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn console_lines_are_picked_from_the_log() {
        let log = "[1:1:1128/051620.852940:WARNING:sandbox.cc:405] noise\n\
            [1:1:1128/051621.313938:INFO:CONSOLE:2] \"Executing inline script violates the following Content Security Policy directive\", source: http://x/ (2)\n\
            [1:1:1128/051621.3:INFO:CONSOLE(1)] \"hello\", source: http://x/a.js (1)";
        let r = Rendered {
            dom: String::new(),
            console: console_messages(log),
        };
        assert_eq!(r.console.len(), 2, "{:?}", r.console);
        assert!(r.console[1].starts_with("\"hello\""));
        assert_eq!(r.csp_violations().len(), 1);
    }

    #[test]
    fn a_missing_chromium_names_the_package() {
        let e = BrowserError::NotFound.to_string();
        assert!(e.contains("apt-get install chromium"));
    }
}
