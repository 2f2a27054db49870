//! What each of the replicator's endpoints needs: `/health` and `/ready` are open (an
//! orchestrator's probes); the status page, `/status` and `/metrics` need a key or session
//! with `ops:read`. The login form is served beside them, open.

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use brewlytics_support::auth::{Access, Guard, GuardConfig, Scope};

/// The guard's settings for these endpoints (a login page asking for `ops:read`).
pub fn guard_config() -> GuardConfig {
    GuardConfig::pages("replicator", "Brewlytics replicator", Scope::OpsRead)
}

/// What `route` (a template the router matched) needs; a route not named here needs `admin`.
pub fn access(route: &str) -> Access {
    match route {
        "/health" | "/ready" => Access::Open,
        "/" | "/assets/status.js" | "/assets/status.css" => Access::Page(Scope::OpsRead),
        "/status" | "/metrics" => Access::Json(Scope::OpsRead),
        _ => Access::Json(Scope::Admin),
    }
}

/// The middleware over the endpoints' routes.
pub(crate) async fn gate(State(guard): State<Guard>, req: Request, next: Next) -> Response {
    let access = req
        .extensions()
        .get::<MatchedPath>()
        .map_or(Access::Open, |route| access(route.as_str()));
    guard.gate(access, req, next).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probes_are_open_and_the_rest_needs_ops_read() {
        assert_eq!(access("/health"), Access::Open);
        assert_eq!(access("/ready"), Access::Open);
        assert_eq!(access("/"), Access::Page(Scope::OpsRead));
        assert_eq!(access("/status"), Access::Json(Scope::OpsRead));
        assert_eq!(access("/metrics"), Access::Json(Scope::OpsRead));
        assert_eq!(access("/new-thing"), Access::Json(Scope::Admin));
    }
}
