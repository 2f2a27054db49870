//! The dashboard, once for every BI tool (`dashboards/dashboard.json`): which question each
//! chart shows, drawn how, and where. The Metabase and Superset dashboards are both generated
//! from it and from the questions' SQL, so the two cannot drift apart.
//!
//! The layout is rows of charts on a 24-column grid: a chart's `width` is in columns (even,
//! since Superset's grid has 12), its `height` in grid rows (Metabase's unit; Superset gets
//! eight of its 8-pixel units per row). A chart shows columns of its question's result:
//! `x` (the category or the day) and `y` (the measures); a `number` shows the one value `y`
//! of the first row. `filters` are the dashboard's filters, each wired to the parameter of the
//! same name in every question that has it.

use std::collections::BTreeSet;

use serde::Deserialize;

use crate::question::{self, ParamType, Question};

/// The definition shipped with the binary.
pub const DEFINITION: &str = include_str!("../dashboard.json");

/// Columns of the layout grid.
pub const GRID_COLUMNS: u32 = 24;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("dashboard definition: {0}")]
pub struct DefinitionError(pub String);

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Definition {
    pub name: String,
    /// The dashboard's address in Superset (`/superset/dashboard/<slug>/`).
    pub slug: String,
    pub description: String,
    /// The name the OLAP database gets (or has) in the BI tool.
    pub database: String,
    pub filters: Vec<Filter>,
    pub rows: Vec<Vec<Chart>>,
}

/// A dashboard filter on a question parameter.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Filter {
    /// The parameter (`from`, `to`, `store`).
    pub param: String,
    /// Its label on the dashboard.
    pub name: String,
}

/// How a chart draws its question.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// Vertical bars, one per `x`.
    Bar,
    /// A line over `x`.
    Line,
    /// Horizontal bars, one per `x` (a ranking).
    Row,
    Pie,
    /// Every column and row of the result.
    Table,
    /// One figure: column `y` of the first row.
    Number,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Chart {
    pub question: String,
    pub kind: Kind,
    /// The chart's title; the question's title when not given.
    #[serde(default)]
    pub title: Option<String>,
    #[serde(default)]
    pub x: Option<String>,
    #[serde(default)]
    pub y: Vec<String>,
    pub width: u32,
    pub height: u32,
}

impl Chart {
    /// The question it shows (checked when the definition was loaded).
    pub fn question(&self) -> Question {
        question::find(&self.question).expect("checked when the definition was parsed")
    }

    pub fn title(&self) -> String {
        self.title.clone().unwrap_or_else(|| self.question().title)
    }

    /// A name for the chart that stays the same when its title changes: the question, and
    /// for a figure the column it shows.
    pub fn key(&self) -> String {
        match self.kind {
            Kind::Number => format!("{}.{}", self.question, self.y.join(",")),
            _ => self.question.clone(),
        }
    }
}

/// A chart with its place on the grid.
#[derive(Debug, Clone, Copy)]
pub struct Placed<'a> {
    pub chart: &'a Chart,
    /// The layout row it is in (0-based) and its first grid row and column.
    pub band: usize,
    pub row: u32,
    pub col: u32,
}

impl Definition {
    /// The shipped definition, checked against the questions.
    pub fn load() -> Result<Self, DefinitionError> {
        Self::parse(DEFINITION)
    }

    pub fn parse(text: &str) -> Result<Self, DefinitionError> {
        let def: Definition =
            serde_json::from_str(text).map_err(|e| DefinitionError(e.to_string()))?;
        def.check()?;
        Ok(def)
    }

    fn check(&self) -> Result<(), DefinitionError> {
        let fail = |m: String| Err(DefinitionError(m));
        let (mut keys, mut titles) = (BTreeSet::new(), BTreeSet::new());
        for (i, row) in self.rows.iter().enumerate() {
            let width: u32 = row.iter().map(|c| c.width).sum();
            if row.is_empty() || width > GRID_COLUMNS {
                return fail(format!(
                    "row {i} is empty or wider than the {GRID_COLUMNS}-column grid"
                ));
            }
            for chart in row {
                question::find(&chart.question).map_err(|e| DefinitionError(e.to_string()))?;
                let name = &chart.question;
                if chart.width < 2 || chart.width % 2 != 0 || chart.height < 2 {
                    return fail(format!(
                        "chart {name}: width must be even and at least 2, height at least 2"
                    ));
                }
                let needs_x = !matches!(chart.kind, Kind::Table | Kind::Number);
                if needs_x != chart.x.is_some() || (chart.kind != Kind::Table) == chart.y.is_empty()
                {
                    return fail(format!(
                        "chart {name} ({:?}): x is for bar, line, row and pie charts; y for all \
                         but tables",
                        chart.kind
                    ));
                }
                if chart.kind == Kind::Number && chart.y.len() != 1 {
                    return fail(format!("chart {name}: a number shows exactly one y"));
                }
                // Metabase finds its cards by title, Superset its charts by key.
                if !keys.insert(chart.key()) || !titles.insert(chart.title()) {
                    return fail(format!("chart {} or its title appears twice", chart.key()));
                }
            }
        }
        for f in &self.filters {
            let used = self
                .charts()
                .any(|p| p.chart.question().param(&f.param).is_some());
            if !used {
                return fail(format!(
                    "filter {} matches no question's parameter",
                    f.param
                ));
            }
        }
        Ok(())
    }

    /// Every chart with its place, row by row, left to right.
    pub fn charts(&self) -> impl Iterator<Item = Placed<'_>> {
        let mut top = 0;
        self.rows.iter().enumerate().flat_map(move |(band, row)| {
            let row_top = top;
            top += row.iter().map(|c| c.height).max().unwrap_or(0);
            let mut col = 0;
            row.iter().map(move |chart| {
                let placed = Placed {
                    chart,
                    band,
                    row: row_top,
                    col,
                };
                col += chart.width;
                placed
            })
        })
    }

    /// The questions the dashboard shows, each once, in order of first use.
    pub fn questions(&self) -> Vec<Question> {
        let mut out: Vec<Question> = Vec::new();
        for placed in self.charts() {
            if !out.iter().any(|q| q.name == placed.chart.question) {
                out.push(placed.chart.question());
            }
        }
        out
    }

    /// The type of a filter's parameter (the first question declaring it).
    pub fn filter_type(&self, filter: &Filter) -> Option<ParamType> {
        self.charts()
            .find_map(|p| p.chart.question().param(&filter.param).map(|p| p.type_))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_definition_shows_every_question() {
        let def = Definition::load().unwrap();
        let shown: Vec<String> = def.questions().into_iter().map(|q| q.name).collect();
        for q in question::all() {
            assert!(shown.contains(&q.name), "{} is on no chart", q.name);
        }
        assert_eq!(def.filters.len(), 3);
        assert_eq!(def.filter_type(&def.filters[0]), Some(ParamType::Date));
    }

    #[test]
    fn charts_are_placed_row_after_row() {
        let def = Definition::parse(
            r#"{"name": "D", "slug": "d", "description": "", "database": "db", "filters": [],
                "rows": [
                  [{"question": "headline", "kind": "number", "y": ["revenue"], "title": "R", "width": 6, "height": 3},
                   {"question": "headline", "kind": "number", "y": ["orders"], "title": "O", "width": 6, "height": 2}],
                  [{"question": "daily-revenue", "kind": "bar", "x": "day", "y": ["revenue"], "width": 24, "height": 6}]
                ]}"#,
        )
        .unwrap();
        let placed: Vec<(usize, u32, u32)> = def.charts().map(|p| (p.band, p.row, p.col)).collect();
        assert_eq!(placed, [(0, 0, 0), (0, 0, 6), (1, 3, 0)]);
        assert_eq!(def.charts().nth(1).unwrap().chart.key(), "headline.orders");
        assert_eq!(def.charts().nth(2).unwrap().chart.title(), "Daily revenue");
    }

    #[test]
    fn bad_definitions_are_refused() {
        let with = |chart: &str, filters: &str| {
            Definition::parse(&format!(
                r#"{{"name": "D", "slug": "d", "description": "", "database": "db",
                     "filters": [{filters}], "rows": [[{chart}]]}}"#
            ))
        };
        let ok = r#"{"question": "daily-revenue", "kind": "bar", "x": "day", "y": ["revenue"], "width": 8, "height": 4}"#;
        assert!(with(ok, "").is_ok());
        for (chart, filters) in [
            (ok.replace("daily-revenue", "nope"), ""),
            (ok.replace("\"width\": 8", "\"width\": 7"), ""),
            (ok.replace("\"width\": 8", "\"width\": 26"), ""),
            (ok.replace("\"x\": \"day\", ", ""), ""),
            (ok.replace("\"bar\"", "\"table\""), ""),
            (
                r#"{"question": "headline", "kind": "number", "y": ["revenue", "orders"], "width": 8, "height": 4}"#.to_owned(),
                "",
            ),
            (ok.to_owned(), r#"{"param": "nope", "name": "Nope"}"#),
            (format!("{ok}, {ok}"), ""),
        ] {
            assert!(with(&chart, filters).is_err(), "{chart} {filters}");
        }
    }
}
