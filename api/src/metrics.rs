//! Request metrics and the per-request tracing span, from one axum middleware.
//!
//! `brewlytics_api_requests_total{route,method,status}` and
//! `brewlytics_api_request_duration_seconds{route,method}`. `route` is the matched path
//! template (`/orders/{id}`), or `unmatched` for a request no route took, so the label sets
//! stay bounded whatever URIs clients send.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::Response;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Registry, Unit};
use tracing::Instrument;

/// The route label of a request that matched no route.
pub const UNMATCHED_ROUTE: &str = "unmatched";

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    route: String,
    method: &'static str,
    status: u16,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    route: String,
    method: &'static str,
}

type HistogramFamily = Family<RouteLabels, Histogram, fn() -> Histogram>;

/// The API's metrics registry.
#[derive(Debug)]
pub struct ApiMetrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    durations: HistogramFamily,
}

impl Default for ApiMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl ApiMetrics {
    pub fn new() -> Self {
        let requests = Family::<RequestLabels, Counter>::default();
        let durations: HistogramFamily = Family::new_with_constructor(|| {
            // 1 ms … ~16 s
            Histogram::new(exponential_buckets(0.001, 2.0, 15))
        });
        let mut registry = Registry::default();
        registry.register(
            "brewlytics_api_requests",
            "HTTP requests answered, by route template, method and status",
            requests.clone(),
        );
        registry.register_with_unit(
            "brewlytics_api_request_duration",
            "HTTP request latency, by route template and method",
            Unit::Seconds,
            durations.clone(),
        );
        Self {
            registry,
            requests,
            durations,
        }
    }

    /// Counts one answered request.
    pub fn observe(&self, route: &str, method: &Method, status: u16, seconds: f64) {
        let method = method_label(method);
        self.requests
            .get_or_create(&RequestLabels {
                route: route.to_owned(),
                method,
                status,
            })
            .inc();
        self.durations
            .get_or_create(&RouteLabels {
                route: route.to_owned(),
                method,
            })
            .observe(seconds);
    }

    /// The registry in Prometheus/OpenMetrics text.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            tracing::error!(error = %e, "encoding metrics");
        }
        out
    }
}

fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PATCH => "PATCH",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "OTHER",
    }
}

/// The middleware: one `request` span per request (method and route template only — no
/// URI, body or headers), a latency observation and a count by status.
pub async fn track(State(metrics): State<Arc<ApiMetrics>>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| UNMATCHED_ROUTE.to_owned());
    let method = req.method().clone();
    let span = tracing::info_span!(
        "request",
        method = method_label(&method),
        route = %route,
        status = tracing::field::Empty,
    );
    let started = Instant::now();
    let response = next.run(req).instrument(span.clone()).await;
    let elapsed = started.elapsed();
    let status = response.status().as_u16();
    span.record("status", status);
    metrics.observe(&route, &method, status, elapsed.as_secs_f64());
    tracing::debug!(
        parent: &span,
        status,
        elapsed_ms = elapsed.as_secs_f64() * 1000.0,
        "request answered"
    );
    response
}
