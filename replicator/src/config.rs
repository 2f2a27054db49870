//! What a replicator is told: the databases, the slot and publication, how batches are cut,
//! where changes go besides OLAP. The defaults live here, once: the command line's defaults
//! and every command that builds a configuration without flags (`resync`) take them from
//! [`ReplicatorConfig::new`].

use std::path::PathBuf;
use std::time::Duration;

use brewlytics_support::DbUrl;

use crate::backoff::Backoff;
use crate::batch::BatchLimits;
use crate::error::ReplicatorError;
use crate::flush::OlapCommit;
use crate::schema::partitions::DetachPolicy;
use crate::sink::nats::envelope::Origin;
use crate::sink::nats::NatsConfig;
use crate::sink::olap::OnError;
use crate::slot::Streaming;

/// The slot and the publication when none is named (`SLOT_NAME`, `PUBLICATION`).
pub const DEFAULT_SLOT: &str = "brewlytics";
pub const DEFAULT_PUBLICATION: &str = "brewlytics";
/// Rows per backfill chunk (`--backfill-chunk-rows`).
pub const DEFAULT_BACKFILL_CHUNK_ROWS: i64 = 20_000;
/// How often a standby status update is sent when nothing else prompts one.
pub const DEFAULT_STATUS_INTERVAL: Duration = Duration::from_secs(10);

#[derive(Clone, Debug)]
pub struct ReplicatorConfig {
    pub oltp_url: DbUrl,
    pub olap_url: DbUrl,
    pub slot: String,
    pub publication: String,
    pub limits: BatchLimits,
    pub on_error: OnError,
    /// How often a standby status update is sent when nothing else prompts one.
    pub status_interval: Duration,
    /// Rows per backfill chunk.
    pub backfill_chunk_rows: i64,
    /// Also publish every change to NATS JetStream (beside OLAP, acknowledged before OLAP
    /// commits).
    pub nats: Option<NatsConfig>,
    /// Tables copied at the same time by a first start or `resync`.
    pub copy_workers: usize,
    /// What becomes of a detached or dropped partition's rows in the replica.
    pub partition_detach: DetachPolicy,
    /// How a session interrupted by a transient error is started again.
    pub retry: Backoff,
    /// How each batch's OLAP transaction commits (see [`crate::flush`]).
    pub olap_commit: OlapCommit,
    /// Whether large transactions are received while in progress (see
    /// `crate::spool`).
    pub streaming: Streaming,
    /// Where transactions in progress are spooled (None: a directory per slot under the
    /// system's temporary directory).
    pub spool_dir: Option<PathBuf>,
}

impl ReplicatorConfig {
    /// `oltp_url` replicated into `olap_url` with every default: slot and publication
    /// `brewlytics`, batches of [`BatchLimits::default`], dead letters, OLAP only.
    pub fn new(oltp_url: DbUrl, olap_url: DbUrl) -> Self {
        Self {
            oltp_url,
            olap_url,
            slot: DEFAULT_SLOT.into(),
            publication: DEFAULT_PUBLICATION.into(),
            limits: BatchLimits::default(),
            on_error: OnError::default(),
            status_interval: DEFAULT_STATUS_INTERVAL,
            backfill_chunk_rows: DEFAULT_BACKFILL_CHUNK_ROWS,
            nats: None,
            copy_workers: crate::source::snapshot::DEFAULT_WORKERS,
            partition_detach: DetachPolicy::default(),
            retry: Backoff::RECONNECT,
            olap_commit: OlapCommit::default(),
            streaming: Streaming::default(),
            spool_dir: None,
        }
    }

    /// Names that go into replication commands (the slot, each publication of a
    /// comma-separated list) are checked before anything connects.
    pub fn validate(&self) -> Result<(), ReplicatorError> {
        crate::slot::validate_name("slot name", &self.slot).map_err(ReplicatorError::Fatal)?;
        crate::slot::validate_publications(&self.publication).map_err(ReplicatorError::Fatal)
    }

    /// Where this slot's transactions in progress are spooled.
    pub fn spool_dir(&self) -> PathBuf {
        self.spool_dir.clone().unwrap_or_else(|| {
            std::env::temp_dir()
                .join("brewlytics-streams")
                .join(&self.slot)
        })
    }

    /// Where published changes say they come from, when they are published.
    pub fn nats_origin(&self) -> Option<Origin> {
        self.nats.as_ref().map(|n| Origin {
            prefix: n.prefix.clone(),
            slot: self.slot.clone(),
            db: self.oltp_url.database().to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> ReplicatorConfig {
        ReplicatorConfig::new(
            DbUrl::parse("postgres://u:secret@h/coffee_oltp").unwrap(),
            DbUrl::parse("postgres://u:secret@h/coffee_olap").unwrap(),
        )
    }

    #[test]
    fn slot_and_publication_names_are_checked() {
        assert!(config().validate().is_ok());
        let mut c = config();
        c.slot = "Bad-Slot".into();
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("slot name \"Bad-Slot\""), "{e}");
        let mut c = config();
        c.publication = String::new();
        let e = c.validate().unwrap_err().to_string();
        assert!(e.starts_with("publication"), "{e}");
    }

    #[test]
    fn published_changes_name_the_slot_and_the_source_database() {
        let mut c = config();
        assert_eq!(c.nats_origin(), None);
        c.nats = Some(NatsConfig::new("nats://127.0.0.1:4222"));
        let origin = c.nats_origin().unwrap();
        assert_eq!(
            (
                origin.prefix.as_str(),
                origin.slot.as_str(),
                origin.db.as_str()
            ),
            ("brewlytics", DEFAULT_SLOT, "coffee_oltp")
        );
    }
}
