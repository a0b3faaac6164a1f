//! Snapshot materialisation: 100,000 synthetic customers (~5.2 million events: orders,
//! sessions, returns, metadata) as of one T. Setup (generate + ingest) runs once into
//! `target/bench-data/`; the snapshot is timed in a fresh child process so its peak RSS is
//! its own.
//!
//! Run: `cargo bench --bench snapshot` (env `CIS_BENCH_CUSTOMERS` to change the size).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use cis::event::Kind;
use cis::features::snapshot;
use cis::history::AsOf;
use cis::ingest::source::Format;
use cis::ingest::{ingest_file, IngestOptions, RecordedAt};
use cis::synth::SynthConfig;
use cis::time::parse_timestamp;
use cis_storage::Store;

fn peak_rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

fn setup(dir: &Path, customers: usize) -> Result<(), Box<dyn std::error::Error>> {
    let ready = dir.join("READY");
    if ready.exists() {
        return Ok(());
    }
    let _ = std::fs::remove_dir_all(dir);
    let csv = dir.join("csv");
    let counts = SynthConfig {
        customers,
        ..SynthConfig::default()
    }
    .validate()?
    .write_csv(&csv)?;
    eprintln!("generated {counts:?}; ingesting (once)…");
    let store = Store::open(&dir.join("store"))?;
    for (kind, file) in [
        (Kind::Customer, "customers.csv"),
        (Kind::Order, "orders.csv"),
        (Kind::Session, "sessions.csv"),
        (Kind::Return, "returns.csv"),
    ] {
        let opts = IngestOptions {
            recorded_at: RecordedAt::Column("recorded_at".into()),
            ..IngestOptions::new(kind, Format::Csv)
        };
        ingest_file(&store, &csv.join(file), &opts, &mut |_| {})?;
    }
    std::fs::write(ready, b"")?;
    Ok(())
}

fn measure(store_dir: &Path) -> Result<(), Box<dyn std::error::Error>> {
    let store = Store::open(store_dir)?;
    let events = store.log().event_count()?;
    let t = parse_timestamp("2025-06-30T00:00:00Z").map_err(|e| e.to_string())?;
    let start = Instant::now();
    let snap = snapshot::compute(&store, AsOf::new(Some(t), None))?;
    let secs = start.elapsed().as_secs_f64();
    println!("snapshot benchmark: as of 2025-06-30, log of {events} events");
    println!("| what | seconds | log events/s | visible events | customers x features | peak RSS MiB |");
    println!("|---|---:|---:|---:|---:|---:|");
    println!(
        "| materialise all features | {secs:.2} | {:.0} | {} | {} x {} | {:.0} |",
        events as f64 / secs,
        snap.matrix.visible_events,
        snap.matrix.customers.len(),
        snap.features.len(),
        peak_rss_mib()
    );
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    if let Some(pos) = args.iter().position(|a| a == "--measure") {
        let dir = args.get(pos + 1).ok_or("--measure needs a store directory")?;
        return measure(Path::new(dir));
    }
    let customers: usize = std::env::var("CIS_BENCH_CUSTOMERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("target")
        .join("bench-data")
        .join(format!("synth-{customers}"));
    setup(&dir, customers)?;
    let status = Command::new(std::env::current_exe()?)
        .arg("--measure")
        .arg(dir.join("store"))
        .status()?;
    if !status.success() {
        return Err(format!("measurement failed: {status}").into());
    }
    Ok(())
}
