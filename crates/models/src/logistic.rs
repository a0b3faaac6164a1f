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
    let mut next = Pass::new(dimension);
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
            // A trial is evaluated whole, gradient and Hessian too: Newton's full step is almost
            // always taken, and then this pass over the rows is the next iteration's as well.
            f.evaluate(&trial, &mut next);
            if next.objective <= at.objective - ARMIJO * step * predicted {
                break Some(next.objective);
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
        std::mem::swap(&mut at, &mut next);
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

/// e^(−|z|): the one exponential both σ(z) and log(1 + eᶻ) need, and never an overflowing one.
fn decay(z: f64) -> f64 {
    (-z.abs()).exp()
}

/// `log(1 + eᶻ)` from `e` = [`decay`]`(z)`.
fn softplus_from(z: f64, e: f64) -> f64 {
    if z > 0.0 {
        z + e.ln_1p()
    } else {
        e.ln_1p()
    }
}

/// σ(z) = 1 / (1 + e⁻ᶻ) from `e` = [`decay`]`(z)`.
fn sigmoid_from(z: f64, e: f64) -> f64 {
    if z >= 0.0 {
        1.0 / (1.0 + e)
    } else {
        e / (1.0 + e)
    }
}

pub(crate) fn sigmoid(z: f64) -> f64 {
    sigmoid_from(z, decay(z))
}

/// Rows per chunk of [`Logistic::evaluate`]'s pass: 512 rows of 42 features are 172 KB, which the
/// second-level cache holds while the chunk is read several times (128 and 1,024 were slower).
const CHUNK: usize = 512;

/// Asks the processor to start loading `values` into cache: the next chunk's rows, while this
/// one's are worked on (a chunk comes from memory, and its reads across rows are not a pattern
/// the processor's own prefetching follows).
fn prefetch(values: &[f64]) {
    #[cfg(target_arch = "x86_64")]
    for line in values.chunks(8) {
        // SAFETY: a prefetch reads nothing and cannot fault; the address is inside `values`.
        unsafe { std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(line.as_ptr().cast()) };
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = values;
}

/// Rows whose linear predictors [`predict_plainly`] computes side by side.
const LANES: usize = 8;

/// The linear predictor `x · w + b` of every row of `x`, into `z`. A row's sum runs over its
/// columns in order from −0.0 (what `Iterator::sum` starts from), then adds b. Where the machine
/// has AVX-512, eight rows' sums go side by side in one vector ([`avx512::predictors`], which
/// copies the rows column by column into `columns` first).
fn predictors(x: &[f64], beta: &[f64], z: &mut Vec<f64>, columns: &mut Vec<f64>) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx512f") {
        // SAFETY: just checked.
        return unsafe { avx512::predictors(x, beta, z, columns) };
    }
    let _ = columns;
    predict_plainly(x, beta, z)
}

/// [`predictors`] with LANES rows side by side, so that their additions, each waiting on the one
/// before within a row, overlap.
fn predict_plainly(x: &[f64], beta: &[f64], z: &mut Vec<f64>) {
    let width = beta.len() - 1;
    let (w, b) = beta.split_at(width);
    z.clear();
    let mut blocks = x.chunks_exact(LANES * width);
    for rows in &mut blocks {
        let rows: [&[f64]; LANES] = std::array::from_fn(|i| &rows[i * width..][..width]);
        let mut sums = [-0.0f64; LANES];
        for (k, w) in w.iter().enumerate() {
            for (sum, row) in sums.iter_mut().zip(rows) {
                *sum += row[k] * w;
            }
        }
        z.extend(sums.iter().map(|s| s + b[0]));
    }
    for row in blocks.remainder().chunks_exact(width) {
        z.push(row.iter().zip(w).fold(-0.0, |sum, (x, w)| sum + x * w) + b[0]);
    }
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
    fn evaluate(&self, beta: &[f64], at: &mut Pass) {
        let (x, y, l2) = (self.x, self.y, self.l2);
        let width = beta.len() - 1;
        let n = width + 1;
        at.clear();
        let mut loss = 0.0;
        let mut weights = Vec::with_capacity(CHUNK);
        let (mut z, mut columns) = (Vec::with_capacity(CHUNK), Vec::new());
        let mut curvature = Curvature::new(width, &at.hessian);
        // One pass over the rows, a cache-sized chunk at a time: its predictors, then its loss,
        // gradient and weights, then its share of the Hessian, while its rows are in cache.
        let mut chunks = x.chunks(CHUNK * width).zip(y.chunks(CHUNK)).peekable();
        while let Some((rows, labels)) = chunks.next() {
            if let Some((next, _)) = chunks.peek() {
                prefetch(next);
            }
            predictors(rows, beta, &mut z, &mut columns);
            weights.clear();
            for ((row, &label), &z) in rows.chunks_exact(width).zip(labels).zip(&z) {
                let e = decay(z);
                let p = sigmoid_from(z, e);
                let target = if label { 1.0 } else { 0.0 };
                loss += softplus_from(z, e) - target * z;
                let residual = p - target;
                let weight = p * (1.0 - p);
                for (g, v) in at.gradient.iter_mut().zip(row) {
                    *g += residual * v;
                }
                at.gradient[width] += residual;
                at.hessian[width * n + width] += weight;
                weights.push(weight);
            }
            curvature.add(rows, &weights, &mut at.hessian[..width * n]);
        }
        curvature.finish(&mut at.hessian[..width * n]);
        for (j, (g, b)) in at.gradient.iter_mut().zip(&beta[..width]).enumerate() {
            *g += l2 * b;
            at.hessian[j * n + j] += l2;
        }
        at.objective = loss + penalty(l2, beta);
    }
}

/// Adds the upper triangle of `X̃ᵀ S X̃` (S = the weights) to the Hessian's feature rows (rows
/// 0..width of the row-major (width + 1)² matrix, the intercept column last), a chunk of rows at a
/// time. It is the bulk of a Newton step: (width + 1)·width/2 products a row against width for the
/// rest.
///
/// Every entry is the sum, in row order, of `(weight · x_j) · x_k` (`x_k` = 1 in the intercept
/// column). Two ways compute it with the same bits (each product and each sum is one IEEE
/// operation in the same order, and neither fuses a multiply and an add): register tiles where
/// the machine has AVX-512 ([`avx512::Tiles`]), the plain loop into the Hessian elsewhere.
struct Curvature {
    width: usize,
    #[cfg(target_arch = "x86_64")]
    tiles: Option<avx512::Tiles>,
}

impl Curvature {
    /// Starts from the feature rows of `hessian` (width × (width + 1) values).
    fn new(width: usize, hessian: &[f64]) -> Curvature {
        Curvature {
            width,
            #[cfg(target_arch = "x86_64")]
            tiles: std::arch::is_x86_feature_detected!("avx512f").then(|| avx512::Tiles::new(width, hessian)),
        }
    }

    /// Adds `rows` (row-major, `width` wide, one weight each), after every row added before.
    fn add(&mut self, rows: &[f64], weights: &[f64], hessian: &mut [f64]) {
        #[cfg(target_arch = "x86_64")]
        if let Some(tiles) = &mut self.tiles {
            // SAFETY: `tiles` exists only where the machine has AVX-512F.
            return unsafe { tiles.add(rows, weights) };
        }
        accumulate_plainly(rows, self.width, weights, hessian)
    }

    /// Leaves the sums in `hessian`'s feature rows.
    fn finish(self, hessian: &mut [f64]) {
        #[cfg(target_arch = "x86_64")]
        if let Some(tiles) = self.tiles {
            tiles.write(hessian);
        }
    }
}

/// [`Curvature`] row by row: for each row, each entry of the triangle is loaded, added to and
/// stored. Compiled also for AVX2 and NEON and chosen at run time.
#[multiversion::multiversion(targets("x86_64+avx2", "aarch64+neon"))]
fn accumulate_plainly(x: &[f64], width: usize, weights: &[f64], hessian: &mut [f64]) {
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

/// [`Curvature`] with AVX-512: each tile of 4 × 16 entries of the triangle is held in eight
/// registers while a chunk of rows passes over it, instead of loading and storing the whole
/// triangle for every row, which was most of a fit's time. [`Logistic::evaluate`] adds one chunk
/// of rows at a time, so the rows are in cache for every tile.
#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::{
        __m512d, _mm512_add_pd, _mm512_loadu_pd, _mm512_maskz_loadu_pd, _mm512_mul_pd, _mm512_set1_pd,
        _mm512_setzero_pd, _mm512_storeu_pd,
    };

    /// See [`super::predictors`].
    ///
    /// # Safety
    /// The machine must have AVX-512F.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn predictors(x: &[f64], beta: &[f64], z: &mut Vec<f64>, columns: &mut Vec<f64>) {
        let width = beta.len() - 1;
        let (w, b) = beta.split_at(width);
        let rows = x.len() / width;
        let height = rows.next_multiple_of(8);
        transpose(x, width, height, columns);
        z.clear();
        let b = _mm512_set1_pd(b[0]);
        for r0 in (0..height).step_by(8) {
            let mut sums = _mm512_set1_pd(-0.0);
            for (k, &w) in w.iter().enumerate() {
                sums = _mm512_add_pd(
                    sums,
                    _mm512_mul_pd(load(&columns[k * height + r0..]), _mm512_set1_pd(w)),
                );
            }
            let mut out = [0.0; 8];
            // SAFETY: `out` has 8 values.
            unsafe { _mm512_storeu_pd(out.as_mut_ptr(), _mm512_add_pd(sums, b)) };
            z.extend_from_slice(&out[..(rows - r0).min(8)]);
        }
    }

    /// `x`'s columns (`width` of them, `height` values each: zeros past the rows), written in
    /// order and read across the rows, which are in cache. Not inlined into AVX-512 code, where
    /// the compiler makes the reads across rows gathers, several times slower.
    #[inline(never)]
    fn transpose(x: &[f64], width: usize, height: usize, columns: &mut Vec<f64>) {
        columns.clear();
        columns.resize(width * height, 0.0);
        for (k, column) in columns.chunks_exact_mut(height).enumerate() {
            for (c, row) in column.iter_mut().zip(x.chunks_exact(width)) {
                *c = row[k];
            }
        }
    }

    const TILE_ROWS: usize = 4;
    /// Two vectors of eight.
    const TILE_COLUMNS: usize = 16;

    /// The sums, on a copy of the feature columns padded to whole tiles: its entries below the
    /// diagonal and past the edge collect products that are never written back. The intercept
    /// column is the running sum of weight · x_j, added row by row beside it.
    pub(super) struct Tiles {
        width: usize,
        padded: Vec<f64>,
        intercept: Vec<f64>,
        /// weight · x_j of the rows being added, `tile_rows` a row.
        scaled: Vec<f64>,
    }

    impl Tiles {
        pub(super) fn new(width: usize, hessian: &[f64]) -> Tiles {
            let stride = width.next_multiple_of(TILE_COLUMNS);
            let mut padded = vec![0.0; width.next_multiple_of(TILE_ROWS) * stride];
            let mut intercept = vec![0.0; width];
            for ((padded, h), i) in padded
                .chunks_exact_mut(stride)
                .zip(hessian.chunks_exact(width + 1))
                .zip(&mut intercept)
            {
                padded[..width].copy_from_slice(&h[..width]);
                *i = h[width];
            }
            Tiles {
                width,
                padded,
                intercept,
                scaled: Vec::new(),
            }
        }

        /// See [`super::Curvature::add`].
        ///
        /// # Safety
        /// The machine must have AVX-512F.
        pub(super) unsafe fn add(&mut self, x: &[f64], weights: &[f64]) {
            let width = self.width;
            let (stride, tile_rows) = (width.next_multiple_of(TILE_COLUMNS), width.next_multiple_of(TILE_ROWS));
            self.scaled.clear();
            self.scaled.resize(weights.len() * tile_rows, 0.0);
            for ((row, &weight), scaled) in x
                .chunks_exact(width)
                .zip(weights)
                .zip(self.scaled.chunks_exact_mut(tile_rows))
            {
                for ((s, v), i) in scaled.iter_mut().zip(row).zip(&mut self.intercept) {
                    *s = weight * v;
                    *i += *s;
                }
            }
            for j0 in (0..width).step_by(TILE_ROWS) {
                let tile = &mut self.padded[j0 * stride..(j0 + TILE_ROWS) * stride];
                // Tiles wholly below the diagonal hold nothing the matrix keeps.
                for k0 in (j0 / TILE_COLUMNS * TILE_COLUMNS..width).step_by(TILE_COLUMNS) {
                    // SAFETY: the caller's promise.
                    unsafe { add_tile(x, width, (&self.scaled, tile_rows), (j0, k0), (tile, stride)) };
                }
            }
        }

        /// See [`super::Curvature::finish`].
        pub(super) fn write(&self, hessian: &mut [f64]) {
            let width = self.width;
            let stride = width.next_multiple_of(TILE_COLUMNS);
            for (j, ((h, padded), i)) in hessian
                .chunks_exact_mut(width + 1)
                .zip(self.padded.chunks_exact(stride))
                .zip(&self.intercept)
                .enumerate()
            {
                h[j..width].copy_from_slice(&padded[j..width]);
                h[width] = *i;
            }
        }
    }

    /// Rows `j0..j0 + TILE_ROWS` and columns `k0..k0 + TILE_COLUMNS` of the padded matrix (`tile`,
    /// `stride` wide), over the rows of `x` in order: `acc += a_j · x_k` (a = `scaled`), a multiply
    /// then an add, as the plain loop does.
    #[target_feature(enable = "avx512f")]
    fn add_tile(
        x: &[f64],
        width: usize,
        (scaled, scaled_width): (&[f64], usize),
        (j0, k0): (usize, usize),
        (tile, stride): (&mut [f64], usize),
    ) {
        let mut acc = [[_mm512_setzero_pd(); 2]; TILE_ROWS];
        for (acc, row) in acc.iter_mut().zip(tile.chunks_exact(stride)) {
            *acc = [load(&row[k0..]), load(&row[k0 + 8..])];
        }
        for (row, scaled) in x.chunks_exact(width).zip(scaled.chunks_exact(scaled_width)) {
            let x = [load(&row[k0..]), load(row.get(k0 + 8..).unwrap_or_default())];
            for (acc, &a) in acc.iter_mut().zip(&scaled[j0..j0 + TILE_ROWS]) {
                let a = _mm512_set1_pd(a);
                for (acc, &x) in acc.iter_mut().zip(&x) {
                    *acc = _mm512_add_pd(*acc, _mm512_mul_pd(a, x));
                }
            }
        }
        for (acc, row) in acc.iter().zip(tile.chunks_exact_mut(stride)) {
            for (half, &acc) in acc.iter().enumerate() {
                let to = &mut row[k0 + 8 * half..][..8];
                // SAFETY: `to` is 8 values long.
                unsafe { _mm512_storeu_pd(to.as_mut_ptr(), acc) };
            }
        }
    }

    /// The first 8 values of `from`, zeros past its end.
    #[target_feature(enable = "avx512f")]
    fn load(from: &[f64]) -> __m512d {
        if from.len() >= 8 {
            // SAFETY: `from` has 8 values.
            unsafe { _mm512_loadu_pd(from.as_ptr()) }
        } else {
            // SAFETY: the mask reads only the `from.len()` values `from` has.
            unsafe { _mm512_maskz_loadu_pd((1u8 << from.len()) - 1, from.as_ptr()) }
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
            logistic.evaluate(&moved, &mut at);
            assert!(at.objective > fit.objective);
        }
        assert_eq!(super::fit(&x, 2, &y, 1.0, 50), Ok(fit), "same input, same bits");
    }

    /// Both accumulations (the tiled one where this machine has AVX-512) give the bits of the
    /// plain row-by-row sum, entry by entry, at widths that fill a tile exactly and that do not,
    /// and over several 128-row chunks with a short last one.
    #[test]
    fn the_hessian_has_the_bits_of_the_plain_sum() {
        for (width, rows) in [(1, 3), (7, 53), (16, 2 * CHUNK), (42, 3 * CHUNK + 7)] {
            let x: Vec<f64> = (0..width * rows)
                .map(|i| ((i * 37 % 101) as f64 - 50.0) / 7.0)
                .collect();
            let weights: Vec<f64> = (0..rows).map(|i| (i % 13) as f64 / 52.0).collect();
            let n = width + 1;
            let mut expected = vec![0.0; width * n];
            for (row, w) in x.chunks_exact(width).zip(&weights) {
                for j in 0..width {
                    let a = w * row[j];
                    for k in j..width {
                        expected[j * n + k] += a * row[k];
                    }
                    expected[j * n + width] += a;
                }
            }
            let mut h = vec![0.0; width * n];
            let mut curvature = Curvature::new(width, &h);
            // In the chunks the solver adds, and in one call.
            for (rows, weights) in x.chunks(CHUNK * width).zip(weights.chunks(CHUNK)) {
                curvature.add(rows, weights, &mut h);
            }
            curvature.finish(&mut h);
            let mut whole = vec![0.0; width * n];
            let mut curvature = Curvature::new(width, &whole);
            curvature.add(&x, &weights, &mut whole);
            curvature.finish(&mut whole);
            assert_eq!(bits(&whole), bits(&expected), "width {width}, {rows} rows, in one call");
            assert_eq!(bits(&h), bits(&expected), "width {width}, {rows} rows");
            let mut plainly = vec![0.0; width * n];
            accumulate_plainly(&x, width, &weights, &mut plainly);
            assert_eq!(bits(&plainly), bits(&expected), "width {width}, {rows} rows, plainly");
        }
    }

    fn bits(v: &[f64]) -> Vec<u64> {
        v.iter().map(|f| f.to_bits()).collect()
    }

    /// The side-by-side predictors and the shared exponential give the bits of a row's plain
    /// `sum` and of σ and softplus each with its own exponential, as the solver had them.
    #[test]
    fn predictors_and_the_shared_exponential_keep_the_bits() {
        let (width, rows) = (5, 2 * LANES + 3);
        let x: Vec<f64> = (0..width * rows).map(|i| ((i * 53 % 97) as f64 - 48.0) / 3.0).collect();
        let beta = [0.3, -1.25, 0.0, 2.5, -0.0625, 0.7];
        let (mut z, mut plainly) = (Vec::new(), Vec::new());
        predictors(&x, &beta, &mut z, &mut Vec::new());
        predict_plainly(&x, &beta, &mut plainly);
        let plain: Vec<f64> = x
            .chunks_exact(width)
            .map(|row| row.iter().zip(&beta).map(|(x, w)| x * w).sum::<f64>() + beta[width])
            .collect();
        assert_eq!(bits(&z), bits(&plain));
        assert_eq!(bits(&plainly), bits(&plain));
        for z in [-800.0, -30.0, -1.5, -1e-300, -0.0, 0.0, 1e-300, 0.75, 36.0, 800.0] {
            let e = decay(z);
            let softplus = if z > 0.0 {
                z + (-z).exp().ln_1p()
            } else {
                z.exp().ln_1p()
            };
            let sigmoid = if z >= 0.0 {
                1.0 / (1.0 + (-z).exp())
            } else {
                z.exp() / (1.0 + z.exp())
            };
            assert_eq!(softplus_from(z, e).to_bits(), softplus.to_bits(), "softplus({z})");
            assert_eq!(sigmoid_from(z, e).to_bits(), sigmoid.to_bits(), "sigmoid({z})");
        }
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
