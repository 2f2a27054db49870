//! Happy paths of the master-data endpoints and restocks.

mod common;

use axum::http::StatusCode;
use common::TestApp;
use serde_json::json;

#[tokio::test]
async fn customers_are_created_through_both_paths() {
    let t = TestApp::new("customers").await;
    let r = t
        .call(
            "POST",
            "/customers",
            Some(json!({"name": " Grace ", "email": "grace@example.com"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    assert_eq!(r.json["name"], "Grace");
    assert_eq!(r.json["email"], "grace@example.com");
    assert!(r.json["id"].as_i64().unwrap() > 0);
    let alias = t
        .call(
            "POST",
            "/customers/new",
            Some(json!({"name": "Linus", "email": "linus@example.org"})),
        )
        .await;
    assert_eq!(alias.status, StatusCode::CREATED, "{}", alias.text);
    let emails: Vec<String> = sqlx::query_scalar("select email from customers order by id")
        .fetch_all(&t.pool)
        .await
        .unwrap();
    assert_eq!(emails, ["grace@example.com", "linus@example.org"]);
}

#[tokio::test]
async fn products_are_created_and_patched() {
    let t = TestApp::new("products").await;
    let r = t
        .call(
            "POST",
            "/products",
            Some(json!({"name": "Flat white", "category": "Coffee", "price": "3.80"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    assert_eq!(r.json["price"], "3.80");
    assert_eq!(r.json["category"], "coffee");
    assert_eq!(r.json["is_available"], true);
    let id = r.json["id"].as_i64().unwrap();

    // a JSON number is accepted too, and normalized to two decimals
    let n = t
        .call(
            "POST",
            "/products/new",
            Some(json!({"name": "Tea", "category": "tea", "price": 2.5, "is_available": false})),
        )
        .await;
    assert_eq!(n.status, StatusCode::CREATED, "{}", n.text);
    assert_eq!(n.json["price"], "2.50");
    assert_eq!(n.json["is_available"], false);

    let p = t
        .call(
            "PATCH",
            &format!("/products/{id}"),
            Some(json!({"price": "4.10"})),
        )
        .await;
    assert_eq!(p.status, StatusCode::OK, "{}", p.text);
    assert_eq!(p.json["price"], "4.10");
    assert_eq!(p.json["name"], "Flat white");
    let p = t
        .call(
            "PATCH",
            &format!("/products/{id}"),
            Some(json!({"name": "Flat white XL", "category": "coffee", "is_available": false})),
        )
        .await;
    assert_eq!(p.status, StatusCode::OK, "{}", p.text);
    let row: (String, String, rust_decimal::Decimal, bool) =
        sqlx::query_as("select name, category, price, is_available from products where id = $1")
            .bind(id)
            .fetch_one(&t.pool)
            .await
            .unwrap();
    assert_eq!(row.0, "Flat white XL");
    assert_eq!(row.2.to_string(), "4.10");
    assert!(!row.3);
}

#[tokio::test]
async fn employees_are_hired_and_listed_when_active() {
    let t = TestApp::new("employees").await;
    let f = t.fixtures().await;
    let r = t
        .call(
            "POST",
            "/employees",
            Some(json!({"name": "Eve", "store_id": f.store})),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    assert_eq!(r.json["role"], "barista");
    assert_eq!(r.json["active"], true);
    assert_eq!(r.json["store_id"], f.store);
    let gone = t
        .call(
            "POST",
            "/employees",
            Some(json!({"name": "Fin", "role": "manager", "active": false})),
        )
        .await;
    assert_eq!(gone.status, StatusCode::CREATED, "{}", gone.text);
    assert_eq!(gone.json["store_id"], serde_json::Value::Null);

    let list = t.call("GET", "/employees/active", None).await;
    assert_eq!(list.status, StatusCode::OK);
    let names: Vec<&str> = list
        .json
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["Bo", "Cy", "Eve"]);
}

#[tokio::test]
async fn stores_are_listed() {
    let t = TestApp::new("stores").await;
    let f = t.fixtures().await;
    let r = t.call("GET", "/stores", None).await;
    assert_eq!(r.status, StatusCode::OK);
    let stores = r.json.as_array().unwrap();
    assert_eq!(stores.len(), 2);
    assert_eq!(stores[0]["id"], f.store);
    assert_eq!(stores[0]["name"], "Main");
    assert_eq!(stores[1]["city"], "Porto");
    assert!(stores[0]["opened_on"].is_string());
}

#[tokio::test]
async fn restock_records_a_movement() {
    let t = TestApp::new("restock").await;
    let f = t.fixtures().await;
    let r = t
        .call(
            "POST",
            "/inventory/restock",
            Some(json!({"store_id": f.store, "product_id": f.espresso, "quantity": 40})),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    assert_eq!(r.json["delta"], 40);
    assert_eq!(r.json["reason"], "restock");
    let row: (i64, i64, i32, String, Option<uuid::Uuid>) = sqlx::query_as(
        "select store_id, product_id, delta, reason, order_id from inventory_movements",
    )
    .fetch_one(&t.pool)
    .await
    .unwrap();
    assert_eq!(row, (f.store, f.espresso, 40, "restock".to_owned(), None));
}
