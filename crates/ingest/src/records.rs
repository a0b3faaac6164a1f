//! What an ingest run leaves behind besides events: its run record and its quarantine.
//! Both are JSON in storage journals (self-describing, so fields can be added later).
//!
//! A run record also profiles the data it brought ([`Profile`]): missing values per optional
//! field, arrival lag (`recorded_at − event_time`: median, p95, max) and events per event-day.
//! These cover the validated rows of every batch that added events to the log. A batch made
//! only of duplicates (a file delivered again) adds nothing, so a replay does not double a day's
//! volume; a batch mixing new and duplicate events counts all its rows, as the log does not say
//! which of them were new. Records written before these fields existed load with them empty.

use std::collections::BTreeMap;
use std::ops::ControlFlow;

use cis_storage::Store;
use serde::{Deserialize, Serialize};
use statrs::statistics::{Data, OrderStatistics};

use crate::source::{Format, Row};
use crate::{validate, IngestError};
use cis_core::event::Kind;
use cis_core::time::{self, Timestamp};

pub const RUNS: &str = "ingest_runs";
pub const QUARANTINE: &str = "quarantine";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IngestRun {
    pub run: u64,
    pub kind: Kind,
    pub format: Format,
    pub file: String,
    /// blake3 of the file's bytes.
    pub file_hash: String,
    pub recorded_at: String,
    pub started_at: String,
    pub finished_at: String,
    /// Physical lines read after the header (see [`crate::source`]): each is blank or
    /// one row, so `lines = blank + rows` and `rows = accepted + duplicates + quarantined` (for a
    /// run that was not stopped). For Parquet, its rows (none blank). Records written before
    /// this field existed load with 0.
    #[serde(default)]
    pub lines: u64,
    #[serde(default)]
    pub blank: u64,
    pub rows: u64,
    pub accepted: u64,
    pub duplicates: u64,
    pub quarantined: u64,
    /// Why the run stopped before the end of its input; `None` for a run that read it all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stopped: Option<String>,
    pub head_before: String,
    pub head_after: String,
    pub batches: Vec<u64>,
    pub dropped_columns: Vec<String>,
    /// Events the figures below describe (see the module doc).
    #[serde(default)]
    pub profiled: u64,
    /// Per optional field of the run's kind: how many profiled events lacked it.
    #[serde(default)]
    pub missing: BTreeMap<String, u64>,
    /// `None` when nothing was profiled.
    #[serde(default)]
    pub arrival_lag: Option<Lag>,
    /// Profiled events per event-day (UTC, `YYYY-MM-DD`).
    #[serde(default)]
    pub per_day: BTreeMap<String, u64>,
}

impl IngestRun {
    /// Share of profiled events lacking each optional field (0 when nothing was profiled).
    pub fn missing_shares(&self) -> BTreeMap<String, f64> {
        let n = self.profiled.max(1) as f64;
        self.missing.iter().map(|(f, m)| (f.clone(), *m as f64 / n)).collect()
    }

    /// Quarantined rows over rows read (0 for an empty file).
    pub fn quarantine_rate(&self) -> f64 {
        self.quarantined as f64 / self.rows.max(1) as f64
    }
}

/// Arrival lag quantiles in whole microseconds (R-8 estimates from `statrs`, rounded).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lag {
    pub median_us: i64,
    pub p95_us: i64,
    pub max_us: i64,
}

/// A run's quality figures as they accumulate: one per chunk of rows, merged into the run's
/// once the chunk's batch is committed.
#[derive(Debug)]
pub struct Profile {
    kind: Kind,
    events: u64,
    /// Indexed like [`validate::optional_columns`] of `kind`.
    missing: Vec<u64>,
    lags: Vec<i64>,
    /// Day number (days since the epoch) → events.
    days: BTreeMap<i64, u64>,
}

impl Profile {
    pub fn new(kind: Kind) -> Profile {
        Profile {
            kind,
            events: 0,
            missing: vec![0; validate::optional_columns(kind).len()],
            lags: Vec::new(),
            days: BTreeMap::new(),
        }
    }

    /// Counts one validated row and the event made of it.
    pub fn note(&mut self, row: &Row, event_time: Timestamp, recorded_at: Timestamp) {
        self.events += 1;
        for (m, field) in self.missing.iter_mut().zip(validate::optional_columns(self.kind)) {
            *m += u64::from(row.get(field).is_none());
        }
        self.lags.push(recorded_at - event_time);
        *self.days.entry(event_time.day()).or_default() += 1;
    }

    pub fn merge(&mut self, other: Profile) {
        self.events += other.events;
        for (m, o) in self.missing.iter_mut().zip(other.missing) {
            *m += o;
        }
        self.lags.extend(other.lags);
        for (day, n) in other.days {
            *self.days.entry(day).or_default() += n;
        }
    }

    /// Writes the figures into `run`.
    pub fn finish(self, run: &mut IngestRun) {
        run.profiled = self.events;
        run.missing = validate::optional_columns(self.kind)
            .iter()
            .map(|f| f.to_string())
            .zip(self.missing)
            .collect();
        run.arrival_lag = self.lags.iter().max().copied().map(|max_us| {
            // Lags are whole µs below 2^53, so the f64 conversion is exact.
            let mut data = Data::new(self.lags.iter().map(|&l| l as f64).collect::<Vec<f64>>());
            Lag {
                median_us: data.median().round() as i64,
                p95_us: data.quantile(0.95).round() as i64,
                max_us,
            }
        });
        run.per_day = self.days.into_iter().map(|(d, n)| (day_label(d), n)).collect();
    }
}

/// `YYYY-MM-DD` of a day number.
pub fn day_label(day: i64) -> String {
    time::format(Timestamp::from_day(day)).chars().take(10).collect()
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Quarantined {
    pub run: u64,
    /// 1, 2, 3 … within the run: the record's key, unique whatever the line numbers. `None` for
    /// records written before it existed, which are keyed by their line.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
    pub file: String,
    pub line: u64,
    pub field: String,
    pub reason: String,
    /// The row as read, with personal-data fields redacted; empty when the row cannot be aligned
    /// with a header that has personal-data columns (so nothing of theirs is ever stored).
    pub raw: String,
    /// The customer id the row names, when it could be read (erasure finds the row by it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub customer: Option<String>,
}

fn key(q: &Quarantined) -> [u8; 16] {
    let mut k = [0u8; 16];
    k[..8].copy_from_slice(&q.run.to_be_bytes());
    k[8..].copy_from_slice(&q.seq.unwrap_or(q.line).to_be_bytes());
    k
}

fn put<T: Serialize>(store: &Store, journal: &'static str, k: &[u8], v: &T) -> Result<(), IngestError> {
    let bytes = serde_json::to_vec(v).map_err(|e| IngestError::Record(e.to_string()))?;
    Ok(store.journal_put(journal, k, &bytes)?)
}

fn list<T: for<'de> Deserialize<'de>>(
    store: &Store,
    journal: &'static str,
    prefix: &[u8],
) -> Result<Vec<T>, IngestError> {
    let mut out = Vec::new();
    store.journal_visit(journal, prefix, |_, v| {
        out.push(serde_json::from_slice(v).map_err(|e| IngestError::Record(e.to_string()))?);
        Ok::<_, IngestError>(ControlFlow::Continue(()))
    })?;
    Ok(out)
}

/// Written with the batch it belongs to, so it is durable when the batch is.
pub fn quarantine(store: &Store, q: &Quarantined) -> Result<(), IngestError> {
    put(store, QUARANTINE, &key(q), q)
}

/// Removes a quarantined row (erasure of the customer it names). Flushed by the caller.
pub fn remove_quarantined(store: &Store, q: &Quarantined) -> Result<(), IngestError> {
    Ok(store.journal_remove(QUARANTINE, &key(q))?)
}

pub fn record_run(store: &Store, run: &IngestRun) -> Result<(), IngestError> {
    put(store, RUNS, &run.run.to_be_bytes(), run)?;
    Ok(store.flush()?)
}

pub fn runs(store: &Store) -> Result<Vec<IngestRun>, IngestError> {
    list(store, RUNS, &[])
}

/// File hash → the first run of `kind` that read all of that file (not stopped): what an
/// ingest of many files skips.
pub fn completed_by_hash(store: &Store, kind: Kind) -> Result<BTreeMap<String, u64>, IngestError> {
    let mut out = BTreeMap::new();
    for r in runs(store)? {
        if r.kind == kind && r.stopped.is_none() {
            out.entry(r.file_hash).or_insert(r.run);
        }
    }
    Ok(out)
}

/// A digest of every run record: it changes whenever a run is recorded, so readers can memoise
/// what they derive from [`runs`] without parsing them.
pub fn runs_digest(store: &Store) -> Result<[u8; 32], IngestError> {
    let mut h = blake3::Hasher::new();
    store.journal_visit(RUNS, &[], |k, v| {
        h.update(&(k.len() as u64).to_be_bytes());
        h.update(k);
        h.update(&(v.len() as u64).to_be_bytes());
        h.update(v);
        Ok::<_, IngestError>(ControlFlow::Continue(()))
    })?;
    Ok(*h.finalize().as_bytes())
}

pub fn quarantined(store: &Store, run: Option<u64>) -> Result<Vec<Quarantined>, IngestError> {
    let prefix = run.map(u64::to_be_bytes);
    list(store, QUARANTINE, prefix.as_ref().map_or(&[][..], |p| &p[..]))
}
