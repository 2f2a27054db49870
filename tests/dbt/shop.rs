//! The shop under test: one embedded PostgreSQL with both databases, `brewlytics` processes
//! on it, and the API and OLAP as the test talks to them.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use brewlytics_replicator::verify;
use brewlytics_support::{ClusterOptions, DbUrl, EmbeddedCluster};
use serde_json::{json, Value};
use sqlx::PgConnection;

use super::harness::{connect, Proc};
use super::BIN;

/// The embedded cluster (both databases) and the data directory `brewlytics` commands use.
pub struct Shop {
    cluster: Option<EmbeddedCluster>,
    pub data: PathBuf,
    pub logs: PathBuf,
}

impl Shop {
    pub fn start(root: &Path) -> Self {
        let data = root.join("brewlytics");
        let mut opts = ClusterOptions::persistent(&data);
        opts.unsafe_fast = true;
        let cluster = EmbeddedCluster::start(opts).expect("embedded PostgreSQL");
        cluster.ensure_database("coffee_oltp").unwrap();
        cluster.ensure_database("coffee_olap").unwrap();
        let logs = root.join("logs");
        std::fs::create_dir_all(&logs).unwrap();
        Self {
            cluster: Some(cluster),
            data,
            logs,
        }
    }

    pub fn url(&self, db: &str) -> DbUrl {
        self.cluster.as_ref().unwrap().url(db)
    }

    pub fn password(&self) -> String {
        self.cluster.as_ref().unwrap().password().to_owned()
    }

    /// `brewlytics ARGS` on the embedded cluster, found through the data directory alone.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(BIN);
        c.args(args)
            .env("BREWLYTICS_DATA_DIR", &self.data)
            .env_remove("OLTP_DATABASE_URL")
            .env_remove("OLAP_DATABASE_URL")
            .env_remove("SLOT_NAME")
            .env_remove("RUST_LOG");
        c
    }

    /// `brewlytics ARGS` to its end: its stdout (panics with its output when it fails).
    pub fn run(&self, args: &[&str]) -> String {
        let out = self.command(args).output().unwrap();
        assert!(
            out.status.success(),
            "brewlytics {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub fn spawn(&self, name: &str, args: &[&str], env: &[(&str, &str)]) -> Proc {
        let mut c = self.command(args);
        c.env("RUST_LOG", "info");
        for (k, v) in env {
            c.env(k, v);
        }
        Proc::spawn(c, self.logs.join(format!("{name}.log")))
    }

    pub async fn olap(&self) -> PgConnection {
        connect(&self.url("coffee_olap")).await
    }

    /// Waits (≤ 60 s) until OLAP equals OLTP, star schema included.
    pub async fn converged(&self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let mut oltp = connect(&self.url("coffee_oltp")).await;
            let mut olap = self.olap().await;
            let report = verify::compare(&mut oltp, &mut olap, "brewlytics")
                .await
                .unwrap();
            if report.all_equal() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "OLAP never caught up with OLTP: {report:?}"
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

impl Drop for Shop {
    fn drop(&mut self) {
        if let Some(mut c) = self.cluster.take() {
            let _ = c.stop();
        }
        let _ = std::fs::remove_dir_all(&self.data);
    }
}

/// An API request with an optional JSON body: (status, JSON answer or null).
pub fn api_json(addr: &str, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
    let body = body.map(Value::to_string);
    let (status, answer) = super::harness::http(addr, method, path, body.as_deref())
        .unwrap_or_else(|| panic!("{method} {path}: no answer from the API"));
    (status, serde_json::from_str(&answer).unwrap_or(Value::Null))
}

pub fn call(api: &str, method: &str, path: &str, body: Value, expect: u16) -> Value {
    let (status, answer) = api_json(api, method, path, Some(&body));
    assert_eq!(status, expect, "{method} {path} {body}: {answer}");
    answer
}

pub fn order(
    api: &str,
    customer: Option<i64>,
    staff: (i64, i64),
    method: &str,
    items: &[(i64, i64)],
) -> Value {
    let items: Vec<Value> = items
        .iter()
        .map(|(p, q)| json!({"product_id": p, "quantity": q}))
        .collect();
    call(
        api,
        "POST",
        "/orders",
        json!({"customer_id": customer, "employee_id": staff.0, "store_id": staff.1,
               "payment_method": method, "items": items}),
        201,
    )
}

pub async fn scalar(olap: &mut PgConnection, sql: &str) -> String {
    sqlx::query_scalar::<_, Option<String>>(sql)
        .fetch_one(olap)
        .await
        .unwrap_or_else(|e| panic!("{e}: {sql}"))
        .unwrap_or_default()
}

pub async fn execute(olap: &mut PgConnection, sql: &str) {
    let done = sqlx::query(sql)
        .execute(olap)
        .await
        .unwrap_or_else(|e| panic!("{e}: {sql}"));
    assert!(done.rows_affected() > 0, "nothing changed: {sql}");
}

/// Seconds since the source commit the checkpoint of slot `brewlytics` records.
pub async fn checkpoint_age(olap: &mut PgConnection) -> f64 {
    scalar(
        olap,
        "select extract(epoch from now() - commit_ts)::text from replication_checkpoint
         where slot_name = 'brewlytics'",
    )
    .await
    .parse()
    .unwrap()
}
