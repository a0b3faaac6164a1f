//! Data quality per ingest run and per event-day, with flags for anomalies.
//! `cis monitor quality`. Flags are findings, not failures: the exit code is 0 either way.

use std::io::Write;
use std::process::ExitCode;

use cis_storage::{hex, Store};
use clap::Args;
use serde::Serialize;

use cis_core::event::Kind;
use cis_core::time::Timestamp;
use cis_ops::monitor::quality::{self, DayVolume, Filter, Flag, QualityReport, Rules, RunQuality};

#[derive(Args, Debug)]
pub struct QualityArgs {
    /// Show runs started, and days, from T on (flags still learn from the earlier history).
    #[arg(long, value_parser = super::parse_time)]
    since: Option<Timestamp>,
    /// Only runs and days of this kind.
    #[arg(long, value_parser = super::choice::<Kind>())]
    kind: Option<Kind>,
    /// Flag runs whose quarantined share of rows exceeds this fraction.
    #[arg(long, default_value_t = Rules::default().quarantine_max)]
    max_quarantine_rate: f64,
    /// Width of the daily volume band in robust standard deviations.
    #[arg(long, default_value_t = Rules::default().volume_k)]
    volume_k: f64,
    /// Flag a run whose arrival-lag p95 exceeds this multiple of the previous runs' median p95.
    #[arg(long, default_value_t = Rules::default().lag_factor)]
    lag_factor: f64,
    /// Print the report (and its artifact hash) as JSON.
    #[arg(long)]
    json: bool,
}

pub fn run(store: &Store, a: QualityArgs, out: &mut impl Write) -> anyhow::Result<ExitCode> {
    let rules = Rules {
        quarantine_max: a.max_quarantine_rate,
        volume_k: a.volume_k,
        lag_factor: a.lag_factor,
        ..Rules::default()
    };
    let filter = Filter {
        since: a.since,
        kind: a.kind,
    };
    let report = quality::report(store, &filter, &rules)?;
    let (hash, _) = quality::store_report(store, &report)?;
    if a.json {
        let doc = Output {
            artifact: hex(&hash),
            report: &report,
        };
        writeln!(out, "{}", serde_json::to_string_pretty(&doc)?)?;
    } else {
        print_tables(&report, out)?;
        writeln!(out, "quality-report {}", hex(&hash))?;
    }
    Ok(ExitCode::SUCCESS)
}

/// `--json`: the report in its own field order, with the hash it is stored under.
#[derive(Serialize)]
struct Output<'a> {
    artifact: String,
    report: &'a QualityReport,
}

fn print_tables(r: &QualityReport, out: &mut impl Write) -> anyhow::Result<()> {
    writeln!(out, "ingest runs")?;
    writeln!(
        out,
        "{:>4}  {:<8}  {:<20}  {:>9}  {:>9}  {:>6}  {:>8}  {:>10}  {:>10}  {:>10}  {:<16}  missing",
        "run", "kind", "started", "rows", "accepted", "dups", "quar %", "lag p50", "lag p95", "lag max", "flags"
    )?;
    for run in &r.runs {
        print_run(run, out)?;
    }
    writeln!(out, "\nevents per event-day")?;
    writeln!(
        out,
        "{:<10}  {:<8}  {:>9}  {:>21}  flag",
        "day", "kind", "events", "band"
    )?;
    for d in &r.days {
        print_day(d, out)?;
    }
    let counts: Vec<String> = r
        .flag_counts()
        .iter()
        .map(|(f, n)| format!("{} {n}", f.name()))
        .collect();
    writeln!(out, "\nflags: {}", counts.join(", "))?;
    Ok(())
}

fn print_run(run: &RunQuality, out: &mut impl Write) -> anyhow::Result<()> {
    let lag = |f: fn(&cis_ingest::records::Lag) -> i64| run.arrival_lag.as_ref().map_or("-".into(), |l| duration(f(l)));
    let missing: Vec<String> = run
        .missing_share
        .iter()
        .map(|(f, s)| format!("{f} {:.1}%", s * 100.0))
        .collect();
    let flags: Vec<&str> = run.flags.iter().map(|f| Flag::name(*f)).collect();
    writeln!(
        out,
        "{:>4}  {:<8}  {:<20}  {:>9}  {:>9}  {:>6}  {:>8.2}  {:>10}  {:>10}  {:>10}  {:<16}  {}",
        run.run,
        run.kind.name(),
        run.started_at.chars().take(19).collect::<String>(),
        run.rows,
        run.accepted,
        run.duplicates,
        run.quarantine_rate * 100.0,
        lag(|l| l.median_us),
        lag(|l| l.p95_us),
        lag(|l| l.max_us),
        flags.join(","),
        if missing.is_empty() {
            "-".into()
        } else {
            missing.join(", ")
        }
    )?;
    Ok(())
}

fn print_day(d: &DayVolume, out: &mut impl Write) -> anyhow::Result<()> {
    let band = d
        .band
        .map_or("-".into(), |[lo, hi]| format!("{:.1} .. {:.1}", lo.max(0.0), hi));
    writeln!(
        out,
        "{:<10}  {:<8}  {:>9}  {:>21}  {}",
        d.day,
        d.kind.name(),
        d.events,
        band,
        if d.flagged { "volume" } else { "" }
    )?;
    Ok(())
}

/// A lag in the largest whole unit that keeps it readable.
fn duration(us: i64) -> String {
    let s = us as f64 / 1e6;
    match s {
        s if s < 120.0 => format!("{s:.1}s"),
        s if s < 7200.0 => format!("{:.1}m", s / 60.0),
        s if s < 172_800.0 => format!("{:.1}h", s / 3600.0),
        s => format!("{:.1}d", s / 86_400.0),
    }
}
