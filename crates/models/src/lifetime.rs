//! CLV from a snapshot: BG/NBD, Pareto/NBD or MBG/NBD for purchases and Gamma-Gamma for spend
//! ([`crate::clv`]), fitted on the snapshot's RFM features with time in weeks.
//!
//! Rows: every customer with at least one order (`lifetime_orders > 0`); x = `rfm_frequency`
//! (repeat purchase dates), t_x = `rfm_recency_days` / 7, T = `rfm_age_days` / 7. Gamma-Gamma is
//! fitted on customers with x ≥ 1 and a positive `rfm_monetary`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::clv::{
    self, clv, BgNbdParams, ConditionalExpectation, GammaGamma, GammaGammaParams, PurchaseCounts, PurchaseModel,
    PurchaseModelKind, RfmRow, WEEKS_PER_MONTH,
};
use crate::{columns, ModelError, ParamError};
use cis_core::time::MICROS_PER_DAY;
use cis_features::snapshot::Snapshot;

pub const RFM: [&str; 5] = [
    "rfm_frequency",
    "rfm_recency_days",
    "rfm_age_days",
    "rfm_monetary",
    "lifetime_orders",
];

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClvParams {
    /// Optimiser settings of the purchase-count model, whichever it is.
    pub bgnbd: BgNbdParams,
    pub gamma_gamma: GammaGammaParams,
    /// Discount rate per month for CLV.
    pub monthly_discount: f64,
    /// Models stored before there was a choice name none and are BG/NBD; a BG/NBD model is still
    /// written without the field, so it keeps the bytes (and hash) it always had.
    #[serde(default, skip_serializing_if = "PurchaseModelKind::is_bg_nbd")]
    pub purchase_model: PurchaseModelKind,
    /// When set, `purchase_model` is not used: every purchase-count model is fitted on the snapshot
    /// this many weeks before the training one, the one whose predictions of the purchases made
    /// since come closest is fitted on the training snapshot, and the check is kept in the model
    /// ([`Selection`]). See [`crate::train::clv`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub select_by_holdout_weeks: Option<u32>,
}

impl Default for ClvParams {
    fn default() -> Self {
        ClvParams {
            bgnbd: BgNbdParams::default(),
            gamma_gamma: GammaGammaParams::default(),
            monthly_discount: 0.01,
            purchase_model: PurchaseModelKind::BgNbd,
            select_by_holdout_weeks: None,
        }
    }
}

impl cis_core::Choice for PurchaseModelKind {
    const CHOICES: &'static [PurchaseModelKind] = &PurchaseModelKind::ALL;

    fn choice_name(self) -> &'static str {
        match self {
            PurchaseModelKind::BgNbd => "bg-nbd",
            PurchaseModelKind::ParetoNbd => "pareto-nbd",
            PurchaseModelKind::MbgNbd => "mbg-nbd",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClvModel {
    pub params: ClvParams,
    pub definition_set: String,
    /// One field named for the model (`bgnbd` for BG/NBD, where it always was).
    #[serde(flatten)]
    pub purchases: PurchaseModel,
    pub gamma_gamma: GammaGamma,
    pub customers_fitted: usize,
    pub repeat_customers_fitted: usize,
    /// The forward-in-time check that chose `purchases`, if one did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selection: Option<Selection>,
}

/// The forward-in-time check behind a chosen purchase-count model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Selection {
    /// From the calibration snapshot (the model's second parent) to the training snapshot.
    pub holdout_weeks: f64,
    /// Customers of the calibration snapshot, whose holdout purchases were predicted.
    pub customers: usize,
    /// Their mean actual holdout repeat purchases (0 when there are none).
    pub actual: f64,
    /// Every candidate, in [`PurchaseModelKind::ALL`] order.
    pub candidates: Vec<Candidate>,
}

/// One candidate of a [`Selection`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Candidate {
    pub model: PurchaseModelKind,
    /// Mean predicted holdout repeat purchases per customer; `None` if the model did not fit.
    pub predicted: Option<f64>,
    /// The error it is chosen by: `Σ_x n_x |predicted_x − actual_x| / Σ n_x` over the
    /// conditional-expectation rows, so it weighs the total and its split by frequency.
    pub error: Option<f64>,
}

/// A customer's CLV predictions.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ClvPrediction {
    pub expected_purchases_90d: f64,
    pub p_alive: f64,
    pub expected_order_value: f64,
    pub clv_12m: f64,
}

/// The RFM row of snapshot row `i`, or `None` for a customer without orders.
pub fn rfm_row(snapshot: &Snapshot, cols: &[usize], i: usize) -> Option<RfmRow> {
    let w = snapshot.features.len();
    let v = |j: usize| snapshot.matrix.values[i * w + cols[j]];
    (v(4) > 0.0).then(|| RfmRow {
        x: v(0),
        t_x: v(1) / 7.0,
        t: v(2) / 7.0,
        monetary: v(3),
    })
}

pub fn rfm_columns(snapshot: &Snapshot) -> Result<Vec<usize>, ModelError> {
    columns(&snapshot.features, &RFM.map(String::from))
}

fn rfm_rows(snapshot: &Snapshot) -> Result<Vec<RfmRow>, ModelError> {
    let cols = rfm_columns(snapshot)?;
    Ok((0..snapshot.matrix.customers.len())
        .filter_map(|i| rfm_row(snapshot, &cols, i))
        .collect())
}

impl ClvParams {
    /// Fits `purchase_model` (ignoring `select_by_holdout_weeks`, which needs a second snapshot:
    /// see [`ClvParams::fit_selected`]).
    pub fn fit(&self, snapshot: &Snapshot) -> Result<ClvModel, ModelError> {
        self.fit_as(snapshot, self.purchase_model, None)
    }

    /// Fits every purchase-count model on `calibration`, checks each one's predictions against the
    /// purchases `snapshot` shows since, and fits the closest on `snapshot`. A model that does not
    /// fit on `calibration` is recorded as such; if none fits (say, `calibration` is before most of
    /// the history), BG/NBD is fitted, and the record shows that nothing was compared.
    pub fn fit_selected(&self, calibration: &Snapshot, snapshot: &Snapshot) -> Result<ClvModel, ModelError> {
        let (customers, holdout_weeks) = holdout_pairs(calibration, snapshot)?;
        let rows: Vec<RfmRow> = customers.iter().map(|(row, _)| *row).collect();
        let optimiser = self.bgnbd.validate()?;
        let mut candidates = Vec::new();
        for kind in PurchaseModelKind::ALL {
            let (predicted, error) = match optimiser.fit_kind(kind, &rows) {
                Ok(model) => {
                    let table = clv::conditional_expectations(&model, &customers, holdout_weeks);
                    let n = customers.len() as f64;
                    let weighted = |f: fn(&ConditionalExpectation) -> f64| {
                        table.iter().map(|r| r.customers as f64 * f(r)).sum::<f64>() / n
                    };
                    (
                        Some(weighted(|r| r.predicted)),
                        Some(weighted(|r| (r.predicted - r.actual).abs())),
                    )
                }
                Err(e) => {
                    tracing::info!(model = kind.name(), error = %e, "purchase-model check: no fit on the calibration snapshot");
                    (None, None)
                }
            };
            candidates.push(Candidate {
                model: kind,
                predicted,
                error,
            });
        }
        let best = candidates
            .iter()
            .filter_map(|c| c.error.map(|e| (c.model, e)))
            .min_by(|l, r| l.1.total_cmp(&r.1))
            .map_or(PurchaseModelKind::BgNbd, |(kind, _)| kind);
        // 0 for nobody, so the record never holds a NaN (which JSON cannot).
        let actual = customers.iter().map(|(_, a)| a).sum::<f64>() / customers.len().max(1) as f64;
        let selection = Selection {
            holdout_weeks,
            customers: customers.len(),
            actual,
            candidates,
        };
        self.fit_as(snapshot, best, Some(selection))
    }

    fn fit_as(
        &self,
        snapshot: &Snapshot,
        kind: PurchaseModelKind,
        selection: Option<Selection>,
    ) -> Result<ClvModel, ModelError> {
        if !(self.monthly_discount.is_finite() && self.monthly_discount > -1.0) {
            return Err(ParamError::MonthlyDiscount(self.monthly_discount).into());
        }
        let rows = rfm_rows(snapshot)?;
        let repeat: Vec<RfmRow> = rows
            .iter()
            .filter(|r| r.x >= 1.0 && r.monetary > 0.0)
            .copied()
            .collect();
        let purchases = self.bgnbd.validate()?.fit_kind(kind, &rows)?;
        let gamma_gamma = self.gamma_gamma.validate()?.fit(&repeat)?;
        Ok(ClvModel {
            params: self.clone(),
            definition_set: cis_storage::hex(&snapshot.definition_set),
            purchases,
            gamma_gamma,
            customers_fitted: rows.len(),
            repeat_customers_fitted: repeat.len(),
            selection,
        })
    }
}

impl ClvModel {
    pub fn predict(&self, row: &RfmRow) -> ClvPrediction {
        ClvPrediction {
            expected_purchases_90d: self.purchases.expected_purchases(90.0 / 7.0, row),
            p_alive: self.purchases.p_alive(row),
            expected_order_value: self.gamma_gamma.expected_average_value(row),
            clv_12m: clv(
                &self.purchases,
                &self.gamma_gamma,
                row,
                12,
                self.params.monthly_discount,
                WEEKS_PER_MONTH,
            ),
        }
    }
}

/// The conditional-expectation check of a CLV model (mean holdout repeat purchases by calibration
/// frequency, predicted vs actual; [`crate::clv::conditional_expectations`]): the model's customers as
/// its own snapshot saw them, and what they bought up to `later`'s as-of.
///
/// It is a report derived on demand, not part of the model: storing it would change the bytes, and
/// so the hash, of every CLV model, and models stored before it could no longer re-derive in an audit.
/// It also needs data the model was not trained on (`later` is after the model's as-of).
///
/// A customer's holdout purchases are the growth of `rfm_frequency` (repeat purchase dates) from
/// `calibration` to `later`; the holdout lasts `(later − calibration)` days / 7 weeks.
pub fn conditional_expectations(
    model: &ClvModel,
    calibration: &Snapshot,
    later: &Snapshot,
) -> Result<ConditionalExpectations, ModelError> {
    let (customers, holdout_weeks) = holdout_pairs(calibration, later)?;
    Ok(ConditionalExpectations {
        holdout_weeks,
        rows: clv::conditional_expectations(&model.purchases, &customers, holdout_weeks),
    })
}

/// Each customer of `calibration` with orders, with the repeat purchases `later` shows since, and the
/// weeks between the two.
fn holdout_pairs(calibration: &Snapshot, later: &Snapshot) -> Result<(Vec<(RfmRow, f64)>, f64), ModelError> {
    let (cal_cols, later_cols) = (rfm_columns(calibration)?, rfm_columns(later)?);
    let later_rows: BTreeMap<&str, usize> = later
        .matrix
        .customers
        .iter()
        .enumerate()
        .map(|(i, c)| (c.as_str(), i))
        .collect();
    let customers: Vec<(RfmRow, f64)> = calibration
        .matrix
        .customers
        .iter()
        .enumerate()
        .filter_map(|(i, id)| {
            let row = rfm_row(calibration, &cal_cols, i)?;
            // A customer erased since has no later row: they drop out of the check.
            let later_row = rfm_row(later, &later_cols, *later_rows.get(id.as_str())?)?;
            Some((row, later_row.x - row.x))
        })
        .collect();
    let holdout_weeks = (later.as_of - calibration.as_of) as f64 / MICROS_PER_DAY as f64 / 7.0;
    Ok((customers, holdout_weeks))
}

/// [`conditional_expectations`] of one model over one holdout.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConditionalExpectations {
    pub holdout_weeks: f64,
    pub rows: Vec<ConditionalExpectation>,
}
