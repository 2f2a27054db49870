//! The processes a test starts (the built `brewlytics`, nats-server, Prometheus): none
//! outlives the test, whatever way it ends.

use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// A child process, its output in `log`. Killed (SIGKILL) if still running when dropped; a
/// [`Proc::gentle`] one gets SIGTERM first.
pub struct Proc {
    child: Option<Child>,
    pub log: PathBuf,
    gentle: bool,
}

impl Proc {
    /// A child already started, its output in `log`.
    pub fn from_child(child: Child, log: PathBuf) -> Self {
        Self {
            child: Some(child),
            log,
            gentle: false,
        }
    }

    /// Starts `cmd` with stdout and stderr in `log`.
    pub fn spawn(mut cmd: Command, log: PathBuf) -> Self {
        let file = std::fs::File::create(&log).unwrap();
        cmd.stdin(Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file);
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("starting {cmd:?}: {e}"));
        Self::from_child(child, log)
    }

    /// Dropped, it gets SIGTERM and up to 30 s before SIGKILL: `brewlytics up` then stops its
    /// embedded PostgreSQL itself.
    pub fn gentle(mut self) -> Self {
        self.gentle = true;
        self
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Its exit status, if it has exited.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.as_mut()?.try_wait().ok().flatten()
    }

    pub fn is_running(&mut self) -> bool {
        self.child.is_some() && self.exited().is_none()
    }

    /// Panics, with its log, if it has exited.
    pub fn assert_running(&mut self) {
        if let Some(status) = self.exited() {
            panic!(
                "{} exited early ({status}); log:\n{}",
                self.name(),
                self.log_text()
            );
        }
    }

    /// Waits (bounded) for the process to exit by itself; its status.
    pub fn wait_exit(&mut self, within: Duration) -> Option<ExitStatus> {
        let start = Instant::now();
        loop {
            if let Some(status) = self.exited() {
                self.child = None;
                return Some(status);
            }
            if start.elapsed() > within {
                return None;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// SIGTERM, then wait up to `within`: its status, or None if it is still running.
    pub fn stop(&mut self, within: Duration) -> Option<ExitStatus> {
        let pid = self.child.as_ref()?.id();
        let _ = Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status();
        self.wait_exit(within)
    }

    /// [`Proc::stop`], which must succeed: panics (after SIGKILL) with the log if the process
    /// does not stop within `within` of SIGTERM.
    pub fn terminate(&mut self, within: Duration) -> ExitStatus {
        assert!(self.child.is_some(), "process already ended");
        match self.stop(within) {
            Some(status) => status,
            None => {
                self.kill9();
                panic!(
                    "{} did not stop within {within:?} of SIGTERM; log: {}",
                    self.name(),
                    self.log_text()
                );
            }
        }
    }

    /// Peak resident memory so far, in KiB (VmHWM).
    pub fn peak_rss_kib(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).ok()?;
        status
            .lines()
            .find(|l| l.starts_with("VmHWM:"))?
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Its log's file name, for messages.
    fn name(&self) -> String {
        self.log
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if self.gentle {
            self.stop(Duration::from_secs(30));
        }
        self.kill9();
    }
}

/// Waits until `check` returns Some, up to `within`, every 250 ms; panics with `what` and the
/// processes' logs when time runs out or one of them exits.
pub fn wait_for<T>(
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
            if let Some(status) = p.exited() {
                panic!(
                    "{what}: {} exited ({status}); log:\n{}",
                    p.name(),
                    p.log_text()
                );
            }
        }
        if start.elapsed() > within {
            let logs: String = procs
                .iter()
                .map(|p| format!("--- {}:\n{}\n", p.log.display(), p.log_text()))
                .collect();
            panic!("{what}: not within {within:?}\n{logs}");
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}
