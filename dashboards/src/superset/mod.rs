//! The Apache Superset dashboard, generated from the shared definition
//! (`dashboards/dashboard.json`) and the questions, and its provisioning over Superset's REST
//! API (tested with 6.1; see [`provision`]).
//!
//! Here are the pure parts:
//!
//! - the database: coffee_olap through the PostgreSQL driver, read-only in SQL Lab (no DML,
//!   no CREATE TABLE AS) — the role in the URL should be read-only too (`brewlytics_reader`);
//! - datasets: one per star-schema table, and one per question — a virtual dataset whose SQL
//!   is the question's, with its optional clauses dropped and its defaults written in, so it
//!   returns what `brewlytics report NAME` prints;
//! - a chart per chart of the definition: its `params` (what the page draws) and its
//!   `query_context` (what the chart-data API runs), both carrying the chart's key so a later
//!   run finds it again;
//! - the dashboard layout (`position_json`): the definition's rows on Superset's 12-column
//!   grid.
//!
//! Superset gets no date or store filter: a question's parameters sit inside its aggregation,
//! where Superset's filters (which wrap the dataset's query) cannot reach without its Jinja
//! templating, which is off by default. Its charts show every day and store, like `report`
//! without options.

mod provision;

use std::collections::BTreeMap;
use std::fmt;

use serde_json::{json, Value};

pub use provision::{healthy, login, provision};

use crate::connection::{percent_encode, OlapConnection, UrlError};
use crate::definition::{Chart, Definition, DefinitionError, Kind};
use crate::http::ApiError;
use crate::question::{Question, QuestionError};

/// The star schema's tables, each a dataset to explore.
pub const STAR_TABLES: &[&str] = &[
    "fact_sales",
    "fact_payments",
    "fact_inventory",
    "dim_date",
    "dim_store",
    "dim_employee",
    "dim_customer",
    "dim_product",
];

/// The schema of the star and of the question datasets.
pub const SCHEMA: &str = "public";

/// The form-data field holding a chart's key (`<dashboard slug>:<chart key>`).
pub const KEY_FIELD: &str = "brewlytics_chart";

/// Rows a chart's query returns at most.
const ROW_LIMIT: u32 = 10_000;

#[derive(Debug, thiserror::Error)]
pub enum SupersetError {
    #[error(transparent)]
    Definition(#[from] DefinitionError),
    #[error(transparent)]
    Question(#[from] QuestionError),
    #[error(transparent)]
    Url(#[from] UrlError),
    #[error(transparent)]
    Api(#[from] ApiError),
}

/// What provisioning did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Provisioned {
    pub database_id: i64,
    pub database_created: bool,
    pub datasets: Counts,
    pub charts: Counts,
    /// Charts of an earlier definition that this one no longer has, deleted.
    pub charts_removed: usize,
    pub dashboard_id: i64,
    pub dashboard_created: bool,
    pub dashboard_url: String,
}

/// Objects created and updated.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub created: usize,
    pub updated: usize,
}

impl fmt::Display for Provisioned {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let verb = |created: bool| if created { "created" } else { "updated" };
        write!(
            f,
            "database {} ({}), datasets: {} created, {} updated; charts: {} created, {} updated, \
             {} removed; dashboard {} ({}): {}",
            self.database_id,
            verb(self.database_created),
            self.datasets.created,
            self.datasets.updated,
            self.charts.created,
            self.charts.updated,
            self.charts_removed,
            self.dashboard_id,
            verb(self.dashboard_created),
            self.dashboard_url
        )
    }
}

/// The SQLAlchemy URI Superset connects with. It holds the password: send it, never print it.
pub fn sqlalchemy_uri(olap: &OlapConnection) -> String {
    format!(
        "postgresql+psycopg2://{}:{}@{}:{}/{}{}",
        percent_encode(&olap.user),
        percent_encode(olap.password.expose()),
        olap.host,
        olap.port,
        percent_encode(&olap.dbname),
        if olap.ssl { "?sslmode=require" } else { "" }
    )
}

/// The body of `POST /api/v1/database/` (and `PUT`).
pub fn database_payload(def: &Definition, olap: &OlapConnection) -> Value {
    json!({
        "database_name": def.database,
        "sqlalchemy_uri": sqlalchemy_uri(olap),
        "expose_in_sqllab": true,
        "allow_dml": false,
        "allow_ctas": false,
        "allow_cvas": false,
        "allow_file_upload": false,
        "allow_run_async": false,
    })
}

/// The body of `PUT /api/v1/dataset/:id` for a question's virtual dataset (`POST` adds the
/// database and schema).
pub fn question_dataset(q: &Question) -> Result<Value, QuestionError> {
    Ok(json!({
        "table_name": q.name,
        "sql": q.standalone_sql()?,
        "description": q.description,
    }))
}

/// What a chart needs to know of its dataset.
#[derive(Debug, Clone, Default)]
pub struct Dataset {
    pub id: i64,
    /// In the order of the question's result.
    pub columns: Vec<Column>,
}

/// A dataset column as Superset sees it.
#[derive(Debug, Clone, Default)]
pub struct Column {
    pub name: String,
    /// Superset's generic type (`DATE`, `DECIMAL`, `LONGINTEGER`, …), when it knows one.
    pub sql_type: Option<String>,
    /// Superset takes it for dates and times.
    pub temporal: bool,
}

impl Dataset {
    fn column(&self, name: &str) -> Option<&Column> {
        self.columns.iter().find(|c| c.name == name)
    }

    fn type_of(&self, name: &str) -> &str {
        self.column(name)
            .and_then(|c| c.sql_type.as_deref())
            .unwrap_or_default()
    }

    /// The number format of a column: money and other decimals with two places.
    fn number_format(&self, name: &str) -> &'static str {
        match self.type_of(name) {
            "DECIMAL" | "NUMERIC" => ",.2f",
            _ => ",d",
        }
    }

    /// How a table shows each column: days as days, decimals with two places.
    fn column_config(&self) -> Value {
        let mut config = serde_json::Map::new();
        for c in &self.columns {
            let format = match c.sql_type.as_deref().unwrap_or_default() {
                "DATE" => json!({"d3TimeFormat": "%Y-%m-%d"}),
                "DECIMAL" | "NUMERIC" => json!({"d3NumberFormat": ",.2f"}),
                _ => continue,
            };
            config.insert(c.name.clone(), format);
        }
        Value::Object(config)
    }
}

/// A chart's key as stored in its form data: the dashboard's slug and the chart's key.
pub fn chart_key(def: &Definition, chart: &Chart) -> String {
    format!("{}:{}", def.slug, chart.key())
}

/// A sum of `column`, labelled with the column's name.
fn sum_of(column: &str) -> Value {
    json!({
        "expressionType": "SIMPLE",
        "column": {"column_name": column},
        "aggregate": "SUM",
        "label": column,
        "hasCustomLabel": true,
        "optionName": format!("metric_{column}"),
    })
}

/// The body of `POST /api/v1/chart/` (and `PUT`): its form data (`params`) and the query the
/// chart-data API runs (`query_context`), as Superset's own page would save them.
pub fn chart_payload(def: &Definition, chart: &Chart, dataset: &Dataset) -> Value {
    let datasource = json!({"id": dataset.id, "type": "table"});
    let metrics: Vec<Value> = chart.y.iter().map(|y| sum_of(y)).collect();
    let x = chart.x.clone().unwrap_or_default();
    let temporal = dataset.column(&x).is_some_and(|c| c.temporal);
    let names: Vec<&str> = dataset.columns.iter().map(|c| c.name.as_str()).collect();
    let mut params = json!({
        "datasource": format!("{}__table", dataset.id),
        "viz_type": viz_type(chart.kind),
        "adhoc_filters": [],
        "row_limit": ROW_LIMIT,
        KEY_FIELD: chart_key(def, chart),
    });
    // The query's columns and order; the page's own settings go into `params`.
    let (columns, orderby): (Vec<Value>, Vec<Value>) = match chart.kind {
        Kind::Bar | Kind::Line | Kind::Row => {
            let axis = if temporal {
                params["time_grain_sqla"] = json!("P1D");
                json!({"columnType": "BASE_AXIS", "sqlExpression": x, "label": x,
                       "expressionType": "SQL", "timeGrain": "P1D"})
            } else {
                json!(x)
            };
            extend(
                &mut params,
                json!({
                    "x_axis": x, "metrics": metrics, "groupby": [], "show_legend": false,
                    "rich_tooltip": true, "y_axis_format": "SMART_NUMBER",
                    // Categories in order; a ranking with its largest on top.
                    "x_axis_sort_asc": true,
                    "x_axis_sort": if chart.kind == Kind::Row { chart.y[0].clone() } else { x.clone() },
                    "orientation": if chart.kind == Kind::Row { "horizontal" } else { "vertical" },
                    "markerEnabled": chart.kind == Kind::Line,
                }),
            );
            (vec![axis], vec![json!([json!(x), true])])
        }
        Kind::Pie => {
            extend(
                &mut params,
                json!({
                    "groupby": [x], "metric": metrics[0], "show_labels": true,
                    "label_type": "key_percent", "show_legend": true, "sort_by_metric": true,
                }),
            );
            (vec![json!(x)], vec![json!([metrics[0], false])])
        }
        Kind::Table => {
            extend(
                &mut params,
                json!({
                    "query_mode": "raw", "all_columns": names, "order_by_cols": [],
                    "server_pagination": false, "show_cell_bars": false,
                    "column_config": dataset.column_config(),
                }),
            );
            (names.iter().map(|c| json!(c)).collect(), vec![])
        }
        Kind::Number => {
            extend(
                &mut params,
                json!({"metric": metrics[0], "header_font_size": 0.3, "subheader": "",
                       "y_axis_format": dataset.number_format(&chart.y[0])}),
            );
            (vec![], vec![])
        }
    };
    let query_metrics = match chart.kind {
        Kind::Table => vec![],
        _ => metrics,
    };
    let query_context = json!({
        "datasource": datasource,
        "force": false,
        "queries": [{
            "columns": columns,
            "metrics": query_metrics,
            "orderby": orderby,
            "row_limit": ROW_LIMIT,
            "filters": [],
            "extras": {"having": "", "where": ""},
            "series_columns": [],
            "post_processing": [],
        }],
        "form_data": params,
        "result_format": "json",
        "result_type": "full",
    });
    json!({
        "slice_name": chart.title(),
        "description": chart.question().description,
        "viz_type": viz_type(chart.kind),
        "datasource_id": dataset.id,
        "datasource_type": "table",
        "params": params.to_string(),
        "query_context": query_context.to_string(),
    })
}

fn viz_type(kind: Kind) -> &'static str {
    match kind {
        Kind::Bar | Kind::Row => "echarts_timeseries_bar",
        Kind::Line => "echarts_timeseries_line",
        Kind::Pie => "pie",
        Kind::Table => "table",
        Kind::Number => "big_number_total",
    }
}

fn extend(target: &mut Value, fields: Value) {
    if let (Value::Object(t), Value::Object(f)) = (target, fields) {
        t.extend(f);
    }
}

/// The dashboard's layout: a line of text (the definition's description), then the
/// definition's rows on Superset's 12-column grid (heights in 8-pixel units: eight per row).
/// `chart_ids`: by chart key.
pub fn position(def: &Definition, chart_ids: &BTreeMap<String, i64>) -> Value {
    let mut layout = serde_json::Map::new();
    let mut rows = vec!["ROW-intro".to_owned()];
    layout.insert(
        "ROW-intro".into(),
        json!({"type": "ROW", "id": "ROW-intro", "children": ["MARKDOWN-intro"],
               "parents": ["ROOT_ID", "GRID_ID"], "meta": {"background": "BACKGROUND_TRANSPARENT"}}),
    );
    layout.insert(
        "MARKDOWN-intro".into(),
        json!({"type": "MARKDOWN", "id": "MARKDOWN-intro", "children": [],
               "parents": ["ROOT_ID", "GRID_ID", "ROW-intro"],
               "meta": {"width": 12, "height": 14, "code": format!(
                   "{}\n\nEvery day and store; `brewlytics report NAME` prints the same figures.",
                   def.description)}}),
    );
    let mut current: Option<(usize, String, Vec<String>)> = None;
    let mut finish = |layout: &mut serde_json::Map<String, Value>,
                      row: Option<(usize, String, Vec<String>)>| {
        if let Some((_, id, children)) = row {
            layout.insert(
                id.clone(),
                json!({"type": "ROW", "id": id, "children": children,
                       "parents": ["ROOT_ID", "GRID_ID"],
                       "meta": {"background": "BACKGROUND_TRANSPARENT"}}),
            );
            rows.push(id);
        }
    };
    for placed in def.charts() {
        let Some(&chart_id) = chart_ids.get(&placed.chart.key()) else {
            continue;
        };
        if current.as_ref().map(|c| c.0) != Some(placed.band) {
            finish(&mut layout, current.take());
            current = Some((placed.band, format!("ROW-{}", placed.band), Vec::new()));
        }
        let (_, row_id, children) = current.as_mut().expect("just set");
        let id = format!("CHART-{chart_id}");
        layout.insert(
            id.clone(),
            json!({"type": "CHART", "id": id, "children": [],
                   "parents": ["ROOT_ID", "GRID_ID", row_id],
                   "meta": {"width": placed.chart.width / 2, "height": placed.chart.height * 8,
                            "chartId": chart_id, "sliceName": placed.chart.title()}}),
        );
        children.push(id);
    }
    finish(&mut layout, current.take());
    layout.insert("DASHBOARD_VERSION_KEY".into(), json!("v2"));
    layout.insert(
        "ROOT_ID".into(),
        json!({"type": "ROOT", "id": "ROOT_ID", "children": ["GRID_ID"]}),
    );
    layout.insert(
        "GRID_ID".into(),
        json!({"type": "GRID", "id": "GRID_ID", "children": rows, "parents": ["ROOT_ID"]}),
    );
    layout.insert(
        "HEADER_ID".into(),
        json!({"id": "HEADER_ID", "type": "HEADER", "meta": {"text": def.name}}),
    );
    Value::Object(layout)
}

/// The body of `PUT /api/v1/dashboard/:id`: title, slug, layout, and the metadata Superset
/// reads the charts' membership from (`positions`).
pub fn dashboard_payload(def: &Definition, chart_ids: &BTreeMap<String, i64>) -> Value {
    let position = position(def, chart_ids);
    json!({
        "dashboard_title": def.name,
        "slug": def.slug,
        "published": true,
        "position_json": position.to_string(),
        "json_metadata": json!({
            "positions": position,
            "native_filter_configuration": [],
            "refresh_frequency": 0,
            "color_scheme": "supersetColors",
            "label_colors": {},
            "expanded_slices": {},
            "timed_refresh_immune_slices": [],
            "cross_filters_enabled": false,
        }).to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::connection::Secret;

    fn def() -> Definition {
        Definition::load().unwrap()
    }

    fn chart<'a>(def: &'a Definition, key: &str) -> &'a Chart {
        def.charts().find(|p| p.chart.key() == key).unwrap().chart
    }

    /// A dataset of `(name, type)` columns; dates are temporal.
    fn dataset(id: i64, columns: &[(&str, &str)]) -> Dataset {
        Dataset {
            id,
            columns: columns
                .iter()
                .map(|(name, t)| Column {
                    name: (*name).into(),
                    sql_type: Some((*t).into()),
                    temporal: *t == "DATE",
                })
                .collect(),
        }
    }

    fn params(payload: &Value) -> (Value, Value) {
        let p = serde_json::from_str(payload["params"].as_str().unwrap()).unwrap();
        let q = serde_json::from_str(payload["query_context"].as_str().unwrap()).unwrap();
        (p, q)
    }

    #[test]
    fn the_uri_encodes_the_login_and_asks_for_tls_when_the_url_did() {
        let olap = OlapConnection {
            host: "olap".into(),
            port: 5433,
            dbname: "coffee_olap".into(),
            user: "brewlytics_reader".into(),
            password: Secret::new("p@ss:w/rd"),
            ssl: true,
        };
        assert_eq!(
            sqlalchemy_uri(&olap),
            "postgresql+psycopg2://brewlytics_reader:p%40ss%3Aw%2Frd@olap:5433/coffee_olap?sslmode=require"
        );
        let body = database_payload(&def(), &olap);
        assert_eq!(body["database_name"], "coffee_olap");
        assert_eq!(body["allow_dml"], false);
    }

    #[test]
    fn a_question_dataset_is_the_question_without_parameters() {
        let q = crate::question::find("top-customers").unwrap();
        let body = question_dataset(&q).unwrap();
        let sql = body["sql"].as_str().unwrap();
        assert!(sql.ends_with("limit 10"), "{sql}");
        assert!(!sql.contains("{{") && !sql.contains("[["), "{sql}");
        assert_eq!(body["table_name"], "top-customers");
    }

    #[test]
    fn a_temporal_bar_chart_truncates_to_days_and_carries_its_key() {
        let def = def();
        let ds = dataset(
            4,
            &[
                ("day", "DATE"),
                ("orders", "LONGINTEGER"),
                ("revenue", "DECIMAL"),
            ],
        );
        let payload = chart_payload(&def, chart(&def, "daily-revenue"), &ds);
        assert_eq!(payload["slice_name"], "Daily revenue");
        assert_eq!(payload["viz_type"], "echarts_timeseries_bar");
        let (p, q) = params(&payload);
        assert_eq!(p[KEY_FIELD], "brewlytics:daily-revenue");
        assert_eq!(p["datasource"], "4__table");
        assert_eq!(p["time_grain_sqla"], "P1D");
        assert_eq!(p["metrics"][0]["label"], "revenue");
        assert_eq!(q["datasource"]["id"], 4);
        assert_eq!(q["queries"][0]["columns"][0]["timeGrain"], "P1D");
        assert_eq!(q["form_data"], p);
    }

    #[test]
    fn tables_show_every_column_and_figures_one_value() {
        let def = def();
        let ds = dataset(
            9,
            &[
                ("store_id", "LONGINTEGER"),
                ("day", "DATE"),
                ("revenue", "DECIMAL"),
            ],
        );
        let (p, q) = params(&chart_payload(&def, chart(&def, "store-comparison"), &ds));
        assert_eq!(p["query_mode"], "raw");
        assert_eq!(p["all_columns"], json!(["store_id", "day", "revenue"]));
        assert_eq!(p["column_config"]["day"]["d3TimeFormat"], "%Y-%m-%d");
        assert_eq!(p["column_config"]["revenue"]["d3NumberFormat"], ",.2f");
        assert_eq!(
            q["queries"][0]["columns"],
            json!(["store_id", "day", "revenue"])
        );
        assert_eq!(q["queries"][0]["metrics"], json!([]));
        let ds = dataset(9, &[("revenue", "DECIMAL"), ("open_orders", "LONGINTEGER")]);
        let (p, q) = params(&chart_payload(
            &def,
            chart(&def, "headline.open_orders"),
            &ds,
        ));
        assert_eq!(p["viz_type"], "big_number_total");
        assert_eq!(p["metric"]["column"]["column_name"], "open_orders");
        assert_eq!(p["y_axis_format"], ",d");
        assert_eq!(q["queries"][0]["columns"], json!([]));
        let (p, _) = params(&chart_payload(&def, chart(&def, "headline.revenue"), &ds));
        assert_eq!(p["y_axis_format"], ",.2f");
        let (p, _) = params(&chart_payload(&def, chart(&def, "revenue-by-hour"), &ds));
        assert!(p.get("time_grain_sqla").is_none(), "hours are not dates");
    }

    #[test]
    fn the_layout_has_every_chart_in_its_row() {
        let def = def();
        let ids: BTreeMap<String, i64> = def
            .charts()
            .enumerate()
            .map(|(i, p)| (p.chart.key(), 10 + i as i64))
            .collect();
        let layout = position(&def, &ids);
        let grid = layout["GRID_ID"]["children"].as_array().unwrap();
        assert_eq!(grid.len(), def.rows.len() + 1);
        let first = &layout[grid[1].as_str().unwrap()];
        assert_eq!(first["children"].as_array().unwrap().len(), 6);
        let chart = &layout["CHART-10"];
        assert_eq!(chart["meta"]["chartId"], 10);
        assert_eq!(chart["meta"]["width"], 2);
        assert_eq!(chart["meta"]["height"], 24);
        assert_eq!(chart["parents"], json!(["ROOT_ID", "GRID_ID", "ROW-0"]));
        let charts = layout
            .as_object()
            .unwrap()
            .keys()
            .filter(|k| k.starts_with("CHART-"))
            .count();
        assert_eq!(charts, ids.len());
        // Every row fits the 12-column grid.
        for row in grid {
            let width: u64 = layout[row.as_str().unwrap()]["children"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| {
                    layout[c.as_str().unwrap()]["meta"]["width"]
                        .as_u64()
                        .unwrap()
                })
                .sum();
            assert!(width <= 12, "{row}");
        }
    }
}
