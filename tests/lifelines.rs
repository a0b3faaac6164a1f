//! The survival churn fit against lifelines (Python): the same standardised CDNOW training rows,
//! times to the next order and event flags, fitted by `CoxPHFitter` (Efron ties, like cis), give
//! the same coefficients and concordance — unpenalised on the linearly independent ones of the
//! scikit-learn reference's 9 RFM and window columns (the full set is collinear, and sparse
//! columns such as 7-day counts drive the unpenalised optimum off to infinity, so there is none to
//! agree on), and with cis's default penalizer on every column that is not constant.

use cis_core::AsOf;
use cis_features::{labels, snapshot};
use cis_models::churn::{ChurnMethod, ChurnParams, Learned};
use cis_models::survival::{self, SurvivalParams};

use crate::python::{python_json, python_skipped};
use crate::sklearn::PEER_FEATURES;
use crate::util::{cdnow_store, t};

/// Reads the rows (f64, little-endian, row-major), durations (f64) and events (one byte each),
/// fits lifelines once per penalizer and prints coefficients, concordance and log-likelihood with
/// `repr` (shortest round-trip text).
const PYTHON: &str = r#"
import json, sys
import numpy as np, pandas as pd
from lifelines import CoxPHFitter
x_path, t_path, e_path, width, penalizer = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), float(sys.argv[5])
X = np.fromfile(x_path, dtype="<f8").reshape(-1, width)
df = pd.DataFrame(X, columns=[f"x{j}" for j in range(width)])
df["T"] = np.fromfile(t_path, dtype="<f8")
df["E"] = np.fromfile(e_path, dtype=np.uint8).astype(bool)
# lifelines' default first step (0.95 of Newton's) overshoots on these rows (some columns are
# duplicates of others) and it stops far from the optimum (log-likelihood -3249 against -2439);
# half steps reach it, as does starting it at cis's optimum.
m = CoxPHFitter(penalizer=penalizer).fit(df, "T", "E", fit_options={"step_size": 0.5})
print(json.dumps({
    "rows": int(X.shape[0]),
    "coefficients": [repr(float(v)) for v in m.params_.values],
    "concordance": repr(float(m.concordance_index_)),
    "log_likelihood": repr(float(m.log_likelihood_)),
}))
"#;

/// Of `candidates`, the columns of `x` (row-major, `width` wide) that are linearly independent, greedily in order:
/// each kept when its residual against the kept ones (a Cholesky step on XᵀX) is not negligible.
fn independent_columns(x: &[f64], width: usize, candidates: &[usize]) -> Vec<usize> {
    let n = x.len() / width;
    let gram = |a: usize, b: usize| (0..n).map(|i| x[i * width + a] * x[i * width + b]).sum::<f64>();
    let mut kept: Vec<usize> = Vec::new();
    // Rows of L for the kept columns, in kept order.
    let mut l: Vec<Vec<f64>> = Vec::new();
    for &j in candidates {
        let mut row = Vec::with_capacity(kept.len() + 1);
        for (k, &c) in kept.iter().enumerate() {
            let s: f64 = (0..k).map(|m| row[m] * l[k][m]).sum();
            row.push((gram(j, c) - s) / l[k][k]);
        }
        let pivot = gram(j, j) - row.iter().map(|v| v * v).sum::<f64>();
        if pivot > 1e-6 * n as f64 {
            row.push(pivot.sqrt());
            kept.push(j);
            l.push(row);
        }
    }
    kept
}

#[test]
fn the_cox_fit_matches_lifelines_on_the_same_rows() {
    if python_skipped("fitting lifelines") {
        return;
    }
    let store = cdnow_store();
    let (snap, ..) = snapshot::create(&store, AsOf::new(Some(t("1997-06-30")), None)).expect("snapshot");
    let set = labels::training_set(&store, &[snap], 90, t("1997-09-28")).expect("labels");
    let params = SurvivalParams::default();
    let valid = ChurnParams {
        method: ChurnMethod::Survival(params.clone()),
        ..ChurnParams::default()
    }
    .validate()
    .expect("valid");
    let d = valid.design(&set).expect("design");
    let n = d.durations_train.len();
    assert!(n > 1000 && d.observed_train.iter().any(|&e| e) && d.observed_train.iter().any(|&e| !e));

    // The stored model carries exactly this fit.
    let model = valid.fit(&set, String::new()).expect("model");
    let Some(Learned::Survival(cox)) = &model.learned else {
        panic!("a Cox fit")
    };
    let full = survival::fit_training_rows(&params, &d).expect("fit");
    assert_eq!(cox.coefficients, full.coefficients);

    let peer: Vec<usize> = PEER_FEATURES
        .iter()
        .map(|f| set.features.iter().position(|g| g == f).expect("a peer feature"))
        .collect();
    let independent = independent_columns(&d.x_train, d.width, &peer);
    assert!(independent.len() >= 5, "{independent:?}");
    // Columns constant on the training rows are all zero once standardised: lifelines would divide
    // by their zero deviation, and cis leaves them out of the fit (coefficient 0) anyway.
    let every: Vec<usize> = (0..d.width)
        .filter(|&j| d.x_train.chunks_exact(d.width).any(|r| r[j] != 0.0))
        .collect();
    assert!(
        every.len() > 20
            && full
                .coefficients
                .iter()
                .enumerate()
                .all(|(j, b)| every.contains(&j) || *b == 0.0)
    );
    // lifelines standardises the columns again with the sample (n − 1) deviation and penalises
    // those coefficients: on rows of population deviation 1 its penalizer p is cis's p·n/(n − 1).
    let rescale = n as f64 / (n as f64 - 1.0);
    for (columns, penalizer) in [(&every, params.penalizer), (&independent, 0.0)] {
        let width = columns.len();
        let x: Vec<f64> = d
            .x_train
            .chunks_exact(d.width)
            .flat_map(|r| columns.iter().map(move |&j| r[j]))
            .collect();
        let ours = survival::fit(
            &x,
            width,
            &d.durations_train,
            &d.observed_train,
            penalizer * rescale,
            100,
        )
        .expect("fit");
        let eta: Vec<f64> = x
            .chunks_exact(width)
            .map(|r| r.iter().zip(&ours.coefficients).map(|(a, b)| a * b).sum())
            .collect();
        let c = survival::concordance(&d.durations_train, &d.observed_train, &eta);

        let dir = tempfile::tempdir().expect("tempdir");
        let paths = ["x.f64", "t.f64", "e.u8"].map(|f| dir.path().join(f));
        let bytes = |v: &[f64]| v.iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<u8>>();
        std::fs::write(&paths[0], bytes(&x)).expect("write rows");
        std::fs::write(&paths[1], bytes(&d.durations_train)).expect("write durations");
        let events: Vec<u8> = d.observed_train.iter().map(|&e| u8::from(e)).collect();
        std::fs::write(&paths[2], events).expect("write events");
        let (width_text, penalizer_text) = (width.to_string(), penalizer.to_string());
        let args = [
            paths[0].as_os_str(),
            paths[1].as_os_str(),
            paths[2].as_os_str(),
            width_text.as_ref(),
            penalizer_text.as_ref(),
        ];
        let v = python_json(PYTHON, &args, "lifelines");
        let float = |v: &serde_json::Value| v.as_str().expect("float text").parse::<f64>().expect("a float");
        assert_eq!(v["rows"], n);
        let theirs: Vec<f64> = v["coefficients"].as_array().expect("list").iter().map(float).collect();
        assert_eq!(theirs.len(), width);
        let largest = ours
            .coefficients
            .iter()
            .zip(&theirs)
            .fold(0.0f64, |m, (a, b)| m.max((a - b).abs()));
        println!(
            "penalizer {penalizer}, {width} columns: {} Newton steps, largest coefficient difference {largest:e}",
            ours.iterations
        );
        for ((a, b), &j) in ours.coefficients.iter().zip(&theirs).zip(columns.iter()) {
            assert!((a - b).abs() <= 1e-4, "{}: cis {a}, lifelines {b}", set.features[j]);
        }
        assert!(
            ours.coefficients.iter().any(|b| b.abs() > 0.05),
            "{:?}",
            ours.coefficients
        );
        let theirs_c = float(&v["concordance"]);
        assert!(
            (c - theirs_c).abs() <= 1e-3,
            "concordance: cis {c}, lifelines {theirs_c}"
        );
        if penalizer == 0.0 {
            let ll = float(&v["log_likelihood"]);
            assert!(
                (ours.log_likelihood - ll).abs() <= 1e-6 * ll.abs(),
                "log-likelihood: cis {}, lifelines {ll}",
                ours.log_likelihood
            );
        }
    }
}
