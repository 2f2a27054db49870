//! Provisioning over Superset's REST API (`/api/v1`):
//!
//! 1. `POST /security/login` (database login) gives an access token, `GET
//!    /security/csrf_token/` a CSRF token tied to a session cookie: every later call sends all
//!    three;
//! 2. the database, found by name (`GET /database/?q=…`), then `PUT /database/:id` (keeps the
//!    password current) or `POST /database/`;
//! 3. the datasets of that database (`GET /dataset/?q=…`): each star table added when
//!    missing; each question's virtual dataset created, or updated and refreshed
//!    (`PUT /dataset/:id`, `PUT /dataset/:id/refresh`) so its columns follow its SQL;
//! 4. the dashboard by slug (`GET /dashboard/:slug`), created when missing;
//! 5. the charts, found by the key in their form data (`GET /chart/?q=…`): `PUT /chart/:id`
//!    or `POST /chart/` onto the dashboard; charts of this dashboard that the definition no
//!    longer has are deleted;
//! 6. `PUT /dashboard/:id` with the layout.
//!
//! Running it again updates everything in place: nothing is duplicated. Passwords and tokens
//! go to Superset only; errors and logs never contain them.

use std::collections::BTreeMap;

use serde_json::{json, Value};

use super::{
    chart_key, chart_payload, dashboard_payload, database_payload, question_dataset, Column,
    Counts, Dataset, Provisioned, SupersetError, KEY_FIELD, SCHEMA, STAR_TABLES,
};
use crate::connection::{OlapConnection, Target};
use crate::definition::Definition;
use crate::http::{id_of, ApiError, JsonApi, Method};

/// Logs in, then creates or updates the database, the datasets, the charts and the
/// dashboard. Idempotent.
pub async fn provision(
    target: &Target,
    olap: &OlapConnection,
    def: &Definition,
) -> Result<Provisioned, SupersetError> {
    let api = login(target, olap).await?;
    let (database_id, database_created) = database(&api, def, olap).await?;
    let (datasets, dataset_counts) = datasets(&api, def, database_id).await?;
    let (dashboard_id, dashboard_created) = dashboard(&api, def).await?;
    let (chart_ids, charts, charts_removed) = charts(&api, def, &datasets, dashboard_id).await?;
    let path = format!("/api/v1/dashboard/{dashboard_id}");
    api.call(
        Method::Put,
        &path,
        Some(&dashboard_payload(def, &chart_ids)),
    )
    .await?;
    tracing::info!(dashboard_id, "superset dashboard ready");
    Ok(Provisioned {
        database_id,
        database_created,
        datasets: dataset_counts,
        charts,
        charts_removed,
        dashboard_id,
        dashboard_created,
        dashboard_url: format!("{}/superset/dashboard/{}/", api.base(), def.slug),
    })
}

/// Whether the Superset at `url` answers its health check (`GET /health`: `OK`).
pub async fn healthy(url: &str) -> bool {
    let check = async {
        let res = reqwest::get(format!("{}/health", url.trim_end_matches('/'))).await?;
        let ok = res.status().is_success();
        Ok::<_, reqwest::Error>(ok && res.text().await?.trim() == "OK")
    };
    matches!(
        tokio::time::timeout(std::time::Duration::from_secs(5), check).await,
        Ok(Ok(true))
    )
}

/// A client logged in as the target's user, with its CSRF token and session cookie.
pub async fn login(target: &Target, olap: &OlapConnection) -> Result<JsonApi, ApiError> {
    let secrets = vec![
        target.password.expose().to_owned(),
        olap.password.expose().to_owned(),
    ];
    let mut api = JsonApi::new("Superset", &target.url, secrets)?;
    let path = "/api/v1/security/login";
    let body = json!({"username": target.user, "password": target.password.expose(),
                      "provider": "db", "refresh": false});
    let answer = api.call(Method::Post, path, Some(&body)).await?;
    let token = answer
        .get("access_token")
        .and_then(Value::as_str)
        .ok_or_else(|| api.shape(Method::Post, path, "no access_token"))?
        .to_owned();
    api.set_header("Authorization", &format!("Bearer {token}"));
    let path = "/api/v1/security/csrf_token/";
    let answer = api.send(Method::Get, path, &[], None).await?;
    let csrf = answer
        .body
        .get("result")
        .and_then(Value::as_str)
        .ok_or_else(|| api.shape(Method::Get, path, "no CSRF token"))?
        .to_owned();
    api.set_header("X-CSRFToken", &csrf);
    if !answer.cookies.is_empty() {
        api.set_header("Cookie", &answer.cookies.join("; "));
    }
    let referer = format!("{}/", api.base());
    api.set_header("Referer", &referer);
    tracing::info!(superset = %api.base(), "logged in to superset");
    Ok(api)
}

/// A Rison string (the query language of Superset's list endpoints): always quoted.
fn rison_string(text: &str) -> String {
    format!("'{}'", text.replace('!', "!!").replace('\'', "!'"))
}

/// Every object a list endpoint returns for `filters` (a Rison list), page after page.
async fn list_all(
    api: &JsonApi,
    path: &str,
    filters: &str,
    columns: &str,
) -> Result<Vec<Value>, ApiError> {
    const PAGE_SIZE: usize = 100;
    let mut out = Vec::new();
    for page in 0.. {
        let q = format!(
            "(filters:!({filters}),columns:!({columns}),page:{page},page_size:{PAGE_SIZE})"
        );
        let answer = api.send(Method::Get, path, &[("q", &q)], None).await?;
        let result = answer
            .body
            .get("result")
            .and_then(Value::as_array)
            .ok_or_else(|| api.shape(Method::Get, path, "no result list"))?;
        out.extend(result.iter().cloned());
        if result.len() < PAGE_SIZE {
            break;
        }
    }
    Ok(out)
}

fn text<'a>(v: &'a Value, field: &str) -> Option<&'a str> {
    v.get(field).and_then(Value::as_str)
}

async fn database(
    api: &JsonApi,
    def: &Definition,
    olap: &OlapConnection,
) -> Result<(i64, bool), ApiError> {
    let path = "/api/v1/database/";
    let filter = format!(
        "(col:database_name,opr:eq,value:{})",
        rison_string(&def.database)
    );
    let found = list_all(api, path, &filter, "id,database_name").await?;
    let body = database_payload(def, olap);
    match found.first() {
        Some(db) => {
            let id = id_of(api, db, Method::Get, path)?;
            api.call(Method::Put, &format!("{path}{id}"), Some(&body))
                .await?;
            Ok((id, false))
        }
        None => {
            let created = api.call(Method::Post, path, Some(&body)).await?;
            tracing::info!(name = %def.database, "added the OLAP database to superset");
            Ok((id_of(api, &created, Method::Post, path)?, true))
        }
    }
}

/// The datasets: the star tables' and the questions'. Returns each question's dataset by
/// question name.
async fn datasets(
    api: &JsonApi,
    def: &Definition,
    database_id: i64,
) -> Result<(BTreeMap<String, Dataset>, Counts), SupersetError> {
    let path = "/api/v1/dataset/";
    let filter = format!("(col:database,opr:rel_o_m,value:{database_id})");
    let existing = list_all(api, path, &filter, "id,table_name,schema").await?;
    let find = |name: &str| {
        existing
            .iter()
            .find(|d| text(d, "table_name") == Some(name) && text(d, "schema") == Some(SCHEMA))
    };
    let mut counts = Counts::default();
    for table in STAR_TABLES {
        if find(table).is_none() {
            let body = json!({"database": database_id, "schema": SCHEMA, "table_name": table});
            api.call(Method::Post, path, Some(&body)).await?;
            counts.created += 1;
        }
    }
    let mut out = BTreeMap::new();
    for q in def.questions() {
        let body = question_dataset(&q)?;
        let id = match find(&q.name) {
            Some(d) => {
                let id = id_of(api, d, Method::Get, path)?;
                api.call(Method::Put, &format!("{path}{id}"), Some(&body))
                    .await?;
                // Its columns follow its SQL.
                api.call(Method::Put, &format!("{path}{id}/refresh"), None)
                    .await?;
                counts.updated += 1;
                id
            }
            None => {
                // Creation takes no description: it follows in an update.
                let first = json!({"database": database_id, "schema": SCHEMA,
                                   "table_name": body["table_name"], "sql": body["sql"]});
                let created = api.call(Method::Post, path, Some(&first)).await?;
                let id = id_of(api, &created, Method::Post, path)?;
                api.call(Method::Put, &format!("{path}{id}"), Some(&body))
                    .await?;
                counts.created += 1;
                id
            }
        };
        out.insert(q.name.clone(), dataset_columns(api, id).await?);
    }
    tracing::info!(
        created = counts.created,
        updated = counts.updated,
        "superset datasets ready"
    );
    Ok((out, counts))
}

/// A dataset's columns as Superset found them in its query's result.
async fn dataset_columns(api: &JsonApi, id: i64) -> Result<Dataset, ApiError> {
    let path = format!("/api/v1/dataset/{id}");
    let answer = api.call(Method::Get, &path, None).await?;
    let mut columns: Vec<(i64, Column)> = answer["result"]["columns"]
        .as_array()
        .ok_or_else(|| api.shape(Method::Get, &path, "no columns"))?
        .iter()
        .filter_map(|c| {
            let column = Column {
                name: text(c, "column_name")?.to_owned(),
                sql_type: text(c, "type").map(str::to_owned),
                temporal: c.get("is_dttm").and_then(Value::as_bool).unwrap_or(false),
            };
            Some((c.get("id")?.as_i64()?, column))
        })
        .collect();
    // Superset numbers them as it finds them: the order of the query's result.
    columns.sort_by_key(|c| c.0);
    Ok(Dataset {
        id,
        columns: columns.into_iter().map(|c| c.1).collect(),
    })
}

async fn dashboard(api: &JsonApi, def: &Definition) -> Result<(i64, bool), ApiError> {
    let path = format!("/api/v1/dashboard/{}", def.slug);
    match api.call(Method::Get, &path, None).await {
        Ok(found) => Ok((id_of(api, &found["result"], Method::Get, &path)?, false)),
        Err(ApiError::Http { status: 404, .. }) => {
            let body = json!({"dashboard_title": def.name, "slug": def.slug, "published": true});
            let path = "/api/v1/dashboard/";
            let created = api.call(Method::Post, path, Some(&body)).await?;
            Ok((id_of(api, &created, Method::Post, path)?, true))
        }
        Err(e) => Err(e),
    }
}

/// The charts: ids by chart key, how many were created and updated, and how many were
/// removed.
async fn charts(
    api: &JsonApi,
    def: &Definition,
    datasets: &BTreeMap<String, Dataset>,
    dashboard_id: i64,
) -> Result<(BTreeMap<String, i64>, Counts, usize), ApiError> {
    let path = "/api/v1/chart/";
    // Ours carry their key in their form data; Superset cannot filter on it, so all are read.
    let all = list_all(api, path, "", "id,params").await?;
    let mut existing: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    for c in &all {
        let key = text(c, "params")
            .and_then(|p| serde_json::from_str::<Value>(p).ok())
            .and_then(|p| p.get(KEY_FIELD).and_then(Value::as_str).map(str::to_owned));
        if let (Some(key), Some(id)) = (key, c.get("id").and_then(Value::as_i64)) {
            existing.entry(key).or_default().push(id);
        }
    }
    let mut ids = BTreeMap::new();
    let mut counts = Counts::default();
    for placed in def.charts() {
        let chart = placed.chart;
        let dataset = &datasets[&chart.question];
        let mut body = chart_payload(def, chart, dataset);
        let id = match existing.remove(&chart_key(def, chart)).unwrap_or_default()[..] {
            [id, ref extra @ ..] => {
                delete_charts(api, extra).await?;
                api.call(Method::Put, &format!("{path}{id}"), Some(&body))
                    .await?;
                counts.updated += 1;
                id
            }
            [] => {
                body["dashboards"] = json!([dashboard_id]);
                let created = api.call(Method::Post, path, Some(&body)).await?;
                counts.created += 1;
                id_of(api, &created, Method::Post, path)?
            }
        };
        ids.insert(chart.key(), id);
    }
    // Left over: charts of this dashboard's earlier definitions.
    let prefix = format!("{}:", def.slug);
    let stale: Vec<i64> = existing
        .into_iter()
        .filter(|(key, _)| key.starts_with(&prefix))
        .flat_map(|(_, ids)| ids)
        .collect();
    delete_charts(api, &stale).await?;
    tracing::info!(
        created = counts.created,
        updated = counts.updated,
        removed = stale.len(),
        "superset charts ready"
    );
    Ok((ids, counts, stale.len()))
}

async fn delete_charts(api: &JsonApi, ids: &[i64]) -> Result<(), ApiError> {
    for id in ids {
        api.call(Method::Delete, &format!("/api/v1/chart/{id}"), None)
            .await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rison_strings_escape_quotes_and_bangs() {
        assert_eq!(rison_string("coffee_olap"), "'coffee_olap'");
        assert_eq!(rison_string("it's!"), "'it!'s!!'");
    }
}
