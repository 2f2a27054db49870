//! Provisioning over Metabase's REST API:
//!
//! 1. `POST /api/session` logs in;
//! 2. `GET /api/database`, and `POST /api/database` when coffee_olap is not there yet;
//! 3. `GET /api/card`, then `POST /api/card` or `PUT /api/card/:id` per chart;
//! 4. `GET /api/dashboard`, `POST /api/dashboard` when missing, `GET /api/dashboard/:id` and
//!    `PUT /api/dashboard/:id` with its filters and `dashcards` (existing ones keep their ids).
//!
//! Everything is found by name first, so running it again updates in place: no duplicates.
//! The database password is sent to Metabase only; errors and logs never contain it.

use std::collections::BTreeMap;

use serde_json::{json, Value};

use super::{card_payload, dashboard_parameters, dashcards, MetabaseError, Provisioned, Target};
use crate::connection::OlapConnection;
use crate::definition::Definition;
use crate::http::{id_of, ApiError, JsonApi, Method};

/// Logs in, adds the OLAP database if missing, creates or updates every card and the
/// dashboard. Idempotent.
pub async fn provision(
    target: &Target,
    olap: &OlapConnection,
    def: &Definition,
) -> Result<Provisioned, MetabaseError> {
    let api = login(target, olap).await?;
    let (database_id, database_created) = database(&api, olap, def).await?;
    let (card_ids, cards_created, cards_updated) = cards(&api, def, database_id).await?;
    let (dashboard_id, dashboard_created) = dashboard(&api, def, &card_ids).await?;
    Ok(Provisioned {
        database_id,
        database_created,
        cards_created,
        cards_updated,
        dashboard_id,
        dashboard_created,
        dashboard_url: format!("{}/dashboard/{dashboard_id}", api.base()),
    })
}

async fn login(target: &Target, olap: &OlapConnection) -> Result<JsonApi, ApiError> {
    let secrets = vec![
        target.password.expose().to_owned(),
        olap.password.expose().to_owned(),
    ];
    let mut api = JsonApi::new("Metabase", &target.url, secrets)?;
    let path = "/api/session";
    let credentials = json!({"username": target.user, "password": target.password.expose()});
    let session = api.call(Method::Post, path, Some(&credentials)).await?;
    let token = session
        .get("id")
        .and_then(Value::as_str)
        .ok_or_else(|| api.shape(Method::Post, path, "no session id"))?
        .to_owned();
    api.set_header("X-Metabase-Session", &token);
    tracing::info!(metabase = %api.base(), "logged in to metabase");
    Ok(api)
}

/// A list answer: a JSON array, or an object whose `data` is one (`GET /api/database`).
async fn list(api: &JsonApi, path: &str) -> Result<Vec<Value>, ApiError> {
    match api.call(Method::Get, path, None).await? {
        Value::Array(a) => Ok(a),
        Value::Object(mut o) => match o.remove("data") {
            Some(Value::Array(a)) => Ok(a),
            _ => Err(api.shape(Method::Get, path, "expected a list")),
        },
        _ => Err(api.shape(Method::Get, path, "expected a list")),
    }
}

fn archived(v: &Value) -> bool {
    v.get("archived").and_then(Value::as_bool).unwrap_or(false)
}

/// The database's id, and whether it was added now: found by its name, or a PostgreSQL
/// database with the same host and database name.
async fn database(
    api: &JsonApi,
    olap: &OlapConnection,
    def: &Definition,
) -> Result<(i64, bool), ApiError> {
    let path = "/api/database";
    let databases = list(api, path).await?;
    let found = databases.iter().find(|d| {
        let details = d.get("details");
        let field = |k: &str| details.and_then(|x| x.get(k)).and_then(Value::as_str);
        d.get("name").and_then(Value::as_str) == Some(def.database.as_str())
            || (d.get("engine").and_then(Value::as_str) == Some("postgres")
                && field("dbname") == Some(olap.dbname.as_str())
                && field("host") == Some(olap.host.as_str()))
    });
    if let Some(d) = found {
        return Ok((id_of(api, d, Method::Get, path)?, false));
    }
    let body = json!({
        "engine": "postgres",
        "name": def.database,
        "details": {
            "host": olap.host,
            "port": olap.port,
            "dbname": olap.dbname,
            "user": olap.user,
            "password": olap.password.expose(),
            "ssl": olap.ssl,
        },
        "is_full_sync": true,
    });
    let created = api.call(Method::Post, path, Some(&body)).await?;
    tracing::info!(name = %def.database, "added the OLAP database to metabase");
    Ok((id_of(api, &created, Method::Post, path)?, true))
}

/// Every chart's card created or updated: card ids by chart key, and how many were created
/// and updated.
async fn cards(
    api: &JsonApi,
    def: &Definition,
    database_id: i64,
) -> Result<(BTreeMap<String, i64>, usize, usize), ApiError> {
    let existing = list(api, "/api/card").await?;
    let mut card_ids = BTreeMap::new();
    let (mut created, mut updated) = (0, 0);
    for placed in def.charts() {
        let chart = placed.chart;
        let payload = card_payload(chart, database_id);
        let found = existing.iter().find(|c| {
            let db = c
                .get("database_id")
                .or_else(|| c.get("dataset_query").and_then(|d| d.get("database")))
                .and_then(Value::as_i64);
            c.get("name") == Some(&payload["name"]) && !archived(c) && db == Some(database_id)
        });
        let id = match found {
            Some(c) => {
                let id = id_of(api, c, Method::Get, "/api/card")?;
                let path = format!("/api/card/{id}");
                api.call(Method::Put, &path, Some(&payload)).await?;
                updated += 1;
                id
            }
            None => {
                let answer = api.call(Method::Post, "/api/card", Some(&payload)).await?;
                created += 1;
                id_of(api, &answer, Method::Post, "/api/card")?
            }
        };
        card_ids.insert(chart.key(), id);
    }
    tracing::info!(created, updated, "metabase cards ready");
    Ok((card_ids, created, updated))
}

/// The dashboard, created when missing, then given its filters and cards: its id, and
/// whether it was created now.
async fn dashboard(
    api: &JsonApi,
    def: &Definition,
    card_ids: &BTreeMap<String, i64>,
) -> Result<(i64, bool), ApiError> {
    let dashboards = list(api, "/api/dashboard").await?;
    let found = dashboards
        .iter()
        .find(|d| d.get("name").and_then(Value::as_str) == Some(def.name.as_str()) && !archived(d));
    let (id, created) = match found {
        Some(d) => (id_of(api, d, Method::Get, "/api/dashboard")?, false),
        None => {
            let body = json!({
                "name": def.name,
                "description": def.description,
                "parameters": dashboard_parameters(def),
                "collection_id": null,
            });
            let answer = api
                .call(Method::Post, "/api/dashboard", Some(&body))
                .await?;
            (id_of(api, &answer, Method::Post, "/api/dashboard")?, true)
        }
    };
    let path = format!("/api/dashboard/{id}");
    let current = api.call(Method::Get, &path, None).await?;
    let mut existing = BTreeMap::new();
    for dc in current
        .get("dashcards")
        .or_else(|| current.get("ordered_cards"))
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        if let (Some(id), Some(card)) = (
            dc.get("id").and_then(Value::as_i64),
            dc.get("card_id").and_then(Value::as_i64),
        ) {
            existing.entry(card).or_insert(id);
        }
    }
    let body = json!({
        "name": def.name,
        "description": def.description,
        "parameters": dashboard_parameters(def),
        "dashcards": dashcards(def, card_ids, &existing),
    });
    api.call(Method::Put, &path, Some(&body)).await?;
    tracing::info!(dashboard_id = id, "metabase dashboard ready");
    Ok((id, created))
}
