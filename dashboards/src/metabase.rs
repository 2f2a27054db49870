//! The Metabase dashboard (`dashboards/metabase/dashboard.json`: cards built from the
//! questions, their visualization, layout and filters) and its provisioning over Metabase's
//! REST API (v0.47 or later):
//!
//! 1. `POST /api/session` logs in;
//! 2. `GET /api/database`, and `POST /api/database` when coffee_olap is not there yet;
//! 3. `GET /api/card`, then `POST /api/card` or `PUT /api/card/:id` per question (native SQL,
//!    the question's `{{params}}` as template tags);
//! 4. `GET /api/dashboard`, `POST /api/dashboard` when missing, `GET /api/dashboard/:id` and
//!    `PUT /api/dashboard/:id` with its filters and `dashcards` (existing ones keep their ids).
//!
//! Everything is found by name first, so running it again updates in place: no duplicates.
//! The database password is sent to Metabase only; errors and logs never contain it.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use brewlytics_support::dburl::scrub;
use brewlytics_support::DbUrl;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::question::{self, Question};

/// The dashboard definition shipped with the binary.
pub const DEFINITION: &str = include_str!("../metabase/dashboard.json");

#[derive(Debug, thiserror::Error)]
pub enum MetabaseError {
    #[error("dashboard definition: {0}")]
    Definition(String),
    #[error("OLAP database URL: {0}")]
    Url(String),
    #[error("Metabase at {url}: {message}")]
    Transport { url: String, message: String },
    #[error("Metabase {method} {path} answered {status}: {message}")]
    Http {
        method: &'static str,
        path: String,
        status: u16,
        message: String,
    },
    #[error("Metabase {method} {path}: unexpected answer: {message}")]
    Shape {
        method: &'static str,
        path: String,
        message: String,
    },
}

/// A password: `Debug` and `Display` print `***`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(text: impl Into<String>) -> Self {
        Self(text.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Definition {
    pub name: String,
    pub description: String,
    /// The name the OLAP database gets (or has) in Metabase.
    pub database: String,
    pub filters: Vec<Filter>,
    pub cards: Vec<CardDef>,
}

/// A dashboard filter, wired to the template tag of the same `slug` in every card using it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Filter {
    pub id: String,
    pub slug: String,
    pub name: String,
    #[serde(rename = "type")]
    pub type_: String,
    #[serde(rename = "sectionId")]
    pub section_id: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CardDef {
    pub question: String,
    /// Metabase's `display`: table, bar, row, line, pie, …
    pub display: String,
    #[serde(default)]
    pub x: Option<String>,
    #[serde(default)]
    pub y: Vec<String>,
    pub row: u32,
    pub col: u32,
    pub size_x: u32,
    pub size_y: u32,
}

impl Definition {
    /// The shipped definition, checked against the questions.
    pub fn load() -> Result<Self, MetabaseError> {
        Self::parse(DEFINITION)
    }

    pub fn parse(text: &str) -> Result<Self, MetabaseError> {
        let def: Definition =
            serde_json::from_str(text).map_err(|e| MetabaseError::Definition(e.to_string()))?;
        for card in &def.cards {
            question::find(&card.question).map_err(|e| MetabaseError::Definition(e.to_string()))?;
            if card.col + card.size_x > 24 {
                return Err(MetabaseError::Definition(format!(
                    "card {} is wider than the 24-column grid",
                    card.question
                )));
            }
            if card.display != "table" && (card.x.is_none() || card.y.is_empty()) {
                return Err(MetabaseError::Definition(format!(
                    "card {} ({}) needs x and y",
                    card.question, card.display
                )));
            }
        }
        Ok(def)
    }
}

/// How Metabase reaches the OLAP database.
#[derive(Debug, Clone)]
pub struct OlapConnection {
    pub host: String,
    pub port: u16,
    pub dbname: String,
    pub user: String,
    pub password: Secret,
    pub ssl: bool,
}

impl OlapConnection {
    /// From `OLAP_DATABASE_URL`; `host` replaces the URL's host (the address at which
    /// Metabase, e.g. in a container, sees the server).
    pub fn from_url(url: &DbUrl, host: Option<&str>) -> Result<Self, MetabaseError> {
        let opts = url
            .connect_options()
            .map_err(|e| MetabaseError::Url(scrub(&e.to_string(), url.expose())))?;
        let text = url.expose();
        let rest = text.split_once("://").map(|(_, r)| r).unwrap_or("");
        let authority = rest.split('/').next().unwrap_or("");
        let password = authority
            .rsplit_once('@')
            .and_then(|(userinfo, _)| userinfo.split_once(':'))
            .map(|(_, p)| percent_decode(p))
            .unwrap_or_default();
        let ssl = matches!(
            opts.get_ssl_mode(),
            sqlx::postgres::PgSslMode::Require
                | sqlx::postgres::PgSslMode::VerifyCa
                | sqlx::postgres::PgSslMode::VerifyFull
        );
        Ok(Self {
            host: host.unwrap_or(opts.get_host()).to_owned(),
            port: opts.get_port(),
            dbname: opts.get_database().unwrap_or(url.database()).to_owned(),
            user: opts.get_username().to_owned(),
            password: Secret::new(password),
            ssl,
        })
    }
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && bytes[i + 1].is_ascii_hexdigit()
            && bytes[i + 2].is_ascii_hexdigit()
        {
            let hex = |b: u8| (b as char).to_digit(16).unwrap_or(0) as u8;
            out.push(hex(bytes[i + 1]) * 16 + hex(bytes[i + 2]));
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A Metabase instance and the login to use.
#[derive(Debug, Clone)]
pub struct Target {
    pub url: String,
    pub user: String,
    pub password: Secret,
}

/// What provisioning did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Provisioned {
    pub database_id: i64,
    pub database_created: bool,
    pub cards_created: usize,
    pub cards_updated: usize,
    pub dashboard_id: i64,
    pub dashboard_created: bool,
    pub dashboard_url: String,
}

impl fmt::Display for Provisioned {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "database {} ({}), cards: {} created, {} updated; dashboard {} ({}): {}",
            self.database_id,
            if self.database_created {
                "added"
            } else {
                "already there"
            },
            self.cards_created,
            self.cards_updated,
            self.dashboard_id,
            if self.dashboard_created {
                "created"
            } else {
                "updated"
            },
            self.dashboard_url
        )
    }
}

/// A stable template-tag id for a question's parameter (Metabase wants one per tag).
fn tag_id(question: &str, tag: &str) -> String {
    // FNV-1a, 128 bits from two 64-bit passes, printed in UUID layout.
    let hash = |seed: u64| {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ seed;
        for b in question.bytes().chain([0]).chain(tag.bytes()) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        h
    };
    let hex = format!("{:016x}{:016x}", hash(1), hash(2));
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

fn display_name(name: &str) -> String {
    let mut chars = name.chars();
    match chars.next() {
        Some(c) => c
            .to_uppercase()
            .chain(chars)
            .collect::<String>()
            .replace('_', " "),
        None => String::new(),
    }
}

/// The `template-tags` of a question's native query.
pub fn template_tags(q: &Question) -> Value {
    let mut tags = serde_json::Map::new();
    for var in q.variables().unwrap_or_default() {
        let Some(param) = q.param(&var) else { continue };
        let mut tag = json!({
            "id": tag_id(&q.name, &var),
            "name": var,
            "display-name": display_name(&var),
            "type": param.type_.metabase_type(),
            "required": param.default.is_some(),
        });
        if let Some(d) = param.default {
            tag["default"] = Value::String(d.to_string());
        }
        tags.insert(var.clone(), tag);
    }
    Value::Object(tags)
}

/// The body of `POST /api/card` (and `PUT /api/card/:id`) for one card of the definition.
pub fn card_payload(q: &Question, card: &CardDef, database_id: i64) -> Value {
    let settings = match (card.display.as_str(), &card.x) {
        ("pie", Some(x)) => json!({"pie.dimension": x, "pie.metric": card.y.first()}),
        ("table", _) | (_, None) => json!({}),
        (_, Some(x)) => json!({"graph.dimensions": [x], "graph.metrics": card.y}),
    };
    json!({
        "name": q.title,
        "description": q.description,
        "display": card.display,
        "collection_id": null,
        "visualization_settings": settings,
        "dataset_query": {
            "type": "native",
            "database": database_id,
            "native": {
                "query": q.body,
                "template-tags": template_tags(q),
            },
        },
    })
}

/// The dashboard's `parameters` (its filters).
pub fn dashboard_parameters(def: &Definition) -> Value {
    Value::Array(
        def.filters
            .iter()
            .map(|f| {
                json!({
                    "id": f.id, "name": f.name, "slug": f.slug, "type": f.type_,
                    "sectionId": f.section_id,
                })
            })
            .collect(),
    )
}

/// The `dashcards` of `PUT /api/dashboard/:id`: one per card of the definition, keeping the
/// id of the dashcard already showing that card (new ones get negative ids).
pub fn dashcards(
    def: &Definition,
    card_ids: &BTreeMap<String, i64>,
    existing: &BTreeMap<i64, i64>,
) -> Value {
    let mut next_new = -1;
    let mut out = Vec::new();
    for card in &def.cards {
        let Some(&card_id) = card_ids.get(&card.question) else {
            continue;
        };
        let q = question::find(&card.question).expect("definition was checked");
        let vars = q.variables().unwrap_or_default();
        let mappings: Vec<Value> = def
            .filters
            .iter()
            .filter(|f| vars.contains(&f.slug))
            .map(|f| {
                json!({
                    "parameter_id": f.id,
                    "card_id": card_id,
                    "target": ["variable", ["template-tag", f.slug]],
                })
            })
            .collect();
        let id = existing.get(&card_id).copied().unwrap_or_else(|| {
            next_new -= 1;
            next_new + 1
        });
        out.push(json!({
            "id": id,
            "card_id": card_id,
            "row": card.row,
            "col": card.col,
            "size_x": card.size_x,
            "size_y": card.size_y,
            "parameter_mappings": mappings,
            "visualization_settings": {},
            "series": [],
        }));
    }
    Value::Array(out)
}

struct Client {
    http: reqwest::Client,
    base: String,
    session: Option<String>,
    secrets: Vec<String>,
}

impl Client {
    fn scrub(&self, text: &str) -> String {
        self.secrets
            .iter()
            .fold(text.to_owned(), |t, s| scrub(&t, s))
    }

    async fn call(
        &self,
        method: &'static str,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value, MetabaseError> {
        let url = format!("{}{}", self.base, path);
        let mut req = match method {
            "GET" => self.http.get(&url),
            "POST" => self.http.post(&url),
            "PUT" => self.http.put(&url),
            _ => unreachable!("only GET, POST and PUT are used"),
        };
        if let Some(s) = &self.session {
            req = req.header("X-Metabase-Session", s);
        }
        if let Some(b) = body {
            req = req.json(b);
        }
        let res = req.send().await.map_err(|e| MetabaseError::Transport {
            url: self.base.clone(),
            message: self.scrub(&e.to_string()),
        })?;
        let status = res.status();
        let text = res.text().await.map_err(|e| MetabaseError::Transport {
            url: self.base.clone(),
            message: self.scrub(&e.to_string()),
        })?;
        if !status.is_success() {
            let message = serde_json::from_str::<Value>(&text)
                .ok()
                .and_then(|v| {
                    v.get("message")
                        .and_then(Value::as_str)
                        .map(str::to_owned)
                        .or_else(|| v.as_str().map(str::to_owned))
                })
                .unwrap_or_else(|| text.chars().take(200).collect());
            return Err(MetabaseError::Http {
                method,
                path: path.to_owned(),
                status: status.as_u16(),
                message: self.scrub(message.trim()),
            });
        }
        if text.trim().is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_str(&text).map_err(|e| MetabaseError::Shape {
            method,
            path: path.to_owned(),
            message: e.to_string(),
        })
    }
}

fn shape(method: &'static str, path: &str, message: &str) -> MetabaseError {
    MetabaseError::Shape {
        method,
        path: path.to_owned(),
        message: message.to_owned(),
    }
}

fn id_of(v: &Value, method: &'static str, path: &str) -> Result<i64, MetabaseError> {
    v.get("id")
        .and_then(Value::as_i64)
        .ok_or_else(|| shape(method, path, "no numeric id"))
}

/// A list answer: a JSON array, or an object whose `data` is one (`GET /api/database`).
fn list(v: Value, method: &'static str, path: &str) -> Result<Vec<Value>, MetabaseError> {
    match v {
        Value::Array(a) => Ok(a),
        Value::Object(mut o) => match o.remove("data") {
            Some(Value::Array(a)) => Ok(a),
            _ => Err(shape(method, path, "expected a list")),
        },
        _ => Err(shape(method, path, "expected a list")),
    }
}

fn archived(v: &Value) -> bool {
    v.get("archived").and_then(Value::as_bool).unwrap_or(false)
}

/// Logs in, adds the OLAP database if missing, creates or updates every card and the
/// dashboard. Idempotent.
pub async fn provision(
    target: &Target,
    olap: &OlapConnection,
    def: &Definition,
) -> Result<Provisioned, MetabaseError> {
    let base = target.url.trim_end_matches('/').to_owned();
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(120))
        .build()
        .map_err(|e| MetabaseError::Transport {
            url: base.clone(),
            message: e.to_string(),
        })?;
    let mut client = Client {
        http,
        base: base.clone(),
        session: None,
        secrets: vec![
            target.password.expose().to_owned(),
            olap.password.expose().to_owned(),
        ],
    };

    let session = client
        .call(
            "POST",
            "/api/session",
            Some(&json!({"username": target.user, "password": target.password.expose()})),
        )
        .await?;
    let token = session
        .get("id")
        .and_then(Value::as_str)
        .ok_or_else(|| shape("POST", "/api/session", "no session id"))?;
    client.session = Some(token.to_owned());
    tracing::info!(metabase = %base, "logged in to metabase");

    // The database.
    let databases = list(
        client.call("GET", "/api/database", None).await?,
        "GET",
        "/api/database",
    )?;
    let found = databases.iter().find(|d| {
        let details = d.get("details");
        let field = |k: &str| details.and_then(|x| x.get(k)).and_then(Value::as_str);
        d.get("name").and_then(Value::as_str) == Some(def.database.as_str())
            || (d.get("engine").and_then(Value::as_str) == Some("postgres")
                && field("dbname") == Some(olap.dbname.as_str())
                && field("host") == Some(olap.host.as_str()))
    });
    let (database_id, database_created) = match found {
        Some(d) => (id_of(d, "GET", "/api/database")?, false),
        None => {
            let created = client
                .call(
                    "POST",
                    "/api/database",
                    Some(&json!({
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
                    })),
                )
                .await?;
            tracing::info!(name = %def.database, "added the OLAP database to metabase");
            (id_of(&created, "POST", "/api/database")?, true)
        }
    };

    // The cards.
    let cards = list(
        client.call("GET", "/api/card", None).await?,
        "GET",
        "/api/card",
    )?;
    let mut card_ids = BTreeMap::new();
    let (mut cards_created, mut cards_updated) = (0, 0);
    for card in &def.cards {
        let q =
            question::find(&card.question).map_err(|e| MetabaseError::Definition(e.to_string()))?;
        let payload = card_payload(&q, card, database_id);
        let existing = cards.iter().find(|c| {
            let db = c
                .get("database_id")
                .or_else(|| c.get("dataset_query").and_then(|d| d.get("database")))
                .and_then(Value::as_i64);
            c.get("name").and_then(Value::as_str) == Some(q.title.as_str())
                && !archived(c)
                && db == Some(database_id)
        });
        let id = match existing {
            Some(c) => {
                let id = id_of(c, "GET", "/api/card")?;
                client
                    .call("PUT", &format!("/api/card/{id}"), Some(&payload))
                    .await?;
                cards_updated += 1;
                id
            }
            None => {
                let created = client.call("POST", "/api/card", Some(&payload)).await?;
                cards_created += 1;
                id_of(&created, "POST", "/api/card")?
            }
        };
        card_ids.insert(card.question.clone(), id);
    }
    tracing::info!(cards_created, cards_updated, "metabase cards ready");

    // The dashboard.
    let dashboards = list(
        client.call("GET", "/api/dashboard", None).await?,
        "GET",
        "/api/dashboard",
    )?;
    let found = dashboards
        .iter()
        .find(|d| d.get("name").and_then(Value::as_str) == Some(def.name.as_str()) && !archived(d));
    let (dashboard_id, dashboard_created) = match found {
        Some(d) => (id_of(d, "GET", "/api/dashboard")?, false),
        None => {
            let created = client
                .call(
                    "POST",
                    "/api/dashboard",
                    Some(&json!({
                        "name": def.name,
                        "description": def.description,
                        "parameters": dashboard_parameters(def),
                        "collection_id": null,
                    })),
                )
                .await?;
            (id_of(&created, "POST", "/api/dashboard")?, true)
        }
    };
    let path = format!("/api/dashboard/{dashboard_id}");
    let current = client.call("GET", &path, None).await?;
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
    client
        .call(
            "PUT",
            &path,
            Some(&json!({
                "name": def.name,
                "description": def.description,
                "parameters": dashboard_parameters(def),
                "dashcards": dashcards(def, &card_ids, &existing),
            })),
        )
        .await?;
    tracing::info!(dashboard_id, "metabase dashboard ready");
    Ok(Provisioned {
        database_id,
        database_created,
        cards_created,
        cards_updated,
        dashboard_id,
        dashboard_created,
        dashboard_url: format!("{base}/dashboard/{dashboard_id}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_definition_is_valid() {
        let def = Definition::load().unwrap();
        assert_eq!(def.cards.len(), 13);
        let all: Vec<String> = question::all().into_iter().map(|q| q.name).collect();
        for q in &all {
            assert!(
                def.cards.iter().any(|c| &c.question == q),
                "{q} has no card"
            );
        }
    }

    #[test]
    fn template_tags_cover_every_variable() {
        let q = question::find("top-products").unwrap();
        let tags = template_tags(&q);
        assert_eq!(tags["from"]["type"], "date");
        assert_eq!(tags["from"]["required"], false);
        assert_eq!(tags["limit"]["type"], "number");
        assert_eq!(tags["limit"]["default"], "10");
        assert_eq!(tags["store"]["display-name"], "Store");
        assert_eq!(tags.as_object().unwrap().len(), 4);
        assert_eq!(tag_id("a", "b"), tag_id("a", "b"));
        assert_ne!(tag_id("a", "b"), tag_id("a", "c"));
        assert_eq!(tag_id("a", "b").len(), 36);
    }

    #[test]
    fn dashcards_keep_existing_ids_and_map_filters() {
        let def = Definition::load().unwrap();
        let card_ids: BTreeMap<String, i64> = def
            .cards
            .iter()
            .enumerate()
            .map(|(i, c)| (c.question.clone(), 100 + i as i64))
            .collect();
        let existing = BTreeMap::from([(100, 7)]);
        let dc = dashcards(&def, &card_ids, &existing);
        let dc = dc.as_array().unwrap();
        assert_eq!(dc.len(), 13);
        assert_eq!(dc[0]["id"], 7);
        assert_eq!(dc[1]["id"], -1);
        assert_eq!(dc[2]["id"], -2);
        let m = dc[0]["parameter_mappings"].as_array().unwrap();
        assert_eq!(m.len(), 3);
        assert_eq!(
            m[0]["target"],
            json!(["variable", ["template-tag", "from"]])
        );
    }

    #[test]
    fn connection_comes_from_the_url_and_hides_the_password() {
        let url = DbUrl::parse("postgres://brew:p%40ss@10.0.0.5:5433/coffee_olap").unwrap();
        let c = OlapConnection::from_url(&url, None).unwrap();
        assert_eq!(
            (c.host.as_str(), c.port, c.dbname.as_str(), c.user.as_str()),
            ("10.0.0.5", 5433, "coffee_olap", "brew")
        );
        assert_eq!(c.password.expose(), "p@ss");
        assert!(!format!("{c:?}").contains("p@ss"));
        let c = OlapConnection::from_url(&url, Some("host.docker.internal")).unwrap();
        assert_eq!(c.host, "host.docker.internal");
    }
}
