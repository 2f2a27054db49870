//! The dashboard's layout (`position_json`): a line of text, then the definition's rows on
//! Superset's 12-column grid.

use std::collections::BTreeMap;

use serde_json::{json, Value};

use crate::definition::Definition;

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

    #[test]
    fn the_layout_has_every_chart_in_its_row() {
        let def = Definition::load().unwrap();
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
