//! `cis trainset export`: the rows churn training fits on, with their labels, as a table.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use cis_storage::{ArtifactHash, Store};
use clap::Subcommand;

use cis_core::artifact;
use cis_core::time::{self, Timestamp};
use cis_export::features::export_training_set;
use cis_export::Format;
use cis_features::labels::DEFAULT_HORIZON_DAYS;

#[derive(Subcommand, Debug)]
pub enum TrainsetCommand {
    /// Write a training set (training_set): each snapshot's rows with their churn label, exactly
    /// as `cis train churn` builds them; refused, writing nothing, while the labels are immature.
    #[command(after_long_help = super::snapshot::TABLE_HELP)]
    Export {
        /// Snapshot(s), one per cutoff (hash or 8+ hex digits); rows in this order.
        #[arg(long = "snapshot", required = true)]
        snapshots: Vec<String>,
        /// Label horizon in days.
        #[arg(long, default_value_t = DEFAULT_HORIZON_DAYS)]
        horizon: u32,
        /// Labels as known at this time (default now); each cutoff T needs T + horizon ≤ K.
        #[arg(long, value_parser = super::parse_time)]
        known_at: Option<Timestamp>,
        /// Output format (default: from the file extension, .csv or .parquet).
        #[arg(long, value_parser = super::choice::<Format>())]
        format: Option<Format>,
        /// File to write (replaced atomically; nothing is written on an error).
        #[arg(long)]
        out: PathBuf,
    },
}

/// `write_to`: as [`super::export::run`]'s.
pub fn run(
    store: &Store,
    cmd: TrainsetCommand,
    write_to: Option<&Path>,
    out: &mut impl Write,
) -> anyhow::Result<ExitCode> {
    let TrainsetCommand::Export {
        snapshots,
        horizon,
        known_at,
        format,
        out: path,
    } = cmd;
    let format = super::export::format_of(format, &path)?;
    let hashes = snapshots
        .iter()
        .map(|t| artifact::resolve(store, t))
        .collect::<Result<Vec<ArtifactHash>, _>>()?;
    let known_at = known_at.unwrap_or_else(time::now);
    let s = export_training_set(store, &hashes, horizon, known_at, format, write_to.unwrap_or(&path))?;
    super::snapshot::report(out, &s, &path)?;
    writeln!(
        out,
        "  snapshots {}; labels over {horizon} days as known at {}: {} of {} rows churned",
        s.snapshots.join(", "),
        time::format(known_at),
        s.churned.unwrap_or_default(),
        s.rows
    )?;
    Ok(ExitCode::SUCCESS)
}
