//! The Brewlytics REST API over the transactional database (`coffee_oltp`), and the sample-data
//! seed that writes through the same order code path.
//!
//! ```no_run
//! # async fn run(pool: sqlx::PgPool) -> anyhow::Result<()> {
//! use brewlytics_api::{serve, ApiState, Service};
//! // Keys are checked against auth.api_keys of the same database.
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8000").await?;
//! serve(listener, ApiState::new(pool), &Service::ALL, async {
//!     let _ = tokio::signal::ctrl_c().await;
//! })
//! .await
//! # }
//! ```
//!
//! Layout: `domain/` holds the pure rules (validation, pricing, the status machine), `data/`
//! the SQL (one transaction per write, set-based), `routes/` one router per [`Service`],
//! `auth` the scope each route needs (checked before any handler runs).

pub mod auth;
pub mod data;
pub mod domain;
mod error;
pub mod events;
pub mod metrics;
pub mod openapi;
mod routes;
pub mod seed;

use std::fmt;
use std::future::Future;
use std::str::FromStr;
use std::sync::Arc;

use anyhow::Context;
use axum::extract::DefaultBodyLimit;
use axum::routing::get;
use axum::{middleware, Extension, Router};
use brewlytics_support::auth::{Guard, GuardConfig, KeyStore};
use brewlytics_support::serve::Endpoint;
use sqlx::PgPool;

pub use error::{ApiError, ApiJson, ApiPath, ErrorBody};
pub use metrics::ApiMetrics;

/// Request bodies larger than this are refused with 413.
pub const BODY_LIMIT_BYTES: usize = 64 * 1024;

/// A group of routes a deployment may serve on its own (`brewlytics api --services orders`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Service {
    /// `POST /orders`, `/orders/new`, `GET|PATCH|DELETE /orders/{id}`
    Orders,
    /// `POST /products`, `/products/new`, `PATCH /products/{id}`
    Products,
    /// `POST /customers`, `/customers/new`
    Customers,
    /// `POST /employees`, `GET /employees/active`
    Employees,
    /// `GET /stores`
    Stores,
    /// `POST /inventory/restock`
    Inventory,
    /// `POST /events` (clickstream: impressions and clicks)
    Events,
}

impl Service {
    pub const ALL: [Service; 7] = [
        Service::Orders,
        Service::Products,
        Service::Customers,
        Service::Employees,
        Service::Stores,
        Service::Inventory,
        Service::Events,
    ];

    /// The lowercase name, also the first segment of its paths.
    pub fn name(self) -> &'static str {
        match self {
            Service::Orders => "orders",
            Service::Products => "products",
            Service::Customers => "customers",
            Service::Employees => "employees",
            Service::Stores => "stores",
            Service::Inventory => "inventory",
            Service::Events => "events",
        }
    }
}

impl fmt::Display for Service {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A service name that is not one of [`Service::ALL`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown service {0:?}; expected one of orders, products, customers, employees, stores, inventory, events"
)]
pub struct UnknownService(pub String);

impl FromStr for Service {
    type Err = UnknownService;

    /// Parses the lowercase name (surrounding spaces and case are forgiven).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let wanted = s.trim().to_ascii_lowercase();
        Service::ALL
            .into_iter()
            .find(|service| service.name() == wanted)
            .ok_or_else(|| UnknownService(s.to_owned()))
    }
}

/// What every handler shares: the OLTP pool, the metrics registry, the credentials check
/// and where events go.
#[derive(Clone)]
pub struct ApiState {
    pub pool: PgPool,
    pub metrics: Arc<ApiMetrics>,
    pub guard: Guard,
    pub events: events::EventsConfig,
}

impl ApiState {
    /// A state with a fresh metrics registry, checking keys against `auth.api_keys` of the
    /// pool's database with the default settings: nothing is open but `/health` and
    /// `/openapi.json`.
    pub fn new(pool: PgPool) -> Self {
        let guard = Guard::new(KeyStore::new(pool.clone()), GuardConfig::json("api"));
        Self::with_guard(pool, guard)
    }

    /// A state checking credentials with `guard` (another key store, failure limit, or
    /// [`Guard::insecure`]).
    pub fn with_guard(pool: PgPool, guard: Guard) -> Self {
        Self {
            pool,
            metrics: Arc::new(ApiMetrics::new()),
            guard,
            events: events::EventsConfig::default(),
        }
    }

    /// The same, with events going where `events` says.
    pub fn with_events(mut self, events: events::EventsConfig) -> Self {
        self.events = events;
        self
    }
}

/// The application: `/health`, `/metrics` and `/openapi.json` always, plus the routes of each
/// selected service. Every route but `/health` and `/openapi.json` needs a key with its scope
/// ([`auth::access`]): without one, 401 or 403 before the handler runs. Unknown paths
/// (including those of unselected services) get a JSON 404, bodies over [`BODY_LIMIT_BYTES`] a
/// JSON 413; every request is counted, timed, logged with its request id, and answered with
/// the security headers of [`brewlytics_support::web`].
pub fn router(state: ApiState, services: &[Service]) -> Router {
    let mut selected = services.to_vec();
    selected.sort();
    selected.dedup();

    let openapi = openapi::OpenApiJson::render(&selected);
    let mut app = Router::new()
        .route("/health", get(routes::health::health))
        .route("/metrics", get(routes::health::metrics))
        .route(
            "/openapi.json",
            get(openapi::openapi_json).layer(Extension(openapi)),
        );
    for service in selected {
        app = app.merge(routes::service_router(service));
    }
    app.fallback(routes::not_found)
        .method_not_allowed_fallback(routes::method_not_allowed)
        .layer(DefaultBodyLimit::max(BODY_LIMIT_BYTES))
        .layer(middleware::from_fn_with_state(
            state.guard.by_route(auth::access),
            brewlytics_support::auth::route_gate,
        ))
        .layer(middleware::from_fn_with_state(
            state.metrics.clone(),
            metrics::track,
        ))
        .layer(brewlytics_support::web::security_headers(
            brewlytics_support::web::API_POLICY,
        ))
        .with_state(state)
}

/// Serves [`router`] on `endpoint` (a bound listener, with TLS or without) until `shutdown`
/// completes, then lets in-flight requests finish (graceful shutdown) and writes the keys'
/// last-used times.
pub async fn serve(
    endpoint: impl Into<Endpoint>,
    state: ApiState,
    services: &[Service],
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let endpoint = endpoint.into();
    let addr = endpoint
        .local_addr()
        .context("reading the API listen address")?;
    let names: Vec<&str> = services.iter().map(|s| s.name()).collect();
    tracing::info!(%addr, scheme = endpoint.scheme(), services = %names.join(","), "api listening");
    state.guard.announce().await;
    let guard = state.guard.clone();
    brewlytics_support::serve::serve(endpoint, router(state, services), shutdown)
        .await
        .context("serving the API")?;
    if let Some(store) = guard.store() {
        if let Err(e) = store.flush_last_used().await {
            tracing::warn!(error = %e, "writing the API keys' last use");
        }
    }
    tracing::info!("api stopped");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn services_parse_their_lowercase_names() {
        for s in Service::ALL {
            assert_eq!(s.name().parse::<Service>().unwrap(), s);
            assert_eq!(s.to_string(), s.name());
        }
        assert_eq!(" Orders ".parse::<Service>().unwrap(), Service::Orders);
        let err = "payments".parse::<Service>().unwrap_err().to_string();
        assert!(
            err.contains("\"payments\"") && err.contains("inventory"),
            "{err}"
        );
    }

    #[test]
    fn openapi_document_follows_the_selected_services() {
        let all = openapi::document(&Service::ALL);
        assert!(all.paths.paths.contains_key("/orders/{id}"));
        let only_orders = openapi::document(&[Service::Orders]);
        let paths: Vec<&String> = only_orders.paths.paths.keys().collect();
        assert!(paths.iter().any(|p| p.as_str() == "/orders"));
        assert!(paths.iter().any(|p| p.as_str() == "/health"));
        assert!(!paths.iter().any(|p| p.starts_with("/products")));
    }
}
