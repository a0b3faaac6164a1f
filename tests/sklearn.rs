//! The churn fit against scikit-learn (Python): the same standardised CDNOW training matrix, fitted
//! by `LogisticRegression(solver="newton-cholesky")`, reaches the same optimum of
//! `C · Σ log loss + ½‖w‖²` (intercept unpenalised) as cis's Newton's method. HDBSCAN segments
//! against `sklearn.cluster.HDBSCAN` on the same standardised segment matrix.

use cis_core::AsOf;
use cis_features::{labels, snapshot};
use cis_models::churn::ChurnParams;
use cis_models::segments::{SegmentMatrix, SegmentMethod, SegmentParams, FEATURES, UNSEGMENTED};
use cis_models::{logistic, train, Model};

use crate::python::{python_json, python_skipped};
use crate::util::{cdnow_store, t};

/// Reads the matrix (f64, little-endian, row-major) and labels (one byte each), fits scikit-learn
/// and prints its coefficients and the objective of both fits, each computed here by one formula.
/// Floats are printed with `repr` (shortest round-trip text) so they reach Rust exactly.
const PYTHON: &str = r#"
import json, sys
import numpy as np
from sklearn.linear_model import LogisticRegression
x_path, y_path, width, c, theirs = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4]), json.loads(sys.argv[5])
X = np.fromfile(x_path, dtype="<f8").reshape(-1, width)
y = np.fromfile(y_path, dtype=np.uint8).astype(np.float64)
def objective(w, b):
    z = X @ w + b
    return c * np.sum(np.logaddexp(0.0, z) - y * z) + 0.5 * w @ w
m = LogisticRegression(C=c, solver="newton-cholesky", tol=1e-12, max_iter=1000).fit(X, y)
w, b = m.coef_[0], float(m.intercept_[0])
print(json.dumps({
    "rows": X.shape[0], "iterations": int(m.n_iter_[0]),
    "coefficients": [repr(float(v)) for v in w], "intercept": repr(b),
    "objective": repr(float(objective(w, b))),
    "objective_of_cis": repr(float(objective(np.array(theirs["coefficients"]), theirs["intercept"]))),
}))
"#;

#[test]
fn churn_reaches_scikit_learns_optimum_on_the_same_matrix() {
    if python_skipped("fitting scikit-learn") {
        return;
    }
    let store = cdnow_store();
    let (snap, ..) = snapshot::create(&store, AsOf::new(Some(t("1997-06-30")), None)).expect("snapshot");
    let set = labels::training_set(&store, &[snap], 90, t("1997-09-28")).expect("labels");
    let params = ChurnParams::default();
    let (l2, max_iterations) = (params.l2, params.max_iterations);
    let valid = params.validate().expect("valid");
    let design = valid.design(&set).expect("design");
    let fit = logistic::fit(&design.x_train, design.width, &design.y_train, l2, max_iterations).expect("fit");
    // The stored model carries exactly this fit.
    let model = valid.fit(&set, String::new()).expect("model");
    assert_eq!(
        (&model.coefficients, model.intercept),
        (&fit.coefficients, fit.intercept)
    );

    let dir = tempfile::tempdir().expect("tempdir");
    let (x_path, y_path) = (dir.path().join("x.f64"), dir.path().join("y.u8"));
    let x_bytes: Vec<u8> = design.x_train.iter().flat_map(|v| v.to_le_bytes()).collect();
    std::fs::write(&x_path, x_bytes).expect("write matrix");
    std::fs::write(&y_path, design.y_train.iter().map(|&y| u8::from(y)).collect::<Vec<_>>()).expect("write labels");
    let c = 1.0 / l2;
    let ours = serde_json::json!({ "coefficients": fit.coefficients, "intercept": fit.intercept });
    let (width, c_text, ours) = (design.width.to_string(), c.to_string(), ours.to_string());
    let args = [
        x_path.as_os_str(),
        y_path.as_os_str(),
        width.as_ref(),
        c_text.as_ref(),
        ours.as_ref(),
    ];
    let v = python_json(PYTHON, &args, "scikit-learn");
    println!("cis: {} Newton steps, objective {}", fit.iterations, fit.objective * c);
    let float = |v: &serde_json::Value| v.as_str().expect("float text").parse::<f64>().expect("a float");

    assert_eq!(v["rows"], design.y_train.len());
    assert!(design.y_train.len() > 1000 && design.width > 10);
    assert!(
        v["iterations"].as_u64().expect("count") < 1000,
        "scikit-learn converged"
    );
    let theirs: Vec<f64> = v["coefficients"].as_array().expect("list").iter().map(float).collect();
    assert_eq!(theirs.len(), fit.coefficients.len());
    let largest = fit
        .coefficients
        .iter()
        .zip(&theirs)
        .fold(0.0f64, |m, (a, b)| m.max((a - b).abs()));
    println!("largest coefficient difference {largest:e}");
    for ((ours, theirs), feature) in fit.coefficients.iter().zip(&theirs).zip(&set.features) {
        assert!(
            (ours - theirs).abs() <= 1e-6,
            "{feature}: cis {ours}, scikit-learn {theirs}"
        );
    }
    let intercept = float(&v["intercept"]);
    assert!(
        (fit.intercept - intercept).abs() <= 1e-6,
        "intercept: cis {}, scikit-learn {intercept}",
        fit.intercept
    );
    assert!(
        fit.coefficients.iter().any(|c| c.abs() > 0.1),
        "a fit that learned something: {:?}",
        fit.coefficients
    );

    let (objective, of_cis) = (float(&v["objective"]), float(&v["objective_of_cis"]));
    assert!(
        (of_cis - objective).abs() <= 1e-9 * objective,
        "objective: cis {of_cis}, scikit-learn {objective}"
    );
    // cis's own objective (over 1/C) is the one NumPy computes for its coefficients.
    assert!(
        (fit.objective * c - of_cis).abs() <= 1e-11 * of_cis,
        "cis reports {}, NumPy {of_cis}",
        fit.objective * c
    );
}

/// The 9 RFM and window features of the issue's scikit-learn reference: the issue does not list
/// them, so these are cis's RFM columns and its 30/90-day order windows.
pub const PEER_FEATURES: [&str; 9] = [
    "rfm_frequency",
    "rfm_recency_days",
    "rfm_age_days",
    "rfm_monetary",
    "days_since_last_order",
    "orders_30d",
    "orders_90d",
    "gross_revenue_30d",
    "gross_revenue_90d",
];

/// Bootstrap draws of the scored customers, and the generator's seed.
const DRAWS: usize = 2000;
const SEED: u64 = 20_260_101;

/// Fits `StandardScaler` + `LogisticRegression(C=1)` on the training matrix, scores the test one,
/// and for each column of cis's predictions the AUC difference (cis − scikit-learn) on the test
/// labels with a percentile interval over `draws` seeded resamples of the customers (the same
/// resamples for every column).
const PEER_PYTHON: &str = r#"
import json, sys
import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import log_loss, roc_auc_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
d, width, ours_width, draws, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
read = lambda name, w: np.fromfile(f"{d}/{name}", dtype="<f8").reshape(-1, w)
X, Xs = read("x_train.f64", width), read("x_test.f64", width)
y = np.fromfile(f"{d}/y_train.u8", dtype=np.uint8)
ys = np.fromfile(f"{d}/y_test.u8", dtype=np.uint8)
ours = read("p_ours.f64", ours_width)
theirs = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=1000)).fit(X, y).predict_proba(Xs)[:, 1]
rng = np.random.default_rng(seed)
samples = [i for i in (rng.integers(0, len(ys), len(ys)) for _ in range(draws)) if 0 < ys[i].sum() < len(i)]
out = {"sklearn_auc": float(roc_auc_score(ys, theirs)), "sklearn_log_loss": float(log_loss(ys, theirs)), "draws": len(samples), "ours": []}
for j in range(ours_width):
    p = ours[:, j]
    diffs = np.array([roc_auc_score(ys[i], p[i]) - roc_auc_score(ys[i], theirs[i]) for i in samples])
    lo, hi = np.percentile(diffs, [2.5, 97.5])
    out["ours"].append({"auc": float(roc_auc_score(ys, p)), "log_loss": float(log_loss(ys, p)),
                        "difference": float(roc_auc_score(ys, p) - roc_auc_score(ys, theirs)), "low": float(lo), "high": float(hi)})
print(json.dumps(out))
"#;

/// README "Churn on CDNOW, forward in time": each variant's AUC minus scikit-learn's on the scored
/// cutoff, with a seeded 95 % bootstrap interval. Both are trained on 1997-06-30 (scikit-learn on
/// every customer of it, as the issue's reference is) and scored on 1997-09-30.
#[test]
fn churn_variants_against_scikit_learns_logistic_regression_with_a_bootstrap_interval() {
    if python_skipped("comparing churn with scikit-learn") {
        return;
    }
    let test = crate::util::ChurnTest::new();
    let mut variants = test.variants();
    variants.push(("(g) the default, chosen by forward validation", test.default_method()));
    let predictions: Vec<Vec<f64>> = variants.iter().map(|(_, m)| test.score(m, &test.sept).1).collect();
    let set = labels::training_set(&test.store, &[test.june], 90, t(crate::util::CHURN_TRAIN_KNOWN)).expect("labels");
    let peer = PEER_FEATURES.map(String::from);
    let rows_of = |features: &[String], values: &[f64]| -> Vec<u8> {
        let cols = cis_models::columns(features, &peer).expect("the peer's features");
        values
            .chunks_exact(features.len())
            .flat_map(|r| cols.iter().flat_map(|&j| r[j].to_le_bytes()).collect::<Vec<_>>())
            .collect()
    };
    let (_, scored) = snapshot::load(&test.store, &test.sept).expect("load");
    let bytes = |b: &[bool]| b.iter().map(|&y| u8::from(y)).collect::<Vec<u8>>();
    let dir = tempfile::tempdir().expect("tempdir");
    let put = |name: &str, data: Vec<u8>| std::fs::write(dir.path().join(name), data).expect("write");
    put("x_train.f64", rows_of(&set.features, &set.values));
    put("y_train.u8", bytes(&set.churned));
    put("x_test.f64", rows_of(&scored.features, &scored.matrix.values));
    put("y_test.u8", bytes(&test.truth));
    let ours: Vec<u8> = (0..test.truth.len())
        .flat_map(|i| predictions.iter().flat_map(move |p| p[i].to_le_bytes()))
        .collect();
    put("p_ours.f64", ours);
    let (width, ours_width) = (PEER_FEATURES.len().to_string(), variants.len().to_string());
    let (draws, seed) = (DRAWS.to_string(), SEED.to_string());
    let args = [
        dir.path().as_os_str(),
        width.as_ref(),
        ours_width.as_ref(),
        draws.as_ref(),
        seed.as_ref(),
    ];
    let v = python_json(PEER_PYTHON, &args, "numpy scikit-learn");
    let number = |v: &serde_json::Value| v.as_f64().expect("a number");
    let sklearn_auc = number(&v["sklearn_auc"]);
    println!(
        "scikit-learn LogisticRegression (9 features): ROC AUC {sklearn_auc:.4}, log loss {:.4}; {} draws",
        number(&v["sklearn_log_loss"]),
        v["draws"]
    );
    // The issue's reference measured 0.7903 with its 9 features; ours are a guess at them.
    assert!((sklearn_auc - 0.7903).abs() < 0.01, "scikit-learn AUC {sklearn_auc}");
    for ((name, _), (r, p)) in variants
        .iter()
        .zip(v["ours"].as_array().expect("list").iter().zip(&predictions))
    {
        let (low, high, difference) = (number(&r["low"]), number(&r["high"]), number(&r["difference"]));
        println!(
            "{name:<46} AUC {:.4} (log loss {:.4}), minus scikit-learn's {difference:+.4}, 95 % [{low:+.4}, {high:+.4}]",
            number(&r["auc"]),
            number(&r["log_loss"])
        );
        // scikit-learn's AUC of our predictions is cis's own (linfa's, in f32).
        let ours = cis_models::metrics::evaluate(p, &test.truth).expect("metrics").roc_auc;
        assert!(
            (number(&r["auc"]) - ours).abs() < 1e-3,
            "{name}: {} vs {ours}",
            r["auc"]
        );
        assert!(low <= difference && difference <= high, "{name}");
    }
}

/// Clusters the matrix (f64, little-endian, row-major) with `sklearn.cluster.HDBSCAN` and scores
/// cis's labels (JSON, `-1` noise) against its by the adjusted Rand index, noise a label of its own.
const HDBSCAN_PYTHON: &str = r#"
import json, sys
import numpy as np
from sklearn.cluster import HDBSCAN
from sklearn.metrics import adjusted_rand_score
x_path, width, min_cluster_size, min_samples, ours_path = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
X = np.fromfile(x_path, dtype="<f8").reshape(-1, width)
ours = np.array(json.load(open(ours_path)))
theirs = HDBSCAN(min_cluster_size=min_cluster_size, min_samples=min_samples).fit(X).labels_
both = (ours >= 0) & (theirs >= 0)
print(json.dumps({
    "rows": X.shape[0], "clusters": int(theirs.max() + 1), "noise": int((theirs < 0).sum()),
    "ari": float(adjusted_rand_score(ours, theirs)),
    "ari_clustered_by_both": float(adjusted_rand_score(ours[both], theirs[both])),
}))
"#;

/// HDBSCAN segments against scikit-learn's on the same standardised CDNOW matrix (2,357
/// customers, 1997-09-30), at the CLI's default parameters and at smaller ones.
#[test]
fn hdbscan_segments_agree_with_scikit_learns_hdbscan() {
    if python_skipped("comparing HDBSCAN with scikit-learn") {
        return;
    }
    let store = cdnow_store();
    let (snap, ..) = snapshot::create(&store, AsOf::new(Some(t("1997-09-30")), None)).expect("snapshot");
    let (_, loaded) = snapshot::load(&store, &snap).expect("load");
    let matrix = SegmentMatrix::of(&loaded).expect("matrix");
    let dir = tempfile::tempdir().expect("tempdir");
    let x_path = dir.path().join("x.f64");
    std::fs::write(
        &x_path,
        matrix.x.iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<u8>>(),
    )
    .expect("write matrix");
    for (min_cluster_size, min_samples) in [(50, 50), (25, 10)] {
        let labels = matrix.hdbscan(min_cluster_size, min_samples).expect("hdbscan");
        assert_eq!(labels.len(), 2357);
        let clusters = labels.iter().flatten().max().map_or(0, |m| m + 1);
        let noise = labels.iter().filter(|l| l.is_none()).count();

        // The stored model is this clustering: one segment per cluster, noise unsegmented.
        let trained = train::segments(
            &store,
            &snap,
            SegmentParams {
                method: SegmentMethod::Hdbscan {
                    min_cluster_size,
                    min_samples,
                },
                ..SegmentParams::default()
            },
        )
        .expect("fit");
        let Model::Segments(model) = &trained.model else {
            panic!("segments")
        };
        let density = model.density.as_ref().expect("an HDBSCAN model");
        assert_eq!((model.k, density.unsegmented.size), (clusters, noise));
        for (id, s) in model.segments.iter().enumerate() {
            assert_eq!(s.size, labels.iter().filter(|&&l| l == Some(id)).count(), "{}", s.name);
        }
        // Scoring's rule (nearest centroid within its farthest member) on the fitted customers.
        let agree = matrix
            .raw
            .iter()
            .zip(&labels)
            .filter(|(raw, l)| {
                let s = model.assign(raw);
                l.map_or(s.name == UNSEGMENTED, |id| s.id == id && s.name != UNSEGMENTED)
            })
            .count();

        let ours: Vec<i64> = labels.iter().map(|l| l.map_or(-1, |id| id as i64)).collect();
        let ours_path = dir.path().join("ours.json");
        std::fs::write(&ours_path, serde_json::to_vec(&ours).expect("json")).expect("write labels");
        let (width, mcs, ms) = (
            FEATURES.len().to_string(),
            min_cluster_size.to_string(),
            min_samples.to_string(),
        );
        let args = [
            x_path.as_os_str(),
            width.as_ref(),
            mcs.as_ref(),
            ms.as_ref(),
            ours_path.as_os_str(),
        ];
        let v = python_json(HDBSCAN_PYTHON, &args, "numpy scikit-learn");
        let ari = v["ari"].as_f64().expect("ari");
        println!(
            "min_cluster_size {min_cluster_size}, min_samples {min_samples}: cis {clusters} clusters, {noise} noise; scikit-learn {} clusters, {} noise; ARI {ari:.4} (on rows both cluster {:.4}); scoring's rule keeps {agree} of 2357 fitted labels",
            v["clusters"], v["noise"], v["ari_clustered_by_both"]
        );
        assert_eq!(v["rows"], 2357);
        assert!(clusters >= 2, "{clusters} clusters");
        assert!(
            ari >= 0.9,
            "ARI {ari} at min_cluster_size {min_cluster_size}, min_samples {min_samples}"
        );
    }
}
