//! The two-pass algorithm's kernels (Dukhan & Ablavatski 2020): e^(x/t) is kept
//! as a pair (p, n) with e^(x/t) = p · 2^n, so the sum needs no maximum first.
//!
//! ```text
//! pass 1, per lane:  (n, p) = split(x · inv_t)
//!                    e' = max(e, n);  s = s · 2^(e - e') + p · 2^(n - e');  e = e'
//!                    also m = max(m, x), to check the range and anchor log-softmax
//! pass 2, per lane:  (n, p) = split(x · inv_t)  (recomputed, bit-identical to pass 1)
//!                    y = p · 2^(n - E) / S
//! ```
//! Rescaling by powers of two is exact, so the sum is as accurate as the terms.
//! The exponent bookkeeping needs |x/t| < 2^21 (so n fits the magic-number
//! rounding); `x/t` is formed exactly inside an FMA so its rounding does not
//! leak into the result. Rows outside that range are recomputed by the caller
//! with the online algorithm. Terms below 2^-125 of their lane's leading term are
//! dropped, so no subnormal is formed.

use crate::exp::{exp_reduced, pow2_from_magic, LN2_HI, LN2_LO, LOG2E, MAGIC};
use crate::loops::{lanes, Kernel};
use crate::output::Elementwise;
use pulp::Simd;

/// |x/t| bound of the exponent bookkeeping: values below -LIMIT count as 0,
/// rows whose max exceeds LIMIT (or lies below -LIMIT/2) take the online path.
pub(crate) const LIMIT: f32 = 2_097_152.0; // 2^21

/// The lowest exponent a lane starts from (below any n from a clamped input).
const E_INIT: f32 = -4_194_304.0; // -2^22

/// (n, p) with e^(x · inv_t) = p · 2^n, and p = 0 for x · inv_t < -LIMIT.
#[inline(always)]
pub(crate) fn split<S: Simd>(simd: S, x: S::f32s, inv_t: f32) -> (S::f32s, S::f32s) {
    let inv_t = simd.splat_f32s(inv_t);
    let xs = simd.mul_f32s(x, inv_t);
    // The rounding error of x · inv_t, exactly (zero when inv_t is 1).
    let err = simd.mul_add_f32s(x, inv_t, simd.neg_f32s(xs));
    let low = simd.less_than_f32s(xs, simd.splat_f32s(-LIMIT));
    let zero = simd.splat_f32s(0.0);
    let xs = simd.select_f32s(low, simd.splat_f32s(-LIMIT), xs);
    let err = simd.select_f32s(low, zero, err);
    let magic = simd.splat_f32s(MAGIC);
    let n = simd.sub_f32s(simd.mul_add_f32s(xs, simd.splat_f32s(LOG2E), magic), magic);
    let r = simd.mul_add_f32s(n, simd.splat_f32s(-LN2_HI), xs);
    let r = simd.mul_add_f32s(n, simd.splat_f32s(-LN2_LO), r);
    let r = simd.add_f32s(r, err);
    let p = exp_reduced(simd, r);
    (n, simd.select_f32s(low, zero, p))
}

/// 2^k for an integer-valued k ≤ 127; 0 when k < -125 (so p · 2^k, p ≥ 0.7, stays normal).
#[inline(always)]
fn pow2_or_zero<S: Simd>(simd: S, k: S::f32s) -> S::f32s {
    let gone = simd.less_than_f32s(k, simd.splat_f32s(-125.5));
    // k = -127 builds the bit pattern 0, i.e. +0.0.
    let k = simd.select_f32s(gone, simd.splat_f32s(-127.0), k);
    pow2_from_magic(simd, simd.add_f32s(k, simd.splat_f32s(MAGIC)))
}

/// Pass 1: the sum as S · 2^E in f64, and the row's max.
pub(crate) struct TwoPassSum {
    inv_t: f32,
    pub(crate) sum: f64,
    pub(crate) exponent: f64,
    pub(crate) max: f32,
}

impl TwoPassSum {
    pub(crate) fn new(inv_t: f32) -> Self {
        Self {
            inv_t,
            sum: 0.0,
            exponent: f64::NEG_INFINITY,
            max: f32::NEG_INFINITY,
        }
    }

    /// Adds s · 2^e to the total (an exact rescale; NaN stays NaN).
    fn absorb(&mut self, s: f64, e: f64) {
        if s == 0.0 {
            return;
        }
        let top = self.exponent.max(e);
        self.sum = self.sum * pow2_f64(self.exponent - top) + s * pow2_f64(e - top);
        self.exponent = top;
    }
}

/// 2^k for an integer-valued k ≤ 0 in f64; 0 below the normal range.
fn pow2_f64(k: f64) -> f64 {
    if k < -1022.0 {
        0.0
    } else {
        f64::from_bits(((k as i64 + 1023) as u64) << 52)
    }
}

impl<S: Simd> Kernel<S> for TwoPassSum {
    /// (s, e, max)
    type Acc = (S::f32s, S::f32s, S::f32s);
    const FLUSH_STEPS: usize = 8;

    #[inline(always)]
    fn fill(&self) -> f32 {
        f32::NEG_INFINITY
    }
    #[inline(always)]
    fn init(&self, simd: S) -> Self::Acc {
        (
            simd.splat_f32s(0.0),
            simd.splat_f32s(E_INIT),
            simd.splat_f32s(f32::NEG_INFINITY),
        )
    }
    #[inline(always)]
    fn step(&self, simd: S, (s, e, m): Self::Acc, x: S::f32s) -> (Self::Acc, S::f32s) {
        let m = simd.max_f32s(m, x);
        let (n, p) = split(simd, x, self.inv_t);
        let top = simd.max_f32s(e, n);
        let term = simd.mul_f32s(p, pow2_or_zero(simd, simd.sub_f32s(n, top)));
        let s = simd.mul_add_f32s(s, pow2_or_zero(simd, simd.sub_f32s(e, top)), term);
        ((s, top, m), x)
    }
    #[inline(always)]
    fn merge(&self, simd: S, (sa, ea, ma): Self::Acc, (sb, eb, mb): Self::Acc) -> Self::Acc {
        let top = simd.max_f32s(ea, eb);
        let b = simd.mul_f32s(sb, pow2_or_zero(simd, simd.sub_f32s(eb, top)));
        let s = simd.mul_add_f32s(sa, pow2_or_zero(simd, simd.sub_f32s(ea, top)), b);
        (s, top, simd.max_f32s(ma, mb))
    }
    #[inline(always)]
    fn flush(&mut self, simd: S, (s, e, m): Self::Acc) {
        for (&s, &e) in lanes::<S>(&s).iter().zip(lanes::<S>(&e)) {
            self.absorb(s as f64, e as f64);
        }
        self.max = self.max.max(simd.reduce_max_f32s(m));
    }
}

/// Pass 2 of softmax: y = p · 2^(n - E) / S, written as (p · 2^(n - E + 64)) · (2^-64 / S)
/// so the product that is compared against the subnormal floor is always normal.
pub(crate) struct TwoPassOut {
    pub(crate) inv_t: f32,
    pub(crate) exponent: f32,
    /// Smallest normal f32 times S · 2^64 (slightly raised): below it y would be subnormal.
    pub(crate) floor: f32,
    /// 2^-64 / S.
    pub(crate) r: f32,
}

impl TwoPassOut {
    pub(crate) fn new(inv_t: f32, sum: f64, exponent: f64) -> Self {
        Self {
            inv_t,
            exponent: exponent as f32,
            floor: (f32::MIN_POSITIVE as f64 * sum * 2f64.powi(64) * (1.0 + 2f64.powi(-20))) as f32,
            r: (2f64.powi(-64) / sum) as f32,
        }
    }
}

impl<S: Simd> Elementwise<S> for TwoPassOut {
    #[inline(always)]
    fn apply(&self, simd: S, x: S::f32s) -> S::f32s {
        let (n, p) = split(simd, x, self.inv_t);
        let k = simd.add_f32s(
            simd.sub_f32s(n, simd.splat_f32s(self.exponent)),
            simd.splat_f32s(64.0),
        );
        let q = simd.mul_f32s(p, pow2_or_zero(simd, k));
        let tiny = simd.less_than_f32s(q, simd.splat_f32s(self.floor));
        let y = simd.mul_f32s(q, simd.splat_f32s(self.r));
        simd.select_f32s(tiny, simd.splat_f32s(0.0), y)
    }
}
