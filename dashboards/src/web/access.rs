//! What each of the dashboard's routes needs: the page, its assets and `/api/summary` a key or
//! session with `reports:read` (the figures name customers), `/metrics` `ops:read`, `/health`
//! nothing. The login form is served beside them, open.

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use brewlytics_support::auth::{Access, Guard, GuardConfig, Scope};

/// The guard's settings for the dashboard (a login page asking for `reports:read`).
pub fn guard_config() -> GuardConfig {
    GuardConfig::pages("dashboard", "Brewlytics dashboard", Scope::ReportsRead)
}

/// What `route` (a template the router matched) needs; a route not named here needs `admin`.
pub fn access(route: &str) -> Access {
    match route {
        "/health" => Access::Open,
        "/" | "/assets/app.css" | "/assets/app.js" => Access::Page(Scope::ReportsRead),
        "/api/summary" => Access::Json(Scope::ReportsRead),
        "/metrics" => Access::Json(Scope::OpsRead),
        _ => Access::Json(Scope::Admin),
    }
}

/// The middleware over the dashboard's routes.
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
    fn only_health_is_open() {
        assert_eq!(access("/health"), Access::Open);
        assert_eq!(access("/"), Access::Page(Scope::ReportsRead));
        assert_eq!(access("/api/summary"), Access::Json(Scope::ReportsRead));
        assert_eq!(access("/metrics"), Access::Json(Scope::OpsRead));
        assert_eq!(access("/other"), Access::Json(Scope::Admin));
    }
}
