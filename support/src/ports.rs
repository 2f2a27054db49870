//! Loopback ports for servers that must be told their port before they start (PostgreSQL,
//! nats-server, Prometheus): a port nothing else takes between the choice and the bind.
//!
//! Two things take ports without asking. The kernel gives every outgoing connection a source
//! port from its ephemeral range (`/proc/sys/net/ipv4/ip_local_port_range`), so a port found
//! free by binding `127.0.0.1:0` and releasing it — an ephemeral one — can be any client
//! socket's by the time the server binds it. And other processes choose ports at the same
//! time. So a [`Lease`] is a port
//!
//! - **outside the ephemeral range** (from 20000 up to the range's start, or above its end
//!   when that leaves more room: see [`candidates`]), which no outgoing connection is given;
//! - **locked** for its holder with `flock(2)` on `<temp dir>/brewlytics-ports/<port>.lock`,
//!   so two processes following these rules never hold the same port; the kernel drops the
//!   lock when the holder exits, however it exits;
//! - **bound once** before it is handed out, so a port some other program listens on is
//!   skipped.
//!
//! A process outside these rules can still bind a leased port first; a server that then fails
//! with "address already in use" is started again on a new lease ([`retry_in_use`]).
//! `bench/ports.sh` takes its ports by the same rules, from the same lock directory.
//!
//! Servers that bind port 0 themselves and report what they got (our own HTTP listeners) need
//! none of this.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::PathBuf;

/// The lowest port handed out: below it are the usual development ports (PostgreSQL 5432,
/// Brewlytics 8000–8003, NATS 4222, Prometheus 9090, …).
pub const LOWEST: u16 = 20_000;

/// Fewer candidate ports than this outside the ephemeral range, and every port is a candidate
/// (the locks and the bind check still hold; [`retry_in_use`] covers the rest).
const MIN_SPAN: u32 = 1_000;

/// Where the lock files are: shared by every process of every user on the machine.
pub fn lock_dir() -> PathBuf {
    std::env::temp_dir().join("brewlytics-ports")
}

/// A loopback port held by this process until the lease is dropped.
#[derive(Debug)]
pub struct Lease {
    port: u16,
    _lock: File,
}

impl Lease {
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `127.0.0.1:port`.
    pub fn addr(&self) -> SocketAddr {
        (Ipv4Addr::LOCALHOST, self.port).into()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    #[error(
        "no free loopback port in {lo}-{hi}: each is locked by another process (in {dir}) or in use"
    )]
    Exhausted { lo: u16, hi: u16, dir: PathBuf },
    #[error("port lock {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// A port from this machine's candidates, locked in [`lock_dir`].
pub fn lease() -> Result<Lease, LeaseError> {
    Pool::system().lease()
}

/// Which ports leases come from and where they are locked.
#[derive(Debug, Clone)]
pub struct Pool {
    pub dir: PathBuf,
    pub lo: u16,
    pub hi: u16,
}

impl Pool {
    /// [`lock_dir`] and the [`candidates`] outside this machine's ephemeral range.
    pub fn system() -> Self {
        let (lo, hi) = candidates(ephemeral_range());
        Self {
            dir: lock_dir(),
            lo,
            hi,
        }
    }

    /// Takes the first port, from a random starting point, that is not locked and that
    /// nothing listens on.
    pub fn lease(&self) -> Result<Lease, LeaseError> {
        self.make_dir()?;
        let span = u32::from(self.hi) - u32::from(self.lo) + 1;
        let start = random_u32() % span;
        for i in 0..span {
            let port = (u32::from(self.lo) + (start + i) % span) as u16;
            let Some(lock) = self.try_lock(port)? else {
                continue;
            };
            if TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_ok() {
                return Ok(Lease { port, _lock: lock });
            }
        }
        Err(LeaseError::Exhausted {
            lo: self.lo,
            hi: self.hi,
            dir: self.dir.clone(),
        })
    }

    fn make_dir(&self) -> Result<(), LeaseError> {
        let io = |source| LeaseError::Io {
            path: self.dir.clone(),
            source,
        };
        match fs::create_dir(&self.dir) {
            // Everyone's, like /tmp: other users' tests lock their ports here too.
            Ok(()) => {
                fs::set_permissions(&self.dir, fs::Permissions::from_mode(0o1777)).map_err(io)
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
            Err(e) => Err(io(e)),
        }
    }

    /// The port's lock file, locked; None when another holder has it.
    fn try_lock(&self, port: u16) -> Result<Option<File>, LeaseError> {
        let path = self.dir.join(format!("{port}.lock"));
        let opened = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o666)
            .open(&path);
        // Another user's file: flock works on a descriptor opened for reading too.
        let file = match opened {
            Err(e) if e.kind() == io::ErrorKind::PermissionDenied => File::open(&path),
            other => other,
        }
        .map_err(|source| LeaseError::Io {
            path: path.clone(),
            source,
        })?;
        match file.try_lock() {
            Ok(()) => Ok(Some(file)),
            Err(fs::TryLockError::WouldBlock) => Ok(None),
            Err(fs::TryLockError::Error(source)) => Err(LeaseError::Io { path, source }),
        }
    }
}

/// The kernel's ephemeral port range; Linux's default when it cannot be read.
pub fn ephemeral_range() -> (u16, u16) {
    fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|text| parse_range(&text))
        .unwrap_or((32_768, 60_999))
}

fn parse_range(text: &str) -> Option<(u16, u16)> {
    let mut parts = text.split_whitespace().map(str::parse::<u16>);
    let (lo, hi) = (parts.next()?.ok()?, parts.next()?.ok()?);
    (lo <= hi).then_some((lo, hi))
}

/// The ports leases come from, given the ephemeral range: the larger of [`LOWEST`] up to the
/// range's start and the range's end up to 65535; every port from 1024 when neither holds
/// 1000 ports.
pub fn candidates((eph_lo, eph_hi): (u16, u16)) -> (u16, u16) {
    let span = |lo: u32, hi: u32| if hi >= lo { hi - lo + 1 } else { 0 };
    let below = (u32::from(LOWEST), u32::from(eph_lo).saturating_sub(1));
    let above = (u32::from(eph_hi) + 1, 65_535);
    let best = if span(below.0, below.1) >= span(above.0, above.1) {
        below
    } else {
        above
    };
    if span(best.0, best.1) < MIN_SPAN {
        return (1024, 65_535);
    }
    (best.0 as u16, best.1 as u16)
}

/// True when a server's error or log says its address was taken.
pub fn says_in_use(text: &str) -> bool {
    text.to_ascii_lowercase().contains("address already in use")
}

/// Runs `start` (which leases its ports) until it succeeds, fails for another reason than
/// `in_use` says, or has failed `attempts` times; the last result.
pub fn retry_in_use<T, E>(
    attempts: usize,
    mut start: impl FnMut() -> Result<T, E>,
    in_use: impl Fn(&E) -> bool,
) -> Result<T, E> {
    let mut left = attempts.max(1);
    loop {
        left -= 1;
        match start() {
            Err(e) if left > 0 && in_use(&e) => continue,
            other => return other,
        }
    }
}

/// Not cryptographic: spreads the starting points of concurrent processes.
fn random_u32() -> u32 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    h.finish() as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A pool of one port, locked in a directory of its own: `port` is held in the machine's
    /// pool meanwhile (so no one else's server is on it), which makes the test deterministic.
    fn one_port_pool() -> (Pool, Lease) {
        let held = lease().unwrap();
        let dir = std::env::temp_dir().join(format!(
            "brewlytics-ports-test-{}-{}",
            std::process::id(),
            held.port()
        ));
        let pool = Pool {
            dir,
            lo: held.port(),
            hi: held.port(),
        };
        (pool, held)
    }

    #[test]
    fn candidates_stay_out_of_the_ephemeral_range() {
        // Linux's default: below it.
        assert_eq!(candidates((32_768, 60_999)), (20_000, 32_767));
        // A range starting low: above it.
        assert_eq!(candidates((15_000, 50_000)), (50_001, 65_535));
        // No room on either side: everything, the locks and retries doing the work.
        assert_eq!(candidates((1_024, 65_000)), (1_024, 65_535));
        assert_eq!(candidates((20_500, 64_900)), (1_024, 65_535));
        for eph in [(32_768, 60_999), (15_000, 50_000), (49_152, 65_535)] {
            let (lo, hi) = candidates(eph);
            assert!(hi < eph.0 || lo > eph.1, "{eph:?} -> {lo}-{hi}");
        }
    }

    #[test]
    fn the_kernel_range_is_read() {
        assert_eq!(parse_range("32768\t60999\n"), Some((32_768, 60_999)));
        assert_eq!(parse_range("61000 32768"), None);
        assert_eq!(parse_range("x"), None);
        let (lo, hi) = ephemeral_range();
        assert!(lo <= hi);
    }

    #[test]
    fn leases_of_this_machine_are_outside_the_ephemeral_range_and_distinct() {
        let (eph_lo, eph_hi) = ephemeral_range();
        let leases: Vec<Lease> = (0..50).map(|_| lease().unwrap()).collect();
        let mut ports: Vec<u16> = leases.iter().map(Lease::port).collect();
        let pool = Pool::system();
        for p in &ports {
            assert!((pool.lo..=pool.hi).contains(p), "{p}");
            if candidates((eph_lo, eph_hi)) != (1024, 65_535) {
                assert!(*p < eph_lo || *p > eph_hi, "{p} is ephemeral");
            }
        }
        ports.sort();
        ports.dedup();
        assert_eq!(ports.len(), 50, "a port leased twice");
    }

    #[test]
    fn a_leased_port_is_nobody_elses_while_held() {
        let (pool, _held) = one_port_pool();
        let first = pool.lease().unwrap();
        assert_eq!(first.port(), pool.lo);
        // Held: a second lease finds nothing, however often it looks.
        for _ in 0..3 {
            let err = pool.lease().unwrap_err();
            assert!(matches!(err, LeaseError::Exhausted { .. }), "{err}");
        }
        drop(first);
        assert_eq!(pool.lease().unwrap().port(), pool.lo);
        let _ = fs::remove_dir_all(&pool.dir);
    }

    #[test]
    fn a_port_locked_by_another_process_is_skipped() {
        let (pool, _held) = one_port_pool();
        fs::create_dir_all(&pool.dir).unwrap();
        let lock = pool.dir.join(format!("{}.lock", pool.lo));
        // util-linux's flock(1), as bench/ports.sh uses it, holds the lock until `cat` ends
        // (when its stdin closes).
        let mut holder = std::process::Command::new("flock")
            .arg("-o")
            .arg(&lock)
            .arg("cat")
            .stdin(std::process::Stdio::piped())
            .spawn()
            .expect("flock(1) (util-linux)");
        let start = std::time::Instant::now();
        while let Ok(lease) = pool.lease() {
            drop(lease);
            assert!(start.elapsed().as_secs() < 10, "flock(1) never locked");
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        for _ in 0..3 {
            assert!(matches!(pool.lease(), Err(LeaseError::Exhausted { .. })));
        }
        drop(holder.stdin.take());
        holder.wait().unwrap();
        assert_eq!(pool.lease().unwrap().port(), pool.lo);
        let _ = fs::remove_dir_all(&pool.dir);
    }

    #[test]
    fn a_port_something_listens_on_is_skipped() {
        let (pool, _held) = one_port_pool();
        // A program outside these rules listens there.
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, pool.lo)).unwrap();
        assert!(matches!(pool.lease(), Err(LeaseError::Exhausted { .. })));
        drop(listener);
        assert_eq!(pool.lease().unwrap().port(), pool.lo);
        let _ = fs::remove_dir_all(&pool.dir);
    }

    #[test]
    fn only_an_address_in_use_is_retried() {
        let attempts = |fail_with: &'static str, succeed_at: usize, max: usize| {
            let mut calls = 0;
            let r = retry_in_use(
                max,
                || {
                    calls += 1;
                    if calls >= succeed_at {
                        Ok(())
                    } else {
                        Err(fail_with)
                    }
                },
                |e| says_in_use(e),
            );
            (r.is_ok(), calls)
        };
        let in_use = "could not bind IPv4 address \"127.0.0.1\": Address already in use";
        assert_eq!(attempts(in_use, 3, 5), (true, 3));
        assert_eq!(attempts(in_use, 9, 3), (false, 3));
        assert_eq!(attempts("permission denied", 9, 5), (false, 1));
    }
}
