//! Which scope each route needs ([`access`]), checked before any handler runs by the shared
//! middleware ([`brewlytics_support::auth::route_gate`]): a request refused there reads and
//! writes nothing. The OpenAPI
//! document is written from the same table ([`crate::openapi`]), so it cannot say otherwise.
//!
//! The checking itself (keys, the failure limit, the answers) is shared with the dashboard and
//! the replicator: [`brewlytics_support::auth`].

use axum::http::Method;
use brewlytics_support::auth::{Access, Scope};

/// What a route (its template, as the router matched it) needs for `method`. A route this
/// table does not name needs `admin`: a route added without a line here is closed, not open.
pub fn access(method: &Method, route: &str) -> Access {
    let read = matches!(*method, Method::GET | Method::HEAD);
    let scope = match route {
        "/health" | "/openapi.json" => return Access::Open,
        "/metrics" => Scope::OpsRead,
        "/orders/{id}" if read => Scope::OrdersRead,
        "/orders" | "/orders/new" | "/orders/{id}" => Scope::OrdersWrite,
        "/stores" | "/employees/active" => Scope::CatalogRead,
        "/products" | "/products/new" | "/products/{id}" | "/employees" | "/inventory/restock" => {
            Scope::CatalogWrite
        }
        "/customers" | "/customers/new" => Scope::CustomersWrite,
        "/events" => Scope::EventsWrite,
        _ => Scope::Admin,
    };
    Access::Json(scope)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_documented_operation_has_its_own_scope() {
        let doc = crate::openapi::full_document();
        let mut seen = 0;
        for (path, item) in &doc.paths.paths {
            for (method, op) in [
                (Method::GET, &item.get),
                (Method::POST, &item.post),
                (Method::PATCH, &item.patch),
                (Method::DELETE, &item.delete),
                (Method::PUT, &item.put),
            ] {
                if op.is_none() {
                    continue;
                }
                seen += 1;
                let a = access(&method, path);
                assert_ne!(
                    a,
                    Access::Json(Scope::Admin),
                    "{method} {path} is not in the table"
                );
            }
        }
        assert!(seen >= 17, "{seen} operations");
        assert_eq!(access(&Method::GET, "/health"), Access::Open);
        assert_eq!(
            access(&Method::GET, "/orders/{id}"),
            Access::Json(Scope::OrdersRead)
        );
        assert_eq!(
            access(&Method::DELETE, "/orders/{id}"),
            Access::Json(Scope::OrdersWrite)
        );
        assert_eq!(access(&Method::GET, "/nope"), Access::Json(Scope::Admin));
    }
}
