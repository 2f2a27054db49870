//! Test support: one embedded cluster per test binary, one database per test, free ports for
//! the servers a test starts, scratch directories, API keys ([`TestKeys`]) and TLS
//! certificates ([`TestCertificate`]).

mod certificate;
mod keys;

pub use certificate::TestCertificate;
pub use keys::TestKeys;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::cluster::{ClusterOptions, EmbeddedCluster};
use crate::dburl::DbUrl;

static SHARED: OnceLock<EmbeddedCluster> = OnceLock::new();
static COUNTER: AtomicU32 = AtomicU32::new(0);

/// The test binary's cluster, started on first use. It is never dropped (statics are not):
/// its watchdog stops it within a second of the test binary exiting.
pub fn shared_cluster() -> &'static EmbeddedCluster {
    SHARED.get_or_init(|| {
        EmbeddedCluster::start(ClusterOptions::throwaway())
            .unwrap_or_else(|e| panic!("starting the test PostgreSQL cluster: {e}"))
    })
}

/// A database of its own for one test, dropped (with its sessions) when this guard drops.
pub struct TestDb {
    name: String,
    cluster: &'static EmbeddedCluster,
}

impl TestDb {
    /// Creates an empty database named after `prefix` on the shared cluster.
    pub fn new(prefix: &str) -> Self {
        let cluster = shared_cluster();
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let clean: String = prefix
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() {
                    c.to_ascii_lowercase()
                } else {
                    '_'
                }
            })
            .take(40)
            .collect();
        let name = format!("t_{clean}_{}_{n}", std::process::id());
        cluster
            .ensure_database(&name)
            .unwrap_or_else(|e| panic!("creating test database {name}: {e}"));
        Self { name, cluster }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn url(&self) -> DbUrl {
        self.cluster.url(&self.name)
    }

    pub fn cluster(&self) -> &'static EmbeddedCluster {
        self.cluster
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let _ = self.cluster.drop_database(&self.name);
    }
}

/// Leases of [`free_port`], held until the test binary exits.
static HELD: std::sync::Mutex<Vec<crate::ports::Lease>> = std::sync::Mutex::new(Vec::new());

/// A loopback port for a server the test starts (or for "nobody listens here"): leased
/// outside the kernel's ephemeral range ([`crate::ports`]) and held until the test binary
/// exits, so no other test of any binary is given it, a restarted server finds it again, and
/// no outgoing connection takes it meanwhile.
pub fn free_port() -> u16 {
    let lease = crate::ports::lease().unwrap_or_else(|e| panic!("leasing a port: {e}"));
    let port = lease.port();
    HELD.lock().unwrap_or_else(|e| e.into_inner()).push(lease);
    port
}

/// `127.0.0.1:` a [`free_port`].
pub fn free_addr() -> String {
    format!("127.0.0.1:{}", free_port())
}

/// A directory of its own under the system's temp dir (which the `postgres` user can reach
/// when the tests run as root, so `up`'s embedded PostgreSQL can live in it), removed on drop
/// once any PostgreSQL in it has stopped. Declare it before the processes that use it, so it
/// drops after them.
pub struct Scratch(PathBuf);

impl Scratch {
    pub fn new(name: &str) -> Self {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir =
            std::env::temp_dir().join(format!("brewlytics-{name}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("scratch directory");
        Self(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    pub fn join(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for Scratch {
    /// Waits (≤ 15 s) for an embedded PostgreSQL still shutting down in here: its watchdog
    /// needs the data directory to stop it.
    fn drop(&mut self) {
        let start = Instant::now();
        while has_postmaster(&self.0, 3) && start.elapsed() < Duration::from_secs(15) {
            std::thread::sleep(Duration::from_millis(200));
        }
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A `postmaster.pid` within `depth` levels of `dir`.
fn has_postmaster(dir: &Path, depth: u32) -> bool {
    if dir.join("postmaster.pid").exists() {
        return true;
    }
    depth > 0
        && std::fs::read_dir(dir).is_ok_and(|entries| {
            entries
                .flatten()
                .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                .any(|e| has_postmaster(&e.path(), depth - 1))
        })
}
