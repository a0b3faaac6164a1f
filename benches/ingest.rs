//! Ingest throughput: 1,000,000 synthetic orders from CSV into a fresh on-disk store,
//! validated, hashed, sealed, indexed and flushed; against raw sled inserting the same
//! number of keys (the ceiling a one-key-per-event design would have).
//!
//! Run: `cargo bench --bench ingest` (env `CIS_BENCH_ROWS` to change the size,
//! `CIS_BENCH_BATCH_ROWS` the events per batch, default `cis_ingest::DEFAULT_BATCH_ROWS`).

mod common;

use std::io::Write;

use cis_core::event::Kind;
use cis_ingest::source::Format;
use cis_ingest::{ingest_file, IngestOptions, RecordedAt};
use cis_storage::Store;
use common::peak_rss_mib;
use rand::{Rng, SeedableRng};

fn write_orders(path: &std::path::Path, rows: usize) -> std::io::Result<()> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
    let mut f = std::io::BufWriter::new(std::fs::File::create(path)?);
    writeln!(f, "order_id,customer_id,event_time,amount,currency,quantity,channel")?;
    for i in 0..rows {
        let day: u32 = rng.gen_range(0..730);
        let (month, dom) = (1 + day / 61, 1 + day % 28);
        let year = if day < 365 { 2024 } else { 2025 };
        let (h, m, s) = (rng.gen_range(0..24), rng.gen_range(0..60), rng.gen_range(0..60));
        let cents: u32 = rng.gen_range(100..30_000);
        writeln!(
            f,
            "o{i},c{:06},{year}-{:02}-{dom:02}T{h:02}:{m:02}:{s:02}Z,{}.{:02},USD,{},{}",
            rng.gen_range(0..100_000),
            1 + (month - 1) % 12,
            cents / 100,
            cents % 100,
            rng.gen_range(1..4),
            ["web", "app", "store"][rng.gen_range(0..3)]
        )?;
    }
    f.flush()
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let rows: usize = std::env::var("CIS_BENCH_ROWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let dir = tempfile::tempdir()?;
    let csv = dir.path().join("orders.csv");
    write_orders(&csv, rows)?;
    let size_mb = std::fs::metadata(&csv)?.len() as f64 / 1e6;

    let defaults = IngestOptions::new(Kind::Order, Format::Csv);
    let opts = IngestOptions {
        recorded_at: RecordedAt::EventTime,
        batch_rows: std::env::var("CIS_BENCH_BATCH_ROWS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(defaults.batch_rows),
        ..defaults
    };
    let runs = common::repeats(3);
    // Each run ingests into a new store: the figure is a first load, never a re-ingest.
    let mut attempt = 0;
    let ((run, disk), secs) = common::repeat(runs, || {
        attempt += 1;
        let store = Store::open(&dir.path().join(format!("store-{attempt}")))?;
        let run = ingest_file(&store, &csv, &opts, &mut |_| {})?;
        Ok((run, store.size_on_disk()? as f64 / 1e6))
    })?;
    let rss = peak_rss_mib();
    assert_eq!(
        run.accepted as usize, rows,
        "every generated order is valid and distinct"
    );

    // The ceiling: raw sled, one 32-byte random key + 80-byte value per event, flushed
    // every 10,000 keys (measured-facts.md §2 shape).
    let mut attempt = 0;
    let ((), raw_secs) = common::repeat(runs, || {
        attempt += 1;
        let db = sled::open(dir.path().join(format!("raw-{attempt}")))?;
        for chunk in 0..rows.div_ceil(10_000) {
            for i in chunk * 10_000..((chunk + 1) * 10_000).min(rows) {
                db.insert(blake3::hash(&i.to_le_bytes()).as_bytes(), &[0u8; 80][..])?;
            }
            db.flush()?;
        }
        Ok(())
    })?;

    println!(
        "ingest benchmark ({rows} orders, {size_mb:.0} MB CSV, batches of {}, {runs} runs each, each into a new store)",
        opts.batch_rows
    );
    println!("| what | s min / median / max | events/s (median) | peak RSS MiB | store MB |");
    println!("|---|---:|---:|---:|---:|");
    println!(
        "| cis ingest (validate, hash, seal, index, flush) | {} | {:.0} | {rss:.0} | {disk:.0} |",
        secs.cell(2),
        rows as f64 / secs.median
    );
    println!(
        "| raw sled insert, 1 key per event (ceiling of that design) | {} | {:.0} | | |",
        raw_secs.cell(2),
        rows as f64 / raw_secs.median
    );
    Ok(())
}
