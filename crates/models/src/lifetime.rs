//! CLV from a snapshot: BG/NBD for purchases and Gamma-Gamma for spend ([`crate::clv`]),
//! fitted on the snapshot's RFM features with time in weeks.
//!
//! Rows: every customer with at least one order (`lifetime_orders > 0`); x = `rfm_frequency`
//! (repeat purchase dates), t_x = `rfm_recency_days` / 7, T = `rfm_age_days` / 7. Gamma-Gamma is
//! fitted on customers with x ≥ 1 and a positive `rfm_monetary`.

use serde::{Deserialize, Serialize};

use crate::clv::{clv, BgNbd, BgNbdParams, GammaGamma, GammaGammaParams, RfmRow, WEEKS_PER_MONTH};
use crate::{columns, ModelError, ParamError};
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
    pub bgnbd: BgNbdParams,
    pub gamma_gamma: GammaGammaParams,
    /// Discount rate per month for CLV.
    pub monthly_discount: f64,
}

impl Default for ClvParams {
    fn default() -> Self {
        ClvParams {
            bgnbd: BgNbdParams::default(),
            gamma_gamma: GammaGammaParams::default(),
            monthly_discount: 0.01,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClvModel {
    pub params: ClvParams,
    pub definition_set: String,
    pub bgnbd: BgNbd,
    pub gamma_gamma: GammaGamma,
    pub customers_fitted: usize,
    pub repeat_customers_fitted: usize,
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

impl ClvParams {
    pub fn fit(&self, snapshot: &Snapshot) -> Result<ClvModel, ModelError> {
        if !(self.monthly_discount.is_finite() && self.monthly_discount > -1.0) {
            return Err(ParamError::MonthlyDiscount(self.monthly_discount).into());
        }
        let cols = rfm_columns(snapshot)?;
        let rows: Vec<RfmRow> = (0..snapshot.matrix.customers.len())
            .filter_map(|i| rfm_row(snapshot, &cols, i))
            .collect();
        let repeat: Vec<RfmRow> = rows
            .iter()
            .filter(|r| r.x >= 1.0 && r.monetary > 0.0)
            .copied()
            .collect();
        let bgnbd = self.bgnbd.validate()?.fit(&rows)?;
        let gamma_gamma = self.gamma_gamma.validate()?.fit(&repeat)?;
        Ok(ClvModel {
            params: self.clone(),
            definition_set: cis_storage::hex(&snapshot.definition_set),
            bgnbd,
            gamma_gamma,
            customers_fitted: rows.len(),
            repeat_customers_fitted: repeat.len(),
        })
    }
}

impl ClvModel {
    pub fn predict(&self, row: &RfmRow) -> ClvPrediction {
        ClvPrediction {
            expected_purchases_90d: self.bgnbd.expected_purchases(90.0 / 7.0, row),
            p_alive: self.bgnbd.p_alive(row),
            expected_order_value: self.gamma_gamma.expected_average_value(row),
            clv_12m: clv(
                &self.bgnbd,
                &self.gamma_gamma,
                row,
                12,
                self.params.monthly_discount,
                WEEKS_PER_MONTH,
            ),
        }
    }
}
