//! Churn: logistic regression (linfa-logistic) on standardised snapshot features.
//!
//! Rows come from one or more cutoffs with matured labels ([`cis_features::labels`]);
//! validation is a customer-disjoint split decided by a seeded hash of the customer id, so
//! a customer seen at two cutoffs is never on both sides.

use linfa::prelude::*;
use linfa_logistic::LogisticRegression;
use ndarray::{Array1, Array2};
use serde::{Deserialize, Serialize};

use crate::metrics::{evaluate, Metrics};
use crate::standardise::Standardiser;
use crate::{FitError, ModelError, ParamError};
use cis_core::time::Micros;
use cis_features::labels::TrainingSet;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChurnParams {
    pub seed: u64,
    /// Share of customers held out for validation.
    pub validation_share: f64,
    /// L2 penalty (linfa's `alpha`).
    pub l2: f64,
    pub max_iterations: u64,
}

impl Default for ChurnParams {
    fn default() -> Self {
        ChurnParams {
            seed: 42,
            validation_share: 0.2,
            l2: 1.0,
            max_iterations: 200,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct ValidChurnParams(ChurnParams);

impl ChurnParams {
    pub fn validate(self) -> Result<ValidChurnParams, ModelError> {
        if !(self.validation_share > 0.0 && self.validation_share < 1.0) {
            return Err(ParamError::ValidationShare(self.validation_share).into());
        }
        if !(self.l2.is_finite() && self.l2 >= 0.0) {
            return Err(ParamError::L2Penalty(self.l2).into());
        }
        if self.max_iterations == 0 {
            return Err(ParamError::MaxIterations.into());
        }
        Ok(ValidChurnParams(self))
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChurnModel {
    pub params: ChurnParams,
    pub features: Vec<String>,
    pub definition_set: String,
    pub standardiser: Standardiser,
    /// Coefficients on standardised features, in `features` order.
    pub coefficients: Vec<f64>,
    pub intercept: f64,
    pub cutoffs: Vec<Micros>,
    pub horizon_days: u32,
    pub labels_known_at: Micros,
    pub train: Metrics,
    pub validation: Metrics,
}

/// Whether a customer is in the validation share: a seeded hash, stable across cutoffs.
fn held_out(seed: u64, customer: &str, share: f64) -> bool {
    let mut h = blake3::Hasher::new();
    h.update(&seed.to_be_bytes());
    h.update(customer.as_bytes());
    let b = h.finalize();
    // The first 8 of the hash's 32 bytes.
    let mut first = [0u8; 8];
    first.copy_from_slice(&b.as_bytes()[..8]);
    let x = u64::from_be_bytes(first);
    (x as f64 / u64::MAX as f64) < share
}

impl ValidChurnParams {
    pub fn params(&self) -> &ChurnParams {
        &self.0
    }

    pub fn fit(&self, set: &TrainingSet, definition_set: String) -> Result<ChurnModel, ModelError> {
        let p = &self.0;
        let width = set.features.len();
        if set.churned.is_empty() || width == 0 {
            return Err(ModelError::EmptyTrainingSet);
        }
        let (mut train, mut valid): (Vec<usize>, Vec<usize>) = (Vec::new(), Vec::new());
        for (i, c) in set.customers.iter().enumerate() {
            if held_out(p.seed, c, p.validation_share) {
                valid.push(i);
            } else {
                train.push(i);
            }
        }
        for (side, rows) in [("training", &train), ("validation", &valid)] {
            let churned = rows.iter().filter(|&&i| set.churned[i]).count();
            if churned == 0 || churned == rows.len() {
                return Err(ModelError::OneClass { side, rows: rows.len() });
            }
        }
        let raw = |rows: &[usize]| -> Vec<f64> {
            rows.iter()
                .flat_map(|&i| &set.values[i * width..(i + 1) * width])
                .copied()
                .collect()
        };
        let train_raw = raw(&train);
        let standardiser = Standardiser::fit(&train_raw, width);
        let matrix = |flat: &[f64]| -> Result<Array2<f64>, ModelError> {
            let z: Vec<f64> = flat
                .chunks_exact(width)
                .flat_map(|r| standardiser.apply(r).collect::<Vec<_>>())
                .collect();
            Array2::from_shape_vec((flat.len() / width, width), z).map_err(|e| FitError::from(e).into())
        };
        let x_train = matrix(&train_raw)?;
        let y_train: Array1<bool> = train.iter().map(|&i| set.churned[i]).collect();
        let fitted = LogisticRegression::default()
            .alpha(p.l2)
            .max_iterations(p.max_iterations)
            .fit(&Dataset::new(x_train.clone(), y_train.clone()))
            .map_err(FitError::from)?;
        // linfa-logistic's probabilities are those of the *larger* class (its positive label),
        // which is "not churned" whenever churn is the minority: orient the fit towards churn.
        let sign = if fitted.labels().pos.class { 1.0 } else { -1.0 };
        let coefficients: Array1<f64> = fitted.params().mapv(|c| sign * c);
        let intercept = sign * fitted.intercept();
        let p_churn = |x: &Array2<f64>| -> Vec<f64> {
            (x.dot(&coefficients) + intercept)
                .iter()
                .map(|z| 1.0 / (1.0 + (-z).exp()))
                .collect()
        };
        let x_valid = matrix(&raw(&valid))?;
        let y_valid: Vec<bool> = valid.iter().map(|&i| set.churned[i]).collect();
        let train_metrics = evaluate(&p_churn(&x_train), &y_train.to_vec())?;
        let validation = evaluate(&p_churn(&x_valid), &y_valid)?;
        let mut cutoffs = set.cutoffs.clone();
        cutoffs.sort_unstable();
        cutoffs.dedup();
        Ok(ChurnModel {
            params: p.clone(),
            features: set.features.clone(),
            definition_set,
            standardiser,
            coefficients: coefficients.to_vec(),
            intercept,
            cutoffs,
            horizon_days: set.horizon_days,
            labels_known_at: set.known_at,
            train: train_metrics,
            validation,
        })
    }
}

impl ChurnModel {
    /// P(churn) for one snapshot row (raw features, in this model's feature order).
    pub fn predict(&self, row: &[f64]) -> f64 {
        let z: f64 = self
            .standardiser
            .apply(row)
            .zip(&self.coefficients)
            .map(|(x, c)| x * c)
            .sum();
        1.0 / (1.0 + (-(z + self.intercept)).exp())
    }

    pub fn coefficient(&self, feature: &str) -> Option<f64> {
        self.features
            .iter()
            .position(|f| f == feature)
            .map(|j| self.coefficients[j])
    }
}

/// Risk band of a churn probability: low < 0.3 ≤ medium < 0.6 ≤ high.
pub fn band(p: f64) -> &'static str {
    if p >= 0.6 {
        "high"
    } else if p >= 0.3 {
        "medium"
    } else {
        "low"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One feature that raises churn; `churn_share` of the customers churn.
    fn set(churn_share: f64) -> TrainingSet {
        let n = 400;
        let (mut values, mut churned, mut customers) = (Vec::new(), Vec::new(), Vec::new());
        for i in 0..n {
            let x = i as f64 / n as f64;
            values.push(x);
            // Churners are the customers with the highest x, plus a little overlap.
            churned.push(x > 1.0 - churn_share || (i % 17 == 0 && x > 0.5));
            customers.push(format!("c{i}"));
        }
        TrainingSet {
            features: vec!["x".into()],
            values,
            churned,
            customers,
            cutoffs: vec![0],
            snapshots: Vec::new(),
            horizon_days: 90,
            known_at: 0,
        }
    }

    #[test]
    fn probabilities_are_of_churn_whether_churn_is_the_minority_or_the_majority() {
        let params = ChurnParams::default().validate().expect("valid");
        for share in [0.2, 0.8] {
            let m = params.fit(&set(share), String::new()).expect("fit");
            assert!(m.coefficient("x").expect("x") > 0.0, "share {share}: {m:?}");
            assert!(
                m.train.roc_auc > 0.9 && m.validation.roc_auc > 0.9,
                "share {share}: {m:?}"
            );
            assert!(m.predict(&[0.99]) > m.predict(&[0.01]));
        }
    }
}
