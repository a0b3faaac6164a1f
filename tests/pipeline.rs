//! `cis pipeline run` on a daily feed: CDNOW split by event date into one file per day, run
//! through the binary at consecutive cutoffs.

use std::path::Path;

use cis_features::snapshot;
use cis_models::{scores, ModelKind};
use cis_ops::monitor::{drift, quality};
use cis_ops::pipeline::{self, RunRecord};
use cis_storage::{unhex32, Store};

use crate::util::{cis, fixture, t};

/// The CDNOW lines whose date (YYYYMMDD, third column) is in `(after, upto]`.
fn cdnow_days(after: &str, upto: &str) -> String {
    let text = std::fs::read_to_string(fixture("CDNOW_sample.txt")).expect("CDNOW fixture");
    let mut out = String::new();
    for line in text.lines() {
        let date = line.split_whitespace().nth(2).expect("a date column");
        if date > after && date <= upto {
            out.push_str(line);
            out.push('\n');
        }
    }
    assert!(!out.is_empty(), "CDNOW has orders in ({after}, {upto}]");
    out
}

const CONFIG: &str = r#"
cutoff = "daily 00:00 UTC"
label_horizon_days = 90

[[source]]
kind = "orders"
path = "feed"
format = "cdnow"
recorded_at = "event-time"

[train]
retrain_every_days = 2

[train.churn]
cutoffs = ["T-180d", "T-90d"]

[train.clv]
model = "bg-nbd"

[export]
scores = ["csv"]
snapshot = ["csv"]
"#;

fn run(store_dir: &Path, config: &Path, as_of: &str) -> (i32, String, String) {
    let out = cis(
        store_dir,
        &[
            "pipeline",
            "run",
            "--config",
            &config.display().to_string(),
            "--as-of",
            as_of,
        ],
    );
    (
        out.status.code().expect("exit code"),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Every pipeline-run record, oldest first, and the number of artifacts of every kind.
fn records(store_dir: &Path) -> (Vec<RunRecord>, usize) {
    let store = Store::open(store_dir).expect("open store");
    let runs = store.artifacts().list(pipeline::KIND, i64::MAX).expect("list");
    let records: Vec<RunRecord> = runs
        .iter()
        .map(|r| pipeline::load(&store, &r.hash).expect("load record"))
        .collect();
    let mut kinds = vec![snapshot::KIND, scores::KIND, drift::KIND, quality::KIND, pipeline::KIND];
    kinds.extend(ModelKind::ALL.map(ModelKind::artifact_kind));
    let all: usize = kinds
        .into_iter()
        .map(|kind| store.artifacts().list(kind, i64::MAX).expect("list").len())
        .sum();
    // Every hash a record names is a stored artifact; every export is on disk as recorded.
    for r in &records {
        for h in r.artifacts() {
            let hash = unhex32(h).unwrap_or_else(|| panic!("{h} is a hash"));
            assert!(store.artifacts().get(&hash).expect("get").is_some(), "{h} is stored");
        }
        assert!(!r.exports.is_empty());
        for e in &r.exports {
            let hash = cis_ingest::file_hash(&store_dir.join(&e.path)).expect("the export is there");
            assert_eq!(hash, e.file_hash, "{} is what the run wrote", e.path);
        }
    }
    (records, all)
}

#[test]
fn a_daily_feed_ingests_new_files_retrains_when_due_and_reruns_as_a_no_op() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store_dir = dir.path().join("store");
    let config = dir.path().join("cis.toml");
    std::fs::write(&config, CONFIG).expect("config");
    let feed = dir.path().join("feed");
    std::fs::create_dir(&feed).expect("feed dir");
    std::fs::write(feed.join("day-0928.txt"), cdnow_days("0", "19970928")).expect("day");

    let (code, out, err) = run(&store_dir, &config, "1997-09-29");
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(
        out.contains("[1/7] ingest") && out.contains("[7/7] record"),
        "progress per step: {out}"
    );
    let (recs, artifacts) = records(&store_dir);
    assert_eq!(recs.len(), 1);
    let first = &recs[0];
    assert_eq!(first.as_of, t("1997-09-29"));
    assert_eq!(first.ingested.len(), 1);
    let kinds: Vec<_> = first.trained.iter().map(|m| m.kind).collect();
    assert_eq!(kinds, [ModelKind::Churn, ModelKind::Clv]);
    // Churn learned from the snapshots 180 and 90 days before T.
    assert_eq!(first.trained[0].snapshots.len(), 2);
    assert_eq!(first.models.len(), 2, "the scores used the two models trained");
    assert!(first.drift.is_none(), "no earlier run to compare with");
    assert_eq!(first.exports.len(), 2);

    // The same T again: a no-op that says so, and nothing new is stored.
    let (code, again, _) = run(&store_dir, &config, "1997-09-29");
    assert_eq!(code, 0);
    assert!(again.contains("already run"), "{again}");
    assert!(!again.contains("[1/7]"), "{again}");
    let (recs_again, artifacts_again) = records(&store_dir);
    assert_eq!((recs_again.len(), artifacts_again), (1, artifacts));

    // The next day's file arrives: the next T ingests it alone; the models are a day old, not due.
    std::fs::write(feed.join("day-0929.txt"), cdnow_days("19970928", "19970929")).expect("day");
    let (code, out, err) = run(&store_dir, &config, "1997-09-30");
    assert_eq!(code, 0, "{out}\n{err}");
    let (recs, _) = records(&store_dir);
    let second = &recs[1];
    assert_eq!(second.ingested.len(), 1);
    assert!(second.ingested[0].file.ends_with("day-0929.txt"));
    assert_eq!(second.ingested[0].accepted, 9, "the orders of 1997-09-29");
    assert_eq!(second.skipped.len(), 1, "the first day's file is skipped");
    assert!(
        second.trained.is_empty(),
        "retrain_every_days = 2: not due after one day"
    );
    assert_eq!(second.not_due.len(), 2);
    let used: Vec<&str> = second.models.iter().map(|m| m.model.as_str()).collect();
    let trained: Vec<&str> = first.trained.iter().map(|m| m.model.as_str()).collect();
    assert_eq!(used, trained, "scored with the models of the first run");
    assert_ne!(second.snapshot, first.snapshot, "a new day, a new snapshot");
    let drift = second.drift.as_ref().expect("drift against the first run");
    assert_eq!(drift.from_snapshot, first.snapshot);

    // Two days after training: due again.
    std::fs::write(feed.join("day-0930.txt"), cdnow_days("19970929", "19970930")).expect("day");
    let (code, out, err) = run(&store_dir, &config, "1997-10-01");
    assert_eq!(code, 0, "{out}\n{err}");
    let (recs, _) = records(&store_dir);
    let third = &recs[2];
    assert_eq!(third.trained.len(), 2, "retrained two days after: {out}");
    assert!(third.trained.iter().all(|m| m.new));
    assert_eq!(third.as_of, t("1997-10-01"));
}

#[test]
fn a_bad_field_is_refused_naming_the_file_the_field_and_what_is_allowed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store_dir = dir.path().join("store");
    let config = dir.path().join("cis.toml");
    let cases = [
        // An unknown field: toml names it and the fields there are.
        (
            CONFIG.replace("label_horizon_days", "label_horizon"),
            vec!["label_horizon", "label_horizon_days"],
        ),
        (
            CONFIG.replace("kind = \"orders\"", "kind = \"order\""),
            vec!["source[0].kind", "orders, sessions"],
        ),
        (
            CONFIG.replace("daily 00:00 UTC", "every day"),
            vec!["cutoff", "daily HH:MM UTC"],
        ),
        (
            CONFIG.replace("\"T-90d\"", "\"T-30d\""),
            vec!["train.churn.cutoffs[1]", "label_horizon_days"],
        ),
        (
            CONFIG.replace("scores = [\"csv\"]", "scores = [\"xlsx\"]"),
            vec!["export.scores[0]", "csv, parquet"],
        ),
        (
            CONFIG.replace("[export]", "[export]\ndir = \"../outside\""),
            vec!["export.dir", "inside the store directory"],
        ),
    ];
    for (text, words) in cases {
        std::fs::write(&config, &text).expect("config");
        let (code, out, err) = run(&store_dir, &config, "1997-09-29");
        assert_eq!(code, 1, "{out}\n{err}");
        assert!(err.contains("cis.toml"), "names the file: {err}");
        for w in words {
            assert!(err.contains(w), "says {w:?}: {err}");
        }
    }
    assert!(!store_dir.exists(), "a refused file opens no store");
}

#[test]
fn a_breached_threshold_is_recorded_and_exits_4() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store_dir = dir.path().join("store");
    let config = dir.path().join("cis.toml");
    // CLV alone (churn needs 180 days of history), and no drifted feature allowed.
    let text = CONFIG
        .replace("[train.churn]\ncutoffs = [\"T-180d\", \"T-90d\"]\n", "")
        .replace("[export]", "[thresholds]\ndrift_significant_max = 0\n\n[export]");
    std::fs::write(&config, text).expect("config");
    let feed = dir.path().join("feed");
    std::fs::create_dir(&feed).expect("feed dir");
    std::fs::write(feed.join("all.txt"), cdnow_days("0", "19980701")).expect("feed");
    let (code, out, err) = run(&store_dir, &config, "1997-03-01");
    assert_eq!(code, 0, "nothing to compare with yet: {out}\n{err}");
    // A year later recency and frequency have moved for everyone.
    let (code, out, err) = run(&store_dir, &config, "1998-03-01");
    assert_eq!(code, 4, "{out}\n{err}");
    assert!(out.contains("threshold breached: drift"), "{out}");
    let (recs, _) = records(&store_dir);
    assert_eq!(recs.len(), 2, "the breaching run is recorded");
    assert_eq!(recs[1].breaches.len(), 1);
}

/// `cis pipeline run` with the server holding the store: it runs through the server (the file and
/// the new sources go up as one bundle) and prints, ingests and records what it does directly on
/// a twin store.
#[test]
fn a_pipeline_beside_a_server_runs_through_it_as_it_runs_directly() {
    use std::process::Command;

    let dir = tempfile::tempdir().expect("tempdir");
    let (served, twin) = (dir.path().join("served"), dir.path().join("twin"));
    let config = dir.path().join("cis.toml");
    std::fs::write(&config, CONFIG).expect("config");
    let feed = dir.path().join("feed");
    std::fs::create_dir(&feed).expect("feed dir");
    std::fs::write(feed.join("day-0928.txt"), cdnow_days("0", "19970928")).expect("day");

    let (mut server, _, admin) = crate::util::serve_printing_admin_token(&served);
    // What two stores can share: not the scores table's `generated_at`, nor the quality report's
    // ingest times (wall clock), so not the hashes that cover them.
    let comparable = |text: &str| -> String {
        text.lines()
            .map(|l| {
                let l = l.trim_start();
                if l.starts_with("customer_risk_scores:") || l.starts_with("quality:") || l.starts_with("pipeline run ")
                {
                    l.split(" (")
                        .next()
                        .unwrap_or(l)
                        .split(" blake3")
                        .next()
                        .unwrap_or(l)
                        .to_string()
                } else {
                    l.to_string()
                }
            })
            .map(|l| {
                if l.starts_with("pipeline run ") {
                    "pipeline run HASH".to_string()
                } else if let Some(rest) = l.strip_prefix("drift against run ") {
                    // The earlier run's hash covers its quality report.
                    format!("drift against run HASH{}", &rest[rest.find(' ').unwrap_or(0)..])
                } else {
                    l
                }
            })
            .collect::<Vec<_>>()
            .join("\n")
    };
    let through = |as_of: &str| {
        let out = Command::new(crate::util::cis_bin())
            .arg("--store")
            .arg(&served)
            .args([
                "pipeline",
                "run",
                "--config",
                &config.display().to_string(),
                "--as-of",
                as_of,
            ])
            .env("CIS_TOKEN", &admin)
            .output()
            .expect("run cis");
        (
            out.status.code().expect("exit code"),
            String::from_utf8_lossy(&out.stdout).replace(&served.display().to_string(), "STORE"),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let direct = |as_of: &str| {
        let (code, out, err) = run(&twin, &config, as_of);
        (code, out.replace(&twin.display().to_string(), "STORE"), err)
    };

    for (as_of, next_day) in [("1997-09-29", Some(("19970928", "19970929"))), ("1997-09-30", None)] {
        let (code, out, err) = through(as_of);
        assert_eq!(code, 0, "{out}\n{err}");
        let (code, want, err) = direct(as_of);
        assert_eq!(code, 0, "{want}\n{err}");
        assert_eq!(comparable(&out), comparable(&want), "through the server as directly");
        if let Some((after, upto)) = next_day {
            std::fs::write(feed.join("day-0929.txt"), cdnow_days(after, upto)).expect("day");
        }
    }
    // The second run skipped the first day's file, which went up only once.
    let (_, again, _) = through("1997-09-30");
    assert!(again.contains("already run"), "{again}");

    // SAFETY: kill(2) on the child this test started and has not reaped.
    assert_eq!(unsafe { libc::kill(server.id() as i32, libc::SIGTERM) }, 0);
    assert!(server.wait().expect("wait").success());
    let same = |r: &RunRecord| {
        (
            r.as_of,
            r.ingested.clone(),
            r.skipped.clone(),
            r.snapshot.clone(),
            r.trained.clone(),
            r.models.clone(),
            r.scores.clone(),
            r.log_head.clone(),
        )
    };
    let ((served_records, _), (twin_records, _)) = (records(&served), records(&twin));
    assert_eq!(served_records.len(), 2);
    assert_eq!(served_records[1].skipped.len(), 1, "the first day's file, skipped");
    let served_records: Vec<_> = served_records.iter().map(same).collect();
    let twin_records: Vec<_> = twin_records.iter().map(same).collect();
    assert_eq!(served_records, twin_records, "the same runs, recorded the same");
}
