//! Data quality over time: the per-run profile on a hand-checked fixture, the three flags on
//! planted anomalies and clean histories, old run records, the CLI and its artifact, /metrics.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use cis_core::event::Kind;
use cis_ingest::records::{self, IngestRun, Lag};
use cis_ingest::source::Format;
use cis_ingest::RecordedAt;
use cis_ops::monitor::quality::{self, Filter, Flag, Rules};
use cis_storage::Store;

use crate::util::{cis_bin, ingest, write};

const HEADER: &str = "order_id,customer_id,event_time,amount,currency,quantity,channel,recorded_at\n";

/// Twenty valid orders and two with a bad amount. Order i (1..=20) arrives i minutes late; its
/// quantity is absent when i is a multiple of 4 (5 rows); its channel is empty for i ≤ 2;
/// days: i ≤ 7 on 2024-03-01, 8..=15 on 03-02, 16..=20 on 03-04 (none on 03-03).
fn fixture(dir: &Path) -> PathBuf {
    let mut csv = HEADER.to_string();
    for i in 1..=20u32 {
        let day = match i {
            1..=7 => 1,
            8..=15 => 2,
            _ => 4,
        };
        let quantity = if i % 4 == 0 { String::new() } else { "1".into() };
        let channel = if i <= 2 { "" } else { "web" };
        let _ = writeln!(
            csv,
            "o{i},c{i},2024-03-0{day}T10:00:00Z,5.00,USD,{quantity},{channel},2024-03-0{day}T10:{i:02}:00Z"
        );
    }
    csv.push_str("bad1,c1,2024-03-01T10:00:00Z,x,USD,,,2024-03-01T11:00:00Z\n");
    csv.push_str("bad2,c1,2024-03-01T10:00:00Z,y,USD,,,2024-03-01T11:00:00Z\n");
    write(dir, "orders.csv", &csv)
}

fn by_column(store: &Store, path: &Path) -> IngestRun {
    ingest(
        store,
        Kind::Order,
        Format::Csv,
        path,
        RecordedAt::Column("recorded_at".into()),
    )
}

#[test]
fn a_run_records_missing_shares_lag_quantiles_and_days() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::in_memory().expect("store");
    let run = by_column(&store, &fixture(dir.path()));
    assert_eq!((run.rows, run.accepted, run.quarantined, run.profiled), (22, 20, 2, 20));
    // Quarantined rows lack both fields but are not counted.
    assert_eq!(run.missing["quantity"], 5);
    assert_eq!(run.missing["channel"], 2);
    assert_eq!(run.missing_shares()["quantity"], 0.25);
    assert_eq!(run.missing_shares()["channel"], 0.1);
    // Lags 60, 120, …, 1200 s. Median (x10 + x11) / 2 = 630 s. p95 by R-8: h = (20 + 1/3)·0.95
    // + 1/3 = 19.65, so x19 + 0.65·(x20 − x19) = 1140 + 39 = 1179 s. Max 1200 s.
    assert_eq!(
        run.arrival_lag,
        Some(Lag {
            median_us: 630_000_000,
            p95_us: 1_179_000_000,
            max_us: 1_200_000_000,
        })
    );
    let days: Vec<(&str, u64)> = run.per_day.iter().map(|(d, n)| (d.as_str(), *n)).collect();
    assert_eq!(days, [("2024-03-01", 7), ("2024-03-02", 8), ("2024-03-04", 5)]);

    // Delivering the same file again adds no events, so it adds nothing to any day.
    let again = by_column(&store, &fixture(dir.path()));
    assert_eq!((again.accepted, again.duplicates, again.profiled), (0, 20, 0));
    assert!(again.per_day.is_empty() && again.arrival_lag.is_none());
    let report = quality::report(&store, &Filter::default(), &Rules::default()).expect("report");
    let volume: Vec<(&str, u64)> = report.days.iter().map(|d| (d.day.as_str(), d.events)).collect();
    assert_eq!(
        volume,
        [
            ("2024-03-01", 7),
            ("2024-03-02", 8),
            ("2024-03-03", 0),
            ("2024-03-04", 5)
        ]
    );
    // 2 of 22 rows (9 %) quarantined in each run (the replay rejects the same rows): above 1 %.
    assert_eq!(report.flag_counts()[&Flag::QuarantineRate], 2);
}

#[test]
fn run_records_written_before_the_quality_fields_still_load() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::in_memory().expect("store");
    let run = by_column(&store, &fixture(dir.path()));
    let mut old = serde_json::to_value(&run).expect("json");
    let fields = old.as_object_mut().expect("object");
    for f in ["profiled", "missing", "arrival_lag", "per_day"] {
        assert!(fields.remove(f).is_some(), "{f} is a field of the record");
    }
    fields.insert("run".into(), 99.into());
    let bytes = serde_json::to_vec(&old).expect("bytes");
    store
        .journal_put(records::RUNS, &99u64.to_be_bytes(), &bytes)
        .expect("put");
    let runs = records::runs(&store).expect("old and new records load");
    let loaded = runs.iter().find(|r| r.run == 99).expect("old record");
    assert_eq!((loaded.profiled, loaded.arrival_lag), (0, None));
    assert!(loaded.missing.is_empty() && loaded.per_day.is_empty());
    assert_eq!(loaded.accepted, run.accepted);
    let report = quality::report(&store, &Filter::default(), &Rules::default()).expect("report");
    assert_eq!(report.runs.len(), 2);
}

/// One file of daily orders, `volume(day)` of them on each of 40 days from 2024-01-01.
fn daily_orders(dir: &Path, name: &str, volume: impl Fn(u32) -> u32) -> PathBuf {
    let mut csv = HEADER.to_string();
    for day in 0..40u32 {
        let date = cis_ingest::records::day_label(19_723 + i64::from(day)); // 19723 = 2024-01-01
        for i in 0..volume(day) {
            let _ = writeln!(
                csv,
                "{name}-{day}-{i},c{i},{date}T09:00:00Z,1.00,USD,1,web,{date}T09:30:00Z"
            );
        }
    }
    write(dir, name, &csv)
}

/// 95..=105 orders a day, deterministic.
fn clean(day: u32) -> u32 {
    95 + (day * 7) % 11
}

#[test]
fn a_volume_spike_or_drop_is_flagged_and_a_clean_history_is_not() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::in_memory().expect("store");
    by_column(&store, &daily_orders(dir.path(), "clean.csv", clean));
    let report = quality::report(&store, &Filter::default(), &Rules::default()).expect("report");
    assert_eq!(report.days.len(), 40);
    assert_eq!(
        report.flag_counts(),
        [(Flag::Volume, 0), (Flag::QuarantineRate, 0), (Flag::LagJump, 0)].into()
    );

    let store = Store::in_memory().expect("store");
    let planted = |day: u32| match day {
        30 => 300,
        35 => 20,
        d => clean(d),
    };
    by_column(&store, &daily_orders(dir.path(), "planted.csv", planted));
    let report = quality::report(&store, &Filter::default(), &Rules::default()).expect("report");
    let flagged: Vec<&str> = report
        .days
        .iter()
        .filter(|d| d.flagged)
        .map(|d| d.day.as_str())
        .collect();
    assert_eq!(flagged, ["2024-01-31", "2024-02-05"]);
}

/// Ten orders at 08:00 on 2024-01-`day`, each recorded `lag_minutes` later.
fn late_orders(dir: &Path, day: u32, lag_minutes: u32) -> PathBuf {
    let mut csv = HEADER.to_string();
    for i in 0..10u32 {
        let (h, m) = (lag_minutes / 60 + 8, lag_minutes % 60);
        let recorded = if h < 24 {
            format!("2024-01-{day:02}T{h:02}:{m:02}:00Z")
        } else {
            format!("2024-01-{:02}T{:02}:{m:02}:00Z", day + h / 24, h % 24)
        };
        let _ = writeln!(
            csv,
            "l{day}-{i},c{i},2024-01-{day:02}T08:00:00Z,1.00,USD,1,web,{recorded}"
        );
    }
    write(dir, &format!("late-{day}.csv"), &csv)
}

#[test]
fn an_arrival_lag_jump_is_flagged_and_steady_lag_is_not() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::in_memory().expect("store");
    for day in 1..=4 {
        by_column(&store, &late_orders(dir.path(), day, 60));
    }
    let report = quality::report(&store, &Filter::default(), &Rules::default()).expect("report");
    assert_eq!(report.flag_counts()[&Flag::LagJump], 0, "one hour late every time");
    assert_eq!(report.runs[3].lag_baseline_us, Some(3_600_000_000));

    // p95 of 20 h against a baseline of 1 h: more than 3×.
    by_column(&store, &late_orders(dir.path(), 5, 20 * 60));
    let report = quality::report(&store, &Filter::default(), &Rules::default()).expect("report");
    let flagged: Vec<u64> = report
        .runs
        .iter()
        .filter(|r| r.flags.contains(&Flag::LagJump))
        .map(|r| r.run)
        .collect();
    assert_eq!(flagged, [5]);
    let only_new = Filter {
        kind: Some(Kind::Session),
        ..Filter::default()
    };
    let none = quality::report(&store, &only_new, &Rules::default()).expect("report");
    assert!(
        none.runs.is_empty() && none.days.is_empty(),
        "--kind sessions shows no orders"
    );
}

fn cis(store: &Path, args: &[&str]) -> std::process::Output {
    Command::new(cis_bin())
        .arg("--store")
        .arg(store)
        .args(args)
        .output()
        .expect("run cis")
}

#[test]
fn the_cli_prints_both_tables_and_stores_the_report_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store_dir = dir.path().join("store");
    let file = fixture(dir.path());
    let out = cis(
        &store_dir,
        &[
            "ingest",
            "orders",
            file.to_str().expect("utf-8"),
            "--recorded-at",
            "recorded_at",
        ],
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    let out = cis(&store_dir, &["monitor", "quality"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("ingest runs") && text.contains("events per event-day"),
        "{text}"
    );
    assert!(
        text.contains("quarantine-rate"),
        "9 % of rows quarantined is flagged: {text}"
    );
    let gap = text
        .lines()
        .find(|l| l.starts_with("2024-03-03"))
        .expect("the empty day is listed");
    assert_eq!(
        gap.split_whitespace().collect::<Vec<_>>(),
        ["2024-03-03", "order", "0", "-"]
    );
    let hash = text
        .lines()
        .find_map(|l| l.strip_prefix("quality-report "))
        .expect("hash line")
        .to_string();

    let out = cis(&store_dir, &["monitor", "quality", "--json"]);
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(doc["artifact"], hash.as_str(), "the same runs give the same artifact");
    assert_eq!(doc["report"]["runs"][0]["missing_share"]["quantity"], 0.25);

    // Bad input: a clear error, exit ≠ 0, nothing stored.
    let out = cis(&store_dir, &["monitor", "quality", "--max-quarantine-rate", "2"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("quarantine threshold"));
    let store = Store::open(&store_dir).expect("open");
    let stored = store.artifacts().list(quality::KIND, i64::MAX).expect("list");
    assert_eq!(stored.len(), 1, "one report, stored once");
    assert_eq!(cis_storage::hex(&stored[0].hash), hash);
}

#[test]
fn metrics_expose_quality_gauges() {
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::in_memory().expect("store");
    by_column(&store, &fixture(dir.path()));
    let token = cis_server::api::tokens::create(&store, "metrics").expect("token");
    let app = cis_server::api::app(cis_server::api::AppState::new(std::sync::Arc::new(store)));
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let body = runtime.block_on(async {
        let req = axum::http::Request::get("/metrics")
            .header("authorization", format!("Bearer {token}"))
            .body(axum::body::Body::empty())
            .expect("request");
        let res = app.oneshot(req).await.expect("response");
        assert_eq!(res.status(), 200);
        res.into_body().collect().await.expect("body").to_bytes()
    });
    let text = String::from_utf8(body.to_vec()).expect("utf-8");
    for line in [
        "cis_ingest_quarantine_rate{kind=\"order\"} 0.09090909090909091",
        "cis_ingest_arrival_lag_seconds{kind=\"order\",quantile=\"0.5\"} 630",
        "cis_ingest_arrival_lag_seconds{kind=\"order\",quantile=\"0.95\"} 1179",
        "cis_ingest_arrival_lag_seconds{kind=\"order\",quantile=\"1\"} 1200",
        "cis_events_latest_day{kind=\"order\",day=\"2024-03-04\"} 5",
        "cis_quality_flags{flag=\"quarantine-rate\"} 1",
        "cis_quality_flags{flag=\"volume\"} 0",
    ] {
        assert!(text.contains(line), "missing `{line}` in:\n{text}");
    }
    assert_eq!(
        text.matches("# TYPE cis_quality_flags gauge").count(),
        1,
        "one TYPE line per metric"
    );
}
