//! Exp-subtract(-store)-sum: the second pass of the three-pass algorithm, the
//! sum of each online block, and the sum behind log-softmax and logsumexp.
//!
//! ```text
//! s[j] = 0;  for each vector x:  e = exp(z(x));  store e (if writing);  s[j] += e
//! every FLUSH_STEPS steps: total (f64) += lanes of (s[0] + s[1] + …);  s = 0
//! ```
//! z(x) = (x - max)/t comes from a [`Shift`]. With `FLUSH = false` the caller
//! has checked that no z of the row lies below the exp cutoff, and the
//! per-element underflow test is skipped (the masked tail still takes it).
//! Each f32 lane adds at most FLUSH_STEPS terms before the f64 total takes them,
//! which keeps the sum within a few ULP at 2^20 elements and beyond.
//!
//! `ExpSumBelowMax` is the same sum without the maxima (z = 0), which it counts
//! instead: for rows whose max dominates, where S - 1 must keep its own bits.

use crate::exp::{exp_flushed_below, CUTOFF};
use crate::loops::{lanes, Kernel};
use crate::shift::Shift;
use pulp::Simd;

pub(crate) struct ExpSum<Z, const FLUSH: bool> {
    shift: Z,
    pub(crate) total: f64,
}

impl<Z: Shift, const FLUSH: bool> ExpSum<Z, FLUSH> {
    pub(crate) fn new(shift: Z) -> Self {
        Self { shift, total: 0.0 }
    }
}

/// Adds the lanes of `v` in f64, as a balanced tree (lane j with lane j + n/2,
/// and so on down): log2(n) dependent adds where a sum in lane order takes n - 1.
#[inline(always)]
pub(crate) fn sum_lanes_f64<S: Simd>(v: &S::f32s) -> f64 {
    let lanes = lanes::<S>(v);
    let mut wide = [0.0f64; 16];
    for (w, &l) in wide.iter_mut().zip(lanes) {
        *w = l as f64;
    }
    let mut width = lanes.len();
    while width > 1 {
        let half = width / 2;
        for j in 0..half {
            wide[j] += wide[j + half];
        }
        width = half;
    }
    wide[0]
}

/// Terms each f32 lane of a sum takes before the f64 total takes the lanes.
pub(crate) const SUM_FLUSH_STEPS: usize = 8;

/// The accumulator of a [`Kernel`] that sums into f32 lanes (one vector per
/// accumulator) and adds them to the f64 field `self.$field` every
/// [`SUM_FLUSH_STEPS`] steps.
macro_rules! sums_lanes_into {
    ($($field:tt).+) => {
        type Acc = S::f32s;
        const FLUSH_STEPS: usize = $crate::exp_sum::SUM_FLUSH_STEPS;
        #[inline(always)]
        fn init(&self, simd: S) -> S::f32s {
            simd.splat_f32s(0.0)
        }
        #[inline(always)]
        fn merge(&self, simd: S, a: S::f32s, b: S::f32s) -> S::f32s {
            simd.add_f32s(a, b)
        }
        #[inline(always)]
        fn flush(&mut self, _: S, acc: S::f32s) {
            self.$($field).+ += $crate::exp_sum::sum_lanes_f64::<S>(&acc);
        }
    };
}
pub(crate) use sums_lanes_into;

impl<S: Simd, Z: Shift, const FLUSH: bool> Kernel<S> for ExpSum<Z, FLUSH> {
    sums_lanes_into!(total);

    #[inline(always)]
    fn fill(&self) -> f32 {
        f32::NEG_INFINITY
    }
    #[inline(always)]
    fn step(&self, simd: S, acc: S::f32s, x: S::f32s) -> (S::f32s, S::f32s) {
        let e = exp_flushed_below::<S, FLUSH>(simd, self.shift.z(simd, x), CUTOFF);
        (simd.add_f32s(acc, e), e)
    }
    #[inline(always)]
    fn step_tail(&self, simd: S, acc: S::f32s, x: S::f32s, _: usize) -> (S::f32s, S::f32s) {
        // The fill lanes (-inf) need the underflow test in either variant.
        let e = exp_flushed_below::<S, true>(simd, self.shift.z(simd, x), CUTOFF);
        (simd.add_f32s(acc, e), e)
    }
}

/// Σ exp(z) over the entries below the max, and the count of entries at it.
pub(crate) struct ExpSumBelowMax<Z, const FLUSH: bool> {
    shift: Z,
    pub(crate) total: f64,
    pub(crate) maxima: f64,
}

impl<Z: Shift, const FLUSH: bool> ExpSumBelowMax<Z, FLUSH> {
    pub(crate) fn new(shift: Z) -> Self {
        Self {
            shift,
            total: 0.0,
            maxima: 0.0,
        }
    }
}

impl<Z: Shift, const FLUSH: bool> ExpSumBelowMax<Z, FLUSH> {
    /// One vector into (sum, count), with (`F`) or without the underflow test.
    #[inline(always)]
    fn add<S: Simd, const F: bool>(
        &self,
        simd: S,
        (sum, count): (S::f32s, S::f32s),
        x: S::f32s,
    ) -> (S::f32s, S::f32s) {
        let z = self.shift.z(simd, x);
        let e = exp_flushed_below::<S, F>(simd, z, CUTOFF);
        let zero = simd.splat_f32s(0.0);
        let at_max = simd.equal_f32s(z, zero);
        let sum = simd.add_f32s(sum, simd.select_f32s(at_max, zero, e));
        let one = simd.select_f32s(at_max, simd.splat_f32s(1.0), zero);
        (sum, simd.add_f32s(count, one))
    }
}

impl<S: Simd, Z: Shift, const FLUSH: bool> Kernel<S> for ExpSumBelowMax<Z, FLUSH> {
    /// (sum, count of maxima)
    type Acc = (S::f32s, S::f32s);
    const FLUSH_STEPS: usize = SUM_FLUSH_STEPS;

    #[inline(always)]
    fn fill(&self) -> f32 {
        f32::NEG_INFINITY
    }
    #[inline(always)]
    fn init(&self, simd: S) -> Self::Acc {
        (simd.splat_f32s(0.0), simd.splat_f32s(0.0))
    }
    #[inline(always)]
    fn step(&self, simd: S, acc: Self::Acc, x: S::f32s) -> (Self::Acc, S::f32s) {
        (self.add::<S, FLUSH>(simd, acc, x), x)
    }
    #[inline(always)]
    fn step_tail(&self, simd: S, acc: Self::Acc, x: S::f32s, _: usize) -> (Self::Acc, S::f32s) {
        // The fill lanes (-inf) need the underflow test in either variant.
        (self.add::<S, true>(simd, acc, x), x)
    }
    #[inline(always)]
    fn merge(&self, simd: S, a: Self::Acc, b: Self::Acc) -> Self::Acc {
        (simd.add_f32s(a.0, b.0), simd.add_f32s(a.1, b.1))
    }
    #[inline(always)]
    fn flush(&mut self, _: S, (sum, count): Self::Acc) {
        self.total += sum_lanes_f64::<S>(&sum);
        self.maxima += sum_lanes_f64::<S>(&count);
    }
}
