//! Exp-subtract(-store)-sum: the second pass of the three-pass algorithm, the
//! sum of each online block, and the sum behind log-softmax and logsumexp.
//!
//! ```text
//! s[j] = 0;  for each vector x:  e = exp((x - max) · inv_t);  store e (if writing);  s[j] += e
//! every FLUSH_STEPS steps: total (f64) += lanes of (s[0] + s[1] + s[2] + s[3]);  s = 0
//! ```
//! Each f32 lane adds at most FLUSH_STEPS terms before the f64 total takes them,
//! which keeps the sum within a few ULP at 2^20 elements and beyond.

use crate::exp::{exp_nonpositive, CUTOFF};
use crate::loops::{lanes, Kernel};
use pulp::Simd;

pub(crate) struct ExpSum {
    max: f32,
    inv_t: f32,
    pub(crate) total: f64,
}

impl ExpSum {
    pub(crate) fn new(max: f32, inv_t: f32) -> Self {
        Self {
            max,
            inv_t,
            total: 0.0,
        }
    }
}

/// z = (x - max) · inv_t, with the subtraction rounded first so its error is
/// relative to z. Formed as fma(x, 1/2, -max/2) · (2 · inv_t): halving is
/// exact, so this equals round(x - max) · inv_t bit for bit, except that x - max
/// cannot overflow (x = -3e38, max = 3e38 at t > 1 has a finite z).
#[inline(always)]
pub(crate) fn shifted<S: Simd>(simd: S, x: S::f32s, max: f32, inv_t: f32) -> S::f32s {
    let half_diff = simd.mul_add_f32s(x, simd.splat_f32s(0.5), simd.splat_f32s(-0.5 * max));
    simd.mul_f32s(half_diff, simd.splat_f32s(2.0 * inv_t))
}

/// Adds the lanes of `v` in f64.
#[inline(always)]
pub(crate) fn sum_lanes_f64<S: Simd>(v: &S::f32s) -> f64 {
    lanes::<S>(v).iter().map(|&l| l as f64).sum()
}

impl<S: Simd> Kernel<S> for ExpSum {
    type Acc = S::f32s;
    const FLUSH_STEPS: usize = 8;

    #[inline(always)]
    fn fill(&self) -> f32 {
        f32::NEG_INFINITY
    }
    #[inline(always)]
    fn init(&self, simd: S) -> S::f32s {
        simd.splat_f32s(0.0)
    }
    #[inline(always)]
    fn step(&self, simd: S, acc: S::f32s, x: S::f32s) -> (S::f32s, S::f32s) {
        let z = shifted(simd, x, self.max, self.inv_t);
        let e = exp_nonpositive(simd, z, simd.splat_f32s(CUTOFF));
        (simd.add_f32s(acc, e), e)
    }
    #[inline(always)]
    fn merge(&self, simd: S, a: S::f32s, b: S::f32s) -> S::f32s {
        simd.add_f32s(a, b)
    }
    #[inline(always)]
    fn flush(&mut self, _: S, acc: S::f32s) {
        self.total += sum_lanes_f64::<S>(&acc);
    }
}
