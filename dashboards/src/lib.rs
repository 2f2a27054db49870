//! Business questions, reports, the built-in dashboard and Metabase provisioning.
//!
//! - [`question`]: the SQL questions of `dashboards/questions/` and their parameters,
//! - [`report`]: running a question and rendering CSV, JSON or a text table,
//! - [`web`]: the built-in dashboard (`brewlytics dashboard`), every asset in the binary,
//! - [`metabase`]: the Metabase dashboard of `dashboards/metabase/` and its provisioning.

pub mod metabase;
pub mod question;
pub mod report;
pub mod web;
