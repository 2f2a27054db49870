//! The logical replication slot on the source: what it is, creating it with an exported
//! snapshot, and the START_REPLICATION command.

use sqlx::PgConnection;

use crate::lsn::Lsn;
use crate::stream::conn::{ConnError, ReplicationConnection};

/// The slot as `pg_replication_slots` shows it.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
pub struct SlotInfo {
    pub slot_name: String,
    pub plugin: Option<String>,
    pub database: Option<String>,
    pub active: bool,
    pub active_pid: Option<i32>,
    /// reserved, extended, unreserved or lost.
    pub wal_status: Option<String>,
    pub restart_lsn: Option<Lsn>,
    pub confirmed_flush_lsn: Option<Lsn>,
}

pub async fn info(conn: &mut PgConnection, slot: &str) -> Result<Option<SlotInfo>, sqlx::Error> {
    type Row = (
        String,
        Option<String>,
        Option<String>,
        bool,
        Option<i32>,
        Option<String>,
        Option<String>,
        Option<String>,
    );
    let row: Option<Row> = sqlx::query_as(
        "select slot_name::text, plugin::text, database::text, active, active_pid, wal_status,
                restart_lsn::text, confirmed_flush_lsn::text
         from pg_replication_slots where slot_name = $1",
    )
    .bind(slot)
    .fetch_optional(&mut *conn)
    .await?;
    Ok(row.map(|r| SlotInfo {
        slot_name: r.0,
        plugin: r.1,
        database: r.2,
        active: r.3,
        active_pid: r.4,
        wal_status: r.5,
        restart_lsn: r.6.and_then(|l| l.parse().ok()),
        confirmed_flush_lsn: r.7.and_then(|l| l.parse().ok()),
    }))
}

/// Where the source's WAL is, and how far behind it the slot is.
#[derive(Clone, Copy, Debug, Default)]
pub struct Positions {
    pub current_wal: Option<Lsn>,
    /// Source WAL not yet confirmed as flushed by the consumer (`None`: no such slot).
    pub lag_bytes: Option<i64>,
    /// WAL the slot keeps on the source.
    pub retained_wal_bytes: Option<i64>,
}

pub async fn positions(conn: &mut PgConnection, slot: &str) -> Result<Positions, sqlx::Error> {
    let (wal, lag, retained): (String, Option<i64>, Option<i64>) = sqlx::query_as(
        "select pg_current_wal_lsn()::text,
                (select pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn)::bigint
                 from pg_replication_slots where slot_name = $1),
                (select pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn)::bigint
                 from pg_replication_slots where slot_name = $1)",
    )
    .bind(slot)
    .fetch_one(&mut *conn)
    .await?;
    Ok(Positions {
        current_wal: wal.parse().ok(),
        lag_bytes: lag,
        retained_wal_bytes: retained,
    })
}

/// A slot just created, with the snapshot its consistent point corresponds to. The snapshot
/// can be imported (`SET TRANSACTION SNAPSHOT`) only while the creating connection stays open
/// and runs no other command.
#[derive(Clone, Debug)]
pub struct CreatedSlot {
    pub consistent_point: Lsn,
    pub snapshot_name: String,
}

pub async fn create_exported(
    conn: &mut ReplicationConnection,
    slot: &str,
) -> Result<CreatedSlot, ConnError> {
    let rows = conn
        .simple_query(&format!(
            "CREATE_REPLICATION_SLOT \"{slot}\" LOGICAL pgoutput (SNAPSHOT 'export')"
        ))
        .await?;
    let row = rows
        .first()
        .ok_or_else(|| ConnError::Protocol("CREATE_REPLICATION_SLOT returned no row".into()))?;
    let consistent_point = row
        .get(1)
        .and_then(|v| v.as_deref())
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| ConnError::Protocol("no consistent point".into()))?;
    let snapshot_name = row
        .get(2)
        .and_then(|v| v.clone())
        .ok_or_else(|| ConnError::Protocol("no exported snapshot".into()))?;
    Ok(CreatedSlot {
        consistent_point,
        snapshot_name,
    })
}

/// Drops the slot if it exists and nobody streams from it.
pub async fn drop_if_exists(conn: &mut PgConnection, slot: &str) -> Result<bool, sqlx::Error> {
    let dropped: Option<bool> = sqlx::query_scalar(
        "select pg_drop_replication_slot(slot_name) is not null
         from pg_replication_slots where slot_name = $1",
    )
    .bind(slot)
    .fetch_optional(&mut *conn)
    .await?;
    Ok(dropped.is_some())
}

/// Whether the source sends a large transaction while it is in progress (pgoutput protocol 2,
/// `streaming 'on'`, PostgreSQL 14 and later) or only once it committed (protocol 1).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Streaming {
    /// Transactions larger than the source's `logical_decoding_work_mem` are sent in blocks
    /// as they run, spooled here and applied at their commit (`crate::spool`).
    #[default]
    On,
    /// Every transaction is sent whole after its commit.
    Off,
}

impl std::str::FromStr for Streaming {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "on" => Ok(Self::On),
            "off" => Ok(Self::Off),
            other => Err(format!("unknown --streaming {other:?} (on or off)")),
        }
    }
}

/// The first server version whose pgoutput streams transactions in progress.
pub const STREAMING_SINCE: i32 = 140_000;

/// START_REPLICATION for pgoutput with logical messages (heartbeats): protocol 2 streaming
/// transactions in progress, or protocol 1; `publication` names one publication or several,
/// comma-separated.
pub fn start_sql(slot: &str, from: Lsn, publication: &str, streaming: Streaming) -> String {
    let names: Vec<String> = publication_names(publication)
        .iter()
        .map(|n| format!("\"{n}\""))
        .collect();
    let protocol = match streaming {
        Streaming::On => "proto_version '2', streaming 'on'",
        Streaming::Off => "proto_version '1'",
    };
    format!(
        "START_REPLICATION SLOT \"{slot}\" LOGICAL {from} ({protocol}, publication_names '{}', messages 'true')",
        names.join(",")
    )
}

/// Slot and publication names are plain identifiers (they are spliced into replication
/// commands, which take no parameters).
pub fn validate_name(what: &str, name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{what} {name:?} must be 1–63 characters of a–z, 0–9 and _"
        ))
    }
}

/// The publications `PUBLICATION` names: one, or several comma-separated (blanks around
/// names ignored), streamed together as a subscription to several publications is.
pub fn publication_names(config: &str) -> Vec<String> {
    config
        .split(',')
        .map(str::trim)
        .filter(|n| !n.is_empty())
        .map(str::to_owned)
        .collect()
}

/// Each publication name a plain identifier, and at least one.
pub fn validate_publications(config: &str) -> Result<(), String> {
    let list = publication_names(config);
    if list.is_empty() {
        return validate_name("publication", config);
    }
    list.iter()
        .try_for_each(|n| validate_name("publication", n))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked() {
        assert!(validate_name("slot", "brewlytics").is_ok());
        assert!(validate_name("slot", "bad\"name").is_err());
        assert!(validate_name("slot", "").is_err());
        assert!(validate_name("slot", "Upper").is_err());
    }

    #[test]
    fn publication_lists() {
        assert_eq!(publication_names("brewlytics"), vec!["brewlytics"]);
        assert_eq!(publication_names("a, b,,c "), vec!["a", "b", "c"]);
        assert!(validate_publications("brewlytics,eu_only").is_ok());
        assert!(validate_publications("a,Bad").is_err());
        assert!(validate_publications("").is_err());
        assert!(validate_publications(",").is_err());
    }

    #[test]
    fn start_command() {
        assert_eq!(
            start_sql("brewlytics", Lsn(0x1_0000_0000), "brewlytics", Streaming::Off),
            "START_REPLICATION SLOT \"brewlytics\" LOGICAL 1/0 (proto_version '1', publication_names '\"brewlytics\"', messages 'true')"
        );
        assert_eq!(
            start_sql("brewlytics", Lsn(0x1_0000_0000), "brewlytics", Streaming::On),
            "START_REPLICATION SLOT \"brewlytics\" LOGICAL 1/0 (proto_version '2', streaming 'on', publication_names '\"brewlytics\"', messages 'true')"
        );
        assert_eq!("on".parse(), Ok(Streaming::On));
        assert_eq!("off".parse(), Ok(Streaming::Off));
        assert!("maybe".parse::<Streaming>().is_err());
        assert!(start_sql("s", Lsn(0), "brewlytics, eu_only", Streaming::On)
            .contains("publication_names '\"brewlytics\",\"eu_only\"'"));
    }
}
