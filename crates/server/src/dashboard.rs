//! The "Customer Health Overview" dashboard: one server-rendered HTML page with inline SVG
//! charts and no external resources (the network may be closed).
//!
//! [`gather`] reads what the page shows from the store as of a time; [`render`] is a pure
//! function of that data, so the page can be tested without a server. [`routes`] serves it;
//! a browser signs in through [`sign_in`] (no token ever goes in a URL).

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write;
use std::sync::{Arc, Mutex};

use axum::extract::{Query, State};
use axum::http::{header, HeaderMap};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use cis_storage::{hex, ArtifactHash, Store};
use serde::Deserialize;

use crate::api::{authorize, bearer, blocking, metrics, AppError, AppState, ExtraRoutes};

use cis_core::event::Kind;
use cis_core::time::{self, Micros};
use cis_ingest::records;
use cis_models::scores::{self, ScoreSet};
use cis_models::ModelError;
use cis_ops::monitor::drift::{self, DriftError, DriftReport};
use cis_ops::monitor::quality::{self, DayVolume, QualityError, QualityReport};

pub mod sign_in;

/// At most this many score runs are drawn in the risk trend.
const TREND_RUNS: usize = 12;
/// At most this many ingest runs, and days per kind, are drawn in the data-quality charts.
const QUALITY_RUNS: usize = 20;
const VOLUME_DAYS: usize = 90;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DashboardError {
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error(transparent)]
    Quality(#[from] QualityError),
    #[error(transparent)]
    Drift(#[from] DriftError),
    #[error(transparent)]
    Storage(#[from] cis_storage::StorageError),
    /// A thread panicked while it held the memo of mean risks.
    #[error("dashboard memo poisoned")]
    Poisoned,
}

#[derive(Debug, Clone, PartialEq)]
pub struct DashboardData {
    pub as_of: Micros,
    /// The latest score run as of T: (hash, scores).
    pub latest: Option<(String, ScoreSet)>,
    /// (as-of, mean risk) of the score runs up to T, oldest first.
    pub trend: Vec<(Micros, f64)>,
    /// Every ingest run and event-day, flagged with the default rules.
    pub quality: QualityReport,
    /// PSI per feature between the latest two snapshots as of T.
    pub drift: Option<Arc<DriftReport>>,
}

/// A customer's risk: the churn probability, or 1 − P(alive) when no churn model scored it.
fn risk(r: &scores::ScoreRow) -> Option<f64> {
    r.churn_probability.or(r.p_alive.map(|p| 1.0 - p))
}

/// Mean risk of each score run of a store, by artifact hash (a store companion: a hash names
/// one content only within its store). Artifacts are immutable while a server holds the store,
/// so an entry never goes stale; without it every page load re-parsed up to [`TREND_RUNS`]
/// whole score sets.
#[derive(Default)]
struct MeanRisks(Mutex<HashMap<ArtifactHash, Option<f64>>>);

fn mean_risk(set: &ScoreSet) -> Option<f64> {
    let risks: Vec<f64> = set.rows.iter().filter_map(risk).collect();
    (!risks.is_empty()).then(|| risks.iter().sum::<f64>() / risks.len() as f64)
}

pub fn gather(store: &Store, as_of: Micros) -> Result<DashboardData, DashboardError> {
    let refs = store.artifacts().list(scores::KIND, as_of)?;
    let mut trend = Vec::new();
    let mut latest = None;
    let memo = &store.companion::<MeanRisks>().0;
    for (i, r) in refs.iter().enumerate().skip(refs.len().saturating_sub(TREND_RUNS)) {
        let is_latest = i + 1 == refs.len();
        let known = memo.lock().map_err(|_| DashboardError::Poisoned)?.get(&r.hash).copied();
        let mean = match (known, is_latest) {
            (Some(mean), false) => mean,
            _ => {
                let (_, set) = scores::load_scores(store, &r.hash)?;
                let mean = mean_risk(&set);
                memo.lock().map_err(|_| DashboardError::Poisoned)?.insert(r.hash, mean);
                if is_latest {
                    latest = Some((hex(&r.hash), set));
                }
                mean
            }
        };
        if let Some(m) = mean {
            trend.push((r.as_of, m));
        }
    }
    let runs = records::runs(store).map_err(QualityError::from)?;
    Ok(DashboardData {
        as_of,
        latest,
        trend,
        quality: quality::build(&runs, &quality::Filter::default(), &quality::Rules::default())?,
        drift: metrics::latest_drift(store, as_of)?,
    })
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

const W: f64 = 560.0;
const H: f64 = 220.0;
const PAD: f64 = 36.0;

/// A vertical bar chart; `id` names the chart for tests and the browser check. `marks` are
/// labelled horizontal reference lines (thresholds).
fn bars(id: &str, title: &str, items: &[(String, f64)], marks: &[(f64, &str)], fmt: impl Fn(f64) -> String) -> String {
    let mut svg = format!(
        r#"<figure><figcaption>{}</figcaption><svg id="{id}" class="chart" viewBox="0 0 {W} {H}" role="img" aria-label="{}">"#,
        esc(title),
        esc(title)
    );
    let max = items
        .iter()
        .map(|i| i.1)
        .chain(marks.iter().map(|m| m.0))
        .fold(0.0f64, f64::max)
        .max(1e-9);
    for (v, label) in marks {
        let y = H - PAD - (H - 2.0 * PAD) * v / max;
        let _ = write!(
            svg,
            r#"<line class="mark" x1="{PAD}" x2="{:.1}" y1="{y:.1}" y2="{y:.1}"/><text class="mark-label" x="{:.1}" y="{:.1}">{}</text>"#,
            W - PAD,
            W - PAD,
            y - 3.0,
            esc(label)
        );
    }
    let n = items.len().max(1) as f64;
    let slot = (W - 2.0 * PAD) / n;
    for (i, (label, v)) in items.iter().enumerate() {
        let h = (H - 2.0 * PAD) * (v / max).max(0.0);
        let x = PAD + i as f64 * slot + slot * 0.1;
        let _ = write!(
            svg,
            r#"<rect class="bar" x="{x:.1}" y="{:.1}" width="{:.1}" height="{h:.1}"><title>{}: {}</title></rect><text x="{:.1}" y="{:.1}" class="label">{}</text><text x="{:.1}" y="{:.1}" class="value">{}</text>"#,
            H - PAD - h,
            slot * 0.8,
            esc(label),
            fmt(*v),
            x + slot * 0.4,
            H - PAD + 14.0,
            esc(label),
            x + slot * 0.4,
            H - PAD - h - 4.0,
            fmt(*v)
        );
    }
    svg.push_str("</svg></figure>");
    svg
}

fn line(id: &str, title: &str, points: &[(String, f64)]) -> String {
    let mut svg = format!(
        r#"<figure><figcaption>{}</figcaption><svg id="{id}" class="chart" viewBox="0 0 {W} {H}" role="img" aria-label="{}">"#,
        esc(title),
        esc(title)
    );
    let n = points.len();
    let xs = |i: usize| {
        if n <= 1 {
            W / 2.0
        } else {
            PAD + (W - 2.0 * PAD) * i as f64 / (n - 1) as f64
        }
    };
    let ys = |v: f64| H - PAD - (H - 2.0 * PAD) * v.clamp(0.0, 1.0);
    let path: Vec<String> = points
        .iter()
        .enumerate()
        .map(|(i, p)| format!("{:.1},{:.1}", xs(i), ys(p.1)))
        .collect();
    let _ = write!(
        svg,
        r#"<polyline class="trend" fill="none" points="{}"/>"#,
        path.join(" ")
    );
    for (i, (label, v)) in points.iter().enumerate() {
        let _ = write!(
            svg,
            r#"<circle class="point" cx="{:.1}" cy="{:.1}" r="4"><title>{}: {v:.3}</title></circle><text x="{:.1}" y="{:.1}" class="value">{v:.3}</text><text x="{:.1}" y="{:.1}" class="label">{}</text>"#,
            xs(i),
            ys(*v),
            esc(label),
            xs(i),
            ys(*v) - 8.0,
            xs(i),
            H - PAD + 14.0,
            esc(label)
        );
    }
    svg.push_str("</svg></figure>");
    svg
}

fn empty(id: &str, title: &str, why: &str) -> String {
    format!(
        r#"<figure><figcaption>{}</figcaption><p id="{id}" class="empty">{}</p></figure>"#,
        esc(title),
        esc(why)
    )
}

/// "Data quality and drift": quarantine rate per run, volume per day with its band
/// and flags, PSI per feature with the verdict thresholds.
fn quality_section(d: &DashboardData) -> String {
    let mut out = String::from(r#"<h2>Data quality and drift</h2><section class="grid" id="quality-drift">"#);
    let q = &d.quality;
    let runs = &q.runs[q.runs.len().saturating_sub(QUALITY_RUNS)..];
    if runs.is_empty() {
        out.push_str(&empty(
            "quarantine-rate",
            "Quarantine rate per run",
            "No ingest run yet.",
        ));
    } else {
        let rates: Vec<(String, f64)> = runs
            .iter()
            .map(|r| (format!("run {}", r.run), r.quarantine_rate * 100.0))
            .collect();
        let limit = q.rules.quarantine_max * 100.0;
        out.push_str(&bars(
            "quarantine-rate",
            "Quarantine rate per ingest run (%)",
            &rates,
            &[(limit, &format!("flag above {limit} %"))],
            |v| format!("{v:.1}"),
        ));
    }
    let mut by_kind: BTreeMap<Kind, Vec<&DayVolume>> = BTreeMap::new();
    for day in q.days.iter().filter(|v| v.day <= day_of(d.as_of)) {
        by_kind.entry(day.kind).or_default().push(day);
    }
    if by_kind.is_empty() {
        out.push_str(&empty("volume-per-day", "Events per day", "No events up to this date."));
    }
    for (kind, days) in &by_kind {
        out.push_str(&volume(*kind, &days[days.len().saturating_sub(VOLUME_DAYS)..]));
    }
    match &d.drift {
        Some(report) if !report.features.is_empty() => out.push_str(&psi_chart(report)),
        _ => out.push_str(&empty(
            "psi-per-feature",
            "Feature drift (PSI)",
            "Fewer than two snapshots with shared features as of this date.",
        )),
    }
    out.push_str("</section>");
    out
}

fn day_of(t: Micros) -> String {
    time::format(t).chars().take(10).collect()
}

/// Daily events of one kind as a line, its learned band shaded and flagged days marked.
fn volume(kind: Kind, days: &[&DayVolume]) -> String {
    let title = format!("Events per day: {} (band and flags: volume rule)", kind.name());
    let mut svg = format!(
        r#"<figure><figcaption>{}</figcaption><svg id="volume-{}" class="chart" viewBox="0 0 {W} {H}" role="img" aria-label="{}">"#,
        esc(&title),
        kind.name(),
        esc(&title)
    );
    let max = days
        .iter()
        .map(|v| v.band.map_or(v.events as f64, |b| b[1].max(v.events as f64)))
        .fold(1.0f64, f64::max);
    let x = |i: usize| PAD + (W - 2.0 * PAD) * i as f64 / days.len().saturating_sub(1).max(1) as f64;
    let y = |v: f64| H - PAD - (H - 2.0 * PAD) * (v / max).clamp(0.0, 1.0);
    let banded: Vec<(usize, [f64; 2])> = days
        .iter()
        .enumerate()
        .filter_map(|(i, v)| v.band.map(|b| (i, b)))
        .collect();
    if !banded.is_empty() {
        let upper = banded.iter().map(|(i, b)| format!("{:.1},{:.1}", x(*i), y(b[1])));
        let lower = banded.iter().rev().map(|(i, b)| format!("{:.1},{:.1}", x(*i), y(b[0])));
        let _ = write!(
            svg,
            r#"<polygon class="band" points="{}"/>"#,
            upper.chain(lower).collect::<Vec<_>>().join(" ")
        );
    }
    let line: Vec<String> = days
        .iter()
        .enumerate()
        .map(|(i, v)| format!("{:.1},{:.1}", x(i), y(v.events as f64)))
        .collect();
    let _ = write!(
        svg,
        r#"<polyline class="volume" fill="none" points="{}"/>"#,
        line.join(" ")
    );
    for (i, v) in days.iter().enumerate().filter(|(_, v)| v.flagged) {
        let _ = write!(
            svg,
            r#"<circle class="flagged" cx="{:.1}" cy="{:.1}" r="4"><title>{}: {} events, outside the band</title></circle>"#,
            x(i),
            y(v.events as f64),
            esc(&v.day),
            v.events
        );
    }
    if let (Some(first), Some(last)) = (days.first(), days.last()) {
        let _ = write!(
            svg,
            r#"<text class="label" x="{PAD}" y="{:.1}">{}</text><text class="label" x="{:.1}" y="{:.1}">{}</text><text class="value" x="{PAD}" y="{:.1}">{max:.0}</text>"#,
            H - PAD + 14.0,
            esc(&first.day),
            W - PAD,
            H - PAD + 14.0,
            esc(&last.day),
            PAD - 6.0
        );
    }
    svg.push_str("</svg></figure>");
    svg
}

/// PSI per feature as horizontal bars, coloured by verdict, with the verdict thresholds drawn.
fn psi_chart(r: &DriftReport) -> String {
    const ROW: f64 = 14.0;
    const LABELS: f64 = 190.0;
    let h = 2.0 * PAD + ROW * r.features.len() as f64;
    let title = format!(
        "Feature drift: PSI from snapshot {} ({}) to {} ({})",
        &r.from[..12.min(r.from.len())],
        day_of(r.from_as_of),
        &r.to[..12.min(r.to.len())],
        day_of(r.to_as_of)
    );
    let mut svg = format!(
        r#"<figure><figcaption>{}</figcaption><svg id="psi-per-feature" class="chart" viewBox="0 0 {W} {h}" role="img" aria-label="{}">"#,
        esc(&title),
        esc(&title)
    );
    // The axis stops at PSI 1 so the thresholds stay readable; longer bars are cut there and
    // carry their value.
    let max = r
        .features
        .iter()
        .map(|f| f.psi)
        .fold(drift::PSI_SIGNIFICANT * 1.2, f64::max)
        .min(1.0);
    let x = |v: f64| LABELS + (W - LABELS - PAD) * (v / max).clamp(0.0, 1.0);
    for (i, f) in r.features.iter().enumerate() {
        let top = PAD + ROW * i as f64;
        let _ = write!(
            svg,
            r#"<text class="feature" x="{:.1}" y="{:.1}">{}</text><rect class="bar psi-{}" x="{LABELS}" y="{:.1}" width="{:.1}" height="{:.1}"><title>{}: PSI {:.4}, KS {:.3} ({})</title></rect><text class="psi" x="{:.1}" y="{:.1}">{:.3}</text>"#,
            LABELS - 6.0,
            top + ROW * 0.75,
            esc(&f.feature),
            f.verdict.name(),
            top + 1.0,
            x(f.psi) - LABELS,
            ROW - 2.0,
            esc(&f.feature),
            f.psi,
            f.ks,
            f.verdict.name(),
            x(f.psi) + 3.0,
            top + ROW * 0.75,
            f.psi
        );
    }
    let marks = [
        (drift::PSI_MODERATE, "moderate"),
        (drift::PSI_SIGNIFICANT, "significant"),
    ];
    for (row, (v, label)) in marks.into_iter().enumerate() {
        // One label line each, so that close thresholds do not overlap.
        let y = PAD - 14.0 + 12.0 * row as f64;
        let _ = write!(
            svg,
            r#"<line class="mark" x1="{:.1}" x2="{:.1}" y1="{:.1}" y2="{:.1}"/><text class="mark-label start" x="{:.1}" y="{y:.1}">{v} {label}</text>"#,
            x(v),
            x(v),
            y - 8.0,
            h - PAD,
            x(v) + 3.0
        );
    }
    svg.push_str("</svg></figure>");
    svg
}

/// The page. Its forms carry no credentials: the browser's session cookie does.
pub fn render(d: &DashboardData) -> String {
    let day = |t: Micros| time::format(t).chars().take(10).collect::<String>();
    let mut body = String::new();
    let _ = write!(
        body,
        r#"<header><h1>Customer Health Overview</h1><div class="actions"><form method="get" action="/dashboard"><label>As of <input type="date" name="as_of" value="{}"></label> <button type="submit">Show</button></form><form method="post" action="{}"><button type="submit">Sign out</button></form></div></header>"#,
        day(d.as_of),
        sign_in::SIGN_OUT
    );
    match &d.latest {
        None => body.push_str(&empty(
            "no-scores",
            "Scores",
            "No score run exists as of this date: run `cis score` first.",
        )),
        Some((hash, set)) => {
            let _ = write!(
                body,
                r#"<p class="meta">Scores <code>{}</code> as of {} for {} customers, from snapshot <code>{}</code>.</p><section class="grid">"#,
                esc(&hash[..16]),
                day(set.as_of),
                set.rows.len(),
                esc(&set.snapshot[..16.min(set.snapshot.len())])
            );
            let risks: Vec<f64> = set.rows.iter().filter_map(risk).collect();
            let mut hist = [0.0; 10];
            for r in &risks {
                hist[((r * 10.0) as usize).min(9)] += 1.0;
            }
            let label = if set.rows.iter().any(|r| r.churn_probability.is_some()) {
                "churn probability"
            } else {
                "1 − P(alive)"
            };
            body.push_str(&bars(
                "risk-distribution",
                &format!("Churn-risk distribution ({label})"),
                &hist
                    .iter()
                    .enumerate()
                    .map(|(i, c)| (format!("{:.1}", i as f64 / 10.0), *c))
                    .collect::<Vec<_>>(),
                &[],
                |v| format!("{v:.0}"),
            ));
            let mut segs: BTreeMap<&str, (f64, f64)> = BTreeMap::new();
            for r in &set.rows {
                if let Some(s) = &r.segment {
                    let e = segs.entry(s).or_default();
                    e.0 += 1.0;
                    e.1 += r.clv_12m.unwrap_or(0.0);
                }
            }
            if segs.is_empty() {
                body.push_str(&empty("segment-sizes", "Segments", "No segment model scored this run."));
            } else {
                body.push_str(&bars(
                    "segment-sizes",
                    "Segment sizes (customers)",
                    &segs.iter().map(|(k, v)| (k.to_string(), v.0)).collect::<Vec<_>>(),
                    &[],
                    |v| format!("{v:.0}"),
                ));
                body.push_str(&bars(
                    "segment-value",
                    "Segment value (12-month CLV)",
                    &segs.iter().map(|(k, v)| (k.to_string(), v.1)).collect::<Vec<_>>(),
                    &[],
                    |v| format!("{v:.0}"),
                ));
            }
            let mut clv: Vec<f64> = set.rows.iter().filter_map(|r| r.clv_12m).collect();
            clv.sort_by(|a, b| b.total_cmp(a));
            if clv.is_empty() {
                body.push_str(&empty("clv-deciles", "CLV by decile", "No CLV model scored this run."));
            } else {
                let deciles: Vec<(String, f64)> = (0..10)
                    .map(|i| {
                        let part = &clv[i * clv.len() / 10..(i + 1) * clv.len() / 10];
                        (
                            format!("D{}", i + 1),
                            part.iter().sum::<f64>() / part.len().max(1) as f64,
                        )
                    })
                    .collect();
                body.push_str(&bars(
                    "clv-deciles",
                    "Mean 12-month CLV by decile (D1 = most valuable)",
                    &deciles,
                    &[],
                    |v| format!("{v:.0}"),
                ));
            }
            let mut top: Vec<&scores::ScoreRow> = set
                .rows
                .iter()
                .filter(|r| risk(r).is_some_and(|x| x >= 0.5) && r.clv_12m.is_some())
                .collect();
            top.sort_by(|a, b| {
                b.clv_12m
                    .unwrap_or(0.0)
                    .total_cmp(&a.clv_12m.unwrap_or(0.0))
                    .then(a.customer_id.cmp(&b.customer_id))
            });
            body.push_str(r#"<figure><figcaption>Top at-risk, high-value customers (risk ≥ 0.5, by CLV)</figcaption><table id="at-risk"><thead><tr><th>customer</th><th>risk</th><th>12-month CLV</th><th>segment</th></tr></thead><tbody>"#);
            for r in top.iter().take(10) {
                let _ = write!(
                    body,
                    "<tr><td>{}</td><td>{:.2}</td><td>{:.2}</td><td>{}</td></tr>",
                    esc(&r.customer_id),
                    risk(r).unwrap_or(0.0),
                    r.clv_12m.unwrap_or(0.0),
                    esc(r.segment.as_deref().unwrap_or("-"))
                );
            }
            body.push_str("</tbody></table></figure></section>");
        }
    }
    body.push_str(r#"<section class="grid">"#);
    if d.trend.is_empty() {
        body.push_str(&empty(
            "risk-trend",
            "Average risk across score runs",
            "No score run yet.",
        ));
    } else {
        body.push_str(&line(
            "risk-trend",
            "Average risk across score runs",
            &d.trend.iter().map(|(t, v)| (day(*t), *v)).collect::<Vec<_>>(),
        ));
    }
    let runs = &d.quality.runs[d.quality.runs.len().saturating_sub(QUALITY_RUNS)..];
    if runs.is_empty() {
        body.push_str(&empty("quarantine-per-run", "Data quality", "No ingest run yet."));
    } else {
        let q: Vec<(String, f64)> = runs
            .iter()
            .map(|r| (format!("run {}", r.run), r.quarantined as f64))
            .collect();
        body.push_str(&bars(
            "quarantine-per-run",
            "Data quality: quarantined rows per ingest run",
            &q,
            &[],
            |v| format!("{v:.0}"),
        ));
    }
    body.push_str("</section>");
    body.push_str(&quality_section(d));
    let footer = format!("cis · as of {} · generated {}", day(d.as_of), time::format(time::now()));
    document(&body, &footer)
}

/// A whole page around `body`: inline style, nothing loaded from anywhere.
fn document(body: &str, footer: &str) -> String {
    format!(
        r#"<!doctype html><html lang="en"><head><meta charset="utf-8"><link rel="icon" href="data:,"><title>Customer Health Overview</title><style>{STYLE}</style></head><body>{body}<footer>{}</footer></body></html>"#,
        esc(footer)
    )
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:1.5rem;color:#1d2733;background:#f6f8fa}\
header{display:flex;justify-content:space-between;align-items:center}h1{font-size:1.4rem}\
.grid{display:grid;grid-template-columns:repeat(auto-fit,minmax(520px,1fr));gap:1rem}\
figure{background:#fff;border:1px solid #d8dee4;border-radius:6px;margin:0;padding:.75rem}\
figcaption{font-weight:600;margin-bottom:.5rem}.chart{width:100%;height:auto}\
.bar{fill:#3b7dd8}.trend{stroke:#d8573b;stroke-width:2}.point{fill:#d8573b}\
.label{font-size:10px;text-anchor:middle;fill:#57606a}.value{font-size:10px;text-anchor:middle;fill:#1d2733}\
table{border-collapse:collapse;width:100%;font-size:.9rem}td,th{border-bottom:1px solid #eaeef2;padding:.25rem .5rem;text-align:left}\
.meta,footer{color:#57606a;font-size:.85rem}.empty{color:#8c959f}h2{font-size:1.15rem;margin-top:1.5rem}\
.mark{stroke:#d8573b;stroke-dasharray:4 3}.mark-label{font-size:10px;text-anchor:end;fill:#d8573b}\
.band{fill:#3b7dd8;opacity:.15}.volume{stroke:#3b7dd8;stroke-width:1.5}.flagged{fill:#d8573b}\
.feature{font-size:10px;text-anchor:end;fill:#57606a}.psi-stable{fill:#3b9b5d}.psi-moderate{fill:#e0a030}\
.psi-significant{fill:#d8573b}.start{text-anchor:start}.psi{font-size:9px;fill:#57606a}\
.actions{display:flex;gap:1rem;align-items:center}.sign-in{max-width:32rem;margin:4rem auto}\
.sign-in input{width:100%;margin:.5rem 0}.notice{color:#d8573b}";

#[derive(Debug, Deserialize)]
pub struct DashboardQuery {
    /// A date or RFC 3339 time; default now.
    pub as_of: Option<String>,
    /// Refused when present: a URL is kept in history, logs and `Referer` headers, so it must
    /// never carry a token (old `?token=` links get a clear answer instead of a silent pass).
    pub token: Option<String>,
}

/// `GET /dashboard[?as_of=…]` with `Authorization: Bearer <token>` or a session cookie;
/// `POST /dashboard/session` signs in, `POST /dashboard/sign-out` signs out ([`sign_in`]).
pub fn routes() -> ExtraRoutes {
    ExtraRoutes {
        open: Router::new()
            .route("/dashboard", get(page))
            .route(sign_in::SIGN_IN, post(sign_in::sign_in))
            .route(sign_in::SIGN_OUT, post(sign_in::sign_out)),
        protected: Router::new(),
    }
}

/// The page for a bearer header (checked like the API's) or a live session; the sign-in
/// form for a browser without either.
async fn page(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<DashboardQuery>,
) -> Result<Response, AppError> {
    if q.token.is_some() {
        return Err(AppError::param(
            "token",
            "a token never goes in a URL: sign in at /dashboard or send Authorization: Bearer <token>",
        ));
    }
    if headers.contains_key(header::AUTHORIZATION) {
        authorize(&state, bearer(&headers)?).await?;
    } else if let Some(refused) = sign_in::require_session(&state, &headers).await? {
        return Ok(refused);
    }
    let as_of = match q.as_of.as_deref().filter(|s| !s.is_empty()) {
        Some(s) => time::parse_timestamp(s).map_err(|e| AppError::param("as_of", e.to_string()))?,
        None => time::now(),
    };
    let data = blocking(&state, move |s| gather(&s.store, as_of).map_err(AppError::internal)).await?;
    Ok(Html(render(&data)).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_keeps_markup_out_of_the_page() {
        assert_eq!(esc("<a href=\"x\">&'"), "&lt;a href=&quot;x&quot;&gt;&amp;&#39;");
    }

    #[test]
    fn an_empty_store_renders_every_section_with_an_explanation() {
        let empty = DashboardData {
            as_of: 0,
            latest: None,
            trend: vec![],
            quality: quality::build(&[], &quality::Filter::default(), &quality::Rules::default())
                .expect("empty report"),
            drift: None,
        };
        let html = render(&empty);
        for id in [
            "no-scores",
            "risk-trend",
            "quality-drift",
            "quarantine-per-run",
            "quarantine-rate",
            "volume-per-day",
            "psi-per-feature",
        ] {
            assert!(html.contains(&format!("id=\"{id}\"")), "{id}");
        }
        assert!(
            !html.contains("http://") && !html.contains("https://"),
            "no external resources"
        );
    }
}
