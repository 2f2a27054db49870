//! A real NATS JetStream cluster for the tests: three `nats-server` processes (Debian's
//! package) on leased loopback ports ([`super::free_port`]), each with its own store
//! directory, clustered by routes. A node can be killed with SIGKILL and restarted on the same
//! ports and store.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use brewlytics_support::ports;

use super::{free_port, http, scratch_dir, Proc};

/// Where Debian's `nats-server` package puts the server.
const CANDIDATES: &[&str] = &["/usr/sbin/nats-server", "/usr/bin/nats-server"];

/// The `nats-server` binary; a test that needs it fails, naming the package, without it.
pub fn nats_server_binary() -> PathBuf {
    if let Ok(p) = std::env::var("NATS_SERVER_BIN") {
        return PathBuf::from(p);
    }
    CANDIDATES
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .unwrap_or_else(|| {
            panic!(
                "nats-server is not installed: install the Debian package `nats-server` \
                 (apt-get install nats-server; scripts/test does) or set NATS_SERVER_BIN"
            )
        })
}

struct Node {
    name: String,
    client_port: u16,
    monitor_port: u16,
    config: PathBuf,
    proc: Option<Proc>,
}

pub struct NatsCluster {
    nodes: Vec<Node>,
    dir: PathBuf,
}

impl NatsCluster {
    /// Starts `n` clustered JetStream servers on free ports and waits until JetStream answers;
    /// all of them again, on other ports, if a port was taken before a server bound it.
    pub fn start(n: usize) -> Self {
        ports::retry_in_use(3, || Self::start_once(n), |e| ports::says_in_use(e))
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// [`NatsCluster::start`] without the second chance: Err with the failing server's log.
    pub fn start_once(n: usize) -> Result<Self, String> {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let bin = nats_server_binary();
        let dir = scratch_dir(&format!("nats-{}", NEXT.fetch_add(1, Ordering::Relaxed)));
        let ports: Vec<(u16, u16, u16)> = (0..n)
            .map(|_| (free_port(), free_port(), free_port()))
            .collect();
        let routes: Vec<String> = ports
            .iter()
            .map(|(_, cluster, _)| format!("\"nats-route://127.0.0.1:{cluster}\""))
            .collect();
        let mut nodes = Vec::new();
        for (i, (client, cluster, monitor)) in ports.iter().enumerate() {
            let name = format!("n{}", i + 1);
            let store = dir.join(&name);
            std::fs::create_dir_all(&store).unwrap();
            let config = dir.join(format!("{name}.conf"));
            let cluster_block = if n > 1 {
                format!(
                    "cluster {{\n  name: brewlytics_test\n  listen: 127.0.0.1:{cluster}\n  routes: [{}]\n}}\n",
                    routes.join(", ")
                )
            } else {
                String::new()
            };
            std::fs::write(
                &config,
                format!(
                    "server_name: {name}\nlisten: 127.0.0.1:{client}\nhttp: 127.0.0.1:{monitor}\n\
                     jetstream {{\n  store_dir: \"{}\"\n  max_memory_store: 64MB\n  max_file_store: 2GB\n}}\n{cluster_block}",
                    store.display()
                ),
            )
            .unwrap();
            let mut node = Node {
                name,
                client_port: *client,
                monitor_port: *monitor,
                config,
                proc: None,
            };
            node.proc = Some(spawn(&bin, &node, &dir));
            nodes.push(node);
        }
        let mut cluster = Self { nodes, dir };
        cluster.wait_ready(Duration::from_secs(30))?;
        Ok(cluster)
    }

    /// Every server's client URL, comma-separated (what `--nats-url` takes).
    pub fn url(&self) -> String {
        self.nodes
            .iter()
            .map(|n| format!("nats://127.0.0.1:{}", n.client_port))
            .collect::<Vec<_>>()
            .join(",")
    }

    pub fn node_names(&self) -> Vec<String> {
        self.nodes.iter().map(|n| n.name.clone()).collect()
    }

    /// SIGKILL of node `name`.
    pub fn kill9(&mut self, name: &str) {
        let node = self.nodes.iter_mut().find(|n| n.name == name).unwrap();
        if let Some(mut p) = node.proc.take() {
            p.kill9();
        }
    }

    /// Starts node `name` again (same ports and store) and waits until it is healthy.
    pub fn restart(&mut self, name: &str) {
        let bin = nats_server_binary();
        let dir = self.dir.clone();
        let node = self.nodes.iter_mut().find(|n| n.name == name).unwrap();
        assert!(node.proc.is_none(), "{name} is running");
        node.proc = Some(spawn(&bin, node, &dir));
        wait_healthy(node, Duration::from_secs(30)).unwrap_or_else(|e| panic!("{e}"));
    }

    /// Starts every stopped node, then waits until all are healthy (a node alone cannot be:
    /// JetStream needs a quorum).
    pub fn restart_all(&mut self) {
        let bin = nats_server_binary();
        let dir = self.dir.clone();
        for node in self.nodes.iter_mut().filter(|n| n.proc.is_none()) {
            node.proc = Some(spawn(&bin, node, &dir));
        }
        self.wait_ready(Duration::from_secs(30))
            .unwrap_or_else(|e| panic!("{e}"));
    }

    fn wait_ready(&mut self, within: Duration) -> Result<(), String> {
        self.nodes
            .iter_mut()
            .try_for_each(|n| wait_healthy(n, within))
    }

    /// The servers' logs, for failure messages.
    pub fn logs(&self) -> HashMap<String, String> {
        self.nodes
            .iter()
            .map(|n| {
                (
                    n.name.clone(),
                    std::fs::read_to_string(self.dir.join(format!("{}.log", n.name)))
                        .unwrap_or_default(),
                )
            })
            .collect()
    }
}

impl Drop for NatsCluster {
    /// Stops the servers, then removes their JetStream stores (up to 2 GB each); the
    /// servers' logs and configurations stay beside them for a failure's post-mortem.
    fn drop(&mut self) {
        for node in &mut self.nodes {
            drop(node.proc.take());
            let _ = std::fs::remove_dir_all(self.dir.join(&node.name));
        }
    }
}

fn spawn(bin: &PathBuf, node: &Node, dir: &std::path::Path) -> Proc {
    let mut cmd = Command::new(bin);
    cmd.arg("-c").arg(&node.config);
    // Appended: a restarted node's log follows the first life's.
    let log = dir.join(format!("{}.log", node.name));
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log)
        .unwrap();
    cmd.stdin(std::process::Stdio::null())
        .stdout(file.try_clone().unwrap())
        .stderr(file);
    let child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("starting {}: {e}", bin.display()));
    Proc::from_child(child, log)
}

/// Waits until the node's `/healthz` says JetStream is ok; Err with its log when it exits or
/// time runs out.
fn wait_healthy(node: &mut Node, within: Duration) -> Result<(), String> {
    let addr = format!("127.0.0.1:{}", node.monitor_port);
    let start = Instant::now();
    loop {
        if http(&addr, "GET", "/healthz", None).is_some_and(|(_, body)| body.contains("\"ok\"")) {
            return Ok(());
        }
        let proc = node.proc.as_mut().expect("a started node");
        let exited = proc.exited();
        if exited.is_some() || start.elapsed() > within {
            return Err(format!(
                "nats-server {} not healthy within {within:?} ({}); log:\n{}",
                node.name,
                exited.map_or("running".into(), |s| s.to_string()),
                proc.log_text()
            ));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}
