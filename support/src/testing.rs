//! Test support: one embedded cluster per test binary, one database per test, and free ports
//! for the servers a test starts.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;

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
