//! The two log-likelihoods and their analytic gradients, over rows sorted once by x.

use super::optimiser::LogLikelihood;
use super::special::{digamma, ln_gamma};

/// BG/NBD data, sorted by x so x-only terms are computed once per distinct x.
pub(super) struct BgNbdLikelihood {
    /// `[x, t_x, T]` per customer.
    pub(super) rows: Vec<[f64; 3]>,
}

impl LogLikelihood<4> for BgNbdLikelihood {
    const NAMES: [&'static str; 4] = ["r", "alpha", "a", "b"];

    fn n(&self) -> f64 {
        self.rows.len() as f64
    }

    /// Paper eq. 6 in log space: `ln L = A1 + A2 + ln(e^A3 + δ(x>0) e^A4)` with
    /// A1 = lnΓ(r+x) − lnΓ(r) + r ln α, A2 = ln B(a, b+x) − ln B(a, b), A3 = −(r+x) ln(α+T),
    /// A4 = ln a − ln(b+x−1) − (r+x) ln(α+t_x).
    fn ll_grad(&self, &[r, alpha, a, b]: &[f64; 4]) -> (f64, [f64; 4]) {
        let ln_alpha = alpha.ln();
        let (ln_g_r, psi_r) = (ln_gamma(r), digamma(r));
        let (ln_g_b, psi_b) = (ln_gamma(b), digamma(b));
        let (ln_g_ab, psi_ab) = (ln_gamma(a + b), digamma(a + b));

        let mut ll = CompensatedSum::default();
        let mut grad = [0.0; 4];
        // Terms that depend on x only: A1 + A2, its gradient, and ln(a/(b+x−1)).
        let mut current_x = f64::NAN;
        let (mut a12, mut d_a12, mut ln_ab_ratio, mut inv_bx1) = (0.0, [0.0; 4], 0.0, 0.0);
        for &[x, t_x, t] in &self.rows {
            if x != current_x {
                current_x = x;
                let psi_abx = digamma(a + b + x);
                a12 =
                    ln_gamma(r + x) - ln_g_r + r * ln_alpha + ln_g_ab + ln_gamma(b + x) - ln_g_b - ln_gamma(a + b + x);
                d_a12 = [
                    digamma(r + x) - psi_r + ln_alpha,
                    r / alpha,
                    psi_ab - psi_abx,
                    psi_ab + digamma(b + x) - psi_b - psi_abx,
                ];
                if x > 0.0 {
                    inv_bx1 = 1.0 / (b + x - 1.0);
                    ln_ab_ratio = a.ln() + inv_bx1.ln();
                }
            }
            let s = r + x;
            let ln_at = (alpha + t).ln();
            let mut term = a12 - s * ln_at;
            grad[0] += d_a12[0] - ln_at;
            grad[1] += d_a12[1] - s / (alpha + t);
            grad[2] += d_a12[2];
            grad[3] += d_a12[3];
            if x > 0.0 {
                // ln(e^A3 + e^A4) = A3 + softplus(A4 − A3); w = share of the "dropped out after t_x" term.
                let ln_atx = (alpha + t_x).ln();
                let d = ln_ab_ratio - s * (ln_atx - ln_at);
                let e = (-d.abs()).exp();
                term += d.max(0.0) + e.ln_1p();
                let w = if d >= 0.0 { 1.0 / (1.0 + e) } else { e / (1.0 + e) };
                grad[0] -= w * (ln_atx - ln_at);
                grad[1] -= w * s * (1.0 / (alpha + t_x) - 1.0 / (alpha + t));
                grad[2] += w / a;
                grad[3] -= w * inv_bx1;
            }
            ll.add(term);
        }
        (ll.value(), grad)
    }
}

/// Repeat customers sorted by x.
pub(super) struct GammaGammaLikelihood {
    /// `[x, ln m_x, ln x, x·m_x]` per repeat customer.
    pub(super) rows: Vec<[f64; 4]>,
}

impl LogLikelihood<3> for GammaGammaLikelihood {
    const NAMES: [&'static str; 3] = ["p", "q", "gamma"];

    fn n(&self) -> f64 {
        self.rows.len() as f64
    }

    /// Density of m_x: x·m_x ~ Gamma(p·x, ν) with ν ~ Gamma(q, γ), i.e.
    /// `ln f = lnΓ(px+q) − lnΓ(px) − lnΓ(q) + q ln γ + (px−1) ln m_x + px ln x − (px+q) ln(γ + x m_x)`.
    fn ll_grad(&self, &[p, q, gamma]: &[f64; 3]) -> (f64, [f64; 3]) {
        let (ln_g_q, psi_q, ln_gamma_rate) = (ln_gamma(q), digamma(q), gamma.ln());
        let mut ll = CompensatedSum::default();
        let mut grad = [0.0; 3];
        let mut current_x = f64::NAN;
        // x-only terms: lnΓ(px+q) − lnΓ(px) and ψ(px+q), ψ(px).
        let (mut ln_ratio, mut psi_pxq, mut psi_px) = (0.0, 0.0, 0.0);
        for &[x, ln_m, ln_x, xm] in &self.rows {
            if x != current_x {
                current_x = x;
                ln_ratio = ln_gamma(p * x + q) - ln_gamma(p * x);
                psi_pxq = digamma(p * x + q);
                psi_px = digamma(p * x);
            }
            let shape = p * x + q;
            let ln_total = (gamma + xm).ln();
            ll.add(ln_ratio - ln_g_q + q * ln_gamma_rate + (p * x - 1.0) * ln_m + p * x * ln_x - shape * ln_total);
            grad[0] += x * (psi_pxq - psi_px + ln_m + ln_x - ln_total);
            grad[1] += psi_pxq - psi_q + ln_gamma_rate - ln_total;
            grad[2] += q / gamma - shape / (gamma + xm);
        }
        (ll.value(), grad)
    }
}

/// Neumaier (compensated) summation. Plain summation of ~10⁵ log-likelihood terms leaves ~1e-13 of noise
/// in the mean, which swamps the cost decreases the line search must see near the optimum.
#[derive(Default)]
struct CompensatedSum {
    sum: f64,
    carry: f64,
}

impl CompensatedSum {
    fn add(&mut self, value: f64) {
        let total = self.sum + value;
        self.carry += if self.sum.abs() >= value.abs() {
            (self.sum - total) + value
        } else {
            (value - total) + self.sum
        };
        self.sum = total;
    }

    fn value(&self) -> f64 {
        self.sum + self.carry
    }
}
