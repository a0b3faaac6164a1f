//! Model fitting on 100,000 synthetic customers: BG/NBD + Gamma-Gamma, churn logistic
//! regression on every feature, KMeans. Uses the store `benches/snapshot.rs` builds.
//! The churn solver alone is also timed on every labelled row, standardised, beside
//! scikit-learn's `newton-cholesky` on the same matrix (Python with numpy and scikit-learn; both
//! timed in-process around the fit call only, the matrix already in memory). So are gradient-boosted
//! trees (`--method gbt`, [`cis_models::gbt`]), beside scikit-learn's HistGradientBoostingClassifier
//! with its defaults on the same matrix, but without early stopping (its default turns it on above
//! 10,000 rows, holding out 10 % and stopping early; both then grow all 100 trees); the ratio of
//! the medians is printed.
//! So is the survival method's Cox fit (Efron ties, default penalizer), beside lifelines'
//! `CoxPHFitter` on the same rows, times to the next order and event flags, less the columns
//! constant on them (which lifelines cannot standardise and cis leaves out of the fit); the ratio
//! is printed.
//!
//! BG/NBD and Pareto/NBD with Gamma-Gamma are timed beside lifetimes (`BetaGeoFitter`,
//! `ParetoNBDFitter`, `GammaGammaFitter`) on the same RFM rows, and the embedding beside
//! scikit-learn's PCA on the same raw matrix (the transform done in NumPy, timed too). Every Python
//! peer prints the ratio of cis's median to its own; one not installed prints why it did not run.
//!
//! Run: `cargo bench --bench models` (env `CIS_BENCH_CUSTOMERS` to change the size).

mod common;

use cis_core::time::parse_timestamp;
use std::process::Command;

use cis_core::AsOf;
use cis_features::{labels, snapshot};
use cis_models::churn::ChurnParams;
use cis_models::clv::{PurchaseModelKind, RfmRow};
use cis_models::embedding::EmbeddingParams;
use cis_models::gbt::{self, GbtParams};
use cis_models::lifetime::{rfm_columns, rfm_row, ClvParams};
use cis_models::logistic;
use cis_models::segments::SegmentParams;
use cis_models::standardise::Standardiser;
use cis_models::survival::{self, SurvivalParams};
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

/// Fits lifelines `runs` times on the rows in `argv[1]` (f64 little-endian, row-major), durations
/// in `argv[2]` (f64) and events in `argv[3]` (one byte each); prints each fit's seconds as JSON.
/// Half Newton steps, as in the lifelines test: its default first step overshoots on snapshot
/// features (some columns duplicate others) and stops short of the optimum.
const LIFELINES: &str = r#"
import json, sys, time, warnings
import numpy as np, pandas as pd
from lifelines import CoxPHFitter
warnings.simplefilter("ignore")
x_path, t_path, e_path, width, penalizer, runs = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), float(sys.argv[5]), int(sys.argv[6])
df = pd.DataFrame(np.fromfile(x_path, dtype="<f8").reshape(-1, width), columns=[f"x{j}" for j in range(width)])
df["T"] = np.fromfile(t_path, dtype="<f8")
df["E"] = np.fromfile(e_path, dtype=np.uint8).astype(bool)
secs = []
for _ in range(runs):
    start = time.perf_counter()
    CoxPHFitter(penalizer=penalizer).fit(df, "T", "E", fit_options={"step_size": 0.5})
    secs.append(time.perf_counter() - start)
print(json.dumps(secs))
"#;

/// A Python peer's fit times: `script` run with `files` written (in order, their paths first among
/// its arguments) and then `args`; or why there are none.
fn python_peer(script: &str, files: &[Vec<u8>], args: &[String]) -> BenchResult<Spread> {
    let dir = tempfile::tempdir()?;
    let mut command = Command::new("python3");
    command.arg("-c").arg(script);
    for (i, bytes) in files.iter().enumerate() {
        let path = dir.path().join(format!("arg{i}.bin"));
        std::fs::write(&path, bytes)?;
        command.arg(path);
    }
    let out = command.args(args).output()?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).trim().to_string().into());
    }
    let secs: Vec<f64> = serde_json::from_slice(&out.stdout)?;
    Ok(Spread::of(secs).ok_or("no run")?)
}

fn f64_bytes(v: &[f64]) -> Vec<u8> {
    v.iter().flat_map(|v| v.to_le_bytes()).collect()
}

fn bool_bytes(v: &[bool]) -> Vec<u8> {
    v.iter().map(|&b| u8::from(b)).collect()
}

/// scikit-learn's fit times of `estimator` on the same matrix, or why there are none.
fn sklearn(estimator: &str, x: &[f64], width: usize, y: &[bool], c: f64, runs: usize) -> BenchResult<Spread> {
    python_peer(
        &SKLEARN.replace("ESTIMATOR", estimator),
        &[f64_bytes(x), bool_bytes(y)],
        &[width.to_string(), c.to_string(), runs.to_string()],
    )
}

/// A Python peer's row beside cis's fit of the same data: its times and the ratio of the medians,
/// or why it did not run (the last line of Python's error).
fn peer_row(name: &str, rows: &str, peer: &BenchResult<Spread>, cis: &Spread, note: &str) {
    match peer {
        Ok(s) => println!(
            "| {name}, fit only | {rows} | {} | {note}; cis / peer median {:.2}× |",
            s.cell(3),
            cis.median / s.median
        ),
        Err(e) => {
            let e = e.to_string();
            println!("| {name} | – | not run | {} |", e.lines().last().unwrap_or_default());
        }
    }
}

/// Fits lifetimes' purchase model (`argv[2]`: bg-nbd or pareto-nbd) and Gamma-Gamma on the RFM rows
/// in `argv[1]` (x, t_x, T in weeks and monetary, f64 little-endian) `runs` times; prints the seconds.
const LIFETIMES: &str = r#"
import json, sys, time, warnings
import numpy as np
from lifetimes import BetaGeoFitter, ParetoNBDFitter, GammaGammaFitter
warnings.simplefilter("ignore")
rfm_path, model, runs = sys.argv[1], sys.argv[2], int(sys.argv[3])
r = np.fromfile(rfm_path, dtype="<f8").reshape(-1, 4)
x, tx, T, m = r[:, 0], r[:, 1], r[:, 2], r[:, 3]
fitter = {"bg-nbd": BetaGeoFitter, "pareto-nbd": ParetoNBDFitter}[model]
repeat = x > 0
secs = []
for _ in range(runs):
    start = time.perf_counter()
    fitter().fit(x, tx, T)
    GammaGammaFitter().fit(x[repeat], m[repeat])
    secs.append(time.perf_counter() - start)
print(json.dumps(secs))
"#;

/// Applies the embedding's transform (`ln(1 + x)` of the columns flagged in `argv[3]`, then
/// standardising) to the raw snapshot matrix in `argv[1]` and fits scikit-learn's PCA with
/// `argv[4]` components, `runs` times; prints the seconds.
const PCA: &str = r#"
import json, sys, time
import numpy as np
from sklearn.decomposition import PCA
x_path, width, logged, dims, runs = sys.argv[1], int(sys.argv[2]), json.loads(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
raw = np.fromfile(x_path, dtype="<f8").reshape(-1, width)
secs = []
for _ in range(runs):
    start = time.perf_counter()
    X = raw.copy()
    cols = [j for j, log in enumerate(logged) if log]
    X[:, cols] = np.log1p(np.maximum(X[:, cols], 0.0))
    std = X.std(axis=0)
    std[std <= 1e-12] = 1.0
    PCA(n_components=dims, svd_solver="full").fit((X - X.mean(axis=0)) / std)
    secs.append(time.perf_counter() - start)
print(json.dumps(secs))
"#;

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
    // The Cox fit on the same rows, less the constant columns (zero once standardised).
    let (live, x_live) = survival::without_constant_columns(&x, width);
    let sp = SurvivalParams::default();
    let (cox, cox_secs) = common::repeat(runs, || {
        Ok(survival::fit(
            &x_live,
            live.len(),
            &set.durations,
            &set.observed,
            sp.penalizer,
            sp.max_iterations,
        )?)
    })?;
    // lifelines penalises its own (n − 1)-deviation standardisation: p·(n − 1)/n is cis's p.
    let n = set.durations.len() as f64;
    let lifelines_secs = python_peer(
        LIFELINES,
        &[f64_bytes(&x_live), f64_bytes(&set.durations), bool_bytes(&set.observed)],
        &[
            live.len().to_string(),
            (sp.penalizer * (n - 1.0) / n).to_string(),
            runs.to_string(),
        ],
    );
    // CLV fits on the snapshot in memory (train::clv also loads it), beside lifetimes on its RFM rows.
    let (_, loaded) = snapshot::load(&store, &snap)?;
    let cols = rfm_columns(&loaded)?;
    let rfm: Vec<RfmRow> = (0..loaded.matrix.customers.len())
        .filter_map(|i| rfm_row(&loaded, &cols, i))
        .collect();
    let rfm_bytes = f64_bytes(
        &rfm.iter()
            .flat_map(|r| [r.x, r.t_x, r.t, r.monetary])
            .collect::<Vec<_>>(),
    );
    let clv_fit = |kind: PurchaseModelKind| {
        let params = ClvParams {
            purchase_model: kind,
            ..ClvParams::default()
        };
        common::repeat(runs, || Ok(params.fit(&loaded)?))
    };
    let lifetimes = |kind: &str| {
        python_peer(
            LIFETIMES,
            std::slice::from_ref(&rfm_bytes),
            &[kind.to_string(), runs.to_string()],
        )
    };
    let (bg, pareto) = (
        clv_fit(PurchaseModelKind::BgNbd)?,
        clv_fit(PurchaseModelKind::ParetoNbd)?,
    );
    let (bg_peer, pareto_peer) = (lifetimes("bg-nbd"), lifetimes("pareto-nbd"));
    let (pca, pca_secs) = common::repeat(runs, || Ok(EmbeddingParams::default().fit(&loaded)?))?;
    let pca_peer = python_peer(
        PCA,
        &[f64_bytes(&loaded.matrix.values)],
        &[
            loaded.features.len().to_string(),
            serde_json::to_string(&pca.logged)?,
            pca.params.dims.to_string(),
            runs.to_string(),
        ],
    );
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
    let matrix = format!("{} × {width}", set.churned.len());
    peer_row(
        "scikit-learn newton-cholesky",
        &matrix,
        &sklearn_secs,
        &newton_secs,
        &format!("same matrix, C = {}", 1.0 / p.l2),
    );
    let cox_note = format!(
        "{} steps, penalizer {}, {} events",
        cox.iterations,
        sp.penalizer,
        set.observed.iter().filter(|&&e| e).count()
    );
    println!(
        "| churn survival: Cox (Efron), fit only | {} × {} | {} | {cox_note} |",
        set.durations.len(),
        live.len(),
        cox_secs.cell(3)
    );
    peer_row(
        "lifelines CoxPHFitter",
        &format!("{} × {}", set.durations.len(), live.len()),
        &lifelines_secs,
        &cox_secs,
        "same rows",
    );
    println!(
        "| churn gradient-boosted trees, fit only | {} × {width} | {} | {} trees, {} leaves, deepest {} |",
        set.churned.len(),
        gbt_secs.cell(3),
        gbt.trees.len(),
        gbt.leaves(),
        gbt.depth()
    );
    peer_row(
        "scikit-learn HistGradientBoostingClassifier",
        &matrix,
        &hist_secs,
        &gbt_secs,
        "same matrix, defaults less early stopping",
    );
    for (kind, (fit, secs), peer) in [
        (PurchaseModelKind::BgNbd, &bg, &bg_peer),
        (PurchaseModelKind::ParetoNbd, &pareto, &pareto_peer),
    ] {
        println!(
            "| {} + Gamma-Gamma, fit only | {} ({} repeat) | {} | {:.3} |",
            kind.name(),
            fit.customers_fitted,
            fit.repeat_customers_fitted,
            secs.cell(3),
            fit.purchases
        );
        peer_row(
            &format!("lifetimes {} + GammaGammaFitter", kind.name()),
            &format!("{} ({} repeat)", rfm.len(), fit.repeat_customers_fitted),
            peer,
            secs,
            "same RFM rows",
        );
    }
    println!(
        "| embedding: principal components, fit only | {} × {} | {} | {} dimensions explain {:.1} % |",
        loaded.matrix.customers.len(),
        loaded.features.len(),
        pca_secs.cell(3),
        pca.params.dims,
        100.0 * pca.explained()
    );
    peer_row(
        "scikit-learn PCA (same transform in NumPy)",
        &format!("{} × {}", loaded.matrix.customers.len(), loaded.features.len()),
        &pca_peer,
        &pca_secs,
        "same raw matrix",
    );
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
