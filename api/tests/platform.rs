//! What every deployment serves whatever its services: /health, /metrics, /openapi.json; and
//! routing of a subset of services.

mod common;

use axum::http::StatusCode;
use brewlytics_api::Service;
use common::TestApp;
use serde_json::json;

#[tokio::test]
async fn health_reflects_the_database() {
    let t = TestApp::new("health").await;
    let r = t.call("GET", "/health", None).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json, json!({"status": "ok"}));
    t.pool.close().await;
    let r = t.call("GET", "/health", None).await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(r.json, json!({"status": "unavailable"}));
    // other endpoints say so without leaking driver text
    let r = t.call("GET", "/stores", None).await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(r.error(), "database unavailable");
}

#[tokio::test]
async fn metrics_count_requests_by_route_template() {
    let t = TestApp::new("metrics").await;
    let f = t.fixtures().await;
    let placed = t.call("POST", "/orders", Some(f.order())).await;
    let id = placed.json["id"].as_str().unwrap().to_owned();
    for _ in 0..3 {
        assert_eq!(
            t.call("GET", &format!("/orders/{id}"), None).await.status,
            StatusCode::OK
        );
    }
    t.call("GET", "/orders/not-a-uuid", None).await;
    t.call("GET", "/no/such/path", None).await;

    let r = t.call("GET", "/metrics", None).await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(
        r.content_type.starts_with("application/openmetrics-text"),
        "{}",
        r.content_type
    );
    let text = &r.text;
    let line = |needle: &str| {
        text.lines()
            .find(|l| l.starts_with(needle))
            .unwrap_or_else(|| panic!("no line {needle} in\n{text}"))
            .to_owned()
    };
    assert!(line(
        "brewlytics_api_requests_total{route=\"/orders/{id}\",method=\"GET\",status=\"200\"}"
    )
    .ends_with(" 3"));
    assert!(line(
        "brewlytics_api_requests_total{route=\"/orders/{id}\",method=\"GET\",status=\"404\"}"
    )
    .ends_with(" 1"));
    assert!(line(
        "brewlytics_api_requests_total{route=\"/orders\",method=\"POST\",status=\"201\"}"
    )
    .ends_with(" 1"));
    assert!(line(
        "brewlytics_api_requests_total{route=\"unmatched\",method=\"GET\",status=\"404\"}"
    )
    .ends_with(" 1"));
    assert!(line(
        "brewlytics_api_request_duration_seconds_count{route=\"/orders/{id}\",method=\"GET\"}"
    )
    .ends_with(" 4"));
    assert!(text.contains("brewlytics_api_request_duration_seconds_bucket{le=\"0.001\",route=\"/orders\",method=\"POST\"}")
        || text.contains("brewlytics_api_request_duration_seconds_bucket{route=\"/orders\",method=\"POST\",le=\"0.001\"}"), "{text}");
    // raw URIs never become labels
    assert!(!text.contains(&id) && !text.contains("not-a-uuid") && !text.contains("/no/such"));
}

#[tokio::test]
async fn openapi_lists_every_path_and_schema() {
    let t = TestApp::new("openapi").await;
    let r = t.call("GET", "/openapi.json", None).await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.json["openapi"].as_str().unwrap().starts_with("3."));
    let paths = r.json["paths"].as_object().unwrap();
    let expected = [
        ("/customers", "post"),
        ("/customers/new", "post"),
        ("/products", "post"),
        ("/products/new", "post"),
        ("/products/{id}", "patch"),
        ("/employees", "post"),
        ("/employees/active", "get"),
        ("/stores", "get"),
        ("/orders", "post"),
        ("/orders/new", "post"),
        ("/orders/{id}", "get"),
        ("/orders/{id}", "patch"),
        ("/orders/{id}", "delete"),
        ("/inventory/restock", "post"),
        ("/events", "post"),
        ("/health", "get"),
        ("/metrics", "get"),
        ("/openapi.json", "get"),
    ];
    for (path, method) in expected {
        assert!(
            paths.get(path).and_then(|p| p.get(method)).is_some(),
            "{method} {path} missing"
        );
    }
    assert_eq!(paths.len(), 16);
    let schemas = r.json["components"]["schemas"].as_object().unwrap();
    for name in [
        "NewOrder",
        "Order",
        "OrderItem",
        "ErrorBody",
        "NewProduct",
        "ProductPatch",
        "Product",
        "NewCustomer",
        "Customer",
        "NewEmployee",
        "Employee",
        "Store",
        "Restock",
        "InventoryMovement",
        "StatusUpdate",
    ] {
        assert!(schemas.contains_key(name), "schema {name} missing");
    }
    assert_eq!(schemas["Order"]["properties"]["total"]["type"], "string");
}

#[tokio::test]
async fn openapi_states_the_validation_and_every_answer() {
    use brewlytics_api::domain::{catalog, fields, order};
    let t = TestApp::new("openapi_strict").await;
    let doc = t.call("GET", "/openapi.json", None).await.json;
    let schema = |name: &str| doc["components"]["schemas"][name].clone();

    // Request schemas are as strict as the validation.
    for name in [
        "NewCustomer",
        "NewProduct",
        "ProductPatch",
        "NewEmployee",
        "NewOrder",
        "NewOrderItem",
        "StatusUpdate",
        "Restock",
    ] {
        assert_eq!(schema(name)["additionalProperties"], false, "{name}");
    }
    let customer = schema("NewCustomer");
    assert_eq!(
        customer["properties"]["name"]["pattern"],
        fields::NAME_PATTERN.as_str()
    );
    assert_eq!(customer["properties"]["name"]["minLength"], 1);
    assert_eq!(
        customer["properties"]["name"]["maxLength"],
        fields::MAX_NAME
    );
    assert_eq!(
        customer["properties"]["email"]["pattern"],
        fields::EMAIL_PATTERN.as_str()
    );
    let patch = schema("ProductPatch");
    assert_eq!(patch["minProperties"], 1);
    assert!(patch.get("maxProperties").is_none(), "{patch}");
    assert_eq!(patch["properties"]["is_available"]["type"], "boolean");
    let price = &schema("NewProduct")["properties"]["price"]["oneOf"];
    assert_eq!(
        price[0]["pattern"],
        brewlytics_api::domain::money::PRICE_PATTERN
    );
    assert_eq!(price[1]["exclusiveMinimum"], 0);
    assert_eq!(price[1]["maximum"], 10000);
    assert_eq!(price[1]["multipleOf"], 0.01);
    let items = &schema("NewOrder")["properties"]["items"];
    assert_eq!(items["minItems"], 1);
    assert_eq!(items["maxItems"], order::MAX_ITEMS);
    let quantity = &schema("NewOrderItem")["properties"]["quantity"];
    assert_eq!(
        (quantity["minimum"].clone(), quantity["maximum"].clone()),
        (json!(1), json!(order::MAX_QUANTITY))
    );
    let restock = &schema("Restock")["properties"]["quantity"];
    assert_eq!(
        (restock["minimum"].clone(), restock["maximum"].clone()),
        (json!(1), json!(catalog::MAX_RESTOCK))
    );
    assert_eq!(
        schema("NextStatus")["enum"],
        json!(["preparing", "ready", "completed", "cancelled"])
    );

    // Every answer the server can give is documented, with the error body's schema.
    let paths = doc["paths"].as_object().unwrap();
    let mut body_operations = 0;
    for (path, item) in paths {
        for (method, op) in item.as_object().unwrap() {
            let responses = op["responses"].as_object().unwrap();
            let has = |code: &str| responses.contains_key(code);
            if op.get("requestBody").is_some() {
                body_operations += 1;
                for code in ["400", "413", "415", "422"] {
                    assert!(has(code), "{method} {path} lacks {code}");
                    assert_eq!(
                        responses[code]["content"]["application/json"]["schema"]["$ref"],
                        "#/components/schemas/ErrorBody"
                    );
                }
            }
            if !["/metrics", "/openapi.json"].contains(&path.as_str()) {
                assert!(has("503"), "{method} {path} lacks 503");
            }
            for (code, response) in responses {
                assert!(
                    response["headers"]["x-request-id"].is_object(),
                    "{method} {path} {code} lacks x-request-id"
                );
            }
        }
    }
    assert_eq!(body_operations, 11);
    for (path, method) in [
        ("/orders/{id}", "get"),
        ("/orders/{id}", "patch"),
        ("/orders/{id}", "delete"),
        ("/products/{id}", "patch"),
    ] {
        assert!(
            paths[path][method]["responses"].get("404").is_some(),
            "{method} {path}"
        );
    }
    assert!(paths["/orders"]["post"]["responses"].get("409").is_some());
    let metrics = &paths["/metrics"]["get"]["responses"]["200"]["content"];
    assert!(
        metrics
            .get("application/openmetrics-text; version=1.0.0; charset=utf-8")
            .is_some(),
        "{metrics}"
    );
    // Links from a created order to the operations on it.
    let links = &paths["/orders"]["post"]["responses"]["201"]["links"];
    assert_eq!(links["get_order"]["operationId"], "get_order");
    assert_eq!(
        links["delete_order"]["parameters"]["id"],
        "$response.body#/id"
    );
}

#[tokio::test]
async fn a_subset_of_services_serves_only_its_routes() {
    let t = TestApp::with_services("subset", &[Service::Orders]).await;
    let f = t.fixtures().await;
    let r = t.call("POST", "/orders", Some(f.order())).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let p = t
        .call(
            "POST",
            "/products",
            Some(json!({"name": "X", "category": "tea", "price": "1.00"})),
        )
        .await;
    assert_eq!(p.status, StatusCode::NOT_FOUND);
    assert_eq!(p.error(), "no route for POST /products");
    assert_eq!(
        t.call("GET", "/stores", None).await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(t.call("GET", "/health", None).await.status, StatusCode::OK);
    assert_eq!(t.call("GET", "/metrics", None).await.status, StatusCode::OK);
    let doc = t.call("GET", "/openapi.json", None).await;
    let paths: Vec<&String> = doc.json["paths"].as_object().unwrap().keys().collect();
    assert!(paths.iter().any(|p| p.as_str() == "/orders/{id}"));
    assert!(
        !paths
            .iter()
            .any(|p| p.starts_with("/products") || p.starts_with("/stores")),
        "{paths:?}"
    );
    let n: i64 = sqlx::query_scalar("select count(*) from products")
        .fetch_one(&t.pool)
        .await
        .unwrap();
    assert_eq!(n, 4, "the refused product was not written");
}

#[tokio::test]
async fn serve_binds_and_shuts_down_gracefully() {
    let t = TestApp::new("serve").await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(brewlytics_api::serve(
        listener,
        t.state.clone(),
        &Service::ALL,
        async move {
            let _ = stopped.await;
        },
    ));
    // a minimal HTTP/1.1 request over a plain socket
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut sock = tokio::net::TcpStream::connect(addr).await.unwrap();
    sock.write_all(b"GET /health HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut answer = String::new();
    sock.read_to_string(&mut answer).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.ends_with("{\"status\":\"ok\"}"), "{answer}");
    stop.send(()).unwrap();
    let result = tokio::time::timeout(std::time::Duration::from_secs(10), server)
        .await
        .expect("server stops within 10 s")
        .unwrap();
    assert!(result.is_ok());
}
