//! The source side: the replication stream read into batches, the first start's copy,
//! backfills (and the watch over the publications and partitions that starts them), and the
//! checks that the source can replicate at all.

pub mod backfill;
pub mod checks;
pub mod copy;
pub mod follow;
pub mod partitions;
pub mod reader;
pub mod snapshot;
