//! Metabase provisioning against a local stand-in.
//!
//! Metabase itself (a JVM application) cannot run here, so these tests run an axum server
//! on 127.0.0.1:0 that plays Metabase's REST API: it keeps state (session, databases, cards,
//! dashboards and their dashcards) and checks every request against the shapes Metabase
//! documents for v0.47+ (`POST /api/session`; `GET`/`POST /api/database`; `GET`/`POST
//! /api/card`, `PUT /api/card/:id` with a native `dataset_query` whose `template-tags` cover
//! its `{{variables}}`; `GET`/`POST /api/dashboard`, `GET`/`PUT /api/dashboard/:id` with
//! `dashcards` whose `parameter_mappings` target those tags). A request that does not match
//! is answered 400 and recorded, and the tests fail on any. What this cannot prove is that a
//! real Metabase renders the cards as intended; README.md says how to try one.

use std::sync::{Arc, Mutex};

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use brewlytics_dashboards::definition::Definition;
use brewlytics_dashboards::http::ApiError;
use brewlytics_dashboards::metabase::{
    self, MetabaseError, OlapConnection, Provisioned, Secret, Target,
};
use brewlytics_support::DbUrl;
use serde_json::{json, Value};

const ADMIN: &str = "admin@example.com";
const ADMIN_PASSWORD: &str = "mb-admin-s3cret";
const DB_PASSWORD: &str = "olap-pw-9f2c";
const TOKEN: &str = "8c0e6c5e-6d0c-4f5a-9d7e-session";

#[derive(Default)]
struct Mb {
    databases: Vec<Value>,
    cards: Vec<Value>,
    dashboards: Vec<Value>,
    next_id: i64,
    /// "METHOD path" of every request, in order.
    requests: Vec<String>,
    /// Why requests were refused.
    violations: Vec<String>,
}

type Shared = Arc<Mutex<Mb>>;

fn refuse(mb: &mut Mb, what: String) -> Response {
    mb.violations.push(what.clone());
    (StatusCode::BAD_REQUEST, Json(json!({"message": what}))).into_response()
}

fn authed(mb: &mut Mb, headers: &HeaderMap) -> Option<Response> {
    match headers
        .get("x-metabase-session")
        .and_then(|v| v.to_str().ok())
    {
        Some(TOKEN) => None,
        _ => {
            mb.violations.push("request without a session".into());
            Some((StatusCode::UNAUTHORIZED, "Unauthenticated").into_response())
        }
    }
}

fn next_id(mb: &mut Mb) -> i64 {
    mb.next_id += 1;
    mb.next_id
}

fn str_field<'a>(v: &'a Value, k: &str) -> Option<&'a str> {
    v.get(k).and_then(Value::as_str).filter(|s| !s.is_empty())
}

async fn session(State(s): State<Shared>, Json(body): Json<Value>) -> Response {
    let mut mb = s.lock().unwrap();
    mb.requests.push("POST /api/session".into());
    let (Some(user), Some(pw)) = (str_field(&body, "username"), str_field(&body, "password"))
    else {
        return refuse(
            &mut mb,
            "session: username and password are required".into(),
        );
    };
    if user != ADMIN || pw != ADMIN_PASSWORD {
        return (
            StatusCode::UNAUTHORIZED,
            Json(json!({"errors": {"password": "did not match stored password"}})),
        )
            .into_response();
    }
    Json(json!({"id": TOKEN})).into_response()
}

async fn list_databases(State(s): State<Shared>, headers: HeaderMap) -> Response {
    let mut mb = s.lock().unwrap();
    mb.requests.push("GET /api/database".into());
    if let Some(r) = authed(&mut mb, &headers) {
        return r;
    }
    let data: Vec<Value> = mb
        .databases
        .iter()
        .map(|d| {
            let mut d = d.clone();
            d["details"]["password"] = json!("**MetabasePass**");
            d
        })
        .collect();
    Json(json!({"data": data, "total": data.len()})).into_response()
}

async fn create_database(
    State(s): State<Shared>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    let mut mb = s.lock().unwrap();
    mb.requests.push("POST /api/database".into());
    if let Some(r) = authed(&mut mb, &headers) {
        return r;
    }
    let details = body.get("details").cloned().unwrap_or(Value::Null);
    let ok = str_field(&body, "name").is_some()
        && str_field(&body, "engine") == Some("postgres")
        && ["host", "dbname", "user", "password"]
            .iter()
            .all(|k| str_field(&details, k).is_some())
        && details.get("port").and_then(Value::as_u64).is_some();
    if !ok {
        return refuse(&mut mb, format!("database: bad body {body}"));
    }
    let id = next_id(&mut mb);
    let db = json!({"id": id, "name": body["name"], "engine": "postgres", "details": details});
    mb.databases.push(db.clone());
    Json(db).into_response()
}

/// Checks a card body the way Metabase's schema does; the message says what is wrong.
fn check_card(mb: &Mb, body: &Value, partial: bool) -> Result<(), String> {
    let displays = ["table", "bar", "row", "line", "area", "pie", "scalar"];
    if !partial || body.get("name").is_some() {
        str_field(body, "name").ok_or("card: name must be a non-blank string")?;
    }
    if !partial || body.get("display").is_some() {
        let d = str_field(body, "display").ok_or("card: display is required")?;
        if !displays.contains(&d) {
            return Err(format!("card: unknown display {d}"));
        }
    }
    if !partial || body.get("visualization_settings").is_some() {
        body.get("visualization_settings")
            .and_then(Value::as_object)
            .ok_or("card: visualization_settings must be a map")?;
    }
    if !partial || body.get("dataset_query").is_some() {
        let q = body
            .get("dataset_query")
            .and_then(Value::as_object)
            .ok_or("card: dataset_query must be a map")?;
        if q.get("type").and_then(Value::as_str) != Some("native") {
            return Err("card: dataset_query.type must be native".into());
        }
        let db = q
            .get("database")
            .and_then(Value::as_i64)
            .ok_or("card: no database")?;
        if !mb.databases.iter().any(|d| d["id"] == db) {
            return Err(format!("card: database {db} does not exist"));
        }
        let native = q.get("native").ok_or("card: no native")?;
        let sql = str_field(native, "query").ok_or("card: no native.query")?;
        let tags = native
            .get("template-tags")
            .and_then(Value::as_object)
            .ok_or("card: template-tags must be a map")?;
        let mut rest = sql;
        while let Some(i) = rest.find("{{") {
            let end = rest[i..].find("}}").ok_or("card: unclosed {{")? + i;
            let var = rest[i + 2..end].trim();
            let tag = tags
                .get(var)
                .ok_or(format!("card: no template tag for {{{{{var}}}}}"))?;
            let valid = tag["name"] == var
                && str_field(tag, "id").is_some()
                && str_field(tag, "display-name").is_some()
                && ["text", "number", "date"].contains(&tag["type"].as_str().unwrap_or(""));
            if !valid {
                return Err(format!("card: bad template tag {tag}"));
            }
            rest = &rest[end + 2..];
        }
    }
    Ok(())
}

async fn list_cards(State(s): State<Shared>, headers: HeaderMap) -> Response {
    let mut mb = s.lock().unwrap();
    mb.requests.push("GET /api/card".into());
    if let Some(r) = authed(&mut mb, &headers) {
        return r;
    }
    Json(Value::Array(mb.cards.clone())).into_response()
}

async fn create_card(
    State(s): State<Shared>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    let mut mb = s.lock().unwrap();
    mb.requests.push("POST /api/card".into());
    if let Some(r) = authed(&mut mb, &headers) {
        return r;
    }
    if let Err(e) = check_card(&mb, &body, false) {
        return refuse(&mut mb, e);
    }
    let id = next_id(&mut mb);
    let mut card = body.clone();
    card["id"] = json!(id);
    card["archived"] = json!(false);
    card["database_id"] = body["dataset_query"]["database"].clone();
    mb.cards.push(card.clone());
    Json(card).into_response()
}

async fn update_card(
    State(s): State<Shared>,
    headers: HeaderMap,
    Path(id): Path<i64>,
    Json(body): Json<Value>,
) -> Response {
    let mut mb = s.lock().unwrap();
    mb.requests.push(format!("PUT /api/card/{id}"));
    if let Some(r) = authed(&mut mb, &headers) {
        return r;
    }
    if let Err(e) = check_card(&mb, &body, true) {
        return refuse(&mut mb, e);
    }
    let Some(card) = mb.cards.iter_mut().find(|c| c["id"] == id) else {
        return (StatusCode::NOT_FOUND, "Not found.").into_response();
    };
    for (k, v) in body.as_object().unwrap() {
        card[k] = v.clone();
    }
    card["database_id"] = card["dataset_query"]["database"].clone();
    Json(card.clone()).into_response()
}

async fn list_dashboards(State(s): State<Shared>, headers: HeaderMap) -> Response {
    let mut mb = s.lock().unwrap();
    mb.requests.push("GET /api/dashboard".into());
    if let Some(r) = authed(&mut mb, &headers) {
        return r;
    }
    let list: Vec<Value> = mb
        .dashboards
        .iter()
        .map(|d| json!({"id": d["id"], "name": d["name"], "archived": false}))
        .collect();
    Json(Value::Array(list)).into_response()
}

fn check_parameters(v: Option<&Value>) -> Result<(), String> {
    let Some(v) = v else { return Ok(()) };
    let list = v.as_array().ok_or("dashboard: parameters must be a list")?;
    for p in list {
        for k in ["id", "name", "slug", "type"] {
            str_field(p, k).ok_or(format!("dashboard: parameter without {k}: {p}"))?;
        }
    }
    Ok(())
}

async fn create_dashboard(
    State(s): State<Shared>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    let mut mb = s.lock().unwrap();
    mb.requests.push("POST /api/dashboard".into());
    if let Some(r) = authed(&mut mb, &headers) {
        return r;
    }
    if str_field(&body, "name").is_none() {
        return refuse(&mut mb, "dashboard: name is required".into());
    }
    if let Err(e) = check_parameters(body.get("parameters")) {
        return refuse(&mut mb, e);
    }
    let id = next_id(&mut mb);
    let dash = json!({
        "id": id, "name": body["name"], "description": body.get("description"),
        "parameters": body.get("parameters").cloned().unwrap_or(json!([])),
        "dashcards": [], "archived": false,
    });
    mb.dashboards.push(dash.clone());
    Json(dash).into_response()
}

async fn get_dashboard(
    State(s): State<Shared>,
    headers: HeaderMap,
    Path(id): Path<i64>,
) -> Response {
    let mut mb = s.lock().unwrap();
    mb.requests.push(format!("GET /api/dashboard/{id}"));
    if let Some(r) = authed(&mut mb, &headers) {
        return r;
    }
    match mb.dashboards.iter().find(|d| d["id"] == id) {
        Some(d) => Json(d.clone()).into_response(),
        None => (StatusCode::NOT_FOUND, "Not found.").into_response(),
    }
}

fn check_dashcards(mb: &Mb, dash: &Value, body: &Value) -> Result<(), String> {
    check_parameters(body.get("parameters"))?;
    let params = body.get("parameters").unwrap_or(&dash["parameters"]);
    let param_ids: Vec<&str> = params
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| p["id"].as_str())
        .collect();
    let Some(cards) = body.get("dashcards") else {
        return Ok(());
    };
    let cards = cards
        .as_array()
        .ok_or("dashboard: dashcards must be a list")?;
    let existing: Vec<i64> = dash["dashcards"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|d| d["id"].as_i64())
        .collect();
    for dc in cards {
        let id = dc["id"].as_i64().ok_or("dashcard: id must be an integer")?;
        if id >= 0 && !existing.contains(&id) {
            return Err(format!("dashcard: id {id} is not on this dashboard"));
        }
        let card_id = dc["card_id"].as_i64().ok_or("dashcard: card_id")?;
        let card = mb
            .cards
            .iter()
            .find(|c| c["id"] == card_id)
            .ok_or(format!("dashcard: card {card_id} does not exist"))?;
        let mut pos = [0u64; 4];
        for (i, k) in ["row", "col", "size_x", "size_y"].iter().enumerate() {
            pos[i] = dc[*k]
                .as_u64()
                .ok_or(format!("dashcard: {k} must be >= 0"))?;
        }
        if pos[1] + pos[2] > 24 || pos[2] == 0 || pos[3] == 0 {
            return Err(format!("dashcard: bad size/position {dc}"));
        }
        let tags = &card["dataset_query"]["native"]["template-tags"];
        for m in dc["parameter_mappings"]
            .as_array()
            .ok_or("dashcard: parameter_mappings must be a list")?
        {
            let pid = m["parameter_id"].as_str().unwrap_or("");
            if !param_ids.contains(&pid) {
                return Err(format!("mapping: unknown parameter {pid}"));
            }
            if m["card_id"] != card_id {
                return Err("mapping: card_id differs from the dashcard's".into());
            }
            let tag = m["target"][1][1].as_str().unwrap_or("");
            if m["target"][0] != "variable"
                || m["target"][1][0] != "template-tag"
                || tags.get(tag).is_none()
            {
                return Err(format!("mapping: bad target {}", m["target"]));
            }
        }
    }
    Ok(())
}

async fn update_dashboard(
    State(s): State<Shared>,
    headers: HeaderMap,
    Path(id): Path<i64>,
    Json(body): Json<Value>,
) -> Response {
    let mut mb = s.lock().unwrap();
    mb.requests.push(format!("PUT /api/dashboard/{id}"));
    if let Some(r) = authed(&mut mb, &headers) {
        return r;
    }
    let Some(dash) = mb.dashboards.iter().find(|d| d["id"] == id).cloned() else {
        return (StatusCode::NOT_FOUND, "Not found.").into_response();
    };
    if let Err(e) = check_dashcards(&mb, &dash, &body) {
        return refuse(&mut mb, e);
    }
    let mut dash = dash;
    for k in ["name", "description", "parameters"] {
        if let Some(v) = body.get(k) {
            dash[k] = v.clone();
        }
    }
    if let Some(cards) = body.get("dashcards").and_then(Value::as_array) {
        let mut kept = Vec::new();
        for dc in cards {
            let mut dc = dc.clone();
            if dc["id"].as_i64().unwrap() < 0 {
                dc["id"] = json!(next_id(&mut mb));
            }
            kept.push(dc);
        }
        dash["dashcards"] = Value::Array(kept);
    }
    let slot = mb.dashboards.iter_mut().find(|d| d["id"] == id).unwrap();
    *slot = dash.clone();
    Json(dash).into_response()
}

async fn start() -> (String, Shared, tokio::task::JoinHandle<()>) {
    let state: Shared = Arc::default();
    let app = Router::new()
        .route("/api/session", post(session))
        .route("/api/database", get(list_databases).post(create_database))
        .route("/api/card", get(list_cards).post(create_card))
        .route("/api/card/{id}", axum::routing::put(update_card))
        .route(
            "/api/dashboard",
            get(list_dashboards).post(create_dashboard),
        )
        .route(
            "/api/dashboard/{id}",
            get(get_dashboard).put(update_dashboard),
        )
        .fallback({
            let state = state.clone();
            move |uri: axum::http::Uri| async move {
                state
                    .lock()
                    .unwrap()
                    .violations
                    .push(format!("undocumented endpoint {uri}"));
                StatusCode::NOT_FOUND
            }
        })
        .with_state(state.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let server = tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    (url, state, server)
}

fn olap() -> OlapConnection {
    let url = DbUrl::parse(&format!(
        "postgres://brew:{DB_PASSWORD}@127.0.0.1:5544/coffee_olap"
    ))
    .unwrap();
    OlapConnection::from_url(&url, Some("olap-db")).unwrap()
}

fn target(url: &str, password: &str) -> Target {
    Target {
        url: format!("{url}/"),
        user: ADMIN.into(),
        password: Secret::new(password),
    }
}

async fn provision(url: &str) -> Provisioned {
    metabase::provision(
        &target(url, ADMIN_PASSWORD),
        &olap(),
        &Definition::load().unwrap(),
    )
    .await
    .unwrap()
}

#[tokio::test]
async fn provisioning_twice_creates_everything_once() {
    let (url, state, server) = start().await;
    // One card per chart of the shared definition (every question, and the headline figures).
    let cards = Definition::load().unwrap().charts().count();
    assert_eq!(cards, 21);

    let first = provision(&url).await;
    assert!(first.database_created && first.dashboard_created);
    assert_eq!((first.cards_created, first.cards_updated), (cards, 0));
    assert!(first
        .dashboard_url
        .ends_with(&format!("/dashboard/{}", first.dashboard_id)));
    let dashcards_before = {
        let mb = state.lock().unwrap();
        assert!(mb.violations.is_empty(), "{:?}", mb.violations);
        assert_eq!(mb.databases.len(), 1);
        let details = &mb.databases[0]["details"];
        assert_eq!(details["host"], "olap-db");
        assert_eq!(details["port"], 5544);
        assert_eq!(details["dbname"], "coffee_olap");
        assert_eq!(details["user"], "brew");
        assert_eq!(
            details["password"], DB_PASSWORD,
            "the password goes to Metabase"
        );
        assert_eq!(mb.cards.len(), cards);
        let daily = mb
            .cards
            .iter()
            .find(|c| c["name"] == "Daily revenue")
            .unwrap();
        assert_eq!(daily["display"], "bar");
        assert_eq!(
            daily["visualization_settings"]["graph.metrics"],
            json!(["revenue"])
        );
        let sql = daily["dataset_query"]["native"]["query"].as_str().unwrap();
        assert!(sql.contains("[[and d.date >= {{from}}]]"), "{sql}");
        let kpi = mb
            .cards
            .iter()
            .find(|c| c["name"] == "Today's revenue")
            .unwrap();
        assert_eq!(kpi["display"], "scalar");
        assert_eq!(
            kpi["visualization_settings"]["scalar.field"],
            "today_revenue"
        );
        assert_eq!(mb.dashboards.len(), 1);
        let dash = &mb.dashboards[0];
        assert_eq!(dash["parameters"].as_array().unwrap().len(), 3);
        let dcs = dash["dashcards"].as_array().unwrap().clone();
        assert_eq!(dcs.len(), cards);
        // Every card is wired to both date filters, and to the store filter but for the two
        // clickstream questions (browsing has no store).
        let wired = |n: usize| {
            dcs.iter()
                .filter(|d| d["parameter_mappings"].as_array().unwrap().len() == n)
                .count()
        };
        assert_eq!((wired(3), wired(2)), (cards - 2, 2));
        dcs
    };

    let second = provision(&url).await;
    assert!(!second.database_created && !second.dashboard_created);
    assert_eq!((second.cards_created, second.cards_updated), (0, cards));
    assert_eq!(second.dashboard_id, first.dashboard_id);
    assert_eq!(second.database_id, first.database_id);
    let mb = state.lock().unwrap();
    assert!(mb.violations.is_empty(), "{:?}", mb.violations);
    assert_eq!(mb.databases.len(), 1);
    assert_eq!(mb.cards.len(), cards);
    assert_eq!(mb.dashboards.len(), 1);
    let ids = |dcs: &[Value]| -> Vec<(Value, Value)> {
        dcs.iter()
            .map(|d| (d["id"].clone(), d["card_id"].clone()))
            .collect()
    };
    assert_eq!(
        ids(mb.dashboards[0]["dashcards"].as_array().unwrap()),
        ids(&dashcards_before),
        "the second run keeps the same dashcards"
    );
    let posts = mb
        .requests
        .iter()
        .filter(|r| r.starts_with("POST /api/card"))
        .count();
    assert_eq!(posts, cards);
    // What provisioning prints never holds a password.
    for text in [first.to_string(), second.to_string()] {
        assert!(!text.contains(DB_PASSWORD) && !text.contains(ADMIN_PASSWORD));
    }
    drop(mb);
    server.abort();
}

#[tokio::test]
async fn an_existing_database_is_reused() {
    let (url, state, server) = start().await;
    {
        let mut mb = state.lock().unwrap();
        mb.next_id = 40;
        mb.databases.push(json!({
            "id": 7, "name": "Analytics", "engine": "postgres",
            "details": {"host": "olap-db", "port": 5544, "dbname": "coffee_olap", "user": "brew"}
        }));
    }
    let done = provision(&url).await;
    assert_eq!(done.database_id, 7);
    assert!(!done.database_created);
    let mb = state.lock().unwrap();
    assert!(mb.violations.is_empty(), "{:?}", mb.violations);
    assert!(!mb.requests.contains(&"POST /api/database".to_string()));
    assert!(mb.cards.iter().all(|c| c["database_id"] == 7));
    drop(mb);
    server.abort();
}

#[tokio::test]
async fn a_failed_login_is_clear_and_keeps_secrets() {
    let (url, state, server) = start().await;
    let wrong = "wrong-pass-123";
    let err = metabase::provision(&target(&url, wrong), &olap(), &Definition::load().unwrap())
        .await
        .unwrap_err();
    assert!(
        matches!(err, MetabaseError::Api(ApiError::Http { status: 401, .. })),
        "{err:?}"
    );
    let text = err.to_string();
    assert!(
        text.contains("/api/session") && text.contains("401"),
        "{text}"
    );
    assert!(
        !text.contains(wrong) && !text.contains(DB_PASSWORD),
        "{text}"
    );
    assert!(state.lock().unwrap().databases.is_empty());

    // Nothing listening: a transport error naming the URL, no secret either.
    server.abort();
    let _ = server.await;
    let err = metabase::provision(
        &target("http://127.0.0.1:9", ADMIN_PASSWORD),
        &olap(),
        &Definition::load().unwrap(),
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("127.0.0.1:9") && !err.contains(ADMIN_PASSWORD),
        "{err}"
    );
}
