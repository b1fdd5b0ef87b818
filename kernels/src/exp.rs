//! The vector exponential, and every constant it uses.
//!
//! ```text
//! e^x = 2^n · e^r        n = round(x · log2 e),  r = x − n · ln 2,  |r| ≤ ln2/2
//! n   : fma(x, LOG2E, MAGIC); the low mantissa bits of the sum hold n + 127,
//!       so shifting its bit pattern left by 23 builds 2^n with no float→int convert
//! r   : one FMA, fma(n, −LN2, x): the product n · LN2 is exact inside it and the
//!       sum is rounded once
//! e^r : 1 + r · q(r), q a degree-5 minimax polynomial, evaluated as
//!       fma(r · 2^n, q, 2^n) so the leading 1 is added last and exactly
//! ```
//!
//! Inputs below [`CUTOFF`] give exactly 0, so no subnormal is produced or summed.
//! NaN in gives NaN out (the flush is a select on `x < CUTOFF`, false for NaN).
//!
//! Provenance. C1…C5 were fitted for this crate: a Remez fit (60-digit mpmath) of
//! e^r ≈ 1 + r·q(r) on [−ln2/2, ln2/2] minimising the error in f32 ULPs of e^r
//! (not the relative error: an ULP is relative to the binade, and the
//! relative-error optimum spends 1.29 ULP where e^r ≈ 0.85), rounded to f32 one
//! coefficient at a time with the rest re-fitted after each rounding, then a
//! search over neighbouring f32 values scored on the FMA evaluation below.
//!
//! The reduction uses one constant, LN2 = f32(ln 2), which exceeds ln 2 by
//! δ = 1.9·10⁻⁹: r comes out n·δ too high, and e^x too high by a factor
//! 1 + |n|·δ, about 0.032·|n| ULP (4 ULP at n = −126). A second constant
//! (ln 2 − LN2, one more FMA on the exp's dependent chain) would remove that
//! term; on AVX2 it costs 10–18% of the exp-and-sum pass (one of nine FMA-unit
//! operations, four cycles of latency, and a register the unrolled loop
//! spills for), and the term stays inside the softmax bound's c·|z|·2⁻²⁴,
//! which already covers the rounding of z itself: 0.032·|n| ULP is at most
//! 0.064·|z|·2⁻²⁴ relative.
//!
//! Measured exhaustively (every f32, reference: f64 exp rounded to f32):
//!
//! | range | max error | correctly rounded |
//! |---|---|---|
//! | e^x, all 1,118,743,632 x in [CUTOFF, −0] | 4.658 ULP (x = −86.94594), never more than 5 steps from the correctly rounded value | 95.03 % |
//! | … x in [−8, 0) | 1.969 ULP | |
//! | … x in [−32, −16) | 2.769 ULP | |
//! | … x in [−64, −48) | 3.850 ULP | |
//! | e^r = fma(r, q, 1), all \|r\| ≤ ln2/2 | 1.735 ULP (r = 0.34653553) | 98.38 % |
//!
//! The error grows as 1.9 + 0.032·|x| ULP; with two constants it was 1.895 ULP
//! over the whole range, 95.27 % correctly rounded. (XNNPACK's rr2-p5
//! coefficients, measured the same way on e^r: 1.878 ULP. A degree-6 fit reaches
//! 0.891 ULP on e^r for one more FMA; degree 5 keeps the softmax bounds with
//! room to spare.)

use pulp::Simd;

/// log2(e) rounded to f32.
pub const LOG2E: f32 = core::f32::consts::LOG2_E;
/// 1.5 · 2^23 + 127: adding it rounds to an integer and leaves n + 127 in the
/// low mantissa bits (valid while |n| < 2^22).
pub const MAGIC: f32 = f32::from_bits(0x4b40007f); // 0x1.8000FEp+23
/// ln 2 rounded to f32 (1.9·10⁻⁹ above ln 2).
pub const LN2: f32 = core::f32::consts::LN_2;

/// q(r) = C1 + C2·r + … + C5·r⁴ so that e^r ≈ 1 + r·q(r) on [−ln2/2, ln2/2].
pub const C1: f32 = f32::from_bits(0x3f7f_fff7); // 0x1.FFFFEEp-1 ≈ 0.99999946
/// See [`C1`].
pub const C2: f32 = f32::from_bits(0x3eff_fee1); // 0x1.FFFDC2p-2 ≈ 0.49999145
/// See [`C1`].
pub const C3: f32 = f32::from_bits(0x3e2a_aea2); // 0x1.555D44p-3 ≈ 0.1666818
/// See [`C1`].
pub const C4: f32 = f32::from_bits(0x3d2b_9dc6); // 0x1.573B8Cp-5 ≈ 0.04189851
/// See [`C1`].
pub const C5: f32 = f32::from_bits(0x3c07_5d44); // 0x1.0EBA88p-7 ≈ 0.008261982

/// The smallest x whose e^x is a normal f32 (≥ 2^-126); below it exp gives 0.
pub const CUTOFF: f32 = f32::from_bits(0xc2ae_ac4f); // -0x1.5D589Ep+6 ≈ -87.33654022

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
    let r = simd.mul_add_f32s(n, simd.splat_f32s(-LN2), x);
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
    let e = exp_in_range(simd, x);
    let underflow = simd.less_than_f32s(x, cutoff);
    simd.select_f32s(underflow, simd.splat_f32s(0.0), e)
}

/// e^x for x in [[`CUTOFF`], 0] (and NaN for NaN), with no underflow test: the
/// caller knows the whole row is in range. Bit-identical to [`exp_nonpositive`] there.
#[inline(always)]
pub(crate) fn exp_in_range<S: Simd>(simd: S, x: S::f32s) -> S::f32s {
    let (_, pow2n, r) = reduce(simd, x);
    let q = poly(simd, r);
    simd.mul_add_f32s(simd.mul_f32s(r, pow2n), q, pow2n)
}

/// [`exp_nonpositive`] when `FLUSH`; otherwise [`exp_in_range`], for a row the
/// caller has shown holds no x below `cutoff` (the two agree bit for bit there).
#[inline(always)]
pub(crate) fn exp_flushed_below<S: Simd, const FLUSH: bool>(
    simd: S,
    x: S::f32s,
    cutoff: f32,
) -> S::f32s {
    if FLUSH {
        exp_nonpositive(simd, x, simd.splat_f32s(cutoff))
    } else {
        exp_in_range(simd, x)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pulp::{Scalar, Scalar512b};

    /// Distance in f32 steps between two positive finite floats.
    fn steps(a: f32, b: f32) -> u32 {
        a.to_bits().abs_diff(b.to_bits())
    }

    /// Every 61st f32 of [CUTOFF, 0] through the scalar token and the emulated
    /// 16-lane token: never more than 2 steps from the correctly rounded e^x
    /// above −8, nor more than 5 anywhere (the one-constant reduction's error
    /// grows with |x|), never subnormal (the exhaustive measurement is in the
    /// module docs).
    #[test]
    fn exp_within_a_few_steps_of_correctly_rounded() {
        let cutoff = Scalar512b.splat_f32s(CUTOFF);
        let (lo, hi) = (0x8000_0000u32, CUTOFF.to_bits());
        let xs: Vec<f32> = (lo..=hi).step_by(61).map(f32::from_bits).collect();
        let (mut worst, mut worst_near_0) = (0, 0);
        for chunk in xs.chunks_exact(16) {
            let v: pulp::f32x16 = pulp::cast(<[f32; 16]>::try_from(chunk).unwrap());
            let wide: [f32; 16] = pulp::cast(exp_nonpositive(Scalar512b, v, cutoff));
            for (&x, &e) in chunk.iter().zip(&wide) {
                let reference = (x as f64).exp() as f32;
                assert_eq!(
                    e.to_bits(),
                    exp_nonpositive(Scalar, x, CUTOFF).to_bits(),
                    "x = {x}"
                );
                assert!(e >= f32::MIN_POSITIVE, "e^{x} = {e} is subnormal or zero");
                worst = worst.max(steps(e, reference));
                if x >= -8.0 {
                    worst_near_0 = worst_near_0.max(steps(e, reference));
                }
            }
        }
        assert!(
            worst_near_0 <= 2 && worst <= 5,
            "e^x is {worst_near_0} steps from the correctly rounded value above -8, {worst} anywhere"
        );
    }

    #[test]
    fn exp_flushes_below_cutoff_and_keeps_nan() {
        let below = f32::from_bits(CUTOFF.to_bits() + 1);
        for x in [below, -100.0, -1e30, f32::NEG_INFINITY] {
            assert_eq!(exp_nonpositive(Scalar, x, CUTOFF).to_bits(), 0, "x = {x}");
        }
        assert!(exp_nonpositive(Scalar, f32::NAN, CUTOFF).is_nan());
        assert_eq!(exp_nonpositive(Scalar, 0.0, CUTOFF), 1.0);
    }
}
