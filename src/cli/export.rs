//! `cis export`: analytical tables as CSV or Parquet.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::bail;
use cis_storage::Store;
use clap::Subcommand;

use cis_core::time::{self, Timestamp};
use cis_core::AsOf;
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
    /// The event log visible at (T, K) as Parquet tables, for Spark or DuckDB (`cis features sql`).
    #[command(after_long_help = EVENTS_HELP)]
    Events {
        /// Event-time cut-off T (RFC 3339 or YYYY-MM-DD): events with event_time <= T.
        #[arg(long, value_parser = super::parse_time)]
        as_of: Timestamp,
        /// Knowledge time K (default T): only events recorded by then.
        #[arg(long, value_parser = super::parse_time)]
        known_at: Option<Timestamp>,
        /// Output format: parquet (the only one for events).
        #[arg(long, value_parser = super::choice::<Format>(), default_value = "parquet")]
        format: Format,
        /// Directory to create (it must not exist); complete once it holds `_SUCCESS`.
        #[arg(long)]
        out: PathBuf,
    },
}

const EVENTS_HELP: &str = "\
Layout: DIR/<table>/bucket=NN/part-0.parquet, one table per event kind (orders, sessions,
returns, customers), partitioned hive-style by customer bucket. A customer's bucket (00-31) is
the first 5 bits of blake3 of its customer id: all of a customer's events are in one bucket, and
every bucket has a file of every table (possibly empty). DIR/_SUCCESS (T, K, row counts) is
written last, and the whole tree is written beside DIR and renamed into place, so a directory at
DIR is always a finished export.

Columns of every table: event_id (hex), customer_id, event_time and recorded_at (timestamp,
UTC), then the payload: orders order_id, amount, currency, quantity, channel; sessions
session_id, duration_s, page_views, device; returns return_id, order_id, amount, currency,
reason; customers signup_date, country, attributes (map). amount is decimal(38, 6) in major
units of its currency (exact for every currency's minor units).

What is exported is what a snapshot at (T, K) sees: erased customers' events are not.";

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
    let (as_of, format, path) = match cmd {
        ExportCommand::Scores { as_of, format, out } => (as_of, format, out),
        ExportCommand::Events {
            as_of,
            known_at,
            format,
            out: dir,
        } => {
            let at = AsOf::new(Some(as_of), known_at);
            return events(store, at, format, write_to.unwrap_or(&dir), &dir, out);
        }
    };
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

/// Exports the events visible at `at` into the new directory `write_to`, reported as `dir` (the
/// client's name for it, when a server writes its own for the client to fetch).
fn events(
    store: &Store,
    at: AsOf,
    format: Format,
    write_to: &Path,
    dir: &Path,
    out: &mut impl Write,
) -> anyhow::Result<ExitCode> {
    if format != Format::Parquet {
        bail!("events are exported as parquet only (--format parquet)");
    }
    let s = export::events::export_events(store, at, write_to)?;
    let rows: Vec<String> = s.rows.iter().map(|(table, n)| format!("{n} {table}")).collect();
    writeln!(
        out,
        "exported the events visible as of {} known at {} ({}; {} bytes) to {}",
        time::format(s.at.as_of),
        time::format(s.at.known_at),
        rows.join(", "),
        s.bytes,
        dir.display()
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
