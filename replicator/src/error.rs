//! Why replication stopped or was interrupted: every part's error in one type, with the two
//! questions the daemon asks of it — is it worth trying again ([`ReplicatorError::is_retryable`]),
//! and under which `kind` is it counted (`brewlytics_replicator_errors_total`).

use crate::decode::DecodeError;
use crate::schema::SchemaError;
use crate::sink::nats::NatsError;
use crate::sink::olap::ApplyError;
use crate::source::checks::NotReady;
use crate::source::snapshot::SnapshotError;
use crate::spool::SpoolError;
use crate::stream::config::ConfigError;
use crate::stream::conn::ConnError;

#[derive(Debug, thiserror::Error)]
pub enum ReplicatorError {
    #[error("{0}")]
    Fatal(String),
    /// The OLAP writer ended (its own error says why).
    #[error("the OLAP writer stopped")]
    WriterGone,
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("replication stream: {0}")]
    Stream(#[from] ConnError),
    #[error("decoding the stream: {0}")]
    Decode(#[from] DecodeError),
    #[error(transparent)]
    Apply(#[from] ApplyError),
    #[error("initial copy: {0}")]
    Snapshot(#[from] SnapshotError),
    #[error(transparent)]
    Schema(#[from] SchemaError),
    #[error("database: {}", crate::redact::db_error(.0))]
    Sql(#[from] sqlx::Error),
    #[error(transparent)]
    Nats(#[from] NatsError),
    /// Transactions in progress on local disk (the next session starts them again).
    #[error("transactions in progress: {0}")]
    Spool(#[from] SpoolError),
}

impl From<NotReady> for ReplicatorError {
    fn from(e: NotReady) -> Self {
        match e {
            NotReady::Refused(why) => Self::Fatal(why),
            NotReady::Sql(e) => Self::Sql(e),
        }
    }
}

impl ReplicatorError {
    /// Errors worth waiting out (a database restarting, a network cut, the slot held by a
    /// process that is going away); others would only repeat.
    pub fn is_retryable(&self) -> bool {
        use crate::redact::{classify, Class};
        match self {
            Self::Fatal(_) | Self::Config(_) | Self::Decode(_) => false,
            Self::WriterGone => true,
            Self::Apply(e) => e.is_retryable(),
            Self::Snapshot(
                SnapshotError::Malformed { .. } | SnapshotError::Unstreamable { .. },
            ) => false,
            Self::Snapshot(SnapshotError::Apply(e)) => e.is_retryable(),
            Self::Snapshot(SnapshotError::Source(e)) => classify(e) == Class::Transient,
            Self::Schema(SchemaError::Catalog { source, .. }) => {
                classify(source) == Class::Transient
            }
            Self::Stream(ConnError::Auth(_) | ConnError::Tls(_)) => false,
            Self::Stream(ConnError::Server { code, .. }) => {
                crate::redact::classify_code(code) == Class::Transient
            }
            Self::Sql(e) => classify(e) == Class::Transient,
            Self::Nats(e) => e.is_retryable(),
            _ => true,
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Self::Fatal(_) => "fatal",
            Self::WriterGone => "olap",
            Self::Config(_) => "config",
            Self::Stream(_) => "stream",
            Self::Decode(_) => "decode",
            Self::Apply(e) => e.kind(),
            Self::Snapshot(_) => "snapshot",
            Self::Schema(_) => "schema",
            Self::Sql(_) => "database",
            Self::Nats(_) => "nats",
            Self::Spool(_) => "spool",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_is_a_counted_kind() {
        use crate::decode::DecodeErrorKind;
        let errors = [
            ReplicatorError::Fatal("x".into()),
            ReplicatorError::WriterGone,
            ReplicatorError::Config(ConfigError::Malformed("x".into())),
            ReplicatorError::Stream(ConnError::Closed),
            ReplicatorError::Decode(DecodeError {
                tag: None,
                offset: 0,
                kind: DecodeErrorKind::UnknownTag(0),
            }),
            ReplicatorError::Apply(ApplyError::Sql(sqlx::Error::PoolTimedOut)),
            ReplicatorError::Apply(ApplyError::Rejected {
                pos: crate::change::Pos::default(),
                table: "t".into(),
                error: "x".into(),
            }),
            ReplicatorError::Apply(ApplyError::Ddl {
                table: "t".into(),
                error: "x".into(),
            }),
            ReplicatorError::Apply(ApplyError::Star("x".into())),
            ReplicatorError::Snapshot(SnapshotError::Malformed { table: "t".into() }),
            ReplicatorError::Schema(SchemaError::Catalog {
                table: "t".into(),
                source: sqlx::Error::PoolTimedOut,
            }),
            ReplicatorError::Sql(sqlx::Error::PoolTimedOut),
            ReplicatorError::Nats(crate::sink::nats::NatsError::Ack("x".into())),
            ReplicatorError::Spool(SpoolError::MissedStart(1)),
        ];
        for e in &errors {
            assert!(
                crate::telemetry::ERROR_KINDS.contains(&e.kind()),
                "{} is not in ERROR_KINDS",
                e.kind()
            );
        }
    }

    #[test]
    fn outages_are_waited_out_and_mistakes_are_not() {
        let retried = [
            ReplicatorError::WriterGone,
            ReplicatorError::Stream(ConnError::Closed),
            ReplicatorError::Sql(sqlx::Error::PoolTimedOut),
            ReplicatorError::Apply(ApplyError::JournalAhead("x".into())),
            ReplicatorError::Stream(ConnError::Server {
                code: "55006".into(),
                message: "replication slot is active".into(),
            }),
        ];
        for e in &retried {
            assert!(e.is_retryable(), "{e} is retried");
        }
        let stopped = [
            ReplicatorError::Fatal("x".into()),
            ReplicatorError::Apply(ApplyError::Star("x".into())),
            ReplicatorError::Stream(ConnError::Server {
                code: "42501".into(),
                message: "permission denied".into(),
            }),
            ReplicatorError::from(NotReady::Refused("wal_level".into())),
            ReplicatorError::Snapshot(SnapshotError::Malformed { table: "t".into() }),
        ];
        for e in &stopped {
            assert!(!e.is_retryable(), "{e} stops");
        }
        assert!(ReplicatorError::from(NotReady::Sql(sqlx::Error::PoolTimedOut)).is_retryable());
    }
}
