//! The replica: each table's stage COPYed (refused rows found and dead-lettered) and merged
//! into its replica table, the last change per key; truncates and schema changes followed.

use std::sync::Arc;

use super::merge;
use super::stage::{self, stage_name, Stage};
use super::star::{after_rows, feeds_star, AfterRows};
use super::{backfill, partitions, ApplyError, OlapWriter};
use crate::change::{Pos, SchemaChange};
use crate::redact::{self, Class};
use crate::table::{ident, SourceTable};

impl OlapWriter {
    pub async fn apply_rows(&mut self, stages: &[Stage]) -> Result<(), ApplyError> {
        let star = self.star_sources().await?;
        let touches_star = stages.iter().any(|s| feeds_star(&s.table, &star));
        let mut dead: Vec<bool> = Vec::with_capacity(stages.len());
        for s in stages {
            self.ensure_stage(&s.table).await?;
            dead.push(self.copy_stage(s).await?);
        }
        self.keep_plans_current(stages).await?;
        if touches_star {
            for name in &star {
                if !stages.iter().any(|s| s.table.replica.as_ref() == name) {
                    self.ensure_star_stage(name).await?;
                }
            }
        }
        for (s, had_dead) in stages.iter().zip(&dead) {
            if *had_dead {
                sqlx::query(&merge::renumber_sql(&s.table))
                    .execute(&mut self.conn)
                    .await?;
            }
            if s.has_keep {
                sqlx::query(&merge::keep_sql(&s.table))
                    .execute(&mut self.conn)
                    .await?;
            }
        }
        if touches_star {
            self.star_note_batch(stages).await?;
            self.star_call("select star_before()").await?;
        }
        for s in stages {
            self.merge_stage(s).await?;
        }
        match after_rows(touches_star, self.deferring, !self.acc.is_empty()) {
            AfterRows::Nothing => {}
            AfterRows::Refresh => self.star_call("select star_after()").await?,
            AfterRows::Gather => self.gather_star(stages).await?,
            AfterRows::GatherAndFinish => {
                self.gather_star(stages).await?;
                self.finish_star().await?;
            }
        }
        Ok(())
    }

    /// Merges a stage into its replica. A row the replica refuses (a constraint OLAP has
    /// and the source does not) is found by halving, dead-lettered (or stops) and left out;
    /// the key's earlier change in the batch, if any, is merged instead.
    async fn merge_stage(&mut self, s: &Stage) -> Result<(), ApplyError> {
        let stage = format!("pg_temp.{}", ident(&stage_name(&s.table)));
        if s.only_inserts && !s.table.is_keyless() {
            sqlx::query("savepoint merge")
                .execute(&mut self.conn)
                .await?;
            match sqlx::query(&merge::insert_only_sql(&s.table))
                .execute(&mut self.conn)
                .await
            {
                Ok(_) => {
                    sqlx::query("release savepoint merge")
                        .execute(&mut self.conn)
                        .await?;
                    return Ok(());
                }
                Err(e) if redact::classify(&e) == Class::Transient => return Err(e.into()),
                Err(_) => {
                    sqlx::query("rollback to savepoint merge")
                        .execute(&mut self.conn)
                        .await?;
                }
            }
        }
        let all = merge::merge_sql(&s.table, s.has_delete);
        let some = merge::merge_sql_some(&s.table, s.has_delete);
        loop {
            sqlx::query("savepoint merge")
                .execute(&mut self.conn)
                .await?;
            let mut failed = None;
            for sql in &all {
                if let Err(e) = sqlx::query(sql).execute(&mut self.conn).await {
                    failed = Some(e);
                    break;
                }
            }
            let Some(e) = failed else {
                sqlx::query("release savepoint merge")
                    .execute(&mut self.conn)
                    .await?;
                return Ok(());
            };
            sqlx::query("rollback to savepoint merge")
                .execute(&mut self.conn)
                .await?;
            if redact::classify(&e) == Class::Transient {
                return Err(e.into());
            }
            let last_only = if s.table.is_keyless() {
                ""
            } else {
                " where _cdc_last"
            };
            let mut candidates: Vec<i32> = sqlx::query_scalar(&format!(
                "select _cdc_pos from {stage}{last_only} order by 1"
            ))
            .fetch_all(&mut self.conn)
            .await?;
            // Halve until one row fails on its own.
            let mut culprit = None;
            while !candidates.is_empty() {
                if candidates.len() == 1 {
                    if let Err(e) = self.try_merge_some(&some, &candidates).await? {
                        culprit = Some((candidates[0], e));
                    }
                    break;
                }
                let half = candidates.split_off(candidates.len() / 2);
                match self.try_merge_some(&some, &candidates).await? {
                    Err(_) => {}
                    Ok(()) => candidates = half,
                }
            }
            let Some((pos, e)) = culprit else {
                // Every row alone is fine, together they are not: not a row's fault.
                return Err(e.into());
            };
            let row = &s.rows[pos as usize];
            self.reject(&s.table, &row.positions, row.op, &e).await?;
            sqlx::query(&format!("delete from {stage} where _cdc_pos = $1"))
                .bind(pos)
                .execute(&mut self.conn)
                .await?;
            sqlx::query(&merge::renumber_sql(&s.table))
                .execute(&mut self.conn)
                .await?;
        }
    }

    /// The merge of some stage rows, tried and undone: whether the replica takes them.
    async fn try_merge_some(
        &mut self,
        sqls: &[String],
        positions: &[i32],
    ) -> Result<Result<(), sqlx::Error>, ApplyError> {
        sqlx::query("savepoint merge_try")
            .execute(&mut self.conn)
            .await?;
        let mut result = Ok(());
        for sql in sqls {
            if let Err(e) = sqlx::query(sql)
                .bind(positions)
                .execute(&mut self.conn)
                .await
            {
                result = Err(e);
                break;
            }
        }
        sqlx::query("rollback to savepoint merge_try")
            .execute(&mut self.conn)
            .await?;
        if let Err(e) = &result {
            if redact::classify(e) == Class::Transient {
                return Err(ApplyError::Sql(result.unwrap_err()));
            }
        }
        Ok(result)
    }

    /// Makes the stage table of `t` exist with `t`'s shape, and empty.
    pub async fn ensure_stage(&mut self, t: &Arc<SourceTable>) -> Result<(), ApplyError> {
        let name = stage_name(t);
        let current = matches!(self.stages.get(&name), Some(Some(s)) if s.same_shape(t));
        if !current {
            let sql = format!("drop table if exists pg_temp.{} cascade", ident(&name));
            sqlx::query(&sql).execute(&mut self.conn).await?;
            sqlx::query(&stage::create_sql(t))
                .execute(&mut self.conn)
                .await?;
            self.stages.insert(name.clone(), Some(t.clone()));
            self.star_stage_view(&t.replica, &name).await?;
        } else if self.dirty.contains(&name) {
            let sql = format!("truncate pg_temp.{}", ident(&name));
            sqlx::query(&sql).execute(&mut self.conn).await?;
        }
        self.dirty.insert(name);
        Ok(())
    }

    /// COPYs a stage; rows OLAP refuses are dead-lettered (or stop). Returns whether any
    /// row was refused.
    async fn copy_stage(&mut self, s: &Stage) -> Result<bool, ApplyError> {
        let sql = format!(
            "copy pg_temp.{} ({}) from stdin",
            ident(&stage_name(&s.table)),
            s.columns
        );
        let spans: Vec<(usize, usize)> = s.rows.iter().map(|r| (r.start, r.end)).collect();
        let refused = self.copy_checked(&sql, &s.data, &spans).await?;
        for (row, e) in &refused {
            self.reject(&s.table, &s.rows[*row].positions, s.rows[*row].op, e)
                .await?;
        }
        Ok(!refused.is_empty())
    }

    pub async fn apply_truncate(&mut self, t: &Arc<SourceTable>) -> Result<(), ApplyError> {
        let sql = format!("truncate {}", t.replica_ident());
        sqlx::query(&sql).execute(&mut self.conn).await?;
        self.planned.truncated(&t.replica);
        if self.is_star_source(t).await? {
            self.star_call("select star_refresh_all()").await?;
        }
        Ok(())
    }

    /// The replica follows a schema change; a copy of the table is requested if needed. The
    /// star's input of the table follows it around the replica's DDL (crate::star).
    pub(super) async fn apply_schema(
        &mut self,
        s: &SchemaChange,
        pos: Pos,
        commit_ts: i64,
    ) -> Result<(), ApplyError> {
        let table = s.after.qualified_source();
        let at = crate::star::At {
            lsn: Some(pos.lsn),
            time: crate::decode::pg_timestamp_to_chrono(commit_ts),
        };
        let star = self
            .star_before_ddl(s.before.as_deref(), &s.after, at)
            .await?;
        let ddl = async {
            sqlx::query("savepoint ddl").execute(&mut self.conn).await?;
            crate::schema::store::apply_steps(&mut self.conn, &s.after, &s.steps).await?;
            sqlx::query("release savepoint ddl")
                .execute(&mut self.conn)
                .await?;
            Ok::<_, sqlx::Error>(())
        }
        .await;
        if let Err(e) = ddl {
            if redact::classify(&e) == Class::Transient {
                return Err(e.into());
            }
            return Err(ApplyError::Ddl {
                table,
                error: redact::db_error(&e),
            });
        }
        self.star_after_ddl(star).await?;
        if self.replaying {
            return Ok(());
        }
        let renamed_from = s
            .before
            .as_deref()
            .filter(|b| b.schema != s.after.schema || b.name != s.after.name);
        crate::schema::store::save(&mut self.conn, &s.after, renamed_from).await?;
        let partition_steps = s.partitions();
        if s.steps.len() > partition_steps.clone().count() {
            tracing::info!(table = %table, steps = s.steps.len(), at = %pos,
                "the replica followed a schema change of its source");
        }
        if let Some(reason) = &s.backfill {
            // Chunks copied under other columns or another row filter are copied again.
            let changed_shape = s.before.as_ref().is_some_and(|b| {
                !b.same_shape(&s.after) || b.published.row_filter != s.after.published.row_filter
            });
            backfill::request(&mut self.conn, &s.after, reason, changed_shape).await?;
            tracing::info!(table = %table, reason = %reason, "the table will be copied again (backfill)");
        }
        for p in partition_steps {
            partitions::apply(&mut self.conn, p, pos).await?;
        }
        // A star source whose shape changed: its stage table is made again on next use.
        self.stages.remove(&format!("stage_{}", s.after.replica));
        Ok(())
    }
}
