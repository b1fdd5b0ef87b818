//! The soft-cap v = c · tanh(k · x) and its slope, from one exp reduction.
//!
//! ```text
//! a = k·x,  w = −|2a| ≤ 0               (the sign of a is put back at the end)
//! e^w = 2^n · (1 + r·q(r))              n, 2^n and r as in exp.rs (|r| ≤ ln2/2); q here
//!                                        is Taylor's (e^r − 1)/r to r⁶, whose leading
//!                                        term is exactly 1 (exp.rs's q, fitted for
//!                                        e^r, is 5.4·10⁻⁷ off at r = 0: 9 steps of tanh)
//! em1 = e^w − 1 = fma(r·2^n, q, 2^n − 1) 2^n − 1 is exact for n ≥ −24, and at n = 0
//!                                        em1 = r·q: relative accuracy near w = 0
//! tanh|a| = −em1 / (2 + em1)            (no cancellation: 2 + em1 ∈ [1, 2])
//! v = c · sign(a) · tanh|a|
//! slope:  1 − tanh² a = 4·e^w / (2 + em1)²   (e^w itself, not 1 + em1: relative accuracy
//!                                              where tanh² a ≈ 1)
//! ```
//! Below w = [`CUTOFF`] (|a| > 43.67) e^w is taken as 0 and em1 as −1, so
//! tanh|a| is exactly 1 there (it is 1 in f32 from |a| ≈ 9.01). A NaN stays
//! NaN; +inf gives c and −inf stays −inf (a −inf logit is a hidden one, and
//! the cap must not give it mass: onnx#7865's leak), both with slope 0.
//!
//! Taylor's remainder after r⁶ is below r⁷/8! ≤ 1.6·10⁻⁸ (0.27 steps).
//! Error (measured by the tests, every 97th f32 of 2^-100 ≤ |a| < 50 against
//! f64): tanh within 2 steps of the f64 value rounded, 1 − tanh² within
//! 5 (e^w's error grows with |w|, as in exp.rs), so the soft-capped logit
//! c·tanh(k·x) carries at most ~3 ulp of c·|tanh| besides the rounding of k.

use crate::exp::{reduce, CUTOFF};
use crate::output::Elementwise;

/// 1/(k+1)! for k = 0..=6: (e^r − 1)/r = Σ r^k/(k+1)!, Horner's coefficients.
const EXPM1_Q: [f32; 7] = [
    1.0,
    0.5,
    1.0 / 6.0,
    1.0 / 24.0,
    1.0 / 120.0,
    1.0 / 720.0,
    1.0 / 5040.0,
];

/// q(r) ≈ (e^r − 1)/r on [−ln2/2, ln2/2].
#[inline(always)]
fn poly<S: Simd>(simd: S, r: S::f32s) -> S::f32s {
    let mut q = simd.splat_f32s(EXPM1_Q[6]);
    for c in EXPM1_Q[..6].iter().rev() {
        q = simd.mul_add_f32s(q, r, simd.splat_f32s(*c));
    }
    q
}
use pulp::Simd;

/// (e^w − 1, e^w) for w ≤ 0 (NaN for NaN): e^w − 1 with relative accuracy
/// near 0, e^w with relative accuracy where it is tiny; (−1, 0) below [`CUTOFF`].
#[inline(always)]
fn expm1_and_exp<S: Simd>(simd: S, w: S::f32s) -> (S::f32s, S::f32s) {
    let (_, pow2n, r) = reduce(simd, w);
    let q = poly(simd, r);
    let scaled_r = simd.mul_f32s(r, pow2n);
    let one = simd.splat_f32s(1.0);
    let em1 = simd.mul_add_f32s(scaled_r, q, simd.sub_f32s(pow2n, one));
    let e = simd.mul_add_f32s(scaled_r, q, pow2n);
    let under = simd.less_than_f32s(w, simd.splat_f32s(CUTOFF));
    (
        simd.select_f32s(under, simd.splat_f32s(-1.0), em1),
        simd.select_f32s(under, simd.splat_f32s(0.0), e),
    )
}

/// −|2·k·x| and the sign bit of k·x (k > 0: the sign of x).
#[inline(always)]
fn folded<S: Simd>(simd: S, x: S::f32s, twice_k: f32) -> (S::f32s, S::u32s) {
    let sign = simd.splat_u32s(0x8000_0000);
    let u = simd.mul_f32s(x, simd.splat_f32s(twice_k));
    let bits = simd.transmute_u32s_f32s(u);
    let w = simd.transmute_f32s_u32s(simd.or_u32s(bits, sign));
    (w, simd.and_u32s(bits, sign))
}

/// A soft-cap v = c·tanh(k·x) with k > 0 and any finite c, as constants.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SoftCap {
    /// 2·k, so that w = −|2·k·x| is one multiply.
    twice_k: f32,
    /// −c: the formula gives −tanh|a|.
    minus_c: f32,
}

impl SoftCap {
    /// v = c · tanh(k · x). `k` positive and finite (2·k finite), `c` finite.
    pub fn new(k: f32, c: f32) -> Self {
        debug_assert!(k > 0.0 && (2.0 * k).is_finite() && c.is_finite());
        Self {
            twice_k: 2.0 * k,
            minus_c: -c,
        }
    }

    /// c · tanh(k · x) per lane; −inf stays −inf.
    #[inline(always)]
    pub(crate) fn apply<S: Simd>(&self, simd: S, x: S::f32s) -> S::f32s {
        let (w, sign) = folded(simd, x, self.twice_k);
        let (em1, _) = expm1_and_exp(simd, w);
        // −tanh|a|, then the sign of a flipped in: −sign(a)·tanh|a|, times −c.
        let minus_t = simd.div_f32s(em1, simd.add_f32s(simd.splat_f32s(2.0), em1));
        let bits = simd.xor_u32s(simd.transmute_u32s_f32s(minus_t), sign);
        let v = simd.mul_f32s(
            simd.transmute_f32s_u32s(bits),
            simd.splat_f32s(self.minus_c),
        );
        let hidden = simd.equal_f32s(x, simd.splat_f32s(f32::NEG_INFINITY));
        simd.select_f32s(hidden, x, v)
    }

    /// 1 − tanh²(k · x) = 1/cosh²(k · x), in f64 (0 at ±inf, NaN at NaN).
    #[inline(always)]
    pub(crate) fn slope_f64(&self, x: f64) -> f64 {
        let cosh = (x * (self.twice_k as f64 * 0.5)).cosh();
        1.0 / (cosh * cosh)
    }

    /// 1 − tanh²(k · x) per lane: d/dx of the cap is c·k times this.
    #[inline(always)]
    pub(crate) fn slope<S: Simd>(&self, simd: S, x: S::f32s) -> S::f32s {
        let (w, _) = folded(simd, x, self.twice_k);
        let (em1, e) = expm1_and_exp(simd, w);
        let d = simd.add_f32s(simd.splat_f32s(2.0), em1);
        let four_e = simd.mul_f32s(e, simd.splat_f32s(4.0));
        simd.div_f32s(four_e, simd.mul_f32s(d, d))
    }
}

/// v = c · tanh(k · x) as an output pass.
impl<S: Simd> Elementwise<S> for SoftCap {
    #[inline(always)]
    fn apply(&self, simd: S, x: S::f32s) -> S::f32s {
        SoftCap::apply(self, simd, x)
    }
}

/// (1 − tanh²(k·x)) · factor: dv/dx of the cap where factor = c·k.
pub(crate) struct Slope {
    pub(crate) cap: SoftCap,
    pub(crate) factor: f32,
}

impl<S: Simd> Elementwise<S> for Slope {
    #[inline(always)]
    fn apply(&self, simd: S, x: S::f32s) -> S::f32s {
        simd.mul_f32s(self.cap.slope(simd, x), simd.splat_f32s(self.factor))
    }
}

/// g · (1 − tanh²(k·x)) · factor, with (main, side) = (g, x): a gradient
/// through the cap, dv/dx = c·k·(1 − tanh²), times what else scales it.
pub(crate) struct CapSlope {
    pub(crate) cap: SoftCap,
    pub(crate) factor: f32,
}

impl<S: Simd> Elementwise<S, (S::f32s, S::f32s)> for CapSlope {
    #[inline(always)]
    fn apply(&self, simd: S, (g, x): (S::f32s, S::f32s)) -> S::f32s {
        let slope = self.cap.slope(simd, x);
        simd.mul_f32s(g, simd.mul_f32s(slope, simd.splat_f32s(self.factor)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pulp::{Scalar, Scalar512b};

    fn steps(a: f32, b: f32) -> u32 {
        match a == b {
            true => 0,
            false => a.to_bits().abs_diff(b.to_bits()),
        }
    }

    /// tanh within 2 steps and 1 − tanh² within 6 of the f64 value rounded once, on
    /// both signs, every 97th f32 below 50; the 16-lane token agrees with the
    /// scalar one bit for bit.
    #[test]
    fn tanh_and_its_slope_within_a_few_steps() {
        let cap = SoftCap::new(1.0, 1.0);
        let xs: Vec<f32> = (2.0f32.powi(-100).to_bits()..50.0f32.to_bits())
            .step_by(97)
            .map(f32::from_bits)
            .flat_map(|x| [x, -x])
            .collect();
        let (mut worst_t, mut worst_s) = (0, 0);
        for chunk in xs.chunks_exact(16) {
            let v: pulp::f32x16 = pulp::cast(<[f32; 16]>::try_from(chunk).unwrap());
            let t: [f32; 16] = pulp::cast(cap.apply(Scalar512b, v));
            let s: [f32; 16] = pulp::cast(cap.slope(Scalar512b, v));
            for ((&x, &t), &s) in chunk.iter().zip(&t).zip(&s) {
                assert_eq!(t.to_bits(), cap.apply(Scalar, x).to_bits(), "x = {x}");
                let exact = (x as f64).tanh();
                worst_t = worst_t.max(steps(t, exact as f32));
                let sech2 = 1.0 / (x as f64).cosh().powi(2);
                if sech2 as f32 >= f32::MIN_POSITIVE * 4.0 {
                    worst_s = worst_s.max(steps(s, sech2 as f32));
                }
            }
        }
        assert!(
            worst_t <= 2 && worst_s <= 6,
            "tanh {worst_t} steps, 1 - tanh² {worst_s} steps"
        );
    }

    #[test]
    fn special_values() {
        let cap = SoftCap::new(0.5, 30.0);
        assert_eq!(cap.apply(Scalar, f32::INFINITY), 30.0);
        assert_eq!(cap.apply(Scalar, f32::NEG_INFINITY), f32::NEG_INFINITY);
        assert_eq!(cap.apply(Scalar, -f32::MAX), -30.0);
        assert_eq!(cap.apply(Scalar, 0.0), 0.0);
        assert_eq!(cap.apply(Scalar, -0.0), 0.0);
        assert!(cap.apply(Scalar, f32::NAN).is_nan());
        assert_eq!(cap.slope(Scalar, f32::INFINITY), 0.0);
        assert_eq!(cap.slope(Scalar, f32::NEG_INFINITY), 0.0);
        assert_eq!(cap.slope(Scalar, 0.0), 1.0);
        assert!(cap.slope(Scalar, f32::NAN).is_nan());
    }
}
