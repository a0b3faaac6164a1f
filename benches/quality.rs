//! The data-quality report over 100 ingest runs: reading the run records, building the report
//! (run table, day table with volume bands, flags), storing it as an artifact, and the
//! `/metrics` gauges cold and memoised.
//!
//! The store is a daily feed of 100 runs (orders and sessions in turn, 2,000 events each,
//! event-days spread over the week before the run, so every run is late by hours to days),
//! built once under `target/bench-data/quality-100-runs`.
//!
//! Run: `cargo bench --bench quality`.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use cis_core::event::Kind;
use cis_ingest::records::{self, day_label};
use cis_ingest::source::Format;
use cis_ingest::{ingest_file, IngestOptions, RecordedAt};
use cis_ops::monitor::quality::{self, Filter, Rules};
use cis_storage::Store;
use common::{peak_rss_mib, BenchResult};
use rand::{Rng, SeedableRng};

const RUNS: u32 = 100;
const EVENTS_PER_RUN: u32 = 2_000;
/// 2024-01-01 as a day number.
const FIRST_DAY: i64 = 19_723;

/// One day's delivery: events from the 7 days before run day `r`, recorded at its 23:00.
fn write_run(path: &Path, r: u32, rng: &mut impl Rng) -> std::io::Result<Kind> {
    let kind = if r.is_multiple_of(2) {
        Kind::Order
    } else {
        Kind::Session
    };
    let mut f = std::io::BufWriter::new(std::fs::File::create(path)?);
    let run_day = day_label(FIRST_DAY + 7 + i64::from(r));
    match kind {
        Kind::Order => writeln!(
            f,
            "order_id,customer_id,event_time,amount,currency,quantity,channel,recorded_at"
        )?,
        _ => writeln!(
            f,
            "session_id,customer_id,event_time,duration_s,page_views,device,recorded_at"
        )?,
    }
    for i in 0..EVENTS_PER_RUN {
        let day = day_label(FIRST_DAY + i64::from(r) + rng.gen_range(0..7));
        let (h, m) = (rng.gen_range(0..23), rng.gen_range(0..60));
        let customer = rng.gen_range(0..20_000);
        match kind {
            Kind::Order => writeln!(
                f,
                "o{r}-{i},c{customer},{day}T{h:02}:{m:02}:00Z,{}.00,USD,{},{},{run_day}T23:00:00Z",
                rng.gen_range(1..300),
                maybe(rng, "1"),
                maybe(rng, "web")
            )?,
            _ => writeln!(
                f,
                "s{r}-{i},c{customer},{day}T{h:02}:{m:02}:00Z,{},{},{},{run_day}T23:00:00Z",
                rng.gen_range(10..3_000),
                maybe(rng, "4"),
                maybe(rng, "mobile")
            )?,
        }
    }
    f.flush()?;
    Ok(kind)
}

/// An optional field's value, missing one time in ten as in real feeds.
fn maybe<'a>(rng: &mut impl Rng, v: &'a str) -> &'a str {
    if rng.gen_bool(0.9) {
        v
    } else {
        ""
    }
}

/// The store with 100 runs, built once.
fn store_dir() -> BenchResult<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("target")
        .join("bench-data")
        .join(format!("quality-{RUNS}-runs"));
    let store_dir = dir.join("store");
    if dir.join("READY").exists() {
        return Ok(store_dir);
    }
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let store = Store::open(&store_dir)?;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(8);
    eprintln!("ingesting {RUNS} runs (once)…");
    for r in 0..RUNS {
        let csv = dir.join("run.csv");
        let kind = write_run(&csv, r, &mut rng)?;
        let opts = IngestOptions {
            recorded_at: RecordedAt::Column("recorded_at".into()),
            ..IngestOptions::new(kind, Format::Csv)
        };
        ingest_file(&store, &csv, &opts, &mut |_| {})?;
    }
    std::fs::remove_file(dir.join("run.csv"))?;
    std::fs::write(dir.join("READY"), b"")?;
    Ok(store_dir)
}

/// Wall times of `reps` calls of `f`, in milliseconds: `min / median / max`.
fn ms<T>(reps: usize, f: impl FnMut() -> BenchResult<T>) -> BenchResult<String> {
    let (_, s) = common::repeat(reps, f)?;
    Ok(common::Spread {
        min: s.min * 1e3,
        median: s.median * 1e3,
        max: s.max * 1e3,
    }
    .cell(2))
}

fn main() -> BenchResult {
    let store = Store::open(&store_dir()?)?;
    let runs = records::runs(&store)?;
    let (filter, rules) = (Filter::default(), Rules::default());
    let report = quality::build(&runs, &filter, &rules)?;
    let reps = common::repeats(21);
    let read = ms(reps, || Ok(records::runs(&store)?))?;
    let build = ms(reps, || Ok(quality::build(&runs, &filter, &rules)?))?;
    let whole = ms(reps, || Ok(quality::report(&store, &filter, &rules)?))?;
    let stored = ms(reps, || Ok(quality::store_report(&store, &report)?))?;
    let cold = {
        // A fresh process's first scrape: no memo yet.
        let start = Instant::now();
        cis_server::api::metrics::monitor_gauges(&store).map_err(|e| format!("{e:?}"))?;
        start.elapsed().as_secs_f64() * 1e3
    };
    let warm = ms(reps, || {
        Ok(cis_server::api::metrics::monitor_gauges(&store).map_err(|e| format!("{e:?}"))?)
    })?;

    println!(
        "quality benchmark ({} runs, {} events, {} day rows (day × kind), {} flags)",
        runs.len(),
        runs.iter().map(|r| r.accepted).sum::<u64>(),
        report.days.len(),
        report.flag_counts().values().sum::<usize>()
    );
    println!("| what | ms min / median / max of {reps} |");
    println!("|---|---:|");
    println!("| read and parse the 100 run records | {read} |");
    println!("| build the report from them (tables, bands, flags) | {build} |");
    println!("| `quality::report` (both) | {whole} |");
    println!("| store it as an artifact (already stored: hash + lookup) | {stored} |");
    println!("| `/metrics` monitor gauges, first scrape (once) | {cold:.2} |");
    println!("| `/metrics` monitor gauges, memoised | {warm} |");
    println!("peak RSS {:.0} MiB", peak_rss_mib());
    Ok(())
}
