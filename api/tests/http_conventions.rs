//! What every answer of the API carries — a request id (the client's, or one made for it) that
//! is also in the access log line, and the security headers — and JSON read as JSON Schema
//! reads it (`2.0` is the integer 2, a price may be a number).

mod common;

use axum::http::StatusCode;
use brewlytics_support::web::API_POLICY;
use common::TestApp;
use serde_json::json;

fn captured() -> common::log::Captured {
    common::log::captured("brewlytics_api::access=info")
}

#[tokio::test]
async fn request_ids_are_returned_and_logged_with_the_security_headers() {
    let log = captured();
    let t = TestApp::new("request_ids").await;
    let f = t.fixtures().await;

    // The client's id is kept.
    let r = t
        .call_with("GET", "/stores", &[("x-request-id", "till-7.order-42")])
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.headers["x-request-id"], "till-7.order-42");

    // None, or one that is not usable: one is made (a UUID) and returned.
    let made = t.call("GET", "/orders/not-an-id", None).await;
    assert_eq!(made.status, StatusCode::NOT_FOUND);
    let made_id = made.headers["x-request-id"].to_str().unwrap().to_owned();
    assert!(uuid::Uuid::parse_str(&made_id).is_ok(), "{made_id}");
    let spaced = t
        .call_with("GET", "/health", &[("x-request-id", "two words")])
        .await;
    let spaced_id = spaced.headers["x-request-id"].to_str().unwrap().to_owned();
    assert!(uuid::Uuid::parse_str(&spaced_id).is_ok(), "{spaced_id}");
    assert_ne!(made_id, spaced_id);

    // One access log line per request, with its id, route template and status — never the URI.
    let lines = log.lines();
    let line_of = |id: &str| {
        lines
            .iter()
            .find(|l| l.contains(id))
            .unwrap_or_else(|| panic!("no log line with {id} in {lines:#?}"))
    };
    let line = line_of("request_id=till-7.order-42");
    assert!(line.contains("brewlytics_api::access"), "{line}");
    assert!(
        line.contains("route=/stores") && line.contains("status=200"),
        "{line}"
    );
    let line = line_of(&format!("request_id={made_id}"));
    assert!(
        line.contains("route=/orders/{id}") && line.contains("status=404"),
        "{line}"
    );
    assert!(
        !line.contains("not-an-id"),
        "the raw URI is not logged: {line}"
    );
    line_of(&format!("request_id={spaced_id}"));
    // One line per request (the other test of this binary logs its own requests here too).
    for id in ["till-7.order-42", made_id.as_str(), spaced_id.as_str()] {
        let n = lines.iter().filter(|l| l.contains(id)).count();
        assert_eq!(n, 1, "{id}: {lines:#?}");
    }

    // Every kind of answer carries the security headers: JSON, an error, metrics, a 404.
    let order = t.call("POST", "/orders", Some(f.order())).await;
    for r in [
        &order,
        &made,
        &spaced,
        &t.call("GET", "/metrics", None).await,
    ] {
        assert_eq!(r.headers["content-security-policy"], API_POLICY);
        assert_eq!(r.headers["x-content-type-options"], "nosniff");
        assert_eq!(r.headers["referrer-policy"], "no-referrer");
        assert_eq!(r.headers["x-frame-options"], "DENY");
        assert!(r.headers.contains_key("x-request-id"));
    }
}

#[tokio::test]
async fn json_numbers_are_read_as_json_schema_reads_them() {
    let t = TestApp::new("json_numbers").await;
    let f = t.fixtures().await;
    let order = json!({
        "customer_id": f.customer as f64,
        "employee_id": f.employee as f64,
        "store_id": f.store as f64,
        "payment_method": "cash",
        "items": [{"product_id": f.espresso as f64, "quantity": 2.0}],
    });
    let r = t.call("POST", "/orders", Some(order)).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    assert_eq!(r.json["items"][0]["quantity"], 2);
    assert_eq!(r.json["total"], "5.00");

    let r = t
        .call(
            "POST",
            "/products",
            Some(json!({"name": "Cortado", "category": "Coffee", "price": 3.8})),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    assert_eq!(r.json["price"], "3.80");
    assert_eq!(r.json["category"], "coffee");
    let id = r.json["id"].as_i64().unwrap();
    let r = t
        .call(
            "PATCH",
            &format!("/products/{id}.0"),
            Some(json!({"price": 4, "is_available": false})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.json["price"], "4.00");
    let r = t
        .call(
            "POST",
            "/inventory/restock",
            Some(json!({"store_id": f.store, "product_id": id, "quantity": 40.0})),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    assert_eq!(r.json["delta"], 40);
}
