//! `cis store compact`: the store's own upkeep.

use std::io::Write;
use std::process::ExitCode;

use clap::Subcommand;

use cis_storage::{Compaction, Store};

#[derive(Subcommand, Debug)]
pub enum StoreCommand {
    /// Merge every customer bucket's blocks into one segment, so a read visits one block per
    /// bucket (ingest already merges the buckets it appends to, within a budget), then delete
    /// the value-log files' garbage (the blocks merges and erasures replaced). Changes no read
    /// and no hash.
    Compact,
}

pub fn run(store: &Store, cmd: StoreCommand, out: &mut impl Write) -> anyhow::Result<ExitCode> {
    match cmd {
        StoreCommand::Compact => {
            let c = store.log().compact(Compaction::Full)?;
            writeln!(
                out,
                "compacted: {} blocks merged into {} segments ({} records rewritten); at most {} block(s) per bucket",
                c.blocks_merged, c.merges, c.records_rewritten, c.most_blocks
            )?;
            let r = &c.reclaimed;
            writeln!(
                out,
                "value log: {} file(s) of garbage deleted, {:.1} MB freed ({} values, {:.1} MB, moved to the newest file)",
                r.files_deleted,
                mb(r.bytes_freed),
                r.values_moved,
                mb(r.bytes_moved)
            )?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn mb(bytes: u64) -> f64 {
    bytes as f64 / 1e6
}
