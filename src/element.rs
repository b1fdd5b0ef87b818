//! Element types the API accepts. Arithmetic is always f32; the trait is the
//! seam through which narrower storage types (f16, bf16) enter.

mod sealed {
    pub trait Sealed {}
    impl Sealed for f32 {}
}

/// A storage type for logits and probabilities.
pub trait Element: sealed::Sealed + Copy + Send + Sync + 'static {
    #[doc(hidden)]
    fn as_f32(x: &[Self]) -> &[f32];
    #[doc(hidden)]
    fn as_f32_mut(x: &mut [Self]) -> &mut [f32];
}

impl Element for f32 {
    #[inline]
    fn as_f32(x: &[f32]) -> &[f32] {
        x
    }
    #[inline]
    fn as_f32_mut(x: &mut [f32]) -> &mut [f32] {
        x
    }
}
