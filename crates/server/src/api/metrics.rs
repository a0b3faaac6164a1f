//! Request counters and latency histograms, rendered in the Prometheus text format (0.0.4),
//! and the data-quality and drift gauges ([`monitor_gauges`]).

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::http::Method;
use cis_storage::{ArtifactHash, Store};

use crate::api::AppError;
use cis_core::time::Timestamp;
use cis_features::snapshot;
use cis_ingest::records;
use cis_ops::monitor::drift::{self, DriftError, DriftReport};
use cis_ops::monitor::quality;

/// Upper bounds of the latency histogram's buckets, in seconds.
pub const BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

#[derive(Debug, Clone, Default)]
struct Series {
    count: u64,
    sum_seconds: f64,
    /// Non-cumulative counts per bucket; the last slot is above every bound.
    buckets: [u64; BUCKETS.len() + 1],
}

/// Route (the matched pattern, e.g. `/artifacts/{hash}`) → (method, status) → series.
type Table = HashMap<String, HashMap<(Method, u16), Series>>;

pub struct Metrics {
    table: Mutex<Table>,
    started: Instant,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            table: Mutex::new(HashMap::new()),
            started: Instant::now(),
        }
    }
}

/// A gauge rendered after the request series. Gauges sharing a name must be adjacent and
/// differ in their labels; the first of them carries the help text.
#[derive(Debug, Clone)]
pub struct Gauge {
    pub name: &'static str,
    pub help: &'static str,
    pub labels: Vec<(&'static str, String)>,
    pub value: f64,
}

fn escape(label: &str) -> String {
    label.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

impl Metrics {
    pub fn observe(&self, route: &str, method: &Method, status: u16, seconds: f64) {
        let mut table = self.table.lock().unwrap_or_else(|p| p.into_inner());
        let by_status = match table.get_mut(route) {
            Some(m) => m,
            None => table.entry(route.to_string()).or_default(),
        };
        let s = by_status.entry((method.clone(), status)).or_default();
        s.count += 1;
        s.sum_seconds += seconds;
        let i = BUCKETS.iter().position(|&b| seconds <= b).unwrap_or(BUCKETS.len());
        s.buckets[i] += 1;
    }

    /// How many requests were counted for a route, all methods and statuses.
    pub fn count(&self, route: &str) -> u64 {
        let table = self.table.lock().unwrap_or_else(|p| p.into_inner());
        table.get(route).map_or(0, |m| m.values().map(|s| s.count).sum())
    }

    pub fn uptime_seconds(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }

    /// The whole exposition: request counters, latency histograms, then `gauges`.
    pub fn render(&self, gauges: &[Gauge]) -> String {
        let mut rows: Vec<(String, String, u16, Series)> = {
            let table = self.table.lock().unwrap_or_else(|p| p.into_inner());
            table
                .iter()
                .flat_map(|(route, m)| {
                    m.iter()
                        .map(|((method, status), s)| (route.clone(), method.to_string(), *status, s.clone()))
                })
                .collect()
        };
        rows.sort_by(|a, b| (&a.0, &a.1, a.2).cmp(&(&b.0, &b.1, b.2)));
        let mut out = String::with_capacity(4096 + rows.len() * 2048);
        out.push_str("# HELP cis_http_requests_total HTTP requests answered, by route pattern, method and status.\n");
        out.push_str("# TYPE cis_http_requests_total counter\n");
        for (route, method, status, s) in &rows {
            let _ = writeln!(
                out,
                "cis_http_requests_total{{route=\"{}\",method=\"{}\",status=\"{status}\"}} {}",
                escape(route),
                escape(method),
                s.count
            );
        }
        out.push_str("# HELP cis_http_request_duration_seconds Time from receiving a request to its response head.\n");
        out.push_str("# TYPE cis_http_request_duration_seconds histogram\n");
        for (route, method, status, s) in &rows {
            let labels = format!(
                "route=\"{}\",method=\"{}\",status=\"{status}\"",
                escape(route),
                escape(method)
            );
            let mut cumulative = 0;
            for (bound, n) in BUCKETS.iter().zip(&s.buckets) {
                cumulative += n;
                let _ = writeln!(
                    out,
                    "cis_http_request_duration_seconds_bucket{{{labels},le=\"{bound}\"}} {cumulative}"
                );
            }
            let _ = writeln!(
                out,
                "cis_http_request_duration_seconds_bucket{{{labels},le=\"+Inf\"}} {}",
                s.count
            );
            let _ = writeln!(
                out,
                "cis_http_request_duration_seconds_sum{{{labels}}} {}",
                s.sum_seconds
            );
            let _ = writeln!(out, "cis_http_request_duration_seconds_count{{{labels}}} {}", s.count);
        }
        let mut previous = "";
        for g in gauges {
            if g.name != previous {
                let _ = writeln!(out, "# HELP {} {}\n# TYPE {} gauge", g.name, g.help, g.name);
                previous = g.name;
            }
            let labels: Vec<String> = g.labels.iter().map(|(k, v)| format!("{k}=\"{}\"", escape(v))).collect();
            let _ = if labels.is_empty() {
                writeln!(out, "{} {}", g.name, g.value)
            } else {
                writeln!(out, "{}{{{}}} {}", g.name, labels.join(","), g.value)
            };
        }
        out
    }
}

/// The store's run-journal digest and the quality gauges derived from it (a store companion).
#[derive(Default)]
struct QualityMemo(Mutex<Option<([u8; 32], Vec<Gauge>)>>);

/// The drift reports of the store's snapshot pairs, by the pair's hashes (a store companion:
/// a hash names one content only within its store, erasure redacts a snapshot in place).
#[derive(Default)]
struct DriftMemo(Mutex<HashMap<[ArtifactHash; 2], Arc<DriftReport>>>);

/// Data quality (latest run and latest event-day of each kind, flag counts over the whole
/// history) and PSI per feature for the latest snapshot pair. A scrape reads the run journal
/// and the snapshot index; the report is rebuilt only when a run was recorded (a digest of the
/// journal keys the store's memo) and the drift comparison only for a new pair
/// ([`latest_drift`]). Blocking.
pub fn monitor_gauges(store: &Store) -> Result<Vec<Gauge>, AppError> {
    let memo = &store.companion::<QualityMemo>().0;
    let digest = records::runs_digest(store).map_err(AppError::internal)?;
    let known = match memo.lock().unwrap_or_else(|p| p.into_inner()).as_ref() {
        Some((d, g)) if *d == digest => Some(g.clone()),
        _ => None,
    };
    let mut g = match known {
        Some(g) => g,
        None => {
            let g = quality_gauges(store)?;
            *memo.lock().unwrap_or_else(|p| p.into_inner()) = Some((digest, g.clone()));
            g
        }
    };
    if let Some(report) = latest_drift(store, Timestamp::MAX).map_err(AppError::internal)? {
        g.extend(report.features.iter().map(|f| Gauge {
            name: "cis_feature_psi",
            help: "Population stability index of each feature between the latest two snapshots.",
            labels: vec![("feature", f.feature.clone())],
            value: f.psi,
        }));
    }
    Ok(g)
}

/// The drift report of the latest snapshot pair as of `as_of` ([`drift::latest_pair`]),
/// memoised by the pair's hashes: comparing two 100k-customer snapshots takes seconds, and
/// snapshots are immutable. Blocking.
pub fn latest_drift(store: &Store, as_of: Timestamp) -> Result<Option<Arc<DriftReport>>, DriftError> {
    let memo = &store.companion::<DriftMemo>().0;
    let snaps = store.artifacts().list(snapshot::KIND, as_of.micros())?;
    let [.., a, b] = snaps.as_slice() else {
        return Ok(None);
    };
    let key = [a.hash, b.hash];
    if let Some(r) = memo.lock().unwrap_or_else(|p| p.into_inner()).get(&key) {
        return Ok(Some(r.clone()));
    }
    let Some(report) = drift::latest_pair(store, as_of)? else {
        return Ok(None);
    };
    let report = Arc::new(report);
    memo.lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(key, report.clone());
    Ok(Some(report))
}

fn quality_gauges(store: &Store) -> Result<Vec<Gauge>, AppError> {
    let report =
        quality::report(store, &quality::Filter::default(), &quality::Rules::default()).map_err(AppError::internal)?;
    let latest = report.latest_runs();
    let kind = |k: cis_core::event::Kind| ("kind", k.name().to_string());
    let mut g: Vec<Gauge> = latest
        .values()
        .map(|r| Gauge {
            name: "cis_ingest_quarantine_rate",
            help: "Quarantined rows over rows read in the latest ingest run of each kind.",
            labels: vec![kind(r.kind)],
            value: r.quarantine_rate,
        })
        .collect();
    for r in latest.values() {
        let Some(lag) = r.arrival_lag else { continue };
        for (q, us) in [("0.5", lag.median_us), ("0.95", lag.p95_us), ("1", lag.max_us)] {
            g.push(Gauge {
                name: "cis_ingest_arrival_lag_seconds",
                help: "Arrival lag (recorded_at - event_time) of the latest ingest run of each kind, by quantile.",
                labels: vec![kind(r.kind), ("quantile", q.into())],
                value: us as f64 / 1e6,
            });
        }
    }
    g.extend(report.latest_days().values().map(|d| Gauge {
        name: "cis_events_latest_day",
        help: "Events on the latest event-day of each kind.",
        labels: vec![kind(d.kind), ("day", d.day.clone())],
        value: d.events as f64,
    }));
    g.extend(report.flag_counts().into_iter().map(|(f, n)| Gauge {
        name: "cis_quality_flags",
        help: "Runs or days flagged by each data-quality rule over the whole history.",
        labels: vec![("flag", f.name().into())],
        value: n as f64,
    }));
    Ok(g)
}
