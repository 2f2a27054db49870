//! The source side, apart from the stream (which `pipeline/read.rs` reads): the first start's
//! copy, backfills, and the checks that the source can replicate at all.

pub mod backfill;
pub mod checks;
pub mod copy;
pub mod snapshot;
