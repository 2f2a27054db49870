//! Where changes go. The OLAP database (journal, replica, star) is the sink of the pipeline.

pub mod olap;
