//! What can go wrong applying a batch, and what to do with a change OLAP refuses.

use crate::change::Pos;
use crate::redact::{self, Class};

/// What to do with a change that cannot be applied.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum OnError {
    /// Record it in `cdc_dead_letters`, count it, go on.
    #[default]
    DeadLetter,
    /// Stop the replicator with the change's position and table.
    Stop,
}

impl std::str::FromStr for OnError {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "dead-letter" | "continue" => Ok(Self::DeadLetter),
            "stop" => Ok(Self::Stop),
            other => Err(format!(
                "unknown --on-error {other:?} (dead-letter or stop)"
            )),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error("OLAP: {}", redact::db_error(.0))]
    Sql(#[from] sqlx::Error),
    #[error("change {pos} of {table} could not be applied (--on-error stop): {error}")]
    Rejected {
        pos: Pos,
        table: String,
        error: String,
    },
    #[error(
        "the replica of {table} could not follow its source's schema change: {error}; \
             run `brewlytics snapshot --table {table}` after fixing the replica table by hand"
    )]
    Ddl { table: String, error: String },
    #[error(
        "the star schema refresh failed: {0}; the batch is not committed (fix the star SQL \
             in schema/olap/logic or the offending source rows)"
    )]
    Star(String),
    #[error("the journal already holds changes past the checkpoint: {0}")]
    JournalAhead(String),
}

impl ApplyError {
    /// Whether trying the transaction again later may succeed.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Sql(e) => redact::classify(e) == Class::Transient,
            Self::JournalAhead(_) => true,
            _ => false,
        }
    }

    /// A short label for the errors metric.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Sql(_) => "olap",
            Self::Rejected { .. } => "rejected",
            Self::Ddl { .. } => "schema",
            Self::Star(_) => "star",
            Self::JournalAhead(_) => "olap",
        }
    }
}

/// An error of the journal's own connection. A key already there means journal rows of a
/// batch that never committed were written after this session deleted them (a replicator
/// that lost its OLAP connection but not this one): worth a new session, which deletes them.
pub(super) fn journal_error(e: sqlx::Error) -> ApplyError {
    let code = e.as_database_error().and_then(|d| d.code());
    if is_unique_violation(code.as_deref()) {
        ApplyError::JournalAhead(redact::db_error(&e))
    } else {
        ApplyError::Sql(e)
    }
}

/// SQLSTATE 23505: a key already there.
fn is_unique_violation(sqlstate: Option<&str>) -> bool {
    sqlstate == Some("23505")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn on_error_reads_its_flag_values() {
        assert_eq!("dead-letter".parse(), Ok(OnError::DeadLetter));
        assert_eq!("continue".parse(), Ok(OnError::DeadLetter));
        assert_eq!("stop".parse(), Ok(OnError::Stop));
        let e = "halt".parse::<OnError>().unwrap_err();
        assert!(
            e.contains("\"halt\"") && e.contains("dead-letter or stop"),
            "{e}"
        );
        assert_eq!(OnError::default(), OnError::DeadLetter);
    }

    #[test]
    fn only_transient_errors_and_a_journal_ahead_are_retried() {
        let rejected = ApplyError::Rejected {
            pos: Pos::default(),
            table: "public.orders".into(),
            error: "x".into(),
        };
        let ddl = ApplyError::Ddl {
            table: "public.orders".into(),
            error: "x".into(),
        };
        let cases = [
            (ApplyError::Sql(sqlx::Error::PoolTimedOut), true, "olap"),
            (ApplyError::Sql(sqlx::Error::RowNotFound), false, "olap"),
            (rejected, false, "rejected"),
            (ddl, false, "schema"),
            (ApplyError::Star("x".into()), false, "star"),
            (ApplyError::JournalAhead("x".into()), true, "olap"),
        ];
        for (e, retry, kind) in cases {
            assert_eq!(e.is_retryable(), retry, "{e}");
            assert_eq!(e.kind(), kind, "{e}");
        }
    }

    #[test]
    fn a_key_already_in_the_journal_is_a_journal_ahead() {
        assert!(is_unique_violation(Some("23505")));
        assert!(!is_unique_violation(Some("23503")));
        assert!(!is_unique_violation(None));
        assert!(matches!(
            journal_error(sqlx::Error::PoolTimedOut),
            ApplyError::Sql(_)
        ));
    }
}
