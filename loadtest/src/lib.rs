//! Load generator for the Brewlytics API with end-to-end freshness (`brewlytics loadtest`).
//!
//! It drives the REST API like a Monday-morning rush — orders from known customers and
//! walk-ins, baskets of 1–5 items from the live menu, statuses advanced, some orders cancelled,
//! a few deleted, new customers and products, the odd price change — either open-loop at a
//! fixed arrival rate (`--rate`; latency counted from each request's *intended* start, so a
//! slow server cannot hide its queueing) or closed-loop with `--users N`. For a sample of the
//! orders it measures freshness: the time from the API's 201 until the order's facts are
//! visible in OLAP `fact_sales`, polled with one set-based query per poll.
//!
//! Pure parts (schedule, histogram, scenario, report) are separate modules and unit-tested.

pub mod freshness;
pub mod histogram;
pub mod progress;
pub mod report;
pub mod scenario;
pub mod schedule;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{bail, Context};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use reqwest::Method;
use serde_json::{json, Value};
use sqlx::postgres::PgConnectOptions;
use sqlx::{Connection, PgConnection};
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;
use tokio::time::Instant;
use uuid::Uuid;

pub use report::Report;
pub use scenario::Mix;

use freshness::{SharedTracker, Tracker};
use report::{Outcome, Recorder, RunInfo};
use scenario::{Action, Status};
use schedule::{parse_duration, OpenSchedule};

/// `brewlytics loadtest` options. Databases come from `OLTP_DATABASE_URL` /
/// `OLAP_DATABASE_URL` (or the embedded cluster of `brewlytics up`): see [`Databases`].
#[derive(clap::Args, Debug, Clone)]
pub struct LoadtestArgs {
    /// Base URL of the API.
    #[arg(long, default_value = "http://127.0.0.1:8000")]
    pub api: String,
    /// The API key sent with every request (`Authorization: Bearer`); it needs orders:write,
    /// and for the `rush` mix catalog:write and customers:write too. Default: the key
    /// `brewlytics up` wrote to its data directory (`.brewlytics/api-key`).
    #[arg(long, env = "BREWLYTICS_API_KEY", hide_env_values = true)]
    pub api_key: Option<brewlytics_support::auth::key::ClientKey>,
    /// Open loop: requests started per second, on a fixed schedule (default 50 when --users
    /// is not given).
    #[arg(long, conflicts_with = "users")]
    pub rate: Option<f64>,
    /// Closed loop: this many users, each sending its next request when the last one answered.
    #[arg(long)]
    pub users: Option<usize>,
    /// How long the load runs (e.g. 30s, 2m, 1500ms).
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub duration: Duration,
    /// The request mix: `rush` (the whole scenario) or `orders` (POST /orders only).
    #[arg(long, value_enum, default_value = "rush")]
    pub mix: Mix,
    /// Items per order, fixed (quantity 1 each); default a random basket of 1–5 items.
    #[arg(long, value_parser = clap::value_parser!(u8).range(1..=50))]
    pub items: Option<u8>,
    /// Fraction of placed orders whose freshness is followed (0–1).
    #[arg(long, default_value_t = 1.0)]
    pub sample: f64,
    /// How often OLAP is polled for the pending sampled orders, in ms.
    #[arg(long, default_value_t = 10)]
    pub poll_ms: u64,
    /// After the load, how long to wait for sampled orders still missing from OLAP.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub freshness_wait: Duration,
    /// Do not measure freshness (no OLAP connection needed).
    #[arg(long)]
    pub no_freshness: bool,
    /// Per-request timeout (a request not answered in time counts as `timeout`).
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub timeout: Duration,
    /// Most requests in flight at once (open loop); later arrivals wait, their latency
    /// still counted from their scheduled start.
    #[arg(long, default_value_t = 256)]
    pub max_in_flight: usize,
    /// Random seed (default: random).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Print the report as JSON on stdout instead of the table.
    #[arg(long)]
    pub json: bool,
    /// No progress bar (it is also off when stderr is not a terminal).
    #[arg(long)]
    pub no_progress: bool,
}

/// Where the menu and customers are read, and where freshness is measured.
#[derive(Debug, Clone, Default)]
pub struct Databases {
    /// OLTP, for the live menu and customer ids (else OLAP's `replica.*` is read).
    pub oltp: Option<PgConnectOptions>,
    /// OLAP, for freshness (and the menu when OLTP is not given).
    pub olap: Option<PgConnectOptions>,
}

/// An order the generator may act on next.
#[derive(Debug, Clone, Copy)]
struct Tracked {
    id: Uuid,
    status: Status,
}

const MAX_TRACKED_ORDERS: usize = 50_000;

struct World {
    client: reqwest::Client,
    base: String,
    employees: Vec<(i64, i64)>,
    customers: Mutex<Vec<i64>>,
    products: Mutex<Vec<i64>>,
    orders: Mutex<Vec<Tracked>>,
    recorder: Mutex<Recorder>,
    tracker: Option<SharedTracker>,
    sample: f64,
    items: Option<u8>,
    tag: String,
    counter: AtomicU64,
    in_flight: AtomicU64,
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
    async fn act(&self, action: Action, rng: &mut SmallRng, started: Instant) {
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

/// Runs the load test and returns its report. The first Ctrl-C/SIGTERM stops the load (the
/// report still comes, after the bounded freshness wait); a second one skips the wait.
pub async fn run(args: LoadtestArgs, dbs: Databases) -> anyhow::Result<Report> {
    if let Some(rate) = args.rate {
        if !(rate > 0.0 && rate.is_finite()) {
            bail!("--rate must be a positive number");
        }
    }
    if args.users == Some(0) {
        bail!("--users must be at least 1");
    }
    if !(0.0..=1.0).contains(&args.sample) {
        bail!("--sample must be between 0 and 1");
    }
    let rate = match args.users {
        Some(_) => None,
        None => Some(args.rate.unwrap_or(50.0)),
    };
    let seed = args.seed.unwrap_or_else(rand::random);
    let mut rng = SmallRng::seed_from_u64(seed);
    let base = args.api.trim_end_matches('/').to_owned();
    let mut headers = reqwest::header::HeaderMap::new();
    if let Some(key) = &args.api_key {
        let mut bearer =
            reqwest::header::HeaderValue::from_str(&format!("Bearer {}", key.expose()))
                .context("the API key is not a valid header value")?;
        bearer.set_sensitive(true);
        headers.insert(reqwest::header::AUTHORIZATION, bearer);
    }
    let client = reqwest::Client::builder()
        .default_headers(headers)
        .timeout(args.timeout)
        .connect_timeout(Duration::from_secs(5))
        .pool_max_idle_per_host(args.max_in_flight.max(args.users.unwrap_or(0)))
        .tcp_nodelay(true)
        .build()
        .context("building the HTTP client")?;

    // Freshness needs OLAP; connect first so a wrong URL fails before any load.
    let olap_conn = match (&dbs.olap, args.no_freshness) {
        (_, true) => None,
        (Some(olap), false) => Some(
            freshness::connect(olap)
                .await
                .context("connecting to OLAP for freshness (or pass --no-freshness)")?,
        ),
        (None, false) => bail!(
            "freshness needs OLAP: set OLAP_DATABASE_URL (or run `brewlytics up`), or pass --no-freshness"
        ),
    };

    let world = Arc::new(bootstrap(client, base.clone(), &dbs, &args, seed, &mut rng).await?);

    let (stop_tx, stop_rx) = watch::channel(false);
    let (abort_tx, abort_rx) = watch::channel(false);
    let signals = tokio::spawn(async move {
        brewlytics_support::shutdown::signal().await;
        let _ = stop_tx.send(true);
        brewlytics_support::shutdown::signal().await;
        let _ = abort_tx.send(true);
    });

    let (poll_stop_tx, poll_stop_rx) = watch::channel(false);
    let poll_every = Duration::from_millis(args.poll_ms.max(1));
    let poller = match (olap_conn, &world.tracker) {
        (Some(conn), Some(tracker)) => Some(tokio::spawn(freshness::poll(
            conn,
            tracker.clone(),
            poll_every,
            poll_stop_rx,
        ))),
        _ => None,
    };

    let start = Instant::now();
    let waiting = Arc::new(AtomicBool::new(false));
    let (bar_stop_tx, bar_stop_rx) = watch::channel(false);
    let bar = (!args.no_progress && progress::stderr_is_tty()).then(|| {
        tokio::spawn(progress_loop(
            world.clone(),
            start,
            args.duration,
            waiting.clone(),
            bar_stop_rx,
        ))
    });

    let mut tasks = JoinSet::new();
    match (rate, args.users) {
        (Some(rate), _) => {
            open_loop(
                &world,
                &mut tasks,
                OpenSchedule::new(rate, args.duration),
                args.mix,
                args.max_in_flight.max(1),
                args.timeout,
                start,
                seed,
                stop_rx.clone(),
            )
            .await
        }
        (None, Some(users)) => {
            for u in 0..users {
                let world = world.clone();
                let stop = stop_rx.clone();
                let mut rng = SmallRng::seed_from_u64(worker_seed(seed, u as u64));
                let mix = args.mix;
                let deadline = start + args.duration;
                tasks.spawn(async move {
                    while Instant::now() < deadline && !*stop.borrow() {
                        let action = mix.pick(&mut rng);
                        world.in_flight.fetch_add(1, Ordering::Relaxed);
                        tokio::select! {
                            _ = world.act(action, &mut rng, Instant::now()) => {}
                            _ = tokio::time::sleep_until(deadline + Duration::from_secs(30)) => {}
                        }
                        world.in_flight.fetch_sub(1, Ordering::Relaxed);
                    }
                });
            }
            let mut stop = stop_rx.clone();
            tokio::select! {
                _ = tokio::time::sleep_until(start + args.duration) => {}
                _ = stop.wait_for(|v| *v) => {}
            }
        }
        (None, None) => unreachable!("rate defaults when users is absent"),
    }
    let interrupted = *stop_rx.borrow();
    let elapsed = if interrupted {
        start.elapsed().min(args.duration)
    } else {
        args.duration
    };

    // Let in-flight requests finish (bounded by their timeout), unless asked to hurry.
    let drain_deadline = Instant::now() + args.timeout * 2 + Duration::from_secs(1);
    let mut abort = abort_rx.clone();
    loop {
        tokio::select! {
            next = tasks.join_next() => if next.is_none() { break },
            _ = tokio::time::sleep_until(drain_deadline) => { tasks.abort_all(); break }
            _ = abort.wait_for(|v| *v) => { tasks.abort_all(); break }
        }
    }
    while tasks.join_next().await.is_some() {}

    // Wait (bounded) for the sampled orders still missing from OLAP.
    waiting.store(true, Ordering::Relaxed);
    let wait_start = Instant::now();
    if poller.is_some() {
        if let Some(tracker) = &world.tracker {
            let deadline = wait_start + args.freshness_wait;
            while tracker.lock().expect("tracker lock").pending() > 0
                && Instant::now() < deadline
                && !*abort_rx.borrow()
            {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
    let waited = wait_start.elapsed();
    let _ = poll_stop_tx.send(true);
    if let Some(p) = poller {
        let _ = tokio::time::timeout(Duration::from_secs(6), p).await;
    }
    let _ = bar_stop_tx.send(true);
    if let Some(bar) = bar {
        let _ = bar.await;
    }
    signals.abort();

    let info = RunInfo {
        api: base,
        rate,
        users: args.users,
        mix: args.mix.name().into(),
        duration: args.duration,
        elapsed,
        interrupted,
    };
    let freshness = match (&world.tracker, args.no_freshness) {
        (Some(t), false) => Some(t.lock().expect("tracker lock").report(waited, poll_every)),
        _ => None,
    };
    let recorder = world.recorder.lock().expect("recorder lock").clone();
    Ok(Report::build(&info, &recorder, freshness))
}

fn worker_seed(seed: u64, i: u64) -> u64 {
    seed ^ i.wrapping_add(1).wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

#[allow(clippy::too_many_arguments)]
async fn open_loop(
    world: &Arc<World>,
    tasks: &mut JoinSet<()>,
    schedule: OpenSchedule,
    mix: Mix,
    max_in_flight: usize,
    timeout: Duration,
    start: Instant,
    seed: u64,
    mut stop: watch::Receiver<bool>,
) {
    let permits = Arc::new(Semaphore::new(max_in_flight));
    for i in 0..schedule.total() {
        let due = start + schedule.due(i);
        tokio::select! {
            _ = tokio::time::sleep_until(due) => {}
            _ = stop.wait_for(|v| *v) => return,
        }
        while tasks.try_join_next().is_some() {}
        let world = world.clone();
        let permits = permits.clone();
        tasks.spawn(async move {
            let mut rng = SmallRng::seed_from_u64(worker_seed(seed, i));
            let action = mix.pick(&mut rng);
            // Waiting for a slot is part of the latency: it counts from `due`.
            let permit = match tokio::time::timeout(timeout, permits.acquire_owned()).await {
                Ok(Ok(p)) => p,
                _ => {
                    world.recorder.lock().expect("recorder lock").record(
                        action.endpoint(),
                        due.elapsed(),
                        &Outcome::Timeout,
                    );
                    return;
                }
            };
            world.in_flight.fetch_add(1, Ordering::Relaxed);
            world.act(action, &mut rng, due).await;
            world.in_flight.fetch_sub(1, Ordering::Relaxed);
            drop(permit);
        });
    }
    // The last arrival is due just before the end: wait out the duration.
    tokio::select! {
        _ = tokio::time::sleep_until(start + schedule.due(schedule.total())) => {}
        _ = stop.wait_for(|v| *v) => {}
    }
}

async fn progress_loop(
    world: Arc<World>,
    start: Instant,
    duration: Duration,
    waiting: Arc<AtomicBool>,
    mut stop: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.wait_for(|v| *v) => break,
        }
        let (requests, errors) = {
            let r = world.recorder.lock().expect("recorder lock");
            (r.requests(), r.errors())
        };
        let (fresh_pending, fresh_p50_ms) = match &world.tracker {
            Some(t) => {
                let t = t.lock().expect("tracker lock");
                (Some(t.pending()), Some(t.p50_ms()))
            }
            None => (None, None),
        };
        progress::draw(&progress::Snapshot {
            elapsed: start.elapsed(),
            duration,
            requests,
            errors,
            in_flight: world.in_flight.load(Ordering::Relaxed),
            fresh_pending,
            fresh_p50_ms,
            waiting: waiting.load(Ordering::Relaxed),
        });
    }
    progress::clear();
}

/// Reads stores and active employees through the API, menu and customers from the database,
/// so the load uses the live data.
async fn bootstrap(
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
