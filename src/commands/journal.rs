//! `brewlytics journal …`: the journal's lifecycle by hand (the replicator applies
//! `--journal-retention` in the background).

use anyhow::Context;
use brewlytics_replicator::journal::compact::{self, Outcome, Trigger};

use crate::cli::JournalCommand;
use crate::databases;

pub async fn run(command: JournalCommand) -> anyhow::Result<()> {
    match command {
        JournalCommand::Compact { db, before } => {
            let olap = databases::resolve(&db)?.olap;
            let mut conn = databases::connect(&olap).await?;
            match compact::compact(&mut conn, before, Trigger::Command)
                .await
                .context("compacting the journal")?
            {
                Outcome::Done(c) => {
                    if let Some(asked) = c.requested {
                        println!("cut moved back from {asked} to {} (not past the checkpoint or a backfill chunk still read)", c.cut);
                    }
                    println!(
                        "journal compacted before {}: {} images written, {} partitions dropped ({} MB), {} rows deleted; replay can start from {}",
                        c.cut,
                        c.images,
                        c.dropped_partitions,
                        c.dropped_bytes >> 20,
                        c.deleted_rows,
                        c.cut
                    );
                }
                Outcome::Nothing(why) => println!("nothing compacted: {why}"),
            }
            Ok(())
        }
    }
}
