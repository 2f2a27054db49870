//! Shared by the API's integration tests: a migrated database of its own per test (on the
//! test binary's embedded cluster), the router driven with `oneshot` — every request carrying
//! the test's `admin` key unless it brings its own `authorization` ([`TestApp::key`] makes
//! keys of other scopes) —, row counts of all eight OLTP tables and a small fixture shop.
#![allow(dead_code)]

pub mod log;

use std::collections::BTreeMap;

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use axum::Router;
use brewlytics_api::{router, ApiState, Service};
use brewlytics_support::auth::{GuardConfig, LimitConfig, Scope};
use brewlytics_support::testing::{TestDb, TestKeys};
use serde_json::Value;
use sqlx::postgres::PgPoolOptions;
use sqlx::PgPool;
use tower::ServiceExt;

pub const TABLES: [&str; 9] = [
    "stores",
    "employees",
    "customers",
    "products",
    "orders",
    "order_items",
    "payments",
    "inventory_movements",
    "click_events",
];

pub struct TestApp {
    pub pool: PgPool,
    pub state: ApiState,
    pub app: Router,
    /// An `admin` key, sent with every request that brings no `authorization` of its own.
    pub admin_key: String,
    /// The keys of the app's database (`auth.api_keys`).
    pub keys: TestKeys,
    // dropped last: the database outlives the pool's use
    _db: TestDb,
}

/// An answer: status, content type and the body as text and (if it parses) JSON.
#[derive(Debug)]
pub struct Resp {
    pub status: StatusCode,
    pub headers: axum::http::HeaderMap,
    pub content_type: String,
    pub text: String,
    pub json: Value,
}

impl Resp {
    /// The `error` message; panics (failing the test) if the body is not `{"error": "..."}`.
    pub fn error(&self) -> &str {
        self.json["error"]
            .as_str()
            .unwrap_or_else(|| panic!("not an error body: {} {}", self.status, self.text))
    }
}

impl TestApp {
    pub async fn new(name: &str) -> Self {
        Self::with_services(name, &Service::ALL).await
    }

    pub async fn with_services(name: &str, services: &[Service]) -> Self {
        Self::build(name, services, 10).await
    }

    /// An app whose pool has `connections` connections (1 makes statement caching predictable).
    pub async fn with_pool_size(name: &str, connections: u32) -> Self {
        Self::build(name, &Service::ALL, connections).await
    }

    async fn build(name: &str, services: &[Service], connections: u32) -> Self {
        // Tests send many refused requests from one (unknown) address on purpose: the
        // failure limit is tested on its own (TestApp::with_limit).
        Self::build_with(name, services, connections, TestKeys::GENEROUS).await
    }

    /// An app whose failure limit is `limit`.
    pub async fn with_limit(name: &str, limit: LimitConfig) -> Self {
        Self::build_with(name, &Service::ALL, 10, limit).await
    }

    async fn build_with(
        name: &str,
        services: &[Service],
        connections: u32,
        limit: LimitConfig,
    ) -> Self {
        let db = TestDb::new(name);
        let options = db.url().connect_options().expect("test database url");
        let pool = PgPoolOptions::new()
            .max_connections(connections)
            .connect_with(options)
            .await
            .expect("connecting to the test database");
        brewlytics_support::migrate::oltp(&pool)
            .await
            .expect("migrating the test database");
        let keys = TestKeys::on(pool.clone());
        let guard = keys.guard(GuardConfig {
            limit,
            ..GuardConfig::json("api")
        });
        let state = ApiState::with_guard(pool.clone(), guard);
        let app = router(state.clone(), services);
        let admin_key = keys.key("test-admin", &[Scope::Admin]).await;
        Self {
            pool,
            state,
            app,
            admin_key,
            keys,
            _db: db,
        }
    }

    /// A new key with `scopes`, usable at once.
    pub async fn key(&self, name: &str, scopes: &[Scope]) -> String {
        self.keys.key(name, scopes).await
    }

    /// Revokes a key by name, effective at once.
    pub async fn revoke(&self, name: &str) {
        self.keys.revoke(name).await
    }

    /// A handle sending requests as this app's tests do (with the admin key), for tasks.
    pub fn sender(&self) -> Sender {
        Sender {
            app: self.app.clone(),
            key: self.admin_key.clone(),
        }
    }

    /// Sends a JSON request (or none when `body` is `None`).
    pub async fn call(&self, method: &str, uri: &str, body: Option<Value>) -> Resp {
        match body {
            Some(v) => {
                self.raw(
                    method,
                    uri,
                    Some("application/json"),
                    v.to_string().into_bytes(),
                )
                .await
            }
            None => self.raw(method, uri, None, Vec::new()).await,
        }
    }

    pub async fn raw(
        &self,
        method: &str,
        uri: &str,
        content_type: Option<&str>,
        body: Vec<u8>,
    ) -> Resp {
        self.sender()
            .send(method, uri, content_type, body, &[])
            .await
    }

    /// A request without a body and with extra headers (its own `authorization`, if given,
    /// instead of the admin key).
    pub async fn call_with(&self, method: &str, uri: &str, headers: &[(&str, &str)]) -> Resp {
        self.sender()
            .send(method, uri, None, Vec::new(), headers)
            .await
    }

    /// A JSON request (or none) with exactly `headers`: no key unless they carry one.
    pub async fn call_bare(
        &self,
        method: &str,
        uri: &str,
        body: Option<&Value>,
        headers: &[(&str, &str)],
    ) -> Resp {
        let (ct, bytes) = match body {
            Some(v) => (Some("application/json"), v.to_string().into_bytes()),
            None => (None, Vec::new()),
        };
        send(&self.app, method, uri, ct, bytes, headers).await
    }

    /// A connection of its own to the test database (not from the API's pool).
    pub async fn admin(&self) -> sqlx::PgConnection {
        use sqlx::Connection;
        let options = self._db.url().connect_options().expect("test database url");
        sqlx::PgConnection::connect_with(&options)
            .await
            .expect("connecting to the test database")
    }

    /// Rows in each of the OLTP tables the API writes.
    pub async fn counts(&self) -> BTreeMap<&'static str, i64> {
        let mut out = BTreeMap::new();
        for table in TABLES {
            let n: i64 = sqlx::query_scalar(&format!("select count(*) from {table}"))
                .fetch_one(&self.pool)
                .await
                .expect("counting rows");
            out.insert(table, n);
        }
        out
    }

    /// Two stores, two active employees and an inactive one, a customer, three products at
    /// 2.50, 3.80 and 2.80 and an unavailable one.
    pub async fn fixtures(&self) -> Fixtures {
        let ids = |sql: &'static str| {
            let pool = self.pool.clone();
            async move {
                sqlx::query_scalar::<_, i64>(sql)
                    .fetch_all(&pool)
                    .await
                    .expect("inserting fixtures")
            }
        };
        let stores = ids("insert into stores (name, city) values ('Main', 'Lisbon'), ('Pier', 'Porto') returning id").await;
        let employees = ids("insert into employees (name, store_id, active) select e.name, s.id, e.active from (values ('Bo', 'Main', true, 1), ('Cy', 'Pier', true, 2), ('Di', 'Main', false, 3)) as e(name, store, active, n) join stores s on s.name = e.store order by e.n returning id").await;
        let customers = ids(
            "insert into customers (name, email) values ('Ada', 'ada@example.com') returning id",
        )
        .await;
        let products = ids(
            "insert into products (name, category, price, is_available) values
                ('Espresso', 'coffee', 2.50, true), ('Flat white', 'coffee', 3.80, true),
                ('Croissant', 'pastries', 2.80, true), ('Pumpkin latte', 'coffee', 4.80, false)
                returning id",
        )
        .await;
        Fixtures {
            store: stores[0],
            store2: stores[1],
            employee: employees[0],
            employee2: employees[1],
            inactive_employee: employees[2],
            customer: customers[0],
            espresso: products[0],
            flat_white: products[1],
            croissant: products[2],
            unavailable: products[3],
        }
    }
}

/// Sends requests to an app with its admin key (see [`TestApp::sender`]).
#[derive(Clone)]
pub struct Sender {
    app: Router,
    key: String,
}

impl Sender {
    pub async fn send(
        &self,
        method: &str,
        uri: &str,
        content_type: Option<&str>,
        body: Vec<u8>,
        headers: &[(&str, &str)],
    ) -> Resp {
        let bearer = format!("Bearer {}", self.key);
        let mut all: Vec<(&str, &str)> = headers.to_vec();
        if !headers
            .iter()
            .any(|(k, _)| k.eq_ignore_ascii_case("authorization"))
        {
            all.push(("authorization", &bearer));
        }
        send(&self.app, method, uri, content_type, body, &all).await
    }
}

/// A request with exactly these headers.
pub async fn send(
    app: &Router,
    method: &str,
    uri: &str,
    content_type: Option<&str>,
    body: Vec<u8>,
    headers: &[(&str, &str)],
) -> Resp {
    let mut req = Request::builder().method(method).uri(uri);
    if let Some(ct) = content_type {
        req = req.header(header::CONTENT_TYPE, ct);
    }
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    let req = req.body(Body::from(body)).expect("building a request");
    let resp = app
        .clone()
        .oneshot(req)
        .await
        .expect("router is infallible");
    let status = resp.status();
    let response_headers = resp.headers().clone();
    let content_type = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX)
        .await
        .expect("reading the response body");
    let text = String::from_utf8_lossy(&bytes).into_owned();
    let json = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    Resp {
        status,
        headers: response_headers,
        content_type,
        text,
        json,
    }
}

#[derive(Debug, Clone, Copy)]
pub struct Fixtures {
    pub store: i64,
    pub store2: i64,
    pub employee: i64,
    pub employee2: i64,
    pub inactive_employee: i64,
    pub customer: i64,
    pub espresso: i64,
    pub flat_white: i64,
    pub croissant: i64,
    pub unavailable: i64,
}

impl Fixtures {
    /// A valid order body: two flat whites (7.60).
    pub fn order(&self) -> Value {
        serde_json::json!({
            "customer_id": self.customer,
            "employee_id": self.employee,
            "store_id": self.store,
            "payment_method": "card",
            "items": [{"product_id": self.flat_white, "quantity": 2}],
        })
    }
}
