//! `cis snapshot …`: create, list, show, diff, replay and export feature snapshots.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::bail;
use cis_storage::{hex, Store};
use clap::Subcommand;
use indicatif::ProgressBar;

use cis_core::artifact;
use cis_core::time::{self, Timestamp};
use cis_core::AsOf;
use cis_export::features::{export_embedded_snapshot, export_snapshot, TableSummary};
use cis_export::Format;
use cis_features::snapshot::{self, Provenance, Replay};

#[derive(Subcommand, Debug)]
pub enum SnapshotCommand {
    /// Materialise every feature for every customer as of T (known at K) and store it.
    Create {
        /// Event-time cut-off T (RFC 3339 or YYYY-MM-DD).
        #[arg(long, value_parser = super::parse_time)]
        as_of: Timestamp,
        /// Knowledge time K (default T): only events recorded by then.
        #[arg(long, value_parser = super::parse_time)]
        known_at: Option<Timestamp>,
    },
    /// Stored snapshots, oldest first.
    List {
        #[arg(long, value_parser = super::parse_time)]
        as_of_before: Option<Timestamp>,
    },
    /// A snapshot's metadata, or one customer's features.
    Show {
        hash: String,
        #[arg(long)]
        customer: Option<String>,
    },
    /// Per-feature summary of what changed from A to B.
    Diff { a: String, b: String },
    /// Recompute a snapshot from the log and compare: exit 0 if identical, 1 if not.
    Replay { hash: String },
    /// Write a snapshot as a table (feature_snapshot): one row per customer, every feature.
    #[command(after_long_help = TABLE_HELP)]
    Export {
        /// The snapshot (hash or 8+ hex digits).
        hash: String,
        /// Output format (default: from the file extension, .csv or .parquet).
        #[arg(long, value_parser = super::choice::<Format>())]
        format: Option<Format>,
        /// File to write (replaced atomically; nothing is written on an error).
        #[arg(long)]
        out: PathBuf,
        /// Add each customer's vector of this embedding model (hash or 8+ hex digits; see
        /// `cis train embedding`) as the columns embedding_1, embedding_2, … after the features.
        #[arg(long)]
        embedding: Option<String>,
    },
}

/// The columns of `cis snapshot export` and `cis trainset export` (README: "Training sets").
pub(super) const TABLE_HELP: &str = "\
Columns, in order:
  customer_id          text
  as_of, known_at      the snapshot's T and K (timestamp, microseconds, UTC)
  <every feature>      in the snapshot's column order; typed by the feature's unit:
                       money (currency) decimal(38, 2), counts int64, everything else
                       (ratios, days, minutes) float64. Averages of money are rounded to
                       the cent. Null only for a value that is not finite (none is: each
                       feature says what it is when data is missing).
  embedding_1, …       snapshot exports with --embedding only: the customer's vector (float64)
  label_churn          training sets only: 1 = no order in (T, T + horizon] as known at
                       labels_known_at, else 0 (int64), the label churn training uses
  horizon_days         training sets only (int64)
  labels_known_at      training sets only: the labels' K (timestamp)
  snapshot_hash        the row's snapshot
  definition_set_hash  the feature definitions it was computed with
A Parquet file (zstd) also carries cis.table, cis.schema_version, cis.snapshot_hash,
cis.definition_set_hash, cis.as_of, cis.known_at (lists comma-separated, one entry per
snapshot in row order) and, for a training set, cis.horizon_days and cis.labels_known_at
as key-value metadata. A CSV file writes times in RFC 3339, floats always with a decimal
point (0.0) so that readers inferring types keep them floats, and a null as an empty cell.";

/// `cis snapshot create` on an open store.
pub(super) fn create(store: &Store, at: AsOf, out: &mut impl Write) -> anyhow::Result<ExitCode> {
    let bar = spinner("materialising features");
    let code = cis_server::jobs::snapshot(store, at, out);
    bar.finish_and_clear();
    Ok(ExitCode::from(code?))
}

pub(super) fn spinner(msg: &'static str) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new_spinner().with_message(msg);
    bar.enable_steady_tick(Duration::from_millis(120));
    bar
}

/// `write_to`: for `export`, as [`super::export::run`]'s.
pub fn run(
    store: &Store,
    cmd: SnapshotCommand,
    write_to: Option<&Path>,
    out: &mut impl Write,
) -> anyhow::Result<ExitCode> {
    match cmd {
        SnapshotCommand::Create { as_of, known_at } => {
            return create(store, AsOf::new(Some(as_of), known_at), out);
        }
        SnapshotCommand::List { as_of_before } => {
            for (hash, as_of) in snapshot::list(store, as_of_before.unwrap_or(Timestamp::MAX))? {
                writeln!(out, "{}  as of {}", hex(&hash), time::format(as_of))?;
            }
        }
        SnapshotCommand::Show { hash, customer } => {
            let h = artifact::resolve(store, &hash)?;
            let (a, s) = snapshot::load(store, &h)?;
            match customer {
                Some(c) => {
                    let Some(row) = s.row(&c) else {
                        bail!("customer '{c}' is not in snapshot {}", hex(&h))
                    };
                    for (f, v) in s.features.iter().zip(row) {
                        writeln!(out, "{f:<28} {v}")?;
                    }
                }
                None => {
                    let prov: Option<Provenance> = serde_json::from_slice(&a.provenance).ok();
                    writeln!(out, "snapshot        {}", hex(&h))?;
                    writeln!(out, "as of (T)       {}", time::format(s.as_of))?;
                    writeln!(out, "known at (K)    {}", time::format(s.known_at))?;
                    writeln!(out, "definition set  {}", hex(&s.definition_set))?;
                    writeln!(out, "customers       {}", s.matrix.customers.len())?;
                    writeln!(out, "features        {}", s.features.len())?;
                    writeln!(out, "visible events  {}", s.matrix.visible_events)?;
                    writeln!(
                        out,
                        "created at      {}",
                        time::format(Timestamp::from_micros(a.created_at))
                    )?;
                    if let Some(p) = prov {
                        writeln!(out, "read from log   batch {} head {}", p.log_batch, p.log_head)?;
                    }
                }
            }
        }
        SnapshotCommand::Diff { a, b } => {
            let (_, sa) = snapshot::load(store, &artifact::resolve(store, &a)?)?;
            let (_, sb) = snapshot::load(store, &artifact::resolve(store, &b)?)?;
            let d = snapshot::diff(&sa, &sb);
            writeln!(
                out,
                "customers: {} in both, {} only in A, {} only in B",
                d.in_both, d.only_in_a, d.only_in_b
            )?;
            writeln!(
                out,
                "{:<28} {:>9} {:>14} {:>14} {:>14}",
                "feature", "changed", "mean A", "mean B", "max |change|"
            )?;
            for f in &d.features {
                writeln!(
                    out,
                    "{:<28} {:>9} {:>14.4} {:>14.4} {:>14.4}",
                    f.feature, f.changed, f.mean_a, f.mean_b, f.max_abs_change
                )?;
            }
            for (side, list) in [("A", &d.features_only_in_a), ("B", &d.features_only_in_b)] {
                if !list.is_empty() {
                    writeln!(out, "features only in {side}: {}", list.join(", "))?;
                }
            }
        }
        SnapshotCommand::Replay { hash } => {
            let h = artifact::resolve(store, &hash)?;
            let bar = spinner("recomputing from the log");
            let result = snapshot::replay(store, &h)?;
            bar.finish_and_clear();
            match result {
                Replay::Identical => writeln!(out, "identical: {} recomputes from the log", hex(&h))?,
                Replay::Differs {
                    customer,
                    feature,
                    stored,
                    recomputed,
                } => {
                    writeln!(
                        out,
                        "different: customer '{customer}' feature {feature}: stored {} recomputed {}",
                        stored.map_or("absent".into(), |v| v.to_string()),
                        recomputed.map_or("absent".into(), |v| v.to_string())
                    )?;
                    return Ok(ExitCode::FAILURE);
                }
                Replay::HashMismatch { stored, recomputed } => {
                    writeln!(
                        out,
                        "different: the values match but the hash does not (stored {stored}, recomputed {recomputed})"
                    )?;
                    return Ok(ExitCode::FAILURE);
                }
                Replay::Erased { requests, customers } => writeln!(
                    out,
                    "{}; every other row recomputes identically from the log",
                    cis_ops::erasure::explain(&requests, &customers)
                )?,
            }
        }
        SnapshotCommand::Export {
            hash,
            format,
            out: path,
            embedding,
        } => {
            let format = super::export::format_of(format, &path)?;
            let h = artifact::resolve(store, &hash)?;
            let embedding = embedding.map(|e| artifact::resolve(store, &e)).transpose()?;
            let bar = spinner("writing the table");
            let to = write_to.unwrap_or(&path);
            let s = match &embedding {
                Some(e) => export_embedded_snapshot(store, &h, e, format, to)?,
                None => export_snapshot(store, &h, format, to)?,
            };
            bar.finish_and_clear();
            report(out, &s, &path)?;
            writeln!(out, "  snapshot {}", hex(&h))?;
            if let Some(e) = embedding {
                writeln!(out, "  embedding {}", hex(&e))?;
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// [`super::export::exported`] of a feature table, written to the file named `path`.
pub(super) fn report(out: &mut impl Write, s: &TableSummary, path: &Path) -> std::io::Result<()> {
    super::export::exported(out, s.rows, s.table, s.format, s.bytes, path)
}
