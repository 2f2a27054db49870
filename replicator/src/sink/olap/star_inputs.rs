//! The star's inputs in the writer's session: which replica tables feed the star (by the
//! bindings of `crate::star`, so a renamed table still does), the views `pg_temp.input_<input>`
//! over their stage tables, the per-batch bookkeeping of degraded inputs, and the bindings
//! followed around a schema change — said in the log once its batch commits.

use std::time::{Duration, Instant};

use super::{ApplyError, OlapWriter};
use crate::redact::{self, Class};
use crate::sink::olap::stage::Stage;
use crate::star::metrics::StarReading;
use crate::star::{self, store, At};
use crate::table::{ident, literal, SourceTable};

/// How often a writer reads the star's inputs again for the metric when nothing changed
/// them in its own batches (a table dropped from the source is noticed elsewhere).
const READ_EVERY: Duration = Duration::from_secs(30);

/// What the writer's session knows of the star's inputs.
#[derive(Default)]
pub(super) struct StarInputs {
    /// (input, replica table) of each input; None until read on this connection.
    inputs: Option<Vec<(String, String)>>,
    /// Some input degrades: batches keep its bookkeeping (`star_note_batch`).
    degraded: bool,
    /// Lines to log once the open transaction commits.
    notes: Vec<star::Note>,
    /// The bindings changed in the open transaction.
    changed: bool,
    read_at: Option<Instant>,
}

/// A star schema change half carried out (see [`star::store::before_ddl`]).
pub struct PendingStar(Option<store::Pending>);

impl OlapWriter {
    /// The replica tables the star reads (empty without a star, or when one is missing).
    pub async fn star_sources(&mut self) -> Result<Vec<String>, ApplyError> {
        if let Some(inputs) = &self.star.inputs {
            return Ok(inputs.iter().map(|i| i.1.clone()).collect());
        }
        let exists: bool = sqlx::query_scalar(
            "select to_regclass('star_input_tables') is not null
                and to_regprocedure('star_before()') is not null",
        )
        .fetch_one(&mut self.conn)
        .await?;
        let mut inputs = Vec::new();
        if exists {
            // Inputs bound by name (before the replicator read the source) learn their
            // source's identity from what the replica knows.
            let tables = crate::schema::store::load(&mut self.conn).await?;
            store::learn(&mut self.conn, &tables).await?;
            let rows: Vec<(String, String, bool, bool)> = sqlx::query_as(
                "select t.input, t.replica_table,
                        to_regclass(format('replica.%I', t.replica_table)) is not null,
                        t.state <> 'bound' and t.state <> 'renamed'
                        or exists (select 1 from star_bindings b
                                   where b.input = t.input
                                     and (b.state = 'dropped' or b.read = 'per_row'))
                 from star_input_tables t order by 1",
            )
            .fetch_all(&mut self.conn)
            .await?;
            if rows.iter().all(|r| r.2) {
                self.star.degraded = rows.iter().any(|r| r.3);
                inputs = rows.into_iter().map(|r| (r.0, r.1)).collect();
            } else {
                tracing::warn!(
                    "a replica table the star reads is missing: the star schema is not refreshed"
                );
            }
        }
        let names = inputs.iter().map(|i| i.1.clone()).collect();
        self.star.inputs = Some(inputs);
        Ok(names)
    }

    /// Whether `t` is a table the star reads.
    pub async fn is_star_source(&mut self, t: &SourceTable) -> Result<bool, ApplyError> {
        let star = self.star_sources().await?;
        Ok(star.iter().any(|n| n == t.replica.as_ref()))
    }

    /// The view `pg_temp.input_<input>` over `stage`, the stage table of `replica` (made again
    /// with every stage table: it reads the stage's columns).
    pub(super) async fn star_stage_view(
        &mut self,
        replica: &str,
        stage: &str,
    ) -> Result<(), ApplyError> {
        self.star_sources().await?;
        let input = self
            .star
            .inputs
            .iter()
            .flatten()
            .find(|i| i.1 == replica)
            .map(|i| i.0.clone());
        if let Some(input) = input {
            let sql = format!(
                "select star_stage_define({}, {})",
                literal(&input),
                literal(&format!("pg_temp.{}", ident(stage)))
            );
            self.star_try(&sql).await?.map_err(star_error)?;
        }
        Ok(())
    }

    /// An empty stage table (and its input view) for a star source the batch did not touch.
    pub async fn ensure_star_stage(&mut self, replica: &str) -> Result<(), ApplyError> {
        let name = format!("stage_{replica}");
        if !self.stages.contains_key(&name) {
            let drop = format!("drop table if exists pg_temp.{} cascade", ident(&name));
            sqlx::query(&drop).execute(&mut self.conn).await?;
            let sql = format!(
                "create temp table {} (_cdc_pos integer, _cdc_op \"char\", _cdc_last boolean,
                     _cdc_new boolean, _cdc_keep text[], _cdc_n integer, _cdc_ts timestamptz,
                     like replica.{}) on commit delete rows",
                ident(&name),
                ident(replica)
            );
            sqlx::query(&sql).execute(&mut self.conn).await?;
            self.stages.insert(name.clone(), None);
            self.star_stage_view(replica, &name).await?;
        } else if self.dirty.contains(&name) {
            let sql = format!("truncate pg_temp.{}", ident(&name));
            sqlx::query(&sql).execute(&mut self.conn).await?;
            self.dirty.remove(&name);
        }
        Ok(())
    }

    /// The bookkeeping of degraded inputs for the batch's stage tables, before star_before():
    /// insert times kept for dropped time columns, rows the star leaves out listed.
    pub(super) async fn star_note_batch(&mut self, stages: &[Stage]) -> Result<(), ApplyError> {
        if !self.star.degraded {
            return Ok(());
        }
        let first = stages
            .iter()
            .flat_map(|s| s.rows.iter())
            .flat_map(|r| r.positions.iter())
            .map(|p| p.lsn)
            .min()
            .unwrap_or_default();
        self.star_call(&format!(
            "select star_note_batch({}::pg_lsn)",
            literal(&first.to_string())
        ))
        .await
    }

    /// Before the replica's DDL for a schema change of `after` (at `at`): see
    /// [`store::before_ddl`].
    pub async fn star_before_ddl(
        &mut self,
        before: Option<&SourceTable>,
        after: &SourceTable,
        at: At,
    ) -> Result<PendingStar, ApplyError> {
        if !store::exists(&mut self.conn).await? {
            return Ok(PendingStar(None));
        }
        store::before_ddl(&mut self.conn, before, after, at, self.replaying)
            .await
            .map(PendingStar)
            .map_err(star_error)
    }

    /// After the replica's DDL: see [`store::after_ddl`]. Stage tables and their input views
    /// are made again on next use.
    pub async fn star_after_ddl(&mut self, pending: PendingStar) -> Result<(), ApplyError> {
        let Some(p) = pending.0 else {
            return Ok(());
        };
        let notes = store::after_ddl(&mut self.conn, p)
            .await
            .map_err(star_error)?;
        self.star.notes.extend(notes);
        self.star.changed = true;
        self.star.inputs = None;
        self.stages.clear();
        Ok(())
    }

    /// The open transaction committed: its notes are said, and the star's inputs read again
    /// when they changed (or now and then) for the metric.
    pub(super) async fn star_committed(&mut self) -> Option<StarReading> {
        for note in self.star.notes.drain(..) {
            if note.degraded {
                tracing::warn!(change = %note.text, "the star schema degrades: a source schema change");
            } else {
                tracing::info!(change = %note.text, "the star schema follows a source schema change");
            }
        }
        let due = self.star.read_at.is_none_or(|t| t.elapsed() >= READ_EVERY);
        if !std::mem::take(&mut self.star.changed) && !due {
            return None;
        }
        self.star.read_at = Some(Instant::now());
        let inputs = store::load(&mut self.conn).await.ok()?;
        Some(StarReading {
            feeds: store::feeds(&inputs),
            degraded: star::degraded(&inputs),
        })
    }

    /// The open transaction was abandoned: what it changed of the bindings is gone too.
    pub(super) fn star_rolled_back(&mut self) {
        self.star.notes.clear();
        self.star.changed = false;
        self.star.inputs = None;
    }
}

impl OlapWriter {
    /// `sql` under a savepoint: its error, the transaction still usable.
    pub(super) async fn star_try(
        &mut self,
        sql: &str,
    ) -> Result<Result<(), sqlx::Error>, ApplyError> {
        sqlx::query("savepoint star")
            .execute(&mut self.conn)
            .await?;
        let r = sqlx::query(sql).execute(&mut self.conn).await.map(|_| ());
        let end = if r.is_ok() {
            "release savepoint star"
        } else {
            "rollback to savepoint star"
        };
        sqlx::query(end).execute(&mut self.conn).await?;
        Ok(r)
    }

    /// The input views over this session's stage tables, made again.
    pub(super) async fn star_views_again(&mut self) -> Result<(), ApplyError> {
        let stages: Vec<(String, String)> = self
            .stages
            .iter()
            .map(|(name, t)| {
                let replica = match t {
                    Some(t) => t.replica.to_string(),
                    None => name.trim_start_matches("stage_").to_owned(),
                };
                (replica, name.clone())
            })
            .collect();
        for (replica, stage) in stages {
            self.star_stage_view(&replica, &stage).await?;
        }
        Ok(())
    }
}

/// An input view of this session is gone (undefined table `input_…`).
pub(super) fn lost_view(e: &sqlx::Error) -> bool {
    e.as_database_error()
        .is_some_and(|d| d.code().as_deref() == Some("42P01") && d.message().contains("input_"))
}

pub(super) fn star_error(e: sqlx::Error) -> ApplyError {
    if redact::classify(&e) == Class::Transient {
        ApplyError::Sql(e)
    } else {
        ApplyError::Star(redact::db_error(&e))
    }
}
