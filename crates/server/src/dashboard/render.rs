//! The dashboard's markup: maud templates over [`DashboardData`] (what [`super::gather`] read)
//! and the sign-in page. Every value spliced into a template is escaped by maud, so no text from
//! the store (customer ids, segment names, feature names) can become markup. Pure functions:
//! the page can be tested without a server.

use std::collections::BTreeMap;

use maud::{html, Markup, PreEscaped, DOCTYPE};

use super::{risk, sign_in, DashboardData, ModelSummary};
use cis_core::event::Kind;
use cis_core::time::{self, Timestamp};
use cis_models::scores::ScoreRow;
use cis_ops::monitor::drift::{self, DriftReport};
use cis_ops::monitor::quality::DayVolume;

/// At most this many ingest runs, and days per kind, are drawn in the data-quality charts.
const QUALITY_RUNS: usize = 20;
const VOLUME_DAYS: usize = 90;

const W: f64 = 560.0;
const H: f64 = 220.0;
const PAD: f64 = 36.0;

/// `v` with `digits` decimals: chart coordinates and the numbers printed on them.
fn fixed(v: f64, digits: usize) -> String {
    format!("{v:.digits$}")
}

fn day(t: Timestamp) -> String {
    time::format(t).chars().take(10).collect()
}

/// A chart's frame: the caption, and an SVG of `height` named `id` (for tests and the browser
/// check) around `marks`.
fn chart(id: &str, title: &str, height: f64, marks: Markup) -> Markup {
    html! {
        figure {
            figcaption { (title) }
            svg id=(id) class="chart" viewBox={ "0 0 " (W) " " (height) } role="img" aria-label=(title) { (marks) }
        }
    }
}

/// A vertical bar chart; `marks` are labelled horizontal reference lines (thresholds).
fn bars(id: &str, title: &str, items: &[(String, f64)], marks: &[(f64, &str)], fmt: impl Fn(f64) -> String) -> Markup {
    let max = items
        .iter()
        .map(|i| i.1)
        .chain(marks.iter().map(|m| m.0))
        .fold(0.0f64, f64::max)
        .max(1e-9);
    let slot = (W - 2.0 * PAD) / items.len().max(1) as f64;
    chart(
        id,
        title,
        H,
        html! {
            @for (v, label) in marks {
                @let y = H - PAD - (H - 2.0 * PAD) * v / max;
                line class="mark" x1=(PAD) x2=(fixed(W - PAD, 1)) y1=(fixed(y, 1)) y2=(fixed(y, 1)) {}
                text class="mark-label" x=(fixed(W - PAD, 1)) y=(fixed(y - 3.0, 1)) { (label) }
            }
            @for (i, (label, v)) in items.iter().enumerate() {
                @let h = (H - 2.0 * PAD) * (v / max).max(0.0);
                @let x = PAD + i as f64 * slot + slot * 0.1;
                rect class="bar" x=(fixed(x, 1)) y=(fixed(H - PAD - h, 1)) width=(fixed(slot * 0.8, 1)) height=(fixed(h, 1)) {
                    title { (label) ": " (fmt(*v)) }
                }
                text x=(fixed(x + slot * 0.4, 1)) y=(fixed(H - PAD + 14.0, 1)) class="label" { (label) }
                text x=(fixed(x + slot * 0.4, 1)) y=(fixed(H - PAD - h - 4.0, 1)) class="value" { (fmt(*v)) }
            }
        },
    )
}

/// A line over `points` (values in [0, 1]).
fn line(id: &str, title: &str, points: &[(String, f64)]) -> Markup {
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
    chart(
        id,
        title,
        H,
        html! {
            polyline class="trend" fill="none" points=(path.join(" ")) {}
            @for (i, (label, v)) in points.iter().enumerate() {
                circle class="point" cx=(fixed(xs(i), 1)) cy=(fixed(ys(*v), 1)) r="4" {
                    title { (label) ": " (fixed(*v, 3)) }
                }
                text x=(fixed(xs(i), 1)) y=(fixed(ys(*v) - 8.0, 1)) class="value" { (fixed(*v, 3)) }
                text x=(fixed(xs(i), 1)) y=(fixed(H - PAD + 14.0, 1)) class="label" { (label) }
            }
        },
    )
}

/// A chart with nothing to draw, saying why.
fn empty(id: &str, title: &str, why: &str) -> Markup {
    html! {
        figure {
            figcaption { (title) }
            p id=(id) class="empty" { (why) }
        }
    }
}

/// Daily events of one kind as a line, its learned band shaded and flagged days marked.
fn volume(kind: Kind, days: &[&DayVolume]) -> Markup {
    let title = format!("Events per day: {} (band and flags: volume rule)", kind.name());
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
    let upper = banded.iter().map(|(i, b)| format!("{:.1},{:.1}", x(*i), y(b[1])));
    let lower = banded.iter().rev().map(|(i, b)| format!("{:.1},{:.1}", x(*i), y(b[0])));
    let band = upper.chain(lower).collect::<Vec<_>>().join(" ");
    let events: Vec<String> = days
        .iter()
        .enumerate()
        .map(|(i, v)| format!("{:.1},{:.1}", x(i), y(v.events as f64)))
        .collect();
    chart(
        &format!("volume-{}", kind.name()),
        &title,
        H,
        html! {
            @if !banded.is_empty() {
                polygon class="band" points=(band) {}
            }
            polyline class="volume" fill="none" points=(events.join(" ")) {}
            @for (i, v) in days.iter().enumerate().filter(|(_, v)| v.flagged) {
                circle class="flagged" cx=(fixed(x(i), 1)) cy=(fixed(y(v.events as f64), 1)) r="4" {
                    title { (v.day) ": " (v.events) " events, outside the band" }
                }
            }
            @if let (Some(first), Some(last)) = (days.first(), days.last()) {
                text class="label" x=(PAD) y=(fixed(H - PAD + 14.0, 1)) { (first.day) }
                text class="label" x=(fixed(W - PAD, 1)) y=(fixed(H - PAD + 14.0, 1)) { (last.day) }
                text class="value" x=(PAD) y=(fixed(PAD - 6.0, 1)) { (fixed(max, 0)) }
            }
        },
    )
}

/// PSI per feature as horizontal bars, coloured by verdict, with the verdict thresholds drawn.
fn psi_chart(r: &DriftReport) -> Markup {
    const ROW: f64 = 14.0;
    const LABELS: f64 = 190.0;
    let h = 2.0 * PAD + ROW * r.features.len() as f64;
    let title = format!(
        "Feature drift: PSI from snapshot {} ({}) to {} ({})",
        &r.from[..12.min(r.from.len())],
        day(r.from_as_of),
        &r.to[..12.min(r.to.len())],
        day(r.to_as_of)
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
    let marks = [
        (drift::PSI_MODERATE, "moderate"),
        (drift::PSI_SIGNIFICANT, "significant"),
    ];
    chart(
        "psi-per-feature",
        &title,
        h,
        html! {
            @for (i, f) in r.features.iter().enumerate() {
                @let top = PAD + ROW * i as f64;
                text class="feature" x=(fixed(LABELS - 6.0, 1)) y=(fixed(top + ROW * 0.75, 1)) { (f.feature) }
                rect class={ "bar psi-" (f.verdict.name()) } x=(LABELS) y=(fixed(top + 1.0, 1)) width=(fixed(x(f.psi) - LABELS, 1)) height=(fixed(ROW - 2.0, 1)) {
                    title { (f.feature) ": PSI " (fixed(f.psi, 4)) ", KS " (fixed(f.ks, 3)) " (" (f.verdict.name()) ")" }
                }
                text class="psi" x=(fixed(x(f.psi) + 3.0, 1)) y=(fixed(top + ROW * 0.75, 1)) { (fixed(f.psi, 3)) }
            }
            @for (row, (v, label)) in marks.into_iter().enumerate() {
                // One label line each, so that close thresholds do not overlap.
                @let y = PAD - 14.0 + 12.0 * row as f64;
                line class="mark" x1=(fixed(x(v), 1)) x2=(fixed(x(v), 1)) y1=(fixed(y - 8.0, 1)) y2=(fixed(h - PAD, 1)) {}
                text class="mark-label start" x=(fixed(x(v) + 3.0, 1)) y=(fixed(y, 1)) { (v) " " (label) }
            }
        },
    )
}

/// "Data quality and drift": quarantine rate per run, volume per day with its band
/// and flags, PSI per feature with the verdict thresholds.
fn quality_section(d: &DashboardData) -> Markup {
    let q = &d.quality;
    let runs = &q.runs[q.runs.len().saturating_sub(QUALITY_RUNS)..];
    let rates: Vec<(String, f64)> = runs
        .iter()
        .map(|r| (format!("run {}", r.run), r.quarantine_rate * 100.0))
        .collect();
    let limit = q.rules.quarantine_max * 100.0;
    let today = day(d.as_of);
    let mut by_kind: BTreeMap<Kind, Vec<&DayVolume>> = BTreeMap::new();
    for v in q.days.iter().filter(|v| v.day <= today) {
        by_kind.entry(v.kind).or_default().push(v);
    }
    html! {
        h2 { "Data quality and drift" }
        section class="grid" id="quality-drift" {
            @if runs.is_empty() {
                (empty("quarantine-rate", "Quarantine rate per run", "No ingest run yet."))
            } @else {
                (bars(
                    "quarantine-rate",
                    "Quarantine rate per ingest run (%)",
                    &rates,
                    &[(limit, &format!("flag above {limit} %"))],
                    |v| fixed(v, 1),
                ))
            }
            @if by_kind.is_empty() {
                (empty("volume-per-day", "Events per day", "No events up to this date."))
            }
            @for (kind, days) in &by_kind {
                (volume(*kind, &days[days.len().saturating_sub(VOLUME_DAYS)..]))
            }
            @match &d.drift {
                Some(report) if !report.features.is_empty() => (psi_chart(report)),
                _ => (empty(
                    "psi-per-feature",
                    "Feature drift (PSI)",
                    "Fewer than two snapshots with shared features as of this date.",
                )),
            }
        }
    }
}

/// The charts of the latest score run: risk distribution, segments, CLV deciles, and the
/// top at-risk, high-value customers.
fn scores_section(hash: &str, set: &cis_models::scores::ScoreSet) -> Markup {
    let mut hist = [0.0; 10];
    for r in set.rows.iter().filter_map(risk) {
        hist[((r * 10.0) as usize).min(9)] += 1.0;
    }
    let hist: Vec<(String, f64)> = hist
        .iter()
        .enumerate()
        .map(|(i, c)| (format!("{:.1}", i as f64 / 10.0), *c))
        .collect();
    let label = if set.rows.iter().any(|r| r.churn_probability.is_some()) {
        "churn probability"
    } else {
        "1 − P(alive)"
    };
    let mut segs: BTreeMap<&str, (f64, f64)> = BTreeMap::new();
    for r in &set.rows {
        if let Some(s) = &r.segment {
            let e = segs.entry(s).or_default();
            e.0 += 1.0;
            e.1 += r.clv_12m.unwrap_or(0.0);
        }
    }
    let mut clv: Vec<f64> = set.rows.iter().filter_map(|r| r.clv_12m).collect();
    clv.sort_by(|a, b| b.total_cmp(a));
    let deciles: Vec<(String, f64)> = (0..10)
        .map(|i| {
            let part = &clv[i * clv.len() / 10..(i + 1) * clv.len() / 10];
            (
                format!("D{}", i + 1),
                part.iter().sum::<f64>() / part.len().max(1) as f64,
            )
        })
        .collect();
    let mut top: Vec<&ScoreRow> = set
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
    let whole = |v: f64| fixed(v, 0);
    html! {
        p class="meta" {
            "Scores " code { (&hash[..16]) } " as of " (day(set.as_of)) " for " (set.rows.len())
            " customers, from snapshot " code { (&set.snapshot[..16.min(set.snapshot.len())]) } "."
        }
        section class="grid" {
            (bars("risk-distribution", &format!("Churn-risk distribution ({label})"), &hist, &[], whole))
            @if segs.is_empty() {
                (empty("segment-sizes", "Segments", "No segment model scored this run."))
            } @else {
                (bars(
                    "segment-sizes",
                    "Segment sizes (customers)",
                    &segs.iter().map(|(k, v)| (k.to_string(), v.0)).collect::<Vec<_>>(),
                    &[],
                    whole,
                ))
                (bars(
                    "segment-value",
                    "Segment value (12-month CLV)",
                    &segs.iter().map(|(k, v)| (k.to_string(), v.1)).collect::<Vec<_>>(),
                    &[],
                    whole,
                ))
            }
            @if clv.is_empty() {
                (empty("clv-deciles", "CLV by decile", "No CLV model scored this run."))
            } @else {
                (bars("clv-deciles", "Mean 12-month CLV by decile (D1 = most valuable)", &deciles, &[], whole))
            }
            figure {
                figcaption { "Top at-risk, high-value customers (risk ≥ 0.5, by CLV)" }
                table id="at-risk" {
                    thead { tr { th { "customer" } th { "risk" } th { "12-month CLV" } th { "segment" } } }
                    tbody {
                        @for r in top.iter().take(10) {
                            tr {
                                td { (r.customer_id) }
                                td { (fixed(risk(r).unwrap_or(0.0), 2)) }
                                td { (fixed(r.clv_12m.unwrap_or(0.0), 2)) }
                                td { (r.segment.as_deref().unwrap_or("-")) }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// The models behind the latest score run: what each is, how well it did, what drives it.
fn models_section(models: &[ModelSummary]) -> Markup {
    html! {
        section id="models" {
            h2 { "Models behind these scores" }
            table {
                thead { tr {
                    th { "kind" } th { "method" } th { "trained as of" } th { "stage" }
                    th { "measures" } th { "strongest drivers" } th { "model" }
                } }
                tbody {
                    @for m in models {
                        tr {
                            td { (m.kind) }
                            td { (m.method) }
                            td { (m.as_of.get(..10).unwrap_or(&m.as_of)) }
                            td { (m.stage) }
                            td { @for (what, value) in &m.measures { (what) " " strong { (value) } br; } }
                            td {
                                @if m.drivers.is_empty() { "-" }
                                @for (feature, c) in &m.drivers { (feature) " " (format!("{c:+.2}")) br; }
                            }
                            td { code { (m.hash.get(..16).unwrap_or(&m.hash)) } }
                        }
                    }
                }
            }
            p class="meta" { "Each model's whole card: " code { "cis models show HASH --json" } " or " code { "/artifacts/{hash}" } "." }
        }
    }
}

/// The page. Its forms carry no credentials: the browser's session cookie does.
pub fn render(d: &DashboardData) -> String {
    let runs = &d.quality.runs[d.quality.runs.len().saturating_sub(QUALITY_RUNS)..];
    let quarantined: Vec<(String, f64)> = runs
        .iter()
        .map(|r| (format!("run {}", r.run), r.quarantined as f64))
        .collect();
    let trend: Vec<(String, f64)> = d.trend.iter().map(|(t, v)| (day(*t), *v)).collect();
    let body = html! {
        header {
            h1 { "Customer Health Overview" }
            div class="actions" {
                form method="get" action="/dashboard" {
                    label { "As of " input type="date" name="as_of" value=(day(d.as_of)); }
                    " "
                    button type="submit" { "Show" }
                }
                form method="post" action=(sign_in::SIGN_OUT) { button type="submit" { "Sign out" } }
            }
        }
        @match &d.latest {
            None => (empty("no-scores", "Scores", "No score run exists as of this date: run `cis score` first.")),
            Some((hash, set)) => (scores_section(hash, set)),
        }
        @if !d.models.is_empty() {
            (models_section(&d.models))
        }
        section class="grid" {
            @if trend.is_empty() {
                (empty("risk-trend", "Average risk across score runs", "No score run yet."))
            } @else {
                (line("risk-trend", "Average risk across score runs", &trend))
            }
            @if runs.is_empty() {
                (empty("quarantine-per-run", "Data quality", "No ingest run yet."))
            } @else {
                (bars(
                    "quarantine-per-run",
                    "Data quality: quarantined rows per ingest run",
                    &quarantined,
                    &[],
                    |v| fixed(v, 0),
                ))
            }
        }
        (quality_section(d))
    };
    let footer = format!("cis · as of {} · generated {}", day(d.as_of), time::format(time::now()));
    document(body, &footer)
}

/// The sign-in page, with `notice` above the form; sessions last `ttl` (as people say it).
pub fn sign_in_page(notice: Option<&str>, ttl: &str) -> String {
    let body = html! {
        main class="sign-in" {
            h1 { "Customer Health Overview" }
            @if let Some(n) = notice {
                p class="notice" role="alert" { (n) }
            }
            form id="sign-in" method="post" action=(sign_in::SIGN_IN) {
                label { "API token" input type="password" name="token" autocomplete="current-password" required; }
                button type="submit" { "Sign in" }
            }
            p class="meta" {
                "A token from " code { "cis token create --name NAME" } ". The browser keeps only a session cookie; the session ends after "
                (ttl) ", on sign-out, when the token is revoked, or when the server restarts."
            }
        }
    };
    document(body, "cis")
}

/// A whole page around `body`: inline style, nothing loaded from anywhere.
fn document(body: Markup, footer: &str) -> String {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                link rel="icon" href="data:,";
                title { "Customer Health Overview" }
                // A constant of this file, not data: nothing in it to escape.
                style { (PreEscaped(STYLE)) }
            }
            body {
                (body)
                footer { (footer) }
            }
        }
    }
    .into_string()
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

#[cfg(test)]
mod tests {
    use super::*;
    use cis_ops::monitor::quality;

    fn no_data() -> DashboardData {
        DashboardData {
            as_of: Timestamp::EPOCH,
            latest: None,
            trend: vec![],
            quality: quality::build(&[], &quality::Filter::default(), &quality::Rules::default())
                .expect("empty report"),
            drift: None,
            models: vec![],
        }
    }

    #[test]
    fn an_empty_store_renders_every_section_with_an_explanation() {
        let html = render(&no_data());
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

    #[test]
    fn text_from_the_store_is_escaped() {
        let set = cis_models::scores::ScoreSet {
            as_of: Timestamp::EPOCH,
            snapshot: "1".repeat(64),
            models: vec![],
            rows: vec![ScoreRow {
                customer_id: "<script>alert(1)</script>".into(),
                churn_probability: Some(0.9),
                churn_band: None,
                expected_purchases_90d: None,
                p_alive: None,
                clv_12m: Some(10.0),
                segment: Some("\"><img src=x>".into()),
            }],
        };
        let html = render(&DashboardData {
            latest: Some(("0".repeat(64), set)),
            ..no_data()
        });
        assert!(
            html.contains("<td>&lt;script&gt;alert(1)&lt;/script&gt;</td>"),
            "{html}"
        );
        assert!(html.contains("&quot;&gt;&lt;img src=x&gt;"), "{html}");
        assert!(!html.contains("<script") && !html.contains("<img"), "{html}");
    }

    #[test]
    fn the_models_section_shows_each_models_card() {
        let churn = ModelSummary {
            kind: "churn",
            hash: "ab".repeat(32),
            method: "logistic regression".into(),
            as_of: "1997-09-30T00:00:00Z".into(),
            stage: "production",
            measures: vec![("validation ROC AUC".into(), "0.791".into())],
            drivers: vec![("orders_90d".into(), -0.75)],
        };
        let html = render(&DashboardData {
            models: vec![churn],
            ..no_data()
        });
        let section = html.split("id=\"models\"").nth(1).expect("a models section");
        for text in [
            "churn",
            "logistic regression",
            "1997-09-30",
            "production",
            "0.791",
            "orders_90d -0.75",
            &"ab".repeat(8),
        ] {
            assert!(section.contains(text), "{text} in {section}");
        }
        assert!(!render(&no_data()).contains("id=\"models\""));
    }
}
