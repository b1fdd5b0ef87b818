//! Special-value scan: counts the NaN and +inf entries of a row whose maximum
//! is not finite, so the row can follow the special-value rules.
//!
//! ```text
//! for each vector x:  nan[j] += (x != x);  inf[j] += (x == +inf)      (counts as f32 lanes)
//! every FLUSH_STEPS steps: totals (u64) += lanes
//! ```
//! Masked tail lanes hold 0, which is neither.

use crate::loops::{lanes, Kernel};
use pulp::Simd;

#[derive(Default)]
pub(crate) struct SpecialScan {
    pub(crate) nans: u64,
    pub(crate) pos_infs: u64,
}

impl<S: Simd> Kernel<S> for SpecialScan {
    type Acc = (S::f32s, S::f32s);
    // Counts stay exact in f32 far beyond FLUSH_STEPS terms per lane.
    const FLUSH_STEPS: usize = 1024;

    #[inline(always)]
    fn fill(&self) -> f32 {
        0.0
    }
    #[inline(always)]
    fn init(&self, simd: S) -> Self::Acc {
        (simd.splat_f32s(0.0), simd.splat_f32s(0.0))
    }
    #[inline(always)]
    fn step(&self, simd: S, (nan, inf): Self::Acc, x: S::f32s) -> (Self::Acc, S::f32s) {
        let one = simd.splat_f32s(1.0);
        let zero = simd.splat_f32s(0.0);
        let is_num = simd.equal_f32s(x, x);
        let is_inf = simd.equal_f32s(x, simd.splat_f32s(f32::INFINITY));
        let nan = simd.add_f32s(nan, simd.select_f32s(is_num, zero, one));
        let inf = simd.add_f32s(inf, simd.select_f32s(is_inf, one, zero));
        ((nan, inf), x)
    }
    #[inline(always)]
    fn merge(&self, simd: S, a: Self::Acc, b: Self::Acc) -> Self::Acc {
        (simd.add_f32s(a.0, b.0), simd.add_f32s(a.1, b.1))
    }
    #[inline(always)]
    fn flush(&mut self, _: S, (nan, inf): Self::Acc) {
        self.nans += lanes::<S>(&nan).iter().map(|&c| c as u64).sum::<u64>();
        self.pos_infs += lanes::<S>(&inf).iter().map(|&c| c as u64).sum::<u64>();
    }
}
