//! Shared by the benchmarks: peak memory, repeats, the synthetic store built once, and the
//! profile load generator (`load`).
// Each benchmark binary compiles this module and uses only part of it.
#![allow(dead_code)]

pub mod load;

use std::path::{Path, PathBuf};

use cis_core::event::Kind;
use cis_ingest::source::Format;
use cis_ingest::{ingest_file, IngestOptions, RecordedAt};
use cis_storage::Store;
use cis_synth::SynthConfig;

pub type BenchResult<T = ()> = Result<T, Box<dyn std::error::Error>>;

/// Peak resident memory of this process so far (Linux VmHWM), in MiB.
pub fn peak_rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

/// `CIS_BENCH_CUSTOMERS` or 100,000.
pub fn customers() -> usize {
    std::env::var("CIS_BENCH_CUSTOMERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000)
}

/// The store directory of a seeded synthetic population of `customers` (orders, sessions,
/// returns, metadata over 730 days), generated and ingested once under `target/bench-data/`.
pub fn synthetic_store(customers: usize) -> BenchResult<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("target")
        .join("bench-data")
        .join(format!("synth-{customers}"));
    let store_dir = dir.join("store");
    if dir.join("READY").exists() {
        return Ok(store_dir);
    }
    let _ = std::fs::remove_dir_all(&dir);
    let csv = dir.join("csv");
    let counts = SynthConfig {
        customers,
        ..SynthConfig::default()
    }
    .validate()?
    .write_csv(&csv)?;
    eprintln!("generated {counts:?}; ingesting (once)…");
    ingest_all(&Store::open(&store_dir)?, &csv)?;
    std::fs::write(dir.join("READY"), b"")?;
    Ok(store_dir)
}

fn ingest_all(store: &Store, csv: &Path) -> BenchResult {
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
        ingest_file(store, &csv.join(file), &opts, &mut |_| {})?;
    }
    Ok(())
}

/// `CIS_BENCH_REPEATS` or `default`: how many times each measurement is repeated (the machine
/// is shared and noisy, so one run is not a figure).
pub fn repeats(default: usize) -> usize {
    std::env::var("CIS_BENCH_REPEATS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|&n: &usize| n > 0)
        .unwrap_or(default)
}

/// Minimum, median and maximum of repeated measurements.
#[derive(Debug, Clone, Copy)]
pub struct Spread {
    pub min: f64,
    pub median: f64,
    pub max: f64,
}

impl Spread {
    /// `None` for no samples. The median of an even count is the lower middle one (a sample
    /// that was measured, not an average of two).
    pub fn of(mut samples: Vec<f64>) -> Option<Spread> {
        samples.sort_by(f64::total_cmp);
        Some(Spread {
            min: *samples.first()?,
            median: samples[(samples.len() - 1) / 2],
            max: *samples.last()?,
        })
    }

    /// `min / median / max` with `decimals` places, for a table cell.
    pub fn cell(&self, decimals: usize) -> String {
        format!(
            "{:.d$} / {:.d$} / {:.d$}",
            self.min,
            self.median,
            self.max,
            d = decimals
        )
    }
}

/// Runs `f` `n` times (at least once); its last result and the spread of the wall times in seconds.
pub fn repeat<T>(n: usize, mut f: impl FnMut() -> BenchResult<T>) -> BenchResult<(T, Spread)> {
    let mut secs = Vec::with_capacity(n);
    let mut last = None;
    for _ in 0..n.max(1) {
        let start = std::time::Instant::now();
        let out = std::hint::black_box(f()?);
        secs.push(start.elapsed().as_secs_f64());
        last = Some(out);
    }
    let spread = Spread::of(secs).ok_or("no run")?;
    Ok((last.ok_or("no run")?, spread))
}
