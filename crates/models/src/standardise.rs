//! Per-column standardisation fitted on training rows and stored with the model.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Standardiser {
    pub mean: Vec<f64>,
    /// Population standard deviation; a constant column gets 1 so it maps to 0.
    pub std: Vec<f64>,
}

impl Standardiser {
    /// Fits on `rows` (row-major, `width` columns). `rows` must not be empty.
    pub fn fit(rows: &[f64], width: usize) -> Standardiser {
        let n = (rows.len() / width.max(1)).max(1) as f64;
        let mut mean = vec![0.0; width];
        for row in rows.chunks_exact(width) {
            for (m, v) in mean.iter_mut().zip(row) {
                *m += v;
            }
        }
        mean.iter_mut().for_each(|m| *m /= n);
        let mut var = vec![0.0; width];
        for row in rows.chunks_exact(width) {
            for ((s, v), m) in var.iter_mut().zip(row).zip(&mean) {
                *s += (v - m) * (v - m);
            }
        }
        let std = var
            .into_iter()
            .map(|s| (s / n).sqrt())
            .map(|s| if s > 1e-12 { s } else { 1.0 })
            .collect();
        Standardiser { mean, std }
    }

    pub fn apply<'a>(&'a self, row: &'a [f64]) -> impl Iterator<Item = f64> + 'a {
        row.iter().zip(&self.mean).zip(&self.std).map(|((v, m), s)| (v - m) / s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn standardised_columns_have_zero_mean_unit_variance_and_constants_map_to_zero() {
        let rows = [1.0, 5.0, 3.0, 5.0, 5.0, 5.0];
        let s = Standardiser::fit(&rows, 2);
        assert_eq!(s.mean, [3.0, 5.0]);
        assert_eq!(s.std[1], 1.0);
        let z: Vec<f64> = rows.chunks(2).flat_map(|r| s.apply(r).collect::<Vec<_>>()).collect();
        assert!((z[0] + z[4]).abs() < 1e-12 && z[2] == 0.0);
        assert!(((z[0] * z[0] + z[4] * z[4]) / 3.0 - 1.0).abs() < 1e-12);
        assert_eq!(z[1], 0.0);
    }
}
