//! HTTP routers, one per domain, each mounted only when its [`Service`] is selected.

pub(crate) mod customers;
pub(crate) mod employees;
pub(crate) mod events;
pub(crate) mod health;
pub(crate) mod inventory;
pub(crate) mod orders;
pub(crate) mod products;
pub(crate) mod stores;

use axum::http::{Method, StatusCode, Uri};
use axum::Router;

use crate::error::ApiError;
use crate::{ApiState, Service};

/// The routes of one service.
pub(crate) fn service_router(service: Service) -> Router<ApiState> {
    match service {
        Service::Orders => orders::router(),
        Service::Products => products::router(),
        Service::Customers => customers::router(),
        Service::Employees => employees::router(),
        Service::Stores => stores::router(),
        Service::Inventory => inventory::router(),
        Service::Events => events::router(),
    }
}

/// Any path no router serves (including those of services not selected).
pub(crate) async fn not_found(method: Method, uri: Uri) -> ApiError {
    ApiError::request(
        StatusCode::NOT_FOUND,
        format!("no route for {method} {}", uri.path()),
    )
}

/// A served path asked with a method it does not answer.
pub(crate) async fn method_not_allowed(method: Method, uri: Uri) -> ApiError {
    ApiError::request(
        StatusCode::METHOD_NOT_ALLOWED,
        format!("method {method} is not allowed on {}", uri.path()),
    )
}
