//! Max- and min-reduce: the first pass of the three-pass algorithm and of each
//! online block.
//!
//! ```text
//! m[j] = -inf, l[j] = +inf;  for each vector x: m[j] = max(m[j], x), l[j] = min(l[j], x)
//! row max = max over lanes of m;  row min = min over lanes of l
//! ```
//! The min costs one more op on a pass that is bound by loads, and tells the
//! later passes whether any exp can underflow (then they skip the test) and
//! whether x - max can overflow. Masked tail lanes hold -inf for the max and
//! are replaced by the row's first lane for the min (a copy of an element
//! changes neither). A NaN may or may not survive `max`/`min` (the ISAs differ);
//! callers learn of NaN through the sum, which always carries it.

use crate::loops::Kernel;
use pulp::Simd;

pub(crate) struct MinMax {
    pub(crate) max: f32,
    pub(crate) min: f32,
}

impl MinMax {
    pub(crate) fn new() -> Self {
        Self {
            max: f32::NEG_INFINITY,
            min: f32::INFINITY,
        }
    }
}

impl<S: Simd> Kernel<S> for MinMax {
    /// (max, min)
    type Acc = (S::f32s, S::f32s);

    #[inline(always)]
    fn fill(&self) -> f32 {
        f32::NEG_INFINITY
    }
    #[inline(always)]
    fn init(&self, simd: S) -> Self::Acc {
        (
            simd.splat_f32s(f32::NEG_INFINITY),
            simd.splat_f32s(f32::INFINITY),
        )
    }
    #[inline(always)]
    fn step(&self, simd: S, (m, l): Self::Acc, x: S::f32s) -> (Self::Acc, S::f32s) {
        ((simd.max_f32s(m, x), simd.min_f32s(l, x)), x)
    }
    #[inline(always)]
    fn step_tail(
        &self,
        simd: S,
        (m, l): Self::Acc,
        x: S::f32s,
        valid: usize,
    ) -> (Self::Acc, S::f32s) {
        // The fill (-inf) is neutral for the max only; the min takes lane 0 instead.
        let first = simd.splat_f32s(crate::loops::lanes::<S>(&x)[0]);
        let lanes = simd.mask_between_m32s(0, valid as u32).mask();
        let for_min = simd.select_f32s(lanes, x, first);
        ((simd.max_f32s(m, x), simd.min_f32s(l, for_min)), x)
    }
    #[inline(always)]
    fn merge(&self, simd: S, a: Self::Acc, b: Self::Acc) -> Self::Acc {
        (simd.max_f32s(a.0, b.0), simd.min_f32s(a.1, b.1))
    }
    #[inline(always)]
    fn flush(&mut self, simd: S, (m, l): Self::Acc) {
        self.max = self.max.max(simd.reduce_max_f32s(m));
        self.min = self.min.min(simd.reduce_min_f32s(l));
    }
}
