//! The shifted, scaled argument z = (x - max) / t that every exp and every
//! log-softmax output starts from, formed as cheaply as the row allows.
//!
//! ```text
//! Unit    t = 1                       z = x - max                       (1 add)
//! Scaled  max - min ≤ f32::MAX        z = (x - max) · inv_t             (1 add, 1 mul)
//! Wide    otherwise                   z = fma(x, ½, -max/2) · (2·inv_t) (1 fma, 1 mul)
//! ```
//! All three round x - max once and then multiply by inv_t, so they agree bit
//! for bit wherever x - max is finite. Wide never overflows: halving is exact,
//! so a row holding both 3e38 and -3e38 still gets a finite z when t > 1.

use pulp::Simd;

/// One way to form z.
pub(crate) trait Shift: Copy {
    fn z<S: Simd>(&self, simd: S, x: S::f32s) -> S::f32s;
}

#[derive(Clone, Copy, Debug)]
pub(crate) struct Unit {
    max: f32,
}

impl Unit {
    /// z = x - max, for a row whose t is 1.
    #[inline(always)]
    pub(crate) fn new(max: f32) -> Self {
        Self { max }
    }
}

impl Shift for Unit {
    #[inline(always)]
    fn z<S: Simd>(&self, simd: S, x: S::f32s) -> S::f32s {
        simd.sub_f32s(x, simd.splat_f32s(self.max))
    }
}

#[derive(Clone, Copy, Debug)]
pub(crate) struct Scaled {
    max: f32,
    inv_t: f32,
}

impl Shift for Scaled {
    #[inline(always)]
    fn z<S: Simd>(&self, simd: S, x: S::f32s) -> S::f32s {
        let d = simd.sub_f32s(x, simd.splat_f32s(self.max));
        simd.mul_f32s(d, simd.splat_f32s(self.inv_t))
    }
}

#[derive(Clone, Copy, Debug)]
pub(crate) struct Wide {
    half_max: f32,
    twice_inv_t: f32,
}

impl Shift for Wide {
    #[inline(always)]
    fn z<S: Simd>(&self, simd: S, x: S::f32s) -> S::f32s {
        let half_diff = simd.mul_add_f32s(x, simd.splat_f32s(0.5), simd.splat_f32s(-self.half_max));
        simd.mul_f32s(half_diff, simd.splat_f32s(self.twice_inv_t))
    }
}

/// The cheapest exact form for a row with this max, min and 1/t.
#[derive(Clone, Copy, Debug)]
pub(crate) enum AnyShift {
    Unit(Unit),
    Scaled(Scaled),
    Wide(Wide),
}

impl AnyShift {
    /// `min` may be any lower bound of the row (-inf when unknown).
    #[inline(always)]
    pub(crate) fn new(max: f32, min: f32, inv_t: f32) -> Self {
        if (max as f64 - min as f64) > f32::MAX as f64 {
            AnyShift::Wide(Wide {
                half_max: 0.5 * max,
                twice_inv_t: 2.0 * inv_t,
            })
        } else if inv_t == 1.0 {
            AnyShift::Unit(Unit { max })
        } else {
            AnyShift::Scaled(Scaled { max, inv_t })
        }
    }
}

/// Evaluates `$body` with `$z` bound to the concrete [`Shift`] inside `$any`
/// (one monomorphised copy per form).
macro_rules! with_shift {
    ($any:expr, $z:ident => $body:expr) => {
        match $any {
            $crate::shift::AnyShift::Unit($z) => $body,
            $crate::shift::AnyShift::Scaled($z) => $body,
            $crate::shift::AnyShift::Wide($z) => $body,
        }
    };
}
pub(crate) use with_shift;

/// [`with_shift!`] for a pass compiled with and without the per-element
/// underflow test: evaluates `$body` with `$z` bound to the shift and the
/// const `$test` to `$flush`, except that a `Wide` row always takes the test.
/// Its range exceeds f32::MAX, so some z lies below every cutoff unless t is
/// beyond 10^36; a variant without the test would never pay for its code.
macro_rules! with_shift_and_test {
    ($any:expr, $flush:expr, $z:ident, $test:ident => $body:expr) => {
        match ($any, $flush) {
            ($crate::shift::AnyShift::Unit($z), true) => {
                const $test: bool = true;
                $body
            }
            ($crate::shift::AnyShift::Unit($z), false) => {
                const $test: bool = false;
                $body
            }
            ($crate::shift::AnyShift::Scaled($z), true) => {
                const $test: bool = true;
                $body
            }
            ($crate::shift::AnyShift::Scaled($z), false) => {
                const $test: bool = false;
                $body
            }
            ($crate::shift::AnyShift::Wide($z), _) => {
                const $test: bool = true;
                $body
            }
        }
    };
}
pub(crate) use with_shift_and_test;
