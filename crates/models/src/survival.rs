//! Churn as survival: a Cox proportional-hazards model of the time from a cutoff to the customer's
//! next order ([`cis_features::labels::Labels`]), censored at the labels' knowledge time, on the
//! standardised rows churn's other methods learn from ([`crate::churn::Design`]).
//!
//! The fit is the one lifelines' `CoxPHFitter` makes: Efron's handling of tied times, and with
//! `penalizer` its L2 term (`l1_ratio = 0`), maximising the mean partial log-likelihood less
//! `½·penalizer·‖β‖²`; minimised here in lifelines' summed form, `−ℓ(β) + ½·n·penalizer·‖β‖²`, by
//! the Newton's method logistic regression uses ([`crate::logistic::minimise`]). The baseline
//! cumulative hazard is Breslow's, so P(churn) = P(no order within the horizon | x) =
//! `exp(−H₀(horizon)·exp(x·β))`.
//!
//! A column that is zero on every training row (a constant feature, standardised) carries no
//! information and would make the Hessian singular: it gets coefficient 0 and stays out of the fit.

use serde::{Deserialize, Serialize};

use crate::churn::Design;
use crate::logistic::{minimise, NewtonError, Objective, Pass};
use crate::{FitError, ParamError};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SurvivalParams {
    /// lifelines' `penalizer` with `l1_ratio = 0`: `½·penalizer·‖β‖²` is added to the mean negative
    /// partial log-likelihood. 0: the plain Cox model, which has no unique optimum when features
    /// are collinear (as snapshot features are: totals and their parts).
    pub penalizer: f64,
    /// Newton steps before the fit gives up.
    pub max_iterations: u64,
}

impl Default for SurvivalParams {
    fn default() -> Self {
        // 10⁻³ makes collinear features identifiable while barely shrinking the rest: on CDNOW's
        // 1997-06-30 cutoff, its customer-disjoint validation split ranks within 0.001 of 10⁻⁴'s
        // and above 10⁻² and 10⁻¹ (chosen there, not on any later cutoff).
        SurvivalParams {
            penalizer: 1e-3,
            max_iterations: 100,
        }
    }
}

impl SurvivalParams {
    pub fn validate(&self) -> Result<(), ParamError> {
        if !(self.penalizer.is_finite() && self.penalizer >= 0.0) {
            return Err(ParamError::Penalizer(self.penalizer));
        }
        if self.max_iterations == 0 {
            return Err(ParamError::MaxIterations);
        }
        Ok(())
    }
}

/// How well a survival model ranks and predicts times to the next order on one set of rows.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SurvivalMetrics {
    pub rows: usize,
    /// Harrell's C ([`concordance`]): the share of comparable pairs the model orders rightly.
    pub concordance: f64,
    /// The Brier score of S(t | x) with inverse-probability-of-censoring weights, averaged over
    /// (0, horizon] ([`integrated_brier`]).
    pub integrated_brier: f64,
}

/// What a churn model fitted with [`crate::churn::ChurnMethod::Survival`] learned.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CoxFit {
    /// Log hazard ratios of the next order per standardised feature, in the model's feature order:
    /// a positive coefficient brings the next order sooner (less churn).
    pub coefficients: Vec<f64>,
    /// Breslow's H₀ at each whole day 1..=horizon (the last is the horizon's): the cumulative
    /// hazard of a row at the training mean.
    pub baseline_cumulative_hazard: Vec<f64>,
    /// The partial log-likelihood (Efron) at the fit, without the penalty.
    pub log_likelihood: f64,
    pub iterations: u64,
    pub train: SurvivalMetrics,
    pub validation: SurvivalMetrics,
}

impl CoxFit {
    fn linear(&self, standardised: impl Iterator<Item = f64>) -> f64 {
        standardised.zip(&self.coefficients).map(|(x, b)| x * b).sum()
    }

    /// H₀(horizon).
    pub fn baseline_at_horizon(&self) -> f64 {
        self.baseline_cumulative_hazard.last().copied().unwrap_or(0.0)
    }

    /// P(no order within the horizon) of one standardised row.
    pub fn p_no_event(&self, standardised: impl Iterator<Item = f64>) -> f64 {
        (-self.baseline_at_horizon() * self.linear(standardised).exp()).exp()
    }

    /// Concordance and integrated Brier score over the horizon on standardised rows `x`.
    pub fn metrics(&self, x: &[f64], durations: &[f64], observed: &[bool]) -> SurvivalMetrics {
        let width = self.coefficients.len().max(1);
        let eta: Vec<f64> = x.chunks_exact(width).map(|r| self.linear(r.iter().copied())).collect();
        let h = &self.baseline_cumulative_hazard;
        let brier = integrated_brier(
            |i, day| (-h[day - 1] * eta[i].exp()).exp(),
            durations,
            observed,
            h.len(),
        );
        SurvivalMetrics {
            rows: durations.len(),
            concordance: concordance(durations, observed, &eta),
            integrated_brier: brier,
        }
    }
}

/// The columns of `x` (row-major, `width` wide) that are not zero throughout, and `x` with only
/// those: a standardised constant column is all zeros and has no partial likelihood to fit.
pub fn without_constant_columns(x: &[f64], width: usize) -> (Vec<usize>, Vec<f64>) {
    let live: Vec<usize> = (0..width)
        .filter(|&j| x.chunks_exact(width).any(|r| r[j] != 0.0))
        .collect();
    let compact = x
        .chunks_exact(width)
        .flat_map(|r| live.iter().map(move |&j| r[j]))
        .collect();
    (live, compact)
}

/// The Cox fit of a churn design's training rows with `params`: what [`fit_churn`] stores.
pub fn fit_training_rows(params: &SurvivalParams, d: &Design) -> Result<Cox, NewtonError> {
    fit(
        &d.x_train,
        d.width,
        &d.durations_train,
        &d.observed_train,
        params.penalizer,
        params.max_iterations,
    )
}

/// The Cox model of a churn design: fitted on its training rows, measured on both sides.
pub fn fit_churn(params: &SurvivalParams, d: &Design, horizon_days: u32) -> Result<CoxFit, FitError> {
    let cox = fit_training_rows(params, d)?;
    tracing::debug!(
        iterations = cox.iterations,
        log_likelihood = cox.log_likelihood,
        "churn fitted as a Cox model"
    );
    let mut fitted = CoxFit {
        baseline_cumulative_hazard: (1..=horizon_days.max(1))
            .map(|day| cox.baseline.at(f64::from(day)))
            .collect(),
        log_likelihood: cox.log_likelihood,
        iterations: cox.iterations,
        coefficients: cox.coefficients,
        train: SurvivalMetrics::default(),
        validation: SurvivalMetrics::default(),
    };
    fitted.train = fitted.metrics(&d.x_train, &d.durations_train, &d.observed_train);
    fitted.validation = fitted.metrics(&d.x_valid, &d.durations_valid, &d.observed_valid);
    Ok(fitted)
}

/// A Cox model fitted on rows.
#[derive(Debug, Clone, PartialEq)]
pub struct Cox {
    pub coefficients: Vec<f64>,
    pub log_likelihood: f64,
    pub iterations: u64,
    pub baseline: Baseline,
}

/// Breslow's baseline cumulative hazard, a step function of time.
#[derive(Debug, Clone, PartialEq)]
pub struct Baseline {
    /// The distinct event times, ascending.
    times: Vec<f64>,
    /// H₀ from each of `times` on.
    cumulative: Vec<f64>,
}

impl Baseline {
    /// H₀(t): the hazard accumulated over event times ≤ t.
    pub fn at(&self, t: f64) -> f64 {
        match self.times.partition_point(|&s| s <= t) {
            0 => 0.0,
            k => self.cumulative[k - 1],
        }
    }
}

/// Fits the Cox model on `x` (row-major, `width` columns, one row per duration) by Newton's method.
pub fn fit(
    x: &[f64],
    width: usize,
    durations: &[f64],
    observed: &[bool],
    penalizer: f64,
    max_iterations: u64,
) -> Result<Cox, NewtonError> {
    let n = durations.len();
    if width == 0 || x.len() != width * n || observed.len() != n {
        return Err(NewtonError::Shape {
            values: x.len(),
            width,
            labels: n,
        });
    }
    if durations.iter().any(|d| !d.is_finite()) {
        return Err(NewtonError::NotFinite);
    }
    let (live, compact) = without_constant_columns(x, width);
    let mut order: Vec<usize> = (0..n).collect();
    // Latest first, so the risk set only grows; a stable sort keeps the summation order fixed.
    order.sort_by(|&a, &b| durations[b].total_cmp(&durations[a]));
    let efron = Efron {
        x: &compact,
        width: live.len(),
        durations,
        observed,
        order,
        penalty: n as f64 * penalizer,
    };
    let (beta, _, iterations) = if live.is_empty() {
        (Vec::new(), 0.0, 0)
    } else {
        minimise(&efron, live.len(), n.max(1) as f64, max_iterations)?
    };
    let log_likelihood = efron.log_likelihood(&beta);
    let mut coefficients = vec![0.0; width];
    for (&j, b) in live.iter().zip(&beta) {
        coefficients[j] = *b;
    }
    let eta: Vec<f64> = x
        .chunks_exact(width)
        .map(|r| r.iter().zip(&coefficients).map(|(x, b)| x * b).sum())
        .collect();
    Ok(Cox {
        baseline: breslow(durations, observed, &eta),
        coefficients,
        log_likelihood,
        iterations,
    })
}

/// Breslow's estimator: H₀(t) = Σ over event times s ≤ t of (events at s) / Σ_{T ≥ s} exp(η).
fn breslow(durations: &[f64], observed: &[bool], eta: &[f64]) -> Baseline {
    let mut order: Vec<usize> = (0..durations.len()).collect();
    order.sort_by(|&a, &b| durations[b].total_cmp(&durations[a]));
    // Walk latest first, accumulating the risk set, and record each event time's increment.
    let (mut risk, mut steps) = (0.0, Vec::new());
    let mut k = 0;
    while k < order.len() {
        let t = durations[order[k]];
        let mut events = 0usize;
        while k < order.len() && durations[order[k]] == t {
            risk += eta[order[k]].exp();
            events += usize::from(observed[order[k]]);
            k += 1;
        }
        if events > 0 {
            steps.push((t, events as f64 / risk));
        }
    }
    steps.reverse();
    let mut total = 0.0;
    let (times, cumulative) = steps
        .into_iter()
        .map(|(t, h)| {
            total += h;
            (t, total)
        })
        .unzip();
    Baseline { times, cumulative }
}

/// `−ℓ(β) + ½·penalty·‖β‖²`, ℓ the Efron partial log-likelihood.
struct Efron<'a> {
    x: &'a [f64],
    width: usize,
    durations: &'a [f64],
    observed: &'a [bool],
    /// Row indices, latest duration first.
    order: Vec<usize>,
    /// n · penalizer.
    penalty: f64,
}

impl Efron<'_> {
    fn log_likelihood(&self, beta: &[f64]) -> f64 {
        -self.pass(beta, None) + self.penalty_at(beta)
    }

    fn penalty_at(&self, beta: &[f64]) -> f64 {
        0.5 * self.penalty * beta.iter().map(|b| b * b).sum::<f64>()
    }

    /// The objective at β, and with `at` its gradient and Hessian (upper triangle) too: one pass
    /// over the rows, latest first, growing the risk set's sums of w = exp(η − max η), w·x and
    /// w·xxᵀ (the shift cancels in ℓ and keeps the exponentials finite).
    fn pass(&self, beta: &[f64], mut at: Option<&mut Pass>) -> f64 {
        let p = self.width;
        let row = |i: usize| &self.x[i * p..(i + 1) * p];
        let eta: Vec<f64> = (0..self.durations.len())
            .map(|i| row(i).iter().zip(beta).map(|(x, b)| x * b).sum())
            .collect();
        let shift = eta.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let shift = if shift.is_finite() { shift } else { 0.0 };
        let derivatives = at.is_some();
        let dim = if derivatives { p } else { 0 };
        let (mut risk_x, mut tie_x) = (vec![0.0; dim], vec![0.0; dim]);
        let (mut risk_xx, mut tie_xx) = (vec![0.0; dim * dim], vec![0.0; dim * dim]);
        let mut a = vec![0.0; dim];
        if let Some(at) = at.as_deref_mut() {
            at.clear();
        }
        let (mut risk, mut ll) = (0.0, 0.0);
        let mut k = 0;
        while k < self.order.len() {
            let t = self.durations[self.order[k]];
            let (mut tie, mut events) = (0.0, 0usize);
            tie_x.iter_mut().for_each(|v| *v = 0.0);
            tie_xx.iter_mut().for_each(|v| *v = 0.0);
            while k < self.order.len() && self.durations[self.order[k]] == t {
                let i = self.order[k];
                k += 1;
                let w = (eta[i] - shift).exp();
                let xi = row(i);
                risk += w;
                if derivatives {
                    add_outer(&mut risk_x, &mut risk_xx, w, xi);
                }
                if self.observed[i] {
                    events += 1;
                    tie += w;
                    ll += eta[i] - shift;
                    if let Some(at) = at.as_deref_mut() {
                        add_outer(&mut tie_x, &mut tie_xx, w, xi);
                        // The objective is −ℓ: its gradient gets −x for each event.
                        for (g, v) in at.gradient.iter_mut().zip(xi) {
                            *g -= v;
                        }
                    }
                }
            }
            // Efron: the l-th of the d tied events sees the risk set less l/d of the tied ones.
            for l in 0..events {
                let frac = l as f64 / events as f64;
                let denom = risk - frac * tie;
                ll -= denom.ln();
                let Some(at) = at.as_deref_mut() else {
                    continue;
                };
                for ((a, r), t) in a.iter_mut().zip(&risk_x).zip(&tie_x) {
                    *a = r - frac * t;
                }
                for (g, a) in at.gradient.iter_mut().zip(&a) {
                    *g += a / denom;
                }
                for j in 0..p {
                    for m in j..p {
                        let second = risk_xx[j * p + m] - frac * tie_xx[j * p + m];
                        at.hessian[j * p + m] += second / denom - a[j] * a[m] / (denom * denom);
                    }
                }
            }
        }
        let objective = -ll + self.penalty_at(beta);
        if let Some(at) = at {
            for (j, (g, b)) in at.gradient.iter_mut().zip(beta).enumerate() {
                *g += self.penalty * b;
                at.hessian[j * p + j] += self.penalty;
            }
            at.objective = objective;
        }
        objective
    }
}

/// Adds w·x to `sum` and the upper triangle of w·xxᵀ to `outer`.
fn add_outer(sum: &mut [f64], outer: &mut [f64], w: f64, x: &[f64]) {
    let p = x.len();
    for (j, &xj) in x.iter().enumerate() {
        sum[j] += w * xj;
        let wx = w * xj;
        for (o, v) in outer[j * p + j..(j + 1) * p].iter_mut().zip(&x[j..]) {
            *o += wx * v;
        }
    }
}

impl Objective for Efron<'_> {
    fn evaluate(&self, beta: &[f64], at: &mut Pass) {
        self.pass(beta, Some(at));
    }
}

/// Harrell's concordance index of risk scores (higher: the order comes sooner), as lifelines'
/// `concordance_index(T, −risk, E)` counts it: a pair is comparable when the earlier time is an
/// observed event and the later time is later, or equal and censored; it is concordant when the
/// earlier one has the higher risk, and counts a half when the risks tie. 0.5 when no pair is
/// comparable. O(n log n): rows by time, the earlier events' risks in a Fenwick tree of ranks.
pub fn concordance(durations: &[f64], observed: &[bool], risk: &[f64]) -> f64 {
    let mut levels: Vec<f64> = risk.to_vec();
    levels.sort_by(f64::total_cmp);
    levels.dedup();
    let rank = |r: f64| levels.partition_point(|&v| v < r);
    let mut tree = Fenwick::new(levels.len());
    let mut order: Vec<usize> = (0..durations.len()).collect();
    order.sort_by(|&a, &b| durations[a].total_cmp(&durations[b]));
    let (mut pairs, mut concordant, mut tied) = (0u64, 0u64, 0u64);
    let mut k = 0;
    while k < order.len() {
        let t = durations[order[k]];
        let end = k + order[k..].partition_point(|&i| durations[i] == t);
        let group = &order[k..end];
        let mut compare = |i: usize, tree: &Fenwick| {
            let r = rank(risk[i]);
            let (below_or_equal, below) = (tree.prefix(r + 1), tree.prefix(r));
            pairs += tree.total;
            concordant += tree.total - below_or_equal;
            tied += below_or_equal - below;
        };
        // Events at t are compared with earlier events, then join them; rows censored at t are
        // compared with every event up to and including t.
        for &i in group.iter().filter(|&&i| observed[i]) {
            compare(i, &tree);
        }
        for &i in group.iter().filter(|&&i| observed[i]) {
            tree.add(rank(risk[i]));
        }
        for &i in group.iter().filter(|&&i| !observed[i]) {
            compare(i, &tree);
        }
        k = end;
    }
    if pairs == 0 {
        return 0.5;
    }
    (concordant as f64 + 0.5 * tied as f64) / pairs as f64
}

/// Counts of ranks, with prefix sums in O(log n).
struct Fenwick {
    counts: Vec<u64>,
    total: u64,
}

impl Fenwick {
    fn new(n: usize) -> Fenwick {
        Fenwick {
            counts: vec![0; n + 1],
            total: 0,
        }
    }

    fn add(&mut self, rank: usize) {
        self.total += 1;
        let mut i = rank + 1;
        while i < self.counts.len() {
            self.counts[i] += 1;
            i += i & i.wrapping_neg();
        }
    }

    /// How many added ranks are below `end`.
    fn prefix(&self, end: usize) -> u64 {
        let (mut i, mut sum) = (end, 0);
        while i > 0 {
            sum += self.counts[i];
            i -= i & i.wrapping_neg();
        }
        sum
    }
}

/// The integrated Brier score of survival curves `survival(row, day)` over (0, `days`], as the mean
/// of the inverse-probability-of-censoring-weighted Brier score (Graf et al., 1999) at each whole
/// day 1..=days: `BS(t) = mean of S(t|xᵢ)²·[Tᵢ ≤ t, event]/G(Tᵢ−) + (1 − S(t|xᵢ))²·[Tᵢ > t]/G(t)`,
/// G the Kaplan–Meier estimate of the censoring distribution on the same rows.
pub fn integrated_brier(
    survival: impl Fn(usize, usize) -> f64,
    durations: &[f64],
    observed: &[bool],
    days: usize,
) -> f64 {
    let n = durations.len();
    if n == 0 || days == 0 {
        return 0.0;
    }
    let censoring = censoring_km(durations, observed);
    let before: Vec<f64> = durations.iter().map(|&t| censoring.before(t)).collect();
    let mut total = 0.0;
    for day in 1..=days {
        let t = day as f64;
        let g = censoring.at(t);
        let mut sum = 0.0;
        for i in 0..n {
            let s = survival(i, day);
            if durations[i] <= t {
                if observed[i] && before[i] > 0.0 {
                    sum += s * s / before[i];
                }
            } else if g > 0.0 {
                sum += (1.0 - s) * (1.0 - s) / g;
            }
        }
        total += sum / n as f64;
    }
    total / days as f64
}

/// Kaplan–Meier estimate of the censoring distribution, G(t) = P(censored after t).
struct CensoringKm {
    /// Distinct censoring times, ascending, and G from each on.
    times: Vec<f64>,
    survival: Vec<f64>,
}

impl CensoringKm {
    fn at(&self, t: f64) -> f64 {
        match self.times.partition_point(|&s| s <= t) {
            0 => 1.0,
            k => self.survival[k - 1],
        }
    }

    /// G(t−), the left limit.
    fn before(&self, t: f64) -> f64 {
        match self.times.partition_point(|&s| s < t) {
            0 => 1.0,
            k => self.survival[k - 1],
        }
    }
}

fn censoring_km(durations: &[f64], observed: &[bool]) -> CensoringKm {
    let mut order: Vec<usize> = (0..durations.len()).collect();
    order.sort_by(|&a, &b| durations[a].total_cmp(&durations[b]));
    let (mut times, mut survival) = (Vec::new(), Vec::new());
    let (mut at_risk, mut g) = (durations.len(), 1.0);
    let mut k = 0;
    while k < order.len() {
        let t = durations[order[k]];
        let (mut censored, mut leaving) = (0usize, 0usize);
        while k < order.len() && durations[order[k]] == t {
            censored += usize::from(!observed[order[k]]);
            leaving += 1;
            k += 1;
        }
        if censored > 0 {
            g *= 1.0 - censored as f64 / at_risk as f64;
            times.push(t);
            survival.push(g);
        }
        at_risk -= leaving;
    }
    CensoringKm { times, survival }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One feature; the next order comes sooner the larger it is, with ties and censoring.
    fn data() -> (Vec<f64>, Vec<f64>, Vec<bool>) {
        let (mut x, mut t, mut e) = (Vec::new(), Vec::new(), Vec::new());
        for i in 0..200 {
            let v = ((i * 37) % 200) as f64 / 100.0 - 1.0;
            let u = ((i * 7919) % 1000) as f64 / 1000.0 + 0.001;
            // Exponential times with rate exp(1.2·v), rounded to whole days (ties), censored at 60.
            let time = (-u.ln() * 30.0 / (1.2 * v).exp()).ceil();
            x.push(v);
            t.push(time.min(60.0));
            e.push(time <= 60.0);
        }
        (x, t, e)
    }

    #[test]
    fn the_fit_has_a_zero_gradient_and_recovers_the_planted_effect() {
        let (x, t, e) = data();
        let cox = fit(&x, 1, &t, &e, 0.0, 50).expect("fit");
        assert!((cox.coefficients[0] - 1.2).abs() < 0.4, "{cox:?}");
        // At the optimum the objective rises in either direction.
        let order = {
            let mut o: Vec<usize> = (0..t.len()).collect();
            o.sort_by(|&a, &b| t[b].total_cmp(&t[a]));
            o
        };
        let efron = Efron {
            x: &x,
            width: 1,
            durations: &t,
            observed: &e,
            order,
            penalty: 0.0,
        };
        let best = efron.pass(&cox.coefficients, None);
        assert!((-best - cox.log_likelihood).abs() < 1e-9);
        for step in [1e-4, -1e-4] {
            assert!(efron.pass(&[cox.coefficients[0] + step], None) > best);
        }
        // The analytic gradient and Hessian match central differences away from the optimum.
        let derivatives = |b: f64| {
            let mut at = Pass::new(1);
            efron.evaluate(&[b], &mut at);
            (at.gradient[0], at.hessian[0])
        };
        let h = 1e-6;
        let (gradient, hessian) = derivatives(0.3);
        let numeric = (efron.pass(&[0.3 + h], None) - efron.pass(&[0.3 - h], None)) / (2.0 * h);
        assert!((gradient - numeric).abs() < 1e-5, "{gradient} vs {numeric}");
        let numeric = (derivatives(0.3 + h).0 - derivatives(0.3 - h).0) / (2.0 * h);
        assert!((hessian - numeric).abs() < 1e-4, "{hessian} vs {numeric}");
        assert_eq!(fit(&x, 1, &t, &e, 0.0, 50).expect("fit"), cox, "same input, same bits");
    }

    #[test]
    fn the_penalty_shrinks_and_constant_columns_stay_out() {
        let (x, t, e) = data();
        let plain = fit(&x, 1, &t, &e, 0.0, 50).expect("fit");
        let shrunk = fit(&x, 1, &t, &e, 0.5, 50).expect("fit");
        assert!(shrunk.coefficients[0].abs() < plain.coefficients[0].abs());
        let wide: Vec<f64> = x.iter().flat_map(|&v| [0.0, v]).collect();
        let cox = fit(&wide, 2, &t, &e, 0.0, 50).expect("fit");
        assert_eq!(cox.coefficients[0], 0.0);
        assert!((cox.coefficients[1] - plain.coefficients[0]).abs() < 1e-12);
    }

    #[test]
    fn breslow_counts_events_over_the_risk_set() {
        // Times 1, 2, 2, 3 with the 2s both events and 3 censored; η = 0 for all: the risk sets
        // hold 4 then 3 rows.
        let b = breslow(&[1.0, 2.0, 2.0, 3.0], &[true, true, true, false], &[0.0; 4]);
        assert_eq!(b.at(0.5), 0.0);
        assert!((b.at(1.0) - 0.25).abs() < 1e-15);
        assert!((b.at(2.5) - (0.25 + 2.0 / 3.0)).abs() < 1e-15);
        assert_eq!(b.at(10.0), b.at(2.0));
    }

    #[test]
    fn concordance_counts_pairs_as_harrell_does() {
        // Times 1 (event), 2 (event), 3 (censored), 2 (censored). Comparable pairs: 1 with each of
        // the three others; 2-event with 3 and with the censored 2 (censored at the same time) = 5.
        let t = [1.0, 2.0, 3.0, 2.0];
        let e = [true, true, false, false];
        // Perfect ranking of risk, then one tie and one discordant pair.
        assert_eq!(concordance(&t, &e, &[4.0, 3.0, 1.0, 2.0]), 1.0);
        let c = concordance(&t, &e, &[4.0, 1.0, 1.0, 2.0]);
        // Pairs (0,1) (0,2) (0,3) right; (1,2) tied; (1,3) wrong: (3 + 0.5) / 5.
        assert!((c - 0.7).abs() < 1e-15, "{c}");
        assert_eq!(concordance(&[1.0, 2.0], &[false, false], &[1.0, 2.0]), 0.5);
    }

    #[test]
    fn integrated_brier_of_a_perfect_and_an_uninformed_model() {
        // No censoring before the horizon: a model that knows each time exactly scores 0; one that
        // says 0.5 throughout scores 0.25.
        let t = [1.5, 2.5, 10.0, 10.0];
        let e = [true, true, false, false];
        let exact = integrated_brier(|i, day| if (day as f64) < t[i] { 1.0 } else { 0.0 }, &t, &e, 3);
        assert!(exact.abs() < 1e-15, "{exact}");
        let half = integrated_brier(|_, _| 0.5, &t, &e, 3);
        assert!((half - 0.25).abs() < 1e-15, "{half}");
        // Censoring before t is reweighted: of rows censored at 1 and events at 2, weights 1/G.
        let km = censoring_km(&[1.0, 1.0, 2.0, 2.0], &[false, true, true, true]);
        assert_eq!(km.at(0.5), 1.0);
        assert!((km.at(1.0) - 0.75).abs() < 1e-15);
        assert_eq!(km.before(1.0), 1.0);
    }

    #[test]
    fn parameters_are_validated() {
        assert!(SurvivalParams::default().validate().is_ok());
        for bad in [-1.0, f64::NAN, f64::INFINITY] {
            let p = SurvivalParams {
                penalizer: bad,
                ..SurvivalParams::default()
            };
            assert!(matches!(p.validate(), Err(ParamError::Penalizer(_))));
        }
        let none = SurvivalParams {
            max_iterations: 0,
            ..SurvivalParams::default()
        };
        assert_eq!(none.validate(), Err(ParamError::MaxIterations));
    }
}
