//! The batch beside the API: profile latency at a fixed rate on the 100,000-customer store, idle
//! and while the server runs a full ingest + snapshot job on the same store.
//!
//! The jobs go through the server's own queue (`cis_server::jobs`, what `POST
//! /admin/jobs/ingest` and `cis ingest` beside a server use), on the store the readers read; the
//! load is `common::load` (open loop, 32 keep-alive connections, client and server on the same 2
//! cores). Each round measures idle, then with a job running: a fresh feed each round (a new seed
//! of the generator, 20,000 customers' orders and sessions), ingested, then a snapshot. The job
//! starts with the load; if it ends first, the rest of the load is idle, so the table says how
//! long the job ran. Before each idle measure the queue is waited on (the background compaction
//! after a job included), so idle is idle.
//!
//! The store is a copy of the one `cargo bench --bench load` reads, made under
//! `target/bench-data/` for this run and removed after, so no other benchmark sees the fed events.
//!
//! Run: `cargo bench --bench serve` (env `CIS_LOAD_RPS` (2000), `CIS_LOAD_SECONDS` (10),
//! `CIS_BENCH_REPEATS` (3), `CIS_SERVE_FEED_CUSTOMERS` (20000), `CIS_BENCH_CUSTOMERS`).

mod common;

use std::fs::File;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cis_core::event::Kind;
use cis_core::time::parse_timestamp;
use cis_core::AsOf;
use cis_ingest::source::Format;
use cis_ingest::{IngestOptions, RecordedAt};
use cis_server::access_log::AccessLogConfig;
use cis_server::api::{tokens, AppState};
use cis_server::jobs::{self, JobState, Work};
use cis_storage::Store;
use cis_synth::SynthConfig;
use common::load::{env_or, load, random_profiles, Run};
use common::{BenchResult, Spread};

/// Copies the store directory `from` to `to` (files only: a store is plain files).
fn copy_dir(from: &Path, to: &Path) -> BenchResult {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_dir(&entry.path(), &target)?;
        } else if entry.file_name() != "lock" {
            std::fs::copy(entry.path(), target)?;
        }
    }
    Ok(())
}

/// Queues the round's job on the server's queue: the feed's orders and sessions ingested (as
/// `cis ingest --recorded-at recorded_at`), then a snapshot. Returns a handle that ends with
/// the job and gives how long it ran.
fn start_job(state: &AppState, feed: &Path) -> BenchResult<std::thread::JoinHandle<Result<f64, String>>> {
    let mut ids = Vec::new();
    for (kind, file) in [(Kind::Order, "orders.csv"), (Kind::Session, "sessions.csv")] {
        let path = feed.join(file);
        let store = state.store.clone();
        let work: Work = Box::new(move |_, out, err| {
            let input = File::open(&path)?;
            let len = input.metadata()?.len();
            let opts = IngestOptions {
                recorded_at: RecordedAt::Column("recorded_at".into()),
                ..IngestOptions::new(kind, Format::Csv)
            };
            jobs::ingest_run(&store, input, file, len, &opts, out, err).map(|(_, code)| code)
        });
        ids.push(state.jobs.submit(&state.store, "ingest", "bench", work, |_| ())?.id);
    }
    let store = state.store.clone();
    let at = AsOf::new(Some(parse_timestamp("2025-06-30T00:00:00Z")?), None);
    let work: Work = Box::new(move |_, out, _| jobs::snapshot(&store, at, out));
    ids.push(state.jobs.submit(&state.store, "snapshot", "bench", work, |_| ())?.id);
    let jobs = state.jobs.clone();
    let started = Instant::now();
    Ok(std::thread::spawn(move || {
        for id in ids {
            loop {
                let view = jobs.get(id).ok_or("job forgotten")?;
                match view.state {
                    JobState::Done => break,
                    JobState::Failed => return Err(format!("job {id} failed: {:?}", view.outcome)),
                    JobState::Queued | JobState::Running => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        }
        Ok(started.elapsed().as_secs_f64())
    }))
}

/// Waits until the queue is quiet: a no-op job is queued behind whatever runs (a job, or the
/// background compaction after it) and waited for, so that an idle measure is idle.
fn wait_idle(state: &AppState) -> BenchResult {
    let work: Work = Box::new(|_, _, _| Ok(0));
    let id = state.jobs.submit(&state.store, "wait", "bench", work, |_| ())?.id;
    while !matches!(
        state.jobs.get(id).map(|v| v.state),
        Some(JobState::Done | JobState::Failed)
    ) {
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

fn main() -> BenchResult {
    let customers = common::customers();
    let source = common::synthetic_store(customers)?;
    let work = source.with_file_name(format!("serve-{}", std::process::id()));
    let result = run(customers, &source, &work);
    let _ = std::fs::remove_dir_all(&work);
    result
}

fn run(customers: usize, source: &Path, work: &Path) -> BenchResult {
    eprintln!("copying the {customers}-customer store for this run…");
    copy_dir(source, &work.join("store"))?;
    let store = Store::open(&work.join("store"))?;
    let token = tokens::create(&store, "serve-bench")?;
    let store = Arc::new(store);
    let state = AppState::with_access_log(
        store.clone(),
        AccessLogConfig {
            enabled: false,
            ..AccessLogConfig::default()
        },
    );
    let path = random_profiles(customers)?;
    let rps = env_or("CIS_LOAD_RPS", 2000);
    let seconds = env_or("CIS_LOAD_SECONDS", 10);
    let feed_customers = env_or("CIS_SERVE_FEED_CUSTOMERS", 20_000) as usize;
    let rounds = common::repeats(3);

    // Unreported: the page cache warmed for both sides.
    load(state.clone(), &token, path.clone(), rps, 2)?;
    let (mut idle, mut busy, mut job_secs, mut events) = (Vec::new(), Vec::new(), Vec::new(), 0u64);
    for round in 0..rounds {
        let feed = work.join(format!("feed-{round}"));
        let counts = SynthConfig {
            customers: feed_customers,
            seed: 1000 + round as u64,
            ..SynthConfig::default()
        }
        .validate()?
        .write_csv(&feed)?;
        events = (counts.orders + counts.sessions) as u64;
        wait_idle(&state)?;
        idle.push(load(state.clone(), &token, path.clone(), rps, seconds)?);
        let job = start_job(&state, &feed)?;
        busy.push(load(state.clone(), &token, path.clone(), rps, seconds)?);
        job_secs.push(job.join().map_err(|_| "the job watcher panicked")??);
    }

    println!(
        "profile latency beside a job: {rounds} rounds, {rps} req/s target for {seconds} s per side, {customers} customers; \
         each job ingests {events} events ({feed_customers} customers' orders and sessions) then snapshots the store"
    );
    println!(
        "| side | achieved req/s | p50 ms (min / median / max) | p99 ms (min / median / max) | max ms | non-200/404 |"
    );
    println!("|---|---:|---:|---:|---:|---:|");
    for (name, runs) in [("idle", &idle), ("during the job", &busy)] {
        let spread = |p: f64| Spread::of(runs.iter().map(|r| r.pct(p)).collect());
        let (p50, p99) = (spread(0.5).ok_or("no run")?, spread(0.99).ok_or("no run")?);
        let all = Run::merge(runs);
        let other = all.statuses.len() - all.count(200) - all.count(404);
        println!(
            "| {name} | {:.0} | {} | {} | {:.1} | {other} |",
            all.rate,
            p50.cell(2),
            p99.cell(2),
            all.ms[all.ms.len() - 1]
        );
    }
    let ratios: Vec<f64> = idle.iter().zip(&busy).map(|(i, b)| b.pct(0.99) / i.pct(0.99)).collect();
    let ratio = Spread::of(ratios).ok_or("no run")?;
    let job = Spread::of(job_secs).ok_or("no run")?;
    println!(
        "p99 during / idle, per round: {} (target ≤ 2.0: {}); the job ran {} s of the {seconds} s measured",
        ratio.cell(2),
        if ratio.median <= 2.0 { "PASS" } else { "MISS" },
        job.cell(1)
    );
    Ok(())
}
