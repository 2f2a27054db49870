//! dbt over the warehouse: the project in `dbt/`, run by the pinned dbt (a virtual environment
//! at `.venv`, from `dbt/requirements.txt`) against coffee_olap filled by the replicator from
//! orders posted through the API. One embedded PostgreSQL with both databases, as `brewlytics
//! up` runs it, but with the API and the replicator as separate processes so the replicator
//! can be stopped; dbt connects through `eval "$(brewlytics dbt-env)"`, as the README says.
//!
//! 1. `dbt build` and `dbt source freshness` pass; the marts agree with what the API was told.
//! 2. More orders: the incremental model adds exactly the journal's new events.
//! 3. The replicator stops. One fact row corrupted: `dbt build` fails naming the test that
//!    caught it, and skips the marts. Then one corruption per kind of test, each caught.
//! 4. Past the freshness threshold, `dbt source freshness` reports every source stale; with
//!    the replicator back, fresh again. No password in any file dbt wrote.

mod harness;

use std::collections::BTreeMap;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use brewlytics_replicator::verify;
use brewlytics_support::{ClusterOptions, DbUrl, EmbeddedCluster};
use harness::{connect, free_addr, scratch_dir, wait_streaming, Proc};
use serde_json::{json, Value};
use sqlx::PgConnection;

const BIN: &str = env!("CARGO_BIN_EXE_brewlytics");
const INSTALL: &str = "python3 -m venv .venv && .venv/bin/pip install -r dbt/requirements.txt";
/// The freshness thresholds (minutes) for this test: the shortest dbt allows.
const VARS: &str = "{freshness_warn_after_minutes: 1, freshness_error_after_minutes: 1}";
const STALE_AFTER_SECS: f64 = 60.0;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The dbt of `.venv` (or `DBT_BIN`), checked against the pins of dbt/requirements.txt.
/// Missing, it fails the test with what to install.
fn dbt_bin() -> PathBuf {
    let bin = std::env::var_os("DBT_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join(".venv/bin/dbt"));
    if !bin.is_file() {
        let python = Command::new("python3")
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success());
        let venv = python
            && Command::new("python3")
                .args(["-c", "import venv, ensurepip"])
                .output()
                .is_ok_and(|o| o.status.success());
        let python_note = match (python, venv) {
            (false, _) => "; python3 is missing: install it first (Debian/Ubuntu: `apt-get install python3 python3-venv`)",
            (true, false) => "; python3 cannot create virtual environments here: `apt-get install python3-venv` first (Debian/Ubuntu)",
            (true, true) => "",
        };
        panic!(
            "dbt not found at {}: this test runs the dbt project in dbt/ with the pinned dbt-core and \
             dbt-postgres. Install them from the repository root with `{INSTALL}`{python_note} \
             (or set DBT_BIN to a dbt executable of those versions).",
            bin.display()
        );
    }
    // The versions installed, read by the environment's own Python (no network).
    let python = bin.with_file_name("python");
    if python.is_file() {
        let pins = std::fs::read_to_string(repo().join("dbt/requirements.txt")).unwrap();
        for line in pins.lines().filter(|l| l.contains("==")) {
            let (package, version) = line.trim().split_once("==").unwrap();
            let out = Command::new(&python)
                .args([
                    "-c",
                    &format!("import importlib.metadata as m; print(m.version('{package}'))"),
                ])
                .output()
                .expect("running the virtual environment's python");
            let installed = String::from_utf8_lossy(&out.stdout).trim().to_owned();
            assert_eq!(
                installed, version,
                "{package} {installed:?} is installed, dbt/requirements.txt pins {version}: reinstall with `{INSTALL}`"
            );
        }
    }
    bin
}

/// The embedded cluster (both databases) and the data directory `brewlytics` commands use.
struct Shop {
    cluster: Option<EmbeddedCluster>,
    data: PathBuf,
    logs: PathBuf,
}

impl Shop {
    fn start(root: &Path) -> Self {
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

    fn url(&self, db: &str) -> DbUrl {
        self.cluster.as_ref().unwrap().url(db)
    }

    fn password(&self) -> String {
        self.cluster.as_ref().unwrap().password().to_owned()
    }

    /// `brewlytics ARGS` on the embedded cluster, found through the data directory alone.
    fn command(&self, args: &[&str]) -> Command {
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
    fn run(&self, args: &[&str]) -> String {
        let out = self.command(args).output().unwrap();
        assert!(
            out.status.success(),
            "brewlytics {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn spawn(&self, name: &str, args: &[&str], env: &[(&str, &str)]) -> Proc {
        let mut c = self.command(args);
        c.env("RUST_LOG", "info");
        for (k, v) in env {
            c.env(k, v);
        }
        Proc::spawn(c, self.logs.join(format!("{name}.log")))
    }

    async fn olap(&self) -> PgConnection {
        connect(&self.url("coffee_olap")).await
    }

    /// Waits (≤ 60 s) until OLAP equals OLTP, star schema included.
    async fn converged(&self) {
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

/// One dbt invocation: whether it succeeded, its output, and its artifact (run_results.json,
/// or sources.json for `source freshness`).
struct DbtRun {
    ok: bool,
    output: String,
    artifact: Value,
}

impl DbtRun {
    /// Node name → status, from the artifact (`pipeline.replication_checkpoint` for sources).
    fn statuses(&self) -> BTreeMap<String, String> {
        self.artifact["results"]
            .as_array()
            .expect("results in the dbt artifact")
            .iter()
            .map(|r| {
                let id = r["unique_id"].as_str().unwrap();
                let parts: Vec<&str> = id.split('.').collect();
                let name = if parts[0] == "source" {
                    parts[2..].join(".")
                } else {
                    parts[2].to_owned()
                };
                (name, r["status"].as_str().unwrap().to_owned())
            })
            .collect()
    }

    fn failed(&self) -> Vec<String> {
        self.statuses()
            .into_iter()
            .filter(|(_, s)| s != "success" && s != "pass")
            .map(|(n, s)| format!("{n}={s}"))
            .collect()
    }

    fn result(&self, name: &str) -> &Value {
        self.artifact["results"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| {
                r["unique_id"]
                    .as_str()
                    .unwrap()
                    .ends_with(&format!(".{name}"))
            })
            .unwrap_or_else(|| panic!("{name} in the dbt artifact: {}", self.output))
    }
}

struct Dbt {
    bin: PathBuf,
    data: PathBuf,
    target: PathBuf,
    logs: PathBuf,
}

impl Dbt {
    /// `eval "$(brewlytics dbt-env)"`, then `dbt ARGS` from the repository root, with this
    /// test's freshness thresholds and its target and log directories.
    fn run(&self, args: &[&str]) -> DbtRun {
        let artifact = self.target.join(if args[0] == "source" {
            "sources.json"
        } else {
            "run_results.json"
        });
        let _ = std::fs::remove_file(&artifact);
        let start = Instant::now();
        let out = Command::new("sh")
            .args([
                "-c",
                r#"eval "$("$BREWLYTICS" dbt-env)" && exec "$DBT" "$@""#,
                "sh",
            ])
            .args(args)
            .args(["--vars", VARS])
            .current_dir(repo())
            .env("BREWLYTICS", BIN)
            .env("DBT", &self.bin)
            .env("BREWLYTICS_DATA_DIR", &self.data)
            .env("DBT_TARGET_PATH", &self.target)
            .env("DBT_LOG_PATH", &self.logs)
            .env("DBT_USE_COLORS", "false")
            .env("DBT_SEND_ANONYMOUS_USAGE_STATS", "false")
            .env_remove("OLAP_DATABASE_URL")
            .env_remove("OLTP_DATABASE_URL")
            .env_remove("SLOT_NAME")
            .env_remove("DBT_PROFILES_DIR")
            .env_remove("DBT_PROJECT_DIR")
            .output()
            .expect("running sh");
        let output = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        eprintln!(
            "dbt {} ({:.1} s): {}",
            args.join(" "),
            start.elapsed().as_secs_f64(),
            output
                .lines()
                .rev()
                .find(|l| l.contains("Done.") || l.contains("Finished"))
                .unwrap_or("")
                .trim()
        );
        let artifact = std::fs::read_to_string(&artifact)
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or(Value::Null);
        DbtRun {
            ok: out.status.success(),
            output,
            artifact,
        }
    }
}

/// An API request with an optional JSON body: (status, JSON answer or null).
fn api_json(addr: &str, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
    let body = body.map(Value::to_string);
    let (status, answer) = harness::http(addr, method, path, body.as_deref())
        .unwrap_or_else(|| panic!("{method} {path}: no answer from the API"));
    (status, serde_json::from_str(&answer).unwrap_or(Value::Null))
}

fn call(api: &str, method: &str, path: &str, body: Value, expect: u16) -> Value {
    let (status, answer) = api_json(api, method, path, Some(&body));
    assert_eq!(status, expect, "{method} {path} {body}: {answer}");
    answer
}

fn order(
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

async fn scalar(olap: &mut PgConnection, sql: &str) -> String {
    sqlx::query_scalar::<_, Option<String>>(sql)
        .fetch_one(olap)
        .await
        .unwrap_or_else(|e| panic!("{e}: {sql}"))
        .unwrap_or_default()
}

async fn execute(olap: &mut PgConnection, sql: &str) {
    let done = sqlx::query(sql)
        .execute(olap)
        .await
        .unwrap_or_else(|e| panic!("{e}: {sql}"));
    assert!(done.rows_affected() > 0, "nothing changed: {sql}");
}

/// Seconds since the source commit the checkpoint of slot `brewlytics` records.
async fn checkpoint_age(olap: &mut PgConnection) -> f64 {
    scalar(
        olap,
        "select extract(epoch from now() - commit_ts)::text from replication_checkpoint
         where slot_name = 'brewlytics'",
    )
    .await
    .parse()
    .unwrap()
}

fn grep_files(dir: &Path, needle: &str, found: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            grep_files(&path, needle, found);
        } else if std::fs::read(&path).is_ok_and(|b| String::from_utf8_lossy(&b).contains(needle)) {
            found.push(path);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dbt_builds_tests_and_watches_freshness_of_the_warehouse() {
    let bin = dbt_bin();
    let started = Instant::now();
    let root = scratch_dir("dbt");
    let shop = Shop::start(&root);
    shop.run(&["migrate"]);
    shop.run(&["seed", "--orders", "120"]);

    // The API and the replicator's endpoints need a key: one made as a user makes it.
    let key = shop.run(&["api-key", "create", "--name", "dbt", "--scope", "admin"]);
    let api = free_addr();
    let replicator_addr = free_addr();
    harness::remember_key(&api, key.trim());
    harness::remember_key(&replicator_addr, key.trim());
    let _api = shop.spawn("api", &["api"], &[("API_LISTEN", &api)]);
    let mut replicator = shop.spawn(
        "replicator",
        &["replicate"],
        &[("REPLICATOR_LISTEN", &replicator_addr)],
    );
    wait_streaming(&replicator_addr, &replicator).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(&api).is_err() {
        assert!(Instant::now() < deadline, "the API never listened");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Orders through the API: a new customer and product, a price change between orders
    // (a second product version), a walk-in, status changes, a cancellation, a deletion and a
    // restock.
    let pid = std::process::id();
    let customer = call(
        &api,
        "POST",
        "/customers",
        json!({"name": "Dee Beetee", "email": format!("dbt-{pid}@example.com")}),
        201,
    )["id"]
        .as_i64()
        .unwrap();
    let product = call(
        &api,
        "POST",
        "/products",
        json!({"name": format!("dbt cortado {pid}"), "category": "coffee", "price": "2.50"}),
        201,
    )["id"]
        .as_i64()
        .unwrap();
    let (status, staff) = api_json(&api, "GET", "/employees/active", None);
    assert_eq!(status, 200);
    let staff = staff
        .as_array()
        .unwrap()
        .iter()
        .find_map(|e| Some((e["id"].as_i64()?, e["store_id"].as_i64()?)))
        .expect("an active employee with a store");
    let other = 1; // a seeded product
    let o1 = order(
        &api,
        Some(customer),
        staff,
        "card",
        &[(product, 2), (other, 1)],
    );
    let o2 = order(&api, Some(customer), staff, "mobile", &[(product, 1)]);
    let _walk_in = order(&api, None, staff, "cash", &[(other, 2)]);
    let o4 = order(&api, Some(customer), staff, "card", &[(other, 1)]);
    let o5 = order(&api, Some(customer), staff, "card", &[(product, 3)]);
    call(
        &api,
        "PATCH",
        &format!("/products/{product}"),
        json!({"price": "2.90"}),
        200,
    );
    let o6 = order(&api, Some(customer), staff, "card", &[(product, 4)]);
    let id = |o: &Value| o["id"].as_str().unwrap().to_owned();
    for status in ["preparing", "ready", "completed"] {
        call(
            &api,
            "PATCH",
            &format!("/orders/{}", id(&o1)),
            json!({"status": status}),
            200,
        );
    }
    call(
        &api,
        "PATCH",
        &format!("/orders/{}", id(&o4)),
        json!({"status": "cancelled"}),
        200,
    );
    let (status, answer) = api_json(&api, "DELETE", &format!("/orders/{}", id(&o5)), None);
    assert!((200..300).contains(&status), "DELETE /orders: {answer}");
    call(
        &api,
        "POST",
        "/inventory/restock",
        json!({"store_id": staff.1, "product_id": product, "quantity": 40}),
        201,
    );
    // Menu browsing: two impressions and a click, then an order in the same session.
    let at = (chrono::Utc::now() - chrono::Duration::minutes(3)).to_rfc3339();
    let event = |kind: &str| {
        json!({"kind": kind, "session_id": "dbt-1", "product_id": product,
                                   "occurred_at": at})
    };
    call(
        &api,
        "POST",
        "/events",
        json!([event("impression"), event("impression"), event("click")]),
        202,
    );
    call(
        &api,
        "POST",
        "/orders",
        json!({"customer_id": null, "employee_id": staff.0, "store_id": staff.1,
               "payment_method": "card", "session_id": "dbt-1",
               "items": [{"product_id": product, "quantity": 1}]}),
        201,
    );
    shop.converged().await;
    eprintln!(
        "pipeline ready and converged after {:.1} s",
        started.elapsed().as_secs_f64()
    );

    let dbt = Dbt {
        bin,
        data: shop.data.clone(),
        target: root.join("dbt-target"),
        logs: root.join("dbt-logs"),
    };
    let mut olap = shop.olap().await;

    // 1. Green: every data test passes, every model builds, every source is fresh.
    let build = dbt.run(&["build"]);
    assert!(build.ok, "dbt build failed: {}", build.output);
    let statuses = build.statuses();
    assert!(build.failed().is_empty(), "{:?}", build.failed());
    for name in [
        "assert_fact_sales_revenue_matches_replica",
        "assert_fact_sales_matches_replica",
        "assert_fact_payments_match_replica",
        "assert_fact_inventory_matches_movements",
        "assert_dim_product_versions_do_not_overlap",
        "assert_dim_product_one_current_version",
        "assert_dim_product_versions_are_contiguous",
        "assert_dimensions_match_replica",
        "warehouse_as_of",
        "order_status_history",
        "mart_store_daily",
        "mart_customer_lifetime_value",
        "mart_customer_cohorts",
        "mart_product_weekly",
        "mart_order_fulfilment",
        "mart_product_conversion",
        "assert_attribution_is_the_last_click",
        "assert_product_conversion_counts_the_events",
    ] {
        assert!(
            statuses.contains_key(name),
            "{name} did not run: {statuses:?}"
        );
    }
    let relationships = statuses
        .keys()
        .filter(|n| n.starts_with("source_relationships_star_fact_"))
        .count();
    assert_eq!(
        relationships, 13,
        "fact → dimension relationship tests: {statuses:?}"
    );
    assert_eq!(
        scalar(
            &mut olap,
            &format!("select count(*)::text from dim_product where product_id = {product}")
        )
        .await,
        "2",
        "the price change opened a second version of the product"
    );

    // The marts agree with what the API was told.
    let paid = |o: &Value| o["total"].as_str().unwrap().parse::<f64>().unwrap();
    let expected_value = paid(&o1) + paid(&o2) + paid(&o6);
    let clv = scalar(
        &mut olap,
        &format!(
            "select concat_ws(' ', orders, cancelled_orders, lifetime_revenue)
             from analytics.mart_customer_lifetime_value where customer_id = {customer}"
        ),
    )
    .await;
    let clv: Vec<f64> = clv.split(' ').map(|v| v.parse().unwrap()).collect();
    assert_eq!(
        clv[..2],
        [3.0, 1.0],
        "orders and cancelled orders of the customer"
    );
    assert!(
        (clv[2] - expected_value).abs() < 0.001,
        "lifetime revenue {clv:?} vs {expected_value}"
    );
    let weekly = scalar(
        &mut olap,
        &format!(
            "select concat_ws(' ', sum(units), sum(revenue), count(distinct product_name))
             from analytics.mart_product_weekly where product_id = {product}"
        ),
    )
    .await;
    let weekly: Vec<f64> = weekly.split(' ').map(|v| v.parse().unwrap()).collect();
    assert!(
        weekly.len() == 3
            && weekly[0] == 8.0
            && (weekly[1] - (3.0 * 2.5 + 5.0 * 2.9)).abs() < 0.001
            && weekly[2] == 1.0,
        "units, revenue (3 at 2.50, 5 at 2.90) and one name for the product's two versions: {weekly:?}"
    );
    assert_eq!(
        scalar(
            &mut olap,
            &format!(
                "select concat_ws(' ', impressions, clicks, orders, conversion_rate)
                 from analytics.mart_product_conversion where product_id = {product}"
            ),
        )
        .await,
        "2 1 1 1.0000",
        "two impressions, a click and the order it led to"
    );
    assert_eq!(
        scalar(
            &mut olap,
            "select ((select sum(revenue) from analytics.mart_store_daily)
                     = (select sum(revenue) from fact_sales where status <> 'cancelled'))::text"
        )
        .await,
        "true",
        "store-day revenue adds up to the facts"
    );
    assert_eq!(
        scalar(
            &mut olap,
            "select (count(distinct data_as_of) = 1 and min(data_as_of) <= now())::text
             from analytics.mart_store_daily"
        )
        .await,
        "true",
        "every row of a mart says as of when its data is"
    );
    let fulfilment = scalar(
        &mut olap,
        &format!(
            "select string_agg(concat(current_status, ':', (seconds_to_complete >= 0 and ready_at >= preparing_at)::text),
                               ',' order by current_status)
             from analytics.mart_order_fulfilment
             where order_id in ('{}', '{}', '{}')",
            id(&o1),
            id(&o4),
            id(&o5)
        ),
    )
    .await;
    assert_eq!(
        fulfilment, "cancelled:,completed:true,deleted:",
        "fulfilment of o1, o4, o5"
    );

    let fresh = dbt.run(&["source", "freshness"]);
    assert!(fresh.ok, "dbt source freshness failed: {}", fresh.output);
    let sources = fresh.statuses();
    assert_eq!(sources.len(), 22, "sources: {sources:?}");
    assert!(sources.values().all(|s| s == "pass"), "{sources:?}");
    for r in fresh.artifact["results"].as_array().unwrap() {
        let age = r["max_loaded_at_time_ago_in_s"].as_f64().unwrap();
        assert!(
            age < 30.0,
            "{} is {age} s old while the replicator runs",
            r["unique_id"]
        );
    }

    // 2. Incremental: the next run adds the journal's new order events, and only those.
    let o7 = order(&api, Some(customer), staff, "cash", &[(other, 1)]);
    order(&api, None, staff, "card", &[(product, 1)]);
    call(
        &api,
        "PATCH",
        &format!("/orders/{}", id(&o7)),
        json!({"status": "preparing"}),
        200,
    );
    shop.converged().await;
    let new_events: u64 = scalar(
        &mut olap,
        "select count(*)::text from cdc_events
         where source_table = 'orders' and op in ('r', 'i', 'u', 'd')
           and lsn > (select max(lsn) from analytics.order_status_history)",
    )
    .await
    .parse()
    .unwrap();
    assert!(
        new_events >= 3,
        "the new orders are journaled ({new_events})"
    );
    let incremental = dbt.run(&["build", "--select", "order_status_history+"]);
    assert!(incremental.ok, "{}", incremental.output);
    let model = incremental.result("order_status_history");
    assert_eq!(
        model["adapter_response"]["rows_affected"].as_u64(),
        Some(new_events),
        "the incremental run inserts only the new events: {model}"
    );
    assert_eq!(
        scalar(
            &mut olap,
            "select ((select count(*) from analytics.order_status_history)
                     = (select count(*) from cdc_events
                        where source_table = 'orders' and op in ('r', 'i', 'u', 'd')))::text"
        )
        .await,
        "true"
    );

    // 3. Post-load validation. The replicator stops (freshness is checked below); a hidden
    // corruption of one fact row fails `dbt build`, naming the test, and no mart is built
    // from it.
    assert!(replicator.terminate(Duration::from_secs(30)).success());
    let item = scalar(
        &mut olap,
        "update fact_sales set revenue = revenue + 1
         where order_item_id = (select min(order_item_id) from fact_sales where status <> 'cancelled')
         returning order_item_id::text",
    )
    .await;
    let broken = dbt.run(&["build"]);
    assert!(
        !broken.ok,
        "dbt build passed over a corrupted fact: {}",
        broken.output
    );
    assert!(
        broken
            .output
            .contains("Failure in test assert_fact_sales_revenue_matches_replica"),
        "the revenue test names the failure: {}",
        broken.output
    );
    let failed = broken.failed();
    let caught_by = [
        "assert_fact_sales_revenue_matches_replica=fail",
        "assert_fact_sales_matches_replica=fail",
    ];
    assert!(
        failed
            .iter()
            .all(|f| caught_by.contains(&f.as_str()) || f.ends_with("=skipped")),
        "only the tests about that row fail (the rest pass or are skipped): {failed:?}"
    );
    assert!(failed.iter().any(|f| f == caught_by[0]), "{failed:?}");
    let rows = broken.result("assert_fact_sales_revenue_matches_replica")["failures"].as_u64();
    assert_eq!(rows, Some(1), "one order line differs");
    let statuses = broken.statuses();
    for mart in [
        "warehouse_as_of",
        "order_status_history",
        "mart_store_daily",
        "mart_customer_lifetime_value",
        "mart_customer_cohorts",
        "mart_product_weekly",
        "mart_order_fulfilment",
    ] {
        assert_eq!(
            statuses.get(mart).map(String::as_str),
            Some("skipped"),
            "the corrupted data must not reach {mart}"
        );
    }
    eprintln!(
        "dbt build caught the corrupted fact_sales row {item}: {:?}",
        failed
            .iter()
            .filter(|f| f.ends_with("=fail"))
            .collect::<Vec<_>>()
    );
    execute(
        &mut olap,
        &format!("update fact_sales set revenue = revenue - 1 where order_item_id = {item}"),
    )
    .await;

    // One corruption per kind of test, each caught by its test.
    for sql in [
        // SCD2: a closed version reaching into the next one.
        format!(
            "update dim_product set valid_to = valid_to + interval '1 hour'
             where product_id = {product} and not is_current"
        ),
        // SCD2: a product left without a current version.
        format!("update dim_product set is_current = false where product_id = {other} and is_current"),
        // fact_inventory off by 5 units in one group.
        "update fact_inventory set quantity_delta = quantity_delta + 5
         where (date_key, store_id, product_id, reason) =
               (select date_key, store_id, product_id, reason from fact_inventory order by 1, 2, 3, 4 limit 1)"
            .to_owned(),
        // A status no order can have.
        "update fact_sales set status = 'lost' where order_item_id = (select max(order_item_id) from fact_sales)"
            .to_owned(),
    ] {
        execute(&mut olap, &sql).await;
    }
    // A payment pointing at no store (foreign keys are not enforced for the replicator's
    // role either: session_replication_role = replica).
    let mut tx = sqlx::Connection::begin(&mut olap).await.unwrap();
    sqlx::query("set local session_replication_role = replica")
        .execute(&mut *tx)
        .await
        .unwrap();
    sqlx::query(
        "update fact_payments set store_key = -42 where payment_id = (select min(payment_id) from fact_payments)",
    )
    .execute(&mut *tx)
    .await
    .unwrap();
    tx.commit().await.unwrap();

    let tests = dbt.run(&["test", "--select", "source:star"]);
    assert!(
        !tests.ok,
        "dbt test passed over corruptions: {}",
        tests.output
    );
    let failed = tests.failed();
    for caught in [
        "assert_dim_product_versions_do_not_overlap=fail",
        "assert_dim_product_versions_are_contiguous=fail",
        "assert_dim_product_one_current_version=fail",
        "assert_fact_inventory_matches_movements=fail",
        "source_relationships_star_fact_payments_store_key",
        "source_accepted_values_star_fact_sales_status",
    ] {
        assert!(
            failed
                .iter()
                .any(|f| f.starts_with(caught) && f.ends_with("=fail")),
            "{caught} not caught: {failed:?}"
        );
    }
    eprintln!("dbt test caught: {failed:?}");
    assert!(
        !failed.iter().any(|f| f.ends_with("=error")),
        "a test errored instead of failing: {failed:?}\n{}",
        tests.output
    );

    // 4. Freshness: the replicator has been stopped; past the threshold, every source is stale.
    let age = checkpoint_age(&mut olap).await;
    if age < STALE_AFTER_SECS + 2.0 {
        tokio::time::sleep(Duration::from_secs_f64(STALE_AFTER_SECS + 2.0 - age)).await;
    }
    let stale = dbt.run(&["source", "freshness"]);
    assert!(
        !stale.ok,
        "freshness passed with the replicator stopped: {}",
        stale.output
    );
    assert!(stale.output.contains("ERROR STALE"), "{}", stale.output);
    let sources = stale.statuses();
    assert_eq!(sources.len(), 22);
    assert!(
        sources.values().all(|s| s == "error"),
        "every source stale: {sources:?}"
    );

    // The replicator back: fresh again within seconds.
    let replicator = shop.spawn(
        "replicator-2",
        &["replicate"],
        &[("REPLICATOR_LISTEN", &replicator_addr)],
    );
    wait_streaming(&replicator_addr, &replicator).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while checkpoint_age(&mut olap).await > 5.0 {
        assert!(Instant::now() < deadline, "the checkpoint never advanced");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let fresh = dbt.run(&["source", "freshness"]);
    assert!(fresh.ok, "{}", fresh.output);
    assert!(fresh.statuses().values().all(|s| s == "pass"));

    // No secret in anything dbt wrote.
    let mut leaks = Vec::new();
    for dir in [&dbt.target, &dbt.logs] {
        grep_files(dir, &shop.password(), &mut leaks);
    }
    assert!(leaks.is_empty(), "the password is in {leaks:?}");
    eprintln!("done in {:.1} s", started.elapsed().as_secs_f64());
}
