//! Running a question against OLAP and rendering its rows as CSV, JSON or a text table.

use std::fmt::Write as _;

use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};
use rust_decimal::Decimal;
use serde_json::Value;
use sqlx::postgres::PgRow;
use sqlx::{Column, PgPool, Row, TypeInfo, ValueRef};

use crate::question::{ParamValue, Params, Question, QuestionError};

#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error(transparent)]
    Question(#[from] QuestionError),
    #[error("running question {question}: {source}")]
    Query {
        question: String,
        #[source]
        source: sqlx::Error,
    },
    #[error(
        "question {question}: column {column} has type {type_name}, which reports cannot show"
    )]
    UnsupportedType {
        question: String,
        column: String,
        type_name: String,
    },
}

/// One value of a result. Money stays exact (`Decimal`).
#[derive(Debug, Clone, PartialEq)]
pub enum Cell {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Decimal(Decimal),
    Text(String),
    Date(NaiveDate),
    Timestamp(DateTime<Utc>),
}

impl Cell {
    /// The text of the value as CSV and tables show it (empty for null).
    pub fn text(&self) -> String {
        match self {
            Cell::Null => String::new(),
            Cell::Bool(b) => b.to_string(),
            Cell::Int(i) => i.to_string(),
            Cell::Float(f) => f.to_string(),
            Cell::Decimal(d) => d.to_string(),
            Cell::Text(t) => t.clone(),
            Cell::Date(d) => d.to_string(),
            Cell::Timestamp(t) => t.format("%Y-%m-%dT%H:%M:%SZ").to_string(),
        }
    }

    /// JSON: numbers for integers and floats, strings for exact decimals, dates and times.
    pub fn json(&self) -> Value {
        match self {
            Cell::Null => Value::Null,
            Cell::Bool(b) => Value::Bool(*b),
            Cell::Int(i) => Value::from(*i),
            Cell::Float(f) => serde_json::Number::from_f64(*f)
                .map(Value::Number)
                .unwrap_or(Value::Null),
            other => Value::String(other.text()),
        }
    }

    fn is_numeric(&self) -> bool {
        matches!(self, Cell::Int(_) | Cell::Float(_) | Cell::Decimal(_))
    }
}

/// A question's result: column names and rows.
#[derive(Debug, Clone, PartialEq)]
pub struct Table {
    pub columns: Vec<String>,
    pub rows: Vec<Vec<Cell>>,
}

impl Table {
    pub fn column(&self, name: &str) -> Option<usize> {
        self.columns.iter().position(|c| c == name)
    }

    /// CSV (RFC 4180) with a header line.
    pub fn to_csv(&self) -> String {
        let mut out = String::new();
        let line = |out: &mut String, fields: &mut dyn Iterator<Item = String>| {
            let fields: Vec<String> = fields.map(|f| csv_field(&f)).collect();
            out.push_str(&fields.join(","));
            out.push('\n');
        };
        line(&mut out, &mut self.columns.iter().cloned());
        for row in &self.rows {
            line(&mut out, &mut row.iter().map(Cell::text));
        }
        out
    }

    /// A JSON array of objects whose keys keep the columns' order.
    pub fn to_json(&self) -> String {
        let mut out = String::from("[");
        for (i, row) in self.rows.iter().enumerate() {
            out.push_str(if i == 0 { "\n  {" } else { ",\n  {" });
            for (j, (name, cell)) in self.columns.iter().zip(row).enumerate() {
                if j > 0 {
                    out.push_str(", ");
                }
                out.push_str(&Value::String(name.clone()).to_string());
                out.push_str(": ");
                out.push_str(&cell.json().to_string());
            }
            out.push('}');
        }
        out.push_str(if self.rows.is_empty() { "]\n" } else { "\n]\n" });
        out
    }

    /// An aligned text table; numbers right-aligned.
    pub fn to_text_table(&self) -> String {
        let texts: Vec<Vec<String>> = self
            .rows
            .iter()
            .map(|r| r.iter().map(Cell::text).collect())
            .collect();
        let widths: Vec<usize> = (0..self.columns.len())
            .map(|j| {
                texts
                    .iter()
                    .map(|r| r[j].chars().count())
                    .chain([self.columns[j].chars().count()])
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let numeric: Vec<bool> = (0..self.columns.len())
            .map(|j| {
                self.rows.iter().any(|r| r[j].is_numeric())
                    && self
                        .rows
                        .iter()
                        .all(|r| r[j].is_numeric() || r[j] == Cell::Null)
            })
            .collect();
        let mut out = String::new();
        let pad = |out: &mut String, text: &str, width: usize, right: bool| {
            let fill = width - text.chars().count();
            if right {
                out.push_str(&" ".repeat(fill));
                out.push_str(text);
            } else {
                out.push_str(text);
                out.push_str(&" ".repeat(fill));
            }
        };
        for (j, name) in self.columns.iter().enumerate() {
            if j > 0 {
                out.push_str("  ");
            }
            pad(&mut out, name, widths[j], numeric[j]);
        }
        out = out.trim_end().to_owned();
        out.push('\n');
        let rule: Vec<String> = widths.iter().map(|w| "-".repeat(*w)).collect();
        out.push_str(&rule.join("  "));
        out.push('\n');
        for row in &texts {
            let mut line = String::new();
            for (j, text) in row.iter().enumerate() {
                if j > 0 {
                    line.push_str("  ");
                }
                pad(&mut line, text, widths[j], numeric[j]);
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        let _ = writeln!(
            out,
            "({} row{})",
            self.rows.len(),
            if self.rows.len() == 1 { "" } else { "s" }
        );
        out
    }
}

fn csv_field(text: &str) -> String {
    if text.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text.to_owned()
    }
}

/// Runs `question` with `params` (values bound, never formatted into the SQL).
pub async fn run(
    pool: &PgPool,
    question: &Question,
    params: &Params,
) -> Result<Table, ReportError> {
    let compiled = question.compile(params)?;
    let mut query = sqlx::query(&compiled.sql);
    for value in &compiled.binds {
        query = match *value {
            ParamValue::Date(d) => query.bind(d),
            ParamValue::Integer(i) => query.bind(i),
        };
    }
    let query_error = |source| ReportError::Query {
        question: question.name.clone(),
        source,
    };
    // `describe` gives the columns even when there are no rows.
    let rows = query.fetch_all(pool).await.map_err(query_error)?;
    let columns = match rows.first() {
        Some(r) => r.columns().iter().map(|c| c.name().to_owned()).collect(),
        None => columns_of(pool, &compiled.sql).await.map_err(query_error)?,
    };
    let mut out = Vec::with_capacity(rows.len());
    for row in &rows {
        out.push(decode_row(question, row)?);
    }
    Ok(Table { columns, rows: out })
}

async fn columns_of(pool: &PgPool, sql: &str) -> Result<Vec<String>, sqlx::Error> {
    use sqlx::Executor;
    let described = pool.describe(sql).await?;
    Ok(described
        .columns()
        .iter()
        .map(|c| c.name().to_owned())
        .collect())
}

/// A numeric's display scale, which the decoder drops for zero (`0.00` would print `0`).
fn with_display_scale(mut d: Decimal, raw: &sqlx::postgres::PgValueRef<'_>) -> Decimal {
    if raw.format() == sqlx::postgres::PgValueFormat::Binary {
        if let Ok(bytes) = raw.as_bytes() {
            if bytes.len() >= 8 {
                let dscale = u32::from(u16::from_be_bytes([bytes[6], bytes[7]]));
                if d.scale() < dscale && dscale <= 28 {
                    d.rescale(dscale);
                }
            }
        }
    }
    d
}

fn decode_row(question: &Question, row: &PgRow) -> Result<Vec<Cell>, ReportError> {
    let mut cells = Vec::with_capacity(row.len());
    for (i, column) in row.columns().iter().enumerate() {
        let raw = row.try_get_raw(i).map_err(|source| ReportError::Query {
            question: question.name.clone(),
            source,
        })?;
        if raw.is_null() {
            cells.push(Cell::Null);
            continue;
        }
        let type_name = raw.type_info().name().to_owned();
        let get_err = |source| ReportError::Query {
            question: question.name.clone(),
            source,
        };
        let cell = match type_name.as_str() {
            "BOOL" => Cell::Bool(row.try_get(i).map_err(get_err)?),
            "INT2" => Cell::Int(row.try_get::<i16, _>(i).map_err(get_err)?.into()),
            "INT4" => Cell::Int(row.try_get::<i32, _>(i).map_err(get_err)?.into()),
            "INT8" => Cell::Int(row.try_get(i).map_err(get_err)?),
            "FLOAT4" => Cell::Float(row.try_get::<f32, _>(i).map_err(get_err)?.into()),
            "FLOAT8" => Cell::Float(row.try_get(i).map_err(get_err)?),
            "NUMERIC" => {
                let d: Decimal = row.try_get(i).map_err(get_err)?;
                Cell::Decimal(with_display_scale(d, &raw))
            }
            "TEXT" | "VARCHAR" | "BPCHAR" | "NAME" => Cell::Text(row.try_get(i).map_err(get_err)?),
            "DATE" => Cell::Date(row.try_get(i).map_err(get_err)?),
            "TIMESTAMPTZ" => Cell::Timestamp(row.try_get(i).map_err(get_err)?),
            "TIMESTAMP" => Cell::Timestamp(
                row.try_get::<NaiveDateTime, _>(i)
                    .map_err(get_err)?
                    .and_utc(),
            ),
            "UUID" => Cell::Text(
                row.try_get::<uuid::Uuid, _>(i)
                    .map_err(get_err)?
                    .to_string(),
            ),
            _ => {
                return Err(ReportError::UnsupportedType {
                    question: question.name.clone(),
                    column: column.name().to_owned(),
                    type_name,
                })
            }
        };
        cells.push(cell);
    }
    Ok(cells)
}

/// The output formats of `brewlytics report`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Csv,
    Json,
    Table,
}

impl std::str::FromStr for Format {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "csv" => Ok(Self::Csv),
            "json" => Ok(Self::Json),
            "table" => Ok(Self::Table),
            other => Err(format!("unknown format {other:?} (csv, json or table)")),
        }
    }
}

impl Table {
    pub fn render(&self, format: Format) -> String {
        match format {
            Format::Csv => self.to_csv(),
            Format::Json => self.to_json(),
            Format::Table => self.to_text_table(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Table {
        Table {
            columns: vec!["name".into(), "revenue".into(), "n".into()],
            rows: vec![
                vec![
                    Cell::Text("Flat white, large".into()),
                    Cell::Decimal(Decimal::new(1250, 2)),
                    Cell::Int(3),
                ],
                vec![Cell::Text("Say \"hi\"".into()), Cell::Null, Cell::Int(12)],
            ],
        }
    }

    #[test]
    fn csv_quotes_what_needs_quoting() {
        assert_eq!(
            sample().to_csv(),
            "name,revenue,n\n\"Flat white, large\",12.50,3\n\"Say \"\"hi\"\"\",,12\n"
        );
    }

    #[test]
    fn json_keeps_column_order_and_exact_money() {
        let json = sample().to_json();
        let parsed: Value = serde_json::from_str(&json).unwrap();
        assert_eq!(parsed[0]["revenue"], "12.50");
        assert_eq!(parsed[1]["n"], 12);
        assert!(json.find("\"name\"").unwrap() < json.find("\"revenue\"").unwrap());
        let empty = Table {
            columns: vec!["a".into()],
            rows: vec![],
        };
        assert_eq!(empty.to_json(), "[]\n");
    }

    #[test]
    fn text_table_aligns_numbers_right() {
        let text = sample().to_text_table();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "name               revenue   n");
        assert_eq!(lines[2], "Flat white, large    12.50   3");
        assert_eq!(lines[3], "Say \"hi\"                    12");
        assert_eq!(lines[4], "(2 rows)");
    }
}
