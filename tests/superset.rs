//! Apache Superset, for real: `brewlytics up --superset` (embedded PostgreSQL, the roles of
//! deploy/roles.sql, a Superset from `.venv-superset` provisioned with the coffee dashboard),
//! then, with orders posted through the API and replicated:
//!
//! - a second provisioning (`brewlytics dashboards superset`) creates nothing: same database,
//!   datasets, charts and dashboard; a changed definition updates a chart in place (same id,
//!   new title) and removes the chart it no longer has; the shipped one brings it back;
//! - every chart's query runs through Superset's chart-data API and returns the figures
//!   `brewlytics report` prints for its question;
//! - Superset reaches coffee_olap as `brewlytics_reader`, which cannot write: an INSERT through
//!   SQL Lab is refused by Superset, and — with Superset's own guard lifted — by PostgreSQL;
//! - in headless Chromium, logged in, the dashboard draws every chart with data and no error
//!   panel (a control with a broken dataset shows the panel the check looks for); the
//!   screenshot is kept as `target/tmp/superset-dashboard.png`;
//! - no password is printed; SIGTERM stops everything, Superset included, with status 0.
//!
//! Superset must be installed (`scripts/install-superset`, which `.ci/run` calls): without its
//! virtual environment the test fails and says so. It takes 2–3 minutes (about one more on a
//! first run, when Superset prepares its metadata).

mod harness;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use brewlytics_dashboards::connection::{OlapConnection, Secret, Target};
use brewlytics_dashboards::definition::{self, Definition, Kind};
use brewlytics_dashboards::http::{ApiError, JsonApi, Method};
use brewlytics_dashboards::superset::{self, KEY_FIELD};
use brewlytics_support::devtools::Page;
use brewlytics_support::roles::{self, RolePasswords};
use brewlytics_support::DbUrl;
use harness::{free_addr, scratch_dir, Proc};
use serde_json::{json, Value};

const BIN: &str = env!("CARGO_BIN_EXE_brewlytics");

/// The virtual environment, or a failure that says how to make it.
fn venv() -> PathBuf {
    let venv = std::env::var_os("SUPERSET_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv-superset"));
    assert!(
        venv.join("bin/superset").is_file() && venv.join("bin/gunicorn").is_file(),
        "Superset is not installed in {}: run scripts/install-superset (.ci/run does) or set \
         SUPERSET_VENV",
        venv.display()
    );
    venv
}

/// `brewlytics ARGS` on the embedded cluster of `data`: its standard output.
fn brewlytics(data: &Path, args: &[&str]) -> String {
    let out = Command::new(BIN)
        .args(args)
        .arg("--data-dir")
        .arg(data)
        .env_remove("OLTP_DATABASE_URL")
        .env_remove("OLAP_DATABASE_URL")
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "brewlytics {args:?}: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// A question's rows as `brewlytics report NAME --format json` prints them.
fn report(data: &Path, question: &str) -> Vec<Value> {
    let text = brewlytics(data, &["report", question, "--format", "json"]);
    serde_json::from_str::<Vec<Value>>(&text).unwrap()
}

/// Whether Superset's JSON value is the report's: numbers to the cent, days and instants as
/// Superset sends them (milliseconds since the epoch), text as it is.
fn same(report: &Value, superset: &Value) -> bool {
    let close = |a: f64| superset.as_f64().is_some_and(|b| (a - b).abs() < 0.005);
    match report {
        Value::Null => superset.is_null(),
        Value::Number(n) => close(n.as_f64().unwrap()),
        Value::String(s) => {
            if let Ok(n) = s.parse::<f64>() {
                return close(n);
            }
            let ms = superset.as_f64().map(|m| m as i64);
            if let Ok(d) = chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d") {
                let midnight = d.and_hms_opt(0, 0, 0).unwrap().and_utc().timestamp_millis();
                return ms == Some(midnight);
            }
            if let Ok(t) = chrono::DateTime::parse_from_rfc3339(s) {
                return ms.map(|m| m.div_euclid(1000)) == Some(t.timestamp());
            }
            superset.as_str() == Some(s)
        }
        other => other == superset,
    }
}

/// Each report row has its own row in Superset's answer, holding the same `columns`.
fn assert_rows_match(chart: &str, columns: &[String], report: &[Value], superset: &[Value]) {
    assert_eq!(report.len(), superset.len(), "{chart}: {superset:?}");
    let mut unmatched: Vec<&Value> = superset.iter().collect();
    for row in report {
        let found = unmatched.iter().position(|s| {
            columns.iter().all(|c| match c.as_str() {
                // Both ask now() for an order's age, a moment apart.
                "age_minutes" => s[c]
                    .as_f64()
                    .zip(row[c].as_f64())
                    .is_some_and(|(a, b)| (a - b).abs() <= 1.0),
                "age_band" => true,
                _ => same(&row[c], &s[c]),
            })
        });
        let i = found.unwrap_or_else(|| panic!("{chart}: no row like {row} in {superset:?}"));
        unmatched.remove(i);
    }
}

/// The rows of a chart's query, through the chart-data API (the query saved with the chart).
async fn chart_data(api: &JsonApi, id: i64) -> Vec<Value> {
    let answer = api
        .call(Method::Get, &format!("/api/v1/chart/{id}/data/"), None)
        .await
        .unwrap();
    answer["result"][0]["data"].as_array().unwrap().clone()
}

/// The dashboard's charts: (key, id, title).
async fn dashboard_charts(api: &JsonApi) -> Vec<(String, i64, String)> {
    let answer = api
        .call(Method::Get, "/api/v1/dashboard/brewlytics/charts", None)
        .await
        .unwrap();
    let mut out: Vec<(String, i64, String)> = answer["result"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            let key = c["form_data"][KEY_FIELD].as_str().unwrap_or_default();
            let key = key.strip_prefix("brewlytics:").unwrap_or(key).to_owned();
            (
                key,
                c["id"].as_i64().unwrap(),
                c["slice_name"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    out.sort();
    out
}

/// How many objects a list endpoint holds.
async fn count(api: &JsonApi, what: &str) -> i64 {
    let path = format!("/api/v1/{what}/");
    let answer = api
        .send(Method::Get, &path, &[("q", "(page_size:1)")], None)
        .await;
    answer.unwrap().body["count"].as_i64().unwrap()
}

/// An INSERT through SQL Lab: Superset's error.
async fn sql_lab_insert(api: &JsonApi, database: i64, client_id: &str) -> String {
    let body = json!({
        "database_id": database, "schema": "public", "runAsync": false, "tab": "test",
        "client_id": client_id,
        "sql": "insert into dim_store (store_key, store_id, name, city) values (9999, 9999, 'x', 'y')",
    });
    match api
        .call(Method::Post, "/api/v1/sqllab/execute/", Some(&body))
        .await
    {
        Ok(v) => panic!("SQL Lab ran the INSERT: {v}"),
        Err(ApiError::Http { message, .. }) => message,
        Err(e) => panic!("SQL Lab: {e}"),
    }
}

/// JavaScript: each chart of the page — its name, whether it is still loading, the text of
/// an error panel, and whether it drew data (a chart canvas, table rows or a figure).
const CHART_STATES: &str = r#"JSON.stringify([...document.querySelectorAll('[data-test="chart-grid-component"]')].map(c => ({
  name: c.getAttribute('data-test-chart-name'),
  loading: !!c.querySelector('.loading'),
  error: [...c.querySelectorAll('[role="alert"]')].map(a => a.innerText).join(' '),
  drawn: !!c.querySelector('canvas, tbody tr') ||
         (c.getAttribute('data-test-viz-type') === 'big_number_total' && /\d/.test(c.innerText)),
})))"#;

/// Loads the dashboard and waits (≤ 2 min) until `charts` charts are there and none loads.
fn charts_on_page(page: &mut Page, url: &str, charts: usize) -> Vec<Value> {
    page.navigate(url, Duration::from_secs(60)).unwrap();
    let ready = format!(
        "(() => {{ const s = JSON.parse({CHART_STATES}); \
           return s.length === {charts} && s.every(c => !c.loading); }})()"
    );
    if page.wait_for(&ready, Duration::from_secs(120)).is_err() {
        panic!(
            "the dashboard never finished: {}",
            page.evaluate(CHART_STATES).unwrap()
        );
    }
    // Let the charts' drawing animations end before reading (and photographing) them.
    std::thread::sleep(Duration::from_secs(2));
    let states = page.evaluate(CHART_STATES).unwrap();
    serde_json::from_str(states.as_str().unwrap()).unwrap()
}

/// What the phases of the test share: the data directory of `up`, Superset's address and
/// login, the read-only role's connection.
struct Setup {
    data: PathBuf,
    base: String,
    target: Target,
    olap: OlapConnection,
    reader: DbUrl,
    passwords: RolePasswords,
    def: Definition,
}

impl Setup {
    /// What `up` left in its data directory.
    fn read(data: &Path, base: &str) -> Self {
        let passwords = RolePasswords::load(&data.join("roles.env")).unwrap();
        let admin = std::fs::read_to_string(data.join("superset/admin.password")).unwrap();
        let port_file = std::fs::read_to_string(data.join("pgdata/brewlytics.port.conf")).unwrap();
        let port: u16 = port_file
            .trim()
            .trim_start_matches("port = ")
            .parse()
            .unwrap();
        let reader = roles::reader_url(port, &passwords, "coffee_olap");
        Self {
            data: data.to_path_buf(),
            base: base.to_owned(),
            target: Target {
                url: base.to_owned(),
                user: "admin".into(),
                password: Secret::new(admin.trim()),
            },
            olap: OlapConnection::from_url(&reader, None).unwrap(),
            reader,
            passwords,
            def: Definition::load().unwrap(),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn superset_shows_the_reports_figures_and_cannot_write() {
    let venv = venv();
    let started = Instant::now();
    let dir = scratch_dir("superset");
    let (listen, api_addr) = (free_addr(), free_addr());
    let mut up = start_up(&venv, &dir.join("data"), &listen, &api_addr).await;
    eprintln!("up --superset ready after {:?}", started.elapsed());
    let s = Setup::read(&dir.join("data"), &format!("http://{listen}"));
    post_orders(&s, &api_addr).await;
    let api = superset::login(&s.target, &s.olap).await.unwrap();

    let t = Instant::now();
    let (charts, printed) = a_second_provisioning_creates_nothing(&s, &api).await;
    eprintln!("second provisioning checked in {:?}", t.elapsed());
    let t = Instant::now();
    every_chart_has_the_reports_figures(&s, &api, &charts).await;
    eprintln!(
        "{} charts checked against the reports in {:?}",
        charts.len(),
        t.elapsed()
    );
    the_bi_role_cannot_write(&s, &api).await;
    a_changed_definition_updates_in_place(&s, &api, &charts).await;
    let t = Instant::now();
    the_dashboard_draws_every_chart(&s, &api).await;
    eprintln!("browser checks in {:?}", t.elapsed());

    // Nothing printed a password; SIGTERM stops it all.
    let status = up.terminate(Duration::from_secs(60));
    assert!(status.success(), "{status}: {}", up.log_text());
    let printed = format!("{}{printed}", up.log_text());
    let superuser = std::fs::read_to_string(s.data.join("superuser.password")).unwrap();
    let secrets = [
        s.target.password.expose(),
        superuser.trim(),
        s.passwords.reader(),
    ];
    assert!(
        secrets.iter().all(|p| !printed.contains(p)),
        "a password was printed"
    );
    assert!(
        std::net::TcpStream::connect(&listen).is_err(),
        "Superset still listens"
    );
    let state = std::fs::canonicalize(s.data.join("superset")).unwrap();
    let left: Vec<String> = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter(|p| std::fs::read_link(p.path().join("cwd")).is_ok_and(|cwd| cwd == state))
        .map(|p| p.file_name().to_string_lossy().into_owned())
        .collect();
    assert!(left.is_empty(), "Superset processes left: {left:?}");
    eprintln!("whole test in {:?}", started.elapsed());
}

/// `brewlytics up --superset` on a fresh data directory, once it says it is up and its API
/// answers.
async fn start_up(venv: &Path, data: &Path, listen: &str, api_addr: &str) -> Proc {
    let mut cmd = Command::new(BIN);
    cmd.args(["up", "--superset", "--seed-orders", "150", "--data-dir"])
        .arg(data)
        .args([
            "--api-listen",
            api_addr,
            "--replicator-listen",
            &free_addr(),
        ])
        .args([
            "--dashboard-listen",
            &free_addr(),
            "--superset-listen",
            listen,
        ])
        .env("SUPERSET_VENV", venv)
        .env("RUST_LOG", "info")
        .env_remove("OLTP_DATABASE_URL")
        .env_remove("OLAP_DATABASE_URL");
    let mut up = Proc::spawn(cmd, data.with_file_name("up.log"));
    // The first start prepares Superset's metadata: about a minute, more on a busy machine.
    let deadline = Instant::now() + Duration::from_secs(420);
    while !up.log_text().contains("Press Ctrl-C")
        || harness::http_get(api_addr, "/health").await.is_none()
    {
        assert!(up.is_running(), "up stopped: {}", up.log_text());
        assert!(
            Instant::now() < deadline,
            "up never got ready: {}",
            up.log_text()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let log = up.log_text();
    assert!(log.contains("/superset/dashboard/brewlytics/"), "{log}");
    up
}

/// Orders of today through the API — three left open, one completed, one cancelled — each
/// after an impression and a click of its product in its browsing session, until the reports
/// see them.
async fn post_orders(s: &Setup, api_addr: &str) {
    // The key `up` made in its data directory, as its banner tells a user to use it.
    let key = std::fs::read_to_string(s.data.join("api-key")).unwrap();
    let mut shop = JsonApi::new("API", &format!("http://{api_addr}"), vec![]).unwrap();
    shop.set_header("authorization", &format!("Bearer {}", key.trim()));
    for (i, end) in ["placed", "placed", "placed", "completed", "cancelled"]
        .iter()
        .enumerate()
    {
        let session = format!("superset-{i}");
        let now = chrono::Utc::now().to_rfc3339();
        let events = json!([
            {"kind": "impression", "session_id": session, "product_id": 1 + i, "occurred_at": now},
            {"kind": "click", "session_id": session, "product_id": 1 + i, "occurred_at": now}
        ]);
        shop.call(Method::Post, "/events", Some(&events))
            .await
            .unwrap();
        let order = json!({"customer_id": 1 + i, "employee_id": 1, "store_id": 1,
                           "payment_method": "card", "session_id": session,
                           "items": [{"product_id": 1 + i, "quantity": 2}]});
        let created = shop
            .call(Method::Post, "/orders", Some(&order))
            .await
            .unwrap();
        let path = format!("/orders/{}", created["id"].as_str().unwrap());
        let steps: &[&str] = match *end {
            "completed" => &["preparing", "ready", "completed"],
            "cancelled" => &["cancelled"],
            _ => &[],
        };
        for status in steps {
            let body = json!({"status": status});
            shop.call(Method::Patch, &path, Some(&body)).await.unwrap();
        }
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let headline = report(&s.data, "headline");
        if headline[0]["today_orders"] == 4
            && headline[0]["open_orders"].as_i64() >= Some(3)
            && !report(&s.data, "product-conversion").is_empty()
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "orders never replicated: {headline:?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// `brewlytics dashboards superset` again: the same objects, none added. Returns the charts
/// and what the command printed.
async fn a_second_provisioning_creates_nothing(
    s: &Setup,
    api: &JsonApi,
) -> (Vec<(String, i64, String)>, String) {
    let before = dashboard_charts(api).await;
    assert_eq!(before.len(), s.def.charts().count());
    let printed = brewlytics(&s.data, &["dashboards", "superset", "--url", &s.base]);
    assert!(
        printed.contains("datasets: 0 created") && printed.contains("charts: 0 created"),
        "{printed}"
    );
    assert_eq!(dashboard_charts(api).await, before);
    // A dataset per star table and per question, a chart per place on the dashboard.
    for (what, n) in [
        ("database", 1),
        ("dashboard", 1),
        ("chart", s.def.charts().count() as i64),
        (
            "dataset",
            (superset::STAR_TABLES.len() + s.def.questions().len()) as i64,
        ),
    ] {
        assert_eq!(count(api, what).await, n, "{what}");
    }
    (before, printed)
}

/// Each chart's query, run by Superset, returns its question's figures as `report` prints
/// them: a table all its rows and columns, a bar, line or pie chart its x and y, a figure its
/// value.
async fn every_chart_has_the_reports_figures(
    s: &Setup,
    api: &JsonApi,
    charts: &[(String, i64, String)],
) {
    for (key, id, title) in charts {
        let chart = s
            .def
            .charts()
            .find(|p| &p.chart.key() == key)
            .unwrap()
            .chart;
        let rows = report(&s.data, &chart.question);
        assert!(!rows.is_empty(), "{title}: the report has no rows");
        let columns: Vec<String> = match chart.kind {
            Kind::Table => rows[0].as_object().unwrap().keys().cloned().collect(),
            Kind::Number => chart.y.clone(),
            _ => chart.x.iter().chain(&chart.y).cloned().collect(),
        };
        let expected = if chart.kind == Kind::Number {
            &rows[..1]
        } else {
            &rows[..]
        };
        assert_rows_match(title, &columns, expected, &chart_data(api, *id).await);
    }
}

/// Superset connects as `brewlytics_reader`: an INSERT through SQL Lab is refused by Superset,
/// and with its guard lifted, by PostgreSQL; the role itself cannot delete either.
async fn the_bi_role_cannot_write(s: &Setup, api: &JsonApi) {
    let list = api
        .call(Method::Get, "/api/v1/database/?q=(page_size:1)", None)
        .await;
    let database = list.unwrap()["result"][0]["id"].as_i64().unwrap();
    let connection = format!("/api/v1/database/{database}/connection");
    let db = api.call(Method::Get, &connection, None).await.unwrap();
    assert_eq!(db["result"]["parameters"]["username"], "brewlytics_reader");
    let refused = sql_lab_insert(api, database, "dml1").await;
    assert!(refused.contains("does not allow for DDL/DML"), "{refused}");
    // Lifted here; the next provisioning puts it back.
    let path = format!("/api/v1/database/{database}");
    let lift = json!({"allow_dml": true});
    api.call(Method::Put, &path, Some(&lift)).await.unwrap();
    let refused = sql_lab_insert(api, database, "dml2").await;
    assert!(
        refused.contains("permission denied for table dim_store"),
        "{refused}"
    );
    let mut conn = harness::connect(&s.reader).await;
    let err = sqlx::query("delete from fact_sales")
        .execute(&mut conn)
        .await
        .unwrap_err();
    let code = err
        .as_database_error()
        .and_then(|e| e.code())
        .map(|c| c.into_owned());
    assert_eq!(code.as_deref(), Some("42501"), "{err}");
}

/// A definition with a chart renamed and the inventory row gone: the chart keeps its id, the
/// gone ones are deleted; the shipped definition brings them back, and Superset's guard
/// against DML.
async fn a_changed_definition_updates_in_place(
    s: &Setup,
    api: &JsonApi,
    before: &[(String, i64, String)],
) {
    let mut changed: Value = serde_json::from_str(definition::DEFINITION).unwrap();
    changed["rows"][1][0]["title"] = json!("Revenue per day");
    let rows = changed["rows"].as_array_mut().unwrap();
    let inventory = rows
        .iter()
        .position(|r| {
            r.as_array()
                .unwrap()
                .iter()
                .any(|c| c["question"] == "inventory-movement")
        })
        .expect("the definition has an inventory row");
    let gone = rows.remove(inventory).as_array().unwrap().len();
    let changed = Definition::parse(&changed.to_string()).unwrap();
    let done = superset::provision(&s.target, &s.olap, &changed)
        .await
        .unwrap();
    assert_eq!(
        (done.charts.created, done.charts_removed),
        (0, gone),
        "{done}"
    );
    let after = dashboard_charts(api).await;
    let daily = |charts: &[(String, i64, String)]| {
        charts
            .iter()
            .find(|c| c.0 == "daily-revenue")
            .cloned()
            .unwrap()
    };
    assert_eq!(daily(&after).1, daily(before).1);
    assert_eq!(daily(&after).2, "Revenue per day");
    assert!(!after.iter().any(|c| c.0 == "inventory-movement"));

    let done = superset::provision(&s.target, &s.olap, &s.def)
        .await
        .unwrap();
    assert_eq!(
        (done.charts.created, done.charts.updated),
        (gone, before.len() - gone),
        "{done}"
    );
    assert_eq!(dashboard_charts(api).await.len(), before.len());
    let path = format!("/api/v1/database/{}", done.database_id);
    let restored = api.call(Method::Get, &path, None).await.unwrap();
    assert_eq!(restored["result"]["allow_dml"], false);
}

/// Logged in, in headless Chromium: every chart drawn with data, no error panel; the control —
/// a dataset broken behind Superset's back — shows the panel the check looks for.
async fn the_dashboard_draws_every_chart(s: &Setup, api: &JsonApi) {
    let shot = Path::new(env!("CARGO_TARGET_TMPDIR")).join("superset-dashboard.png");
    let dataset = dataset_id(api, "daily-revenue").await;
    let breaker = dataset_breaker(&s.target, &s.olap, dataset);
    let (base, password, file) = (s.base.clone(), s.target.password.clone(), shot.clone());
    let n = s.def.charts().count();
    let (states, control) = tokio::task::spawn_blocking(move || {
        let mut page = Page::open(1600, 3600).unwrap();
        page.navigate(&format!("{base}/login/"), Duration::from_secs(60))
            .unwrap();
        let login = format!(
            "(async () => {{ const t = document.getElementById('csrf_token').value;
               const r = await fetch('/login/', {{method: 'POST', body: new URLSearchParams(
                 {{csrf_token: t, username: 'admin', password: {}}})}});
               return r.url; }})()",
            json!(password.expose())
        );
        let landed = page.evaluate(&login).unwrap();
        assert!(
            !landed.as_str().unwrap_or("/login/").contains("/login/"),
            "{landed}"
        );
        let dashboard = format!("{base}/superset/dashboard/brewlytics/");
        let states = charts_on_page(&mut page, &dashboard, n);
        page.screenshot(&file).unwrap();
        breaker();
        let control = charts_on_page(&mut page, &dashboard, n);
        (states, control)
    })
    .await
    .unwrap();
    for state in &states {
        assert_eq!(state["error"], "", "{state}");
        assert_eq!(state["drawn"], true, "a chart without data: {state}");
    }
    let errors: Vec<&Value> = control.iter().filter(|c| c["error"] != "").collect();
    assert_eq!(errors.len(), 1, "{control:?}");
    assert_eq!(errors[0]["name"], "Daily revenue");
    assert!(
        errors[0]["error"]
            .as_str()
            .unwrap()
            .contains("no_such_table"),
        "{}",
        errors[0]
    );
    let size = std::fs::metadata(&shot).unwrap().len();
    assert!(size > 100_000, "screenshot of {size} bytes");
    eprintln!("screenshot: {}", shot.display());
    // Repaired by provisioning again.
    superset::provision(&s.target, &s.olap, &s.def)
        .await
        .unwrap();
}

/// The id of a question's dataset.
async fn dataset_id(api: &JsonApi, name: &str) -> i64 {
    let q = format!("(filters:!((col:table_name,opr:eq,value:'{name}')))");
    let answer = api
        .send(Method::Get, "/api/v1/dataset/", &[("q", &q)], None)
        .await;
    answer.unwrap().body["result"][0]["id"].as_i64().unwrap()
}

/// A closure (for the browser's thread) that points a dataset at a table that does not exist,
/// as someone editing it in Superset could.
fn dataset_breaker(target: &Target, olap: &OlapConnection, dataset: i64) -> impl FnOnce() + Send {
    let (target, olap) = (target.clone(), olap.clone());
    move || {
        tokio::runtime::Runtime::new().unwrap().block_on(async {
            let api = superset::login(&target, &olap).await.unwrap();
            let body = json!({"sql": "select day, revenue, orders from no_such_table"});
            let path = format!("/api/v1/dataset/{dataset}");
            api.call(Method::Put, &path, Some(&body)).await.unwrap();
        })
    }
}
