//! `cis features sql`: the feature definitions as one SQL script over an events export.

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

use anyhow::{bail, Context};
use clap::Subcommand;

use cis_core::time::{self, Timestamp};
use cis_core::AsOf;
use cis_export::events::read_manifest;
use cis_export::sql::{render, Dialect};

#[derive(Subcommand, Debug)]
pub enum FeaturesCommand {
    /// Print one SQL script (Spark SQL or DuckDB) that computes every feature, one row per
    /// customer, over the tables of `cis export events`.
    #[command(after_long_help = SQL_HELP)]
    Sql {
        #[arg(long, value_parser = super::choice::<Dialect>())]
        dialect: Dialect,
        /// The events export: a local directory (checked, and named by its absolute path), or
        /// a URL the engine reads (s3://, gs://, abfss://, dbfs:/ …; not checked, --as-of needed).
        #[arg(long, value_name = "DIR")]
        events: String,
        /// Event-time cut-off T (default: the export's T). At most the export's T.
        #[arg(long, value_parser = super::parse_time)]
        as_of: Option<Timestamp>,
        /// Knowledge time K (default T): the script keeps rows with recorded_at <= K. At most the export's K.
        #[arg(long, value_parser = super::parse_time)]
        known_at: Option<Timestamp>,
    },
}

const SQL_HELP: &str = "\\
Runs as it is:
  duckdb -c \"$(cis features sql --dialect duckdb --events DIR)\"
  cis features sql --dialect spark --events DIR > features.sql && spark-sql -f features.sql

The columns are those of `cis snapshot export` (without snapshot_hash), with the same values: the
script is generated from the same definitions the snapshots compute.";

pub fn run(cmd: FeaturesCommand, out: &mut impl Write) -> anyhow::Result<ExitCode> {
    let FeaturesCommand::Sql {
        dialect,
        events,
        as_of,
        known_at,
    } = cmd;
    let (location, at) = if events.contains("://") || events.starts_with("dbfs:") {
        let Some(as_of) = as_of else {
            bail!("--events {events} is not a local directory, so cis cannot read its T: pass --as-of")
        };
        (events, AsOf::new(Some(as_of), known_at))
    } else {
        let dir = Path::new(&events);
        let m = read_manifest(dir)?;
        let at = AsOf::new(Some(as_of.unwrap_or(m.at.as_of)), known_at);
        if at.as_of > m.at.as_of || at.known_at > m.at.known_at {
            bail!(
                "the export at {events} holds what was visible as of {} known at {}: it cannot answer as of {} known at {}",
                time::format(m.at.as_of),
                time::format(m.at.known_at),
                time::format(at.as_of),
                time::format(at.known_at)
            );
        }
        let abs = std::fs::canonicalize(dir).with_context(|| format!("resolving {events}"))?;
        (abs.to_string_lossy().into_owned(), at)
    };
    write!(out, "{}", render(dialect, &location, at))?;
    Ok(ExitCode::SUCCESS)
}
