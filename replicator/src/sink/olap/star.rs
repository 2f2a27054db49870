//! The star schema's refresh for what a batch touched: `star_before()` and `star_after()`
//! around the replica's merge; a transaction applied in parts gathers its star sources' stage
//! rows and refreshes once, with its last part.

use std::sync::Arc;

use super::merge;
use super::stage::{stage_name, Stage};
use super::{star_inputs, ApplyError, OlapWriter};
use crate::table::{ident, SourceTable};

/// Whether `t` is one of the star's sources (a table whose replica the star reads, bound by
/// [`crate::star`] whatever its schema).
pub(super) fn feeds_star(t: &SourceTable, star: &[String]) -> bool {
    star.iter().any(|n| n == t.replica.as_ref())
}

/// The star's work once a run of rows is merged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum AfterRows {
    /// The run touched no star source.
    Nothing,
    /// `star_after()` for the run's keys, now.
    Refresh,
    /// Part of a transaction whose end is yet to come: its star rows are kept for the end.
    Gather,
    /// The end of a transaction applied in parts: kept with the rest, then refreshed once.
    GatherAndFinish,
}

/// `touches`: the run has rows of a star source; `deferring`: the part ends inside its
/// transaction; `gathering`: earlier parts of the transaction kept star rows.
pub(super) fn after_rows(touches: bool, deferring: bool, gathering: bool) -> AfterRows {
    match (touches, deferring, gathering) {
        (false, _, _) => AfterRows::Nothing,
        (true, true, _) => AfterRows::Gather,
        (true, false, true) => AfterRows::GatherAndFinish,
        (true, false, false) => AfterRows::Refresh,
    }
}

impl OlapWriter {
    /// Keeps the star sources' stage rows of a chunk for the star work of its transaction.
    pub(super) async fn gather_star(&mut self, stages: &[Stage]) -> Result<(), ApplyError> {
        let star = self.star_sources().await?;
        for s in stages {
            let t = &s.table;
            if !feeds_star(t, &star) {
                continue;
            }
            let stage = format!("pg_temp.{}", ident(&stage_name(t)));
            let acc = format!("pg_temp.{}", ident(&format!("acc_{}", t.replica)));
            if !self.acc.contains_key(t.replica.as_ref()) {
                sqlx::query(&format!("drop table if exists {acc}"))
                    .execute(&mut self.conn)
                    .await?;
                sqlx::query(&format!(
                    "create temp table {} (like {stage}) on commit drop",
                    ident(&format!("acc_{}", t.replica))
                ))
                .execute(&mut self.conn)
                .await?;
                self.acc.insert(t.replica.to_string(), t.clone());
            }
            // Positions go on from the chunks before.
            let n = sqlx::query(&merge::gather_sql(t, &stage, &acc))
                .bind(i32::try_from(self.acc_rows).unwrap_or(i32::MAX))
                .execute(&mut self.conn)
                .await?
                .rows_affected() as i64;
            self.acc_rows += n;
        }
        Ok(())
    }

    /// The star work gathered over a transaction's chunks, done once: each gathered table's
    /// stage holds all its changes again, last and new told over the whole transaction.
    pub(super) async fn finish_star(&mut self) -> Result<(), ApplyError> {
        if self.acc.is_empty() {
            return Ok(());
        }
        let star = self.star_sources().await?;
        for name in &star {
            self.ensure_star_stage(name).await?;
        }
        let gathered: Vec<Arc<SourceTable>> = self.acc.drain().map(|(_, t)| t).collect();
        self.acc_rows = 0;
        for t in &gathered {
            let stage = format!("pg_temp.{}", ident(&stage_name(t)));
            let acc = format!("pg_temp.{}", ident(&format!("acc_{}", t.replica)));
            sqlx::query(&format!("truncate {stage}"))
                .execute(&mut self.conn)
                .await?;
            let rows = sqlx::query(&merge::regather_sql(t, &stage, &acc))
                .execute(&mut self.conn)
                .await?
                .rows_affected();
            // A temporary table is never analyzed on its own: without statistics, the star's
            // joins over a whole large transaction are planned for a few rows.
            self.analyze_stage(t, rows as i64).await?;
            sqlx::query(&format!("drop table {acc}"))
                .execute(&mut self.conn)
                .await?;
            self.dirty.insert(stage_name(t));
        }
        self.star_call("select star_after()").await
    }

    pub async fn star_call(&mut self, sql: &str) -> Result<(), ApplyError> {
        match self.star_try(sql).await? {
            Err(e) if star_inputs::lost_view(&e) => {
                // Another session (a replay) dropped what this session's input views read.
                self.star_views_again().await?;
                self.star_try(sql).await?.map_err(star_inputs::star_error)
            }
            r => r.map_err(star_inputs::star_error),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::table::fixtures;

    #[test]
    fn only_tables_the_star_reads_feed_it() {
        let products = fixtures::products();
        let star = vec!["orders".to_owned(), "products".to_owned()];
        assert!(feeds_star(&products, &star));
        assert!(!feeds_star(&products, &["orders".to_owned()]));
        assert!(!feeds_star(&products, &[]), "no star in OLAP");
        // sales.products mirrors to replica.sales__products: not the star's `products`.
        let elsewhere = SourceTable {
            schema: "sales".into(),
            replica: "sales__products".into(),
            ..fixtures::products()
        };
        assert!(!feeds_star(&elsewhere, &star));
        let bound = vec!["sales__products".to_owned()];
        assert!(
            feeds_star(&elsewhere, &bound),
            "a star input of another schema"
        );
    }

    #[test]
    fn a_transaction_in_parts_refreshes_the_star_once_at_its_end() {
        use AfterRows::*;
        // A whole transaction: now, or not at all.
        assert_eq!(after_rows(true, false, false), Refresh);
        assert_eq!(after_rows(false, false, false), Nothing);
        // Its parts before the last keep their rows, whatever came before.
        assert_eq!(after_rows(true, true, false), Gather);
        assert_eq!(after_rows(true, true, true), Gather);
        // The last part, after parts that kept rows: everything, once.
        assert_eq!(after_rows(true, false, true), GatherAndFinish);
        assert_eq!(after_rows(false, true, true), Nothing);
    }
}
