//! A chart of the definition as a Superset chart: its form data (`params`, what the page
//! draws) and its `query_context` (what the chart-data API runs), both carrying the chart's key
//! so a later run finds it again. Every measure is a sum labelled with its column's name: the
//! questions return one row per category, so the sums are the question's own figures.

use serde_json::{json, Value};

use crate::definition::{Chart, Definition, Kind};

/// The form-data field holding a chart's key (`<dashboard slug>:<chart key>`).
pub const KEY_FIELD: &str = "brewlytics_chart";

/// Rows a chart's query returns at most.
const ROW_LIMIT: u32 = 10_000;

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

/// How a kind of chart is drawn and queried: the settings it adds to the form data, and its
/// query's columns, metrics and order.
struct Drawing {
    settings: Value,
    columns: Vec<Value>,
    metrics: Vec<Value>,
    orderby: Vec<Value>,
}

fn drawing(chart: &Chart, dataset: &Dataset) -> Drawing {
    let metrics: Vec<Value> = chart.y.iter().map(|y| sum_of(y)).collect();
    let x = chart.x.clone().unwrap_or_default();
    match chart.kind {
        Kind::Bar | Kind::Line | Kind::Row => {
            let row = chart.kind == Kind::Row;
            let mut settings = json!({
                "x_axis": x, "metrics": metrics, "groupby": [], "show_legend": false,
                "rich_tooltip": true, "y_axis_format": "SMART_NUMBER",
                // Categories in their order; a ranking with its largest on top.
                "x_axis_sort": if row { &chart.y[0] } else { &x }, "x_axis_sort_asc": true,
                "orientation": if row { "horizontal" } else { "vertical" },
                "markerEnabled": chart.kind == Kind::Line,
            });
            // A day axis: one bar or point per day.
            let axis = if dataset.column(&x).is_some_and(|c| c.temporal) {
                settings["time_grain_sqla"] = json!("P1D");
                json!({"columnType": "BASE_AXIS", "sqlExpression": x, "label": x,
                       "expressionType": "SQL", "timeGrain": "P1D"})
            } else {
                json!(x)
            };
            Drawing {
                settings,
                columns: vec![axis],
                orderby: vec![json!([x, true])],
                metrics,
            }
        }
        Kind::Pie => Drawing {
            settings: json!({
                "groupby": [x], "metric": metrics[0], "show_labels": true,
                "label_type": "key_percent", "show_legend": true, "sort_by_metric": true,
            }),
            columns: vec![json!(x)],
            orderby: vec![json!([metrics[0], false])],
            metrics,
        },
        Kind::Table => {
            let names: Vec<&str> = dataset.columns.iter().map(|c| c.name.as_str()).collect();
            Drawing {
                settings: json!({
                    "query_mode": "raw", "all_columns": names, "order_by_cols": [],
                    "server_pagination": false, "show_cell_bars": false,
                    "column_config": dataset.column_config(),
                }),
                columns: names.iter().map(|c| json!(c)).collect(),
                metrics: vec![],
                orderby: vec![],
            }
        }
        Kind::Number => Drawing {
            settings: json!({
                "metric": metrics[0], "header_font_size": 0.3, "subheader": "",
                "y_axis_format": dataset.number_format(&chart.y[0]),
            }),
            columns: vec![],
            metrics,
            orderby: vec![],
        },
    }
}

/// The body of `POST /api/v1/chart/` (and `PUT`): its form data and the query the chart-data
/// API runs, as Superset's own page would save them.
pub fn chart_payload(def: &Definition, chart: &Chart, dataset: &Dataset) -> Value {
    let drawing = drawing(chart, dataset);
    let mut params = json!({
        "datasource": format!("{}__table", dataset.id),
        "viz_type": viz_type(chart.kind),
        "adhoc_filters": [],
        "row_limit": ROW_LIMIT,
        KEY_FIELD: chart_key(def, chart),
    });
    if let (Value::Object(p), Value::Object(s)) = (&mut params, drawing.settings) {
        p.extend(s);
    }
    let query_context = json!({
        "datasource": {"id": dataset.id, "type": "table"},
        "force": false,
        "queries": [{
            "columns": drawing.columns,
            "metrics": drawing.metrics,
            "orderby": drawing.orderby,
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
