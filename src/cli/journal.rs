//! The flags of `brewlytics journal …` (the journal's lifecycle by hand).

use brewlytics_replicator::journal::compact::Before;
use clap::Subcommand;

use super::DbArgs;

#[derive(Subcommand, Debug)]
pub enum JournalCommand {
    /// Replace the history before a cut with one image per key alive at the cut (deleted
    /// keys gone), in one transaction; partitions wholly before it are dropped. `replay`
    /// then starts at the cut or later. The cut never passes the checkpoint.
    Compact {
        #[command(flatten)]
        db: DbArgs,
        /// The cut: an LSN (`16/B374D848`) or an age (`30d`: changes committed longer ago).
        #[arg(long)]
        before: Before,
    },
}
