//! Business questions, reports, the built-in dashboard, and the same dashboard provisioned
//! into Metabase and Apache Superset.
//!
//! - [`question`]: the SQL questions of `dashboards/questions/` and their parameters,
//! - [`report`]: running a question and rendering CSV, JSON or a text table,
//! - [`web`]: the built-in dashboard (`brewlytics dashboard`), every asset in the binary,
//! - [`definition`]: the dashboard for the BI tools (`dashboards/dashboard.json`): which
//!   question each chart shows, how, and where — the one source of both tools' dashboards,
//! - [`metabase`] and [`superset`]: that dashboard generated for each tool and provisioned
//!   over its REST API, idempotently,
//! - [`connection`] and [`http`]: what both tools share (how they reach coffee_olap, a JSON
//!   client whose errors never hold a secret).

pub mod connection;
pub mod definition;
pub mod http;
pub mod metabase;
pub mod question;
pub mod report;
pub mod superset;
pub mod web;
