//! `deploy/roles.sql` on a real PostgreSQL cluster (both databases on one server, as the
//! script's single-run mode allows), applied with psql like users do:
//!
//! - it is idempotent (a second run, passwords from the environment this time) and refuses to
//!   run without the passwords;
//! - it never puts a password in the server log, even with `log_statement = all`;
//! - `brewlytics_api` writes orders but cannot create, drop or truncate tables, create
//!   temporary tables, read `pg_authid` or the migration history, or connect to OLAP;
//! - `brewlytics_replication` reads the published tables and nothing else, and writes nothing;
//! - `brewlytics_olap` writes coffee_olap but creates nothing in `public`, nor connects to OLTP;
//!   `brewlytics_reader` only reads;
//! - with exactly these roles the built `brewlytics replicate` does its first start (slot with
//!   exported snapshot, COPY, star schema) and streams orders into OLAP — one inserted as
//!   `brewlytics_api`, one placed through the built `brewlytics api` running as that role —
//!   with no privilege error in its log; `brewlytics status` works with the same roles; SIGTERM
//!   stops both services with exit status 0.

mod harness;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use brewlytics_support::cluster::{find_bindir, SUPERUSER};
use brewlytics_support::{ClusterOptions, DbUrl, EmbeddedCluster};
use harness::{free_addr, http, Proc, Scratch};
use sqlx::{Connection, PgConnection};

const OLTP: &str = "coffee_oltp";
const OLAP: &str = "coffee_olap";
const INSUFFICIENT_PRIVILEGE: &str = "42501";

/// The role passwords of one run: random, so nothing can pass by accident.
struct Secrets {
    api: String,
    replication: String,
    olap: String,
    reader: String,
}

impl Secrets {
    fn new() -> Self {
        Self {
            api: random_hex(24),
            replication: random_hex(24),
            olap: random_hex(24),
            reader: random_hex(24),
        }
    }

    fn all(&self) -> [&str; 4] {
        [&self.api, &self.replication, &self.olap, &self.reader]
    }

    /// `text` with every password replaced, for failure messages.
    fn redact(&self, text: &str) -> String {
        let mut out = text.to_owned();
        for s in self.all() {
            out = out.replace(s, "***");
        }
        out
    }
}

fn random_hex(len: usize) -> String {
    use std::io::Read;
    let mut raw = vec![0u8; len / 2];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut raw))
        .expect("reading /dev/urandom");
    raw.iter().map(|b| format!("{b:02x}")).collect()
}

fn roles_sql() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/roles.sql")
}

/// Runs deploy/roles.sql with the cluster's psql as the superuser over the Unix socket.
/// `vars`: psql `-v` assignments; `env`: environment variables. Returns (success, output).
fn psql_roles(
    cluster: &EmbeddedCluster,
    vars: &[(&str, &str)],
    env: &[(&str, &str)],
) -> (bool, String) {
    let bindir = find_bindir().expect("PostgreSQL binaries");
    let mut cmd = Command::new(bindir.join("psql"));
    cmd.arg("-X")
        .arg("-h")
        .arg(cluster.socket_dir())
        .args([
            "-p",
            &cluster.port().to_string(),
            "-U",
            SUPERUSER,
            "-d",
            "postgres",
        ])
        .arg("-f")
        .arg(roles_sql())
        .stdin(Stdio::null());
    for var in [
        "BREWLYTICS_API_PASSWORD",
        "BREWLYTICS_REPLICATION_PASSWORD",
        "BREWLYTICS_OLAP_PASSWORD",
        "BREWLYTICS_READER_PASSWORD",
        "PGPASSWORD",
        "PGDATABASE",
        "PGUSER",
    ] {
        cmd.env_remove(var);
    }
    for (k, v) in vars {
        cmd.arg("-v").arg(format!("{k}={v}"));
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("running psql");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

fn url(cluster: &EmbeddedCluster, role: &str, password: &str, db: &str) -> DbUrl {
    DbUrl::parse(&format!(
        "postgres://{role}:{password}@127.0.0.1:{}/{db}",
        cluster.port()
    ))
    .expect("a well-formed URL")
}

async fn connect(url: &DbUrl) -> Result<PgConnection, sqlx::Error> {
    PgConnection::connect_with(&url.connect_options()?).await
}

async fn must_connect(url: &DbUrl) -> PgConnection {
    connect(url)
        .await
        .unwrap_or_else(|e| panic!("connecting to {url}: {e}"))
}

fn sqlstate(e: &sqlx::Error) -> Option<String> {
    e.as_database_error()
        .and_then(|d| d.code())
        .map(|c| c.into_owned())
}

/// `sql` must fail with "insufficient privilege".
async fn denied(conn: &mut PgConnection, sql: &str) {
    match sqlx::query(sql).execute(&mut *conn).await {
        Err(e) if sqlstate(&e).as_deref() == Some(INSUFFICIENT_PRIVILEGE) => {}
        Err(e) => panic!("{sql}: expected permission denied (42501), got {e}"),
        Ok(_) => panic!("{sql}: expected permission denied, but it succeeded"),
    }
}

async fn allowed(conn: &mut PgConnection, sql: &str) {
    if let Err(e) = sqlx::query(sql).execute(&mut *conn).await {
        panic!("{sql}: expected success, got {e}");
    }
}

/// Connecting must be refused for lack of CONNECT on the database.
async fn cannot_connect(url: &DbUrl) {
    match connect(url).await {
        Err(e) if sqlstate(&e).as_deref() == Some(INSUFFICIENT_PRIVILEGE) => {}
        Err(e) => panic!("connecting to {url}: expected permission denied (42501), got {e}"),
        Ok(_) => panic!("connecting to {url}: expected permission denied, but it connected"),
    }
}

#[test]
fn roles_sql_grants_what_each_service_needs_and_no_more() {
    // Every statement is logged: the script must keep its passwords out of the log anyway.
    let mut opts = ClusterOptions::throwaway();
    opts.settings.push(("log_statement".into(), "all".into()));
    let cluster = EmbeddedCluster::start(opts).expect("starting a PostgreSQL cluster");
    cluster.ensure_database(OLTP).unwrap();
    cluster.ensure_database(OLAP).unwrap();
    let secrets = Secrets::new();
    let scratch = Scratch::new("roles");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(checks(&cluster, &secrets, &scratch));
    drop(runtime);

    let server_log = std::fs::read_to_string(cluster.data_dir().join("postgres.log"))
        .expect("reading the server log");
    for s in secrets.all() {
        assert!(
            !server_log.contains(s),
            "a role password reached the server log"
        );
    }
}

async fn checks(cluster: &EmbeddedCluster, secrets: &Secrets, scratch: &Scratch) {
    // The migrations, as the superuser (deploy/docker-compose.yml does the same).
    let mut admin_oltp = must_connect(&cluster.url(OLTP)).await;
    let mut admin_olap = must_connect(&cluster.url(OLAP)).await;
    {
        let pool = sqlx::PgPool::connect_with(cluster.url(OLTP).connect_options().unwrap())
            .await
            .unwrap();
        brewlytics_support::migrate::oltp(&pool).await.unwrap();
        pool.close().await;
        let pool = sqlx::PgPool::connect_with(cluster.url(OLAP).connect_options().unwrap())
            .await
            .unwrap();
        brewlytics_support::migrate::olap(&pool).await.unwrap();
        pool.close().await;
    }
    sqlx::raw_sql(
        "insert into stores (name, city) values ('Roles test store', 'Testville');
         insert into employees (name, store_id) select 'Barista', id from stores;
         insert into products (name, category, price) values ('Flat white', 'coffee', 3.80);
         insert into customers (name, email) values ('Ada', 'ada@example.com');",
    )
    .execute(&mut admin_oltp)
    .await
    .unwrap();

    // Without passwords the script stops before changing anything.
    let (ok, out) = psql_roles(cluster, &[], &[]);
    assert!(
        !ok,
        "roles.sql ran without passwords: {}",
        secrets.redact(&out)
    );
    assert!(
        out.contains("api_password"),
        "unexpected refusal: {}",
        secrets.redact(&out)
    );
    let roles: i64 =
        sqlx::query_scalar("select count(*) from pg_roles where rolname like 'brewlytics\\_%'")
            .fetch_one(&mut admin_oltp)
            .await
            .unwrap();
    assert_eq!(roles, 0, "a refused run created roles");

    // First run: passwords as psql variables.
    let (ok, out) = psql_roles(
        cluster,
        &[
            ("api_password", &secrets.api),
            ("replication_password", &secrets.replication),
            ("olap_password", &secrets.olap),
            ("reader_password", &secrets.reader),
        ],
        &[],
    );
    assert!(ok, "roles.sql failed: {}", secrets.redact(&out));
    // Second run (idempotent): passwords from the environment.
    let (ok, out) = psql_roles(
        cluster,
        &[],
        &[
            ("BREWLYTICS_API_PASSWORD", &secrets.api),
            ("BREWLYTICS_REPLICATION_PASSWORD", &secrets.replication),
            ("BREWLYTICS_OLAP_PASSWORD", &secrets.olap),
            ("BREWLYTICS_READER_PASSWORD", &secrets.reader),
        ],
    );
    assert!(
        ok,
        "roles.sql failed on its second run: {}",
        secrets.redact(&out)
    );
    for s in secrets.all() {
        assert!(!out.contains(s), "psql printed a password");
    }

    let api_oltp = url(cluster, "brewlytics_api", &secrets.api, OLTP);
    let repl_oltp = url(
        cluster,
        "brewlytics_replication",
        &secrets.replication,
        OLTP,
    );
    let olap_olap = url(cluster, "brewlytics_olap", &secrets.olap, OLAP);
    let reader_olap = url(cluster, "brewlytics_reader", &secrets.reader, OLAP);

    // --- the API role -------------------------------------------------------------------
    let mut api = must_connect(&api_oltp).await;
    let first_order = place_order(&mut api).await;
    allowed(
        &mut api,
        "update orders set status = 'preparing' where status = 'placed'",
    )
    .await;
    allowed(&mut api, "select id from products for share").await;
    allowed(
        &mut api,
        "insert into click_events (id, kind, session_id, product_id, occurred_at, received_at) \
         values (gen_random_uuid(), 'click', 's-roles', 1, now(), now())",
    )
    .await;
    denied(&mut api, "create table evil (x int)").await;
    denied(&mut api, "create temporary table evil (x int)").await;
    denied(&mut api, "drop table order_items").await;
    denied(&mut api, "alter table orders add column evil int").await;
    denied(&mut api, "truncate orders").await;
    denied(&mut api, "select * from pg_authid").await;
    denied(&mut api, "select * from _sqlx_migrations").await;
    denied(&mut api, "create schema evil").await;
    cannot_connect(&url(cluster, "brewlytics_api", &secrets.api, OLAP)).await;
    // API keys: read, and the last use written; never minted, revoked or deleted by a server.
    let key = {
        let pool = sqlx::PgPool::connect_with(cluster.url(OLTP).connect_options().unwrap())
            .await
            .unwrap();
        let scopes = brewlytics_support::auth::Scopes::all();
        let key = brewlytics_support::auth::admin::create(&pool, "roles test", &scopes)
            .await
            .unwrap();
        pool.close().await;
        key.text
    };
    allowed(
        &mut api,
        "select id, scopes, secret_hash, revoked_at from auth.api_keys",
    )
    .await;
    allowed(&mut api, "update auth.api_keys set last_used_at = now()").await;
    denied(
        &mut api,
        "insert into auth.api_keys (id, name, scopes, secret_hash) \
         values ('0123456789abcdef', 'evil', array['admin'], decode(repeat('00', 32), 'hex'))",
    )
    .await;
    denied(&mut api, "update auth.api_keys set revoked_at = null").await;
    denied(&mut api, "update auth.api_keys set scopes = array['admin']").await;
    denied(&mut api, "delete from auth.api_keys").await;

    // --- the replication role -----------------------------------------------------------
    let mut repl = must_connect(&repl_oltp).await;
    let published: Vec<String> = sqlx::query_scalar(
        "select tablename::text from pg_publication_tables where pubname = 'brewlytics' order by 1",
    )
    .fetch_all(&mut repl)
    .await
    .unwrap();
    assert_eq!(
        published,
        [
            "click_events",
            "customers",
            "employees",
            "inventory_movements",
            "order_items",
            "orders",
            "payments",
            "products",
            "stores",
        ],
        "published tables seen by the role"
    );
    for table in &published {
        allowed(&mut repl, &format!("select * from {table} limit 1")).await;
    }
    denied(&mut repl, "insert into stores (name) values ('evil')").await;
    denied(&mut repl, "update products set price = 0.01").await;
    denied(&mut repl, "delete from orders").await;
    denied(&mut repl, "truncate order_items").await;
    denied(&mut repl, "select * from _sqlx_migrations").await;
    denied(&mut repl, "create table evil (x int)").await;
    denied(&mut repl, "create temporary table evil (x int)").await;
    allowed(
        &mut repl,
        "select id, scopes, secret_hash, revoked_at from auth.api_keys",
    )
    .await;
    denied(
        &mut repl,
        "update auth.api_keys set scopes = array['admin']",
    )
    .await;
    denied(&mut repl, "delete from auth.api_keys").await;
    // What the replicator runs besides the COPY: slot and lag reads, heartbeats.
    allowed(&mut repl, "select * from pg_replication_slots").await;
    allowed(
        &mut repl,
        "select pg_current_wal_lsn(), pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')",
    )
    .await;
    allowed(
        &mut repl,
        "select pg_logical_emit_message(true, 'brewlytics-roles-test', 'x')",
    )
    .await;
    cannot_connect(&url(
        cluster,
        "brewlytics_replication",
        &secrets.replication,
        OLAP,
    ))
    .await;

    // --- the OLAP roles -----------------------------------------------------------------
    let mut olap = must_connect(&olap_olap).await;
    allowed(&mut olap, "select count(*) from cdc_events").await;
    allowed(&mut olap, "select count(*) from replica.orders").await;
    denied(&mut olap, "create table public.evil (x int)").await;
    // Batches are staged in temporary tables of the writer's session.
    allowed(&mut olap, "create temporary table stage_probe (x int)").await;
    denied(&mut olap, "select * from pg_authid").await;
    cannot_connect(&url(cluster, "brewlytics_olap", &secrets.olap, OLTP)).await;
    drop(olap);
    let mut reader = must_connect(&reader_olap).await;
    allowed(&mut reader, "select count(*) from fact_sales").await;
    allowed(&mut reader, "select count(*) from replica.orders").await;
    denied(
        &mut reader,
        "insert into replication_checkpoint (slot_name, lsn) values ('x', '0/0')",
    )
    .await;
    denied(&mut reader, "delete from cdc_events").await;
    cannot_connect(&url(cluster, "brewlytics_reader", &secrets.reader, OLTP)).await;
    drop(reader);

    // --- the replicator with exactly these roles ----------------------------------------
    let repl_addr = free_addr();
    harness::remember_key(&repl_addr, &key);
    let mut replicator = {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_brewlytics"));
        cmd.arg("replicate")
            .env("OLTP_DATABASE_URL", repl_oltp.expose())
            .env("OLAP_DATABASE_URL", olap_olap.expose())
            .env("REPLICATOR_LISTEN", &repl_addr)
            .env("BREWLYTICS_DATA_DIR", scratch.join("unused"))
            // debug: the slot monitor and heartbeats log their failures at that level
            .env("RUST_LOG", "info,brewlytics_replicator=debug");
        Proc::spawn(cmd, scratch.join("replicate.log"))
    };

    // First start: the copy (with the order placed above) commits the checkpoint in OLAP.
    poll_count(
        &mut replicator,
        secrets,
        &mut admin_olap,
        "select (select count(*) from replication_checkpoint)
              + (select count(*) from replica.orders where id = $1::uuid)",
        &first_order,
        2,
        "the initial copy",
    )
    .await;

    // Streaming: an order placed by the SQL of the API role reaches the replica and the star
    // schema.
    let order = place_order(&mut api).await;
    poll_count(
        &mut replicator,
        secrets,
        &mut admin_olap,
        "select count(*) from fact_sales where order_id = $1::uuid",
        &order,
        1,
        "the streamed order",
    )
    .await;

    // The real `brewlytics api` as brewlytics_api, configured like docker-compose.yml (an OLAP
    // URL without credentials, which it never uses): POST /orders, then the order in OLAP.
    let api_addr = free_addr();
    harness::remember_key(&api_addr, &key);
    let mut api_proc = {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_brewlytics"));
        cmd.arg("api")
            .env("OLTP_DATABASE_URL", api_oltp.expose())
            .env(
                "OLAP_DATABASE_URL",
                format!("postgres://127.0.0.1:{}/{OLAP}", cluster.port()),
            )
            .env("API_LISTEN", &api_addr)
            .env("BREWLYTICS_DATA_DIR", scratch.join("unused"));
        Proc::spawn(cmd, scratch.join("api.log"))
    };
    let start = Instant::now();
    while !matches!(http(&api_addr, "GET", "/health", None), Some((200, _))) {
        if let Some(status) = api_proc.exited() {
            panic!(
                "brewlytics api exited ({status}); log:\n{}",
                secrets.redact(&api_proc.log_text())
            );
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "brewlytics api did not answer /health within 60 s; log:\n{}",
            secrets.redact(&api_proc.log_text())
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let body = r#"{"customer_id": 1, "employee_id": 1, "store_id": 1, "payment_method": "cash",
                   "items": [{"product_id": 1, "quantity": 3}]}"#;
    let (status, answer) = http(&api_addr, "POST", "/orders", Some(body)).expect("the API answers");
    assert_eq!(status, 201, "POST /orders as brewlytics_api: {answer}");
    let answer: serde_json::Value = serde_json::from_str(&answer).expect("a JSON answer");
    let api_order = answer["id"].as_str().expect("an order id").to_owned();
    // The replicator, as brewlytics_replication, checks the same key.
    let (status, doc) = http(&repl_addr, "GET", "/status", None).expect("the replicator answers");
    assert_eq!(
        status, 200,
        "GET /status checked by brewlytics_replication: {doc}"
    );
    poll_count(
        &mut replicator,
        secrets,
        &mut admin_olap,
        "select count(*) from fact_sales where order_id = $1::uuid and quantity = 3",
        &api_order,
        1,
        "the order placed through the API",
    )
    .await;
    let api_exit = api_proc.stop(Duration::from_secs(30));
    assert!(
        api_exit.is_some_and(|s| s.success()),
        "brewlytics api did not stop cleanly ({api_exit:?}); log:\n{}",
        secrets.redact(&api_proc.log_text())
    );

    // `brewlytics status` with the same two roles.
    let status = Command::new(env!("CARGO_BIN_EXE_brewlytics"))
        .args(["status", "--json"])
        .env("OLTP_DATABASE_URL", repl_oltp.expose())
        .env("OLAP_DATABASE_URL", olap_olap.expose())
        .env("BREWLYTICS_DATA_DIR", scratch.join("unused"))
        .stdin(Stdio::null())
        .output()
        .expect("running brewlytics status");
    let status_text = secrets.redact(&format!(
        "{}{}",
        String::from_utf8_lossy(&status.stdout),
        String::from_utf8_lossy(&status.stderr)
    ));
    assert!(
        status.status.success(),
        "brewlytics status failed: {status_text}"
    );
    assert!(
        status_text.contains("\"checkpoint_lsn\""),
        "unexpected status: {status_text}"
    );

    let exit = replicator.stop(Duration::from_secs(30));
    let log_text = secrets.redact(&replicator.log_text());
    match exit {
        Some(s) if s.success() => {}
        Some(s) => panic!("brewlytics replicate exited with {s} after SIGTERM; log:\n{log_text}"),
        None => {
            panic!("brewlytics replicate did not stop within 30 s of SIGTERM; log:\n{log_text}")
        }
    }
    // Background work (heartbeats, slot monitor, leader lock) logs its failures and goes on:
    // none of them may have lacked a privilege.
    let lower = log_text.to_lowercase();
    assert!(
        !lower.contains("permission denied") && !lower.contains("42501"),
        "the replicator lacked a privilege; log:\n{log_text}"
    );
    let raw_log = std::fs::read_to_string(&replicator.log).unwrap_or_default();
    for s in secrets.all() {
        assert!(!raw_log.contains(s), "the replicator logged a password");
    }
}

/// Inserts an order with one line as the connected role; returns its id.
async fn place_order(conn: &mut PgConnection) -> String {
    let mut tx = conn.begin().await.unwrap();
    let id: String = sqlx::query_scalar(
        "insert into orders (id, customer_id, employee_id, store_id, payment_method, total)
         select gen_random_uuid(), (select min(id) from customers), (select min(id) from employees),
                (select min(id) from stores), 'card', 7.60
         returning id::text",
    )
    .fetch_one(&mut *tx)
    .await
    .unwrap_or_else(|e| panic!("inserting an order: {e}"));
    sqlx::query(
        "insert into order_items (order_id, product_id, quantity, unit_price)
         select $1::uuid, id, 2, price from products order by id limit 1",
    )
    .bind(&id)
    .execute(&mut *tx)
    .await
    .unwrap_or_else(|e| panic!("inserting an order line: {e}"));
    tx.commit().await.unwrap();
    id
}

/// Polls `sql` (one bigint, `$1` = `id`) every 200 ms until it returns `expected`, for at
/// most 90 s; panics with the replicator's log when time runs out or the replicator exits.
async fn poll_count(
    proc: &mut Proc,
    secrets: &Secrets,
    conn: &mut PgConnection,
    sql: &str,
    id: &str,
    expected: i64,
    what: &str,
) {
    let within = Duration::from_secs(90);
    let start = Instant::now();
    loop {
        let n: i64 = sqlx::query_scalar(sql)
            .bind(id)
            .fetch_one(&mut *conn)
            .await
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        if n == expected {
            return;
        }
        if let Some(status) = proc.exited() {
            panic!(
                "brewlytics replicate exited ({status}) before {what}; log:\n{}",
                secrets.redact(&proc.log_text())
            );
        }
        if start.elapsed() > within {
            panic!(
                "{what} did not reach OLAP within {within:?}; log:\n{}",
                secrets.redact(&proc.log_text())
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
