//! What `brewlytics status` and `/status` report: the slot, the checkpoint and the lag.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgConnection;

use crate::checkpoint;
use crate::lsn::Lsn;
use crate::slot::{self, SlotInfo};

#[derive(Debug, Serialize)]
pub struct Status {
    pub slot_name: String,
    pub slot: Option<SlotInfo>,
    pub source_wal_lsn: Option<Lsn>,
    pub checkpoint_lsn: Option<Lsn>,
    pub last_applied_commit_ts: Option<DateTime<Utc>>,
    pub checkpoint_updated_at: Option<DateTime<Utc>>,
    /// Source WAL not yet confirmed by the replicator.
    pub lag_bytes: Option<i64>,
    /// Zero when nothing published is waiting; else the age of the last applied commit.
    pub lag_seconds: Option<f64>,
    /// WAL the slot keeps on the source.
    pub retained_wal_bytes: Option<i64>,
    pub dead_letters: i64,
    pub journal_events: Option<i64>,
    /// Tables being copied while the stream runs (and the last few that were).
    pub backfills: Vec<crate::source::backfill::Progress>,
    /// The partitions of the partitioned tables mirrored, and what was done when they came
    /// or went.
    pub partitions: Vec<crate::sink::olap::partitions::PartitionStatus>,
    /// Star columns whose source no longer feeds every row, with the LSN and time of the
    /// change (a dropped source column, a type the star cannot hold, a table dropped …).
    pub star_degraded: Vec<crate::star::Degraded>,
    /// Rows the star leaves out (`star_dead_letters`): values its types cannot hold, rows it
    /// cannot attach.
    pub star_dead_letters: i64,
    /// Things an operator should act on (no row values).
    pub warnings: Vec<String>,
    /// The NATS change stream, as OLAP records it.
    pub nats: NatsStatus,
}

/// What OLAP knows of the NATS change stream: the publisher's stream sequence committed with
/// each slot's checkpoint, and the loaders that applied a stream into this database.
#[derive(Debug, Default, Serialize)]
pub struct NatsStatus {
    pub published: Vec<Published>,
    pub loaders: Vec<crate::load::Position>,
    /// The stream itself and its consumers' lag, when a NATS server was given.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stream: Option<crate::sink::nats::StreamReport>,
}

#[derive(Debug, Serialize)]
pub struct Published {
    pub slot_name: String,
    pub stream: String,
    pub stream_seq: i64,
    pub updated_at: DateTime<Utc>,
}

async fn nats_status(olap: &mut PgConnection) -> Result<NatsStatus, sqlx::Error> {
    let migrated: bool = sqlx::query_scalar("select to_regclass('cdc_nats_published') is not null")
        .fetch_one(&mut *olap)
        .await?;
    if !migrated {
        return Ok(NatsStatus::default());
    }
    let rows: Vec<(String, String, i64, DateTime<Utc>)> = sqlx::query_as(
        "select slot_name, stream, stream_seq, updated_at from cdc_nats_published order by 1",
    )
    .fetch_all(&mut *olap)
    .await?;
    Ok(NatsStatus {
        published: rows
            .into_iter()
            .map(|r| Published {
                slot_name: r.0,
                stream: r.1,
                stream_seq: r.2,
                updated_at: r.3,
            })
            .collect(),
        loaders: crate::load::positions(olap).await?,
        stream: None,
    })
}

pub async fn read(
    oltp: &mut PgConnection,
    olap: &mut PgConnection,
    slot_name: &str,
) -> Result<Status, sqlx::Error> {
    let slot = slot::info(oltp, slot_name).await?;
    let pos = slot::positions(oltp, slot_name).await?;
    let (lag_bytes, retained) = (pos.lag_bytes, pos.retained_wal_bytes);
    let cp = checkpoint::load(olap, slot_name).await?;
    let dead_letters: i64 = sqlx::query_scalar("select count(*) from cdc_dead_letters")
        .fetch_one(&mut *olap)
        .await?;
    let journal_events: Option<i64> = sqlx::query_scalar(
        "select reltuples::bigint from pg_class where oid = 'cdc_events'::regclass",
    )
    .fetch_optional(&mut *olap)
    .await?;
    // Lag in time: nothing waiting (the slot has confirmed up to the source's position, less
    // than one small record apart) means caught up.
    let backfills = crate::source::backfill::recent(olap, 5).await?;
    let partitions = crate::sink::olap::partitions::status(olap).await?;
    let warnings = warnings(olap).await?;
    let nats = nats_status(olap).await?;
    let (star_degraded, star_dead_letters) = crate::star::store::status(olap).await?;
    let lag_seconds = match (&cp, lag_bytes) {
        (Some(_), Some(b)) if b <= 1024 => Some(0.0),
        (Some(c), Some(_)) => c
            .commit_ts
            .map(|t| (Utc::now() - t).num_milliseconds().max(0) as f64 / 1000.0),
        _ => None,
    };
    Ok(Status {
        slot_name: slot_name.to_owned(),
        slot,
        source_wal_lsn: pos.current_wal,
        checkpoint_lsn: cp.as_ref().map(|c| c.lsn),
        last_applied_commit_ts: cp.as_ref().and_then(|c| c.commit_ts),
        checkpoint_updated_at: cp.as_ref().map(|c| c.updated_at),
        lag_bytes,
        lag_seconds,
        retained_wal_bytes: retained,
        dead_letters,
        journal_events,
        backfills,
        partitions,
        star_degraded,
        star_dead_letters,
        warnings,
        nats,
    })
}

/// Mirrored tables whose UPDATE and DELETE the source refuses (no key, no FULL identity),
/// failed backfills, and unpublished data in OLAP.
async fn warnings(olap: &mut PgConnection) -> Result<Vec<String>, sqlx::Error> {
    let mut out: Vec<String> = sqlx::query_scalar(
        "select format('table %s.%s has no primary key and REPLICA IDENTITY DEFAULT: the source \
                        refuses its UPDATEs and DELETEs; set REPLICA IDENTITY FULL or add a key',
                       source_schema, source_table)
         from cdc_tables where published and key_columns = '{}' and identity <> 'f'
         order by 1",
    )
    .fetch_all(&mut *olap)
    .await?;
    let failed: Vec<String> = sqlx::query_scalar(
        "select format('the backfill of %s.%s failed: %s', source_schema, source_table, error)
         from cdc_backfills where state = 'failed' and finished_at > now() - interval '1 day'
         order by id",
    )
    .fetch_all(&mut *olap)
    .await?;
    out.extend(failed);
    out.extend(crate::schema::audit::warnings(olap).await?);
    Ok(out)
}

impl Status {
    /// A few aligned lines for a terminal.
    pub fn to_table(&self) -> String {
        let opt = |v: Option<String>| v.unwrap_or_else(|| "-".into());
        let s = self.slot.as_ref();
        let rows = [
            ("slot", self.slot_name.clone()),
            ("slot exists", (s.is_some()).to_string()),
            ("active", opt(s.map(|s| s.active.to_string()))),
            ("wal_status", opt(s.and_then(|s| s.wal_status.clone()))),
            (
                "source WAL",
                opt(self.source_wal_lsn.map(|l| l.to_string())),
            ),
            (
                "confirmed flush",
                opt(s.and_then(|s| s.confirmed_flush_lsn).map(|l| l.to_string())),
            ),
            (
                "checkpoint",
                opt(self.checkpoint_lsn.map(|l| l.to_string())),
            ),
            ("lag bytes", opt(self.lag_bytes.map(|b| b.to_string()))),
            (
                "lag seconds",
                opt(self.lag_seconds.map(|b| format!("{b:.3}"))),
            ),
            (
                "retained WAL bytes",
                opt(self.retained_wal_bytes.map(|b| b.to_string())),
            ),
            (
                "last applied commit",
                opt(self.last_applied_commit_ts.map(|t| t.to_rfc3339())),
            ),
            ("dead letters", self.dead_letters.to_string()),
            ("star dead letters", self.star_dead_letters.to_string()),
        ];
        let mut out: String = rows.iter().map(|(k, v)| format!("{k:<20} {v}\n")).collect();
        for b in &self.backfills {
            let of = b
                .rows_estimate
                .map_or(String::new(), |e| format!(" of ~{e}"));
            out.push_str(&format!(
                "{:<20} {} {}: {} rows{of} ({})\n",
                "backfill", b.table, b.state, b.rows_copied, b.reason
            ));
        }
        out.push_str(&crate::sink::olap::partitions::lines(&self.partitions));
        for p in &self.nats.published {
            out.push_str(&format!(
                "{:<20} stream {} at sequence {} (slot {}, committed {})\n",
                "nats published",
                p.stream,
                p.stream_seq,
                p.slot_name,
                p.updated_at.to_rfc3339()
            ));
        }
        for l in &self.nats.loaders {
            out.push_str(&format!(
                "{:<20} {} from stream {} at sequence {} ({} messages, position {})\n",
                "nats loader",
                l.consumer,
                l.stream,
                l.stream_seq,
                l.messages,
                l.lsn.as_deref().unwrap_or("-")
            ));
        }
        if let Some(r) = &self.nats.stream {
            out.push_str(&format!(
                "{:<20} {}: {} messages, sequences {}..{}, {} replicas, leader {}\n",
                "nats stream",
                r.stream,
                r.messages,
                r.first_seq,
                r.last_seq,
                r.replicas,
                r.leader.as_deref().unwrap_or("-")
            ));
            for c in &r.consumers {
                out.push_str(&format!(
                    "{:<20} {}: {} pending, {} unacknowledged, acknowledged to {}\n",
                    "nats consumer",
                    c.name,
                    c.pending_messages,
                    c.ack_pending_messages,
                    c.ack_floor_stream_seq
                ));
            }
        }
        for d in &self.star_degraded {
            let at =
                d.at.map(|t| format!(" ({})", t.to_rfc3339()))
                    .unwrap_or_default();
            out.push_str(&format!("{:<20} {}{at}\n", "star degraded", d.message));
        }
        for w in &self.warnings {
            out.push_str(&format!("{:<20} {w}\n", "warning"));
        }
        out
    }
}
