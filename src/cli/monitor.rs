//! `cis monitor drift|quality|decay`.

use std::io::Write;
use std::process::ExitCode;

use cis_storage::Store;
use clap::Subcommand;

use super::{decay, drift, quality};

#[derive(Subcommand, Debug)]
pub enum MonitorCommand {
    /// Feature drift between two snapshots (or a model's training snapshot and another).
    Drift(drift::DriftArgs),
    /// Data quality per ingest run and per day, with anomaly flags.
    Quality(quality::QualityArgs),
    /// Realised churn metrics of score runs whose labels have matured, beside training metrics.
    Decay(decay::DecayArgs),
}

pub fn run(store: &Store, cmd: MonitorCommand, out: &mut impl Write) -> anyhow::Result<ExitCode> {
    match cmd {
        MonitorCommand::Drift(a) => drift::run(store, a, out),
        MonitorCommand::Quality(a) => quality::run(store, a, out),
        MonitorCommand::Decay(a) => decay::run(store, a, out),
    }
}
