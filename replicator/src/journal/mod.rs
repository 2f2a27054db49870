//! The journal's storage and lifecycle: `cdc_events` partitioned by LSN range, partitions
//! created ahead of the stream, compaction (`brewlytics journal compact`), retention
//! (`replicate --journal-retention`) applied in the background, and what `status` and
//! `/metrics` say about it. How changes are written into the journal is the OLAP sink's
//! (`sink::olap::journal`); this module never rewrites a row it keeps.
//!
//! - [`policy`]: the decisions, pure (retention settings, where retention cuts, partition
//!   widths and names).
//! - [`partitions`]: listing, creating and dropping partitions.
//! - [`compact`]: one image per live key at a cut, in one transaction with its bookkeeping.
//! - [`maintain`]: the background task of `replicate`.
//! - [`report`]: the journal in `status` (CLI, JSON, page); [`metrics`]: in `/metrics`.

pub mod compact;
pub mod maintain;
pub mod metrics;
pub mod partitions;
pub mod policy;
pub mod report;

pub use policy::Retention;

#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("OLAP: {}", crate::redact::db_error(.0))]
    Sql(#[from] sqlx::Error),
    #[error("the journal is not partitioned yet: run `brewlytics migrate` first")]
    NotMigrated,
}
