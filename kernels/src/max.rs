//! Max-reduce: the first pass of the three-pass algorithm and of each online block.
//!
//! ```text
//! m[j] = -inf;  for each vector x: m[j] = max(m[j], x);  row max = max over lanes of m
//! ```
//! Masked tail lanes hold -inf. A NaN may or may not survive `max` (the ISAs
//! differ); callers learn of NaN through the sum, which always carries it.

use crate::loops::Kernel;
use pulp::Simd;

pub(crate) struct MaxReduce {
    pub(crate) max: f32,
}

impl MaxReduce {
    pub(crate) fn new() -> Self {
        Self {
            max: f32::NEG_INFINITY,
        }
    }
}

impl<S: Simd> Kernel<S> for MaxReduce {
    type Acc = S::f32s;

    #[inline(always)]
    fn fill(&self) -> f32 {
        f32::NEG_INFINITY
    }
    #[inline(always)]
    fn init(&self, simd: S) -> S::f32s {
        simd.splat_f32s(f32::NEG_INFINITY)
    }
    #[inline(always)]
    fn step(&self, simd: S, acc: S::f32s, x: S::f32s) -> (S::f32s, S::f32s) {
        (simd.max_f32s(acc, x), x)
    }
    #[inline(always)]
    fn merge(&self, simd: S, a: S::f32s, b: S::f32s) -> S::f32s {
        simd.max_f32s(a, b)
    }
    #[inline(always)]
    fn flush(&mut self, simd: S, acc: S::f32s) {
        self.max = self.max.max(simd.reduce_max_f32s(acc));
    }
}
