//! The special functions the likelihoods and predictions need: ln Γ, digamma, a ₂F₁ tail, expm1 ratio.
//!
//! ln Γ and ψ are our own, not statrs's: statrs 0.19's digamma is further off (ψ(1) misses −γ by more
//! than 1e-15) and its ln Γ differs in the last bits, which moves the Gamma-Gamma optimum by ~5e-8
//! relative and so changes the hash of every CLV model: a stored model would no longer re-derive in
//! an audit (tests/fixture_store.rs catches exactly that).

use std::f64::consts::PI;

/// ln Γ(x) for x > 0: shift up with Γ(x) = Γ(x+k)/(x(x+1)…(x+k−1)) until x ≥ 10, then Stirling's series
/// through the x^−15 term (truncation error < 1e-16 there, so ~1e-15 relative overall).
pub(super) fn ln_gamma(x: f64) -> f64 {
    /// B₂ₖ / (2k(2k−1)) for k = 1..8.
    const STIRLING: [f64; 8] = [
        1.0 / 12.0,
        -1.0 / 360.0,
        1.0 / 1260.0,
        -1.0 / 1680.0,
        1.0 / 1188.0,
        -691.0 / 360_360.0,
        1.0 / 156.0,
        -3617.0 / 122_400.0,
    ];
    let (mut x, mut shift) = (x, 1.0);
    while x < 10.0 {
        shift *= x;
        x += 1.0;
    }
    let inv2 = 1.0 / (x * x);
    let series = STIRLING.iter().rev().fold(0.0, |acc, c| acc * inv2 + c) / x;
    (x - 0.5) * x.ln() - x + 0.5 * (2.0 * PI).ln() + series - shift.ln()
}

/// ψ(x) = d ln Γ(x)/dx for x > 0: recurrence ψ(x) = ψ(x+1) − 1/x up to x ≥ 10, then the asymptotic series
/// through the x^−14 term.
pub(super) fn digamma(x: f64) -> f64 {
    /// B₂ₖ / (2k) for k = 1..7.
    const ASYMPTOTIC: [f64; 7] = [
        1.0 / 12.0,
        -1.0 / 120.0,
        1.0 / 252.0,
        -1.0 / 240.0,
        1.0 / 132.0,
        -691.0 / 32_760.0,
        1.0 / 12.0,
    ];
    let (mut x, mut acc) = (x, 0.0);
    while x < 10.0 {
        acc -= 1.0 / x;
        x += 1.0;
    }
    let inv2 = 1.0 / (x * x);
    let series = ASYMPTOTIC.iter().rev().fold(0.0, |acc, c| acc * inv2 + c) * inv2;
    acc + x.ln() - 0.5 / x - series
}

/// `(e^(k·l) − 1) / k`, continuous at k = 0 (where it is `l`).
pub(super) fn expm1_ratio(k: f64, l: f64) -> f64 {
    if k == 0.0 {
        l
    } else {
        (k * l).exp_m1() / k
    }
}

/// Relative accuracy targeted by [`hyp2f1_tail`].
const SERIES_EPS: f64 = 1e-15;
/// Term cap of [`hyp2f1_tail`]: enough for z ≤ 0.99996 (t ≤ ~25,000 (α + T)) when q is small.
const SERIES_MAX_TERMS: u32 = 1_000_000;

/// `Σ_{n≥1} t_n` with `t_1 = first` and `t_{n+1}/t_n = z (p+n)(q+n) / ((c+n)(n+1))`: a ₂F₁(p, q; c; z)
/// series without its leading 1 (possibly rescaled), for 0 ≤ z < 1, p ≤ c, c > −1 and q > −1.
///
/// Tail bound: for k ≥ n, `|p+k|/(c+k) ≤ max(1, |p+n|/(c+n))` (it falls while p + k < 0 because p ≤ c,
/// and is ≤ 1 after) and `(q+k)/(k+1) ≤ max(1, (q+n)/(n+1))`, so every later ratio is at most
/// `ρ = z · max(1, |p+n|/(c+n)) · max(1, (q+n)/(n+1))` in size and the remaining tail at most
/// `|t_n| · ρ/(1−ρ)`. We stop when that bound is below 1e-15 of the sum, which takes about
/// `q·z/(1−z) + ln(1e-15 (1−z))/ln z` terms; NaN if [`SERIES_MAX_TERMS`] is not enough.
pub(super) fn hyp2f1_tail(first: f64, p: f64, q: f64, c: f64, z: f64) -> f64 {
    let (mut term, mut sum) = (first, first);
    for n in 1..SERIES_MAX_TERMS {
        let n = f64::from(n);
        let rho = z * ((p + n).abs() / (c + n)).max(1.0) * ((q + n) / (n + 1.0)).max(1.0);
        if rho < 1.0 && term.abs() * rho / (1.0 - rho) <= SERIES_EPS * sum.abs() {
            return sum;
        }
        term *= z * (p + n) * (q + n) / ((c + n) * (n + 1.0));
        sum += term;
    }
    f64::NAN
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ln_gamma_matches_known_values_and_identities() {
        // Absolute accuracy ~1e-15 (relative accuracy is lower next to the zeros at 1 and 2).
        assert!(ln_gamma(1.0).abs() < 5e-15, "{}", ln_gamma(1.0));
        assert!(ln_gamma(2.0).abs() < 5e-15, "{}", ln_gamma(2.0));
        assert!((ln_gamma(0.5) - 0.5 * PI.ln()).abs() < 1e-14);
        assert!((ln_gamma(10.0) - 362_880f64.ln()).abs() < 1e-13);
        let ln_fact_170: f64 = (1..=170).map(|k| f64::from(k).ln()).sum();
        assert!((ln_gamma(171.0) - ln_fact_170).abs() < 1e-12 * ln_fact_170);
        // Γ(ε) ≈ 1/ε − γ_E for small ε.
        assert!((ln_gamma(1e-8) - (1e8f64 - 0.577_215_664_901_532_9).ln()).abs() < 1e-12);
        // Legendre duplication: lnΓ(2x) = (2x−1) ln 2 − ½ ln π + lnΓ(x) + lnΓ(x+½), across the shift boundary.
        for x in [0.013, 0.37, 1.9, 4.6, 7.25, 9.99, 23.5, 311.7] {
            let rhs = (2.0 * x - 1.0) * 2f64.ln() - 0.5 * PI.ln() + ln_gamma(x) + ln_gamma(x + 0.5);
            assert!((ln_gamma(2.0 * x) - rhs).abs() < 2e-14 * (1.0 + rhs.abs()), "x = {x}");
        }
    }

    #[test]
    fn digamma_matches_known_values_and_derivative() {
        let euler = 0.577_215_664_901_532_9;
        assert!((digamma(1.0) + euler).abs() < 1e-15);
        assert!((digamma(0.5) + euler + 2.0 * 2f64.ln()).abs() < 1e-14);
        for x in [0.05, 0.8, 3.3, 9.7, 10.2, 57.0] {
            assert!((digamma(x + 1.0) - digamma(x) - 1.0 / x).abs() < 1e-13, "x = {x}");
            let h = 1e-5 * x;
            let numeric = (ln_gamma(x + h) - ln_gamma(x - h)) / (2.0 * h);
            assert!(
                (digamma(x) - numeric).abs() < 1e-7 * (1.0 + digamma(x).abs()),
                "x = {x}"
            );
        }
    }
}
