//! The journal as `status` shows it (CLI, `--json`, `/status` and its page): its size, its
//! partitions, where replay can start from and since when, and the latest compaction.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;

use super::metrics::JournalReading;
use super::{compact, partitions, COMMITTED_END};
use crate::lsn::Lsn;

#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct JournalStatus {
    pub partitioned: bool,
    pub bytes: i64,
    pub partitions: usize,
    /// Where the partitions end (the stream's journal rows must stay below it).
    pub partitions_end: Option<Lsn>,
    /// Rows the default partition caught (no partition covered them yet).
    pub default_rows: i64,
    /// The oldest LSN `replay --from-lsn` accepts: the latest compaction's cut (when never
    /// compacted: the journal's first row; replay accepts anything).
    pub replayable_from: Option<Lsn>,
    /// The commit time of the oldest change kept: history since then is in the journal.
    pub replayable_since: Option<DateTime<Utc>>,
    pub compacted: bool,
    pub last_compaction: Option<LastCompaction>,
}

#[derive(Clone, Debug, serde::Serialize, sqlx::FromRow)]
pub struct LastCompaction {
    pub cut: String,
    pub images: i64,
    pub deleted_rows: i64,
    pub dropped_partitions: i32,
    pub dropped_bytes: i64,
    pub trigger: String,
    pub finished_at: DateTime<Utc>,
    pub seconds: f64,
}

pub async fn read(conn: &mut PgConnection) -> Result<JournalStatus, sqlx::Error> {
    let mut out = JournalStatus {
        partitioned: partitions::partitioned(conn).await?,
        ..Default::default()
    };
    if !out.partitioned {
        return Ok(out);
    }
    let layout = partitions::layout(conn).await?;
    out.bytes = layout.bytes();
    out.partitions = layout.partitions.len();
    out.partitions_end = layout.tail();
    out.default_rows = layout.default_rows;
    out.last_compaction = sqlx::query_as(
        "select cut::text, images, deleted_rows, dropped_partitions, dropped_bytes, trigger,
                finished_at, extract(epoch from finished_at - started_at)::float8 as seconds
         from cdc_journal_compactions order by id desc limit 1",
    )
    .fetch_optional(&mut *conn)
    .await?;
    match compact::replayable_from(conn).await? {
        Some(cut) => {
            out.compacted = true;
            out.replayable_from = Some(cut);
            out.replayable_since = sqlx::query_scalar(
                "select cut_commit_ts from cdc_journal_compactions order by cut desc limit 1",
            )
            .fetch_one(&mut *conn)
            .await?;
        }
        None => {
            let first: Option<(String, DateTime<Utc>)> = sqlx::query_as(&format!(
                "select e.lsn::text, e.commit_ts from cdc_events e where e.lsn <= {COMMITTED_END}
                 order by e.lsn, e.seq limit 1"
            ))
            .fetch_optional(&mut *conn)
            .await?;
            out.replayable_from = first.as_ref().and_then(|f| f.0.parse().ok());
            out.replayable_since = first.map(|f| f.1);
        }
    }
    Ok(out)
}

impl JournalStatus {
    /// What `/metrics` shows of it.
    pub fn reading(&self) -> JournalReading {
        JournalReading {
            bytes: self.bytes,
            partitions: self.partitions as i64,
            default_rows: self.default_rows,
            replayable_lsn: if self.compacted {
                self.replayable_from.map_or(0, u64::from)
            } else {
                0
            },
            oldest_change: self
                .replayable_since
                .map(|t| t.timestamp_micros() as f64 / 1e6),
            last_compaction: self
                .last_compaction
                .as_ref()
                .map(|c| c.finished_at.timestamp_micros() as f64 / 1e6),
        }
    }

    /// Lines for the terminal `status`.
    pub fn lines(&self) -> String {
        if !self.partitioned {
            return format!(
                "{:<20} not partitioned: run `brewlytics migrate`\n",
                "journal"
            );
        }
        let opt = |v: Option<String>| v.unwrap_or_else(|| "-".into());
        let mut out = format!(
            "{:<20} {} MB in {} partitions (to {})\n",
            "journal",
            self.bytes >> 20,
            self.partitions,
            opt(self.partitions_end.map(|l| l.to_string()))
        );
        out.push_str(&format!(
            "{:<20} from {} (changes since {}){}\n",
            "journal replayable",
            opt(self.replayable_from.map(|l| l.to_string())),
            opt(self.replayable_since.map(|t| t.to_rfc3339())),
            if self.compacted {
                ""
            } else {
                ", never compacted"
            }
        ));
        if let Some(c) = &self.last_compaction {
            out.push_str(&format!(
                "{:<20} at {} by {} ({}): {} images, {} partitions dropped ({} MB), {} rows deleted, {:.1} s\n",
                "journal compaction",
                c.cut,
                c.trigger,
                c.finished_at.to_rfc3339(),
                c.images,
                c.dropped_partitions,
                c.dropped_bytes >> 20,
                c.deleted_rows,
                c.seconds
            ));
        }
        if self.default_rows > 0 {
            out.push_str(&format!(
                "{:<20} {} rows in the default partition (no partition covered them yet)\n",
                "warning", self.default_rows
            ));
        }
        out
    }
}
