//! Drift report between two 100,000-customer snapshots (as of 2025-03-31 and 2025-06-30) of the
//! cached synthetic store (see `benches/common`). The snapshots are materialised first (not
//! timed, not stored); then the report (PSI, KS and missing share for every feature, and its
//! canonical JSON body) is timed, best and median of 5 runs.
//!
//! Run: `cargo bench --bench drift` (env `CIS_BENCH_CUSTOMERS` to change the size).

mod common;

use std::time::Instant;

use cis_core::time::parse_timestamp;
use cis_core::AsOf;
use cis_features::snapshot;
use cis_ops::monitor::drift::{self, Verdict};
use cis_storage::Store;
use common::{peak_rss_mib, BenchResult};

const RUNS: usize = 5;

fn main() -> BenchResult {
    let store = Store::open(&common::synthetic_store(common::customers())?)?;
    let at = |d: &str| -> BenchResult<snapshot::Snapshot> {
        Ok(snapshot::compute(&store, AsOf::new(Some(parse_timestamp(d)?), None))?)
    };
    let (a, b) = (at("2025-03-31")?, at("2025-06-30")?);
    let mut secs = Vec::with_capacity(RUNS);
    let mut report = None;
    for _ in 0..RUNS {
        let start = Instant::now();
        let r = drift::compare(&a, &b)?;
        let body = serde_json::to_vec(&r)?;
        secs.push(start.elapsed().as_secs_f64());
        std::hint::black_box(body);
        report = Some(r);
    }
    let r = report.ok_or("no run")?;
    secs.sort_by(f64::total_cmp);
    let cells = (a.matrix.customers.len() + b.matrix.customers.len()) * r.features.len();
    println!("drift benchmark: 2025-03-31 vs 2025-06-30, {RUNS} runs");
    println!("| what | best s | median s | values/s | customers A / B | features | significant / moderate / stable | peak RSS MiB |");
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
    println!(
        "| drift report (PSI, KS, missing share) | {:.3} | {:.3} | {:.0} | {} / {} | {} | {} / {} / {} | {:.0} |",
        secs[0],
        secs[RUNS / 2],
        cells as f64 / secs[RUNS / 2],
        a.matrix.customers.len(),
        b.matrix.customers.len(),
        r.features.len(),
        r.count(Verdict::Significant),
        r.count(Verdict::Moderate),
        r.count(Verdict::Stable),
        peak_rss_mib()
    );
    Ok(())
}
