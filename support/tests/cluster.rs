//! The embedded cluster against the real system binaries: starts, serves SQL over TCP with a
//! password, stops on drop, and never outlives its owner.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use brewlytics_support::{ClusterOptions, EmbeddedCluster};

fn alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|s| s.contains(") Z "))
            .unwrap_or(false)
}

fn wait_gone(pid: u32, limit: Duration) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if !alive(pid) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

#[tokio::test]
async fn starts_answers_over_tcp_and_stops_on_drop() {
    let cluster = EmbeddedCluster::start(ClusterOptions::throwaway()).expect("cluster starts");
    let pid = cluster.postmaster_pid().expect("postmaster pid");
    let dir = cluster.data_dir().to_path_buf();
    assert!(alive(pid));

    let url = cluster.url("postgres");
    let mut conn = sqlx::PgConnection::connect_with(&url.connect_options().unwrap())
        .await
        .expect("connect with password over TCP");
    let level: String = sqlx::query_scalar("show wal_level")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(level, "logical");
    drop(conn);

    // A wrong password is refused: TCP really uses password authentication.
    let bad = url.expose().replace(cluster.password(), "wrong");
    let opts: sqlx::postgres::PgConnectOptions = bad.parse().unwrap();
    assert!(sqlx::PgConnection::connect_with(&opts).await.is_err());

    drop(cluster);
    assert!(
        wait_gone(pid, Duration::from_secs(10)),
        "postmaster {pid} still running"
    );
    assert!(!dir.exists(), "throwaway directory {dir:?} left behind");
}

use sqlx::Connection;

/// Run in a child process by `watchdog_stops_server_of_a_dead_owner`: starts a cluster, prints
/// its pid and exits without dropping it.
#[test]
fn watchdog_child() {
    if std::env::var("BREWLYTICS_WATCHDOG_CHILD").is_err() {
        return;
    }
    let cluster = EmbeddedCluster::start(ClusterOptions::throwaway()).unwrap();
    println!("POSTMASTER_PID={}", cluster.postmaster_pid().unwrap());
    std::process::exit(0);
}

#[test]
fn watchdog_stops_server_of_a_dead_owner() {
    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "watchdog_child",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("BREWLYTICS_WATCHDOG_CHILD", "1")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let pid: u32 = stdout
        .lines()
        .find_map(|l| l.split_once("POSTMASTER_PID=").map(|(_, pid)| pid.trim()))
        .unwrap_or_else(|| panic!("child printed no pid: {stdout}"))
        .parse()
        .unwrap();
    assert!(
        wait_gone(pid, Duration::from_secs(20)),
        "postmaster {pid} outlived its owner"
    );
}

#[test]
fn persistent_cluster_restarts_on_its_data() {
    let dir = std::env::temp_dir().join(format!("brewlytics-persist-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    {
        let c = EmbeddedCluster::start(ClusterOptions::persistent(&dir)).unwrap();
        c.ensure_database("kept").unwrap();
        c.psql("kept", "create table t(x int); insert into t values (42)")
            .unwrap();
    }
    {
        let c = EmbeddedCluster::start(ClusterOptions::persistent(&dir)).unwrap();
        assert_eq!(c.psql("kept", "select x from t").unwrap(), "42");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn missing_binaries_give_one_clear_line() {
    let err = brewlytics_support::cluster::find_bindir_from(Some("/nonexistent".into()))
        .unwrap_err()
        .to_string();
    assert!(err.contains("apt-get install postgresql"), "{err}");
    assert!(!err.contains('\n'));
}
