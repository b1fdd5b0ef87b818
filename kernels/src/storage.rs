//! Element storage: how a row of f32, f16 or bf16 becomes f32 vectors and back.
//! Arithmetic is always f32; narrower types are widened on load and rounded to
//! nearest even on store (see [`crate::arch`]).

use crate::arch::{Arch, Body, F32s};
use half::slice::HalfFloatSliceExt;
use half::{bf16, f16};
use pulp::bytemuck;
use pulp::Simd;

/// The element types of a row.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    F32,
    F16,
    BF16,
}

/// A storage type: its vector form for each ISA, and the conversions.
pub trait Storage: Copy + Send + Sync + 'static {
    /// One vector's worth of elements in memory.
    type Vector<A: Arch>: Copy;
    /// The whole vectors of `x` and the rest (shorter than a vector).
    fn split<A: Arch>(x: &[Self]) -> (&[Self::Vector<A>], &[Self]);
    fn split_mut<A: Arch>(x: &mut [Self]) -> (&mut [Self::Vector<A>], &mut [Self]);
    fn load<A: Arch>(arch: A, v: Self::Vector<A>) -> F32s<A>;
    fn store<A: Arch>(arch: A, v: F32s<A>) -> Self::Vector<A>;
    /// The first `x.len()` lanes (fewer than a vector); the others are 0.
    fn load_partial<A: Arch>(arch: A, x: &[Self]) -> F32s<A>;
    fn store_partial<A: Arch>(arch: A, x: &mut [Self], v: F32s<A>);
    /// `x` rounded once to the type.
    fn from_f64(x: f64) -> Self;
    /// The value, exactly.
    fn to_f64(self) -> f64;
}

impl Storage for f32 {
    type Vector<A: Arch> = F32s<A>;
    #[inline(always)]
    fn split<A: Arch>(x: &[f32]) -> (&[F32s<A>], &[f32]) {
        A::Simd::as_simd_f32s(x)
    }
    #[inline(always)]
    fn split_mut<A: Arch>(x: &mut [f32]) -> (&mut [F32s<A>], &mut [f32]) {
        A::Simd::as_mut_simd_f32s(x)
    }
    #[inline(always)]
    fn load<A: Arch>(_: A, v: F32s<A>) -> F32s<A> {
        v
    }
    #[inline(always)]
    fn store<A: Arch>(_: A, v: F32s<A>) -> F32s<A> {
        v
    }
    #[inline(always)]
    fn load_partial<A: Arch>(arch: A, x: &[f32]) -> F32s<A> {
        arch.simd().partial_load_f32s(x)
    }
    #[inline(always)]
    fn store_partial<A: Arch>(arch: A, x: &mut [f32], v: F32s<A>) {
        arch.simd().partial_store_f32s(x, v)
    }
    #[inline(always)]
    fn from_f64(x: f64) -> f32 {
        x as f32
    }
    #[inline(always)]
    fn to_f64(self) -> f64 {
        self as f64
    }
}

/// The 16-bit types differ only in their conversions.
macro_rules! half_storage {
    ($t:ty, $widen:ident, $narrow:ident, $to_f64:path, $from_f64:path) => {
        impl Storage for $t {
            type Vector<A: Arch> = A::Halfs;
            #[inline(always)]
            fn split<A: Arch>(x: &[$t]) -> (&[A::Halfs], &[$t]) {
                let (body, rest) = x.split_at(x.len() - x.len() % A::Simd::F32_LANES);
                (bytemuck::cast_slice(body.reinterpret_cast()), rest)
            }
            #[inline(always)]
            fn split_mut<A: Arch>(x: &mut [$t]) -> (&mut [A::Halfs], &mut [$t]) {
                let at = x.len() - x.len() % A::Simd::F32_LANES;
                let (body, rest) = x.split_at_mut(at);
                (bytemuck::cast_slice_mut(body.reinterpret_cast_mut()), rest)
            }
            #[inline(always)]
            fn load<A: Arch>(arch: A, v: A::Halfs) -> F32s<A> {
                arch.$widen(v)
            }
            #[inline(always)]
            fn store<A: Arch>(arch: A, v: F32s<A>) -> A::Halfs {
                arch.$narrow(v)
            }
            #[inline(always)]
            fn load_partial<A: Arch>(arch: A, x: &[$t]) -> F32s<A> {
                let mut v = <A::Halfs as bytemuck::Zeroable>::zeroed();
                let bits: &mut [u16] = bytemuck::cast_slice_mut(core::slice::from_mut(&mut v));
                bits[..x.len()].copy_from_slice(x.reinterpret_cast());
                arch.$widen(v)
            }
            #[inline(always)]
            fn store_partial<A: Arch>(arch: A, x: &mut [$t], v: F32s<A>) {
                let v = arch.$narrow(v);
                let bits: &[u16] = bytemuck::cast_slice(core::slice::from_ref(&v));
                let n = x.len();
                x.reinterpret_cast_mut().copy_from_slice(&bits[..n]);
            }
            #[inline(always)]
            fn from_f64(x: f64) -> $t {
                <$t>::from_bits($from_f64(x))
            }
            #[inline(always)]
            fn to_f64(self) -> f64 {
                $to_f64(self.to_bits())
            }
        }
    };
}

/// `x` rounded once to nearest even, from `c`, the `half` crate's rounding of
/// it, which on some targets goes through f32 and can round twice: when `x`
/// rounds to an f32 that is a midpoint of the 16-bit type, `c` may be the
/// wrong neighbour; comparing `x` with the midpoints in f64 settles it.
/// Returns the bits to use; `value` maps bits to their f64 value.
#[inline(always)]
fn round_once(x: f64, c: u16, value: impl Fn(u16) -> f64) -> u16 {
    let (sign, mag) = (c & 0x8000, c & 0x7fff);
    let cv = value(c);
    if x.is_nan() || !cv.is_finite() || mag == 0 {
        return c;
    }
    let (down, up) = (sign | (mag - 1), sign | (mag + 1));
    let ax = x.abs();
    let even = |m: u16, mid: f64| ax == mid && m.is_multiple_of(2);
    let m_up = (cv.abs() + value(up).abs()) / 2.0;
    let m_down = (cv.abs() + value(down).abs()) / 2.0;
    if value(up).is_finite() && (ax > m_up || even(mag + 1, m_up)) {
        up
    } else if ax < m_down || even(mag - 1, m_down) {
        down
    } else {
        c
    }
}

/// The f16 with these bits, exactly, in f64 (inline: `half`'s scalar
/// conversion is an out-of-line call where F16C is not assumed).
#[inline(always)]
fn f16_bits_to_f64(bits: u16) -> f64 {
    let sign = if bits & 0x8000 != 0 { -1.0 } else { 1.0 };
    let exponent = ((bits >> 10) & 0x1f) as i32;
    let mantissa = (bits & 0x3ff) as u64;
    let magnitude = match exponent {
        // Subnormal or zero: mantissa · 2^-24.
        0 => mantissa as f64 * (1.0 / 16_777_216.0),
        0x1f if mantissa == 0 => f64::INFINITY,
        0x1f => f64::NAN,
        _ => f64::from_bits((((exponent - 15 + 1023) as u64) << 52) | (mantissa << 42)),
    };
    sign * magnitude
}

/// The bf16 with these bits, exactly, in f64.
#[inline(always)]
fn bf16_bits_to_f64(bits: u16) -> f64 {
    f32::from_bits((bits as u32) << 16) as f64
}

/// x rounded once to the nearest f16 (ties to even), as bits; NaN gives a
/// quiet NaN of x's sign. In software and inline: `half`'s conversion is an
/// out-of-line call on some targets, and goes through f32 (rounding twice) on others.
#[inline(always)]
fn f16_bits_from_f64(x: f64) -> u16 {
    const SHIFTER: f64 = 4_503_599_627_370_496.0; // 2^52: adding it rounds to an integer
    let sign = ((x.to_bits() >> 48) & 0x8000) as u16;
    let a = x.abs();
    if a.is_nan() {
        return sign | 0x7e00;
    }
    // 65520 is the midpoint between 65504 (odd mantissa) and 2^16: ties go up to inf.
    if a >= 65520.0 {
        return sign | 0x7c00;
    }
    if a < 1.0 / 16384.0 {
        // Subnormal (or the smallest normal after rounding): a·2^24 to an integer.
        let m = (a * 16_777_216.0 + SHIFTER) - SHIFTER;
        return sign | m as u16;
    }
    // a in [2^e, 2^(e+1)): round to a multiple of 2^(e-10), exactly.
    let e = ((a.to_bits() >> 52) & 0x7ff) as i64 - 1023;
    let ulp = f64::from_bits(((e - 10 + 1023) as u64) << 52);
    let r = ((a / ulp + SHIFTER) - SHIFTER) * ulp;
    let rb = r.to_bits();
    let exponent = ((rb >> 52) & 0x7ff) as i64 - 1023 + 15;
    let mantissa = (rb >> 42) & 0x3ff;
    sign | ((exponent as u16) << 10) | mantissa as u16
}

/// x rounded once to the nearest bf16 (ties to even), as bits.
#[inline(always)]
fn bf16_bits_from_f64(x: f64) -> u16 {
    let c = bf16::from_f64(x).to_bits();
    round_once(x, c, bf16_bits_to_f64)
}

half_storage!(
    f16,
    f16_to_f32,
    f32_to_f16,
    f16_bits_to_f64,
    f16_bits_from_f64
);
half_storage!(
    bf16,
    bf16_to_f32,
    f32_to_bf16,
    bf16_bits_to_f64,
    bf16_bits_from_f64
);

/// Widens `src` (any type) exactly into `dst` (as long).
#[inline(always)]
pub(crate) fn widen<A: Arch>(arch: A, src: AnySlice<'_>, dst: &mut [f32]) {
    assert_eq!(src.len(), dst.len(), "a conversion keeps the length");
    match src {
        AnySlice::F32(src) => dst.copy_from_slice(src),
        AnySlice::F16(src) => arch.region(Widen { arch, src, dst }),
        AnySlice::BF16(src) => arch.region(Widen { arch, src, dst }),
    }
}

/// Rounds `src` to nearest even into `dst` (any type, as long).
#[inline(always)]
pub(crate) fn narrow<A: Arch>(arch: A, src: &[f32], dst: AnySliceMut<'_>) {
    assert_eq!(src.len(), dst.len(), "a conversion keeps the length");
    match dst {
        AnySliceMut::F32(dst) => dst.copy_from_slice(src),
        AnySliceMut::F16(dst) => arch.region(Narrow { arch, src, dst }),
        AnySliceMut::BF16(dst) => arch.region(Narrow { arch, src, dst }),
    }
}

/// A half-precision row into f32, in the token's region.
struct Widen<'a, A, T> {
    arch: A,
    src: &'a [T],
    dst: &'a mut [f32],
}

impl<A: Arch, T: Storage> Body for Widen<'_, A, T> {
    type Output = ();
    #[inline(always)]
    fn call(self) {
        let (arch, n) = (self.arch, self.src.len());
        let (body, tail) = T::split::<A>(self.src);
        let (out, out_tail) = A::Simd::as_mut_simd_f32s(self.dst);
        let out = &mut out[..body.len()];
        for (o, &v) in out.iter_mut().zip(body) {
            *o = T::load(arch, v);
        }
        debug_assert_eq!(out_tail.len(), n - body.len() * A::Simd::F32_LANES);
        arch.simd()
            .partial_store_f32s(out_tail, T::load_partial(arch, tail));
    }
}

/// An f32 row into half precision, in the token's region.
struct Narrow<'a, A, T> {
    arch: A,
    src: &'a [f32],
    dst: &'a mut [T],
}

impl<A: Arch, T: Storage> Body for Narrow<'_, A, T> {
    type Output = ();
    #[inline(always)]
    fn call(self) {
        let arch = self.arch;
        let (body, tail) = T::split_mut::<A>(self.dst);
        let (src, src_tail) = A::Simd::as_simd_f32s(self.src);
        let src = &src[..body.len()];
        for (o, &v) in body.iter_mut().zip(src) {
            *o = T::store(arch, v);
        }
        T::store_partial(arch, tail, arch.simd().partial_load_f32s(src_tail));
    }
}

/// A row of any storage type.
#[derive(Clone, Copy, Debug)]
pub enum AnySlice<'a> {
    F32(&'a [f32]),
    F16(&'a [f16]),
    BF16(&'a [bf16]),
}

/// A writable row of any storage type.
#[derive(Debug)]
pub enum AnySliceMut<'a> {
    F32(&'a mut [f32]),
    F16(&'a mut [f16]),
    BF16(&'a mut [bf16]),
}

/// Evaluates `$body` with `$s` bound to the typed slice inside `$any`, and
/// rewraps the result in the same variant when `$wrap` is given.
macro_rules! each {
    ($any:expr, $s:ident => $body:expr) => {
        match $any {
            AnySlice::F32($s) => $body,
            AnySlice::F16($s) => $body,
            AnySlice::BF16($s) => $body,
        }
    };
    (mut $any:expr, $s:ident => $body:expr) => {
        match $any {
            AnySliceMut::F32($s) => $body,
            AnySliceMut::F16($s) => $body,
            AnySliceMut::BF16($s) => $body,
        }
    };
    (wrap $any:expr, $s:ident => $body:expr) => {
        match $any {
            AnySlice::F32($s) => AnySlice::F32($body),
            AnySlice::F16($s) => AnySlice::F16($body),
            AnySlice::BF16($s) => AnySlice::BF16($body),
        }
    };
    (wrap mut $any:expr, $s:ident => $body:expr) => {
        match $any {
            AnySliceMut::F32($s) => AnySliceMut::F32($body),
            AnySliceMut::F16($s) => AnySliceMut::F16($body),
            AnySliceMut::BF16($s) => AnySliceMut::BF16($body),
        }
    };
}

impl<'a> AnySlice<'a> {
    /// Element `i`, exactly.
    #[inline(always)]
    pub fn get(&self, i: usize) -> f64 {
        each!(self, s => Storage::to_f64(s[i]))
    }
    #[inline(always)]
    pub fn len(&self) -> usize {
        each!(self, s => s.len())
    }
    #[inline(always)]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    #[inline(always)]
    pub fn kind(&self) -> Kind {
        match self {
            AnySlice::F32(_) => Kind::F32,
            AnySlice::F16(_) => Kind::F16,
            AnySlice::BF16(_) => Kind::BF16,
        }
    }
    /// Elements `range` (panics if out of bounds).
    #[inline(always)]
    pub fn slice(self, range: core::ops::Range<usize>) -> AnySlice<'a> {
        each!(wrap self, s => &s[range])
    }
    #[inline(always)]
    pub fn split_at(self, k: usize) -> (AnySlice<'a>, AnySlice<'a>) {
        (self.slice(0..k), self.slice(k..self.len()))
    }
}

impl<'a> AnySliceMut<'a> {
    #[inline(always)]
    pub fn len(&self) -> usize {
        each!(mut self, s => s.len())
    }
    #[inline(always)]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    #[inline(always)]
    pub fn kind(&self) -> Kind {
        self.shared().kind()
    }
    /// A shorter-lived writable view of the same row.
    #[inline(always)]
    pub fn reborrow(&mut self) -> AnySliceMut<'_> {
        each!(wrap mut self, s => &mut **s)
    }
    /// A read-only view of the same row.
    #[inline(always)]
    pub fn shared(&self) -> AnySlice<'_> {
        match self {
            AnySliceMut::F32(s) => AnySlice::F32(s),
            AnySliceMut::F16(s) => AnySlice::F16(s),
            AnySliceMut::BF16(s) => AnySlice::BF16(s),
        }
    }
    /// Elements `range` (panics if out of bounds).
    #[inline(always)]
    pub fn into_slice(self, range: core::ops::Range<usize>) -> AnySliceMut<'a> {
        each!(wrap mut self, s => &mut s[range])
    }
    #[inline(always)]
    pub fn split_at(self, k: usize) -> (AnySliceMut<'a>, AnySliceMut<'a>) {
        match self {
            AnySliceMut::F32(s) => {
                let (a, b) = s.split_at_mut(k);
                (AnySliceMut::F32(a), AnySliceMut::F32(b))
            }
            AnySliceMut::F16(s) => {
                let (a, b) = s.split_at_mut(k);
                (AnySliceMut::F16(a), AnySliceMut::F16(b))
            }
            AnySliceMut::BF16(s) => {
                let (a, b) = s.split_at_mut(k);
                (AnySliceMut::BF16(a), AnySliceMut::BF16(b))
            }
        }
    }
    /// Writes `value` at `i`, rounded once to the storage type.
    #[inline(always)]
    pub fn set(&mut self, i: usize, value: f64) {
        each!(mut self, s => s[i] = Storage::from_f64(value))
    }
}

impl<'a> From<&'a [f32]> for AnySlice<'a> {
    fn from(s: &'a [f32]) -> Self {
        AnySlice::F32(s)
    }
}
impl<'a> From<&'a [f16]> for AnySlice<'a> {
    fn from(s: &'a [f16]) -> Self {
        AnySlice::F16(s)
    }
}
impl<'a> From<&'a [bf16]> for AnySlice<'a> {
    fn from(s: &'a [bf16]) -> Self {
        AnySlice::BF16(s)
    }
}
impl<'a> From<&'a mut [f32]> for AnySliceMut<'a> {
    fn from(s: &'a mut [f32]) -> Self {
        AnySliceMut::F32(s)
    }
}
impl<'a> From<&'a mut [f16]> for AnySliceMut<'a> {
    fn from(s: &'a mut [f16]) -> Self {
        AnySliceMut::F16(s)
    }
}
impl<'a> From<&'a mut [bf16]> for AnySliceMut<'a> {
    fn from(s: &'a mut [bf16]) -> Self {
        AnySliceMut::BF16(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The nearest f16 by search over the ordered finite patterns; ties to
    /// even; beyond 65504 by at least half an ulp (65520), infinity.
    fn f16_reference(x: f64) -> u16 {
        let sign = if x.is_sign_negative() { 0x8000 } else { 0 };
        let a = x.abs();
        if a >= 65520.0 {
            return sign | 0x7c00;
        }
        // The largest finite pattern whose value is ≤ a.
        let below = (0..0x7c00u16)
            .rev()
            .find(|&b| f16_bits_to_f64(b) <= a)
            .unwrap();
        let pick = if below == 0x7bff {
            below
        } else {
            let (lo, hi) = (f16_bits_to_f64(below), f16_bits_to_f64(below + 1));
            match (a - lo).partial_cmp(&(hi - a)).unwrap() {
                core::cmp::Ordering::Less => below,
                core::cmp::Ordering::Greater => below + 1,
                core::cmp::Ordering::Equal if below % 2 == 0 => below,
                core::cmp::Ordering::Equal => below + 1,
            }
        };
        sign | pick
    }

    #[test]
    fn f64_to_f16_rounds_once_to_nearest_even() {
        let mut cases = vec![
            0.0,
            -0.0,
            65504.0,
            65519.99,
            65520.0,
            1e9,
            -1e300,
            f64::INFINITY,
        ];
        // Every f16 value, the midpoints to its neighbours and points just beside them.
        for bits in (0..0x7c00u16).filter(|b| b % 7 == 0 || *b < 0x0410 || *b > 0x7bf0) {
            let v = f16_bits_to_f64(bits);
            let next = f16_bits_to_f64(bits + 1);
            let mid = (v + next) / 2.0;
            for x in [
                v,
                mid,
                mid * (1.0 + 1e-15),
                mid * (1.0 - 1e-15),
                next.min(65504.0),
            ] {
                cases.push(x);
                cases.push(-x);
            }
        }
        for x in cases {
            let (ours, want) = (f16_bits_from_f64(x), f16_reference(x));
            assert_eq!(ours, want, "{x:e}: {ours:#06x} vs {want:#06x}");
        }
        assert!(f16::from_bits(f16_bits_from_f64(f64::NAN)).is_nan());
    }

    #[test]
    fn exact_widening_to_f64_matches_half_for_every_pattern() {
        for bits in 0..=u16::MAX {
            let (h, b) = (f16::from_bits(bits), bf16::from_bits(bits));
            for (ours, theirs, name) in [
                (f16_bits_to_f64(bits), h.to_f64(), "f16"),
                (bf16_bits_to_f64(bits), b.to_f64(), "bf16"),
            ] {
                assert!(
                    ours.to_bits() == theirs.to_bits() || (ours.is_nan() && theirs.is_nan()),
                    "{name} {bits:#06x}: {ours:e} vs {theirs:e}"
                );
            }
        }
    }
}
