//! Forward-mode dual numbers: a value with its gradient in `N` parameters.
//!
//! The Pareto/NBD likelihood runs through a ₂F₁ series whose parameters and argument all depend on
//! (r, α, s, β); carrying the gradient through the series term by term is exact and saves deriving
//! (and keeping in step) a hand-written gradient of every branch. `Dual<0>` is a plain value, so the
//! predictions share the same code.

use std::ops::{Add, Div, Mul, Neg, Sub};

use super::special::{digamma, ln_gamma};

#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct Dual<const N: usize> {
    pub(super) v: f64,
    pub(super) d: [f64; N],
}

impl<const N: usize> Dual<N> {
    pub(super) fn constant(v: f64) -> Self {
        Self { v, d: [0.0; N] }
    }

    /// Parameter `i` at value `v`: ∂/∂param_i = 1.
    pub(super) fn variable(v: f64, i: usize) -> Self {
        let mut d = [0.0; N];
        d[i] = 1.0;
        Self { v, d }
    }

    /// `f(self)` given `f(v)` and `f'(v)`: the chain rule.
    fn chain(self, value: f64, slope: f64) -> Self {
        Self {
            v: value,
            d: self.d.map(|d| slope * d),
        }
    }

    pub(super) fn ln(self) -> Self {
        self.chain(self.v.ln(), 1.0 / self.v)
    }

    /// ln(1 + x).
    pub(super) fn ln_1p(self) -> Self {
        self.chain(self.v.ln_1p(), 1.0 / (1.0 + self.v))
    }

    /// ln(1 − eˣ) for x < 0, accurate as x → 0⁻ (where 1 − eˣ cancels).
    pub(super) fn ln_neg_expm1(self) -> Self {
        let m = self.v.exp_m1();
        // d/dx ln(1 − eˣ) = −eˣ/(1 − eˣ) = (m + 1)/m with m = eˣ − 1.
        self.chain((-m).ln(), (m + 1.0) / m)
    }

    pub(super) fn ln_gamma(self) -> Self {
        self.chain(ln_gamma(self.v), digamma(self.v))
    }

    /// ln(eˢᵉˡᶠ + eᵒᵗʰᵉʳ) without overflow.
    pub(super) fn ln_add_exp(self, other: Self) -> Self {
        let (hi, lo) = if self.v >= other.v {
            (self, other)
        } else {
            (other, self)
        };
        let e = (lo.v - hi.v).exp();
        let (w_hi, w_lo) = (1.0 / (1.0 + e), e / (1.0 + e));
        Self {
            v: hi.v + e.ln_1p(),
            d: std::array::from_fn(|i| w_hi * hi.d[i] + w_lo * lo.d[i]),
        }
    }
}

impl<const N: usize> Add for Dual<N> {
    type Output = Self;
    fn add(self, o: Self) -> Self {
        Self {
            v: self.v + o.v,
            d: std::array::from_fn(|i| self.d[i] + o.d[i]),
        }
    }
}

impl<const N: usize> Sub for Dual<N> {
    type Output = Self;
    fn sub(self, o: Self) -> Self {
        Self {
            v: self.v - o.v,
            d: std::array::from_fn(|i| self.d[i] - o.d[i]),
        }
    }
}

impl<const N: usize> Mul for Dual<N> {
    type Output = Self;
    // The product rule adds.
    #[allow(clippy::suspicious_arithmetic_impl)]
    fn mul(self, o: Self) -> Self {
        Self {
            v: self.v * o.v,
            d: std::array::from_fn(|i| self.d[i] * o.v + self.v * o.d[i]),
        }
    }
}

impl<const N: usize> Div for Dual<N> {
    type Output = Self;
    fn div(self, o: Self) -> Self {
        let inv = 1.0 / o.v;
        let q = self.v * inv;
        Self {
            v: q,
            d: std::array::from_fn(|i| (self.d[i] - q * o.d[i]) * inv),
        }
    }
}

impl<const N: usize> Neg for Dual<N> {
    type Output = Self;
    fn neg(self) -> Self {
        Self {
            v: -self.v,
            d: self.d.map(|d| -d),
        }
    }
}

impl<const N: usize> Add<f64> for Dual<N> {
    type Output = Self;
    fn add(self, o: f64) -> Self {
        Self { v: self.v + o, ..self }
    }
}

impl<const N: usize> Sub<f64> for Dual<N> {
    type Output = Self;
    fn sub(self, o: f64) -> Self {
        Self { v: self.v - o, ..self }
    }
}

impl<const N: usize> Mul<f64> for Dual<N> {
    type Output = Self;
    fn mul(self, o: f64) -> Self {
        Self {
            v: self.v * o,
            d: self.d.map(|d| d * o),
        }
    }
}
