//! The order write path against real PostgreSQL: placing, reading, the status machine,
//! cancellation's compensating movements, deletion, and concurrency.

mod common;

use axum::http::StatusCode;
use common::TestApp;
use rust_decimal::Decimal;
use serde_json::{json, Value};
use std::str::FromStr;
use uuid::Uuid;

fn dec(s: &str) -> Decimal {
    Decimal::from_str(s).unwrap()
}

#[tokio::test]
async fn post_order_writes_order_items_payment_and_movements() {
    let t = TestApp::new("order_happy").await;
    let f = t.fixtures().await;
    let r = t.call("POST", "/orders", Some(f.order())).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let b = &r.json;
    assert_eq!(b["status"], "placed");
    assert_eq!(b["total"], "7.60");
    assert_eq!(b["customer_id"], f.customer);
    assert_eq!(b["employee_id"], f.employee);
    assert_eq!(b["store_id"], f.store);
    assert_eq!(b["payment_method"], "card");
    assert_eq!(b["items"].as_array().unwrap().len(), 1);
    assert_eq!(b["items"][0]["product_id"], f.flat_white);
    assert_eq!(b["items"][0]["quantity"], 2);
    assert_eq!(b["items"][0]["unit_price"], "3.80");
    assert!(b["items"][0]["id"].is_i64());
    let id = Uuid::parse_str(b["id"].as_str().unwrap()).unwrap();
    assert_eq!(id.get_version_num(), 7);

    let (total, status): (Decimal, String) =
        sqlx::query_as("select total, status from orders where id = $1")
            .bind(id)
            .fetch_one(&t.pool)
            .await
            .unwrap();
    assert_eq!((total, status.as_str()), (dec("7.60"), "placed"));
    let (amount, method): (Decimal, String) =
        sqlx::query_as("select amount, method from payments where order_id = $1")
            .bind(id)
            .fetch_one(&t.pool)
            .await
            .unwrap();
    assert_eq!((amount, method.as_str()), (dec("7.60"), "card"));
    let moves: Vec<(i64, i64, i32, String)> = sqlx::query_as(
        "select store_id, product_id, delta, reason from inventory_movements where order_id = $1",
    )
    .bind(id)
    .fetch_all(&t.pool)
    .await
    .unwrap();
    assert_eq!(moves, vec![(f.store, f.flat_white, -2, "sale".to_owned())]);

    // GET returns exactly what POST did
    let got = t.call("GET", &format!("/orders/{id}"), None).await;
    assert_eq!(got.status, StatusCode::OK);
    assert_eq!(got.json, r.json);
}

#[tokio::test]
async fn alias_walk_in_and_several_lines() {
    let t = TestApp::new("order_alias").await;
    let f = t.fixtures().await;
    let body = json!({
        "customer_id": null,
        "employee_id": f.employee2,
        "store_id": f.store2,
        "payment_method": "cash",
        "items": [
            {"product_id": f.flat_white, "quantity": 2},
            {"product_id": f.espresso, "quantity": 1},
            {"product_id": f.croissant, "quantity": 3},
        ],
    });
    let r = t.call("POST", "/orders/new", Some(body)).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    assert_eq!(r.json["total"], "18.50");
    assert_eq!(r.json["customer_id"], Value::Null);
    let units: Vec<&str> = r.json["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["unit_price"].as_str().unwrap())
        .collect();
    assert_eq!(units, ["3.80", "2.50", "2.80"]);
    let n: i64 =
        sqlx::query_scalar("select count(*) from inventory_movements where reason = 'sale'")
            .fetch_one(&t.pool)
            .await
            .unwrap();
    assert_eq!(n, 3);
}

#[tokio::test]
async fn prices_come_from_the_product_row_at_order_time() {
    let t = TestApp::new("order_price").await;
    let f = t.fixtures().await;
    let first = t.call("POST", "/orders", Some(f.order())).await;
    let patch = json!({"price": "4.10"});
    let p = t
        .call("PATCH", &format!("/products/{}", f.flat_white), Some(patch))
        .await;
    assert_eq!(p.status, StatusCode::OK, "{}", p.text);
    let second = t.call("POST", "/orders", Some(f.order())).await;
    assert_eq!(second.json["total"], "8.20");
    let old = t
        .call(
            "GET",
            &format!("/orders/{}", first.json["id"].as_str().unwrap()),
            None,
        )
        .await;
    assert_eq!(old.json["total"], "7.60");
    assert_eq!(old.json["items"][0]["unit_price"], "3.80");
}

async fn place(t: &TestApp, body: Value) -> String {
    let r = t.call("POST", "/orders", Some(body)).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    r.json["id"].as_str().unwrap().to_owned()
}

async fn patch_status(t: &TestApp, id: &str, status: &str) -> common::Resp {
    t.call(
        "PATCH",
        &format!("/orders/{id}"),
        Some(json!({"status": status})),
    )
    .await
}

/// The path from placed to `target` through allowed transitions.
fn path_to(target: &str) -> &'static [&'static str] {
    match target {
        "placed" => &[],
        "preparing" => &["preparing"],
        "ready" => &["preparing", "ready"],
        "completed" => &["preparing", "ready", "completed"],
        "cancelled" => &["cancelled"],
        other => panic!("no path to {other}"),
    }
}

#[tokio::test]
async fn status_transition_matrix() {
    let t = TestApp::new("order_matrix").await;
    let f = t.fixtures().await;
    let statuses = ["placed", "preparing", "ready", "completed", "cancelled"];
    let allowed = [
        ("placed", "preparing"),
        ("preparing", "ready"),
        ("ready", "completed"),
        ("placed", "cancelled"),
        ("preparing", "cancelled"),
    ];
    for from in statuses {
        for to in statuses {
            let id = place(&t, f.order()).await;
            for step in path_to(from) {
                assert_eq!(patch_status(&t, &id, step).await.status, StatusCode::OK);
            }
            let before = t.counts().await;
            let r = patch_status(&t, &id, to).await;
            let stored: String =
                sqlx::query_scalar("select status from orders where id = $1::uuid")
                    .bind(&id)
                    .fetch_one(&t.pool)
                    .await
                    .unwrap();
            if allowed.contains(&(from, to)) {
                assert_eq!(r.status, StatusCode::OK, "{from} -> {to}: {}", r.text);
                assert_eq!(r.json["status"], to);
                assert_eq!(stored, to);
            } else if to == "placed" {
                // Orders start placed; no request moves one there (the schema's enum says so).
                assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{from} -> {to}");
                assert!(
                    r.error().contains("unknown status \"placed\""),
                    "{}",
                    r.text
                );
                assert_eq!(stored, from, "{from} -> {to} must not change the order");
                assert_eq!(t.counts().await, before, "{from} -> {to} wrote rows");
            } else {
                assert_eq!(r.status, StatusCode::CONFLICT, "{from} -> {to}: {}", r.text);
                assert_eq!(
                    r.error(),
                    format!("cannot change order status from {from} to {to}")
                );
                assert_eq!(stored, from, "{from} -> {to} must not change the order");
                assert_eq!(t.counts().await, before, "{from} -> {to} wrote rows");
            }
        }
    }
}

#[tokio::test]
async fn cancelling_writes_compensating_movements() {
    let t = TestApp::new("order_cancel").await;
    let f = t.fixtures().await;
    let body = json!({
        "employee_id": f.employee, "store_id": f.store2, "payment_method": "mobile",
        "items": [{"product_id": f.espresso, "quantity": 3}, {"product_id": f.croissant, "quantity": 1}],
    });
    let id = place(&t, body).await;
    assert_eq!(
        patch_status(&t, &id, "preparing").await.status,
        StatusCode::OK
    );
    let r = patch_status(&t, &id, "cancelled").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.json["status"], "cancelled");
    let moves: Vec<(i64, i64, i32, String)> = sqlx::query_as(
        "select store_id, product_id, delta, reason from inventory_movements
         where order_id = $1::uuid order by id",
    )
    .bind(&id)
    .fetch_all(&t.pool)
    .await
    .unwrap();
    assert_eq!(
        moves,
        vec![
            (f.store2, f.espresso, -3, "sale".to_owned()),
            (f.store2, f.croissant, -1, "sale".to_owned()),
            (f.store2, f.espresso, 3, "cancel".to_owned()),
            (f.store2, f.croissant, 1, "cancel".to_owned()),
        ]
    );
}

#[tokio::test]
async fn delete_removes_the_order_and_its_rows() {
    let t = TestApp::new("order_delete").await;
    let f = t.fixtures().await;
    let keep = place(&t, f.order()).await;
    let id = place(&t, f.order()).await;
    let r = t.call("DELETE", &format!("/orders/{id}"), None).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    assert!(r.text.is_empty());
    let counts = t.counts().await;
    assert_eq!(counts["orders"], 1);
    assert_eq!(counts["order_items"], 1);
    assert_eq!(counts["payments"], 1);
    assert_eq!(counts["inventory_movements"], 1);
    assert_eq!(
        t.call("GET", &format!("/orders/{id}"), None).await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        t.call("GET", &format!("/orders/{keep}"), None).await.status,
        StatusCode::OK
    );
    let again = t.call("DELETE", &format!("/orders/{id}"), None).await;
    assert_eq!(again.status, StatusCode::NOT_FOUND);
    assert_eq!(again.error(), format!("order {id} not found"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_patches_let_exactly_one_win() {
    let t = TestApp::new("order_race").await;
    let f = t.fixtures().await;
    let id = place(&t, f.order()).await;
    let tasks: Vec<_> = (0..10)
        .map(|_| {
            let sender = t.sender();
            let uri = format!("/orders/{id}");
            tokio::spawn(async move {
                let body = json!({"status": "cancelled"}).to_string().into_bytes();
                sender
                    .send("PATCH", &uri, Some("application/json"), body, &[])
                    .await
                    .status
            })
        })
        .collect();
    let mut statuses = Vec::new();
    for task in tasks {
        statuses.push(task.await.unwrap());
    }
    assert_eq!(statuses.iter().filter(|s| **s == StatusCode::OK).count(), 1);
    assert_eq!(
        statuses
            .iter()
            .filter(|s| **s == StatusCode::CONFLICT)
            .count(),
        9
    );
    let cancels: i64 = sqlx::query_scalar(
        "select count(*) from inventory_movements where reason = 'cancel' and order_id = $1::uuid",
    )
    .bind(&id)
    .fetch_one(&t.pool)
    .await
    .unwrap();
    assert_eq!(cancels, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifty_concurrent_orders_all_land_consistently() {
    let t = TestApp::new("order_concurrent").await;
    let f = t.fixtures().await;
    let tasks: Vec<_> = (0..50i64)
        .map(|i| {
            let sender = t.sender();
            let method = ["card", "cash", "mobile"][i as usize % 3];
            let body = json!({
                "customer_id": if i % 4 == 0 { Value::Null } else { json!(f.customer) },
                "employee_id": if i % 2 == 0 { f.employee } else { f.employee2 },
                "store_id": if i % 2 == 0 { f.store } else { f.store2 },
                "payment_method": method,
                "items": [
                    {"product_id": f.espresso, "quantity": 1 + i % 3},
                    {"product_id": f.flat_white, "quantity": 1 + i % 5},
                ],
            });
            tokio::spawn(async move {
                let bytes = body.to_string().into_bytes();
                let r = sender
                    .send("POST", "/orders", Some("application/json"), bytes, &[])
                    .await;
                (i, r)
            })
        })
        .collect();
    let mut expected_sum = Decimal::ZERO;
    for task in tasks {
        let (i, r) = task.await.unwrap();
        assert_eq!(r.status, StatusCode::CREATED, "order {i}: {}", r.text);
        let expected =
            dec("2.50") * Decimal::from(1 + i % 3) + dec("3.80") * Decimal::from(1 + i % 5);
        assert_eq!(
            dec(r.json["total"].as_str().unwrap()),
            expected,
            "order {i}"
        );
        expected_sum += expected;
    }
    let counts = t.counts().await;
    assert_eq!(counts["orders"], 50);
    assert_eq!(counts["order_items"], 100);
    assert_eq!(counts["payments"], 50);
    assert_eq!(counts["inventory_movements"], 100);
    let inconsistent: i64 = sqlx::query_scalar(
        "select count(*) from orders o
         where o.total <> (select sum(i.quantity * i.unit_price) from order_items i where i.order_id = o.id)
            or o.total <> (select sum(p.amount) from payments p where p.order_id = o.id)
            or (select count(*) from payments p where p.order_id = o.id) <> 1
            or (select count(*) from inventory_movements m where m.order_id = o.id
                 and m.reason = 'sale' and m.store_id = o.store_id) <> 2",
    )
    .fetch_one(&t.pool)
    .await
    .unwrap();
    assert_eq!(inconsistent, 0);
    let sum: Decimal = sqlx::query_scalar("select sum(total) from orders")
        .fetch_one(&t.pool)
        .await
        .unwrap();
    assert_eq!(sum, expected_sum);
    let sold: i64 =
        sqlx::query_scalar("select -sum(delta) from inventory_movements where product_id = $1")
            .bind(f.flat_white)
            .fetch_one(&t.pool)
            .await
            .unwrap();
    assert_eq!(sold, (0..50).map(|i| 1 + i % 5).sum::<i64>());
}
