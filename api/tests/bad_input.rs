//! Every bad input gets a clear 4xx JSON error and writes nothing: each case asserts the
//! status, the message, the JSON content type, and that the row counts of all eight OLTP
//! tables are unchanged.

mod common;

use axum::http::StatusCode;
use common::{Fixtures, TestApp};
use serde_json::{json, Value};

/// One bad request: what is sent and what must come back.
struct Case {
    name: &'static str,
    method: &'static str,
    uri: String,
    content_type: Option<&'static str>,
    body: Vec<u8>,
    status: StatusCode,
    message: String,
}

/// A JSON request.
fn case(
    name: &'static str,
    method: &'static str,
    uri: &str,
    body: Value,
    status: u16,
    msg: &str,
) -> Case {
    Case {
        name,
        method,
        uri: uri.to_owned(),
        content_type: Some("application/json"),
        body: body.to_string().into_bytes(),
        status: StatusCode::from_u16(status).unwrap(),
        message: msg.to_owned(),
    }
}

/// A request with raw bytes and a chosen content type.
#[rustfmt::skip]
fn raw(name: &'static str, method: &'static str, uri: &str, ct: Option<&'static str>, body: &[u8], status: u16, msg: &str) -> Case {
    Case {
        content_type: ct,
        body: body.to_vec(),
        ..case(name, method, uri, Value::Null, status, msg)
    }
}

/// Runs the cases in order; all must leave every table as it was.
async fn check(t: &TestApp, cases: Vec<Case>) {
    let before = t.counts().await;
    for c in cases {
        let r = t.raw(c.method, &c.uri, c.content_type, c.body).await;
        assert_eq!(r.status, c.status, "{}: {}", c.name, r.text);
        assert!(
            r.content_type.starts_with("application/json"),
            "{}: content type {}",
            c.name,
            r.content_type
        );
        assert!(
            r.error().contains(&c.message),
            "{}: {:?} does not contain {:?}",
            c.name,
            r.error(),
            c.message
        );
        assert_eq!(t.counts().await, before, "{}: rows changed", c.name);
    }
}

fn order_with(f: &Fixtures, change: impl FnOnce(&mut Value)) -> Value {
    let mut body = f.order();
    change(&mut body);
    body
}

fn without(f: &Fixtures, field: &str) -> Value {
    order_with(f, |b| {
        b.as_object_mut().unwrap().remove(field);
    })
}

#[tokio::test]
async fn bad_orders_are_refused_and_write_nothing() {
    let t = TestApp::new("bad_orders").await;
    let f = t.fixtures().await;
    // an existing order so PATCH cases have something to (not) touch
    let placed = t.call("POST", "/orders", Some(f.order())).await;
    let id = placed.json["id"].as_str().unwrap().to_owned();
    let one = |n: usize| {
        let line = json!({"product_id": f.espresso, "quantity": 1});
        Value::Array(vec![line; n])
    };
    let big = format!("{{\"items\": [], \"pad\": \"{}\"}}", "x".repeat(70_000));
    let unknown = "/orders/0190b7c4-6a2e-7c0e-8d3b-000000000000";
    let mine = format!("/orders/{id}");
    let o = "/orders";
    let js = Some("application/json");
    #[rustfmt::skip]
    let cases = vec![
        raw("malformed json", "POST", o, js, b"{\"employee_id\": 1,", 400, "malformed JSON"),
        raw("not json at all", "POST", o, js, b"coffee please", 400, "malformed JSON"),
        raw("no content type", "POST", o, None, f.order().to_string().as_bytes(), 415, "Content-Type: application/json"),
        raw("body over 64 KiB", "POST", o, js, big.as_bytes(), 413, "larger than 65536 bytes"),
        case("missing items", "POST", o, without(&f, "items"), 422, "missing field `items`"),
        case("missing employee", "POST", o, without(&f, "employee_id"), 422, "missing field `employee_id`"),
        case("wrong type quantity", "POST", o, order_with(&f, |b| b["items"][0]["quantity"] = json!("two")), 422, "items[0].quantity"),
        case("wrong type store", "POST", o, order_with(&f, |b| b["store_id"] = json!("main")), 422, "store_id"),
        case("client-sent total", "POST", o, order_with(&f, |b| b["total"] = json!("0.01")), 422, "unknown field `total`"),
        case("unknown payment method", "POST", o, order_with(&f, |b| b["payment_method"] = json!("bitcoin")), 422, "payment_method: unknown payment method \"bitcoin\""),
        case("payment method a number", "POST", o, order_with(&f, |b| b["payment_method"] = json!(1)), 422, "payment_method: invalid type: integer `1`, expected a string"),
        case("unknown product", "POST", o, order_with(&f, |b| b["items"][0]["product_id"] = json!(999_999)), 404, "unknown product 999999"),
        case("unavailable product", "POST", o, order_with(&f, |b| b["items"][0]["product_id"] = json!(f.unavailable)), 409, &format!("product {} is not available", f.unavailable)),
        case("bad second line", "POST", o, order_with(&f, |b| b["items"] = json!([{"product_id": f.espresso, "quantity": 1}, {"product_id": 424_242, "quantity": 1}])), 404, "unknown product 424242"),
        case("unknown customer", "POST", o, order_with(&f, |b| b["customer_id"] = json!(777)), 404, "unknown customer 777"),
        case("unknown employee", "POST", o, order_with(&f, |b| b["employee_id"] = json!(888)), 404, "unknown employee 888"),
        case("inactive employee", "POST", o, order_with(&f, |b| b["employee_id"] = json!(f.inactive_employee)), 409, &format!("employee {} is not active", f.inactive_employee)),
        case("unknown store", "POST", o, order_with(&f, |b| b["store_id"] = json!(999)), 404, "unknown store 999"),
        case("quantity zero", "POST", o, order_with(&f, |b| b["items"][0]["quantity"] = json!(0)), 422, "items[0].quantity must be between 1 and 100 (got 0)"),
        case("quantity negative", "POST", o, order_with(&f, |b| b["items"][0]["quantity"] = json!(-3)), 422, "(got -3)"),
        case("quantity absurd", "POST", o, order_with(&f, |b| b["items"][0]["quantity"] = json!(1_000_000)), 422, "(got 1000000)"),
        case("quantity 101", "POST", o, order_with(&f, |b| b["items"][0]["quantity"] = json!(101)), 422, "(got 101)"),
        case("quantity a fraction", "POST", o, order_with(&f, |b| b["items"][0]["quantity"] = json!(2.5)), 422, "items[0].quantity: invalid type: floating point `2.5`, expected an integer"),
        case("id a fraction", "POST", o, order_with(&f, |b| b["store_id"] = json!(1.5)), 422, "store_id"),
        case("empty items", "POST", o, order_with(&f, |b| b["items"] = json!([])), 422, "at least one item"),
        case("51 items", "POST", o, order_with(&f, |b| b["items"] = one(51)), 422, "at most 50 items (got 51)"),
        case("alias refuses too", "POST", "/orders/new", order_with(&f, |b| b["items"] = json!([])), 422, "at least one item"),
        case("get bad uuid", "GET", "/orders/not-a-uuid", Value::Null, 404, "order \"not-a-uuid\" not found: order ids are UUIDs"),
        case("get unknown order", "GET", unknown, Value::Null, 404, "order 0190b7c4-6a2e-7c0e-8d3b-000000000000 not found"),
        case("patch bad uuid", "PATCH", "/orders/12345", json!({"status": "ready"}), 404, "order ids are UUIDs"),
        case("patch unknown order", "PATCH", unknown, json!({"status": "preparing"}), 404, "not found"),
        case("patch unknown status", "PATCH", &mine, json!({"status": "shipped"}), 422, "unknown status \"shipped\"; an order can be moved to preparing, ready, completed or cancelled"),
        case("patch back to placed", "PATCH", &mine, json!({"status": "placed"}), 422, "unknown status \"placed\""),
        case("patch padded status", "PATCH", &mine, json!({"status": " ready"}), 422, "unknown status"),
        case("patch missing status", "PATCH", &mine, json!({}), 422, "missing field `status`"),
        case("patch status wrong type", "PATCH", &mine, json!({"status": 3}), 422, "status"),
        case("patch skips a step", "PATCH", &mine, json!({"status": "completed"}), 409, "cannot change order status from placed to completed"),
        raw("patch malformed json", "PATCH", &mine, js, b"{status:", 400, "malformed JSON"),
        case("delete bad uuid", "DELETE", "/orders/xyz", Value::Null, 404, "order ids are UUIDs"),
        case("delete unknown order", "DELETE", unknown, Value::Null, 404, "not found"),
    ];
    check(&t, cases).await;
    // 50 lines is the limit, not over it
    let fifty = order_with(&f, |b| b["items"] = one(50));
    let r = t.call("POST", o, Some(fifty)).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    assert_eq!(r.json["total"], "125.00");
}

#[tokio::test]
async fn bad_master_data_is_refused_and_writes_nothing() {
    let t = TestApp::new("bad_master").await;
    let f = t.fixtures().await;
    let product = |price: Value| json!({"name": "Mocha", "category": "coffee", "price": price});
    let fw = format!("/products/{}", f.flat_white);
    #[rustfmt::skip]
    let cases = vec![
        case("price zero", "POST", "/products", product(json!("0")), 422, "price must be greater than 0"),
        case("price negative", "POST", "/products", product(json!(-1.5)), 422, "price must be greater than 0"),
        case("price three decimals", "POST", "/products", product(json!("3.805")), 422, "price must have at most 2 decimals"),
        case("price absurd", "POST", "/products", product(json!("10000.01")), 422, "price must be at most 10000"),
        case("price not a number", "POST", "/products", product(json!("cheap")), 422, "price must be a decimal like 3.80 (got \"cheap\")"),
        case("price padded", "POST", "/products", product(json!(" 3.80")), 422, "price must be a decimal like 3.80"),
        case("price leading zero", "POST", "/products", product(json!("03.80")), 422, "price must be a decimal like 3.80"),
        case("price exponent", "POST", "/products", product(json!("4e1")), 422, "price must be a decimal like 3.80"),
        case("price float noise", "POST", "/products", product(json!(0.1 + 0.2)), 422, "price must have at most 2 decimals"),
        case("price null", "POST", "/products", product(Value::Null), 422, "price"),
        case("product NUL in name", "POST", "/products", json!({"name": "Mo\u{0}cha", "category": "coffee", "price": "3.00"}), 422, "name must not contain control characters"),
        case("product tab in category", "POST", "/products", json!({"name": "Mocha", "category": "cof\tfee", "price": "3.00"}), 422, "category must not contain control characters"),
        case("product NUL in description", "POST", "/products", json!({"name": "Mocha", "category": "coffee", "price": "3.00", "description": "a\u{0}"}), 422, "description must not contain control characters"),
        case("product description too long", "POST", "/products", json!({"name": "Mocha", "category": "coffee", "price": "3.00", "description": "d".repeat(2001)}), 422, "description must be at most 2000 characters"),
        case("price missing", "POST", "/products", json!({"name": "Mocha", "category": "coffee"}), 422, "missing field `price`"),
        case("product blank name", "POST", "/products", json!({"name": "  ", "category": "coffee", "price": "3.00"}), 422, "name must not be blank"),
        case("product blank category", "POST", "/products", json!({"name": "Mocha", "category": "", "price": "3.00"}), 422, "category must not be blank"),
        case("product name too long", "POST", "/products", json!({"name": "x".repeat(201), "category": "coffee", "price": "3.00"}), 422, "name must be at most 200 characters"),
        case("duplicate product", "POST", "/products", json!({"name": "Espresso", "category": "coffee", "price": "2.00"}), 409, "a product named \"Espresso\" already exists"),
        case("duplicate product via alias", "POST", "/products/new", json!({"name": "Espresso", "category": "coffee", "price": "2.00"}), 409, "already exists"),
        case("patch bad id", "PATCH", "/products/abc", json!({"price": "4.00"}), 404, "product \"abc\" not found: product ids are positive integers"),
        case("patch id zero", "PATCH", "/products/0", json!({"price": "4.00"}), 404, "product ids are positive integers"),
        case("patch unknown product", "PATCH", "/products/999999", json!({"price": "4.00"}), 404, "product 999999 not found"),
        case("patch nothing", "PATCH", &fw, json!({}), 422, "nothing to update"),
        case("patch null name", "PATCH", &fw, json!({"name": null}), 422, "name: invalid type: null"),
        case("patch null price", "PATCH", &fw, json!({"price": null}), 422, "price: invalid type: null"),
        case("patch null availability", "PATCH", &fw, json!({"is_available": null}), 422, "is_available: invalid type: null"),
        case("patch bad price", "PATCH", &fw, json!({"price": "0.001"}), 422, "price must have at most 2 decimals"),
        case("patch rename to existing", "PATCH", &fw, json!({"name": "Espresso"}), 409, "already exists"),
        case("patch unknown field", "PATCH", &fw, json!({"prise": "4.00"}), 422, "unknown field `prise`"),
        case("customer blank name", "POST", "/customers", json!({"name": " ", "email": "bo@example.com"}), 422, "name must not be blank"),
        case("customer invalid email", "POST", "/customers", json!({"name": "Bo", "email": "bo-at-example"}), 422, "email \"bo-at-example\" is not a valid address"),
        case("customer email with NUL", "POST", "/customers", json!({"name": "Bo", "email": "b\u{0}o@example.com"}), 422, "is not a valid address"),
        case("customer email too long", "POST", "/customers", json!({"name": "Bo", "email": format!("{}@example.com", "b".repeat(310))}), 422, "email must be at most 320 characters"),
        case("customer name of spaces", "POST", "/customers", json!({"name": "\u{3000}\u{a0} ", "email": "bo@example.com"}), 422, "name must not be blank"),
        case("customer missing email", "POST", "/customers", json!({"name": "Bo"}), 422, "missing field `email`"),
        case("customer duplicate email", "POST", "/customers", json!({"name": "Ada B", "email": "ADA@example.com"}), 409, "a customer with email \"ADA@example.com\" already exists"),
        case("customer duplicate via alias", "POST", "/customers/new", json!({"name": "Ada B", "email": "ada@example.com"}), 409, "already exists"),
        case("employee blank name", "POST", "/employees", json!({"name": ""}), 422, "name must not be blank"),
        case("employee unknown store", "POST", "/employees", json!({"name": "Ed", "store_id": 999}), 404, "unknown store 999"),
        case("employee blank role", "POST", "/employees", json!({"name": "Ed", "role": " "}), 422, "role must not be blank"),
        case("employee wrong type", "POST", "/employees", json!({"name": "Ed", "active": "yes"}), 422, "active"),
        case("restock zero", "POST", "/inventory/restock", json!({"store_id": f.store, "product_id": f.espresso, "quantity": 0}), 422, "quantity must be between 1 and 10000 (got 0)"),
        case("restock unknown store", "POST", "/inventory/restock", json!({"store_id": 999, "product_id": f.espresso, "quantity": 5}), 404, "unknown store 999"),
        case("restock unknown product", "POST", "/inventory/restock", json!({"store_id": f.store, "product_id": 999, "quantity": 5}), 404, "unknown product 999"),
        case("restock a fraction", "POST", "/inventory/restock", json!({"store_id": f.store, "product_id": f.espresso, "quantity": 1.5}), 422, "quantity"),
    ];
    check(&t, cases).await;
}

#[tokio::test]
async fn unknown_routes_and_methods_are_json_errors() {
    let t = TestApp::new("bad_routes").await;
    t.fixtures().await;
    #[rustfmt::skip]
    let cases = vec![
        case("unknown path", "GET", "/coffee", Value::Null, 404, "no route for GET /coffee"),
        case("wrong method", "DELETE", "/stores", Value::Null, 405, "method DELETE is not allowed on /stores"),
        case("get on post-only", "GET", "/customers", Value::Null, 405, "not allowed"),
    ];
    check(&t, cases).await;
}
