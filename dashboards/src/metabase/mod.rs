//! The Metabase dashboard, generated from the shared definition (`dashboards/dashboard.json`)
//! and the questions, and its provisioning over Metabase's REST API (v0.47 or later; see
//! [`provision`]).
//!
//! Here are the pure parts: a card per chart (the question's SQL as a native query, its
//! `{{params}}` as template tags, the chart as Metabase's `display` and settings), the
//! dashboard's filters and its `dashcards` on Metabase's 24-column grid.

mod provision;

use std::collections::BTreeMap;
use std::fmt;

use serde_json::{json, Value};

pub use provision::provision;

use crate::connection::UrlError;
use crate::definition::{Chart, Definition, DefinitionError, Filter, Kind};
use crate::http::ApiError;
use crate::question::{ParamType, Question};

// Where they were before the shared definition (public names users of the crate know).
pub use crate::connection::{OlapConnection, Secret, Target};

#[derive(Debug, thiserror::Error)]
pub enum MetabaseError {
    #[error(transparent)]
    Definition(#[from] DefinitionError),
    #[error(transparent)]
    Url(#[from] UrlError),
    #[error(transparent)]
    Api(#[from] ApiError),
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

/// A stable id for Metabase (template tags, dashboard filters): FNV-1a over `parts`, 128 bits
/// from two 64-bit passes, printed in UUID layout.
fn stable_id(parts: &[&str]) -> String {
    let hash = |seed: u64| {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ seed;
        for (i, part) in parts.iter().enumerate() {
            let sep: &[u8] = if i == 0 { &[] } else { &[0] };
            for b in sep.iter().chain(part.as_bytes()) {
                h ^= u64::from(*b);
                h = h.wrapping_mul(0x0000_0100_0000_01b3);
            }
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

/// Metabase's template-tag type of a parameter.
fn tag_type(type_: ParamType) -> &'static str {
    match type_ {
        ParamType::Date => "date",
        ParamType::Integer => "number",
    }
}

/// The `template-tags` of a question's native query.
pub fn template_tags(q: &Question) -> Value {
    let mut tags = serde_json::Map::new();
    for var in q.variables().unwrap_or_default() {
        let Some(param) = q.param(&var) else { continue };
        let mut tag = json!({
            "id": stable_id(&[&q.name, &var]),
            "name": var,
            "display-name": display_name(&var),
            "type": tag_type(param.type_),
            "required": param.default.is_some(),
        });
        if let Some(d) = param.default {
            tag["default"] = Value::String(d.to_string());
        }
        tags.insert(var.clone(), tag);
    }
    Value::Object(tags)
}

/// Metabase's `display` and `visualization_settings` for a chart.
fn visualization(chart: &Chart) -> (&'static str, Value) {
    let x = chart.x.as_deref();
    let first_y = chart.y.first();
    match chart.kind {
        Kind::Bar => (
            "bar",
            json!({"graph.dimensions": [x], "graph.metrics": chart.y}),
        ),
        Kind::Line => (
            "line",
            json!({"graph.dimensions": [x], "graph.metrics": chart.y}),
        ),
        Kind::Row => (
            "row",
            json!({"graph.dimensions": [x], "graph.metrics": chart.y}),
        ),
        Kind::Pie => ("pie", json!({"pie.dimension": x, "pie.metric": first_y})),
        Kind::Table => ("table", json!({})),
        Kind::Number => ("scalar", json!({"scalar.field": first_y})),
    }
}

/// The body of `POST /api/card` (and `PUT /api/card/:id`) for one chart of the definition.
pub fn card_payload(chart: &Chart, database_id: i64) -> Value {
    let q = chart.question();
    let (display, settings) = visualization(chart);
    json!({
        "name": chart.title(),
        "description": q.description,
        "display": display,
        "collection_id": null,
        "visualization_settings": settings,
        "dataset_query": {
            "type": "native",
            "database": database_id,
            "native": {
                "query": q.body,
                "template-tags": template_tags(&q),
            },
        },
    })
}

/// A dashboard filter's id (stable across runs: the mappings refer to it).
fn filter_id(filter: &Filter) -> String {
    stable_id(&["dashboard filter", &filter.param])[..8].to_owned()
}

/// The dashboard's `parameters` (its filters), typed after the questions' parameters.
pub fn dashboard_parameters(def: &Definition) -> Value {
    Value::Array(
        def.filters
            .iter()
            .map(|f| {
                let (type_, section) = match def.filter_type(f) {
                    Some(ParamType::Integer) => ("number/=", "number"),
                    _ => ("date/single", "date"),
                };
                json!({
                    "id": filter_id(f), "name": f.name, "slug": f.param, "type": type_,
                    "sectionId": section,
                })
            })
            .collect(),
    )
}

/// The `dashcards` of `PUT /api/dashboard/:id`: one per chart of the definition (`card_ids`
/// by chart key), keeping the id of the dashcard already showing that card (`existing`: card
/// id → dashcard id; new ones get negative ids).
pub fn dashcards(
    def: &Definition,
    card_ids: &BTreeMap<String, i64>,
    existing: &BTreeMap<i64, i64>,
) -> Value {
    let mut next_new = -1;
    let mut out = Vec::new();
    for placed in def.charts() {
        let chart = placed.chart;
        let Some(&card_id) = card_ids.get(&chart.key()) else {
            continue;
        };
        let vars = chart.question().variables().unwrap_or_default();
        let mappings: Vec<Value> = def
            .filters
            .iter()
            .filter(|f| vars.contains(&f.param))
            .map(|f| {
                json!({
                    "parameter_id": filter_id(f),
                    "card_id": card_id,
                    "target": ["variable", ["template-tag", f.param]],
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
            "row": placed.row,
            "col": placed.col,
            "size_x": chart.width,
            "size_y": chart.height,
            "parameter_mappings": mappings,
            "visualization_settings": {},
            "series": [],
        }));
    }
    Value::Array(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::question;

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
        assert_eq!(stable_id(&["a", "b"]), stable_id(&["a", "b"]));
        assert_ne!(stable_id(&["a", "b"]), stable_id(&["a", "c"]));
        assert_ne!(stable_id(&["ab", ""]), stable_id(&["a", "b"]));
        assert_eq!(stable_id(&["a", "b"]).len(), 36);
    }

    #[test]
    fn each_chart_kind_has_its_display() {
        let def = Definition::load().unwrap();
        let card = |key: &str| {
            let placed = def.charts().find(|p| p.chart.key() == key).unwrap();
            card_payload(placed.chart, 3)
        };
        let kpi = card("headline.today_revenue");
        assert_eq!(kpi["name"], "Today's revenue");
        assert_eq!(kpi["display"], "scalar");
        assert_eq!(
            kpi["visualization_settings"]["scalar.field"],
            "today_revenue"
        );
        let daily = card("daily-revenue");
        assert_eq!(daily["display"], "bar");
        assert_eq!(
            daily["visualization_settings"]["graph.metrics"],
            json!(["revenue"])
        );
        assert_eq!(daily["dataset_query"]["database"], 3);
        assert_eq!(
            card("payment-methods")["visualization_settings"]["pie.dimension"],
            "method"
        );
        assert_eq!(card("top-products")["display"], "row");
    }

    #[test]
    fn dashcards_keep_existing_ids_and_map_filters() {
        let def = Definition::load().unwrap();
        let keys: Vec<String> = def.charts().map(|p| p.chart.key()).collect();
        let card_ids: BTreeMap<String, i64> = keys
            .iter()
            .enumerate()
            .map(|(i, k)| (k.clone(), 100 + i as i64))
            .collect();
        let existing = BTreeMap::from([(100, 7)]);
        let dc = dashcards(&def, &card_ids, &existing);
        let dc = dc.as_array().unwrap();
        assert_eq!(dc.len(), keys.len());
        assert_eq!(dc[0]["id"], 7);
        assert_eq!(dc[1]["id"], -1);
        assert_eq!(dc[2]["id"], -2);
        // The second card sits beside the first; the next row starts below the tallest.
        assert_eq!(
            (dc[1]["row"].clone(), dc[1]["col"].clone()),
            (json!(0), json!(4))
        );
        assert_eq!(
            (dc[6]["row"].clone(), dc[6]["col"].clone()),
            (json!(3), json!(0))
        );
        let m = dc[0]["parameter_mappings"].as_array().unwrap();
        assert_eq!(m.len(), 3);
        assert_eq!(
            m[0]["target"],
            json!(["variable", ["template-tag", "from"]])
        );
        let params = dashboard_parameters(&def);
        assert_eq!(params[0]["id"], m[0]["parameter_id"]);
        assert_eq!(params[2]["type"], "number/=");
    }
}
