//! What each of the replicator's endpoints needs: `/health` and `/ready` are open (an
//! orchestrator's probes); the status page, `/status` and `/metrics` need a key or session
//! with `ops:read`. The login form is served beside them, open.

use axum::http::Method;
use brewlytics_support::auth::{Access, GuardConfig, Scope};

/// The guard's settings for these endpoints (a login page asking for `ops:read`).
pub fn guard_config() -> GuardConfig {
    GuardConfig::pages("replicator", "Brewlytics replicator", Scope::OpsRead)
}

/// What `route` (a template the router matched) needs; a route not named here needs `admin`.
/// The method does not matter here: every route answers GET only.
pub fn access(_method: &Method, route: &str) -> Access {
    match route {
        "/health" | "/ready" => Access::Open,
        "/" | "/assets/status.js" | "/assets/status.css" => Access::Page(Scope::OpsRead),
        "/status" | "/metrics" => Access::Json(Scope::OpsRead),
        _ => Access::Json(Scope::Admin),
    }
}

/// What the loader's endpoints (`brewlytics load`) need: `/health` open, `/status` and
/// `/metrics` `ops:read`.
pub fn loader_access(_method: &Method, route: &str) -> Access {
    match route {
        "/health" => Access::Open,
        "/status" | "/metrics" => Access::Json(Scope::OpsRead),
        _ => Access::Json(Scope::Admin),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probes_are_open_and_the_rest_needs_ops_read() {
        assert_eq!(access(&Method::GET, "/health"), Access::Open);
        assert_eq!(access(&Method::GET, "/ready"), Access::Open);
        assert_eq!(access(&Method::GET, "/"), Access::Page(Scope::OpsRead));
        assert_eq!(
            access(&Method::GET, "/status"),
            Access::Json(Scope::OpsRead)
        );
        assert_eq!(
            access(&Method::GET, "/metrics"),
            Access::Json(Scope::OpsRead)
        );
        assert_eq!(
            access(&Method::GET, "/new-thing"),
            Access::Json(Scope::Admin)
        );
        let get = Method::GET;
        assert_eq!(loader_access(&get, "/health"), Access::Open);
        assert_eq!(loader_access(&get, "/status"), Access::Json(Scope::OpsRead));
        assert_eq!(
            loader_access(&get, "/metrics"),
            Access::Json(Scope::OpsRead)
        );
    }
}
