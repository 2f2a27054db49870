//! The replicator's HTTP endpoints on `REPLICATOR_LISTEN`: `/health` (alive), `/ready`
//! (streaming, lag under the bound), `/status` (`brewlytics status --json` plus the live
//! state of this process), `/metrics` (Prometheus) and `/` (the status page, with its script
//! and stylesheet under `/assets/`). Every answer carries the security headers of
//! [`brewlytics_support::web`]: the page runs under a Content-Security-Policy with no inline
//! script or style. All but `/health` and `/ready` need a key (or a session from the login
//! form at `/login`) with `ops:read`: [`access`].

pub mod access;

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::{middleware, Json, Router};
use brewlytics_support::auth::Guard;
use serde::Serialize;
use serde_json::json;
use sqlx::postgres::PgPoolOptions;
use sqlx::PgPool;

use crate::daemon::status::{self, Status};
use crate::daemon::DaemonConfig;
use crate::error::ReplicatorError;
use crate::telemetry::{Live, Role, Telemetry};

const PAGE: &str = include_str!("http/status.html");
const PAGE_JS: &str = include_str!("http/status.js");
const PAGE_CSS: &str = include_str!("http/status.css");

#[derive(Clone)]
pub struct HttpState {
    telemetry: Arc<Telemetry>,
    oltp: PgPool,
    olap: PgPool,
    slot: String,
    ready_max_lag: Duration,
    guard: Guard,
}

impl HttpState {
    pub fn new(cfg: &DaemonConfig, telemetry: Arc<Telemetry>) -> Result<Self, ReplicatorError> {
        let lazy = |url: &brewlytics_support::DbUrl| -> Result<PgPool, ReplicatorError> {
            Ok(PgPoolOptions::new()
                .max_connections(1)
                .acquire_timeout(Duration::from_secs(3))
                .connect_lazy_with(url.connect_options()?.application_name("brewlytics-status")))
        };
        Ok(Self {
            telemetry,
            oltp: lazy(&cfg.replicator.oltp_url)?,
            olap: lazy(&cfg.replicator.olap_url)?,
            slot: cfg.replicator.slot.clone(),
            ready_max_lag: cfg.ready_max_lag,
            guard: cfg.guard.clone(),
        })
    }
}

pub fn router(state: HttpState) -> Router {
    let guard = state.guard.clone();
    Router::new()
        .route("/", get(page))
        .route("/assets/status.js", get(page_js))
        .route("/assets/status.css", get(page_css))
        .route("/health", get(health))
        .route("/ready", get(ready))
        .route("/status", get(status_doc))
        .route("/metrics", get(metrics))
        .layer(middleware::from_fn_with_state(
            guard.by_route(access::access),
            brewlytics_support::auth::route_gate,
        ))
        .merge(guard.login_routes())
        .layer(brewlytics_support::web::security_headers(
            brewlytics_support::web::PAGE_POLICY,
        ))
        .with_state(state)
}

async fn page() -> Html<&'static str> {
    Html(PAGE)
}

async fn page_js() -> Response {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        PAGE_JS,
    )
        .into_response()
}

async fn page_css() -> Response {
    (
        [(header::CONTENT_TYPE, "text/css; charset=utf-8")],
        PAGE_CSS,
    )
        .into_response()
}

async fn health(State(s): State<HttpState>) -> Json<serde_json::Value> {
    Json(json!({"status": "ok", "role": s.telemetry.role()}))
}

/// Why the replicator is not ready, if it is not: streaming and lag under the bound.
fn not_ready(role: Role, lag_seconds: Option<f64>, bound: Duration) -> Option<String> {
    if role != Role::Streaming {
        return Some(format!(
            "not streaming (role: {})",
            serde_json::to_value(role).ok()?.as_str()?
        ));
    }
    match lag_seconds {
        Some(l) if l > bound.as_secs_f64() => Some(format!(
            "lag {l:.3} s is over the {:.3} s bound",
            bound.as_secs_f64()
        )),
        _ => None,
    }
}

async fn ready(State(s): State<HttpState>) -> Response {
    let lag = s.telemetry.lag_seconds();
    match not_ready(s.telemetry.role(), lag, s.ready_max_lag) {
        None => Json(json!({"ready": true, "lag_seconds": lag})).into_response(),
        Some(reason) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"ready": false, "error": reason, "lag_seconds": lag})),
        )
            .into_response(),
    }
}

#[derive(Serialize)]
struct StatusDoc {
    #[serde(flatten)]
    status: Option<Status>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    replicator: Live,
}

async fn status_doc(State(s): State<HttpState>) -> Response {
    let read = async {
        let mut oltp = s.oltp.acquire().await?;
        let mut olap = s.olap.acquire().await?;
        status::read(&mut oltp, &mut olap, &s.slot).await
    };
    let outcome = match tokio::time::timeout(Duration::from_secs(5), read).await {
        Ok(Ok(st)) => Ok(st),
        Ok(Err(e)) => Err(format!("reading the status: {e}")),
        Err(_) => Err("reading the status timed out".to_owned()),
    };
    let replicator = s.telemetry.live();
    match outcome {
        Ok(mut st) => {
            // The CLI can only estimate lag in time from the checkpoint's commit time; the
            // running process measures it by heartbeat, so /status says that.
            if replicator.lag_seconds.is_some() {
                st.lag_seconds = replicator.lag_seconds;
            }
            Json(StatusDoc {
                status: Some(st),
                error: None,
                replicator,
            })
            .into_response()
        }
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(StatusDoc {
                status: None,
                error: Some(e),
                replicator,
            }),
        )
            .into_response(),
    }
}

async fn metrics(State(s): State<HttpState>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        s.guard.metrics().append_to(s.telemetry.encode()),
    )
        .into_response()
}

/// Serves [`loader_router`] on `endpoint` until `stop`.
pub async fn serve_loader(
    endpoint: brewlytics_support::serve::Endpoint,
    t: Arc<crate::load::LoaderTelemetry>,
    guard: Guard,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    brewlytics_support::serve::serve(endpoint, loader_router(t, guard), stop).await
}

/// The loader's endpoints (`brewlytics load`): `/health`, `/status` (its live state: stream,
/// consumer, pending messages, position) and `/metrics`; all but `/health` behind `guard`
/// ([`access::loader_access`]).
pub fn loader_router(t: Arc<crate::load::LoaderTelemetry>, guard: Guard) -> Router {
    let auth_metrics = guard.clone();
    Router::new()
        .route("/health", get(|| async { Json(json!({"status": "ok"})) }))
        .route(
            "/status",
            get(
                |State(t): State<Arc<crate::load::LoaderTelemetry>>| async move {
                    Json(json!({ "loader": t.metrics.live(), "events_loader": t.events.live() }))
                },
            ),
        )
        .route(
            "/metrics",
            get(
                |State(t): State<Arc<crate::load::LoaderTelemetry>>| async move {
                    (
                        [(
                            header::CONTENT_TYPE,
                            "application/openmetrics-text; version=1.0.0; charset=utf-8",
                        )],
                        auth_metrics.metrics().append_to(t.encode()),
                    )
                        .into_response()
                },
            ),
        )
        .layer(middleware::from_fn_with_state(
            guard.by_route(access::loader_access),
            brewlytics_support::auth::route_gate,
        ))
        .layer(brewlytics_support::web::security_headers(
            brewlytics_support::web::PAGE_POLICY,
        ))
        .with_state(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_has_no_inline_script_or_style() {
        assert!(!PAGE.contains("<script>") && !PAGE.contains("<style") && !PAGE.contains("style="));
        assert!(PAGE.contains(r#"<script src="/assets/status.js"></script>"#));
        assert!(PAGE.contains(r#"href="/assets/status.css""#));
        assert!(!PAGE_JS.contains("eval(") && !PAGE_JS.contains("style="));
    }

    #[test]
    fn readiness_needs_streaming_and_small_lag() {
        let bound = Duration::from_secs(5);
        assert_eq!(not_ready(Role::Streaming, Some(0.02), bound), None);
        assert_eq!(not_ready(Role::Streaming, None, bound), None);
        assert!(not_ready(Role::Streaming, Some(7.5), bound)
            .unwrap()
            .contains("7.500 s is over the 5.000 s bound"));
        assert!(not_ready(Role::Standby, Some(0.0), bound)
            .unwrap()
            .contains("standby"));
    }
}
