//! The source side, apart from the stream (which `pipeline/read.rs` reads): the first start's
//! copy, backfills (and the watch over the publications and partitions that starts them), and
//! the checks that the source can replicate at all.

pub mod backfill;
pub mod checks;
pub mod copy;
pub mod follow;
pub mod partitions;
pub mod snapshot;
pub mod worker;
