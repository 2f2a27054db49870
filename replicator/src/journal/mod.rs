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

/// The journal's committed end: no row is journaled past the newest checkpoint, except by a
/// batch still in flight (or orphaned by a crash, deleted at the next start). A probe for
/// the journal's first or last row is bounded by it: walking its key past a large
/// uncommitted batch visits every one of that batch's rows (a first start's copy, a long
/// source transaction) — seconds of CPU taken from the stream on each maintenance pass.
pub const COMMITTED_END: &str =
    "(select coalesce(max(lsn), '0/0'::pg_lsn) from replication_checkpoint)";

#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("OLAP: {}", crate::redact::db_error(.0))]
    Sql(#[from] sqlx::Error),
    #[error("the journal is not partitioned yet: run `brewlytics migrate` first")]
    NotMigrated,
}
