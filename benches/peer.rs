//! cis against its peer, DuckDB over the same files (issue 14): the data set of
//! `../shared/peer/gen_events.py` (100,000 customers over 730 days, seed 1), and whole
//! processes timed in alternation (cis, DuckDB, cis, DuckDB …) with their peak RSS:
//!
//! - ingest of the 4 CSVs (4 `cis ingest` runs) against `duckdb_load.py` into a database file;
//! - bytes on disk: the cis store, the DuckDB file, the CSV input;
//! - every feature as of T in a fresh process: `cis snapshot create` (cis's own full set, stored
//!   as an artifact) against `duckdb_cold.py` (the 39 features of `features_spec.py`);
//! - the feed scenario: the same events appended as one file per day and kind (`cis ingest
//!   --recorded-at event-time` per file), then snapshot time and profile latency (open loop,
//!   loopback, `common::load`) of that store against the bulk-loaded one;
//! - a one-row ingest, one `cis erase` and a batch of 100 on a copy of the bulk store.
//!
//! Each figure is printed next to the issue's target with PASS or MISS. The data set, its daily
//! split and the feed store are built once under `target/bench-data/peer-<customers>-<days>/`.
//!
//! Run: `cargo bench --bench peer` (env `CIS_PEER_CUSTOMERS`, `CIS_PEER_DAYS`, `CIS_BENCH_REPEATS`,
//! `CIS_LOAD_RPS`, `CIS_LOAD_SECONDS`; `CIS_PEER_STEPS=profile` for the profile load alone, on the
//! stores of an earlier run; `CIS_PEER_TOOLS` for the scripts' directory and
//! `CIS_PEER_PYTHON` for a Python with duckdb, numpy and polars).

mod common;

// The in-process server on the allocator `cis serve` runs on (see `src/main.rs`), not glibc's.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Instant;

use cis_core::time::{format, parse_timestamp, MICROS_PER_DAY};
use cis_server::access_log::AccessLogConfig;
use cis_server::api::{tokens, AppState};
use cis_storage::Store;
use common::load::{env_or, load, PathFn, Run};
use common::{BenchResult, Spread};
use rand::Rng;

/// The feature cut-off of the issue.
const AS_OF: &str = "2024-11-01T00:00:00Z";
/// `cis ingest` kinds and their files, in the order a day's feed is ingested.
const KINDS: [(&str, &str); 4] = [
    ("customers", "customers.csv"),
    ("orders", "orders.csv"),
    ("sessions", "sessions.csv"),
    ("returns", "returns.csv"),
];

struct Setup {
    customers: usize,
    days: usize,
    runs: usize,
    dir: PathBuf,
    csv: PathBuf,
    tools: PathBuf,
    python: String,
    events: u64,
    /// The end of the generated period (exclusive), RFC 3339.
    period_end: String,
}

/// One finished child process: wall time, peak RSS (its own, from `wait4`) and its stdout.
struct Proc {
    secs: f64,
    rss_mib: f64,
    stdout: String,
}

/// Runs `cmd` to completion; an error (with the end of its stderr) unless it exits 0.
fn run(cmd: &mut Command) -> BenchResult<Proc> {
    cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let start = Instant::now();
    let mut child = cmd.spawn()?;
    // Both pipes drained while the child runs, so that neither can fill and stall it.
    let mut err = child.stderr.take().ok_or("no stderr pipe")?;
    let stderr = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let mut stdout = String::new();
    child
        .stdout
        .take()
        .ok_or("no stdout pipe")?
        .read_to_string(&mut stdout)?;
    let (status, usage) = wait4(child.id())?;
    let secs = start.elapsed().as_secs_f64();
    let stderr = stderr.join().map_err(|_| "stderr reader panicked")?;
    if !(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0) {
        let tail: String = stderr
            .chars()
            .rev()
            .take(2000)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        return Err(format!("{cmd:?} failed (wait status {status}): {tail}").into());
    }
    Ok(Proc {
        secs,
        rss_mib: usage.ru_maxrss as f64 / 1024.0,
        stdout,
    })
}

/// Reaps child `pid` and returns its wait status and resource usage. std's `Child::wait` gives
/// no rusage, and `getrusage(RUSAGE_CHILDREN)` only the maximum over every child so far.
fn wait4(pid: u32) -> std::io::Result<(i32, libc::rusage)> {
    let pid = libc::pid_t::try_from(pid).map_err(std::io::Error::other)?;
    let mut status = 0;
    // SAFETY: rusage is a plain C struct of integers, for which all zeroes is a valid value.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    loop {
        // SAFETY: `pid` is our own child, not reaped yet (nothing called `Child::wait`), and both
        // pointers are to live locals of the right types.
        let r = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
        if r == pid {
            return Ok((status, usage));
        }
        let e = std::io::Error::last_os_error();
        if e.kind() != std::io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

fn cis() -> Command {
    Command::new(env!("CARGO_BIN_EXE_cis"))
}

/// Runs `cis ingest` of one file; returns the process and the rows it accepted.
fn ingest(store: &Path, kind: &str, file: &Path) -> BenchResult<(Proc, u64)> {
    let p = run(cis()
        .args(["ingest", kind])
        .arg(file)
        .arg("--store")
        .arg(store)
        .args(["--recorded-at", "event-time"]))?;
    // "… — 123 accepted, 0 duplicate, …"
    let accepted = p
        .stdout
        .split(" accepted")
        .next()
        .and_then(|s| s.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| format!("no accepted count in {:?}", p.stdout))?;
    Ok((p, accepted))
}

fn snapshot_create(store: &Path) -> BenchResult<Proc> {
    run(cis()
        .args(["snapshot", "create", "--as-of", AS_OF, "--store"])
        .arg(store))
}

/// Apparent size of every file under `path`.
fn size(path: &Path) -> BenchResult<u64> {
    let meta = std::fs::metadata(path)?;
    if !meta.is_dir() {
        return Ok(meta.len());
    }
    let mut total = 0;
    for entry in std::fs::read_dir(path)? {
        total += size(&entry?.path())?;
    }
    Ok(total)
}

fn copy_dir(from: &Path, to: &Path) -> BenchResult {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_dir(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), target)?;
        }
    }
    Ok(())
}

fn setup() -> BenchResult<Setup> {
    let customers = env_or("CIS_PEER_CUSTOMERS", 100_000) as usize;
    let days = env_or("CIS_PEER_DAYS", 730) as usize;
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let tools =
        std::env::var_os("CIS_PEER_TOOLS").map_or_else(|| root.join("..").join("shared").join("peer"), PathBuf::from);
    if !tools.join("gen_events.py").exists() {
        return Err(format!("no gen_events.py in {} (set CIS_PEER_TOOLS)", tools.display()).into());
    }
    let python = std::env::var("CIS_PEER_PYTHON").unwrap_or_else(|_| "python3".into());
    let dir = root
        .join("target")
        .join("bench-data")
        .join(format!("peer-{customers}-{days}"));
    let csv = dir.join("csv");
    if !csv.join("READY").exists() {
        let _ = std::fs::remove_dir_all(&csv);
        eprintln!("generating {customers} customers over {days} days (once)…");
        run(Command::new(&python)
            .arg(tools.join("gen_events.py"))
            .args([
                "--customers",
                &customers.to_string(),
                "--days",
                &days.to_string(),
                "--seed",
                "1",
                "--out",
            ])
            .arg(&csv))?;
        std::fs::write(csv.join("READY"), b"")?;
    }
    let manifest: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(csv.join("manifest.json"))?)?;
    let events = manifest["total_events"]
        .as_u64()
        .ok_or("manifest.json: no total_events")?;
    let period_end = manifest["period_end_exclusive"]
        .as_str()
        .ok_or("manifest.json: no period_end_exclusive")?
        .to_string();
    Ok(Setup {
        customers,
        days,
        runs: common::repeats(3),
        dir,
        csv,
        tools,
        python,
        events,
        period_end,
    })
}

/// Splits each CSV into one file per UTC date of its `event_time` (customers on their signup
/// day), under `daily/<date>/`, streaming: gen_events.py writes every file sorted by event time.
fn split_daily(s: &Setup) -> BenchResult<Vec<PathBuf>> {
    let daily = s.dir.join("daily");
    if !daily.join("READY").exists() {
        let _ = std::fs::remove_dir_all(&daily);
        for (_, file) in KINDS {
            let mut reader = csv::Reader::from_path(s.csv.join(file))?;
            let headers = reader.byte_headers()?.clone();
            let col = headers
                .iter()
                .position(|h| h == b"event_time")
                .ok_or_else(|| format!("{file}: no event_time column"))?;
            let mut current: Option<(Vec<u8>, csv::Writer<std::fs::File>)> = None;
            let mut record = csv::ByteRecord::new();
            while reader.read_byte_record(&mut record)? {
                let day = record
                    .get(col)
                    .and_then(|t| t.get(..10))
                    .ok_or_else(|| format!("{file}: short event_time"))?;
                if current.as_ref().map(|(d, _)| d.as_slice()) != Some(day) {
                    if let Some((previous, mut writer)) = current.take() {
                        if day < previous.as_slice() {
                            return Err(format!("{file} is not sorted by event_time").into());
                        }
                        writer.flush()?;
                    }
                    let dir = daily.join(std::str::from_utf8(day)?);
                    std::fs::create_dir_all(&dir)?;
                    let mut writer = csv::Writer::from_path(dir.join(file))?;
                    writer.write_byte_record(&headers)?;
                    current = Some((day.to_vec(), writer));
                }
                if let Some((_, writer)) = current.as_mut() {
                    writer.write_byte_record(&record)?;
                }
            }
            if let Some((_, mut writer)) = current {
                writer.flush()?;
            }
        }
        std::fs::write(daily.join("READY"), b"")?;
    }
    let mut days = Vec::new();
    for entry in std::fs::read_dir(&daily)? {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            days.push(entry.path());
        }
    }
    days.sort();
    Ok(days)
}

/// The store fed one day at a time (built once: its summary line is kept in `feed-READY`, with
/// its size before any snapshot or token was added to it).
fn feed_store(s: &Setup, days: &[PathBuf], csv_bytes: u64) -> BenchResult<(PathBuf, String)> {
    let store = s.dir.join("feed-store");
    let ready = s.dir.join("feed-READY");
    if ready.exists() {
        return Ok((store, std::fs::read_to_string(ready)?));
    }
    let _ = std::fs::remove_dir_all(&store);
    let (mut per_day, mut runs, mut rss, mut accepted) = (Vec::new(), 0, 0f64, 0);
    let start = Instant::now();
    for (i, day) in days.iter().enumerate() {
        let mut secs = 0.0;
        for (kind, file) in KINDS {
            let path = day.join(file);
            if path.exists() {
                let (p, n) = ingest(&store, kind, &path)?;
                secs += p.secs;
                rss = rss.max(p.rss_mib);
                accepted += n;
                runs += 1;
            }
        }
        per_day.push(secs);
        if (i + 1) % 30 == 0 {
            eprintln!(
                "feed: {}/{} days, {:.0} s so far, that day {secs:.2} s",
                i + 1,
                days.len(),
                start.elapsed().as_secs_f64()
            );
        }
    }
    if accepted != s.events {
        return Err(format!("the daily ingests accepted {accepted} of {} events", s.events).into());
    }
    let total: f64 = per_day.iter().sum();
    let last = per_day.last().copied().unwrap_or(f64::NAN);
    let spread = Spread::of(per_day).ok_or("no day to ingest")?;
    let bytes = size(&store)? as f64;
    let summary = format!(
        "{} daily ingests ({runs} `cis ingest` runs, one per day and kind) took {total:.1} s; s per day min / median / max {}, \
         the last day {last:.2} s; peak RSS {rss:.0} MiB; the store {:.1} MB on disk ({:.2} x CSV)",
        days.len(),
        spread.cell(3),
        bytes / 1e6,
        bytes / csv_bytes as f64
    );
    std::fs::write(&ready, &summary)?;
    Ok((store, summary))
}

/// Pass or miss of `value` against `target`; `at_most` for an upper bound.
fn verdict(value: f64, target: f64, at_most: bool) -> &'static str {
    if (at_most && value <= target) || (!at_most && value >= target) {
        "PASS"
    } else {
        "MISS"
    }
}

fn spread(samples: &[f64]) -> BenchResult<Spread> {
    Ok(Spread::of(samples.to_vec()).ok_or("no samples")?)
}

fn ratios(a: &[f64], b: &[f64]) -> BenchResult<Spread> {
    spread(&a.iter().zip(b).map(|(x, y)| x / y).collect::<Vec<_>>())
}

/// A table row of a label and cells.
fn row(label: &str, cells: &[String]) {
    println!("| {label} | {} |", cells.join(" | "));
}

/// A target, the figure measured against it, and PASS or MISS.
type Target = (String, String, &'static str);

/// Printed after each step, so that a run stopped in a later (slower) step keeps its figures.
fn print_targets(targets: &[Target]) {
    println!();
    println!("| target | figure | |");
    println!("|---|---:|---|");
    for (target, figure, verdict) in targets {
        println!("| {target} | {figure} | {verdict} |");
    }
}

fn main() -> BenchResult {
    // Read first, so that a misspelt value fails before the data set is generated.
    let all = steps()? == Steps::All;
    let s = setup()?;
    let csv_bytes: u64 = KINDS
        .iter()
        .map(|(_, f)| size(&s.csv.join(f)))
        .sum::<BenchResult<u64>>()?;
    println!(
        "peer benchmark: {} customers over {} days ({} events, {:.1} MB of CSV), features as of {AS_OF}; \
         whole processes in alternation, {} rounds; every cell min / median / max, a ratio per round; \
         targets against medians",
        s.customers,
        s.days,
        s.events,
        csv_bytes as f64 / 1e6,
        s.runs
    );
    let bulk = s.dir.join("bulk-store");
    if all {
        against_duckdb(&s, &bulk, csv_bytes)?;
        small_writes(&s, &bulk)?;
    } else if !bulk.exists() {
        return Err(format!(
            "{} is not built yet: run the benchmark once without CIS_PEER_STEPS",
            bulk.display()
        )
        .into());
    }
    let days = split_daily(&s)?;
    let (feed, feed_summary) = feed_store(&s, &days, csv_bytes)?;
    println!();
    println!("feed scenario: {feed_summary}");
    let mut targets = if all {
        feed_snapshots(&s, &bulk, &feed)?
    } else {
        Vec::new()
    };
    targets.extend(profile_load(&s, &bulk, &feed)?);
    print_targets(&targets);
    Ok(())
}

/// Which steps a run takes (`CIS_PEER_STEPS`): all of them, or only the profile load on the
/// stores an earlier run built, to measure a change to the read path in a minute, not fifteen.
#[derive(PartialEq)]
enum Steps {
    All,
    Profile,
}

fn steps() -> BenchResult<Steps> {
    match std::env::var("CIS_PEER_STEPS").as_deref() {
        Err(_) | Ok("all") => Ok(Steps::All),
        Ok("profile") => Ok(Steps::Profile),
        Ok(other) => Err(format!("CIS_PEER_STEPS={other}: expected all or profile").into()),
    }
}

/// Ingest, bytes on disk and the cold feature run, cis against DuckDB. Each round ingests into
/// a new store and loads a new DuckDB file; the last store stays as the bulk store.
fn against_duckdb(s: &Setup, bulk: &Path, csv_bytes: u64) -> BenchResult {
    let duckdb = s.dir.join("peer.duckdb");
    let (mut cis_secs, mut cis_rss, mut duck_secs, mut duck_rss) = (vec![], vec![], vec![], vec![]);
    for _ in 0..s.runs {
        let _ = std::fs::remove_dir_all(bulk);
        let (mut secs, mut rss, mut accepted) = (0.0, 0f64, 0);
        for (kind, file) in KINDS {
            let (p, n) = ingest(bulk, kind, &s.csv.join(file))?;
            secs += p.secs;
            rss = rss.max(p.rss_mib);
            accepted += n;
        }
        if accepted != s.events {
            return Err(format!("cis ingest accepted {accepted} of {} events", s.events).into());
        }
        cis_secs.push(secs);
        cis_rss.push(rss);
        let p = run(Command::new(&s.python)
            .arg(s.tools.join("duckdb_load.py"))
            .arg(&s.csv)
            .arg(&duckdb))?;
        duck_secs.push(p.secs);
        duck_rss.push(p.rss_mib);
    }
    // Before any snapshot is stored in it.
    let store_bytes = size(bulk)?;
    let duck_bytes = size(&duckdb)?;
    let (mut snap_secs, mut snap_rss, mut cold_secs, mut cold_rss) = (vec![], vec![], vec![], vec![]);
    for _ in 0..s.runs {
        let p = snapshot_create(bulk)?;
        snap_secs.push(p.secs);
        snap_rss.push(p.rss_mib);
        let p = run(Command::new(&s.python)
            .arg(s.tools.join("duckdb_cold.py"))
            .arg(&duckdb)
            .arg(AS_OF))?;
        cold_secs.push(p.secs);
        cold_rss.push(p.rss_mib);
    }

    println!();
    println!(
        "| step | cis s | DuckDB s | cis / DuckDB time | cis peak RSS MiB | DuckDB peak RSS MiB | cis / DuckDB RSS |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|");
    let (cis_ingest, snap_ratio, snap_rss_ratio) = (
        spread(&cis_secs)?,
        ratios(&snap_secs, &cold_secs)?,
        ratios(&snap_rss, &cold_rss)?,
    );
    row(
        "load the 4 CSVs to disk (4 `cis ingest` runs / duckdb_load.py)",
        &[
            cis_ingest.cell(2),
            spread(&duck_secs)?.cell(2),
            ratios(&cis_secs, &duck_secs)?.cell(2),
            spread(&cis_rss)?.cell(0),
            spread(&duck_rss)?.cell(0),
            ratios(&cis_rss, &duck_rss)?.cell(2),
        ],
    );
    row(
        "all features, cold process (`cis snapshot create`: cis's full set, stored / duckdb_cold.py: 39 features)",
        &[
            spread(&snap_secs)?.cell(2),
            spread(&cold_secs)?.cell(2),
            snap_ratio.cell(2),
            spread(&snap_rss)?.cell(0),
            spread(&cold_rss)?.cell(0),
            snap_rss_ratio.cell(2),
        ],
    );
    println!();
    println!(
        "bytes on disk: CSV input {:.1} MB; cis store {:.1} MB ({:.2} x CSV); DuckDB file {:.1} MB ({:.2} x CSV)",
        csv_bytes as f64 / 1e6,
        store_bytes as f64 / 1e6,
        store_bytes as f64 / csv_bytes as f64,
        duck_bytes as f64 / 1e6,
        duck_bytes as f64 / csv_bytes as f64,
    );
    let events_per_s = s.events as f64 / cis_ingest.median;
    let on_disk = store_bytes as f64 / csv_bytes as f64;
    print_targets(&[
        (
            "ingest >= 1.5 M events/s".into(),
            format!("{:.2} M events/s", events_per_s / 1e6),
            verdict(events_per_s, 1.5e6, false),
        ),
        (
            "store on disk <= 1.0 x CSV input".into(),
            format!("{on_disk:.2} x"),
            verdict(on_disk, 1.0, true),
        ),
        (
            "full snapshot <= 1.0 x DuckDB cold time".into(),
            format!("{:.2} x", snap_ratio.median),
            verdict(snap_ratio.median, 1.0, true),
        ),
        (
            "snapshot peak RSS <= DuckDB's".into(),
            format!("{:.2} x", snap_rss_ratio.median),
            verdict(snap_rss_ratio.median, 1.0, true),
        ),
    ]);
    Ok(())
}

/// `cis snapshot create` on the bulk store and on the store fed daily, alternating.
fn feed_snapshots(s: &Setup, bulk: &Path, feed: &Path) -> BenchResult<Vec<Target>> {
    let (mut bulk_secs, mut bulk_rss, mut feed_secs, mut feed_rss) = (vec![], vec![], vec![], vec![]);
    for _ in 0..s.runs {
        let p = snapshot_create(bulk)?;
        bulk_secs.push(p.secs);
        bulk_rss.push(p.rss_mib);
        let p = snapshot_create(feed)?;
        feed_secs.push(p.secs);
        feed_rss.push(p.rss_mib);
    }
    let ratio = ratios(&feed_secs, &bulk_secs)?;
    println!();
    println!("| `cis snapshot create` | s | fed / bulk time | peak RSS MiB |");
    println!("|---|---:|---:|---:|");
    row(
        "bulk store (4 files)",
        &[spread(&bulk_secs)?.cell(2), String::new(), spread(&bulk_rss)?.cell(0)],
    );
    row(
        "store fed daily",
        &[spread(&feed_secs)?.cell(2), ratio.cell(2), spread(&feed_rss)?.cell(0)],
    );
    Ok(vec![(
        "after the daily ingests: snapshot time <= 1.25 x bulk".into(),
        format!("{:.2} x", ratio.median),
        verdict(ratio.median, 1.25, true),
    )])
}

/// Profile latency on the bulk store and on the store fed daily, alternating; targets on the
/// per-run p50 and p99.
fn profile_load(s: &Setup, bulk: &Path, feed: &Path) -> BenchResult<Vec<Target>> {
    let rps = env_or("CIS_LOAD_RPS", 2000);
    let seconds = env_or("CIS_LOAD_SECONDS", 5);
    let end = parse_timestamp(&s.period_end)?;
    let (customers, window) = (s.customers, s.days.min(90) as i64);
    // Random customers as of one of the last 90 days of the period (a 404 for one who had not
    // signed up by then).
    let path: PathFn = Arc::new(move |rng| {
        let customer = rng.gen_range(1..=customers);
        let as_of = end - rng.gen_range(1..=window) * MICROS_PER_DAY;
        format!(
            "/customer/profile?customer_id=C{customer:07}&as_of={}",
            &format(as_of)[..10]
        )
    });
    // The access log off: it would add a ledger to the kept feed store on every invocation
    // (benches/load.rs measures its cost).
    let off = AccessLogConfig {
        enabled: false,
        ..AccessLogConfig::default()
    };
    let mut sides = Vec::new();
    for dir in [bulk, feed] {
        let store = Store::open(dir)?;
        let token = tokens::create(&store, &format!("peer-{}", std::process::id()))?;
        sides.push((Arc::new(store), token));
    }
    // A short unreported run on each first, so that no measured run pays for a cold cache.
    for (store, token) in &sides {
        load(
            AppState::with_access_log(store.clone(), off),
            token,
            path.clone(),
            rps,
            2,
        )?;
    }
    let mut runs: [Vec<Run>; 2] = [Vec::new(), Vec::new()];
    for _ in 0..s.runs {
        for (side, (store, token)) in sides.iter().enumerate() {
            let state = AppState::with_access_log(store.clone(), off);
            runs[side].push(load(state, token, path.clone(), rps, seconds)?);
        }
    }
    println!();
    println!(
        "profile load: open loop at {rps} req/s for {seconds} s per run, {} connections, loopback, in-process server \
         (access log off), alternating the stores, {} runs each; customer at random, as of one of the last {window} days",
        common::load::CONNECTIONS,
        s.runs
    );
    println!();
    println!(
        "| store | achieved req/s | p50 ms | p99 ms | feed / bulk p50 | feed / bulk p99 | max ms (all runs) | send lag p50 / p99 ms (all runs) | 200 | 404 | other |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    let pcts = |p: f64| {
        runs.each_ref()
            .map(|r| r.iter().map(|x| x.pct(p)).collect::<Vec<f64>>())
    };
    let (p50s, p99s) = (pcts(0.5), pcts(0.99));
    let (r50, r99) = (ratios(&p50s[1], &p50s[0])?.cell(2), ratios(&p99s[1], &p99s[0])?.cell(2));
    for (side, name) in ["bulk (4 files)", "fed daily"].into_iter().enumerate() {
        let all = Run::merge(&runs[side]);
        let rate = spread(&runs[side].iter().map(|r| r.rate).collect::<Vec<_>>())?;
        let (ok, not_found) = (all.count(200), all.count(404));
        let (a, b) = if side == 0 {
            (String::new(), String::new())
        } else {
            (r50.clone(), r99.clone())
        };
        row(
            name,
            &[
                rate.cell(0),
                spread(&p50s[side])?.cell(2),
                spread(&p99s[side])?.cell(2),
                a,
                b,
                format!("{:.2}", all.ms[all.ms.len() - 1]),
                format!("{:.2} / {:.2}", all.lag_pct(0.5), all.lag_pct(0.99)),
                ok.to_string(),
                not_found.to_string(),
                (all.statuses.len() - ok - not_found).to_string(),
            ],
        );
    }
    let p50_ratio = ratios(&p50s[1], &p50s[0])?;
    let feed_p99 = spread(&p99s[1])?;
    Ok(vec![
        (
            "after the daily ingests: profile p50 <= 1.25 x bulk".into(),
            format!("{:.2} x", p50_ratio.median),
            verdict(p50_ratio.median, 1.25, true),
        ),
        (
            format!("profile p99 < 1 ms at {rps} req/s (store fed daily)"),
            format!("{:.2} ms", feed_p99.median),
            if feed_p99.median < 1.0 { "PASS" } else { "MISS" },
        ),
    ])
}

/// On a copy of the bulk store, alternating: a one-row ingest (time, peak RSS of the process),
/// one erasure and a batch of 100 erasures (time), each round on a new order and other customers.
fn small_writes(s: &Setup, bulk: &Path) -> BenchResult {
    let copy = s.dir.join("bulk-copy");
    let _ = std::fs::remove_dir_all(&copy);
    copy_dir(bulk, &copy)?;
    // Untimed: an open migrates a store an older build left (a one-time cost), and the copy's
    // dirty pages would otherwise be written back inside the first timed fsyncs.
    run(cis().arg("erasures").arg("--store").arg(&copy))?;
    // SAFETY: sync(2) takes no arguments and cannot fail.
    unsafe { libc::sync() };
    let (mut ingest_secs, mut ingest_rss, mut erase_secs, mut batch_secs) = (vec![], vec![], vec![], vec![]);
    for k in 0..s.runs {
        let file = s.dir.join("one-row.csv");
        std::fs::write(
            &file,
            format!(
                "order_id,customer_id,event_time,amount,currency,quantity,channel\npeer-one-row-{}-{k},C0000001,{},12.34,EUR,1,web\n",
                std::process::id(),
                s.period_end
            ),
        )?;
        let (p, accepted) = ingest(&copy, "orders", &file)?;
        if accepted != 1 {
            return Err(format!("the one-row ingest accepted {accepted} rows").into());
        }
        ingest_secs.push(p.secs);
        ingest_rss.push(p.rss_mib);
        let p = run(cis()
            .args([
                "erase",
                "--customer",
                &format!("C{:07}", k + 2),
                "--reason",
                "r",
                "--store",
            ])
            .arg(&copy))?;
        erase_secs.push(p.secs);
        let hundred = s.dir.join("hundred.txt");
        let ids: Vec<String> = (0..100).map(|i| format!("C{:07}", 1_000 + 100 * k + i)).collect();
        std::fs::write(&hundred, ids.join("\n"))?;
        let p = run(cis()
            .args(["erase", "--reason", "r", "--customers"])
            .arg(&hundred)
            .arg("--store")
            .arg(&copy))?;
        batch_secs.push(p.secs);
    }
    let _ = std::fs::remove_dir_all(&copy);
    let (one_row, one_rss, erase) = (spread(&ingest_secs)?, spread(&ingest_rss)?, spread(&erase_secs)?);
    let batch = spread(&batch_secs)?;
    println!();
    println!(
        "small writes on a copy of the bulk store, alternating, {} rounds:",
        s.runs
    );
    println!();
    println!("| what | s | peak RSS MiB |");
    println!("|---|---:|---:|");
    println!(
        "| one-row ingest (`cis ingest orders`, 1 row) | {} | {} |",
        one_row.cell(3),
        one_rss.cell(1)
    );
    println!(
        "| one erasure (`cis erase --customer C… --reason r`) | {} | |",
        erase.cell(3)
    );
    println!(
        "| 100 erasures in one batch (`cis erase --customers FILE --reason r`) | {} | |",
        batch.cell(3)
    );
    // 64 MB, in MiB as every other figure here.
    let rss_limit = 64e6 / (1024.0 * 1024.0);
    print_targets(&[
        (
            "one-row ingest into the bulk store <= 50 ms".into(),
            format!("{:.1} ms", one_row.median * 1e3),
            verdict(one_row.median, 0.050, true),
        ),
        (
            "one-row ingest peak RSS <= 64 MB (61.0 MiB; the max of the rounds)".into(),
            format!("{:.1} MiB", one_rss.max),
            verdict(one_rss.max, rss_limit, true),
        ),
        (
            "one erasure (`cis erase --customer ID --reason r`) <= 0.5 s".into(),
            format!("{:.2} s", erase.median),
            verdict(erase.median, 0.5, true),
        ),
        (
            "100 erasures in one batch <= 5 s".into(),
            format!("{:.2} s", batch.median),
            verdict(batch.median, 5.0, true),
        ),
    ]);
    Ok(())
}
