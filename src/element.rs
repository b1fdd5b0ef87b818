//! Element types the API accepts: f32, and the half-precision `half::f16` and
//! `half::bf16`. Arithmetic is always f32: half-precision rows are widened as
//! they are loaded and rounded to nearest even as they are stored.

use half::{bf16, f16};
use softmax_kernels::{AnySlice, AnySliceMut};

mod sealed {
    pub trait Sealed {}
    impl Sealed for f32 {}
    impl Sealed for half::f16 {}
    impl Sealed for half::bf16 {}
}

/// A storage type for logits and probabilities: `f32`, `half::f16` or `half::bf16`.
/// Inputs and outputs may differ (for example f16 logits into f32 probabilities).
pub trait Element: sealed::Sealed + Copy + Send + Sync + 'static {
    /// The type's name: `"f32"`, `"f16"` or `"bf16"`.
    const NAME: &'static str;
    /// `x` rounded to this type, to nearest even (as the kernels store).
    fn from_f32(x: f32) -> Self;
    /// This value as f32 (exact: every f16 and bf16 value is an f32 value).
    fn to_f32(self) -> f32;
    #[doc(hidden)]
    fn any(x: &[Self]) -> AnySlice<'_>;
    #[doc(hidden)]
    fn any_mut(x: &mut [Self]) -> AnySliceMut<'_>;
}

macro_rules! element {
    ($($t:ty: $name:literal, $from:expr, $to:expr;)*) => {$(
        impl Element for $t {
            const NAME: &'static str = $name;
            #[inline]
            fn from_f32(x: f32) -> Self {
                $from(x)
            }
            #[inline]
            fn to_f32(self) -> f32 {
                $to(self)
            }
            #[inline]
            fn any(x: &[$t]) -> AnySlice<'_> {
                x.into()
            }
            #[inline]
            fn any_mut(x: &mut [$t]) -> AnySliceMut<'_> {
                x.into()
            }
        }
    )*};
}

element! {
    f32: "f32", std::convert::identity, std::convert::identity;
    f16: "f16", f16::from_f32, f16::to_f32;
    bf16: "bf16", bf16::from_f32, bf16::to_f32;
}
