//! Business questions, reports, the built-in dashboard and Metabase provisioning.
