//! Feature drift: PSI and KS against a hand computation, a planted shift in the synthetic
//! generator, snapshots from different definition sets, stored reports and the CLI's bad input.

use cis_core::AsOf;
use cis_features::compute::Matrix;
use cis_features::snapshot::{self, Snapshot};
use cis_ops::monitor::drift::{self, DriftError, DriftReport, FeatureDrift, LeftOutReason, Verdict};
use cis_storage::{hex, Store};
use cis_synth::{Shift, SynthConfig};

use crate::util::{cdnow_models, cdnow_store, cis, ingest_cdnow, synth_store, t};

/// A hand-made snapshot: `columns[j]` holds feature `features[j]` for customers c0, c1, …
fn snap(as_of: &str, features: &[&str], columns: &[&[f64]]) -> Snapshot {
    let n = columns.first().map_or(0, |c| c.len());
    Snapshot {
        as_of: t(as_of),
        known_at: t(as_of),
        definition_set: [0; 32],
        features: features.iter().map(|f| f.to_string()).collect(),
        matrix: Matrix {
            customers: (0..n).map(|i| format!("c{i:03}")).collect(),
            values: (0..n).flat_map(|i| columns.iter().map(move |c| c[i])).collect(),
            visible_events: 0,
            visible_digest: 0,
        },
    }
}

fn feature<'r>(r: &'r DriftReport, name: &str) -> &'r FeatureDrift {
    r.features
        .iter()
        .find(|f| f.feature == name)
        .unwrap_or_else(|| panic!("{name} in the report"))
}

#[test]
fn psi_and_ks_match_a_hand_computation() {
    // orders_7d is a count (never missing), so there is no missing bin.
    // A = 1..10. R-8 deciles: h = (10 + 1/3)·τ + 1/3 → 1.367, 2.4, 3.433, 4.467, 5.5, 6.533,
    // 7.567, 8.6, 9.633: each right-closed bin holds one value of A, every aᵢ = 0.1.
    // B = 1,1,2,2,3,3,4,4,5,5: bᵢ = 0.2 in bins 1–5; bins 6–10 are empty, floored to 1e-4.
    // PSI = 5·(0.2 − 0.1)·ln(0.2/0.1) + 5·(1e-4 − 0.1)·ln(1e-4/0.1)
    //     = 0.3465736 + 3.4504237 = 3.79699735213155 (evaluated in Python).
    // KS: F_A(x) = x/10, F_B(x) = x/5 up to 5; the gap peaks at x = 5: 1.0 − 0.5 = 0.5.
    let a: Vec<f64> = (1..=10).map(f64::from).collect();
    let b = [1.0, 1.0, 2.0, 2.0, 3.0, 3.0, 4.0, 4.0, 5.0, 5.0];
    let r = drift::compare(
        &snap("2024-01-01", &["orders_7d"], &[&a]),
        &snap("2024-02-01", &["orders_7d"], &[&b]),
    )
    .expect("compare");
    let f = feature(&r, "orders_7d");
    assert_eq!(f.bins, 10);
    assert!((f.psi - 3.79699735213155).abs() < 1e-12, "{}", f.psi);
    assert!((f.ks - 0.5).abs() < 1e-12, "{}", f.ks);
    assert_eq!(f.verdict, Verdict::Significant);
    assert_eq!((f.missing_a, f.missing_b), (Some(0.0), Some(0.0)));

    // Missing values form their own bin. avg_order_value_7d is missing where orders_7d = 0:
    // A: 5 of 10 missing; the present 10..50 (n = 5, h = (5 + 1/3)·τ + 1/3) give edges 10, 14,
    // 19.33, 24.67, 30, 35.33, 40.67, 46, 50, so 10, 20, 30, 40, 50 each sit alone in a bin
    // (0.1 each of all 10 customers; the other bins are empty on both sides and add 0) and the
    // missing bin holds 0.5. B: 8 missing (0.8), 10 and 50 present (0.1 each), the bins of 20,
    // 30, 40 empty (floored to 1e-4):
    // PSI = 3·(1e-4 − 0.1)·ln(1e-4/0.1) + (0.8 − 0.5)·ln(0.8/0.5) = 2.0702543 + 0.1410011
    //     = 2.211255345884667 (Python).
    let orders_a = [0.0, 0.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0, 1.0];
    let aov_a = [0.0, 0.0, 0.0, 0.0, 0.0, 10.0, 20.0, 30.0, 40.0, 50.0];
    let orders_b = [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0, 1.0];
    let aov_b = [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 10.0, 50.0];
    let names = ["orders_7d", "avg_order_value_7d"];
    let r = drift::compare(
        &snap("2024-01-01", &names, &[&orders_a, &aov_a]),
        &snap("2024-02-01", &names, &[&orders_b, &aov_b]),
    )
    .expect("compare");
    let f = feature(&r, "avg_order_value_7d");
    assert_eq!((f.missing_a, f.missing_b), (Some(0.5), Some(0.8)));
    assert!((f.psi - 2.211255345884667).abs() < 1e-12, "{}", f.psi);
}

#[test]
fn different_definition_sets_compare_on_shared_features() {
    let x: &[f64] = &[1.0, 2.0, 3.0, 4.0];
    let y: &[f64] = &[4.0, 3.0, 2.0, 1.0];
    // B has the shared columns in another order, and one feature of its own.
    let a = snap("2024-01-01", &["orders_7d", "sessions_7d", "old_feature"], &[x, y, x]);
    let b = snap("2024-02-01", &["sessions_7d", "new_feature", "orders_7d"], &[y, x, x]);
    let r = drift::compare(&a, &b).expect("compare");
    let names: Vec<&str> = r.features.iter().map(|f| f.feature.as_str()).collect();
    assert_eq!(names, ["orders_7d", "sessions_7d"]);
    assert!(r.features.iter().all(|f| f.psi == 0.0 && f.ks == 0.0), "{r:?}");
    let left: Vec<(&str, LeftOutReason)> = r.left_out.iter().map(|l| (l.feature.as_str(), l.reason)).collect();
    assert_eq!(
        left,
        [
            ("old_feature", LeftOutReason::OnlyInA),
            ("new_feature", LeftOutReason::OnlyInB)
        ]
    );
    // A rule's indicator column missing from one side: the share is unknown and says why.
    let c = snap("2024-01-01", &["avg_order_value_7d"], &[x]);
    let r = drift::compare(&c, &c).expect("compare");
    assert_eq!(r.features[0].missing_a, None);
    assert!(
        r.features[0].missing.contains("lacks orders_7d"),
        "{}",
        r.features[0].missing
    );

    let other = snap("2024-02-01", &["new_feature"], &[x]);
    assert!(matches!(
        drift::compare(&a, &other),
        Err(DriftError::NoSharedFeatures { .. })
    ));
}

/// The synthetic population, seed 5, 400 days from 2024-01-01, optionally with the planted
/// shift (session durations double) from day 300 (2024-10-27).
fn world(shift: bool) -> Store {
    synth_store(SynthConfig {
        customers: 2000,
        days: 400,
        seed: 5,
        shift: shift.then_some(Shift { day: 300 }),
        ..SynthConfig::default()
    })
}

/// Drift from the day before the shift to day 395, whose 90-day window lies after it.
fn before_and_after(store: &Store) -> DriftReport {
    let at = |d: &str| {
        snapshot::create(store, AsOf::new(Some(t(d)), None))
            .expect("snapshot")
            .0
    };
    let (a, b) = (at("2024-10-26"), at("2025-01-30"));
    let (_, _, r) = drift::create(store, &a, &b).expect("drift");
    r
}

#[test]
fn a_planted_shift_is_significant_and_unshifted_features_are_stable() {
    let shifted = before_and_after(&world(true));
    let twin = before_and_after(&world(false));
    for f in ["session_minutes_90d", "avg_order_value_30d"] {
        let (s, u) = (feature(&shifted, f), feature(&twin, f));
        println!(
            "{f}: shifted PSI {:.4} KS {:.4} {:?}; unshifted PSI {:.4} KS {:.4} {:?}",
            s.psi, s.ks, s.verdict, u.psi, u.ks, u.verdict
        );
    }
    // Session durations doubled: significant, while the same dates without the shift are not.
    assert_eq!(feature(&shifted, "session_minutes_90d").verdict, Verdict::Significant);
    assert_ne!(feature(&twin, "session_minutes_90d").verdict, Verdict::Significant);
    // Order values are not shifted.
    assert_eq!(feature(&shifted, "avg_order_value_30d").verdict, Verdict::Stable);
    // Page views derive from the unshifted base duration.
    assert_eq!(feature(&shifted, "page_views_90d").verdict, Verdict::Stable);
}

#[test]
fn latest_pair_reuses_a_stored_report() {
    let store = cdnow_store();
    assert_eq!(drift::latest_pair(&store, t("1998-12-31")).expect("pair"), None);
    let at = |d: &str| {
        snapshot::create(&store, AsOf::new(Some(t(d)), None))
            .expect("snapshot")
            .0
    };
    let (a, b, c) = (at("1997-03-31"), at("1997-06-30"), at("1997-09-30"));
    let unstored = drift::latest_pair(&store, t("1997-07-01"))
        .expect("pair")
        .expect("two snapshots");
    assert_eq!(
        (unstored.from.as_str(), unstored.to.as_str()),
        (hex(&a).as_str(), hex(&b).as_str())
    );
    assert!(store.artifacts().list(drift::KIND, i64::MAX).expect("list").is_empty());
    let (_, new, stored) = drift::create(&store, &b, &c).expect("create");
    assert!(new);
    let again = drift::latest_pair(&store, t("1998-12-31"))
        .expect("pair")
        .expect("two snapshots");
    assert_eq!(again, stored);
    let (_, new, _) = drift::create(&store, &b, &c).expect("create");
    assert!(!new, "the same pair names the same report");
}

#[test]
fn cli_reports_and_refuses_bad_input() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (a, b, model) = {
        let store = Store::open(dir.path()).expect("store");
        ingest_cdnow(&store);
        let (a, clv, _) = cdnow_models(&store);
        let b = snapshot::create(&store, AsOf::new(Some(t("1998-03-31")), None))
            .expect("snapshot")
            .0;
        (hex(&a), hex(&b), hex(&clv))
    };
    let ok = cis(dir.path(), &["monitor", "drift", "--from", &a[..10], "--to", &b]);
    assert!(ok.status.success(), "{ok:?}");
    let text = String::from_utf8_lossy(&ok.stdout);
    assert!(text.contains("drift report ") && text.contains(" stable"), "{text}");
    let by_model = cis(
        dir.path(),
        &["monitor", "drift", "--model", &model, "--to", &b, "--json"],
    );
    assert!(by_model.status.success(), "{by_model:?}");
    let doc: serde_json::Value = serde_json::from_slice(&by_model.stdout).expect("json");
    assert_eq!(doc["report"]["from"], a.as_str(), "the model's training snapshot");
    assert_eq!(doc["new"], false, "the same pair as above");
    let report = doc["hash"].as_str().expect("hash").to_string();

    let bad: [&[&str]; 6] = [
        &["monitor", "drift", "--from", "deadbeefdeadbeef", "--to", &b],
        &["monitor", "drift", "--from", "xyz", "--to", &b],
        &["monitor", "drift", "--from", &model, "--to", &b],
        &["monitor", "drift", "--from", &a, "--to", &report],
        &["monitor", "drift", "--model", &a, "--to", &b],
        &["monitor", "drift", "--to", &b],
    ];
    for args in bad {
        let out = cis(dir.path(), args);
        assert!(!out.status.success(), "{args:?} should fail");
        assert!(!out.stderr.is_empty(), "{args:?} says why");
    }
    let store = Store::open(dir.path()).expect("store");
    let reports = store.artifacts().list(drift::KIND, i64::MAX).expect("list");
    assert_eq!(reports.len(), 1, "bad input stores nothing");
}
