//! Which `brewlytics up` runs in a data directory.
//!
//! `up` claims its data directory before it touches anything in it, by creating
//! `brewlytics.up` there (exclusively: of two `up`s started together, one wins), and writes
//! its endpoints into it once they listen. A second `up` reads the file and stops with one
//! line naming the running one — its pid, its URLs, how to stop it or where else to start —
//! instead of starting a second server on the same files. The file is removed when the
//! claim is dropped; a file left by a process that died (`kill -9`) is recognised as stale
//! (its pid is gone or is not a `brewlytics`) and replaced.

use std::fmt;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

/// The name of the claim file in a data directory.
pub const FILE: &str = "brewlytics.up";

/// What the claim file says about the `up` that wrote it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instance {
    pub dir: PathBuf,
    pub pid: u32,
    /// (what, URL) in the order `up` printed them; empty while it starts.
    pub endpoints: Vec<(String, String)>,
}

impl fmt::Display for Instance {
    /// One line: who runs where, and what to do about it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "brewlytics up is already running in {} (pid {}",
            self.dir.display(),
            self.pid
        )?;
        if self.endpoints.is_empty() {
            f.write_str(", starting")?;
        }
        for (what, url) in &self.endpoints {
            write!(f, "; {what} {url}")?;
        }
        write!(
            f,
            "): stop it with Ctrl-C in its terminal or `kill {}`, or start another with \
             --data-dir <another directory>",
            self.pid
        )
    }
}

/// Why a data directory could not be claimed.
#[derive(Debug, thiserror::Error)]
pub enum ClaimError {
    #[error("{0}")]
    Running(Instance),
    #[error("claiming {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// This process's claim on a data directory; the file is removed on drop.
#[derive(Debug)]
pub struct Claim {
    path: PathBuf,
}

impl Claim {
    /// Claims `dir` (created if missing) for this process, unless a live `up` holds it.
    pub fn acquire(dir: &Path) -> Result<Self, ClaimError> {
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| ClaimError::Io { path, source }
        };
        fs::create_dir_all(dir).map_err(io(dir))?;
        let dir = fs::canonicalize(dir).map_err(io(dir))?;
        let path = dir.join(FILE);
        // Two rounds: the second after removing a stale file.
        for _ in 0..2 {
            match fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&path)
            {
                Ok(mut f) => {
                    f.write_all(format!("pid={}\n", std::process::id()).as_bytes())
                        .map_err(io(&path))?;
                    return Ok(Self { path });
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    if let Some(running) = read(&dir) {
                        return Err(ClaimError::Running(running));
                    }
                    // Stale: its process is gone.
                    match fs::remove_file(&path) {
                        Ok(()) => {}
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                        Err(e) => return Err(io(&path)(e)),
                    }
                }
                Err(e) => return Err(io(&path)(e)),
            }
        }
        Err(ClaimError::Io {
            path,
            source: std::io::Error::other("another process claims and releases it concurrently"),
        })
    }

    /// Records the endpoints, for the message a second `up` prints.
    pub fn publish(&self, endpoints: &[(&str, String)]) -> std::io::Result<()> {
        let mut text = format!("pid={}\n", std::process::id());
        for (what, url) in endpoints {
            text.push_str(&format!("{what}={url}\n"));
        }
        // Written aside and renamed, so a reader never sees half a file.
        let tmp = self.path.with_extension("up.tmp");
        fs::write(&tmp, text)?;
        fs::rename(&tmp, &self.path)
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        // Only our own claim: never remove a file another process wrote meanwhile.
        if read_pid(&self.path) == Some(std::process::id()) {
            let _ = fs::remove_file(&self.path);
        }
    }
}

/// The live `up` that claims `dir`, if any.
pub fn read(dir: &Path) -> Option<Instance> {
    let text = fs::read_to_string(dir.join(FILE)).ok()?;
    let mut pid = None;
    let mut endpoints = Vec::new();
    for line in text.lines() {
        match line.split_once('=') {
            Some(("pid", p)) => pid = p.trim().parse().ok(),
            Some((what, url)) => endpoints.push((what.to_owned(), url.to_owned())),
            None => {}
        }
    }
    let pid: u32 = pid?;
    is_brewlytics(pid).then(|| Instance {
        dir: dir.to_path_buf(),
        pid,
        endpoints,
    })
}

fn read_pid(path: &Path) -> Option<u32> {
    let text = fs::read_to_string(path).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("pid="))
        .and_then(|p| p.trim().parse().ok())
}

/// Whether `pid` is alive and runs a `brewlytics` binary (a recycled pid is not).
fn is_brewlytics(pid: u32) -> bool {
    fs::read(format!("/proc/{pid}/cmdline"))
        .ok()
        .and_then(|cmdline| {
            let program = cmdline.split(|b| *b == 0).next()?.to_vec();
            let program = String::from_utf8(program).ok()?;
            let name = Path::new(&program).file_name()?.to_str()?.to_owned();
            Some(name.starts_with("brewlytics"))
        })
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("brewlytics-instance-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn a_stale_claim_is_replaced_and_a_claim_removed_on_drop() {
        let dir = scratch("stale");
        fs::create_dir_all(&dir).unwrap();
        // A pid that is not a brewlytics process (pid 1 is init; 0 is never a process).
        fs::write(dir.join(FILE), "pid=1\napi=http://127.0.0.1:1\n").unwrap();
        assert_eq!(read(&dir), None);
        let claim = Claim::acquire(&dir).unwrap();
        assert_eq!(read_pid(&dir.join(FILE)), Some(std::process::id()));
        claim
            .publish(&[("API", "http://127.0.0.1:8000".into())])
            .unwrap();
        let text = fs::read_to_string(dir.join(FILE)).unwrap();
        assert!(text.contains("API=http://127.0.0.1:8000"), "{text}");
        drop(claim);
        assert!(!dir.join(FILE).exists());
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn the_message_names_pid_urls_and_what_to_do() {
        let i = Instance {
            dir: PathBuf::from("/srv/.brewlytics"),
            pid: 4242,
            endpoints: vec![
                ("API".into(), "http://127.0.0.1:8000".into()),
                ("dashboard".into(), "http://127.0.0.1:8002".into()),
            ],
        };
        assert_eq!(
            i.to_string(),
            "brewlytics up is already running in /srv/.brewlytics (pid 4242; API \
             http://127.0.0.1:8000; dashboard http://127.0.0.1:8002): stop it with Ctrl-C in \
             its terminal or `kill 4242`, or start another with --data-dir <another directory>"
        );
    }
}
