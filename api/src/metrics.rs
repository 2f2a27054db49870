//! Request metrics, request ids, the per-request tracing span and the access log, from one
//! axum middleware.
//!
//! `brewlytics_api_requests_total{route,method,status}` and
//! `brewlytics_api_request_duration_seconds{route,method}`. `route` is the matched path
//! template (`/orders/{id}`), or `unmatched` for a request no route took, so the label sets
//! stay bounded whatever URIs clients send.
//!
//! Every request has an id: the client's `x-request-id` when it is 1 to 128 visible ASCII
//! characters, else a fresh UUID. It is returned in the response's `x-request-id`, is a field
//! of the request's span (so every log line of the request carries it) and of the access log
//! line — one line per request at info level, target `brewlytics_api::access`, with method,
//! route template, status, duration and id (never the URI, body or other headers).

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderName, HeaderValue, Method};
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

/// The request id header, read from requests and set on every response.
pub static REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The longest client-chosen request id kept.
pub const MAX_REQUEST_ID: usize = 128;

/// A request's id, also in the request's extensions for handlers that want it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestId(pub HeaderValue);

/// The client's id when it is 1 to [`MAX_REQUEST_ID`] visible ASCII characters, else a new
/// UUID (v7, so ids sort by time).
pub fn request_id(given: Option<&HeaderValue>) -> RequestId {
    let usable = given.filter(|v| {
        let b = v.as_bytes();
        !b.is_empty() && b.len() <= MAX_REQUEST_ID && b.iter().all(|c| c.is_ascii_graphic())
    });
    RequestId(match usable {
        Some(v) => v.clone(),
        None => HeaderValue::from_str(&uuid::Uuid::now_v7().to_string())
            .expect("a UUID is a valid header value"),
    })
}

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

/// The middleware: one `request` span per request (method, route template and request id —
/// no URI, body or other headers), the request id on the response, a latency observation, a
/// count by status and the access log line.
pub async fn track(
    State(metrics): State<Arc<ApiMetrics>>,
    mut req: Request,
    next: Next,
) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| UNMATCHED_ROUTE.to_owned());
    let method = req.method().clone();
    let id = request_id(req.headers().get(&REQUEST_ID));
    let id_text = id.0.to_str().unwrap_or_default().to_owned();
    req.extensions_mut().insert(id.clone());
    let span = tracing::info_span!(
        "request",
        method = method_label(&method),
        route = %route,
        request_id = %id_text,
        status = tracing::field::Empty,
    );
    let started = Instant::now();
    let mut response = next.run(req).instrument(span.clone()).await;
    let elapsed = started.elapsed();
    let status = response.status().as_u16();
    span.record("status", status);
    response.headers_mut().insert(REQUEST_ID.clone(), id.0);
    metrics.observe(&route, &method, status, elapsed.as_secs_f64());
    // Outside the span, so the line carries its fields once and stands alone.
    tracing::info!(
        target: "brewlytics_api::access",
        parent: None,
        method = method_label(&method),
        route = %route,
        status,
        elapsed_ms = (elapsed.as_secs_f64() * 1e4).round() / 10.0,
        request_id = %id_text,
        "request answered"
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_are_kept_when_sane_and_made_otherwise() {
        let keep = HeaderValue::from_static("req-42.a/b:c");
        assert_eq!(request_id(Some(&keep)).0, keep);
        let long = HeaderValue::from_str(&"x".repeat(MAX_REQUEST_ID + 1)).unwrap();
        for bad in [
            HeaderValue::from_static(""),
            HeaderValue::from_static("two words"),
            long,
        ] {
            let made = request_id(Some(&bad)).0;
            assert_ne!(made, bad);
            assert!(uuid::Uuid::parse_str(made.to_str().unwrap()).is_ok());
        }
        let a = request_id(None).0;
        assert_ne!(a, request_id(None).0);
    }
}
