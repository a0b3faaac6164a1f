//! Drift report between two 100,000-customer snapshots (as of 2025-03-31 and 2025-06-30) of the
//! cached synthetic store (see `benches/common`). The snapshots are materialised first (not
//! timed, not stored); then the report (PSI, KS and missing share for every feature, and its
//! canonical JSON body) is timed, best and median of 5 runs.
//!
//! Run: `cargo bench --bench drift` (env `CIS_BENCH_CUSTOMERS` to change the size).

mod common;

use cis_core::time::parse_timestamp;
use cis_core::AsOf;
use cis_features::snapshot;
use cis_ops::monitor::drift::{self, Verdict};
use cis_storage::Store;
use common::{peak_rss_mib, BenchResult};

fn main() -> BenchResult {
    let store = Store::open(&common::synthetic_store(common::customers())?)?;
    let at = |d: &str| -> BenchResult<snapshot::Snapshot> {
        Ok(snapshot::compute(&store, AsOf::new(Some(parse_timestamp(d)?), None))?)
    };
    let (a, b) = (at("2025-03-31")?, at("2025-06-30")?);
    let runs = common::repeats(5);
    let (r, secs) = common::repeat(runs, || {
        let r = drift::compare(&a, &b)?;
        std::hint::black_box(serde_json::to_vec(&r)?);
        Ok(r)
    })?;
    let cells = (a.matrix.customers.len() + b.matrix.customers.len()) * r.features.len();
    println!("drift benchmark: 2025-03-31 vs 2025-06-30, {runs} runs");
    println!("| what | s min / median / max | values/s (median) | customers A / B | features | significant / moderate / stable | peak RSS MiB |");
    println!("|---|---:|---:|---:|---:|---:|---:|");
    println!(
        "| drift report (PSI, KS, missing share) | {} | {:.0} | {} / {} | {} | {} / {} / {} | {:.0} |",
        secs.cell(3),
        cells as f64 / secs.median,
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
