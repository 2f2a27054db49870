//! A drill's pipeline (two servers, the replicator, the API taking orders) and its checks:
//! OLAP equal to OLTP, the star equal to its rebuild and to a replay, what `status` and the
//! metrics say.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sqlx::PgConnection;

use super::harness::{self, free_addr, http, scratch_dir, wait_streaming, Clusters, Proc};
use super::source::exec;

/// A fact line's members, measures, status and whether its time is finite.
pub type LineFacts = (
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
pub type Star = Vec<(&'static str, Vec<String>)>;

pub async fn star_rows(olap: &mut PgConnection) -> Star {
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
pub fn assert_same_star(a: &Star, b: &Star, what: &str) {
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
pub struct Drill {
    pub c: Clusters,
    pub listen: String,
    pub replicator: Proc,
    pub api: Proc,
    api_addr: String,
    api_orders: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    /// Orders through the API wait while OLAP is compared with OLTP.
    paused: Arc<AtomicBool>,
    load: Option<std::thread::JoinHandle<()>>,
}

impl Drill {
    /// The pipeline streaming, `setup` run on the source, then orders through the API.
    pub async fn start(name: &str, setup: &str) -> Self {
        let c = Clusters::start();
        c.prepare(40);
        let listen = free_addr();
        let replicator = c.replicator(name, &listen, &[]);
        wait_streaming(&listen, &replicator).await;
        exec(&mut c.oltp_conn().await, setup).await;
        let api_addr = free_addr();
        // Its orders need a key: the harness's, in the OLTP key table.
        c.register_test_key();
        harness::remember_key(&api_addr, &harness::test_key().text);
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

    pub fn stop_orders(&mut self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.load.take() {
            h.join().unwrap();
        }
        self.api_orders.load(Ordering::Relaxed)
    }

    /// OLAP equals OLTP, the replicator still runs and never failed on the star.
    pub async fn converged(&mut self, label: &str) {
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
    pub async fn star_is_its_rebuild(&self, label: &str) {
        let mut olap = self.c.olap_conn().await;
        exec(&mut olap, "begin isolation level repeatable read").await;
        let streamed = star_rows(&mut olap).await;
        exec(&mut olap, "select star_refresh_all()").await;
        let rebuilt = star_rows(&mut olap).await;
        exec(&mut olap, "rollback").await;
        assert_same_star(&streamed, &rebuilt, &format!("{label}: its rebuild"));
    }

    /// A replay of the whole journal, across the DDL, gives the same star.
    pub async fn replay_gives_the_same_star(&mut self, label: &str) {
        let streamed = star_rows(&mut self.c.olap_conn().await).await;
        let out = self.c.run(&["replay", "--from-lsn", "0/0"]);
        assert!(out.contains("full rebuild"), "{out}");
        self.converged(label).await;
        let replayed = star_rows(&mut self.c.olap_conn().await).await;
        assert_same_star(&streamed, &replayed, &format!("{label}: a replay"));
    }

    /// `status --json`'s degraded star columns, as `table.column` → state.
    pub fn degraded(&self) -> HashMap<String, String> {
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

    pub async fn metrics(&self) -> String {
        harness::http_get(&self.listen, "/metrics").await.unwrap().1
    }
}
