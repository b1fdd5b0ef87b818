//! The output passes: elementwise maps from the row (or its stored exponentials)
//! to the result, once the row's statistics are known.
//!
//! ```text
//! Scale          y = (e < floor ? 0 : e) · r                 three-pass softmax, pass 3
//! ScaleOffset    y = (e < floor ? 0 : e) · r - offset        cross-entropy gradient, stored exponentials
//! ExpScale       y = exp(z(x), cutoff) · r                   online softmax, output pass
//! LogSoftmaxOut  y = z(x) - ln_sum                           every log-softmax (rounded to odd
//!                                                            for f16/bf16 outputs)
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

/// An elementwise output pass over one row (`X` a vector) or two rows read
/// in step (`X` a pair of vectors).
pub(crate) trait Elementwise<S: Simd, X = <S as Simd>::f32s> {
    fn apply(&self, simd: S, x: X) -> S::f32s;
}

/// Runs an [`Elementwise`] map through the shared loop.
pub(crate) struct Map<E>(pub(crate) E);

impl<S: Simd, X: Copy, E: Elementwise<S, X>> Kernel<S, X> for Map<E> {
    type Acc = ();

    #[inline(always)]
    fn fill(&self) -> f32 {
        0.0
    }
    #[inline(always)]
    fn init(&self, _: S) {}
    #[inline(always)]
    fn step(&self, simd: S, _: (), x: X) -> ((), S::f32s) {
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

/// `e`, with 0 where it is below `floor` (when `FLUSH`).
#[inline(always)]
fn zero_below<S: Simd, const FLUSH: bool>(simd: S, e: S::f32s, floor: f32) -> S::f32s {
    if FLUSH {
        let tiny = simd.less_than_f32s(e, simd.splat_f32s(floor));
        simd.select_f32s(tiny, simd.splat_f32s(0.0), e)
    } else {
        e
    }
}

impl<S: Simd, const FLUSH: bool> Elementwise<S> for Scale<FLUSH> {
    #[inline(always)]
    fn apply(&self, simd: S, e: S::f32s) -> S::f32s {
        let e = zero_below::<S, FLUSH>(simd, e, self.floor);
        simd.mul_f32s(e, simd.splat_f32s(self.r))
    }
}

/// [`Scale`] less a constant: the cross-entropy gradient from stored exponentials.
pub(crate) struct ScaleOffset<const FLUSH: bool> {
    pub(crate) floor: f32,
    pub(crate) r: f32,
    pub(crate) offset: f32,
}

impl<S: Simd, const FLUSH: bool> Elementwise<S> for ScaleOffset<FLUSH> {
    #[inline(always)]
    fn apply(&self, simd: S, e: S::f32s) -> S::f32s {
        let e = zero_below::<S, FLUSH>(simd, e, self.floor);
        simd.mul_add_f32s(e, simd.splat_f32s(self.r), simd.splat_f32s(-self.offset))
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

pub(crate) struct LogSoftmaxOut<Z, const TO_ODD: bool> {
    pub(crate) shift: Z,
    pub(crate) ln_sum: f32,
}

impl<S: Simd, Z: Shift, const TO_ODD: bool> Elementwise<S> for LogSoftmaxOut<Z, TO_ODD> {
    #[inline(always)]
    fn apply(&self, simd: S, x: S::f32s) -> S::f32s {
        let z = self.shift.z(simd, x);
        let minus_l = simd.splat_f32s(-self.ln_sum);
        let y = simd.add_f32s(z, minus_l);
        if TO_ODD {
            round_to_odd(simd, y, two_sum_error(simd, z, minus_l, y))
        } else {
            y
        }
    }
}

/// The exact error of y = a + b (Knuth's TwoSum: a + b = y + e exactly).
#[inline(always)]
fn two_sum_error<S: Simd>(simd: S, a: S::f32s, b: S::f32s, y: S::f32s) -> S::f32s {
    let b_part = simd.sub_f32s(y, a);
    let a_part = simd.sub_f32s(y, b_part);
    simd.add_f32s(simd.sub_f32s(a, a_part), simd.sub_f32s(b, b_part))
}

/// y + e rounded to odd, from y = round-to-nearest-even(y + e) and the exact
/// error e: an inexact y with an even mantissa moves one ulp towards y + e.
/// Rounded again to a format at least two bits narrower (f16, bf16), a
/// round-to-odd value rounds as the exact one would: a result that only looks
/// like a tie in f32 is not taken for one.
#[inline(always)]
fn round_to_odd<S: Simd>(simd: S, y: S::f32s, e: S::f32s) -> S::f32s {
    let zero = simd.splat_f32s(0.0);
    let bits = simd.transmute_u32s_f32s(y);
    let one = simd.splat_u32s(1);
    let odd = simd.equal_u32s(simd.and_u32s(bits, one), one);
    // A NaN e (y infinite) counts as exact.
    let inexact = simd.or_m32s(simd.less_than_f32s(e, zero), simd.less_than_f32s(zero, e));
    let signs = simd.xor_u32s(bits, simd.transmute_u32s_f32s(e));
    let outward = simd.less_than_u32s(signs, simd.splat_u32s(0x8000_0000));
    let step = simd.select_u32s(outward, one, simd.splat_u32s(u32::MAX));
    let step = simd.select_u32s(inexact, step, simd.splat_u32s(0));
    let step = simd.select_u32s(odd, simd.splat_u32s(0), step);
    simd.transmute_f32s_u32s(simd.add_u32s(bits, step))
}

pub(crate) struct Fill(pub(crate) f32);

/// y = main · side.
pub(crate) struct Product;

impl<S: Simd> Elementwise<S, (S::f32s, S::f32s)> for Product {
    #[inline(always)]
    fn apply(&self, simd: S, (a, b): (S::f32s, S::f32s)) -> S::f32s {
        simd.mul_f32s(a, b)
    }
}

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
