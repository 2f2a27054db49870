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

mod chart;
mod layout;
mod provision;

use std::fmt;

use serde_json::{json, Value};

pub use chart::{chart_key, chart_payload, Column, Dataset, KEY_FIELD};
pub use layout::{dashboard_payload, position};
pub use provision::{healthy, login, provision};

use crate::connection::{percent_encode, OlapConnection, UrlError};
use crate::definition::{Definition, DefinitionError};
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
#[cfg(test)]
mod tests {
    use super::*;
    use crate::connection::Secret;

    fn def() -> Definition {
        Definition::load().unwrap()
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
}
