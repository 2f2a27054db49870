//! How the replicator commits in OLAP and whether it applies source transactions before they
//! commit.

use clap::Args;

use brewlytics_replicator::flush::OlapCommit;

/// `replicate`'s transaction settings.
#[derive(Args, Debug, Clone, Copy, Default)]
pub struct TransactionArgs {
    /// How each batch commits in OLAP: `async` (`synchronous_commit = off`, as PostgreSQL's
    /// own apply worker does; the source is told of a batch only once OLAP's WAL flush has
    /// passed it, so a crash of OLAP loses nothing) or `sync` (every commit waits for the
    /// disk).
    #[arg(long, env = "OLAP_COMMIT", default_value = "async")]
    pub olap_commit: OlapCommit,
}
