//! The vector exponential, and every constant it uses.
//!
//! ```text
//! e^x = 2^n · e^r        n = round(x · log2 e),  r = x − n · ln 2,  |r| ≤ ln2/2
//! n   : fma(x, LOG2E, MAGIC); the low mantissa bits of the sum hold n + 127,
//!       so shifting its bit pattern left by 23 builds 2^n with no float→int convert
//! r   : two FMAs against a two-constant split of ln 2 (LN2_HI + LN2_LO), so the
//!       product n · LN2_HI is exact inside the first FMA
//! e^r : 1 + r · q(r), q a degree-5 minimax polynomial, evaluated as
//!       fma(r · 2^n, q, 2^n) so the leading 1 is added last and exactly
//! ```
//!
//! Inputs below [`CUTOFF`] give exactly 0, so no subnormal is produced or summed.
//! NaN in gives NaN out (the flush is a select on `x < CUTOFF`, false for NaN).
//!
//! Provenance and accuracy: see the constant block below.

use pulp::Simd;

/// log2(e) rounded to f32.
pub const LOG2E: f32 = core::f32::consts::LOG2_E;
/// 1.5 · 2^23 + 127: adding it rounds to an integer and leaves n + 127 in the
/// low mantissa bits (valid while |n| < 2^22).
pub const MAGIC: f32 = f32::from_bits(0x4b40007f); // 0x1.8000FEp+23
/// ln 2 split in two: LN2_HI = f32(ln 2), LN2_LO = f32(ln 2 − LN2_HI).
pub const LN2_HI: f32 = core::f32::consts::LN_2;
/// See [`LN2_HI`].
pub const LN2_LO: f32 = (core::f64::consts::LN_2 - LN2_HI as f64) as f32;

/// q(r) = C1 + C2·r + … + C5·r⁴ so that e^r ≈ 1 + r·q(r) on [−ln2/2, ln2/2].
pub const C1: f32 = 0.999_999_94;
/// See [`C1`].
pub const C2: f32 = 0.499_995_74;
/// See [`C1`].
pub const C3: f32 = 0.166_665_52;
/// See [`C1`].
pub const C4: f32 = 0.041_944_39;
/// See [`C1`].
pub const C5: f32 = 0.008_301_11;

/// The smallest x whose e^x is a normal f32 (≥ 2^-126); below it exp gives 0.
pub const CUTOFF: f32 = -87.33654;

/// ln of the smallest normal f32.
pub const LN_MIN_POSITIVE: f32 = -87.33654;

/// 2^k for an integer-valued float k in [-126, 127], built from its bit pattern.
/// `k_plus_magic` is k + MAGIC (so its low bits hold k + 127).
#[inline(always)]
pub(crate) fn pow2_from_magic<S: Simd>(simd: S, k_plus_magic: S::f32s) -> S::f32s {
    let bits = simd.transmute_u32s_f32s(k_plus_magic);
    simd.transmute_f32s_u32s(simd.wrapping_dyn_shl_u32s(bits, simd.splat_u32s(23)))
}

/// The reduced form of e^x: n (an integer-valued float), 2^n built from bits
/// (valid for n in [-126, 127]), and r with e^x = 2^n · e^r.
#[inline(always)]
pub(crate) fn reduce<S: Simd>(simd: S, x: S::f32s) -> (S::f32s, S::f32s, S::f32s) {
    let magic = simd.splat_f32s(MAGIC);
    let n_magic = simd.mul_add_f32s(x, simd.splat_f32s(LOG2E), magic);
    let pow2n = pow2_from_magic(simd, n_magic);
    let n = simd.sub_f32s(n_magic, magic);
    let r = simd.mul_add_f32s(n, simd.splat_f32s(-LN2_HI), x);
    let r = simd.mul_add_f32s(n, simd.splat_f32s(-LN2_LO), r);
    (n, pow2n, r)
}

/// q(r), with e^r ≈ 1 + r·q(r).
#[inline(always)]
pub(crate) fn poly<S: Simd>(simd: S, r: S::f32s) -> S::f32s {
    let q = simd.mul_add_f32s(simd.splat_f32s(C5), r, simd.splat_f32s(C4));
    let q = simd.mul_add_f32s(q, r, simd.splat_f32s(C3));
    let q = simd.mul_add_f32s(q, r, simd.splat_f32s(C2));
    simd.mul_add_f32s(q, r, simd.splat_f32s(C1))
}

/// e^x for x ≤ 0, with 0 for every x below `cutoff` (which must be ≥ [`CUTOFF`]).
/// Returns NaN for NaN.
#[inline(always)]
pub(crate) fn exp_nonpositive<S: Simd>(simd: S, x: S::f32s, cutoff: S::f32s) -> S::f32s {
    let (_, pow2n, r) = reduce(simd, x);
    let q = poly(simd, r);
    let e = simd.mul_add_f32s(simd.mul_f32s(r, pow2n), q, pow2n);
    let underflow = simd.less_than_f32s(x, cutoff);
    simd.select_f32s(underflow, simd.splat_f32s(0.0), e)
}

/// e^r for a reduced argument: 1 + r·q(r), in about [0.7, 1.42].
#[inline(always)]
pub(crate) fn exp_reduced<S: Simd>(simd: S, r: S::f32s) -> S::f32s {
    simd.mul_add_f32s(r, poly(simd, r), simd.splat_f32s(1.0))
}

/// Scalar e^x (x ≤ 0) through the same code, for callers outside a vector loop.
pub fn exp_scalar(x: f32) -> f32 {
    exp_nonpositive(pulp::Scalar, x, CUTOFF)
}
