//! Data quality over time: a table per ingest run and per event-day, with three flags.
//!
//! Figures come from the ingest run records ([`cis_ingest::records`]): rows, quarantined
//! rows, missing values per optional field, arrival lag and events per event-day. Rules, with
//! their defaults in [`Rules::default`]:
//!
//! - **volume**: a day's events (per kind) lie outside `median ± k·max(1.4826·MAD, √median, 1)`
//!   of the previous `window` days of that kind (k = 4, window = 28 days, needs at least 7
//!   previous days). 1.4826·MAD estimates σ for normal data; √median is the Poisson noise
//!   floor, so a very regular history does not flag a day for ±1 event. Days between a kind's
//!   first and last event-day with no events count as 0 (a missing day is the first thing to
//!   catch); history starts at the kind's first day.
//! - **quarantine rate**: a run's quarantined rows over rows read exceed a threshold (1 %).
//! - **lag jump**: a run's arrival-lag p95 exceeds `factor × max(baseline, floor)`, where the
//!   baseline is the median p95 of up to 20 previous runs of the same kind (factor = 3, floor =
//!   60 s, needs at least 3 previous runs with lag figures). The floor keeps a backfill (lag 0)
//!   followed by a feed a few seconds late from flagging.
//!
//! Flags are computed over the whole history; `since` and `kind` only choose which rows are
//! shown (so the first day shown still has its 28 days of history). Medians and quantiles come
//! from `statrs`. A report is stored as an immutable artifact of kind [`KIND`] (no parents; its
//! as-of is the finish time of the latest run it covers).

use std::collections::BTreeMap;

use cis_storage::{ArtifactHash, NewArtifact, StorageError, Store};
use serde::{Deserialize, Serialize};
use statrs::statistics::{Data, OrderStatistics};

use cis_core::event::Kind;
use cis_core::time::{self, Micros, MICROS_PER_DAY};
use cis_ingest::records::{self, day_label, IngestRun, Lag};
use cis_ingest::IngestError;

pub const KIND: &str = "quality-report";
pub const SCHEMA: u32 = 1;

/// How many previous runs the lag baseline looks at.
const LAG_RUNS: usize = 20;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum QualityError {
    #[error("invalid rule: {0}")]
    Rule(String),
    #[error(transparent)]
    Ingest(#[from] IngestError),
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("report encoding: {0}")]
    Json(#[from] serde_json::Error),
}

/// The flag thresholds (see the module doc).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Rules {
    pub quarantine_max: f64,
    pub volume_k: f64,
    pub volume_window_days: usize,
    pub volume_min_history: usize,
    pub lag_factor: f64,
    pub lag_floor_us: i64,
    pub lag_min_history: usize,
}

impl Default for Rules {
    fn default() -> Self {
        Rules {
            quarantine_max: 0.01,
            volume_k: 4.0,
            volume_window_days: 28,
            volume_min_history: 7,
            lag_factor: 3.0,
            lag_floor_us: 60_000_000,
            lag_min_history: 3,
        }
    }
}

impl Rules {
    fn validate(&self) -> Result<(), QualityError> {
        let bad = |what: &str| Err(QualityError::Rule(what.into()));
        if !(0.0..=1.0).contains(&self.quarantine_max) {
            return bad("the quarantine threshold must lie in [0, 1]");
        }
        if !(self.volume_k > 0.0 && self.volume_k.is_finite() && self.lag_factor > 0.0 && self.lag_factor.is_finite()) {
            return bad("k and the lag factor must be positive numbers");
        }
        if self.volume_min_history == 0 || self.volume_min_history > self.volume_window_days {
            return bad("the volume history minimum must be between 1 and the window");
        }
        if self.lag_min_history == 0 || self.lag_floor_us < 0 {
            return bad("the lag history minimum must be at least 1 and the floor not negative");
        }
        Ok(())
    }
}

/// Which rows a report shows.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Filter {
    /// Runs started and days beginning at or after this time.
    pub since: Option<Micros>,
    pub kind: Option<Kind>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Flag {
    Volume,
    QuarantineRate,
    LagJump,
}

impl Flag {
    pub const ALL: [Flag; 3] = [Flag::Volume, Flag::QuarantineRate, Flag::LagJump];

    pub fn name(self) -> &'static str {
        match self {
            Flag::Volume => "volume",
            Flag::QuarantineRate => "quarantine-rate",
            Flag::LagJump => "lag-jump",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunQuality {
    pub run: u64,
    pub kind: Kind,
    pub file: String,
    pub started_at: String,
    pub finished_at: String,
    pub rows: u64,
    pub accepted: u64,
    pub duplicates: u64,
    pub quarantined: u64,
    pub quarantine_rate: f64,
    pub missing_share: BTreeMap<String, f64>,
    pub arrival_lag: Option<Lag>,
    /// Median p95 of previous runs of the kind, when there were enough of them.
    pub lag_baseline_us: Option<i64>,
    pub flags: Vec<Flag>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DayVolume {
    pub day: String,
    pub kind: Kind,
    pub events: u64,
    /// `[low, high]` learned from the previous days, when there were enough of them.
    pub band: Option<[f64; 2]>,
    pub flagged: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QualityReport {
    pub rules: Rules,
    pub filter: Filter,
    pub runs: Vec<RunQuality>,
    pub days: Vec<DayVolume>,
}

impl QualityReport {
    /// How many shown runs or days raised each flag (every flag present, 0 if none).
    pub fn flag_counts(&self) -> BTreeMap<Flag, usize> {
        let mut counts: BTreeMap<Flag, usize> = Flag::ALL.iter().map(|f| (*f, 0)).collect();
        for f in self.runs.iter().flat_map(|r| &r.flags) {
            *counts.entry(*f).or_default() += 1;
        }
        *counts.entry(Flag::Volume).or_default() += self.days.iter().filter(|d| d.flagged).count();
        counts
    }

    /// The latest shown run of each kind.
    pub fn latest_runs(&self) -> BTreeMap<Kind, &RunQuality> {
        self.runs.iter().map(|r| (r.kind, r)).collect()
    }

    /// The latest shown day of each kind.
    pub fn latest_days(&self) -> BTreeMap<Kind, &DayVolume> {
        let mut latest: BTreeMap<Kind, &DayVolume> = BTreeMap::new();
        for d in &self.days {
            latest.entry(d.kind).and_modify(|l| *l = d).or_insert(d);
        }
        latest
    }
}

fn median(values: Vec<f64>) -> f64 {
    Data::new(values).median()
}

/// Reads every run record and builds the report.
pub fn report(store: &Store, filter: &Filter, rules: &Rules) -> Result<QualityReport, QualityError> {
    build(&records::runs(store)?, filter, rules)
}

/// The report over `runs` (in run order), a pure function.
pub fn build(runs: &[IngestRun], filter: &Filter, rules: &Rules) -> Result<QualityReport, QualityError> {
    rules.validate()?;
    let shown_kind = |k: Kind| filter.kind.is_none_or(|f| f == k);
    let mut out_runs = Vec::new();
    let mut p95s: BTreeMap<Kind, Vec<i64>> = BTreeMap::new();
    for r in runs {
        let history = p95s.entry(r.kind).or_default();
        let baseline = (history.len() >= rules.lag_min_history).then(|| {
            let recent = &history[history.len().saturating_sub(LAG_RUNS)..];
            median(recent.iter().map(|&p| p as f64).collect()).round() as i64
        });
        let mut flags = Vec::new();
        if r.quarantine_rate() > rules.quarantine_max {
            flags.push(Flag::QuarantineRate);
        }
        if let (Some(lag), Some(base)) = (r.arrival_lag, baseline) {
            if lag.p95_us as f64 > rules.lag_factor * base.max(rules.lag_floor_us) as f64 {
                flags.push(Flag::LagJump);
            }
        }
        if let Some(lag) = r.arrival_lag {
            history.push(lag.p95_us);
        }
        let started = time::parse_timestamp(&r.started_at).unwrap_or(Micros::MIN);
        if shown_kind(r.kind) && filter.since.is_none_or(|s| started >= s) {
            out_runs.push(RunQuality {
                run: r.run,
                kind: r.kind,
                file: r.file.clone(),
                started_at: r.started_at.clone(),
                finished_at: r.finished_at.clone(),
                rows: r.rows,
                accepted: r.accepted,
                duplicates: r.duplicates,
                quarantined: r.quarantined,
                quarantine_rate: r.quarantine_rate(),
                missing_share: r.missing_shares(),
                arrival_lag: r.arrival_lag,
                lag_baseline_us: baseline,
                flags,
            });
        }
    }
    let mut days = Vec::new();
    for (kind, counts) in per_day(runs) {
        if shown_kind(kind) {
            days.extend(volume_flags(kind, &counts, rules, filter.since));
        }
    }
    Ok(QualityReport {
        rules: rules.clone(),
        filter: filter.clone(),
        runs: out_runs,
        days,
    })
}

/// Events per day number, per kind, summed over runs.
fn per_day(runs: &[IngestRun]) -> BTreeMap<Kind, BTreeMap<i64, u64>> {
    let mut out: BTreeMap<Kind, BTreeMap<i64, u64>> = BTreeMap::new();
    for r in runs {
        let days = out.entry(r.kind).or_default();
        for (label, n) in &r.per_day {
            // Labels were written by `day_label`; one that does not parse is skipped, not fatal.
            if let Ok(t) = time::parse_timestamp(label) {
                *days.entry(t.div_euclid(MICROS_PER_DAY)).or_default() += n;
            }
        }
    }
    out
}

/// One row per day from the kind's first to its last event-day, with the volume band.
fn volume_flags(kind: Kind, counts: &BTreeMap<i64, u64>, rules: &Rules, since: Option<Micros>) -> Vec<DayVolume> {
    let (Some(&first), Some(&last)) = (counts.keys().next(), counts.keys().next_back()) else {
        return Vec::new();
    };
    let series: Vec<f64> = (first..=last)
        .map(|d| counts.get(&d).copied().unwrap_or(0) as f64)
        .collect();
    let mut out = Vec::new();
    for (i, &events) in series.iter().enumerate() {
        let day = first + i as i64;
        if since.is_some_and(|s| (day + 1) * MICROS_PER_DAY <= s) {
            continue;
        }
        let window = &series[i.saturating_sub(rules.volume_window_days)..i];
        let band = (window.len() >= rules.volume_min_history).then(|| {
            let m = median(window.to_vec());
            let mad = median(window.iter().map(|x| (x - m).abs()).collect());
            let width = rules.volume_k * (1.4826 * mad).max(m.sqrt()).max(1.0);
            [m - width, m + width]
        });
        out.push(DayVolume {
            day: day_label(day),
            kind,
            events: events as u64,
            band,
            flagged: band.is_some_and(|[lo, hi]| events < lo || events > hi),
        });
    }
    out
}

/// Stores `report` as an artifact of kind [`KIND`]; (hash, newly stored).
pub fn store_report(store: &Store, report: &QualityReport) -> Result<(ArtifactHash, bool), QualityError> {
    let as_of = report
        .runs
        .iter()
        .filter_map(|r| time::parse_timestamp(&r.finished_at).ok())
        .max()
        .unwrap_or(0);
    let artifact = NewArtifact {
        kind: KIND.into(),
        schema: SCHEMA,
        as_of,
        parents: Vec::new(),
        body: serde_json::to_vec(report)?,
        created_at: time::now(),
        provenance: Vec::new(),
    };
    Ok(store.artifacts().put(artifact)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use cis_ingest::source::Format;

    fn run(id: u64, rows: u64, quarantined: u64, p95_s: Option<i64>, per_day: &[(&str, u64)]) -> IngestRun {
        IngestRun {
            run: id,
            kind: Kind::Order,
            format: Format::Csv,
            file: format!("f{id}.csv"),
            file_hash: String::new(),
            recorded_at: "now".into(),
            started_at: format!("2024-02-{:02}T00:00:00Z", id.min(28)),
            finished_at: format!("2024-02-{:02}T00:01:00Z", id.min(28)),
            lines: rows,
            blank: 0,
            rows,
            accepted: rows - quarantined,
            duplicates: 0,
            quarantined,
            stopped: None,
            head_before: String::new(),
            head_after: String::new(),
            batches: vec![],
            dropped_columns: vec![],
            profiled: rows - quarantined,
            missing: BTreeMap::new(),
            arrival_lag: p95_s.map(|p| Lag {
                median_us: p * 500_000,
                p95_us: p * 1_000_000,
                max_us: p * 2_000_000,
            }),
            per_day: per_day.iter().map(|(d, n)| (d.to_string(), *n)).collect(),
        }
    }

    fn flags(runs: &[IngestRun]) -> BTreeMap<Flag, usize> {
        build(runs, &Filter::default(), &Rules::default())
            .expect("report")
            .flag_counts()
    }

    #[test]
    fn quarantine_rate_flags_above_the_threshold_only() {
        let ok = run(1, 1000, 10, None, &[]);
        let bad = run(2, 1000, 11, None, &[]);
        assert_eq!(
            flags(std::slice::from_ref(&ok))[&Flag::QuarantineRate],
            0,
            "exactly 1 % is allowed"
        );
        assert_eq!(flags(&[ok, bad])[&Flag::QuarantineRate], 1);
    }

    #[test]
    fn lag_jump_needs_history_and_a_threefold_p95() {
        // Baseline: median p95 of 100, 120, 110 s = 110 s; 3 × 110 = 330 s.
        let base: Vec<IngestRun> = [100, 120, 110]
            .iter()
            .zip(1..)
            .map(|(p, i)| run(i, 10, 0, Some(*p), &[]))
            .collect();
        let mut calm = base.clone();
        calm.push(run(4, 10, 0, Some(330), &[]));
        assert_eq!(flags(&calm)[&Flag::LagJump], 0);
        let mut jump = base.clone();
        jump.push(run(4, 10, 0, Some(331), &[]));
        assert_eq!(flags(&jump)[&Flag::LagJump], 1);
        // Two runs of history are not enough, whatever the jump.
        assert_eq!(
            flags(&[base[0].clone(), base[1].clone(), run(3, 10, 0, Some(9999), &[])])[&Flag::LagJump],
            0
        );
        // A backfill (lag 0) then a feed 2 minutes late: below the 60 s floor × 3.
        let mut backfill: Vec<IngestRun> = (1..=3).map(|i| run(i, 10, 0, Some(0), &[])).collect();
        backfill.push(run(4, 10, 0, Some(120), &[]));
        assert_eq!(flags(&backfill)[&Flag::LagJump], 0);
    }

    #[test]
    fn volume_band_is_median_plus_minus_k_robust_sigma() {
        // Ten days of 100 then one day of 141 and one of 140: MAD 0, √100 = 10, band 100 ± 40.
        let mut days: Vec<(String, u64)> = (1..=10).map(|d| (format!("2024-01-{d:02}"), 100)).collect();
        days.push(("2024-01-11".into(), 140));
        days.push(("2024-01-12".into(), 141));
        let refs: Vec<(&str, u64)> = days.iter().map(|(d, n)| (d.as_str(), *n)).collect();
        let report = build(&[run(1, 10, 0, None, &refs)], &Filter::default(), &Rules::default()).expect("report");
        let flagged: Vec<&str> = report
            .days
            .iter()
            .filter(|d| d.flagged)
            .map(|d| d.day.as_str())
            .collect();
        assert_eq!(flagged, ["2024-01-12"]);
        assert_eq!(report.days[10].band, Some([60.0, 140.0]));
        assert_eq!(report.days[6].band, None, "six previous days are not enough history");
    }

    #[test]
    fn a_gap_day_counts_as_zero_and_is_flagged() {
        let mut days: Vec<(String, u64)> = (1..=9).map(|d| (format!("2024-01-{d:02}"), 50)).collect();
        days.push(("2024-01-11".into(), 50));
        let refs: Vec<(&str, u64)> = days.iter().map(|(d, n)| (d.as_str(), *n)).collect();
        let report = build(&[run(1, 10, 0, None, &refs)], &Filter::default(), &Rules::default()).expect("report");
        let gap = report
            .days
            .iter()
            .find(|d| d.day == "2024-01-10")
            .expect("gap day listed");
        assert_eq!((gap.events, gap.flagged), (0, true));
    }

    #[test]
    fn since_hides_rows_but_keeps_their_history() {
        let days: Vec<(String, u64)> = (1..=12).map(|d| (format!("2024-01-{d:02}"), 100)).collect();
        let refs: Vec<(&str, u64)> = days.iter().map(|(d, n)| (d.as_str(), *n)).collect();
        let filter = Filter {
            since: Some(time::parse_timestamp("2024-01-12").expect("t")),
            kind: None,
        };
        let report = build(&[run(1, 10, 0, None, &refs)], &filter, &Rules::default()).expect("report");
        assert_eq!(report.days.len(), 1);
        assert!(
            report.days[0].band.is_some(),
            "the band still learns from the hidden days"
        );
        assert_eq!(report.runs.len(), 1, "the run started after --since");
        let later = Filter {
            since: Some(time::parse_timestamp("2024-03-01").expect("t")),
            kind: None,
        };
        let report = build(&[run(1, 10, 0, None, &refs)], &later, &Rules::default()).expect("report");
        assert!(report.runs.is_empty() && report.days.is_empty());
    }

    #[test]
    fn bad_rules_are_errors() {
        let rules = Rules {
            quarantine_max: 1.5,
            ..Rules::default()
        };
        assert!(matches!(
            build(&[], &Filter::default(), &rules),
            Err(QualityError::Rule(_))
        ));
    }
}
