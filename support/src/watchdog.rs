//! A detached shell that cleans up after this process: once the process is gone (even killed
//! with -9, when no destructor runs), the shell runs a stop command. The embedded PostgreSQL
//! and the Superset of `brewlytics up` each have one, so nothing outlives its owner.

use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};

/// Starts the shell: it checks every second that this process (and `also`, when given) is
/// alive, and runs `stop` (a shell command line) when one is not — or after a day. It has a
/// process group of its own, so a Ctrl-C in the terminal does not reach it.
pub fn spawn(stop: &str, also: Option<u32>) -> std::io::Result<Child> {
    let also = also
        .map(|pid| format!(" && kill -0 {pid} 2>/dev/null"))
        .unwrap_or_default();
    let script = format!(
        "i=0; while kill -0 {owner} 2>/dev/null{also} && [ $i -lt 86400 ]; do sleep 1; i=$((i+1)); done; \
         {stop}",
        owner = std::process::id(),
    );
    Command::new("sh")
        .args(["-c", &script])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    #[test]
    fn the_stop_command_runs_once_a_watched_process_is_gone() {
        let mut watched = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let mark = std::env::temp_dir().join(format!("brewlytics-watchdog-{}", std::process::id()));
        let _ = std::fs::remove_file(&mark);
        let mut dog =
            super::spawn(&format!("touch '{}'", mark.display()), Some(watched.id())).unwrap();
        std::thread::sleep(Duration::from_millis(1500));
        assert!(!mark.exists(), "stopped while everything was alive");
        watched.kill().unwrap();
        watched.wait().unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while !mark.exists() {
            assert!(Instant::now() < deadline, "the stop command never ran");
            std::thread::sleep(Duration::from_millis(100));
        }
        assert!(dog.wait().unwrap().success());
        let _ = std::fs::remove_file(&mark);
    }
}
