//! The log-likelihoods and their gradients, over rows sorted once by x.

use super::dual::Dual;
use super::optimiser::LogLikelihood;
use super::special::{digamma, ln_gamma};

/// Which beta-geometric drop-out process a [`BgNbdLikelihood`] describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum DropOut {
    /// BG/NBD: a customer may drop out only right after a repeat purchase.
    AfterRepeats,
    /// MBG/NBD (Batislam, Denizel & Filiztekin 2007): also right after the first purchase, so a
    /// customer with x = 0 may be dead too. Its formulas are BG/NBD's with b + 1 for b wherever b
    /// meets x, which is how both share this code.
    AlsoAfterFirst,
}

impl DropOut {
    /// What is added to x where b + x appears.
    pub(super) fn shift(self) -> f64 {
        match self {
            DropOut::AfterRepeats => 0.0,
            DropOut::AlsoAfterFirst => 1.0,
        }
    }
}

/// BG/NBD or MBG/NBD data, sorted by x so x-only terms are computed once per distinct x.
pub(super) struct BgNbdLikelihood {
    /// `[x, t_x, T]` per customer.
    pub(super) rows: Vec<[f64; 3]>,
    pub(super) drop_out: DropOut,
}

impl LogLikelihood<4> for BgNbdLikelihood {
    const NAMES: [&'static str; 4] = ["r", "alpha", "a", "b"];

    fn n(&self) -> f64 {
        self.rows.len() as f64
    }

    /// Paper eq. 6 in log space: `ln L = A1 + A2 + ln(e^A3 + δ(x>0) e^A4)` with
    /// A1 = lnΓ(r+x) − lnΓ(r) + r ln α, A2 = ln B(a, b+x) − ln B(a, b), A3 = −(r+x) ln(α+T),
    /// A4 = ln a − ln(b+x−1) − (r+x) ln(α+t_x). MBG/NBD (Batislam et al. 2007): x + 1 for x in A2 and
    /// A4, and the A4 term for every x.
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
        let may_be_dead = |x: f64| x > 0.0 || self.drop_out == DropOut::AlsoAfterFirst;
        for &[x, t_x, t] in &self.rows {
            if x != current_x {
                current_x = x;
                // Exactly x for BG/NBD (x + 0.0), so its estimates keep their bits.
                let xb = x + self.drop_out.shift();
                let psi_abx = digamma(a + b + xb);
                a12 = ln_gamma(r + x) - ln_g_r + r * ln_alpha + ln_g_ab + ln_gamma(b + xb)
                    - ln_g_b
                    - ln_gamma(a + b + xb);
                d_a12 = [
                    digamma(r + x) - psi_r + ln_alpha,
                    r / alpha,
                    psi_ab - psi_abx,
                    psi_ab + digamma(b + xb) - psi_b - psi_abx,
                ];
                if may_be_dead(x) {
                    inv_bx1 = 1.0 / (b + xb - 1.0);
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
            if may_be_dead(x) {
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

/// Pareto/NBD data (Schmittlein, Morrison & Colombo 1987): distinct `[x, t_x, T]` rows, sorted, with
/// how many customers share each. Its terms cost two ₂F₁ series a row, and customers without repeat
/// purchases differ only in T (on CDNOW 2,357 customers make ~1,000 distinct rows).
pub(super) struct ParetoNbdLikelihood {
    rows: Vec<([f64; 3], f64)>,
    customers: f64,
}

impl ParetoNbdLikelihood {
    pub(super) fn new(mut rows: Vec<[f64; 3]>) -> Self {
        let customers = rows.len() as f64;
        rows.sort_by(|l, r| {
            (l[0].total_cmp(&r[0]))
                .then(l[1].total_cmp(&r[1]))
                .then(l[2].total_cmp(&r[2]))
        });
        let mut grouped: Vec<([f64; 3], f64)> = Vec::new();
        for row in rows {
            match grouped.last_mut() {
                Some((last, count)) if *last == row => *count += 1.0,
                _ => grouped.push((row, 1.0)),
            }
        }
        Self {
            rows: grouped,
            customers,
        }
    }
}

impl LogLikelihood<4> for ParetoNbdLikelihood {
    const NAMES: [&'static str; 4] = ["r", "alpha", "s", "beta"];

    fn n(&self) -> f64 {
        self.customers
    }

    /// Fader & Hardie, "A note on deriving the Pareto/NBD model and related expressions" (2005):
    /// `ln L = A1 + ln(e^B + s/(r+s+x) · A0)` with A1 = lnΓ(r+x) − lnΓ(r) + r ln α + s ln β and
    /// B = −(r+x) ln(α+T) − s ln(β+T); see [`pareto_nbd_terms`]. The gradient is carried through
    /// every term (₂F₁ series included) by dual numbers.
    fn ll_grad(&self, &[r, alpha, s, beta]: &[f64; 4]) -> (f64, [f64; 4]) {
        let params = [r, alpha, s, beta];
        let [r, alpha, s, beta] = std::array::from_fn(|i| Dual::<4>::variable(params[i], i));
        let a1_common = -r.ln_gamma() + r * alpha.ln() + s * beta.ln();
        let mut ll = CompensatedSum::default();
        let mut grad = [0.0; 4];
        let mut current_x = f64::NAN;
        let mut a1 = a1_common;
        for &([x, t_x, t], count) in &self.rows {
            if x != current_x {
                current_x = x;
                a1 = (r + x).ln_gamma() + a1_common;
            }
            let (alive, dead) = pareto_nbd_terms([r, alpha, s, beta], x, t_x, t);
            let term = a1 + dead.map_or(alive, |dead| alive.ln_add_exp(dead));
            ll.add(count * term.v);
            for (g, d) in grad.iter_mut().zip(term.d) {
                *g += count * d;
            }
        }
        (ll.value(), grad)
    }
}

/// The two parts of a Pareto/NBD customer's likelihood, without the common factor e^A1:
/// `B = ln[(α+T)^−(r+x) (β+T)^−s]` (alive at T) and `ln[s/(r+s+x) · A0]` (died in (t_x, T]), the
/// latter `None` when it is zero (t_x = T).
///
/// `s/(r+s+x) · A0 = s ∫_{t_x}^{T} (α+τ)^−(r+x) (β+τ)^−(s+1) dτ`, which Fader & Hardie write with
/// ₂F₁(r+s+x, ·; r+s+x+1; z) at τ = t_x and τ = T. Of their two forms we take the one whose argument
/// `z = |α−β| / (max(α, β) + τ)` lies in [0, 1): second parameter s+1 when α ≥ β, r+x when α < β. Both
/// halves are kept in log space and their difference taken as `g1 + ln(1 − e^(g2−g1))`.
pub(super) fn pareto_nbd_terms<const N: usize>(
    [r, alpha, s, beta]: [Dual<N>; 4],
    x: f64,
    t_x: f64,
    t: f64,
) -> (Dual<N>, Option<Dual<N>>) {
    let rx = r + x;
    let alive = -(rx * (alpha + t).ln()) - s * (beta + t).ln();
    if t_x >= t {
        return (alive, None);
    }
    let (big, small, second) = if alpha.v >= beta.v {
        (alpha, beta, s + 1.0)
    } else {
        (beta, alpha, rx)
    };
    let m = rx + s;
    let half = |tau: f64| {
        let q = big + tau;
        ln_hyp2f1_a_a1(m, second, (big - small) / q) - m * q.ln()
    };
    let (g1, g2) = (half(t_x), half(t));
    // g1 > g2 in exact arithmetic (the integral is positive); equal only if t_x is within rounding of T.
    if g2.v >= g1.v {
        return (alive, None);
    }
    (alive, Some(s.ln() - m.ln() + g1 + (g2 - g1).ln_neg_expm1()))
}

/// Terms cap of [`ln_hyp2f1_a_a1`]: z ≤ 0.997 converges within it. Beyond, the value is NaN and the
/// optimiser treats the trial point as infeasible; fitted CDNOW-like data have z < 0.1.
const HYP2F1_MAX_TERMS: u32 = 20_000;

/// ln ₂F₁(a, b; a+1; z) for 0 ≤ z < 1, a > 0, 0 < b < a + 1.
///
/// Euler's transformation gives `(1−z)^(1−b) · Σ_n (a−b+1)_n / (a+1)_n · zⁿ`, whose terms are positive
/// and shrink by a factor (a−b+n)/(a+n) · z < z each, so there is no intermediate peak (the direct
/// series has one when b is large, i.e. for frequent buyers) and no cancellation, and the tail after
/// a term t is below t · z/(1−z). NaN if [`HYP2F1_MAX_TERMS`] is not enough.
pub(super) fn ln_hyp2f1_a_a1<const N: usize>(a: Dual<N>, b: Dual<N>, z: Dual<N>) -> Dual<N> {
    const EPS: f64 = 1e-16;
    let tail = z.v / (1.0 - z.v);
    let (mut term, mut sum) = (Dual::constant(1.0), Dual::constant(1.0));
    let a_b = a - b;
    for n in 1..HYP2F1_MAX_TERMS {
        let n = f64::from(n);
        term = term * z * (a_b + n) / (a + n);
        sum = sum + term;
        if term.v * tail <= EPS * sum.v {
            return (-b + 1.0) * (-z).ln_1p() + sum.ln();
        }
    }
    Dual::constant(f64::NAN)
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
