//! Keeping the session's cached plans made for the sizes they run on.
//!
//! The star's functions and the replica's merge statements run once per batch on one long
//! session, and PostgreSQL plans a statement without parameters once, then reuses that plan
//! until something it reads is analyzed or altered. A plan made while a replica table held
//! 7 rows scans it whole for every row looked up once it holds 150,000; a plan made for a
//! stage of a few rows nests loops over a stage of 100,000. So the writer analyzes a stage
//! when its batch is of another order of size than the one it was last analyzed at, and a
//! replica table each time it has doubled since: the analyze tells the planner the sizes and
//! makes it plan the statements reading that table again.

use std::collections::HashMap;

use sqlx::Executor;

use super::stage::{stage_name, Stage};
use super::{ApplyError, OlapWriter};
use crate::change::Op;
use crate::table::{ident, SourceTable};

/// Below this many rows, a table counts as small: no analyze between sizes under it.
const SMALL: i64 = 1_000;

/// Which order of size `rows` is in, in steps of `factor` above [`SMALL`].
fn size_class(rows: i64, factor: i64) -> u32 {
    let mut class = 0;
    let mut bound = SMALL;
    while let Some(next) = bound.checked_mul(factor).filter(|&n| rows >= n) {
        bound = next;
        class += 1;
    }
    class
}

/// A stage is analyzed again when its batch is 4 times larger or smaller than at its last
/// analyze (sizes under [`SMALL`] all alike).
fn stage_needs_analyze(analyzed_at: Option<i64>, rows: i64) -> bool {
    size_class(analyzed_at.unwrap_or(0), 4) != size_class(rows, 4)
}

/// A replica table is analyzed again each time it has doubled (past [`SMALL`]) since it was
/// last analyzed. It shrinking needs nothing: plans made for more rows stay linear.
fn replica_needs_analyze(analyzed_at: i64, rows: i64) -> bool {
    size_class(rows, 2) > size_class(analyzed_at, 2)
}

/// The sizes the session's plans were last made for.
#[derive(Debug, Default)]
pub(super) struct PlannedSizes {
    /// Stage table name → rows at its last analyze.
    stages: HashMap<String, i64>,
    /// Replica table name → (rows at its last analyze, rows now as counted since).
    replicas: HashMap<String, (i64, i64)>,
}

impl PlannedSizes {
    /// The replica table `replica` was emptied.
    pub(super) fn truncated(&mut self, replica: &str) {
        if let Some(e) = self.replicas.get_mut(replica) {
            e.1 = 0;
        }
    }
}

impl OlapWriter {
    /// Analyzes the stages just written, and the replica tables they are about to grow, whose
    /// sizes left what the session's plans were made for (see the module's comment).
    pub(super) async fn keep_plans_current(&mut self, stages: &[Stage]) -> Result<(), ApplyError> {
        for s in stages {
            let name = stage_name(&s.table);
            let rows = s.rows.len() as i64;
            if stage_needs_analyze(self.planned.stages.get(&name).copied(), rows) {
                self.analyze_stage(&s.table, rows).await?;
            }
            let replica = s.table.replica_ident();
            let key = s.table.replica.to_string();
            let inserts = s.rows.iter().filter(|r| r.op == Op::Insert).count() as i64;
            let (analyzed_at, now) = match self.planned.replicas.get(&key) {
                Some(&e) => e,
                None => {
                    let n: f32 = sqlx::query_scalar(
                        "select greatest(reltuples, 0) from pg_class where oid = $1::regclass",
                    )
                    .bind(&replica)
                    .fetch_one(&mut self.conn)
                    .await?;
                    (n as i64, n as i64)
                }
            };
            let now = now + inserts;
            let analyzed_at = if replica_needs_analyze(analyzed_at, now) {
                sqlx::query(&format!("analyze {replica}"))
                    .execute(&mut self.conn)
                    .await?;
                now
            } else {
                analyzed_at
            };
            self.planned.replicas.insert(key, (analyzed_at, now));
        }
        Ok(())
    }

    /// `analyze` of `t`'s stage, holding `rows`, from a sample of 3,000 rows (statistics
    /// target 10): counts and distinct keys are what the plans need of a stage, and the
    /// default target reads 30,000 rows (64 ms for a 25k-row stage, measured).
    pub(super) async fn analyze_stage(
        &mut self,
        t: &SourceTable,
        rows: i64,
    ) -> Result<(), ApplyError> {
        let name = stage_name(t);
        // One simple query: three statements, no parameters.
        let sql = format!(
            "set local default_statistics_target = 10; analyze pg_temp.{}; \
             reset default_statistics_target",
            ident(&name)
        );
        (&mut self.conn).execute(sql.as_str()).await?;
        self.planned.stages.insert(name, rows);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_are_told_in_orders_of_size_above_small_ones() {
        assert_eq!(size_class(0, 4), 0);
        assert_eq!(size_class(3_999, 4), 0);
        assert_eq!(size_class(4_000, 4), 1);
        assert_eq!(size_class(16_000, 4), 2);
        assert_eq!(size_class(i64::MAX, 2), size_class(i64::MAX - 1, 2));
    }

    #[test]
    fn a_stage_is_analyzed_when_its_batch_changes_order_of_size() {
        // Never analyzed: planned as small.
        assert!(!stage_needs_analyze(None, 10));
        assert!(stage_needs_analyze(None, 5_000));
        // Batches of about the same size, whatever the small ones: nothing.
        assert!(!stage_needs_analyze(Some(5_000), 12_000));
        assert!(!stage_needs_analyze(Some(10), 900));
        // Much larger, or much smaller again.
        assert!(stage_needs_analyze(Some(5_000), 70_000));
        assert!(stage_needs_analyze(Some(70_000), 20));
    }

    #[test]
    fn a_replica_is_analyzed_each_time_it_doubles() {
        assert!(!replica_needs_analyze(7, 1_999));
        assert!(replica_needs_analyze(7, 2_000));
        assert!(!replica_needs_analyze(2_000, 3_999));
        assert!(replica_needs_analyze(2_000, 4_000));
        assert!(replica_needs_analyze(150_000, 300_000));
        // Shrinking: plans for more rows stay linear.
        assert!(!replica_needs_analyze(150_000, 10));
    }
}
