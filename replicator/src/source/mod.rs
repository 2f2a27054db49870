//! The source side: the replication stream read into batches, the first start's copy,
//! backfills, and the checks that the source can replicate at all.

pub mod backfill;
pub mod checks;
pub mod copy;
pub mod snapshot;
