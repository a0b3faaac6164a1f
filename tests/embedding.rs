//! Behaviour embeddings against scikit-learn's PCA: the raw CDNOW snapshot matrix goes to Python,
//! which applies the documented transform itself (`ln(1 + x)` of the columns the model logs,
//! standardising by the population standard deviation) and fits `PCA`; the axes, their variances
//! and every customer's vector must be cis's.

use cis_core::AsOf;
use cis_features::snapshot;
use cis_models::embedding::EmbeddingParams;
use cis_models::{train, Model};

use crate::python::{python_json, python_skipped};
use crate::util::{cdnow_store, t};

/// Prints scikit-learn's explained variances, components and vectors with `repr` floats.
const PYTHON: &str = r#"
import json, sys
import numpy as np
from sklearn.decomposition import PCA
x_path, width, logged, dims = sys.argv[1], int(sys.argv[2]), json.loads(sys.argv[3]), int(sys.argv[4])
X = np.fromfile(x_path, dtype="<f8").reshape(-1, width).copy()
for j, log in enumerate(logged):
    if log:
        X[:, j] = np.log1p(np.maximum(X[:, j], 0.0))
std = X.std(axis=0)
std[std <= 1e-12] = 1.0
Z = (X - X.mean(axis=0)) / std
p = PCA(n_components=dims, svd_solver="full").fit(Z)
f = lambda a: [repr(float(v)) for v in np.ravel(a)]
print(json.dumps({
    "rows": int(Z.shape[0]),
    "explained_variance": f(p.explained_variance_),
    "explained_variance_ratio": f(p.explained_variance_ratio_),
    "components": f(p.components_),
    "vectors": f(p.transform(Z)),
}))
"#;

fn floats(v: &serde_json::Value) -> Vec<f64> {
    v.as_array()
        .expect("a list")
        .iter()
        .map(|x| x.as_str().expect("repr text").parse().expect("a float"))
        .collect()
}

#[test]
fn embeddings_are_scikit_learns_principal_components() {
    if python_skipped("comparing embeddings with scikit-learn's PCA") {
        return;
    }
    let store = cdnow_store();
    let (snap, ..) = snapshot::create(&store, AsOf::new(Some(t("1997-09-30")), None)).expect("snapshot");
    let (_, loaded) = snapshot::load(&store, &snap).expect("load");
    let dims = 6;
    let trained = train::embedding(&store, &snap, EmbeddingParams { dims }).expect("fit");
    let Model::Embedding(m) = &trained.model else {
        panic!("an embedding")
    };
    let width = loaded.features.len();
    let dir = tempfile::tempdir().expect("tempdir");
    let x_path = dir.path().join("x.f64");
    let bytes: Vec<u8> = loaded.matrix.values.iter().flat_map(|v| v.to_le_bytes()).collect();
    std::fs::write(&x_path, bytes).expect("write matrix");
    let (w, logged, d) = (
        width.to_string(),
        serde_json::to_string(&m.logged).expect("json"),
        dims.to_string(),
    );
    let v = python_json(
        PYTHON,
        &[x_path.as_os_str(), w.as_ref(), logged.as_ref(), d.as_ref()],
        "numpy scikit-learn",
    );
    assert_eq!(v["rows"], 2357);
    let close = |a: f64, b: f64, tol: f64| (a - b).abs() <= tol * (1.0 + b.abs());
    for (ours, theirs) in m.explained_variance.iter().zip(floats(&v["explained_variance"])) {
        assert!(close(*ours, theirs, 1e-9), "variance {ours} vs {theirs}");
    }
    for (ours, theirs) in m
        .explained_variance_ratio
        .iter()
        .zip(floats(&v["explained_variance_ratio"]))
    {
        assert!(close(*ours, theirs, 1e-9), "ratio {ours} vs {theirs}");
    }
    // An axis is defined up to its sign: align scikit-learn's with ours, then compare every loading
    // and every customer's coordinate on it.
    let components = floats(&v["components"]);
    let vectors = floats(&v["vectors"]);
    let ours = m.embed_snapshot(&loaded).expect("embed");
    for (d, axis) in m.components.iter().enumerate() {
        let theirs = &components[d * width..(d + 1) * width];
        let dot: f64 = axis.iter().zip(theirs).map(|(a, b)| a * b).sum();
        let sign = dot.signum();
        assert!(dot.abs() > 1.0 - 1e-9, "axis {d}: |cos| {dot}");
        for (a, b) in axis.iter().zip(theirs) {
            assert!(close(*a, sign * b, 1e-7), "axis {d}: loading {a} vs {}", sign * b);
        }
        for (i, (a, b)) in ours.chunks_exact(dims).zip(vectors.chunks_exact(dims)).enumerate() {
            assert!(
                close(a[d], sign * b[d], 1e-7),
                "customer {i}, dimension {d}: {} vs {}",
                a[d],
                sign * b[d]
            );
        }
    }
    println!(
        "CDNOW 1997-09-30, {width} features: {dims} dimensions explain {:.1}% ({:?})",
        100.0 * m.explained(),
        m.explained_variance_ratio
    );
}
