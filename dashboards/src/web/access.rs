//! What each of the dashboard's routes needs: the page, its assets and `/api/summary` a key or
//! session with `reports:read` (the figures name customers), `/metrics` `ops:read`, `/health`
//! nothing. The login form is served beside them, open.

use axum::http::Method;
use brewlytics_support::auth::{Access, GuardConfig, Scope};

/// The guard's settings for the dashboard (a login page asking for `reports:read`).
pub fn guard_config() -> GuardConfig {
    GuardConfig::pages("dashboard", "Brewlytics dashboard", Scope::ReportsRead)
}

/// What `route` (a template the router matched) needs; a route not named here needs `admin`.
/// The method does not matter here: every route answers GET only.
pub fn access(_method: &Method, route: &str) -> Access {
    match route {
        "/health" => Access::Open,
        "/" | "/assets/app.css" | "/assets/app.js" => Access::Page(Scope::ReportsRead),
        "/api/summary" => Access::Json(Scope::ReportsRead),
        "/metrics" => Access::Json(Scope::OpsRead),
        _ => Access::Json(Scope::Admin),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_health_is_open() {
        assert_eq!(access(&Method::GET, "/health"), Access::Open);
        assert_eq!(access(&Method::GET, "/"), Access::Page(Scope::ReportsRead));
        assert_eq!(
            access(&Method::GET, "/api/summary"),
            Access::Json(Scope::ReportsRead)
        );
        assert_eq!(
            access(&Method::GET, "/metrics"),
            Access::Json(Scope::OpsRead)
        );
        assert_eq!(access(&Method::GET, "/other"), Access::Json(Scope::Admin));
    }
}
