//! The shop as the load generator sees it: the live menu, customers, staff and the orders it
//! may act on next, and each action of the scenario as an API call, recorded.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use anyhow::{bail, Context};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use reqwest::Method;
use serde_json::{json, Value};
use sqlx::postgres::PgConnectOptions;
use sqlx::{Connection, PgConnection};
use tokio::time::Instant;
use uuid::Uuid;

use crate::freshness::{SharedTracker, Tracker};
use crate::report::{Outcome, Recorder};
use crate::scenario::{self, Action, Status};
use crate::{Databases, LoadtestArgs};

/// An order the generator may act on next.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Tracked {
    id: Uuid,
    status: Status,
}

const MAX_TRACKED_ORDERS: usize = 50_000;

pub(crate) struct World {
    pub(crate) client: reqwest::Client,
    pub(crate) base: String,
    pub(crate) employees: Vec<(i64, i64)>,
    pub(crate) customers: Mutex<Vec<i64>>,
    pub(crate) products: Mutex<Vec<i64>>,
    pub(crate) orders: Mutex<Vec<Tracked>>,
    pub(crate) recorder: Mutex<Recorder>,
    pub(crate) tracker: Option<SharedTracker>,
    pub(crate) sample: f64,
    pub(crate) items: Option<u8>,
    pub(crate) tag: String,
    pub(crate) counter: AtomicU64,
    pub(crate) in_flight: AtomicU64,
}

impl World {
    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (Outcome, Option<Value>) {
        let mut req = self.client.request(method, format!("{}{path}", self.base));
        if let Some(body) = body {
            req = req.json(&body);
        }
        let resp = match req.send().await {
            Ok(r) => r,
            Err(e) => return (transport_outcome(&e), None),
        };
        let status = resp.status().as_u16();
        match resp.bytes().await {
            Ok(bytes) => (Outcome::Status(status), serde_json::from_slice(&bytes).ok()),
            Err(e) => (transport_outcome(&e), None),
        }
    }

    fn take_order(&self, rng: &mut SmallRng) -> Option<Tracked> {
        let mut orders = self.orders.lock().expect("orders lock");
        if orders.is_empty() {
            return None;
        }
        let i = rng.gen_range(0..orders.len());
        Some(orders.swap_remove(i))
    }

    fn put_order(&self, rng: &mut SmallRng, t: Tracked) {
        let mut orders = self.orders.lock().expect("orders lock");
        if orders.len() >= MAX_TRACKED_ORDERS {
            let i = rng.gen_range(0..orders.len());
            orders[i] = t;
        } else {
            orders.push(t);
        }
    }

    fn record(&self, action: Action, started: Instant, outcome: &Outcome) {
        self.recorder.lock().expect("recorder lock").record(
            action.endpoint(),
            started.elapsed(),
            outcome,
        );
    }

    /// Performs `action` (or a stand-in when it has nothing to act on) and records it;
    /// latency runs from `started` (the scheduled start in open loop).
    pub(crate) async fn act(&self, action: Action, rng: &mut SmallRng, started: Instant) {
        let action = match action {
            Action::Advance | Action::Cancel | Action::Delete | Action::GetOrder
                if self.orders.lock().expect("orders lock").is_empty() =>
            {
                Action::PlaceOrder
            }
            a => a,
        };
        match action {
            Action::PlaceOrder => self.place_order(rng, started, None).await,
            Action::Browse => self.browse(rng, started).await,
            Action::Advance | Action::Cancel => {
                let Some(order) = self.take_order(rng) else {
                    return self.place_order(rng, started, None).await;
                };
                let (status, next) = if action == Action::Cancel && order.status.can_cancel() {
                    ("cancelled", None)
                } else {
                    order.status.advance()
                };
                let (outcome, _) = self
                    .call(
                        Method::PATCH,
                        &format!("/orders/{}", order.id),
                        Some(json!({ "status": status })),
                    )
                    .await;
                self.record(action, started, &outcome);
                if let (true, Some(next)) = (outcome.is_ok(), next) {
                    self.put_order(
                        rng,
                        Tracked {
                            id: order.id,
                            status: next,
                        },
                    );
                }
            }
            Action::Delete => {
                let Some(order) = self.take_order(rng) else {
                    return self.place_order(rng, started, None).await;
                };
                if let Some(t) = &self.tracker {
                    t.lock().expect("tracker lock").deleted(&order.id);
                }
                let (outcome, _) = self
                    .call(Method::DELETE, &format!("/orders/{}", order.id), None)
                    .await;
                self.record(action, started, &outcome);
            }
            Action::GetOrder => {
                let id = {
                    let orders = self.orders.lock().expect("orders lock");
                    orders
                        .get(rng.gen_range(0..orders.len().max(1)))
                        .map(|o| o.id)
                };
                let Some(id) = id else {
                    return self.place_order(rng, started, None).await;
                };
                let (outcome, _) = self.call(Method::GET, &format!("/orders/{id}"), None).await;
                self.record(action, started, &outcome);
            }
            Action::NewCustomer => {
                let n = self.counter.fetch_add(1, Ordering::Relaxed);
                let body = json!({
                    "name": format!("Rush customer {n}"),
                    "email": format!("rush-{}-{n}@example.com", self.tag),
                });
                let (outcome, resp) = self.call(Method::POST, "/customers", Some(body)).await;
                self.record(action, started, &outcome);
                if let Some(id) = resp.as_ref().and_then(|v| v["id"].as_i64()) {
                    self.customers.lock().expect("customers lock").push(id);
                }
            }
            Action::NewProduct => {
                let n = self.counter.fetch_add(1, Ordering::Relaxed);
                let category = scenario::CATEGORIES[rng.gen_range(0..scenario::CATEGORIES.len())];
                let body = json!({
                    "name": format!("Rush special {}-{n}", self.tag),
                    "category": category,
                    "price": scenario::price(rng),
                });
                let (outcome, resp) = self.call(Method::POST, "/products", Some(body)).await;
                self.record(action, started, &outcome);
                if let Some(id) = resp.as_ref().and_then(|v| v["id"].as_i64()) {
                    self.products.lock().expect("products lock").push(id);
                }
            }
            Action::PriceChange => {
                let id = {
                    let products = self.products.lock().expect("products lock");
                    products[rng.gen_range(0..products.len())]
                };
                let (outcome, _) = self
                    .call(
                        Method::PATCH,
                        &format!("/products/{id}"),
                        Some(json!({ "price": scenario::price(rng) })),
                    )
                    .await;
                self.record(action, started, &outcome);
            }
        }
    }

    /// A visit: its impressions and clicks in one `POST /events` (clicks a few seconds after
    /// the impressions), then, for some, an order of the clicked products in its session.
    async fn browse(&self, rng: &mut SmallRng, started: Instant) {
        let visit = {
            let products = self.products.lock().expect("products lock");
            scenario::visit(rng, &products)
        };
        let session = format!(
            "lt-{}-{}",
            self.tag,
            self.counter.fetch_add(1, Ordering::Relaxed)
        );
        let now = chrono::Utc::now();
        let at = |secs: i64| (now - chrono::Duration::seconds(secs)).to_rfc3339();
        let events: Vec<Value> = visit
            .shown
            .iter()
            .map(|p| (p, "impression", 5))
            .chain(visit.clicked.iter().map(|p| (p, "click", 1)))
            .map(|(p, kind, ago)| {
                json!({"kind": kind, "session_id": session, "product_id": p,
                       "occurred_at": at(ago), "context": {"page": "menu"}})
            })
            .collect();
        let (outcome, _) = self
            .call(Method::POST, "/events", Some(Value::Array(events)))
            .await;
        self.record(Action::Browse, started, &outcome);
        if outcome.is_ok() && visit.orders {
            let basket = visit.clicked.iter().map(|&p| (p, 1)).collect();
            self.place_order(rng, Instant::now(), Some((session, basket)))
                .await;
        }
    }

    /// `POST /orders`: a basket from the menu, or the one of a visit with its session.
    async fn place_order(
        &self,
        rng: &mut SmallRng,
        started: Instant,
        visit: Option<(String, Vec<(i64, i64)>)>,
    ) {
        let (session, items) = match visit {
            Some((session, items)) => (Some(session), items),
            None => {
                let products = self.products.lock().expect("products lock");
                let items = match self.items {
                    Some(n) => scenario::fixed_basket(rng, &products, n as usize),
                    None => scenario::basket(rng, &products),
                };
                (None, items)
            }
        };
        let customer = if rng.gen_bool(0.25) {
            None
        } else {
            let customers = self.customers.lock().expect("customers lock");
            (!customers.is_empty()).then(|| customers[rng.gen_range(0..customers.len())])
        };
        let (employee, store) = self.employees[rng.gen_range(0..self.employees.len())];
        let body = json!({
            "customer_id": customer,
            "employee_id": employee,
            "store_id": store,
            "payment_method": scenario::PAYMENT_METHODS[rng.gen_range(0..3)],
            "items": items
                .iter()
                .map(|(p, q)| json!({ "product_id": p, "quantity": q }))
                .collect::<Vec<_>>(),
            "session_id": session,
        });
        let (outcome, resp) = self.call(Method::POST, "/orders", Some(body)).await;
        let acknowledged = Instant::now();
        self.record(Action::PlaceOrder, started, &outcome);
        let id = resp
            .as_ref()
            .and_then(|v| v["id"].as_str())
            .and_then(|s| Uuid::parse_str(s).ok());
        if let (true, Some(id)) = (outcome.is_ok(), id) {
            if let Some(t) = &self.tracker {
                if self.sample >= 1.0 || rng.gen_bool(self.sample.max(0.0)) {
                    t.lock().expect("tracker lock").placed(id, acknowledged);
                }
            }
            self.put_order(
                rng,
                Tracked {
                    id,
                    status: Status::Placed,
                },
            );
        }
    }
}

fn transport_outcome(e: &reqwest::Error) -> Outcome {
    if e.is_timeout() {
        Outcome::Timeout
    } else {
        Outcome::Transport
    }
}

/// Reads stores and active employees through the API, menu and customers from the database,
/// so the load uses the live data.
pub(crate) async fn bootstrap(
    client: reqwest::Client,
    base: String,
    dbs: &Databases,
    args: &LoadtestArgs,
    seed: u64,
    rng: &mut SmallRng,
) -> anyhow::Result<World> {
    let get = |path: &'static str| {
        let client = client.clone();
        let url = format!("{base}{path}");
        async move {
            let resp = client
                .get(&url)
                .send()
                .await
                .with_context(|| format!("cannot reach the API at {url}"))?;
            let status = resp.status();
            if status == reqwest::StatusCode::UNAUTHORIZED
                || status == reqwest::StatusCode::FORBIDDEN
            {
                bail!(
                    "GET {url}: HTTP {status}: the API refused the key; set BREWLYTICS_API_KEY \
                     to a key with orders:write and catalog:read (`brewlytics up` writes one \
                     with every scope to .brewlytics/api-key)"
                );
            }
            if !status.is_success() {
                bail!("GET {url}: HTTP {status}");
            }
            resp.json::<Vec<Value>>()
                .await
                .with_context(|| format!("GET {url}: unexpected body"))
        }
    };
    let stores: Vec<i64> = get("/stores")
        .await?
        .iter()
        .filter_map(|s| s["id"].as_i64())
        .collect();
    let Some(&first_store) = stores.first() else {
        bail!("the API has no stores: seed the database first (`brewlytics seed`)");
    };
    let employees: Vec<(i64, i64)> = get("/employees/active")
        .await?
        .iter()
        .filter_map(|e| {
            Some((
                e["id"].as_i64()?,
                e["store_id"].as_i64().unwrap_or(first_store),
            ))
        })
        .collect();
    if employees.is_empty() {
        bail!("the API has no active employees: seed the database first (`brewlytics seed`)");
    }

    let (customers, products) = match (&dbs.oltp, &dbs.olap) {
        (Some(db), _) => read_menu(db, "")
            .await
            .context("reading the menu from OLTP")?,
        (None, Some(db)) => read_menu(db, "replica.")
            .await
            .context("reading the menu from OLAP replica tables")?,
        (None, None) => (Vec::new(), Vec::new()),
    };
    let tag = format!("{:08x}", rng.gen::<u32>());
    let world = World {
        client,
        base,
        employees,
        customers: Mutex::new(customers),
        products: Mutex::new(products),
        orders: Mutex::new(Vec::new()),
        recorder: Mutex::new(Recorder::default()),
        tracker: (!args.no_freshness).then(|| Arc::new(Mutex::new(Tracker::default()))),
        sample: args.sample,
        items: args.items,
        tag,
        counter: AtomicU64::new(0),
        in_flight: AtomicU64::new(0),
    };
    // No database to read the menu from (or an empty one): add a small one through the API.
    if world.products.lock().expect("products lock").is_empty() {
        let mut rng = SmallRng::seed_from_u64(seed ^ 0xface);
        for _ in 0..5 {
            world
                .act(Action::NewProduct, &mut rng, Instant::now())
                .await;
        }
        if world.products.lock().expect("products lock").is_empty() {
            bail!("no products on the menu and creating some through the API failed");
        }
        *world.recorder.lock().expect("recorder lock") = Recorder::default();
    }
    Ok(world)
}

async fn read_menu(db: &PgConnectOptions, schema: &str) -> anyhow::Result<(Vec<i64>, Vec<i64>)> {
    let mut conn = PgConnection::connect_with(db).await?;
    let customers: Vec<i64> = sqlx::query_scalar(&format!(
        "select id from {schema}customers order by id desc limit 20000"
    ))
    .fetch_all(&mut conn)
    .await?;
    let products: Vec<i64> = sqlx::query_scalar(&format!(
        "select id from {schema}products where is_available order by id"
    ))
    .fetch_all(&mut conn)
    .await?;
    let _ = conn.close().await;
    Ok((customers, products))
}
