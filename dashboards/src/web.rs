//! The built-in dashboard: one HTML page, a stylesheet and a script (all compiled into the
//! binary, nothing fetched from elsewhere) and a JSON endpoint the page polls.
//!
//! - `GET /` the page; `GET /assets/app.css`, `GET /assets/app.js`
//! - `GET /api/summary?from=YYYY-MM-DD&to=YYYY-MM-DD&store=ID` every question for the range
//!   (default: the last 30 days, UTC), headline figures and the store list
//! - `GET /health`; `GET /metrics` (refused authentications)
//! - `GET|POST /login`, `POST /logout`: the login form (a key with `reports:read`)
//!
//! Everything but `/health` and the login form needs a key or session: [`access`]. Every
//! answer carries the security headers of [`brewlytics_support::web`]: the page runs
//! under a Content-Security-Policy that allows only its own script, stylesheet and fetches
//! (no inline script or style), and no other site may frame it.

pub mod access;

use std::future::Future;
use std::net::SocketAddr;

use axum::extract::{Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{middleware, Json, Router};
use brewlytics_support::auth::Guard;
use brewlytics_support::serve::Endpoint;
use chrono::{Days, NaiveDate, Utc};
use serde::Deserialize;
use serde_json::{json, Map, Value};
use sqlx::PgPool;

use crate::question::{self, ParamType, ParamValue, Params};
use crate::report::{self, Cell, Table};

const INDEX_HTML: &str = include_str!("../web/index.html");
const APP_CSS: &str = include_str!("../web/app.css");
const APP_JS: &str = include_str!("../web/app.js");

/// The default range: this many days up to today.
const DEFAULT_DAYS: u64 = 30;
/// Open orders the page receives at most.
const OPEN_ORDERS_LIMIT: i64 = 500;
/// The question whose one row is the headline figures.
const HEADLINE: &str = "headline";

#[derive(Clone)]
struct AppState {
    pool: PgPool,
}

/// The dashboard's routes over an OLAP pool, behind `guard` (see [`access`]).
pub fn router(pool: PgPool, guard: Guard) -> Router {
    let metrics = {
        let guard = guard.clone();
        move || async move {
            (
                [(
                    header::CONTENT_TYPE,
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                )],
                guard.metrics().append_to(String::new()),
            )
        }
    };
    Router::new()
        .route("/", get(index))
        .route("/assets/app.css", get(css))
        .route("/assets/app.js", get(js))
        .route("/api/summary", get(summary))
        .route("/metrics", get(metrics))
        .route("/health", get(|| async { Json(json!({"status": "ok"})) }))
        .layer(middleware::from_fn_with_state(
            guard.by_route(access::access),
            brewlytics_support::auth::route_gate,
        ))
        .merge(guard.login_routes())
        .layer(brewlytics_support::web::security_headers(
            brewlytics_support::web::PAGE_POLICY,
        ))
        .with_state(AppState { pool })
}

/// Serves the dashboard on `endpoint` (a bound listener, with TLS or without) until
/// `shutdown` resolves.
pub async fn serve(
    endpoint: impl Into<Endpoint>,
    pool: PgPool,
    guard: Guard,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let endpoint = endpoint.into();
    let addr: Option<SocketAddr> = endpoint.local_addr().ok();
    tracing::info!(?addr, scheme = endpoint.scheme(), "dashboard listening");
    guard.announce().await;
    brewlytics_support::serve::serve(endpoint, router(pool, guard), shutdown).await
}

async fn index() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        INDEX_HTML,
    )
        .into_response()
}

async fn css() -> Response {
    ([(header::CONTENT_TYPE, "text/css; charset=utf-8")], APP_CSS).into_response()
}

async fn js() -> Response {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        APP_JS,
    )
        .into_response()
}

#[derive(Debug, Deserialize)]
struct SummaryQuery {
    from: Option<String>,
    to: Option<String>,
    store: Option<String>,
}

struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(json!({"error": self.1}))).into_response()
    }
}

fn bad_request(message: String) -> ApiError {
    ApiError(StatusCode::BAD_REQUEST, message)
}

fn parse_date(name: &str, text: Option<&str>) -> Result<Option<NaiveDate>, ApiError> {
    match text.map(str::trim).filter(|t| !t.is_empty()) {
        None => Ok(None),
        Some(t) => match question::parse_value(ParamType::Date, t) {
            Some(ParamValue::Date(d)) => Ok(Some(d)),
            _ => Err(bad_request(format!(
                "{name} must be a date like 2024-05-31 (got {t:?})"
            ))),
        },
    }
}

async fn summary(
    State(state): State<AppState>,
    Query(q): Query<SummaryQuery>,
) -> Result<Json<Value>, ApiError> {
    let today = Utc::now().date_naive();
    let to = parse_date("to", q.to.as_deref())?.unwrap_or(today);
    let from = parse_date("from", q.from.as_deref())?.unwrap_or_else(|| {
        to.checked_sub_days(Days::new(DEFAULT_DAYS - 1))
            .unwrap_or(to)
    });
    if from > to {
        return Err(bad_request(format!("from ({from}) is after to ({to})")));
    }
    let store = match q.store.as_deref().map(str::trim).filter(|s| !s.is_empty()) {
        None => None,
        Some(s) => Some(
            s.parse::<i64>()
                .map_err(|_| bad_request(format!("store must be a store id (got {s:?})")))?,
        ),
    };
    let summary = build_summary(&state.pool, today, from, to, store)
        .await
        .map_err(|e| {
            tracing::warn!(error = %e, "dashboard summary failed");
            ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
        })?;
    Ok(Json(summary))
}

/// Everything the page shows for one range and store.
pub async fn build_summary(
    pool: &PgPool,
    today: NaiveDate,
    from: NaiveDate,
    to: NaiveDate,
    store: Option<i64>,
) -> Result<Value, report::ReportError> {
    let mut jobs = tokio::task::JoinSet::new();
    for q in question::all() {
        let mut params = Params::new();
        params.insert("from".into(), ParamValue::Date(from));
        params.insert("to".into(), ParamValue::Date(to));
        if let Some(s) = store {
            params.insert("store".into(), ParamValue::Integer(s));
        }
        if q.name == "open-orders" {
            params.insert("limit".into(), ParamValue::Integer(OPEN_ORDERS_LIMIT));
        }
        params.retain(|name, _| q.param(name).is_some());
        let pool = pool.clone();
        jobs.spawn(async move {
            let table = report::run(&pool, &q, &params).await;
            (q, table)
        });
    }
    let mut questions = Map::new();
    let mut headline = None;
    while let Some(done) = jobs.join_next().await {
        let (q, table) = done.expect("question task panicked");
        let table = table?;
        if q.name == HEADLINE {
            headline = Some(table.clone());
        }
        questions.insert(
            q.name.clone(),
            json!({
                "title": q.title,
                "description": q.description,
                "columns": table.columns,
                "rows": table.rows.iter()
                    .map(|r| r.iter().map(Cell::json).collect::<Vec<_>>())
                    .collect::<Vec<_>>(),
            }),
        );
    }
    let kpis = headline.as_ref().map(kpis).unwrap_or_default();

    let stores: Vec<Value> = sqlx::query_as::<_, (i64, String)>(
        "select store_id, name from dim_store where not is_deleted order by store_id",
    )
    .fetch_all(pool)
    .await
    .map_err(|source| report::ReportError::Query {
        question: "stores".into(),
        source,
    })?
    .into_iter()
    .map(|(id, name)| json!({"id": id, "name": name}))
    .collect();

    Ok(json!({
        "generated_at": Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string(),
        "today": today.to_string(),
        "from": from.to_string(),
        "to": to.to_string(),
        "store": store,
        "stores": stores,
        "kpis": kpis,
        "questions": questions,
    }))
}

/// The headline figures (the one row of the `headline` question) as the page shows them:
/// money with two decimals, counts as numbers.
fn kpis(table: &Table) -> Value {
    let mut out = Map::new();
    if let Some(row) = table.rows.first() {
        for (name, cell) in table.columns.iter().zip(row) {
            let value = match cell {
                Cell::Decimal(d) => json!(format!("{d:.2}")),
                other => other.json(),
            };
            out.insert(name.clone(), value);
        }
    }
    Value::Object(out)
}

#[cfg(test)]
mod tests {
    #[test]
    fn assets_are_self_contained() {
        // No CDN: every script and stylesheet the page loads is served by the binary.
        for text in [super::INDEX_HTML, super::APP_JS, super::APP_CSS] {
            let text = text.replace("http://www.w3.org/2000/svg", "");
            assert!(!text.contains("http://") && !text.contains("https://"));
        }
        assert!(super::INDEX_HTML.contains("/assets/app.js"));
        // Nothing inline: the Content-Security-Policy allows only served files.
        assert!(!super::INDEX_HTML.contains("<script>") && !super::INDEX_HTML.contains("<style"));
        assert!(!super::INDEX_HTML.contains("style=") && !super::APP_JS.contains("eval("));
    }
}
