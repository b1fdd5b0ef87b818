//! The ISA tokens the kernels run with: a pulp [`Simd`] token plus the
//! half-precision conversions pulp does not offer. This is the only per-ISA
//! code of the kernels, and the only module with `unsafe`.
//!
//! ```text
//! f16 → f32    exact: F16C vcvtph2ps (AVX2), vcvtph2ps zmm (AVX-512), fcvtl (NEON)
//! f32 → f16    round to nearest even, subnormals kept, NaN stays NaN:
//!              F16C vcvtps2ph imm 0, vcvtps2ph zmm, fcvtn (NEON, FPCR's default RNE)
//! bf16 → f32   exact: zero-extend to 32 bits, shift left by 16
//! f32 → bf16   round to nearest even: (bits + 0x7fff + bit16) >> 16; a NaN keeps its
//!              top payload bits and is made quiet (| 0x40) instead of rounding into inf
//! ```
//! The portable tokens (pulp's scalar and emulated wide scalar ones) convert
//! lane by lane with the `half` crate, which rounds the same way, so every ISA
//! writes the same bits.

#![allow(unsafe_code)]

use half::{bf16, f16};
use pulp::Simd;

/// f32 vectors of an [`Arch`].
pub type F32s<A> = <<A as Arch>::Simd as Simd>::f32s;

/// Work that runs inside a token's target-feature region.
pub trait Body {
    type Output;
    fn call(self) -> Self::Output;
}

/// A SIMD token with f16/bf16 conversions. Building one proves the CPU has
/// every instruction it uses.
pub trait Arch: Copy + Send + Sync + 'static {
    type Simd: Simd;
    /// As many 16-bit values as an f32 vector has lanes (`[u16; LANES]`).
    type Halfs: pulp::bytemuck::Pod + Send + Sync;
    fn simd(self) -> Self::Simd;
    /// Whether a job with this token runs inside its region
    /// ([`crate::run_in_region`]: the hardware tokens), so that a pass may be
    /// compiled into the job's own code rather than called; the portable
    /// tokens' jobs run outside one, and their passes take [`Arch::region`].
    const JOBS_IN_REGION: bool;
    /// Runs `body` in a function compiled with this token's target features
    /// and kept out of line: one per pass body, shared by every caller, so each
    /// loop is compiled once however many places run it.
    fn region<B: Body>(self, body: B) -> B::Output;
    /// Asks the memory system for the cache line holding `p`, which a pass
    /// will read soon. A hint: it reads nothing into the program and never
    /// faults, whatever the address.
    fn prefetch(self, p: *const f32);
    fn f16_to_f32(self, h: Self::Halfs) -> F32s<Self>;
    fn f32_to_f16(self, v: F32s<Self>) -> Self::Halfs;
    fn bf16_to_f32(self, h: Self::Halfs) -> F32s<Self>;
    fn f32_to_bf16(self, v: F32s<Self>) -> Self::Halfs;
}

/// f32 → bf16 bits, rounding to nearest even; NaN stays NaN (quiet).
#[inline(always)]
pub fn bf16_bits_from_f32(x: f32) -> u16 {
    bf16::from_f32(x).to_bits()
}

/// A pulp token that converts lane by lane: `pulp::Scalar` (the reference
/// path) and the emulated wide tokens `Scalar128b`/`256b`/`512b`.
pub trait PortableToken: Simd + Send + Sync + 'static {
    type Halfs: pulp::bytemuck::Pod + Send + Sync;
    /// Runs `body` out of line.
    fn region<B: Body>(body: B) -> B::Output;
}

/// The portable tokens: `pulp::Scalar`, the scalar path every user can ask
/// for, and the emulated wide tokens the tests run. Each pass is compiled
/// twice, with FMA for the CPUs that have it (`mul_add` is one instruction)
/// and for the baseline (`mul_add` is libm's `fma`, a call per element, ten
/// times slower here); both round exactly, so both give the same bits.
macro_rules! portable_token {
    ($token:ty, $lanes:literal) => {
        impl PortableToken for $token {
            type Halfs = [u16; $lanes];
            #[inline(always)]
            fn region<B: Body>(body: B) -> B::Output {
                fma_region(body)
            }
        }
    };
}
portable_token!(pulp::Scalar, 1);
portable_token!(pulp::Scalar128b, 4);
portable_token!(pulp::Scalar256b, 8);
portable_token!(pulp::Scalar512b, 16);

/// A portable token with lane-by-lane conversions through `half`.
#[derive(Clone, Copy, Debug)]
pub struct Portable<S>(pub S);

/// At most 16 lanes (512 bits of f32).
const MAX_LANES: usize = 16;

impl<S: PortableToken + Copy> Portable<S> {
    #[inline(always)]
    fn widen(self, h: S::Halfs, f: fn(u16) -> f32) -> S::f32s {
        let bits: &[u16] = pulp::bytemuck::cast_slice(core::slice::from_ref(&h));
        let mut lanes = [0.0f32; MAX_LANES];
        for (l, &b) in lanes.iter_mut().zip(bits) {
            *l = f(b);
        }
        self.0.partial_load_f32s(&lanes[..bits.len()])
    }
    #[inline(always)]
    fn narrow(self, v: S::f32s, f: fn(f32) -> u16) -> S::Halfs {
        let mut h = <S::Halfs as pulp::bytemuck::Zeroable>::zeroed();
        let bits: &mut [u16] = pulp::bytemuck::cast_slice_mut(core::slice::from_mut(&mut h));
        let mut lanes = [0.0f32; MAX_LANES];
        self.0.partial_store_f32s(&mut lanes[..bits.len()], v);
        for (b, &l) in bits.iter_mut().zip(&lanes) {
            *b = f(l);
        }
        h
    }
}

impl<S: PortableToken + Copy> Arch for Portable<S> {
    type Simd = S;
    type Halfs = S::Halfs;
    const JOBS_IN_REGION: bool = false;
    #[inline(always)]
    fn simd(self) -> S {
        self.0
    }
    #[inline(always)]
    fn region<B: Body>(self, body: B) -> B::Output {
        S::region(body)
    }
    #[inline(always)]
    fn prefetch(self, _: *const f32) {}
    #[inline(always)]
    fn f16_to_f32(self, h: S::Halfs) -> S::f32s {
        self.widen(h, |b| f16::from_bits(b).to_f32())
    }
    #[inline(always)]
    fn f32_to_f16(self, v: S::f32s) -> S::Halfs {
        self.narrow(v, |l| f16::from_f32(l).to_bits())
    }
    #[inline(always)]
    fn bf16_to_f32(self, h: S::Halfs) -> S::f32s {
        self.widen(h, |b| bf16::from_bits(b).to_f32())
    }
    #[inline(always)]
    fn f32_to_bf16(self, v: S::f32s) -> S::Halfs {
        self.narrow(v, bf16_bits_from_f32)
    }
}

/// An out-of-line region with FMA where the CPU has it.
#[inline(always)]
fn fma_region<B: Body>(body: B) -> B::Output {
    #[inline(never)]
    fn plain<B: Body>(body: B) -> B::Output {
        body.call()
    }
    #[cfg(target_arch = "x86_64")]
    {
        #[inline(never)]
        #[target_feature(enable = "fma")]
        fn with_fma<B: Body>(body: B) -> B::Output {
            body.call()
        }
        if std::arch::is_x86_feature_detected!("fma") {
            // SAFETY: the CPU has FMA (checked just above).
            return unsafe { with_fma(body) };
        }
    }
    plain(body)
}

/// A token type, its detection and its region, from one feature list: the
/// same literals are checked at run time by `try_new` and enabled on the
/// region, so building the token checks every feature its region enables.
/// `$simd` is the pulp token (whose own check is a subset of the list).
macro_rules! token {
    ($(#[$doc:meta])* $name:ident($simd:ty), $detect:ident, [$($feature:tt),+ $(,)?]) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug)]
        pub struct $name {
            simd: $simd,
        }

        impl $name {
            /// The token, if this CPU has every feature of its region:
            /// detected on the first call, then one load (a call's dispatch
            /// asks every time).
            #[inline]
            pub fn try_new() -> Option<Self> {
                static FOUND: std::sync::OnceLock<Option<$name>> = std::sync::OnceLock::new();
                *FOUND.get_or_init(|| {
                    if !($(std::arch::$detect!($feature))&&+) {
                        return None;
                    }
                    <$simd>::try_new().map(|simd| Self { simd })
                })
            }

            #[inline(always)]
            fn enter<B: super::Body>(self, body: B) -> B::Output {
                #[inline(never)]
                $(#[target_feature(enable = $feature)])+
                fn imp<B: super::Body>(body: B) -> B::Output {
                    body.call()
                }
                // SAFETY: `self` exists, so `try_new` found every feature
                // enabled on `imp` (the same list).
                unsafe { imp(body) }
            }
        }
    };
}

/// The region of a token built by [`token!`].
macro_rules! region {
    () => {
        const JOBS_IN_REGION: bool = true;
        #[inline(always)]
        fn region<B: super::Body>(self, body: B) -> B::Output {
            self.enter(body)
        }
    };
}

#[cfg(target_arch = "x86_64")]
pub use x86::{Avx2, Avx512};

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::Arch;
    use core::arch::x86_64::*;
    use core::mem::transmute;
    use pulp::x86::{V3, V4};

    token!(
        /// x86-64-v3: pulp's `V3` (AVX2, FMA, BMI, ...) and F16C, which `V3` does not check.
        Avx2(V3),
        is_x86_feature_detected,
        [
            "sse", "sse2", "fxsr", "sse3", "ssse3", "sse4.1", "sse4.2", "popcnt", "avx", "avx2",
            "bmi1", "bmi2", "fma", "lzcnt", "f16c",
        ]
    );

    token!(
        /// x86-64-v4: pulp's `V4` (V3's features and AVX-512 F/BW/CD/DQ/VL) and
        /// F16C, which `V4` does not check; its f16 conversions are AVX-512F.
        Avx512(V4),
        is_x86_feature_detected,
        [
            "sse", "sse2", "fxsr", "sse3", "ssse3", "sse4.1", "sse4.2", "popcnt", "avx", "avx2",
            "bmi1", "bmi2", "fma", "lzcnt", "f16c", "avx512f", "avx512bw", "avx512cd",
            "avx512dq", "avx512vl",
        ]
    );

    /// RNE on 32-bit lanes holding f32 bits, then the high half: (b + 0x7fff + bit16) >> 16.
    macro_rules! bf16_round {
        ($bits:expr, $add:ident, $and:ident, $srli:ident, $set1:ident) => {{
            let bits = $bits;
            let odd = $and($srli::<16>(bits), $set1(1));
            $srli::<16>($add($add(bits, $set1(0x7fff)), odd))
        }};
    }

    impl Arch for Avx2 {
        type Simd = V3;
        type Halfs = [u16; 8];
        #[inline(always)]
        fn simd(self) -> V3 {
            self.simd
        }
        region!();
        #[inline(always)]
        fn prefetch(self, p: *const f32) {
            // SAFETY: SSE (prefetcht0) is part of every x86-64 CPU, and a
            // prefetch neither reads into the program nor faults on any address.
            unsafe { _mm_prefetch::<_MM_HINT_T0>(p.cast()) }
        }
        #[inline(always)]
        fn f16_to_f32(self, h: [u16; 8]) -> pulp::f32x8 {
            // SAFETY: building `Avx2` checked F16C; the transmutes are between
            // plain vectors of equal size.
            unsafe { transmute(_mm256_cvtph_ps(transmute::<[u16; 8], __m128i>(h))) }
        }
        #[inline(always)]
        fn f32_to_f16(self, v: pulp::f32x8) -> [u16; 8] {
            // SAFETY: as above; immediate 0 rounds to nearest even.
            unsafe {
                transmute(_mm256_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(transmute::<
                    pulp::f32x8,
                    __m256,
                >(
                    v
                )))
            }
        }
        #[inline(always)]
        fn bf16_to_f32(self, h: [u16; 8]) -> pulp::f32x8 {
            // SAFETY: `V3` proves AVX2; plain transmutes of equal size.
            unsafe {
                let wide = _mm256_cvtepu16_epi32(transmute::<[u16; 8], __m128i>(h));
                transmute(_mm256_slli_epi32::<16>(wide))
            }
        }
        #[inline(always)]
        fn f32_to_bf16(self, v: pulp::f32x8) -> [u16; 8] {
            // SAFETY: `V3` proves AVX2; plain transmutes of equal size.
            unsafe {
                let v: __m256 = transmute(v);
                let bits = _mm256_castps_si256(v);
                let rounded = bf16_round!(
                    bits,
                    _mm256_add_epi32,
                    _mm256_and_si256,
                    _mm256_srli_epi32,
                    _mm256_set1_epi32
                );
                let quiet = _mm256_or_si256(_mm256_srli_epi32::<16>(bits), _mm256_set1_epi32(0x40));
                let nan = _mm256_castps_si256(_mm256_cmp_ps::<_CMP_UNORD_Q>(v, v));
                let r = _mm256_blendv_epi8(rounded, quiet, nan);
                // Per 128-bit half: [r0..r3, r0..r3 | r4..r7, r4..r7]; keep quads 0 and 2.
                let packed = _mm256_packus_epi32(r, r);
                transmute(_mm256_castsi256_si128(_mm256_permute4x64_epi64::<0b1000>(
                    packed,
                )))
            }
        }
    }

    impl Arch for Avx512 {
        type Simd = V4;
        type Halfs = [u16; 16];
        #[inline(always)]
        fn simd(self) -> V4 {
            self.simd
        }
        region!();
        #[inline(always)]
        fn prefetch(self, p: *const f32) {
            // SAFETY: SSE (prefetcht0) is part of every x86-64 CPU, and a
            // prefetch neither reads into the program nor faults on any address.
            unsafe { _mm_prefetch::<_MM_HINT_T0>(p.cast()) }
        }
        #[inline(always)]
        fn f16_to_f32(self, h: [u16; 16]) -> pulp::f32x16 {
            // SAFETY: `V4` proves AVX-512F; plain transmutes of equal size.
            unsafe { transmute(_mm512_cvtph_ps(transmute::<[u16; 16], __m256i>(h))) }
        }
        #[inline(always)]
        fn f32_to_f16(self, v: pulp::f32x16) -> [u16; 16] {
            // SAFETY: as above; round to nearest even.
            unsafe {
                transmute(_mm512_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(transmute::<
                    pulp::f32x16,
                    __m512,
                >(
                    v
                )))
            }
        }
        #[inline(always)]
        fn bf16_to_f32(self, h: [u16; 16]) -> pulp::f32x16 {
            // SAFETY: `V4` proves AVX-512F; plain transmutes of equal size.
            unsafe {
                let wide = _mm512_cvtepu16_epi32(transmute::<[u16; 16], __m256i>(h));
                transmute(_mm512_slli_epi32::<16>(wide))
            }
        }
        #[inline(always)]
        fn f32_to_bf16(self, v: pulp::f32x16) -> [u16; 16] {
            // SAFETY: `V4` proves AVX-512F; plain transmutes of equal size.
            unsafe {
                let v: __m512 = transmute(v);
                let bits = _mm512_castps_si512(v);
                let rounded = bf16_round!(
                    bits,
                    _mm512_add_epi32,
                    _mm512_and_si512,
                    _mm512_srli_epi32,
                    _mm512_set1_epi32
                );
                let quiet = _mm512_or_si512(_mm512_srli_epi32::<16>(bits), _mm512_set1_epi32(0x40));
                let nan = _mm512_cmp_ps_mask::<_CMP_UNORD_Q>(v, v);
                let r = _mm512_mask_blend_epi32(nan, rounded, quiet);
                transmute(_mm512_cvtepi32_epi16(r))
            }
        }
    }
}

#[cfg(target_arch = "aarch64")]
pub use arm::Neon;

#[cfg(target_arch = "aarch64")]
mod arm {
    use super::Arch;
    use core::arch::aarch64::*;
    use core::arch::asm;
    use core::mem::transmute;

    token!(
        /// AArch64 Advanced SIMD (pulp's `Neon`). The f16 conversions are base
        /// ARMv8 instructions, written in `asm!` because their intrinsics take
        /// Rust's still-unstable f16 vector types.
        Neon(pulp::aarch64::Neon),
        is_aarch64_feature_detected,
        ["neon"]
    );

    impl Arch for Neon {
        type Simd = pulp::aarch64::Neon;
        type Halfs = [u16; 4];
        #[inline(always)]
        fn simd(self) -> pulp::aarch64::Neon {
            self.simd
        }
        region!();
        #[inline(always)]
        fn prefetch(self, p: *const f32) {
            // SAFETY: prfm is a hint of base ARMv8: it reads nothing into the
            // program, never faults, and touches only the named register.
            unsafe {
                asm!("prfm pldl1keep, [{p}]", p = in(reg) p, options(nostack, preserves_flags))
            }
        }
        #[inline(always)]
        fn f16_to_f32(self, h: [u16; 4]) -> pulp::f32x4 {
            let out: float32x4_t;
            // SAFETY: fcvtl is base ARMv8 (FP and Advanced SIMD); it touches
            // only the named registers.
            unsafe {
                asm!(
                    "fcvtl {out:v}.4s, {inp:v}.4h",
                    out = lateout(vreg) out,
                    inp = in(vreg) u64::from_ne_bytes(transmute::<[u16; 4], [u8; 8]>(h)),
                    options(pure, nomem, nostack, preserves_flags)
                );
                transmute(out)
            }
        }
        #[inline(always)]
        fn f32_to_f16(self, v: pulp::f32x4) -> [u16; 4] {
            let out: u64;
            // SAFETY: fcvtn is base ARMv8; it rounds by FPCR, whose default
            // (and Rust's assumption) is round to nearest even.
            unsafe {
                asm!(
                    "fcvtn {out:v}.4h, {inp:v}.4s",
                    out = lateout(vreg) out,
                    inp = in(vreg) transmute::<pulp::f32x4, float32x4_t>(v),
                    options(pure, nomem, nostack, preserves_flags)
                );
                transmute(out.to_ne_bytes())
            }
        }
        #[inline(always)]
        fn bf16_to_f32(self, h: [u16; 4]) -> pulp::f32x4 {
            // SAFETY: `Neon` proves Advanced SIMD; plain transmutes of equal size.
            unsafe { transmute(vshll_n_u16::<16>(transmute::<[u16; 4], uint16x4_t>(h))) }
        }
        #[inline(always)]
        fn f32_to_bf16(self, v: pulp::f32x4) -> [u16; 4] {
            // SAFETY: `Neon` proves Advanced SIMD; plain transmutes of equal size.
            unsafe {
                let f: float32x4_t = transmute(v);
                let bits = vreinterpretq_u32_f32(f);
                let odd = vandq_u32(vshrq_n_u32::<16>(bits), vdupq_n_u32(1));
                let rounded = vaddq_u32(vaddq_u32(bits, vdupq_n_u32(0x7fff)), odd);
                let quiet = vorrq_u32(bits, vdupq_n_u32(0x0040_0000));
                let is_num = vceqq_f32(f, f);
                transmute(vshrn_n_u32::<16>(vbslq_u32(is_num, rounded, quiet)))
            }
        }
    }
}
