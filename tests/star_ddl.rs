//! Schema changes never stop the star, against the built binary on two PostgreSQL servers,
//! orders coming through the API and written straight to the source: every column that feeds
//! the star renamed, retyped and dropped, one at a time and several in one transaction, each
//! followed by writes; source tables renamed, dropped, their key dropped. Each drill ends with
//! OLAP equal to OLTP, the star equal to its rebuild from the replica (`star_refresh_all`) and
//! to a `replay` of the journal across the DDL, `status` naming what degraded and the metric
//! saying so, the replicator still running.

mod harness;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use harness::{free_addr, prom::http, scratch_dir, wait_streaming, Clusters, Proc};
use sqlx::PgConnection;

/// The columns of the coffee tables, as the star reads them (key first) — and the others a
/// write needs.
const TABLES: &[(&str, &[&str])] = &[
    ("stores", &["id", "name", "city", "opened_on"]),
    (
        "employees",
        &["id", "name", "role", "store_id", "active", "hired_on"],
    ),
    ("customers", &["id", "name", "email", "created_at"]),
    (
        "products",
        &[
            "id",
            "name",
            "category",
            "price",
            "is_available",
            "description",
            "updated_at",
        ],
    ),
    (
        "orders",
        &[
            "id",
            "customer_id",
            "employee_id",
            "store_id",
            "status",
            "payment_method",
            "ordered_at",
            "updated_at",
            "total",
        ],
    ),
    (
        "order_items",
        &["id", "order_id", "product_id", "quantity", "unit_price"],
    ),
    (
        "payments",
        &["id", "order_id", "amount", "method", "paid_at"],
    ),
    (
        "inventory_movements",
        &[
            "id",
            "store_id",
            "product_id",
            "order_id",
            "delta",
            "reason",
            "occurred_at",
        ],
    ),
];

/// Every column that feeds the star, retyped: (table, column, new type). Int keys and ids
/// narrow (held), text widens, numbers widen or go through text, times lose or gain their
/// zone, booleans, uuids and one amount become text (read value by value).
const RETYPES: &[(&str, &str, &str)] = &[
    ("stores", "id", "integer"),
    ("stores", "name", "varchar(300)"),
    ("stores", "city", "varchar(100)"),
    ("stores", "opened_on", "timestamp"),
    ("employees", "id", "integer"),
    ("employees", "name", "varchar(300)"),
    ("employees", "role", "varchar(50)"),
    ("employees", "store_id", "integer"),
    ("employees", "active", "text"),
    ("employees", "hired_on", "text"),
    ("customers", "id", "integer"),
    ("customers", "name", "varchar(300)"),
    ("customers", "email", "varchar(320)"),
    ("customers", "created_at", "timestamp"),
    ("products", "id", "integer"),
    ("products", "name", "varchar(300)"),
    ("products", "category", "varchar(100)"),
    ("products", "price", "numeric(12,3)"),
    ("products", "is_available", "text"),
    ("orders", "id", "text"),
    ("orders", "customer_id", "integer"),
    ("orders", "employee_id", "integer"),
    ("orders", "store_id", "integer"),
    ("orders", "status", "varchar(20)"),
    ("orders", "payment_method", "varchar(20)"),
    ("orders", "ordered_at", "timestamp"),
    ("order_items", "id", "integer"),
    ("order_items", "order_id", "text"),
    ("order_items", "product_id", "integer"),
    ("order_items", "quantity", "numeric(10,2)"),
    ("order_items", "unit_price", "double precision"),
    ("payments", "id", "integer"),
    ("payments", "order_id", "text"),
    ("payments", "amount", "text"),
    ("payments", "method", "varchar(20)"),
    ("payments", "paid_at", "date"),
    ("inventory_movements", "id", "integer"),
    ("inventory_movements", "store_id", "integer"),
    ("inventory_movements", "product_id", "integer"),
    ("inventory_movements", "delta", "numeric(8,1)"),
    ("inventory_movements", "reason", "varchar(20)"),
    ("inventory_movements", "occurred_at", "timestamp"),
];

async fn exec(c: &mut PgConnection, sql: &str) {
    sqlx::raw_sql(sql)
        .execute(c)
        .await
        .unwrap_or_else(|e| panic!("{e}: {sql}"));
}

/// The source's tables and columns by identity (relation oid, attnum), whatever their names
/// are now: writes name columns as they were first called.
struct Source {
    oids: HashMap<&'static str, i64>,
    attnums: HashMap<(&'static str, &'static str), i16>,
    customers: Vec<i64>,
    staff: Vec<(i64, i64)>,
    products: Vec<(i64, String)>,
    orders: Vec<String>,
    n: u64,
}

impl Source {
    async fn capture(c: &mut PgConnection) -> Self {
        let mut oids = HashMap::new();
        let mut attnums = HashMap::new();
        for (t, cols) in TABLES {
            let oid: i64 = sqlx::query_scalar("select $1::regclass::oid::bigint")
                .bind(*t)
                .fetch_one(&mut *c)
                .await
                .unwrap();
            oids.insert(*t, oid);
            for col in *cols {
                let n: i16 = sqlx::query_scalar(
                    "select attnum from pg_attribute where attrelid = $1::oid and attname = $2",
                )
                .bind(oid)
                .bind(*col)
                .fetch_one(&mut *c)
                .await
                .unwrap();
                attnums.insert((*t, *col), n);
            }
        }
        let customers = sqlx::query_scalar("select id from customers order by id limit 50")
            .fetch_all(&mut *c)
            .await
            .unwrap();
        let staff = sqlx::query_as(
            "select id, store_id from employees where active and store_id is not null order by id",
        )
        .fetch_all(&mut *c)
        .await
        .unwrap();
        let products = sqlx::query_as("select id, price::text from products order by id limit 12")
            .fetch_all(&mut *c)
            .await
            .unwrap();
        Self {
            oids,
            attnums,
            customers,
            staff,
            products,
            orders: Vec::new(),
            n: 0,
        }
    }

    /// The table's name now (None: dropped).
    async fn table(&self, c: &mut PgConnection, t: &str) -> Option<String> {
        sqlx::query_scalar("select format('%I.%I', relnamespace::regnamespace, relname) from pg_class where oid = $1::oid")
            .bind(self.oids[t])
            .fetch_optional(c)
            .await
            .unwrap()
    }

    /// A column's name and type now (None: dropped).
    async fn column(&self, c: &mut PgConnection, t: &str, col: &str) -> Option<(String, String)> {
        sqlx::query_as(
            "select attname::text, format_type(atttypid, atttypmod) from pg_attribute
             where attrelid = $1::oid and attnum = $2 and not attisdropped",
        )
        .bind(self.oids[t])
        .bind(self.attnums[&(t, col)])
        .fetch_optional(c)
        .await
        .unwrap()
    }

    /// `(name now, value as text cast to its type now)` of each column still there.
    async fn present(
        &self,
        c: &mut PgConnection,
        t: &str,
        values: &[(&str, String)],
    ) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for (col, v) in values {
            if let Some((name, ty)) = self.column(c, t, col).await {
                let v = v.replace('\'', "''");
                out.push((format!("\"{name}\""), format!("'{v}'::text::{ty}")));
            }
        }
        out
    }

    /// 1.5 when `fraction` and the column is numeric now, else 2.
    async fn number(&self, c: &mut PgConnection, t: &str, col: &str, fraction: bool) -> String {
        let numeric = self
            .column(c, t, col)
            .await
            .is_some_and(|(_, ty)| ty.starts_with("numeric"));
        if fraction && numeric { "1.5" } else { "2" }.to_owned()
    }

    /// Inserts a row of `t` with the values of the columns still there; its key as text.
    async fn insert(
        &self,
        c: &mut PgConnection,
        t: &str,
        values: &[(&str, String)],
    ) -> Option<String> {
        let table = self.table(c, t).await?;
        let cols = self.present(c, t, values).await;
        let key = self.column(c, t, "id").await;
        let returning = key
            .as_ref()
            .map(|(k, _)| format!(" returning \"{k}\"::text"))
            .unwrap_or_default();
        let sql = if cols.is_empty() {
            format!("insert into {table} default values{returning}")
        } else {
            format!(
                "insert into {table} ({}) values ({}){returning}",
                cols.iter()
                    .map(|c| c.0.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
                cols.iter()
                    .map(|c| c.1.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        };
        if key.is_some() {
            sqlx::query_scalar(&sql)
                .fetch_one(&mut *c)
                .await
                .unwrap_or_else(|e| panic!("{e}: {sql}"))
        } else {
            exec(c, &sql).await;
            None
        }
    }

    /// Updates the row of `t` whose key is `key` (nothing when the key or table is gone).
    async fn update(&self, c: &mut PgConnection, t: &str, key: &str, values: &[(&str, String)]) {
        let (Some(table), Some((k, _))) = (self.table(c, t).await, self.column(c, t, "id").await)
        else {
            return;
        };
        let cols = self.present(c, t, values).await;
        if cols.is_empty() {
            return;
        }
        let sets: Vec<String> = cols.iter().map(|(n, v)| format!("{n} = {v}")).collect();
        let sql = format!(
            "update {table} set {} where \"{k}\"::text = '{key}'",
            sets.join(", ")
        );
        exec(c, &sql).await;
    }

    /// One round of writes: a customer added and one changed, an order with two lines, a
    /// payment and stock movements, an earlier order moved on, a price changed, and now and
    /// then a store with an employee.
    async fn round(&mut self, c: &mut PgConnection) {
        self.n += 1;
        let n = self.n;
        let s = |v: &dyn ToString| v.to_string();
        let customer = self
            .insert(
                c,
                "customers",
                &[
                    ("name", format!("Guest {n}")),
                    ("email", format!("guest{n}@example.com")),
                ],
            )
            .await;
        let old = self.customers[(n as usize * 7) % self.customers.len()];
        self.update(
            c,
            "customers",
            &s(&old),
            &[("name", format!("Regular {n}"))],
        )
        .await;
        let (employee, store) = self.staff[n as usize % self.staff.len()];
        let customer_id = customer
            .filter(|_| !n.is_multiple_of(3))
            .unwrap_or_else(|| s(&self.customers[n as usize % self.customers.len()]));
        let order: String = sqlx::query_scalar("select gen_random_uuid()::text")
            .fetch_one(&mut *c)
            .await
            .unwrap();
        self.insert(
            c,
            "orders",
            &[
                ("id", order.clone()),
                ("customer_id", customer_id),
                ("employee_id", s(&employee)),
                ("store_id", s(&store)),
                ("status", "placed".into()),
                ("payment_method", "card".into()),
                ("total", "0".into()),
            ],
        )
        .await;
        let mut amount = 0.0;
        for k in 0..2u64 {
            let (product, price) = &self.products[((n * 2 + k) as usize) % self.products.len()];
            // A fraction where the column takes one.
            let fraction = k == 1;
            let quantity = self.number(c, "order_items", "quantity", fraction).await;
            let delta = self
                .number(c, "inventory_movements", "delta", fraction)
                .await;
            amount += price.parse::<f64>().unwrap_or(1.0) * quantity.parse::<f64>().unwrap();
            self.insert(
                c,
                "order_items",
                &[
                    ("order_id", order.clone()),
                    ("product_id", s(product)),
                    ("quantity", quantity.clone()),
                    ("unit_price", price.clone()),
                ],
            )
            .await;
            self.insert(
                c,
                "inventory_movements",
                &[
                    ("store_id", s(&store)),
                    ("product_id", s(product)),
                    ("order_id", order.clone()),
                    ("delta", format!("-{delta}")),
                    ("reason", "sale".into()),
                ],
            )
            .await;
        }
        self.insert(
            c,
            "payments",
            &[
                ("order_id", order.clone()),
                ("amount", format!("{amount:.2}")),
                ("method", "card".into()),
            ],
        )
        .await;
        if let Some(earlier) = self.orders.last().cloned() {
            self.update(c, "orders", &earlier, &[("status", "ready".into())])
                .await;
        }
        self.orders.push(order);
        let (product, _) = &self.products[n as usize % self.products.len()];
        self.update(
            c,
            "products",
            &s(product),
            &[("price", format!("{}.{:02}", 3 + n % 4, n % 100))],
        )
        .await;
        if n.is_multiple_of(5) {
            let store = self
                .insert(
                    c,
                    "stores",
                    &[("name", format!("Kiosk {n}")), ("city", "Lyon".into())],
                )
                .await;
            if let Some(store) = store {
                self.insert(
                    c,
                    "employees",
                    &[
                        ("name", format!("Barista {n}")),
                        ("store_id", store.clone()),
                        ("active", "true".into()),
                    ],
                )
                .await;
            }
        }
    }
}

/// A fact line's members, measures, status and whether its time is finite.
type LineFacts = (
    i64,
    i64,
    i64,
    i64,
    Option<String>,
    Option<String>,
    String,
    bool,
);

/// Each star table's rows by natural keys (surrogate keys differ between a stream and a
/// rebuild), as text: equal when the star is the same.
type Star = Vec<(&'static str, Vec<String>)>;

async fn star_rows(olap: &mut PgConnection) -> Star {
    let mut out = Vec::new();
    for (name, rows) in [
        (
            "dim_store",
            "select concat_ws('|', store_id, name, city, opened_on, is_inferred, is_deleted) from dim_store",
        ),
        (
            "dim_employee",
            "select concat_ws('|', employee_id, name, role, store_id, active, hired_on, is_inferred, is_deleted) from dim_employee",
        ),
        (
            "dim_customer",
            "select concat_ws('|', customer_key <= 0, customer_id, name, email, created_at, is_inferred, is_deleted) from dim_customer",
        ),
        (
            "dim_product",
            "select concat_ws('|', product_id, name, category, price, is_available, version, valid_from, valid_to, is_current, is_inferred, is_deleted) from dim_product",
        ),
        (
            "fact_sales",
            "select concat_ws('|', f.order_item_id, f.order_id, f.date_key, c.customer_id, c.customer_key <= 0, p.product_id, p.valid_from, e.employee_id, s.store_id, f.quantity, f.unit_price, f.revenue, f.status, f.payment_method, f.ordered_at, f.hour_of_day)
             from fact_sales f join dim_customer c using (customer_key) join dim_product p using (product_key)
             join dim_employee e using (employee_key) join dim_store s using (store_key)",
        ),
        (
            "fact_payments",
            "select concat_ws('|', f.payment_id, f.order_id, f.date_key, c.customer_id, e.employee_id, s.store_id, f.amount, f.method, f.order_status, f.paid_at)
             from fact_payments f join dim_customer c using (customer_key)
             join dim_employee e using (employee_key) join dim_store s using (store_key)",
        ),
        (
            "fact_inventory",
            "select concat_ws('|', i.date_key, i.store_id, i.product_id, i.reason, s.store_id, p.product_id, p.valid_from, i.quantity_delta, i.movements, i.last_movement_at)
             from fact_inventory i join dim_store s using (store_key) join dim_product p using (product_key)",
        ),
    ] {
        let sql = format!("select x from ({rows}) t(x) order by x");
        let v: Vec<String> = sqlx::query_scalar(&sql)
            .fetch_all(&mut *olap)
            .await
            .unwrap_or_else(|e| panic!("{e}: {sql}"));
        out.push((name, v));
    }
    out
}

/// Panics with the rows that differ, table by table.
fn assert_same_star(a: &Star, b: &Star, what: &str) {
    let mut diff = String::new();
    for ((name, x), (_, y)) in a.iter().zip(b) {
        if x == y {
            continue;
        }
        let only_a: Vec<&String> = x.iter().filter(|r| !y.contains(r)).take(5).collect();
        let only_b: Vec<&String> = y.iter().filter(|r| !x.contains(r)).take(5).collect();
        diff.push_str(&format!(
            "\n{name}: {} vs {} rows\n  only in the star: {only_a:#?}\n  only in the {what}: {only_b:#?}",
            x.len(),
            y.len()
        ));
    }
    assert!(diff.is_empty(), "the star differs from {what}:{diff}");
}

/// The pipeline of a drill: two servers, the replicator, the API and its orders.
struct Drill {
    c: Clusters,
    listen: String,
    replicator: Proc,
    api: Proc,
    api_addr: String,
    api_orders: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    /// Orders through the API wait while OLAP is compared with OLTP.
    paused: Arc<AtomicBool>,
    load: Option<std::thread::JoinHandle<()>>,
}

impl Drill {
    async fn start(name: &str) -> Self {
        let c = Clusters::start();
        c.prepare(40);
        let listen = free_addr();
        let replicator = c.replicator(name, &listen, &[]);
        wait_streaming(&listen, &replicator).await;
        let api_addr = free_addr();
        let api = {
            let mut cmd = c.command(&["api"]);
            cmd.env("API_LISTEN", &api_addr).env("RUST_LOG", "warn");
            Proc::spawn(cmd, scratch_dir("logs").join(format!("{name}-api.log")))
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while !matches!(http(&api_addr, "GET", "/health", None), Some((200, _))) {
            assert!(Instant::now() < deadline, "the API never answered");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let mut d = Self {
            c,
            listen,
            replicator,
            api,
            api_addr,
            api_orders: Arc::new(AtomicU64::new(0)),
            stop: Arc::new(AtomicBool::new(false)),
            paused: Arc::new(AtomicBool::new(false)),
            load: None,
        };
        d.orders_through_the_api().await;
        d
    }

    /// Orders posted to the API until the drill's checks (a 503 while a column it needs is
    /// gone is expected: the API says so).
    async fn orders_through_the_api(&mut self) {
        let mut oltp = self.c.oltp_conn().await;
        let (customer, employee, store): (i64, i64, i64) = sqlx::query_as(
            "select (select min(id) from customers), e.id, e.store_id from employees e
             where e.active and e.store_id is not null order by e.id limit 1",
        )
        .fetch_one(&mut oltp)
        .await
        .unwrap();
        let products: Vec<i64> =
            sqlx::query_scalar("select id from products where is_available order by id limit 2")
                .fetch_all(&mut oltp)
                .await
                .unwrap();
        let body = format!(
            r#"{{"customer_id": {customer}, "employee_id": {employee}, "store_id": {store},
                "payment_method": "card", "items": [{{"product_id": {}, "quantity": 2}},
                {{"product_id": {}, "quantity": 1}}]}}"#,
            products[0], products[1]
        );
        let (addr, stop, paused, orders) = (
            self.api_addr.clone(),
            self.stop.clone(),
            self.paused.clone(),
            self.api_orders.clone(),
        );
        self.load = Some(std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                if paused.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(50));
                    continue;
                }
                if let Some((201, _)) = http(&addr, "POST", "/orders", Some(&body)) {
                    orders.fetch_add(1, Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_millis(150));
            }
        }));
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.api_orders.load(Ordering::Relaxed) < 3 {
            assert!(Instant::now() < deadline, "no order went through the API");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn stop_orders(&mut self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.load.take() {
            h.join().unwrap();
        }
        self.api_orders.load(Ordering::Relaxed)
    }

    /// OLAP equals OLTP, the replicator still runs and never failed on the star.
    async fn converged(&mut self, label: &str) {
        self.paused.store(true, Ordering::Relaxed);
        // (an order on its way is committed by then)
        tokio::time::sleep(Duration::from_millis(500)).await;
        let r = self.c.converged(Duration::from_secs(120)).await;
        self.paused.store(false, Ordering::Relaxed);
        assert!(r.all_equal(), "{label}: OLAP differs from OLTP: {r:#?}");
        assert!(
            self.replicator.is_running(),
            "{label}: the replicator stopped: {}",
            self.replicator.log_text()
        );
        let log = self.replicator.log_text();
        assert!(
            !log.contains("star schema refresh failed") && !log.contains("could not follow"),
            "{label}: {log}"
        );
    }

    /// The star equals a rebuild from the replica (in a transaction rolled back).
    async fn star_is_its_rebuild(&self, label: &str) {
        let mut olap = self.c.olap_conn().await;
        exec(&mut olap, "begin isolation level repeatable read").await;
        let streamed = star_rows(&mut olap).await;
        exec(&mut olap, "select star_refresh_all()").await;
        let rebuilt = star_rows(&mut olap).await;
        exec(&mut olap, "rollback").await;
        assert_same_star(&streamed, &rebuilt, &format!("{label}: its rebuild"));
    }

    /// A replay of the whole journal, across the DDL, gives the same star.
    async fn replay_gives_the_same_star(&mut self, label: &str) {
        let streamed = star_rows(&mut self.c.olap_conn().await).await;
        let out = self.c.run(&["replay", "--from-lsn", "0/0"]);
        assert!(out.contains("full rebuild"), "{out}");
        self.converged(label).await;
        let replayed = star_rows(&mut self.c.olap_conn().await).await;
        assert_same_star(&streamed, &replayed, &format!("{label}: a replay"));
    }

    /// `status --json`'s degraded star columns, as `table.column` → state.
    fn degraded(&self) -> HashMap<String, String> {
        let out = self.c.run(&["status", "--json"]);
        let start = out.find('{').unwrap_or(0);
        let v: serde_json::Value = serde_json::Deserializer::from_str(&out[start..])
            .into_iter()
            .next()
            .and_then(Result::ok)
            .unwrap_or_else(|| panic!("no JSON: {out}"));
        v["star_degraded"]
            .as_array()
            .unwrap_or_else(|| panic!("no star_degraded: {out}"))
            .iter()
            .map(|d| {
                assert!(d["lsn"].is_string(), "{d}");
                (
                    format!(
                        "{}.{}",
                        d["star_table"].as_str().unwrap(),
                        d["attribute"].as_str().unwrap()
                    ),
                    d["state"].as_str().unwrap().to_owned(),
                )
            })
            .collect()
    }

    async fn metrics(&self) -> String {
        harness::http_get(&self.listen, "/metrics").await.unwrap().1
    }
}

/// Waits (bounded) until OLAP has applied everything the source has now.
async fn settle(d: &mut Drill, label: &str) {
    d.converged(label).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_feeding_column_renamed_retyped_and_dropped_one_at_a_time() {
    let mut d = Drill::start("star-each").await;
    let mut oltp = d.c.oltp_conn().await;
    // Retyping keys and references to text needs the source's constraints out of the way
    // (a foreign key between a uuid and a text column, a check comparing a text to 0).
    exec(
        &mut oltp,
        "do $$ declare r record; begin
           for r in select conrelid::regclass as t, conname from pg_constraint
                    where contype in ('f', 'c') and connamespace = 'public'::regnamespace loop
             execute format('alter table %s drop constraint %I', r.t, r.conname);
           end loop; end $$",
    )
    .await;
    let mut src = Source::capture(&mut oltp).await;
    let mut last_line = None;
    src.round(&mut oltp).await;
    settle(&mut d, "before any DDL").await;
    let mut olap = d.c.olap_conn().await;
    let before_email: Option<String> =
        sqlx::query_scalar("select email from dim_customer where customer_id = $1")
            .bind(src.customers[0])
            .fetch_one(&mut olap)
            .await
            .unwrap();
    assert!(before_email.is_some());

    // Renamed, each followed by writes: the star does not change.
    for (t, cols) in TABLES {
        for col in cols
            .iter()
            .filter(|c| RETYPES.iter().any(|r| r.0 == *t && r.1 == **c))
        {
            let (name, _) = src.column(&mut oltp, t, col).await.unwrap();
            exec(
                &mut oltp,
                &format!("alter table {t} rename column {name} to {name}_v2"),
            )
            .await;
            src.round(&mut oltp).await;
        }
    }
    settle(&mut d, "after renaming every feeding column").await;
    assert!(
        d.degraded().is_empty(),
        "renames degrade nothing: {:?}",
        d.degraded()
    );
    d.star_is_its_rebuild("after the renames").await;

    // Retyped, each followed by writes.
    for (t, col, ty) in RETYPES {
        let (name, _) = src.column(&mut oltp, t, col).await.unwrap();
        exec(
            &mut oltp,
            &format!("alter table {t} alter column {name} type {ty} using {name}::text::{ty}"),
        )
        .await;
        src.round(&mut oltp).await;
    }
    // A value the star's type for payments.amount (numeric) cannot read: that payment is
    // left out of fact_payments and listed, the stream goes on.
    let order = src.orders[0].clone();
    let bad = src
        .insert(
            &mut oltp,
            "payments",
            &[
                ("order_id", order),
                ("amount", "n/a".into()),
                ("method", "cash".into()),
            ],
        )
        .await
        .unwrap();
    src.round(&mut oltp).await;
    settle(&mut d, "after retyping every feeding column").await;
    let q: String = sqlx::query_scalar(
        "select format_type(atttypid, atttypmod) from pg_attribute
         where attrelid = 'fact_sales'::regclass and attname = 'quantity'",
    )
    .fetch_one(&mut olap)
    .await
    .unwrap();
    assert_eq!(
        q, "numeric",
        "fact_sales.quantity widened with order_items.quantity"
    );
    let half: i64 = sqlx::query_scalar("select count(*) from fact_sales where quantity = 1.5")
        .fetch_one(&mut olap)
        .await
        .unwrap();
    assert!(half > 0, "a fractional quantity reaches the star");
    let (listed, in_facts): (i64, i64) = sqlx::query_as(
        "select (select count(*) from star_dead_letters where input = 'payments' and row_key = $1),
                (select count(*) from fact_payments where payment_id = $1::bigint)",
    )
    .bind(&bad)
    .fetch_one(&mut olap)
    .await
    .unwrap();
    assert_eq!(
        (listed, in_facts),
        (1, 0),
        "the unreadable amount is a star dead letter"
    );
    let degraded = d.degraded();
    assert_eq!(
        degraded.get("fact_payments.amount").map(String::as_str),
        Some("incompatible"),
        "{degraded:?}"
    );
    d.star_is_its_rebuild("after the retypes").await;

    // Dropped, each followed by writes (keys: see the table drill); an order line's and a
    // payment's order last, so that lines written after the other drops are facts.
    let (references, others): (Vec<_>, Vec<_>) = RETYPES
        .iter()
        .filter(|r| r.1 != "id")
        .partition(|r| r.1 == "order_id");
    let before_customers: i64 = sqlx::query_scalar("select count(*) from dim_customer")
        .fetch_one(&mut olap)
        .await
        .unwrap();
    for (i, (t, col, _)) in others.iter().chain(&references).enumerate() {
        if i == others.len() {
            // The lines of the last round: written once every attribute of a line but its
            // order was dropped.
            let id = src.column(&mut oltp, "order_items", "id").await.unwrap().0;
            let last: i64 =
                sqlx::query_scalar(&format!("select max(\"{id}\")::bigint from order_items"))
                    .fetch_one(&mut oltp)
                    .await
                    .unwrap();
            last_line = Some(last);
        }
        let (name, _) = src.column(&mut oltp, t, col).await.unwrap();
        exec(&mut oltp, &format!("alter table {t} drop column {name}")).await;
        src.round(&mut oltp).await;
    }
    settle(&mut d, "after dropping every feeding column").await;
    let degraded = d.degraded();
    for must in [
        "dim_customer.email",
        "dim_store.city",
        "dim_employee.active",
        "dim_product.price",
        "fact_sales.quantity",
        "fact_sales.employee_key",
        "fact_sales.ordered_at",
        "fact_sales.order_id",
        "fact_payments.amount",
        "fact_inventory.quantity_delta",
    ] {
        assert_eq!(
            degraded.get(must).map(String::as_str),
            Some("dropped"),
            "{must}: {degraded:?}"
        );
    }
    // Rows keep what they had; rows written later take the documented fallback.
    let kept: Option<String> =
        sqlx::query_scalar("select email from dim_customer where customer_id = $1")
            .bind(src.customers[0])
            .fetch_one(&mut olap)
            .await
            .unwrap();
    assert_eq!(kept, before_email, "a customer keeps the email it had");
    let newest: (String, Option<String>) = sqlx::query_as(
        "select name, email from dim_customer where customer_id = (select max(customer_id) from dim_customer)",
    )
    .fetch_one(&mut olap)
    .await
    .unwrap();
    assert_eq!(
        newest,
        ("unknown".to_owned(), None),
        "a customer added after the drops"
    );
    assert!(
        sqlx::query_scalar::<_, i64>("select count(*) from dim_customer")
            .fetch_one(&mut olap)
            .await
            .unwrap()
            > before_customers
    );
    let last = last_line.expect("the last round before the references were dropped");
    let lines: Vec<LineFacts> = sqlx::query_as(
        "select customer_key, employee_key, store_key, product_key, quantity::text,
                    revenue::text, status, isfinite(ordered_at)
             from fact_sales where order_item_id in ($1, $1 - 1) order by order_item_id",
    )
    .bind(last)
    .fetch_all(&mut olap)
    .await
    .unwrap();
    assert_eq!(
        lines.len(),
        2,
        "the lines written after the drops are facts"
    );
    for l in &lines {
        assert_eq!(
            l,
            &(-1, -1, -1, -1, None, None, "unknown".to_owned(), true),
            "unknown members, no quantity or revenue, status unknown, the insert's time"
        );
    }
    let (left_out, in_facts): (i64, i64) = sqlx::query_as(
        "select (select count(*) from star_dead_letters
                 where input = 'order_items' and row_key::bigint > $1),
                (select count(*) from fact_sales where order_item_id > $1)",
    )
    .bind(last)
    .fetch_one(&mut olap)
    .await
    .unwrap();
    assert!(
        left_out >= 2 && in_facts == 0,
        "lines without their order are dead letters of the star: {left_out} listed, {in_facts} facts"
    );
    let metrics = d.metrics().await;
    assert!(
        metrics.contains(
            "brewlytics_star_degraded_inputs{star_table=\"dim_customer\",attribute=\"email\"} 1"
        ),
        "{metrics}"
    );
    let table = d.c.run(&["status"]);
    assert!(
        table.contains("dim_customer.email: source column public.customers.email_v2 dropped at"),
        "{table}"
    );
    // Said once, at the change.
    let log = d.replicator.log_text();
    assert_eq!(
        log.matches("source column public.customers.email_v2 dropped")
            .count(),
        1,
        "{log}"
    );
    d.star_is_its_rebuild("after the drops").await;
    let api = d.stop_orders();
    assert!(api >= 3, "orders through the API: {api}");
    settle(&mut d, "at the end").await;
    d.replay_gives_the_same_star("a replay across every DDL")
        .await;
    d.star_is_its_rebuild("after the replay").await;
    drop(d.api);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_changes_in_one_transaction_with_writes_in_it() {
    let mut d = Drill::start("star-together").await;
    let mut oltp = d.c.oltp_conn().await;
    let mut src = Source::capture(&mut oltp).await;
    src.round(&mut oltp).await;
    settle(&mut d, "before the DDL").await;
    let mut olap = d.c.olap_conn().await;
    let (old_customer, old_email): (i64, Option<String>) = sqlx::query_as(
        "select customer_id, email from dim_customer where customer_id is not null order by 1 limit 1",
    )
    .fetch_one(&mut olap)
    .await
    .unwrap();

    // One source transaction: renames, retypes and drops on four tables, rows written
    // between them and after them.
    exec(
        &mut oltp,
        "begin;
         alter table orders rename column status to state;
         alter table orders drop column employee_id;
         update orders set state = 'preparing' where state = 'placed';
         alter table order_items alter column quantity type numeric(10,2);
         alter table order_items rename column unit_price to price_each;
         alter table customers drop column email;
         alter table customers rename column name to display_name;
         insert into customers (display_name) values ('No-Email');
         alter table products alter column price type numeric(14,4);
         alter table products drop column category;
         commit;",
    )
    .await;
    for _ in 0..4 {
        src.round(&mut oltp).await;
    }
    settle(&mut d, "after one transaction of DDL").await;
    let degraded = d.degraded();
    let mut names: Vec<&str> = degraded.keys().map(String::as_str).collect();
    names.sort();
    assert_eq!(
        names,
        [
            "dim_customer.email",
            "dim_product.category",
            "fact_payments.employee_key",
            "fact_sales.employee_key"
        ],
        "what degraded, and only that (renames and retypes are followed): {degraded:?}"
    );
    let (email, newest, category, fractional): (Option<String>, Option<String>, String, i64) =
        sqlx::query_as(
            "select (select email from dim_customer where customer_id = $1),
                    (select email from dim_customer where name = 'No-Email'),
                    (select category from dim_product where product_id = (select max(product_id) from dim_product where product_id > 0) and is_current),
                    (select count(*) from fact_sales where quantity <> trunc(quantity))",
        )
        .bind(old_customer)
        .fetch_one(&mut olap)
        .await
        .unwrap();
    assert_eq!(email, old_email, "a customer keeps the email it had");
    assert_eq!(newest, None, "a customer added after the drop has none");
    assert_ne!(category, "", "a product keeps its category");
    assert!(fractional > 0, "the retyped quantity carries fractions");
    let (kept_staff, new_staff): (i64, i64) = sqlx::query_as(
        "select count(*) filter (where status = 'preparing' and employee_key > 0),
                count(*) filter (where employee_key = -1)
         from fact_sales",
    )
    .fetch_one(&mut olap)
    .await
    .unwrap();
    assert!(
        kept_staff > 0 && new_staff > 0,
        "orders moved on in the DDL's transaction keep their employee (the renamed status \
         followed); orders written later name the unknown one: {kept_staff}, {new_staff}"
    );
    d.star_is_its_rebuild("after one transaction of DDL").await;
    d.stop_orders();
    settle(&mut d, "at the end").await;
    d.replay_gives_the_same_star("a replay across the transaction")
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn source_tables_renamed_dropped_or_without_their_key() {
    let mut d = Drill::start("star-tables").await;
    let mut oltp = d.c.oltp_conn().await;
    exec(
        &mut oltp,
        "alter table order_items drop constraint order_items_order_id_fkey;
         alter table payments drop constraint payments_order_id_fkey;
         alter table inventory_movements drop constraint inventory_movements_order_id_fkey;",
    )
    .await;
    let mut src = Source::capture(&mut oltp).await;
    src.round(&mut oltp).await;
    settle(&mut d, "before the DDL").await;

    // Renamed: followed.
    exec(
        &mut oltp,
        "alter table customers rename to clients;
         alter table payments rename to payments_2024;
         alter table payments_2024 rename column amount to paid",
    )
    .await;
    src.round(&mut oltp).await;
    settle(&mut d, "after renaming tables").await;
    assert!(d.degraded().is_empty(), "{:?}", d.degraded());
    let mut olap = d.c.olap_conn().await;
    let newest: String = sqlx::query_scalar(
        "select name from dim_customer where customer_id = (select max(customer_id) from dim_customer)",
    )
    .fetch_one(&mut olap)
    .await
    .unwrap();
    assert!(
        newest.starts_with("Guest"),
        "clients feed dim_customer: {newest}"
    );
    d.star_is_its_rebuild("after renaming tables").await;

    // The key of order lines dropped: the star keeps the lines it had; the rest goes on.
    exec(&mut oltp, "alter table order_items drop column id").await;
    src.round(&mut oltp).await;
    src.round(&mut oltp).await;
    settle(&mut d, "after dropping the key of order_items").await;
    let degraded = d.degraded();
    assert_eq!(
        degraded.get("fact_sales.quantity").map(String::as_str),
        Some("frozen"),
        "{degraded:?}"
    );
    let latest: Vec<String> = src.orders.iter().rev().take(2).cloned().collect();
    let (lines, payments): (i64, i64) = sqlx::query_as(
        "select (select count(*) from fact_sales where order_id::text = any ($1)),
                (select count(*) from fact_payments where order_id::text = any ($1))",
    )
    .bind(&latest)
    .fetch_one(&mut olap)
    .await
    .unwrap();
    assert_eq!(
        (lines, payments),
        (0, 2),
        "lines written after the key was dropped are not read; their payments are"
    );
    d.star_is_its_rebuild("after dropping a key").await;

    // A table dropped: the star keeps what it has, the other tables stream on.
    let inventory: i64 = sqlx::query_scalar("select count(*) from fact_inventory")
        .fetch_one(&mut olap)
        .await
        .unwrap();
    exec(&mut oltp, "drop table inventory_movements").await;
    let paid_before: i64 = sqlx::query_scalar("select count(*) from fact_payments")
        .fetch_one(&mut olap)
        .await
        .unwrap();
    src.round(&mut oltp).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let degraded = d.degraded();
        let metrics = d.metrics().await;
        if degraded.get("fact_inventory.quantity_delta").map(String::as_str) == Some("dropped")
            && metrics.contains(
                "brewlytics_star_degraded_inputs{star_table=\"fact_inventory\",attribute=\"quantity_delta\"} 1",
            )
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the dropped table is not reported: {degraded:?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    src.round(&mut oltp).await;
    settle(&mut d, "after dropping a table").await;
    let (inventory_now, paid_now): (i64, i64) = sqlx::query_as(
        "select (select count(*) from fact_inventory), (select count(*) from fact_payments)",
    )
    .fetch_one(&mut olap)
    .await
    .unwrap();
    assert_eq!(inventory_now, inventory, "fact_inventory keeps what it had");
    assert!(paid_now > paid_before, "payments stream on");
    let log = d.replicator.log_text();
    assert_eq!(
        log.matches("source table public.inventory_movements dropped on the source")
            .count(),
        1,
        "{log}"
    );
    d.star_is_its_rebuild("after dropping a table").await;
    d.stop_orders();
    settle(&mut d, "at the end").await;
    d.replay_gives_the_same_star("a replay across table changes")
        .await;
    assert_eq!(
        d.degraded()
            .get("fact_inventory.quantity_delta")
            .map(String::as_str),
        Some("dropped"),
        "a replay keeps the table dropped"
    );
}
