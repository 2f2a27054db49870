//! The API under a source schema that changes while it runs: a column whose type changes
//! (PostgreSQL refuses the connection's cached statements: "cached plan must not change
//! result type") is followed without a restart, and a column the API needs that is gone is
//! a 503 naming it — until it is back, when the API works again by itself.

mod common;

use axum::http::StatusCode;
use common::TestApp;
use serde_json::json;
use sqlx::Executor;

#[tokio::test]
async fn orders_and_master_data_survive_column_type_changes() {
    // One connection: every request reuses the statements the previous ones prepared.
    let t = TestApp::with_pool_size("retype", 1).await;
    let f = t.fixtures().await;
    let placed = t.call("POST", "/orders", Some(f.order())).await;
    assert_eq!(placed.status, StatusCode::CREATED, "{}", placed.text);
    let id = placed.json["id"].as_str().unwrap().to_owned();
    assert_eq!(
        t.call("GET", &format!("/orders/{id}"), None).await.status,
        StatusCode::OK
    );
    let customer = json!({"name": "Bea", "email": "bea@example.com"});
    assert_eq!(
        t.call("POST", "/customers", Some(customer)).await.status,
        StatusCode::CREATED
    );

    let mut admin = t.admin().await;
    admin
        .execute(
            "alter table order_items alter column quantity type bigint;
             alter table products alter column price type numeric(12, 2);
             alter table customers alter column name type varchar(300);",
        )
        .await
        .unwrap();

    // The premise: a statement prepared before the change is refused after it.
    let probe = "select id, name, email from customers where id = $1";
    let mut direct = t.admin().await;
    sqlx::query(probe)
        .bind(1_i64)
        .fetch_optional(&mut direct)
        .await
        .unwrap();
    direct
        .execute("alter table customers alter column email type varchar(320)")
        .await
        .unwrap();
    let refused = sqlx::query(probe)
        .bind(1_i64)
        .fetch_optional(&mut direct)
        .await
        .unwrap_err();
    assert!(
        brewlytics_api::data::is_stale_statement(&refused),
        "{refused}"
    );

    // The API follows: every endpoint answers as before, with the same JSON shapes.
    let placed = t.call("POST", "/orders", Some(f.order())).await;
    assert_eq!(placed.status, StatusCode::CREATED, "{}", placed.text);
    assert_eq!(placed.json["items"][0]["quantity"], 2);
    assert_eq!(placed.json["total"], "7.60");
    let id = placed.json["id"].as_str().unwrap().to_owned();
    let read = t.call("GET", &format!("/orders/{id}"), None).await;
    assert_eq!(read.status, StatusCode::OK, "{}", read.text);
    assert_eq!(read.json, placed.json);
    let moved = t
        .call(
            "PATCH",
            &format!("/orders/{id}"),
            Some(json!({"status": "cancelled"})),
        )
        .await;
    assert_eq!(moved.status, StatusCode::OK, "{}", moved.text);
    let customer = json!({"name": "Cy", "email": "cy@example.com"});
    let created = t.call("POST", "/customers", Some(customer)).await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.text);
    assert_eq!(created.json["name"], "Cy");
    let patched = t
        .call(
            "PATCH",
            &format!("/products/{}", f.espresso),
            Some(json!({"price": "2.70"})),
        )
        .await;
    assert_eq!(patched.status, StatusCode::OK, "{}", patched.text);
    assert_eq!(patched.json["price"], "2.70");
    let stores = t.call("GET", "/stores", None).await;
    assert_eq!(stores.status, StatusCode::OK);
    let employees = t.call("GET", "/employees/active", None).await;
    assert_eq!(employees.status, StatusCode::OK);
    let n: i64 = sqlx::query_scalar("select count(*) from orders")
        .fetch_one(&t.pool)
        .await
        .unwrap();
    assert_eq!(n, 2);
}

#[tokio::test]
async fn a_missing_column_is_a_503_naming_it_until_it_is_back() {
    let t = TestApp::new("dropped").await;
    let f = t.fixtures().await;
    let placed = t.call("POST", "/orders", Some(f.order())).await;
    let id = placed.json["id"].as_str().unwrap().to_owned();
    let mut admin = t.admin().await;
    admin
        .execute(
            "alter table customers drop column email;
             alter table orders rename column total to amount;",
        )
        .await
        .unwrap();
    let before = t.counts().await;

    let r = t
        .call(
            "POST",
            "/customers",
            Some(json!({"name": "Bea", "email": "bea@example.com"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{}", r.text);
    assert!(r.content_type.starts_with("application/json"));
    assert_eq!(
        r.error(),
        "the API needs column customers.email, which the database does not have \
         (the schema changed under the API)"
    );
    let r = t.call("GET", &format!("/orders/{id}"), None).await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{}", r.text);
    assert!(r.error().contains("column total"), "{}", r.error());
    let r = t.call("POST", "/orders", Some(f.order())).await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{}", r.text);
    assert!(r.error().contains("total"), "{}", r.error());
    assert_eq!(t.counts().await, before, "nothing written");

    // Put back, the API works again without a restart.
    admin
        .execute(
            "alter table customers add column email text not null default 'x@example.com';
             alter table orders rename column amount to total;",
        )
        .await
        .unwrap();
    let r = t
        .call(
            "POST",
            "/customers",
            Some(json!({"name": "Bea", "email": "bea@example.com"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    assert_eq!(
        t.call("GET", &format!("/orders/{id}"), None).await.status,
        StatusCode::OK
    );
}
