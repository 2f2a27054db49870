//! The batch's transaction: opened by the first part, each part journaled (on the side
//! connection when there is one) and applied, committed with the checkpoint or rolled back.

use std::time::Instant;

use chrono::{DateTime, Utc};

use super::encode::{Encoded, Segment};
use super::error::journal_error;
use super::{backfill, journal, ApplyError, OlapWriter};
use crate::checkpoint;
use crate::flush::{self, OlapCommit};
use crate::lsn::Lsn;
use crate::telemetry::ApplyStats;
use brewlytics_support::DbUrl;

impl OlapWriter {
    /// Opens the batch's transaction (if not open).
    pub async fn begin(&mut self) -> Result<(), ApplyError> {
        if self.in_tx {
            return Ok(());
        }
        sqlx::query("begin").execute(&mut self.conn).await?;
        self.in_tx = true;
        self.started = Some(Instant::now());
        // Commit waits for the local WAL flush, unless commits are asynchronous: then the
        // source hears of the batch only once OLAP's flush has passed it (`crate::flush`),
        // whatever the server's default.
        //
        // Where allowed (superuser, or `GRANT SET ON PARAMETER session_replication_role`,
        // see deploy/roles.sql), the transaction runs as a replication apply does
        // (`session_replication_role = replica`): the star schema's foreign keys are not
        // re-checked row by row. The refresh inserts every dimension member (inferred if
        // need be) before the facts that name it, so they hold by construction — the crash
        // drills check it.
        //
        // `brewlytics.replaying` tells the star's SQL that rows may already be in a newer
        // state than the batch says (replay over the current state).
        //
        // Every batch holds the replica gate shared: `replay` takes it alone before it empties
        // and rebuilds the replica, so a batch never waits for replay on one table while
        // replay waits for it on another (a deadlock one of them would lose).
        sqlx::query(
            "select set_config('synchronous_commit', $1, true),
                    set_config('intervalstyle', 'postgres', true),
                    set_config('datestyle', 'ISO, MDY', true),
                    set_config('client_min_messages', 'warning', true),
                    set_config('brewlytics.replaying', $2, true),
                    case when has_parameter_privilege('session_replication_role', 'SET')
                         then set_config('session_replication_role', 'replica', true) end,
                    pg_advisory_xact_lock_shared(hashtext('brewlytics replica'))",
        )
        .bind(self.commit_mode.setting())
        .bind(if self.replaying { "on" } else { "off" })
        .execute(&mut self.conn)
        .await?;
        Ok(())
    }

    /// Journals and applies an encoded batch (or a chunk of one source transaction) into the
    /// open transaction.
    pub async fn apply(&mut self, batch: &Encoded) -> Result<(), ApplyError> {
        self.apply_part(batch).await?;
        self.finish_star().await
    }

    /// Journals and applies a chunk of a source transaction whose end is yet to come: its
    /// star work waits for the last chunk ([`OlapWriter::apply`]).
    pub async fn apply_chunk(&mut self, batch: &Encoded) -> Result<(), ApplyError> {
        self.deferring = true;
        let r = self.apply_part(batch).await;
        self.deferring = false;
        r
    }

    /// Applies segments already journaled (a replay) into the open transaction.
    /// `ends_inside`: the source transaction goes on in the next call, so its star work waits
    /// for the call that ends it, as a transaction streamed in parts does.
    pub async fn apply_journaled(
        &mut self,
        segments: &[Segment],
        ends_inside: bool,
    ) -> Result<(), ApplyError> {
        self.deferring = ends_inside;
        let r = self.apply_segments(segments).await;
        self.deferring = false;
        r?;
        if ends_inside {
            Ok(())
        } else {
            self.finish_star().await
        }
    }

    /// Journals on a second connection from now on, in parallel with the rest of each batch
    /// (see [`journal::Side`]); the caller deletes journal rows past its checkpoint first.
    pub async fn journal_apart(&mut self, url: &DbUrl) -> Result<(), ApplyError> {
        self.side = Some(journal::Side::connect(url, self.commit_mode).await?);
        Ok(())
    }

    async fn apply_part(&mut self, batch: &Encoded) -> Result<(), ApplyError> {
        self.begin().await?;
        // A backfill merge reads the journal up to its position in this transaction.
        let reads_journal = batch
            .segments
            .iter()
            .any(|s| matches!(s, Segment::Backfill(..)));
        match self.side.take() {
            Some(mut side) if !reads_journal => {
                let (journaled, applied) = tokio::join!(
                    side.write(&batch.journal),
                    self.apply_segments(&batch.segments)
                );
                self.side = Some(side);
                journaled.map_err(journal_error)?;
                applied?;
            }
            side => {
                self.side = side;
                if let Some(side) = &mut self.side {
                    side.commit().await.map_err(journal_error)?;
                }
                journal::write(&mut self.conn, &batch.journal).await?;
                self.apply_segments(&batch.segments).await?;
            }
        }
        self.totals.events += batch.changes;
        self.totals
            .by_table
            .extend(batch.counts.iter().map(|((t, op), n)| (t.clone(), *op, *n)));
        Ok(())
    }

    /// Applies segments (already journaled) in order.
    pub async fn apply_segments(&mut self, segments: &[Segment]) -> Result<(), ApplyError> {
        for segment in segments {
            match segment {
                Segment::Rows(stages) => self.apply_rows(stages).await?,
                Segment::Truncate(t) => {
                    self.finish_star().await?;
                    self.apply_truncate(t).await?
                }
                Segment::Schema(s, pos, ts) => {
                    self.finish_star().await?;
                    self.apply_schema(s, *pos, *ts).await?
                }
                Segment::Backfill(m, pos) => {
                    self.finish_star().await?;
                    backfill::merge(self, m, *pos).await?;
                }
            }
        }
        Ok(())
    }

    /// Writes the checkpoint and commits; returns what the transaction applied.
    pub async fn commit(
        &mut self,
        slot: &str,
        lsn: Lsn,
        commit_ts: Option<DateTime<Utc>>,
    ) -> Result<ApplyStats, ApplyError> {
        self.finish(Some((slot, lsn, commit_ts))).await
    }

    /// Commits without moving any checkpoint (replay).
    pub async fn commit_without_checkpoint(&mut self) -> Result<ApplyStats, ApplyError> {
        self.finish(None).await
    }

    /// The journal's side transaction commits first, then this one (with the checkpoint).
    async fn finish(
        &mut self,
        mark: Option<(&str, Lsn, Option<DateTime<Utc>>)>,
    ) -> Result<ApplyStats, ApplyError> {
        self.begin().await?;
        if let Some(side) = &mut self.side {
            side.commit().await.map_err(journal_error)?;
        }
        if let Some((slot, lsn, commit_ts)) = mark {
            checkpoint::store(&mut self.conn, slot, lsn, commit_ts).await?;
        }
        self.last_commit = match self.commit_mode {
            OlapCommit::Asynchronous => Some(flush::commit_reading_position(&mut self.conn).await?),
            OlapCommit::Synchronous => {
                sqlx::query("commit").execute(&mut self.conn).await?;
                None
            }
        };
        self.in_tx = false;
        self.dirty.clear();
        self.totals.elapsed = self.started.map(|s| s.elapsed()).unwrap_or_default();
        let mut stats = std::mem::take(&mut self.totals);
        if mark.is_some() {
            // Replay's commits leave the star's reading to the replicator.
            stats.star = self.star_committed().await;
        }
        Ok(stats)
    }

    /// Abandons the open transaction.
    pub async fn rollback(&mut self) -> Result<(), ApplyError> {
        if let Some(side) = &mut self.side {
            if side.rollback().await.is_err() {
                // A broken connection: the journal goes back into the batch's transaction.
                self.side = None;
            }
        }
        if self.in_tx {
            sqlx::query("rollback").execute(&mut self.conn).await?;
            self.in_tx = false;
        }
        self.dirty.clear();
        // Stage tables made in the transaction are gone with it.
        self.stages.clear();
        self.acc.clear();
        self.acc_rows = 0;
        self.totals = ApplyStats::default();
        self.star_rolled_back();
        Ok(())
    }
}
