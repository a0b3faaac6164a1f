//! Model fitting on 100,000 synthetic customers: BG/NBD + Gamma-Gamma, churn logistic
//! regression on every feature, KMeans. Uses the store `benches/snapshot.rs` builds.
//! The churn solver alone is also timed on every labelled row, standardised, beside
//! scikit-learn's `newton-cholesky` on the same matrix (Python with numpy and scikit-learn; both
//! timed in-process around the fit call only, the matrix already in memory). So are gradient-boosted
//! trees (`--method gbt`, [`cis_models::gbt`]), beside scikit-learn's HistGradientBoostingClassifier
//! with its defaults on the same matrix, but without early stopping (its default turns it on above
//! 10,000 rows, holding out 10 % and stopping early; both then grow all 100 trees); the ratio of
//! the medians is printed.
//!
//! Run: `cargo bench --bench models` (env `CIS_BENCH_CUSTOMERS` to change the size).

mod common;

use cis_core::time::parse_timestamp;
use std::process::Command;

use cis_core::AsOf;
use cis_features::{labels, snapshot};
use cis_models::churn::ChurnParams;
use cis_models::gbt::{self, GbtParams};
use cis_models::lifetime::ClvParams;
use cis_models::logistic;
use cis_models::segments::SegmentParams;
use cis_models::standardise::Standardiser;
use cis_models::{train, Model};
use cis_storage::Store;
use common::{BenchResult, Spread};

/// Fits a scikit-learn estimator (`ESTIMATOR`, substituted in) `runs` times on the matrix in
/// `x_path` (f64 little-endian, row-major) and labels in `y_path` (one byte each); prints the
/// seconds of each fit as a JSON list.
const SKLEARN: &str = r#"
import json, sys, time
import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.ensemble import HistGradientBoostingClassifier
x_path, y_path, width, c, runs = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4]), int(sys.argv[5])
X = np.fromfile(x_path, dtype="<f8").reshape(-1, width)
y = np.fromfile(y_path, dtype=np.uint8)
secs = []
for _ in range(runs):
    start = time.perf_counter()
    ESTIMATOR.fit(X, y)
    secs.append(time.perf_counter() - start)
print(json.dumps(secs))
"#;

/// scikit-learn's estimators the bench times.
const NEWTON_CHOLESKY: &str = r#"LogisticRegression(C=c, solver="newton-cholesky", max_iter=1000)"#;
const HIST_GBT: &str = "HistGradientBoostingClassifier(early_stopping=False)";

/// scikit-learn's fit times of `estimator` on the same matrix, or why there are none.
fn sklearn(estimator: &str, x: &[f64], width: usize, y: &[bool], c: f64, runs: usize) -> BenchResult<Spread> {
    let dir = tempfile::tempdir()?;
    let (x_path, y_path) = (dir.path().join("x.f64"), dir.path().join("y.u8"));
    std::fs::write(&x_path, x.iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<_>>())?;
    std::fs::write(&y_path, y.iter().map(|&y| u8::from(y)).collect::<Vec<_>>())?;
    let out = Command::new("python3")
        .arg("-c")
        .arg(SKLEARN.replace("ESTIMATOR", estimator))
        .arg(&x_path)
        .arg(&y_path)
        .arg(width.to_string())
        .arg(c.to_string())
        .arg(runs.to_string())
        .output()?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).trim().to_string().into());
    }
    let secs: Vec<f64> = serde_json::from_slice(&out.stdout)?;
    Ok(Spread::of(secs).ok_or("no run")?)
}

fn main() -> BenchResult {
    let store = Store::open(&common::synthetic_store(common::customers())?)?;
    let t = parse_timestamp("2025-06-30T00:00:00Z")?;
    let (snap, ..) = snapshot::create(&store, AsOf::new(Some(t), None))?;

    let runs = common::repeats(3);
    let (clv, clv_secs) = common::repeat(runs, || Ok(train::clv(&store, &snap, ClvParams::default())?))?;
    let Model::Clv(clv) = clv.model else {
        return Err("not a CLV model".into());
    };
    let labels_known = parse_timestamp("2026-01-01T00:00:00Z")?;
    let (churn, churn_secs) = common::repeat(runs, || {
        Ok(train::churn(&store, &[snap], ChurnParams::default(), 90, labels_known)?)
    })?;
    let Model::Churn(churn) = churn.model else {
        return Err("not a churn model".into());
    };
    // The solver alone on every labelled row (train and validation), standardised.
    let set = labels::training_set(&store, &[snap], 90, labels_known)?;
    let width = set.features.len();
    let standardiser = Standardiser::fit(&set.values, width);
    let x: Vec<f64> = set
        .values
        .chunks_exact(width)
        .flat_map(|r| standardiser.apply(r).collect::<Vec<_>>())
        .collect();
    let p = ChurnParams::default();
    let (newton, newton_secs) = common::repeat(runs, || {
        Ok(logistic::fit(&x, width, &set.churned, p.l2, p.max_iterations)?)
    })?;
    let sklearn_secs = sklearn(NEWTON_CHOLESKY, &x, width, &set.churned, 1.0 / p.l2, runs);
    let gbt_params = GbtParams::default();
    let (gbt, gbt_secs) = common::repeat(runs, || Ok(gbt::fit(&x, width, &set.churned, &gbt_params)?))?;
    let hist_secs = sklearn(HIST_GBT, &x, width, &set.churned, 1.0 / p.l2, runs);
    let fixed = SegmentParams {
        k: Some(4),
        ..SegmentParams::default()
    };
    let (seg, seg_secs) = common::repeat(runs, || Ok(train::segments(&store, &snap, fixed.clone())?))?;
    let Model::Segments(seg) = seg.model else {
        return Err("not a segment model".into());
    };
    let (auto, auto_secs) = common::repeat(runs, || Ok(train::segments(&store, &snap, SegmentParams::default())?))?;
    let Model::Segments(auto) = auto.model else {
        return Err("not a segment model".into());
    };

    println!(
        "model benchmark: snapshot as of 2025-06-30 of {} customers, {runs} runs each",
        churn.train.rows + churn.validation.rows
    );
    println!("| fit | rows | s min / median / max | note |");
    println!("|---|---:|---:|---|");
    println!(
        "| BG/NBD + Gamma-Gamma | {} ({} repeat) | {} | {:.3} |",
        clv.customers_fitted,
        clv.repeat_customers_fitted,
        clv_secs.cell(2),
        clv.purchases
    );
    println!("| churn logistic regression, {} features | {} train + {} validation | {} | validation AUC {:.3} (labels, split and metrics included) |", churn.features.len(), churn.train.rows, churn.validation.rows, churn_secs.cell(2), churn.validation.roc_auc);
    println!(
        "| churn solver: Newton's method, fit only | {} × {width} | {} | {} steps, objective (C · Σ log loss + ½‖w‖²) {:.6} |",
        set.churned.len(),
        newton_secs.cell(3),
        newton.iterations,
        newton.objective / p.l2
    );
    match sklearn_secs {
        Ok(s) => println!(
            "| scikit-learn newton-cholesky, fit only | {} × {width} | {} | same matrix, C = {} |",
            set.churned.len(),
            s.cell(3),
            1.0 / p.l2
        ),
        Err(e) => println!("| scikit-learn newton-cholesky | – | not run | {e} |"),
    }
    println!(
        "| churn gradient-boosted trees, fit only | {} × {width} | {} | {} trees, {} leaves, deepest {} |",
        set.churned.len(),
        gbt_secs.cell(3),
        gbt.trees.len(),
        gbt.leaves(),
        gbt.depth()
    );
    match hist_secs {
        Ok(s) => println!(
            "| scikit-learn HistGradientBoostingClassifier, fit only | {} × {width} | {} | same matrix, defaults less early stopping; cis / scikit-learn median {:.2}× |",
            set.churned.len(),
            s.cell(3),
            gbt_secs.median / s.median
        ),
        Err(e) => println!("| scikit-learn HistGradientBoostingClassifier | – | not run | {e} |"),
    }
    println!(
        "| KMeans k = 4 (3 runs) | {} | {} | silhouette {:.3} on a 2,000-row sample |",
        seg.segments.iter().map(|s| s.size).sum::<usize>(),
        seg_secs.cell(2),
        seg.silhouette
    );
    println!(
        "| KMeans k chosen in 3..=6 by silhouette | {} | {} | k = {} |",
        auto.segments.iter().map(|s| s.size).sum::<usize>(),
        auto_secs.cell(2),
        auto.k
    );
    Ok(())
}
