//! `cis export`: analytical tables as CSV or Parquet.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::bail;
use cis_storage::Store;
use clap::Subcommand;

use cis_core::time::{self, Timestamp};
use cis_export::{self as export, Format};

#[derive(Subcommand, Debug)]
pub enum ExportCommand {
    /// customer_risk_scores: one row per customer from the latest score run as of T.
    Scores {
        /// Export the latest score run whose as-of is not after this time (default now).
        #[arg(long, value_parser = super::parse_time)]
        as_of: Option<Timestamp>,
        /// Output format (default: from the file extension, .csv or .parquet).
        #[arg(long, value_parser = super::choice::<Format>())]
        format: Option<Format>,
        /// File to write (replaced atomically).
        #[arg(long)]
        out: PathBuf,
    },
}

/// `--format`, else what the file's extension says.
pub(super) fn format_of(format: Option<Format>, path: &Path) -> anyhow::Result<Format> {
    let Some(format) = format.or_else(|| Format::from_path(path)) else {
        bail!(
            "cannot tell the format of {} from its extension: pass --format csv or --format parquet",
            path.display()
        )
    };
    Ok(format)
}

/// `write_to`: the file to write in place of `--out`'s, which is still the name reported (a
/// server writes a file of its own for its client to fetch).
pub fn run(
    store: &Store,
    cmd: ExportCommand,
    write_to: Option<&Path>,
    out: &mut impl Write,
) -> anyhow::Result<ExitCode> {
    let ExportCommand::Scores {
        as_of,
        format,
        out: path,
    } = cmd;
    let format = format_of(format, &path)?;
    let s = export::export_scores(store, as_of, format, write_to.unwrap_or(&path))?;
    exported(out, s.rows, s.table, s.format, s.bytes, &path)?;
    writeln!(
        out,
        "  scores {} as of {} (generated {}), snapshot {}",
        s.score_hash,
        time::format(s.as_of),
        time::format(s.generated_at),
        s.snapshot_hash
    )?;
    Ok(ExitCode::SUCCESS)
}

/// The first line every table export prints (`cis export scores`, `cis snapshot export`,
/// `cis trainset export`).
pub(super) fn exported(
    out: &mut impl Write,
    rows: usize,
    table: &str,
    format: Format,
    bytes: u64,
    path: &Path,
) -> std::io::Result<()> {
    writeln!(
        out,
        "exported {rows} rows of {table} ({format}, {bytes} bytes) to {}",
        path.display()
    )
}
