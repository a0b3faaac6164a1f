//! The churn fit against scikit-learn (Python): the same standardised CDNOW training matrix, fitted
//! by `LogisticRegression(solver="newton-cholesky")`, reaches the same optimum of
//! `C · Σ log loss + ½‖w‖²` (intercept unpenalised) as cis's Newton's method.

use cis_core::AsOf;
use cis_features::{labels, snapshot};
use cis_models::churn::ChurnParams;
use cis_models::logistic;

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
