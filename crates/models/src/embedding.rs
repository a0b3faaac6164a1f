//! Behaviour embeddings: a low-dimensional vector per customer, the principal components of
//! their snapshot features.
//!
//! Every feature of the snapshot is a column. A column never negative in the training snapshot
//! (counts, money, days, rates) is taken as `ln(1 + x)` first, so a few very large customers do
//! not own the axes; then every column is standardised and the covariance of the standardised
//! rows is diagonalised (linfa-linalg's symmetric eigendecomposition). The `dims` axes of largest
//! variance are the embedding; each customer's vector is the projection of their standardised
//! row on them, so the vectors are centred and uncorrelated, with the axes' variances.
//!
//! Deterministic: an axis's sign is chosen so its largest-magnitude loading is positive (the
//! convention scikit-learn's PCA follows), so the same snapshot gives the same model and hash.

use linfa_linalg::eigh::{EigSort, Eigh};
use ndarray::Array2;
use serde::{Deserialize, Serialize};

use crate::standardise::Standardiser;
use crate::{columns, FitError, ModelError, ParamError};
use cis_features::snapshot::Snapshot;

/// The dimensions `cis train embedding` gives when none are asked for.
pub const DEFAULT_DIMS: usize = 8;

/// The name of an embedding's dimension `d` (0-based) as a column: `embedding_1`, `embedding_2`, …
pub fn column_name(d: usize) -> String {
    format!("embedding_{}", d + 1)
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EmbeddingParams {
    /// Dimensions kept: at least 1, at most the number of features.
    pub dims: usize,
}

impl Default for EmbeddingParams {
    fn default() -> Self {
        EmbeddingParams { dims: DEFAULT_DIMS }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EmbeddingModel {
    pub params: EmbeddingParams,
    /// The snapshot features it reads, in column order.
    pub features: Vec<String>,
    pub definition_set: String,
    /// Per feature: taken as `ln(1 + max(x, 0))` before standardising.
    pub logged: Vec<bool>,
    pub standardiser: Standardiser,
    /// The axes in standardised feature space, one per dimension (unit length, `features` wide),
    /// largest variance first.
    pub components: Vec<Vec<f64>>,
    /// Variance of the customers' vectors along each axis (covariance with `n − 1`).
    pub explained_variance: Vec<f64>,
    /// Each axis's share of the total variance of the standardised features.
    pub explained_variance_ratio: Vec<f64>,
    /// Customers it was fitted on.
    pub customers: usize,
}

impl EmbeddingParams {
    pub fn fit(&self, snapshot: &Snapshot) -> Result<EmbeddingModel, ModelError> {
        let width = snapshot.features.len();
        if self.dims == 0 || self.dims > width {
            return Err(ParamError::EmbeddingDims {
                dims: self.dims,
                features: width,
            }
            .into());
        }
        let n = snapshot.matrix.customers.len();
        if n < 2 {
            return Err(FitError::TooFewCustomers {
                customers: n,
                segments: 1,
            }
            .into());
        }
        let values = &snapshot.matrix.values;
        let logged: Vec<bool> = (0..width)
            .map(|j| (0..n).all(|i| values[i * width + j] >= 0.0))
            .collect();
        let transformed: Vec<f64> = values
            .chunks_exact(width)
            .flat_map(|row| transform(&logged, row))
            .collect();
        let standardiser = Standardiser::fit(&transformed, width);
        let z: Vec<f64> = transformed
            .chunks_exact(width)
            .flat_map(|row| standardiser.apply(row).collect::<Vec<_>>())
            .collect();
        let z = Array2::from_shape_vec((n, width), z).map_err(FitError::from)?;
        let covariance = z.t().dot(&z) / (n as f64 - 1.0);
        if covariance.iter().any(|v| !v.is_finite()) {
            return Err(FitError::NotFinite("the features' covariance").into());
        }
        let (values, vectors) = covariance.eigh().map_err(FitError::from)?.sort_eig_desc();
        // Rounding leaves the smallest eigenvalues of a rank-deficient covariance a hair below 0.
        let variance: Vec<f64> = values.iter().map(|v| v.max(0.0)).collect();
        let total: f64 = variance.iter().sum();
        let components: Vec<Vec<f64>> = (0..self.dims)
            .map(|d| {
                let axis = vectors.column(d).to_vec();
                let largest = axis
                    .iter()
                    .copied()
                    .fold(0.0_f64, |m, v| if v.abs() > m.abs() { v } else { m });
                let sign = if largest < 0.0 { -1.0 } else { 1.0 };
                axis.into_iter().map(|v| sign * v).collect()
            })
            .collect();
        Ok(EmbeddingModel {
            params: self.clone(),
            features: snapshot.features.clone(),
            definition_set: cis_storage::hex(&snapshot.definition_set),
            logged,
            standardiser,
            components,
            explained_variance: variance[..self.dims].to_vec(),
            explained_variance_ratio: variance[..self.dims]
                .iter()
                .map(|v| if total > 0.0 { v / total } else { 0.0 })
                .collect(),
            customers: n,
        })
    }
}

fn transform(logged: &[bool], row: &[f64]) -> Vec<f64> {
    row.iter()
        .zip(logged)
        .map(|(v, &log)| if log { v.max(0.0).ln_1p() } else { *v })
        .collect()
}

impl EmbeddingModel {
    /// The vector of one row of raw features in this model's feature order.
    pub fn embed(&self, row: &[f64]) -> Vec<f64> {
        let z: Vec<f64> = self.standardiser.apply(&transform(&self.logged, row)).collect();
        self.components
            .iter()
            .map(|axis| axis.iter().zip(&z).map(|(a, v)| a * v).sum())
            .collect()
    }

    /// Every customer's vector of `snapshot`, row-major (`dims` wide), in the snapshot's row order.
    pub fn embed_snapshot(&self, snapshot: &Snapshot) -> Result<Vec<f64>, ModelError> {
        let w = snapshot.features.len();
        let cols = columns(&snapshot.features, &self.features)?;
        let mut row = vec![0.0; cols.len()];
        let mut out = Vec::with_capacity(snapshot.matrix.customers.len() * self.components.len());
        for values in snapshot.matrix.values.chunks_exact(w.max(1)) {
            for (r, &j) in row.iter_mut().zip(&cols) {
                *r = values[j];
            }
            out.extend(self.embed(&row));
        }
        Ok(out)
    }

    /// The share of the standardised features' variance the kept dimensions explain.
    pub fn explained(&self) -> f64 {
        self.explained_variance_ratio.iter().sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cis_core::time::Timestamp;
    use cis_features::compute::Matrix;

    /// Rows on a noisy line in 3-d (x, 2x, small noise), plus a column that can be negative.
    fn snapshot() -> Snapshot {
        let mut values = Vec::new();
        let mut customers = Vec::new();
        for i in 0..200 {
            let x = f64::from(i) / 10.0;
            let wobble = f64::from((i * 37) % 11) / 100.0;
            values.extend([x, 2.0 * x + wobble, wobble, (f64::from(i % 7) - 3.0) * 0.1]);
            customers.push(format!("c{i:03}"));
        }
        Snapshot {
            as_of: Timestamp::EPOCH,
            known_at: Timestamp::EPOCH,
            definition_set: [7; 32],
            features: ["a", "b", "c", "trend"].map(String::from).to_vec(),
            matrix: Matrix {
                customers,
                values,
                visible_events: 0,
                visible_digest: 0,
            },
        }
    }

    #[test]
    fn axes_are_orthonormal_ordered_by_variance_and_vectors_have_those_variances() {
        let snap = snapshot();
        let m = EmbeddingParams { dims: 3 }.fit(&snap).expect("fit");
        assert_eq!(m.logged, [true, true, true, false]);
        for (d, a) in m.components.iter().enumerate() {
            for (e, b) in m.components.iter().enumerate() {
                let dot: f64 = a.iter().zip(b).map(|(x, y)| x * y).sum();
                assert!((dot - f64::from(u8::from(d == e))).abs() < 1e-9, "{d}·{e} = {dot}");
            }
        }
        assert!(m.explained_variance.windows(2).all(|w| w[0] >= w[1]));
        // a and b are one line: the first axis carries about half of four unit variances.
        assert!(m.explained_variance_ratio[0] > 0.45, "{:?}", m.explained_variance_ratio);
        assert!(m.explained() <= 1.0 + 1e-12);
        let v = m.embed_snapshot(&snap).expect("embed");
        let n = snap.matrix.customers.len() as f64;
        for d in 0..3 {
            let col: Vec<f64> = v.chunks_exact(3).map(|r| r[d]).collect();
            let mean = col.iter().sum::<f64>() / n;
            let var = col.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / (n - 1.0);
            assert!(mean.abs() < 1e-9, "dimension {d} mean {mean}");
            assert!(
                (var - m.explained_variance[d]).abs() < 1e-9,
                "dimension {d}: {var} vs {:?}",
                m.explained_variance
            );
        }
    }

    #[test]
    fn the_same_snapshot_gives_the_same_model_and_signs_are_fixed() {
        let snap = snapshot();
        let params = EmbeddingParams { dims: 2 };
        let a = params.fit(&snap).expect("fit");
        assert_eq!(a, params.fit(&snap).expect("fit again"));
        for axis in &a.components {
            let largest = axis
                .iter()
                .copied()
                .fold(0.0_f64, |m, v| if v.abs() > m.abs() { v } else { m });
            assert!(largest > 0.0, "{axis:?}");
        }
    }

    #[test]
    fn dimensions_outside_one_to_the_feature_count_are_refused() {
        let snap = snapshot();
        for dims in [0, 5] {
            let err = EmbeddingParams { dims }.fit(&snap).expect_err("refused");
            assert!(err.to_string().contains("dimensions"), "{err}");
        }
    }
}
