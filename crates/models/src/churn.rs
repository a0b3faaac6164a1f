//! Churn: L2-penalised logistic regression on standardised snapshot features, fitted by Newton's
//! method ([`crate::logistic`]), the optimum scikit-learn's `newton-cholesky` reaches.
//!
//! Rows come from one or more cutoffs with matured labels ([`cis_features::labels`]);
//! validation is a customer-disjoint split decided by a seeded hash of the customer id, so
//! a customer seen at two cutoffs is never on both sides. A model may also be validated forward in
//! time: scored on a later cutoff it did not learn from ([`ForwardValidation`]).
//!
//! With [`ChurnParams::clv_features`] the rows of each cutoff carry three more columns
//! ([`CLV_FEATURES`]) from a CLV model fitted on that cutoff's snapshot alone ([`clv_inputs`]), so
//! nothing after the cutoff leaks in; scoring fits the same CLV model on the scored snapshot.

use linfa::prelude::*;
use linfa_logistic::LogisticRegression;
use ndarray::{Array1, Array2};
use serde::{Deserialize, Serialize};

use crate::clv::PurchaseModelKind;
use crate::lifetime::{rfm_columns, rfm_row, ClvModel, ClvParams};
use crate::logistic;
use crate::metrics::{evaluate, Metrics};
use crate::standardise::Standardiser;
use crate::{FitError, ModelError, ParamError};
use cis_core::time::Timestamp;
use cis_features::labels::TrainingSet;
use cis_features::snapshot::Snapshot;

/// The solver a churn model was fitted with; part of its parameters, so retraining (and so an
/// audit) runs the same one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChurnSolver {
    /// linfa-logistic's L-BFGS (gradient tolerance 1e-4, so short of the optimum). Models stored
    /// before Newton's method name no solver and were fitted with this one: it is kept so they
    /// still re-derive to their hashes, and is written as no `solver` field, as they were.
    Lbfgs,
    /// Newton's method to the optimum ([`crate::logistic`]); what `cis train churn` uses.
    Newton,
}

impl ChurnSolver {
    fn of_models_before_newton() -> ChurnSolver {
        ChurnSolver::Lbfgs
    }

    fn is_lbfgs(&self) -> bool {
        *self == ChurnSolver::Lbfgs
    }
}

/// How a churn model learns; part of ChurnParams.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChurnMethod {
    /// L2 logistic regression ([`ChurnParams::l2`], [`ChurnParams::solver`]).
    Logistic,
    /// Gradient-boosted trees ([`crate::gbt`]).
    Gbt(crate::gbt::GbtParams),
    /// A Cox model of the time to the next order ([`crate::survival`]); P(churn) is its
    /// P(no order within the horizon).
    Survival(crate::survival::SurvivalParams),
}

impl ChurnMethod {
    /// Every model stored before the method was a parameter is logistic.
    fn logistic() -> ChurnMethod {
        ChurnMethod::Logistic
    }

    fn is_logistic(&self) -> bool {
        *self == ChurnMethod::Logistic
    }

    /// The method's name, as `cis train churn --method` takes it.
    pub fn name(&self) -> &'static str {
        match self {
            ChurnMethod::Logistic => "logistic",
            ChurnMethod::Gbt(_) => "gbt",
            ChurnMethod::Survival(_) => "survival",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChurnParams {
    pub seed: u64,
    /// Share of customers held out for validation.
    pub validation_share: f64,
    /// L2 penalty λ on the coefficients: the fit minimises `Σ log loss + (λ/2)‖w‖²`, which is
    /// scikit-learn's `C · Σ log loss + ½‖w‖²` with `C = 1/λ`, divided by C (linfa's `alpha`).
    pub l2: f64,
    /// Newton steps (L-BFGS iterations for [`ChurnSolver::Lbfgs`]) before the fit gives up.
    pub max_iterations: u64,
    #[serde(
        default = "ChurnSolver::of_models_before_newton",
        skip_serializing_if = "ChurnSolver::is_lbfgs"
    )]
    pub solver: ChurnSolver,
    /// The CLV model whose outputs become [`CLV_FEATURES`], fitted on each cutoff's snapshot (none:
    /// the snapshot's features only, and the field is not written, so older models keep their bytes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clv_features: Option<Box<ClvParams>>,
    /// How the model learns; logistic (the models stored before this field) is not written, so
    /// those keep their bytes.
    #[serde(default = "ChurnMethod::logistic", skip_serializing_if = "ChurnMethod::is_logistic")]
    pub method: ChurnMethod,
}

impl Default for ChurnParams {
    fn default() -> Self {
        ChurnParams {
            seed: 42,
            validation_share: 0.2,
            l2: 1.0,
            max_iterations: 200,
            solver: ChurnSolver::Newton,
            clv_features: None,
            method: ChurnMethod::Logistic,
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
        if let Some(clv) = &self.clv_features {
            // P(no purchase) has a closed form for these two only, and a forward selection would
            // fit on a second, earlier snapshot that scoring does not have.
            if clv.purchase_model == PurchaseModelKind::ParetoNbd || clv.select_by_holdout_weeks.is_some() {
                return Err(ParamError::ClvFeatures.into());
            }
        }
        if let ChurnMethod::Gbt(gbt) = &self.method {
            gbt.validate()?;
        }
        if let ChurnMethod::Survival(survival) = &self.method {
            survival.validate()?;
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
    /// Coefficients on standardised features, in `features` order (logistic only: empty, and the
    /// intercept 0, for a model whose [`ChurnModel::learned`] is the model).
    pub coefficients: Vec<f64>,
    pub intercept: f64,
    pub cutoffs: Vec<Timestamp>,
    pub horizon_days: u32,
    pub labels_known_at: Timestamp,
    pub train: Metrics,
    pub validation: Metrics,
    /// Scored on a later cutoff it did not learn from; none for a model validated only on the
    /// customer-disjoint split (every model stored before forward validation reads so).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forward: Option<ForwardValidation>,
    /// What a non-logistic method learned (none: the logistic coefficients above are the model).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub learned: Option<Learned>,
    /// How the method was chosen when it was chosen by forward validation
    /// ([`crate::train::churn_selected`]); none when it was given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selection: Option<Box<Selection>>,
}

/// A choice of method by forward-in-time validation: every candidate learned from the training
/// cutoffs but the latest and was scored on the latest; the one of the lowest log loss there was
/// then fitted on every cutoff, and is the model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Selection {
    /// The held-out cutoff (the latest training cutoff) and its snapshot.
    pub cutoff: Timestamp,
    pub snapshot: String,
    pub candidates: Vec<Candidate>,
    /// Index into `candidates` of the one chosen.
    pub chosen: usize,
}

/// One candidate of a [`Selection`]: its parameters and how it did on the held-out cutoff.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Candidate {
    pub params: ChurnParams,
    pub forward: Metrics,
}

impl ChurnParams {
    /// The method in a few words: `logistic (L2 1)`, `logistic (L2 10) + BG/NBD inputs`, `gbt`…
    pub fn summary(&self) -> String {
        let method = match self.method {
            ChurnMethod::Logistic => format!("logistic (L2 {})", self.l2),
            _ => self.method.name().to_string(),
        };
        match &self.clv_features {
            Some(c) => format!("{method} + {} inputs", c.purchase_model.name()),
            None => method,
        }
    }

    /// The candidates `cis train churn` chooses among by default, with `seed`: logistic regression
    /// without and with CLV inputs at each L2 strength of [`L2_GRID`], gradient-boosted trees and
    /// the Cox model, each with its defaults.
    pub fn candidates(seed: u64) -> Vec<ChurnParams> {
        let base = ChurnParams {
            seed,
            ..ChurnParams::default()
        };
        let mut all: Vec<ChurnParams> = [None, Some(Box::<ClvParams>::default())]
            .into_iter()
            .flat_map(|clv| L2_GRID.map(|l2| (clv.clone(), l2)))
            .map(|(clv_features, l2)| ChurnParams {
                l2,
                clv_features,
                ..base.clone()
            })
            .collect();
        all.push(ChurnParams {
            method: ChurnMethod::Gbt(crate::gbt::GbtParams::default()),
            ..base.clone()
        });
        all.push(ChurnParams {
            method: ChurnMethod::Survival(crate::survival::SurvivalParams::default()),
            ..base
        });
        all
    }
}

/// The L2 strengths the default method tries for logistic regression: a decade grid around the
/// default 1 (scikit-learn's C = 10 … 0.01). Which one generalises depends on how many customers
/// and cutoffs there are to learn from, so forward validation picks it, not a constant.
pub const L2_GRID: [f64; 4] = [0.1, 1.0, 10.0, 100.0];

/// What a churn model of a method other than logistic regression learned.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Learned {
    Gbt(crate::gbt::Ensemble),
    Survival(crate::survival::CoxFit),
}

/// A churn model's forward-in-time check: every customer of a later cutoff, labelled as known at
/// the model's `labels_known_at`, scored with the fitted model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ForwardValidation {
    /// The validation cutoff's snapshot (one of the model's parents).
    pub snapshot: String,
    pub cutoff: Timestamp,
    pub metrics: Metrics,
}

/// The columns [`ChurnParams::clv_features`] adds, after the snapshot's, over the churn horizon:
/// P(alive) at the cutoff, P(no purchase within the horizon), and the expected purchases in it.
pub const CLV_FEATURES: [&str; 3] = [
    "clv_p_alive",
    "clv_p_no_purchase_horizon",
    "clv_expected_purchases_horizon",
];

/// [`CLV_FEATURES`] of every customer of `snapshot`, in row order, from `clv` (fitted on `snapshot`
/// alone). A customer without orders has no RFM row: they get the predictions of a customer just
/// made (x = t_x = T = 0), which is what the model says of someone with no history yet.
pub fn clv_inputs(clv: &ClvModel, snapshot: &Snapshot, horizon_days: u32) -> Result<Vec<[f64; 3]>, ModelError> {
    let cols = rfm_columns(snapshot)?;
    let weeks = f64::from(horizon_days) / 7.0;
    let new = crate::clv::RfmRow {
        x: 0.0,
        t_x: 0.0,
        t: 0.0,
        monetary: 0.0,
    };
    (0..snapshot.matrix.customers.len())
        .map(|i| {
            let row = rfm_row(snapshot, &cols, i).unwrap_or(new);
            let none = clv
                .purchases
                .p_no_purchase(weeks, &row)
                .ok_or(ModelError::Param(ParamError::ClvFeatures))?;
            Ok([
                crate::clv::PurchaseCounts::p_alive(&clv.purchases, &row),
                none,
                crate::clv::PurchaseCounts::expected_purchases(&clv.purchases, weeks, &row),
            ])
        })
        .collect()
}

/// `set` with `extra` (one row per training row) appended to each row, and their names.
pub fn with_clv_inputs(mut set: TrainingSet, extra: &[[f64; 3]]) -> TrainingSet {
    let width = set.features.len();
    set.values = set
        .values
        .chunks_exact(width.max(1))
        .zip(extra)
        .flat_map(|(row, more)| row.iter().chain(more).copied().collect::<Vec<_>>())
        .collect();
    set.features.extend(CLV_FEATURES.map(String::from));
    set
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

/// The rows a churn model learns from and is validated on, standardised by the training rows.
#[derive(Debug, Clone, PartialEq)]
pub struct Design {
    pub width: usize,
    pub standardiser: Standardiser,
    /// Standardised training rows, row-major, `width` columns.
    pub x_train: Vec<f64>,
    /// Churned, per training row.
    pub y_train: Vec<bool>,
    pub x_valid: Vec<f64>,
    pub y_valid: Vec<bool>,
    /// Per training row, days to the next order and whether it was seen ([`TrainingSet::durations`]).
    pub durations_train: Vec<f64>,
    pub observed_train: Vec<bool>,
    pub durations_valid: Vec<f64>,
    pub observed_valid: Vec<bool>,
}

impl ValidChurnParams {
    pub fn params(&self) -> &ChurnParams {
        &self.0
    }

    /// The customer-disjoint split of `set`, standardised with the training rows' means and
    /// standard deviations; each side must hold both classes.
    pub fn design(&self, set: &TrainingSet) -> Result<Design, ModelError> {
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
        let standardised = |flat: &[f64]| -> Vec<f64> {
            flat.chunks_exact(width)
                .flat_map(|r| standardiser.apply(r).collect::<Vec<_>>())
                .collect()
        };
        let labels = |rows: &[usize]| -> Vec<bool> { rows.iter().map(|&i| set.churned[i]).collect() };
        let durations = |rows: &[usize]| -> Vec<f64> { rows.iter().map(|&i| set.durations[i]).collect() };
        let observed = |rows: &[usize]| -> Vec<bool> { rows.iter().map(|&i| set.observed[i]).collect() };
        Ok(Design {
            width,
            x_train: standardised(&train_raw),
            y_train: labels(&train),
            x_valid: standardised(&raw(&valid)),
            y_valid: labels(&valid),
            durations_train: durations(&train),
            observed_train: observed(&train),
            durations_valid: durations(&valid),
            observed_valid: observed(&valid),
            standardiser,
        })
    }

    pub fn fit(&self, set: &TrainingSet, definition_set: String) -> Result<ChurnModel, ModelError> {
        let p = &self.0;
        let d = self.design(set)?;
        let matrix = |z: &[f64]| -> Result<Array2<f64>, ModelError> {
            Array2::from_shape_vec((z.len() / d.width, d.width), z.to_vec()).map_err(|e| FitError::from(e).into())
        };
        let (coefficients, intercept, learned) = match (&p.method, p.solver) {
            (ChurnMethod::Gbt(params), _) => {
                let ensemble = crate::gbt::fit(&d.x_train, d.width, &d.y_train, params).map_err(FitError::from)?;
                tracing::debug!(trees = ensemble.trees.len(), "churn fitted by gradient boosting");
                (Array1::zeros(0), 0.0, Some(Learned::Gbt(ensemble)))
            }
            (ChurnMethod::Survival(survival), _) => {
                let cox = crate::survival::fit_churn(survival, &d, set.horizon_days)?;
                (Array1::zeros(0), 0.0, Some(Learned::Survival(cox)))
            }
            (ChurnMethod::Logistic, ChurnSolver::Newton) => {
                let fit =
                    logistic::fit(&d.x_train, d.width, &d.y_train, p.l2, p.max_iterations).map_err(FitError::from)?;
                tracing::debug!(
                    iterations = fit.iterations,
                    objective = fit.objective,
                    "churn fitted by Newton's method"
                );
                (Array1::from(fit.coefficients), fit.intercept, None)
            }
            (ChurnMethod::Logistic, ChurnSolver::Lbfgs) => {
                let y: Array1<bool> = d.y_train.iter().copied().collect();
                let fitted = LogisticRegression::default()
                    .alpha(p.l2)
                    .max_iterations(p.max_iterations)
                    .fit(&Dataset::new(matrix(&d.x_train)?, y))
                    .map_err(FitError::from)?;
                // linfa-logistic's probabilities are those of the *larger* class (its positive
                // label), which is "not churned" whenever churn is the minority: orient the fit
                // towards churn.
                let sign = if fitted.labels().pos.class { 1.0 } else { -1.0 };
                (fitted.params().mapv(|c| sign * c), sign * fitted.intercept(), None)
            }
        };
        // P(churn) of standardised rows; logistic's by one matrix product, as models were always
        // measured, so their stored metrics keep their bits.
        let p_churn = |z: &[f64]| -> Result<Vec<f64>, ModelError> {
            Ok(match &learned {
                None => (matrix(z)?.dot(&coefficients) + intercept)
                    .iter()
                    .map(|z| 1.0 / (1.0 + (-z).exp()))
                    .collect(),
                Some(Learned::Gbt(e)) => z.chunks_exact(d.width).map(|r| e.predict(r)).collect(),
                Some(Learned::Survival(cox)) => z
                    .chunks_exact(d.width)
                    .map(|r| cox.p_no_event(r.iter().copied()))
                    .collect(),
            })
        };
        let train_metrics = evaluate(&p_churn(&d.x_train)?, &d.y_train)?;
        let validation = evaluate(&p_churn(&d.x_valid)?, &d.y_valid)?;
        let mut cutoffs = set.cutoffs.clone();
        cutoffs.sort_unstable();
        cutoffs.dedup();
        Ok(ChurnModel {
            params: p.clone(),
            features: set.features.clone(),
            definition_set,
            standardiser: d.standardiser,
            coefficients: coefficients.to_vec(),
            intercept,
            cutoffs,
            horizon_days: set.horizon_days,
            labels_known_at: set.known_at,
            train: train_metrics,
            validation,
            forward: None,
            learned,
            selection: None,
        })
    }
}

impl ChurnModel {
    /// P(churn) for one snapshot row (raw features, in this model's feature order).
    pub fn predict(&self, row: &[f64]) -> f64 {
        match &self.learned {
            Some(Learned::Gbt(e)) => return e.predict(&self.standardiser.apply(row).collect::<Vec<_>>()),
            Some(Learned::Survival(cox)) => return cox.p_no_event(self.standardiser.apply(row)),
            None => {}
        }
        let z: f64 = self
            .standardiser
            .apply(row)
            .zip(&self.coefficients)
            .map(|(x, c)| x * c)
            .sum();
        1.0 / (1.0 + (-(z + self.intercept)).exp())
    }

    /// The features read from a snapshot: all of them, less [`CLV_FEATURES`] when those are added.
    pub fn snapshot_features(&self) -> &[String] {
        let added = if self.params.clv_features.is_some() {
            CLV_FEATURES.len()
        } else {
            0
        };
        &self.features[..self.features.len().saturating_sub(added)]
    }

    /// Raw rows (this model's feature order, row-major) for every customer of `snapshot`, with the
    /// CLV inputs fitted on `snapshot` when the model takes them.
    pub fn rows(&self, snapshot: &Snapshot) -> Result<Vec<f64>, ModelError> {
        let w = snapshot.features.len();
        let cols = crate::columns(&snapshot.features, self.snapshot_features())?;
        let extra = match &self.params.clv_features {
            Some(params) => clv_inputs(&params.fit(snapshot)?, snapshot, self.horizon_days)?,
            None => Vec::new(),
        };
        Ok((0..snapshot.matrix.customers.len())
            .flat_map(|i| {
                let base = cols.iter().map(move |&j| snapshot.matrix.values[i * w + j]);
                base.chain(extra.get(i).into_iter().flatten().copied())
            })
            .collect())
    }

    /// Scores `set` (rows in this model's feature order) against its labels.
    pub fn evaluate_on(&self, set: &TrainingSet) -> Result<Metrics, ModelError> {
        let p: Vec<f64> = set
            .values
            .chunks_exact(self.features.len())
            .map(|r| self.predict(r))
            .collect();
        Ok(evaluate(&p, &set.churned)?)
    }

    pub fn coefficient(&self, feature: &str) -> Option<f64> {
        self.features
            .iter()
            .position(|f| f == feature)
            .and_then(|j| self.coefficients.get(j).copied())
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
            durations: churned.iter().map(|&c| if c { 90.0 } else { 30.0 }).collect(),
            observed: churned.iter().map(|&c| !c).collect(),
            churned,
            customers,
            cutoffs: vec![Timestamp::EPOCH],
            snapshots: Vec::new(),
            horizon_days: 90,
            known_at: Timestamp::EPOCH,
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

    #[test]
    fn a_gbt_model_predicts_through_its_trees_and_round_trips() {
        let params = ChurnParams {
            method: ChurnMethod::Gbt(crate::gbt::GbtParams::default()),
            ..ChurnParams::default()
        };
        let json = serde_json::to_string(&params).expect("json");
        assert!(json.contains(r#""method":{"gbt":{"iterations":100,"#), "{json}");
        let m = params
            .validate()
            .expect("valid")
            .fit(&set(0.2), String::new())
            .expect("fit");
        assert!(matches!(m.learned, Some(Learned::Gbt(_))) && m.coefficients.is_empty());
        assert!(m.validation.roc_auc > 0.9, "{m:?}");
        assert!(m.predict(&[0.99]) > m.predict(&[0.01]));
        let back: ChurnModel = serde_json::from_str(&serde_json::to_string(&m).expect("json")).expect("back");
        assert_eq!(back, m);
        let bad = ChurnParams {
            method: ChurnMethod::Gbt(crate::gbt::GbtParams {
                learning_rate: 0.0,
                ..crate::gbt::GbtParams::default()
            }),
            ..ChurnParams::default()
        };
        assert!(matches!(
            bad.validate(),
            Err(ModelError::Param(ParamError::Gbt {
                name: "learning_rate",
                ..
            }))
        ));
    }

    #[test]
    fn survival_churn_learns_the_time_to_the_next_order_and_writes_its_method() {
        let survival = ChurnParams {
            method: ChurnMethod::Survival(crate::survival::SurvivalParams::default()),
            ..ChurnParams::default()
        };
        let m = survival
            .clone()
            .validate()
            .expect("valid")
            .fit(&set(0.2), String::new())
            .expect("fit");
        let Some(Learned::Survival(cox)) = &m.learned else {
            panic!("a Cox fit: {m:?}")
        };
        // A larger x means churn, so a lower hazard of the next order.
        assert!(cox.coefficients[0] < 0.0, "{cox:?}");
        assert!(m.validation.roc_auc > 0.9 && cox.validation.concordance > 0.8, "{m:?}");
        assert!(m.predict(&[0.99]) > m.predict(&[0.01]));
        assert_eq!(cox.baseline_cumulative_hazard.len(), 90);
        let json = serde_json::to_string(&m).expect("json");
        assert!(
            json.contains(r#""method":{"survival":{"penalizer":0.001,"max_iterations":100}}"#),
            "{json}"
        );
        assert_eq!(serde_json::from_str::<ChurnModel>(&json).expect("back"), m);
        let bad = ChurnParams {
            method: ChurnMethod::Survival(crate::survival::SurvivalParams {
                penalizer: -1.0,
                max_iterations: 10,
            }),
            ..ChurnParams::default()
        };
        assert!(matches!(
            bad.validate(),
            Err(ModelError::Param(ParamError::Penalizer(_)))
        ));
        // Logistic models do not write the method, nor anything learned beside their coefficients.
        let logistic = ChurnParams::default()
            .validate()
            .expect("valid")
            .fit(&set(0.2), String::new())
            .expect("fit");
        let json = serde_json::to_string(&logistic).expect("json");
        assert!(!json.contains("method") && !json.contains("learned"), "{json}");
    }

    #[test]
    fn models_stored_before_newton_keep_their_solver_and_their_bytes() {
        let old = r#"{"seed":42,"validation_share":0.2,"l2":1.0,"max_iterations":200}"#;
        let p: ChurnParams = serde_json::from_str(old).expect("old params");
        assert_eq!(p.solver, ChurnSolver::Lbfgs);
        assert_eq!(serde_json::to_string(&p).expect("json"), old);
        let new = serde_json::to_string(&ChurnParams::default()).expect("json");
        assert!(new.ends_with(r#""solver":"newton"}"#), "{new}");
        let set = set(0.2);
        let [newton, lbfgs] = [ChurnSolver::Newton, ChurnSolver::Lbfgs].map(|solver| {
            ChurnParams {
                solver,
                ..ChurnParams::default()
            }
            .validate()
            .expect("valid")
            .fit(&set, String::new())
            .expect("fit")
        });
        // L-BFGS stops at a gradient of 1e-4, short of the optimum Newton reaches.
        assert_ne!(newton.coefficients, lbfgs.coefficients);
        assert!((newton.coefficients[0] - lbfgs.coefficients[0]).abs() < 1e-2);
    }
}
