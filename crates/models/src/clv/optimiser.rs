//! Maximum likelihood by L-BFGS over log-parameters, with restarts; see the module docs of `clv`.

use std::cell::Cell;

use argmin::core::{CostFunction, Executor, Gradient, State, TerminationReason};
use argmin::solver::linesearch::MoreThuenteLineSearch;
use argmin::solver::quasinewton::LBFGS;

use super::ClvError;

/// A model's total log-likelihood over its data.
pub(super) trait LogLikelihood<const N: usize> {
    /// Parameter names, for errors.
    const NAMES: [&'static str; N];
    /// Number of customers the likelihood sums over.
    fn n(&self) -> f64;
    /// Total log-likelihood and its gradient with respect to the natural (positive) parameters.
    fn ll_grad(&self, params: &[f64; N]) -> (f64, [f64; N]);
}

/// Log-parameters are clamped to ±30 (parameters within [1e-13, 1e13]), so no line-search trial step can
/// overflow the likelihood; an estimate that ends up there has no finite maximum.
const MAX_LOG_PARAM: f64 = 30.0;

/// Log-parameters, cost and gradient of one objective evaluation.
type Evaluation<const N: usize> = ([f64; N], f64, [f64; N]);

/// Penalised mean negative log-likelihood as a function of log-parameters, for argmin.
struct Objective<'a, M, const N: usize> {
    model: &'a M,
    penalizer: f64,
    /// argmin asks for the cost and then the gradient at the same point; both come from one pass.
    last: Cell<Option<Evaluation<N>>>,
}

impl<M: LogLikelihood<N>, const N: usize> Objective<'_, M, N> {
    fn eval(&self, theta: &[f64]) -> Result<(f64, [f64; N]), argmin::core::Error> {
        let theta: [f64; N] = theta.try_into()?;
        if let Some((at, cost, grad)) = self.last.get() {
            if at == theta {
                return Ok((cost, grad));
            }
        }
        let params = theta.map(|v| v.clamp(-MAX_LOG_PARAM, MAX_LOG_PARAM).exp());
        let (ll, ll_grad) = self.model.ll_grad(&params);
        let n = self.model.n();
        let cost = -ll / n + self.penalizer * params.iter().map(|v| v * v).sum::<f64>();
        // Chain rule for θ = ln(param): ∂/∂θ = param · ∂/∂param; flat beyond the clamp.
        let grad = std::array::from_fn(|i| {
            if theta[i].abs() < MAX_LOG_PARAM {
                params[i] * (-ll_grad[i] / n + 2.0 * self.penalizer * params[i])
            } else {
                0.0
            }
        });
        // Should a value still be non-finite, +∞ makes the line search fail rather than accept it.
        let cost = if cost.is_finite() && grad.iter().all(|g: &f64| g.is_finite()) {
            cost
        } else {
            f64::INFINITY
        };
        self.last.set(Some((theta, cost, grad)));
        Ok((cost, grad))
    }
}

impl<M: LogLikelihood<N>, const N: usize> CostFunction for Objective<'_, M, N> {
    type Param = Vec<f64>;
    type Output = f64;

    fn cost(&self, theta: &Self::Param) -> Result<f64, argmin::core::Error> {
        Ok(self.eval(theta)?.0)
    }
}

impl<M: LogLikelihood<N>, const N: usize> Gradient for Objective<'_, M, N> {
    type Param = Vec<f64>;
    type Gradient = Vec<f64>;

    fn gradient(&self, theta: &Self::Param) -> Result<Vec<f64>, argmin::core::Error> {
        Ok(self.eval(theta)?.1.to_vec())
    }
}

/// Minimise the penalised mean negative log-likelihood from `start` (natural parameters) with L-BFGS;
/// returns the natural-parameter estimates and the total iteration count.
///
/// argmin's L-BFGS gives up when its line search fails, typically because a stale curvature pair made
/// the next direction non-descending. We then restart from the best point with fresh memory (a
/// steepest-descent step). If a restart cannot lower the cost at all, the cost is flat to machine
/// precision there, and we accept the point provided its gradient norm is below √tolerance.
pub(super) fn minimise<M: LogLikelihood<N>, const N: usize>(
    model: &M,
    start: [f64; N],
    max_iters: u64,
    tolerance: f64,
    penalizer: f64,
) -> Result<([f64; N], u64), ClvError> {
    let optimiser_error = |e: argmin::core::Error| ClvError::Optimizer(e.to_string());
    let objective = || Objective {
        model,
        penalizer,
        last: Cell::new(None),
    };
    let (mut theta, mut cost, mut iterations) = (start.map(f64::ln), f64::INFINITY, 0);
    let failure = loop {
        let solver = LBFGS::new(MoreThuenteLineSearch::new(), 10)
            .with_tolerance_grad(tolerance)
            .map_err(optimiser_error)?;
        let result = Executor::new(objective(), solver)
            .configure(|state| state.param(theta.to_vec()).max_iters(max_iters - iterations))
            .ctrlc(false)
            .run()
            .map_err(optimiser_error)?;
        let state = result.state();
        iterations += state.get_iter();
        let best_cost = state.get_best_cost();
        if !best_cost.is_finite() {
            return Err(ClvError::NonFiniteLikelihood);
        }
        let improved = best_cost < cost;
        theta = state
            .get_best_param()
            .and_then(|best| best.as_slice().try_into().ok())
            .ok_or_else(|| ClvError::Optimizer("no parameters returned".to_owned()))?;
        cost = best_cost;
        let flat = || {
            objective()
                .eval(&theta)
                .is_ok_and(|(_, g)| g.iter().map(|g| g * g).sum::<f64>() <= tolerance)
        };
        match state.get_termination_reason() {
            Some(TerminationReason::SolverConverged) => break None,
            Some(TerminationReason::SolverExit(_)) if improved && iterations < max_iters => continue,
            Some(TerminationReason::SolverExit(_)) if !improved && flat() => break None,
            reason => break Some(reason.map_or("not terminated", TerminationReason::text).to_owned()),
        }
    };
    // Running into the clamp explains a failure too, so report it first.
    if let Some(i) = theta.iter().position(|theta| theta.abs() >= MAX_LOG_PARAM) {
        return Err(ClvError::Degenerate { parameter: M::NAMES[i] });
    }
    if let Some(reason) = failure {
        return Err(ClvError::NotConverged { iterations, reason });
    }
    Ok((theta.map(f64::exp), iterations))
}
