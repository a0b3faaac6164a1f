//! L2-penalised binary logistic regression by Newton's method (IRLS), the problem scikit-learn's
//! `LogisticRegression(solver="newton-cholesky")` solves.
//!
//! scikit-learn minimises `C · Σ log loss + ½‖w‖²` (intercept unpenalised). This module minimises
//! the same objective divided by C, `Σ log loss + (λ/2)‖w‖²` with `λ = 1/C`: the minimiser is the
//! same, relative changes of the objective are the same, and `λ = 0` (no penalty) stays finite.
//!
//! Each iteration is one pass over the rows, in row order, accumulating the loss, the gradient and
//! the upper triangle of the Hessian `X̃ᵀ S X̃ + λ·I` (X̃ is X with a column of ones for the
//! intercept, S the diagonal of p(1 − p), and I's intercept entry is 0), then a Cholesky solve of
//! that (width + 1)² system. No threads and a fixed summation order: the same matrix gives the
//! same bits, whichever vector instructions the machine has.

/// Stop when a step lowers the objective by less than this, relative to the objective.
const RELATIVE_CHANGE: f64 = 1e-12;
/// Stop when every gradient entry, per row, is at most this (the gradient of scikit-learn's
/// mean-loss form of the objective).
const GRADIENT_PER_ROW: f64 = 1e-12;
/// Armijo's sufficient-decrease constant: a step must win this share of the decrease the
/// quadratic model predicts.
const ARMIJO: f64 = 1e-4;
/// Step halvings before the line search gives up (the step is then 2⁻³⁰ of Newton's).
const HALVINGS: u32 = 30;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum NewtonError {
    #[error("the design has {values} values, not a whole number of rows of {width} features and one label each ({labels} labels)")]
    Shape { values: usize, width: usize, labels: usize },
    #[error("Newton's method did not converge in {iterations} iterations (objective {objective}, largest gradient entry per row {gradient:e})")]
    NotConverged {
        iterations: u64,
        objective: f64,
        gradient: f64,
    },
    #[error("the Hessian is not positive definite at column {column} (pivot {pivot:e}): without a penalty the optimum is not unique or not finite")]
    NotPositiveDefinite { column: usize, pivot: f64 },
    #[error("no step along Newton's direction lowers the objective {objective} (iteration {iteration})")]
    LineSearch { iteration: u64, objective: f64 },
    #[error("the objective is not finite (a feature value is not finite)")]
    NotFinite,
}

/// A fitted logistic regression: `P(y) = σ(x · coefficients + intercept)`.
#[derive(Debug, Clone, PartialEq)]
pub struct Fit {
    pub coefficients: Vec<f64>,
    pub intercept: f64,
    /// `Σ log loss + (λ/2)‖w‖²` at the optimum; times C = 1/λ it is scikit-learn's objective.
    pub objective: f64,
    pub iterations: u64,
}

/// Fits on `x` (row-major, `width` columns, one row per label) with penalty `l2` = λ = 1/C,
/// in at most `max_iterations` Newton steps.
pub fn fit(x: &[f64], width: usize, y: &[bool], l2: f64, max_iterations: u64) -> Result<Fit, NewtonError> {
    if width == 0 || x.len() != width * y.len() {
        return Err(NewtonError::Shape {
            values: x.len(),
            width,
            labels: y.len(),
        });
    }
    let rows = y.len().max(1) as f64;
    // β = (w, b): the intercept is the last entry.
    let (beta, objective, iterations) = minimise(&Logistic { x, y, l2 }, width + 1, rows, max_iterations)?;
    Ok(done(beta, objective, iterations))
}

/// A smooth, strictly convex objective that [`minimise`] takes Newton steps on.
pub(crate) trait Objective {
    /// The objective, its gradient and its Hessian (upper triangle) at `beta`, into `at`.
    fn evaluate(&self, beta: &[f64], at: &mut Pass);
    /// The objective alone, for the line search.
    fn value(&self, beta: &[f64]) -> f64;
}

/// Minimises `f` over `dimension` parameters from zero by Newton's method with a backtracking
/// (Armijo) line search, in at most `max_iterations` steps; `rows` scales the gradient test to the
/// mean form of a sum over rows. Returns the minimiser, the objective there and the steps taken.
pub(crate) fn minimise(
    f: &impl Objective,
    dimension: usize,
    rows: f64,
    max_iterations: u64,
) -> Result<(Vec<f64>, f64, u64), NewtonError> {
    let mut beta = vec![0.0; dimension];
    let mut at = Pass::new(dimension);
    f.evaluate(&beta, &mut at);
    for iteration in 1..=max_iterations {
        if !at.objective.is_finite() {
            return Err(NewtonError::NotFinite);
        }
        if at.largest_gradient() / rows <= GRADIENT_PER_ROW {
            return Ok((beta, at.objective, iteration - 1));
        }
        let direction = cholesky_solve(&mut at.hessian, dimension, &at.gradient)?;
        // The decrease the quadratic model predicts for a full step (half Newton's decrement²).
        let predicted: f64 = direction.iter().zip(&at.gradient).map(|(d, g)| d * g).sum();
        let mut step = 1.0;
        let mut trial = vec![0.0; dimension];
        let accepted = loop {
            for ((t, b), d) in trial.iter_mut().zip(&beta).zip(&direction) {
                *t = b - step * d;
            }
            let objective = f.value(&trial);
            if objective <= at.objective - ARMIJO * step * predicted {
                break Some(objective);
            }
            // Within rounding of the optimum no step can show a decrease any more.
            if predicted <= RELATIVE_CHANGE * at.objective.abs() {
                break None;
            }
            step /= 2.0;
            if step < 0.5f64.powi(HALVINGS as i32) {
                return Err(NewtonError::LineSearch {
                    iteration,
                    objective: at.objective,
                });
            }
        };
        let Some(objective) = accepted else {
            return Ok((beta, at.objective, iteration - 1));
        };
        let change = (at.objective - objective) / at.objective.abs().max(f64::MIN_POSITIVE);
        beta = trial;
        if change < RELATIVE_CHANGE {
            return Ok((beta, objective, iteration));
        }
        f.evaluate(&beta, &mut at);
        tracing::debug!(iteration, objective = at.objective, step, "newton step");
    }
    Err(NewtonError::NotConverged {
        iterations: max_iterations,
        objective: at.objective,
        gradient: at.largest_gradient() / rows,
    })
}

fn done(mut beta: Vec<f64>, objective: f64, iterations: u64) -> Fit {
    let intercept = beta.pop().unwrap_or(0.0);
    Fit {
        coefficients: beta,
        intercept,
        objective,
        iterations,
    }
}

/// `log(1 + eᶻ)` without overflow.
fn softplus(z: f64) -> f64 {
    if z > 0.0 {
        z + (-z).exp().ln_1p()
    } else {
        z.exp().ln_1p()
    }
}

/// σ(z) = 1 / (1 + e⁻ᶻ), computed on the side where the exponential cannot overflow.
pub(crate) fn sigmoid(z: f64) -> f64 {
    if z >= 0.0 {
        1.0 / (1.0 + (-z).exp())
    } else {
        let e = z.exp();
        e / (1.0 + e)
    }
}

/// The linear predictor of one row: x · w + b.
fn linear(row: &[f64], beta: &[f64]) -> f64 {
    let (w, b) = beta.split_at(row.len());
    row.iter().zip(w).map(|(x, w)| x * w).sum::<f64>() + b[0]
}

fn penalty(l2: f64, beta: &[f64]) -> f64 {
    let w = &beta[..beta.len() - 1];
    0.5 * l2 * w.iter().map(|w| w * w).sum::<f64>()
}

/// The objective, its gradient and its Hessian at one point, from one pass over the rows.
pub(crate) struct Pass {
    pub(crate) objective: f64,
    pub(crate) gradient: Vec<f64>,
    /// Row-major, `dimension`²; the pass fills the upper triangle, the Cholesky reads it.
    pub(crate) hessian: Vec<f64>,
}

impl Pass {
    pub(crate) fn new(dimension: usize) -> Pass {
        Pass {
            objective: 0.0,
            gradient: vec![0.0; dimension],
            hessian: vec![0.0; dimension * dimension],
        }
    }

    /// Zero gradient and Hessian, ready for a pass to accumulate into.
    pub(crate) fn clear(&mut self) {
        self.gradient.iter_mut().for_each(|g| *g = 0.0);
        self.hessian.iter_mut().for_each(|h| *h = 0.0);
    }

    fn largest_gradient(&self) -> f64 {
        self.gradient.iter().fold(0.0, |m, g| m.max(g.abs()))
    }
}

/// `Σ log loss + (λ/2)‖w‖²` over rows `x` (width = β's length less the intercept) and labels `y`.
struct Logistic<'a> {
    x: &'a [f64],
    y: &'a [bool],
    l2: f64,
}

impl Objective for Logistic<'_> {
    fn value(&self, beta: &[f64]) -> f64 {
        let (x, y, l2) = (self.x, self.y, self.l2);
        let width = beta.len() - 1;
        let loss: f64 = x
            .chunks_exact(width)
            .zip(y)
            .map(|(row, &y)| {
                let z = linear(row, beta);
                softplus(z) - if y { z } else { 0.0 }
            })
            .sum();
        loss + penalty(l2, beta)
    }

    fn evaluate(&self, beta: &[f64], at: &mut Pass) {
        let (x, y, l2) = (self.x, self.y, self.l2);
        let width = beta.len() - 1;
        let n = width + 1;
        at.clear();
        let mut loss = 0.0;
        let mut weights = Vec::with_capacity(y.len());
        for (row, &label) in x.chunks_exact(width).zip(y) {
            let z = linear(row, beta);
            let p = sigmoid(z);
            let target = if label { 1.0 } else { 0.0 };
            loss += softplus(z) - target * z;
            let residual = p - target;
            let weight = p * (1.0 - p);
            for (g, v) in at.gradient.iter_mut().zip(row) {
                *g += residual * v;
            }
            at.gradient[width] += residual;
            at.hessian[width * n + width] += weight;
            weights.push(weight);
        }
        accumulate_rows(x, width, &weights, &mut at.hessian[..width * n]);
        for (j, (g, b)) in at.gradient.iter_mut().zip(&beta[..width]).enumerate() {
            *g += l2 * b;
            at.hessian[j * n + j] += l2;
        }
        at.objective = loss + penalty(l2, beta);
    }
}

/// Adds the upper triangle of `X̃ᵀ S X̃` (S = `weights`), row by row in row order, to the Hessian's
/// feature rows (`hessian`: rows 0..width of the row-major (width + 1)² matrix, the intercept
/// column last). It is the bulk of a Newton step: (width + 1)·width/2 products a row against width
/// for the rest. Compiled also for AVX-512 and AVX2 and chosen at run time (12 % off a 93,782 × 42
/// fit here): the products and sums are element by element and Rust never fuses a multiply and an
/// add, so every instruction set gives the same bits.
#[multiversion::multiversion(targets("x86_64+avx512f", "x86_64+avx2", "aarch64+neon"))]
fn accumulate_rows(x: &[f64], width: usize, weights: &[f64], hessian: &mut [f64]) {
    let n = width + 1;
    for (row, &weight) in x.chunks_exact(width).zip(weights) {
        for (j, h) in hessian.chunks_exact_mut(n).enumerate() {
            let a = weight * row[j];
            for (h, v) in h[j..width].iter_mut().zip(&row[j..]) {
                *h += a * v;
            }
            h[width] += a;
        }
    }
}

/// Solves `H d = g` for a symmetric positive definite `H` (row-major n × n, upper triangle read)
/// by Cholesky, `H = L Lᵀ`, overwriting the lower triangle of `h` with L.
fn cholesky_solve(h: &mut [f64], n: usize, g: &[f64]) -> Result<Vec<f64>, NewtonError> {
    for j in 0..n {
        // h[j][i] for i < j already holds L[j][i]; H[j][j] sits in the upper triangle.
        let mut pivot = h[j * n + j];
        for k in 0..j {
            pivot -= h[j * n + k] * h[j * n + k];
        }
        if !(pivot > 0.0 && pivot.is_finite()) {
            return Err(NewtonError::NotPositiveDefinite { column: j, pivot });
        }
        let diagonal = pivot.sqrt();
        h[j * n + j] = diagonal;
        for i in j + 1..n {
            // H[i][j] = H[j][i], read from the upper triangle before L[i][j] overwrites h[i][j].
            let mut s = h[j * n + i];
            for k in 0..j {
                s -= h[i * n + k] * h[j * n + k];
            }
            h[i * n + j] = s / diagonal;
        }
    }
    // Forward: L u = g; back: Lᵀ d = u.
    let mut d = g.to_vec();
    for i in 0..n {
        for k in 0..i {
            d[i] -= h[i * n + k] * d[k];
        }
        d[i] /= h[i * n + i];
    }
    for i in (0..n).rev() {
        for k in i + 1..n {
            d[i] -= h[k * n + i] * d[k];
        }
        d[i] /= h[i * n + i];
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two features, 300 rows, labels drawn from a known logistic model by a fixed recipe.
    fn data() -> (Vec<f64>, Vec<bool>) {
        let (mut x, mut y) = (Vec::new(), Vec::new());
        for i in 0..300 {
            let (a, b) = (
                ((i * 37) % 101) as f64 / 50.0 - 1.0,
                ((i * 53) % 89) as f64 / 44.0 - 1.0,
            );
            x.extend([a, b]);
            // A deterministic stand-in for a uniform draw.
            let u = ((i * 7919) % 1000) as f64 / 1000.0;
            y.push(u < sigmoid(1.5 * a - 2.0 * b + 0.3));
        }
        (x, y)
    }

    #[test]
    fn the_optimum_has_a_zero_gradient_and_newtons_quadratic_convergence() {
        let (x, y) = data();
        let fit = fit(&x, 2, &y, 1.0, 50).expect("converges");
        let mut beta = fit.coefficients.clone();
        beta.push(fit.intercept);
        let logistic = Logistic { x: &x, y: &y, l2: 1.0 };
        let mut at = Pass::new(3);
        logistic.evaluate(&beta, &mut at);
        assert!(at.largest_gradient() < 1e-9, "gradient {:?}", at.gradient);
        assert!((at.objective - fit.objective).abs() <= 1e-12 * fit.objective);
        assert!(fit.iterations <= 10, "{} Newton steps", fit.iterations);
        // The planted signs come back; a nudge in any direction raises the objective.
        assert!(fit.coefficients[0] > 0.5 && fit.coefficients[1] < -0.5, "{fit:?}");
        for j in 0..3 {
            let mut moved = beta.clone();
            moved[j] += 1e-4;
            assert!(logistic.value(&moved) > fit.objective);
        }
        assert_eq!(super::fit(&x, 2, &y, 1.0, 50), Ok(fit), "same input, same bits");
    }

    /// The vectorised accumulation (whichever instruction set this machine picks) gives the bits
    /// of the plain sum, entry by entry in row order.
    #[test]
    fn the_hessian_has_the_bits_of_the_plain_sum() {
        let (width, rows) = (7, 53);
        let x: Vec<f64> = (0..width * rows)
            .map(|i| ((i * 37 % 101) as f64 - 50.0) / 7.0)
            .collect();
        let weights: Vec<f64> = (0..rows).map(|i| (i % 13) as f64 / 52.0).collect();
        let n = width + 1;
        let mut expected = vec![0.0; width * n];
        for (row, w) in x.chunks_exact(width).zip(&weights) {
            for j in 0..width {
                for k in j..width {
                    expected[j * n + k] += w * row[j] * row[k];
                }
                expected[j * n + width] += w * row[j];
            }
        }
        let mut h = vec![0.0; width * n];
        accumulate_rows(&x, width, &weights, &mut h);
        let bits = |v: &[f64]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&h), bits(&expected));
    }

    #[test]
    fn cholesky_solves_a_known_system() {
        // H = [[4, 2], [2, 3]] (upper triangle given), H · (1, 2) = (8, 8).
        let mut h = vec![4.0, 2.0, 0.0, 3.0];
        let d = cholesky_solve(&mut h, 2, &[8.0, 8.0]).expect("positive definite");
        assert!((d[0] - 1.0).abs() < 1e-15 && (d[1] - 2.0).abs() < 1e-15, "{d:?}");
        let mut singular = vec![1.0, 1.0, 0.0, 1.0];
        assert!(matches!(
            cholesky_solve(&mut singular, 2, &[1.0, 1.0]),
            Err(NewtonError::NotPositiveDefinite { column: 1, .. })
        ));
    }

    #[test]
    fn failures_are_errors_not_models() {
        let (x, y) = data();
        assert!(matches!(
            fit(&x, 2, &y, 1.0, 1),
            Err(NewtonError::NotConverged { iterations: 1, .. })
        ));
        assert!(matches!(fit(&x, 3, &y, 1.0, 50), Err(NewtonError::Shape { .. })));
        // A constant column has no curvature without a penalty.
        let constant: Vec<f64> = x.chunks(2).flat_map(|r| [r[0], 0.0]).collect();
        assert!(matches!(
            fit(&constant, 2, &y, 0.0, 50),
            Err(NewtonError::NotPositiveDefinite { column: 1, .. })
        ));
        let mut infinite = x.clone();
        infinite[4] = f64::INFINITY;
        assert_eq!(fit(&infinite, 2, &y, 1.0, 50), Err(NewtonError::NotFinite));
    }
}
