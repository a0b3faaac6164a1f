//! Snapshot materialisation: 100,000 synthetic customers (~5.2 million events: orders,
//! sessions, returns, metadata) as of one T. Setup (generate + ingest) runs once into
//! `target/bench-data/`; the snapshot is timed in a fresh child process so its peak RSS is
//! its own. Then the stored snapshot is exported (`cis snapshot export`) as Parquet and CSV:
//! seconds and bytes.
//!
//! Run: `cargo bench --bench snapshot` (env `CIS_BENCH_CUSTOMERS` to change the size).

mod common;

use std::path::Path;
use std::process::Command;

use cis_core::time::parse_timestamp;
use cis_core::AsOf;
use cis_export::features::export_snapshot;
use cis_export::Format;
use cis_features::snapshot;
use cis_storage::Store;
use common::{peak_rss_mib, BenchResult};

fn measure(store_dir: &Path) -> BenchResult {
    let store = Store::open(store_dir)?;
    let events = store.log().event_count()?;
    let t = parse_timestamp("2025-06-30T00:00:00Z")?;
    let runs = common::repeats(3);
    let (snap, secs) = common::repeat(runs, || Ok(snapshot::compute(&store, AsOf::new(Some(t), None))?))?;
    println!("snapshot benchmark: as of 2025-06-30, log of {events} events, {runs} runs in one process");
    println!("| what | s min / median / max | log events/s (median) | visible events | customers x features | peak RSS MiB |");
    println!("|---|---:|---:|---:|---:|---:|");
    println!(
        "| materialise all features | {} | {:.0} | {} | {} x {} | {:.0} |",
        secs.cell(2),
        events as f64 / secs.median,
        snap.matrix.visible_events,
        snap.matrix.customers.len(),
        snap.features.len(),
        peak_rss_mib()
    );
    export(&store, AsOf::new(Some(t), None), runs)
}

/// `cis snapshot export` of the stored snapshot, as Parquet and as CSV, `runs` times each.
fn export(store: &Store, at: AsOf, runs: usize) -> BenchResult {
    let (hash, ..) = snapshot::create(store, at)?;
    let dir = tempfile::tempdir()?;
    println!("| export | s min / median / max | rows | bytes |");
    println!("|---|---:|---:|---:|");
    for (format, name) in [(Format::Parquet, "snapshot.parquet"), (Format::Csv, "snapshot.csv")] {
        let path = dir.path().join(name);
        let (summary, secs) = common::repeat(runs, || Ok(export_snapshot(store, &hash, format, &path)?))?;
        println!("| {format} | {} | {} | {} |", secs.cell(2), summary.rows, summary.bytes);
    }
    Ok(())
}

fn main() -> BenchResult {
    let args: Vec<String> = std::env::args().collect();
    if let Some(pos) = args.iter().position(|a| a == "--measure") {
        let dir = args.get(pos + 1).ok_or("--measure needs a store directory")?;
        return measure(Path::new(dir));
    }
    let store_dir = common::synthetic_store(common::customers())?;
    let status = Command::new(std::env::current_exe()?)
        .arg("--measure")
        .arg(&store_dir)
        .status()?;
    if !status.success() {
        return Err(format!("measurement failed: {status}").into());
    }
    Ok(())
}
