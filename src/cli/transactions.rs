//! How the replicator commits in OLAP, and whether it receives large source transactions while
//! they run.

use clap::Args;

use std::path::PathBuf;

use brewlytics_replicator::flush::OlapCommit;
use brewlytics_replicator::slot::Streaming;

/// `replicate`'s transaction settings.
#[derive(Args, Debug, Clone, Default)]
pub struct TransactionArgs {
    /// How each batch commits in OLAP: `async` (`synchronous_commit = off`, as PostgreSQL's
    /// own apply worker does; the source is told of a batch only once OLAP's WAL flush has
    /// passed it, so a crash of OLAP loses nothing) or `sync` (every commit waits for the
    /// disk).
    #[arg(long, env = "OLAP_COMMIT", default_value = "async")]
    pub olap_commit: OlapCommit,
    /// `on`: the source sends a transaction larger than its `logical_decoding_work_mem`
    /// while it runs (pgoutput protocol 2, PostgreSQL 14 and later); it is spooled to local
    /// disk, dropped if it rolls back (or a savepoint of it does) and applied as soon as it
    /// commits. `off`: the source sends it only after its commit.
    #[arg(long, env = "STREAMING", default_value = "on")]
    pub streaming: Streaming,
    /// Where transactions in progress are spooled (default: `brewlytics-streams/<slot>`
    /// under the system's temporary directory). Emptied when a session starts.
    #[arg(long, env = "SPOOL_DIR")]
    pub spool_dir: Option<PathBuf>,
}
