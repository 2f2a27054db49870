//! Test servers get ports nothing else takes. While hundreds of outgoing connections hold
//! ephemeral ports — and more come and go the whole time — a 3-node NATS cluster, a PostgreSQL
//! cluster and the API start, several times over: every one binds, on a port outside the
//! kernel's ephemeral range, and no server log says "address already in use".
//!
//! A port found free by binding port 0 and releasing it comes from the ephemeral range, where
//! any of these connections can take it before the server binds it (how a CI run once lost
//! nats-server n1). The leases of `brewlytics_support::ports` come from outside that range.

mod harness;

use std::collections::{BTreeSet, VecDeque};
use std::net::{TcpListener, TcpStream};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use brewlytics_support::ports::{self, ephemeral_range};
use brewlytics_support::{ClusterOptions, EmbeddedCluster};
use harness::nats::NatsCluster;
use harness::{free_addr, http, scratch_dir, wait_for, Proc};

/// Outgoing connections held open at any time.
const HELD: usize = 300;
/// Held connections replaced by new ones every few milliseconds while the servers start.
const CHURN: usize = 5;
const ROUNDS: usize = 5;

/// Ephemeral ports taken and given back the two ways the kernel hands them out: `HELD`
/// outgoing connections to a local sink (whose source ports Linux takes from one half of the
/// range) and `HELD` sockets bound to port 0 (from the other half — the half a port found by
/// binding port 0 came from), `CHURN` of each replaced every 10 ms until `stop`. Returns the
/// distinct ports they had. The sink closes its side at once: a client socket keeps its port
/// until the client closes it.
fn hold_ephemeral_ports(
    stop: Arc<AtomicBool>,
    made: Arc<AtomicUsize>,
) -> std::thread::JoinHandle<Vec<u16>> {
    let sink = TcpListener::bind("127.0.0.1:0").unwrap();
    let target = sink.local_addr().unwrap();
    std::thread::spawn(move || {
        for s in sink.incoming() {
            drop(s);
        }
    });
    std::thread::spawn(move || {
        let mut outgoing = VecDeque::new();
        let mut bound = VecDeque::new();
        let mut seen = BTreeSet::new();
        let mut take = |outgoing: &mut VecDeque<TcpStream>, bound: &mut VecDeque<TcpListener>| {
            let s = TcpStream::connect(target).expect("an outgoing connection");
            seen.insert(s.local_addr().unwrap().port());
            outgoing.push_back(s);
            let l = TcpListener::bind("127.0.0.1:0").expect("a socket on port 0");
            seen.insert(l.local_addr().unwrap().port());
            bound.push_back(l);
            made.fetch_add(1, Ordering::Relaxed);
        };
        while outgoing.len() < HELD {
            take(&mut outgoing, &mut bound);
        }
        while !stop.load(Ordering::Relaxed) {
            for _ in 0..CHURN {
                outgoing.pop_front();
                bound.pop_front();
                take(&mut outgoing, &mut bound);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        seen.into_iter().collect()
    })
}

#[test]
fn servers_bind_while_hundreds_of_outgoing_connections_hold_ephemeral_ports() {
    let (eph_lo, eph_hi) = ephemeral_range();
    let pool = ports::Pool::system();
    let outside = pool.hi < eph_lo || pool.lo > eph_hi;
    let stop = Arc::new(AtomicBool::new(false));
    let made = Arc::new(AtomicUsize::new(0));
    let holder = hold_ephemeral_ports(stop.clone(), made.clone());
    while made.load(Ordering::Relaxed) < HELD {
        std::thread::sleep(Duration::from_millis(10));
    }

    let logs = scratch_dir("ports");
    let mut ports_used = Vec::new();
    for round in 0..ROUNDS {
        // Started once each: a server that found its port taken would fail the test, not be
        // started again elsewhere (PostgreSQL's retries would show in its log, checked below).
        let nats = NatsCluster::start_once(3).unwrap_or_else(|e| panic!("round {round}: {e}"));
        let pg = EmbeddedCluster::start(ClusterOptions::throwaway()).expect("PostgreSQL");
        pg.ensure_database("coffee_oltp").unwrap();
        let api_addr = free_addr();
        let mut api = {
            let mut cmd = Command::new(env!("CARGO_BIN_EXE_brewlytics"));
            cmd.args(["api", "--listen", &api_addr])
                .env("OLTP_DATABASE_URL", pg.url("coffee_oltp").expose())
                .env("BREWLYTICS_DATA_DIR", logs.join("unused"))
                .env("RUST_LOG", "info");
            Proc::spawn(cmd, logs.join(format!("api-{round}.log")))
        };
        wait_for(
            Duration::from_secs(60),
            "the API answering /health",
            &mut [&mut api],
            || matches!(http(&api_addr, "GET", "/health", None), Some((200, _))).then_some(()),
        );

        let api_port: u16 = api_addr.rsplit(':').next().unwrap().parse().unwrap();
        let nats_ports: Vec<u16> = nats
            .url()
            .split(',')
            .map(|u| u.rsplit(':').next().unwrap().parse().unwrap())
            .collect();
        ports_used.push(pg.port());
        ports_used.push(api_port);
        ports_used.extend(&nats_ports);
        let server_logs = [
            std::fs::read_to_string(pg.data_dir().join("postgres.log")).unwrap_or_default(),
            api.log_text(),
        ]
        .into_iter()
        .chain(nats.logs().into_values());
        for log in server_logs {
            assert!(
                !ports::says_in_use(&log),
                "round {round}: a server found its address in use:\n{log}"
            );
        }
    }
    stop.store(true, Ordering::Relaxed);
    let ephemeral_seen = holder.join().unwrap();

    // The connections really used ephemeral ports, hundreds of them.
    assert!(
        ephemeral_seen.len() >= 2 * HELD,
        "only {} distinct ephemeral ports",
        ephemeral_seen.len()
    );
    assert!(ephemeral_seen.iter().all(|p| (eph_lo..=eph_hi).contains(p)));
    // And no server was on one.
    if outside {
        let inside: Vec<&u16> = ports_used
            .iter()
            .filter(|p| (eph_lo..=eph_hi).contains(*p))
            .collect();
        assert!(inside.is_empty(), "servers on ephemeral ports: {inside:?}");
    }
    eprintln!(
        "{ROUNDS} rounds of NATS x3, PostgreSQL and the API on ports {}-{} while {} outgoing \
         connections and as many sockets on port 0 ({HELD} of each at a time) took {} distinct \
         ephemeral ports of {eph_lo}-{eph_hi}",
        pool.lo,
        pool.hi,
        made.load(Ordering::Relaxed),
        ephemeral_seen.len()
    );
}
