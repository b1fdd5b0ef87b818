//! The output passes: elementwise maps from the row (or its stored exponentials)
//! to the result, once the row's statistics are known.
//!
//! ```text
//! Scale          y = (e < floor ? 0 : e) · r                 three-pass softmax, pass 3
//! ExpScale       y = exp(z(x), cutoff) · r                   online softmax, output pass
//! LogSoftmaxOut  y = z(x) - ln_sum                           every log-softmax
//! Fill           y = value                                   NaN and fully masked rows
//! InfShare       y = (x == +inf) ? on_inf : other            rows holding +inf
//! ```
//! `floor` and `cutoff` are chosen so that y is never subnormal: values whose
//! result would fall below the smallest normal f32 are written as exactly 0.
//! Where the row's minimum shows that no output can fall that low, the
//! `FLUSH = false` variants skip the test. z(x) = (x - max)/t comes from a [`Shift`].

use crate::exp::exp_flushed_below;
use crate::loops::Kernel;
use crate::shift::Shift;
use pulp::Simd;

/// An elementwise output pass.
pub(crate) trait Elementwise<S: Simd> {
    fn apply(&self, simd: S, x: S::f32s) -> S::f32s;
}

/// Runs an [`Elementwise`] map through the shared loop.
pub(crate) struct Map<E>(pub(crate) E);

impl<S: Simd, E: Elementwise<S>> Kernel<S> for Map<E> {
    type Acc = ();

    #[inline(always)]
    fn fill(&self) -> f32 {
        0.0
    }
    #[inline(always)]
    fn init(&self, _: S) {}
    #[inline(always)]
    fn step(&self, simd: S, _: (), x: S::f32s) -> ((), S::f32s) {
        ((), self.0.apply(simd, x))
    }
    #[inline(always)]
    fn merge(&self, _: S, _: (), _: ()) {}
    #[inline(always)]
    fn flush(&mut self, _: S, _: ()) {}
}

pub(crate) struct Scale<const FLUSH: bool> {
    pub(crate) floor: f32,
    pub(crate) r: f32,
}

impl<S: Simd, const FLUSH: bool> Elementwise<S> for Scale<FLUSH> {
    #[inline(always)]
    fn apply(&self, simd: S, e: S::f32s) -> S::f32s {
        let e = if FLUSH {
            let tiny = simd.less_than_f32s(e, simd.splat_f32s(self.floor));
            simd.select_f32s(tiny, simd.splat_f32s(0.0), e)
        } else {
            e
        };
        simd.mul_f32s(e, simd.splat_f32s(self.r))
    }
}

pub(crate) struct ExpScale<Z, const FLUSH: bool> {
    pub(crate) shift: Z,
    pub(crate) cutoff: f32,
    pub(crate) r: f32,
}

impl<S: Simd, Z: Shift, const FLUSH: bool> Elementwise<S> for ExpScale<Z, FLUSH> {
    #[inline(always)]
    fn apply(&self, simd: S, x: S::f32s) -> S::f32s {
        let e = exp_flushed_below::<S, FLUSH>(simd, self.shift.z(simd, x), self.cutoff);
        simd.mul_f32s(e, simd.splat_f32s(self.r))
    }
}

pub(crate) struct LogSoftmaxOut<Z> {
    pub(crate) shift: Z,
    pub(crate) ln_sum: f32,
}

impl<S: Simd, Z: Shift> Elementwise<S> for LogSoftmaxOut<Z> {
    #[inline(always)]
    fn apply(&self, simd: S, x: S::f32s) -> S::f32s {
        simd.sub_f32s(self.shift.z(simd, x), simd.splat_f32s(self.ln_sum))
    }
}

pub(crate) struct Fill(pub(crate) f32);

impl<S: Simd> Elementwise<S> for Fill {
    #[inline(always)]
    fn apply(&self, simd: S, _: S::f32s) -> S::f32s {
        simd.splat_f32s(self.0)
    }
}

pub(crate) struct InfShare {
    pub(crate) on_inf: f32,
    pub(crate) other: f32,
}

impl<S: Simd> Elementwise<S> for InfShare {
    #[inline(always)]
    fn apply(&self, simd: S, x: S::f32s) -> S::f32s {
        let is_inf = simd.equal_f32s(x, simd.splat_f32s(f32::INFINITY));
        simd.select_f32s(
            is_inf,
            simd.splat_f32s(self.on_inf),
            simd.splat_f32s(self.other),
        )
    }
}
