//! Metrics of a probabilistic binary classifier, computed from predictions and outcomes.
//! ROC AUC and log loss come from linfa; Brier score and the calibration table are the
//! definitions themselves.

use linfa::dataset::Pr;
use linfa::metrics::BinaryClassification;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CalibrationBin {
    pub lower: f64,
    pub upper: f64,
    pub count: usize,
    pub mean_predicted: f64,
    pub observed_rate: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Metrics {
    pub rows: usize,
    pub positive_rate: f64,
    pub roc_auc: f64,
    pub log_loss: f64,
    pub brier: f64,
    /// Ten equal-width bins of predicted probability; empty bins are listed with count 0.
    pub calibration: Vec<CalibrationBin>,
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MetricsError {
    #[error("metrics need predictions and outcomes of the same, non-zero length")]
    Shape,
    #[error("metrics need both outcomes present (all rows are {0})")]
    OneClass(bool),
    #[error("a predicted probability is not in [0, 1]: {0}")]
    NotAProbability(f64),
    #[error("linfa: {0}")]
    Linfa(#[from] linfa::Error),
}

pub fn evaluate(predicted: &[f64], outcome: &[bool]) -> Result<Metrics, MetricsError> {
    if predicted.is_empty() || predicted.len() != outcome.len() {
        return Err(MetricsError::Shape);
    }
    if let Some(p) = predicted.iter().find(|p| !(0.0..=1.0).contains(*p)) {
        return Err(MetricsError::NotAProbability(*p));
    }
    let positives = outcome.iter().filter(|o| **o).count();
    if positives == 0 || positives == outcome.len() {
        return Err(MetricsError::OneClass(outcome[0]));
    }
    let pr: Vec<Pr> = predicted.iter().map(|p| Pr::new(*p as f32)).collect();
    let roc = pr.as_slice().roc(outcome)?;
    let log_loss = pr.as_slice().log_loss(outcome)?;
    let n = predicted.len() as f64;
    let brier = predicted
        .iter()
        .zip(outcome)
        .map(|(p, o)| (p - f64::from(u8::from(*o))).powi(2))
        .sum::<f64>()
        / n;
    let calibration = (0..10)
        .map(|b| {
            let (lower, upper) = (b as f64 / 10.0, (b + 1) as f64 / 10.0);
            let in_bin: Vec<(f64, bool)> = predicted
                .iter()
                .zip(outcome)
                .filter(|(p, _)| **p >= lower && (**p < upper || (b == 9 && **p <= upper)))
                .map(|(p, o)| (*p, *o))
                .collect();
            let count = in_bin.len();
            let div = count.max(1) as f64;
            CalibrationBin {
                lower,
                upper,
                count,
                mean_predicted: in_bin.iter().map(|x| x.0).sum::<f64>() / div,
                observed_rate: in_bin.iter().filter(|x| x.1).count() as f64 / div,
            }
        })
        .collect();
    Ok(Metrics {
        rows: predicted.len(),
        positive_rate: positives as f64 / n,
        roc_auc: f64::from(roc.area_under_curve()),
        log_loss: f64::from(log_loss),
        brier,
        calibration,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hand_computed_small_case() {
        // Positives at 0.9 and 0.4, negatives at 0.6 and 0.1: of the 4 (pos, neg) pairs,
        // 3 are ranked right, so AUC = 0.75.
        let p = [0.9, 0.4, 0.6, 0.1];
        let y = [true, true, false, false];
        let m = evaluate(&p, &y).expect("metrics");
        assert!((m.roc_auc - 0.75).abs() < 1e-6, "{}", m.roc_auc);
        let brier = (0.01 + 0.36 + 0.36 + 0.01) / 4.0;
        assert!((m.brier - brier).abs() < 1e-12);
        let ll = -(0.9f64.ln() + 0.4f64.ln() + 0.4f64.ln() + 0.9f64.ln()) / 4.0;
        assert!((m.log_loss - ll).abs() < 1e-5, "{} vs {ll}", m.log_loss);
        assert_eq!(m.calibration.iter().map(|b| b.count).sum::<usize>(), 4);
        assert_eq!(m.calibration[9].count, 1);
        assert_eq!(m.calibration[9].observed_rate, 1.0);
    }

    #[test]
    fn one_class_and_bad_shapes_are_errors() {
        assert!(matches!(
            evaluate(&[0.2, 0.3], &[true, true]),
            Err(MetricsError::OneClass(true))
        ));
        assert!(matches!(evaluate(&[0.2], &[true, false]), Err(MetricsError::Shape)));
        assert!(matches!(
            evaluate(&[1.2, 0.1], &[true, false]),
            Err(MetricsError::NotAProbability(_))
        ));
    }
}
