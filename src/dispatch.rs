//! The one place an ISA becomes a pulp token and a kernel job enters its
//! target-feature region. Called once per call or per rayon chunk, never per row.

use crate::Isa;
use pulp::{Simd, WithSimd};

/// Runs `job` with the token for `isa`, which the caller has checked is available.
#[inline]
pub(crate) fn run<Job: WithSimd>(isa: Isa, job: Job) -> Job::Output {
    match isa {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => {
            if let Some(simd) = pulp::x86::V4::try_new() {
                return Simd::vectorize(simd, job);
            }
        }
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => {
            if let Some(simd) = pulp::x86::V3::try_new() {
                return Simd::vectorize(simd, job);
            }
        }
        #[cfg(target_arch = "aarch64")]
        Isa::Neon => {
            if let Some(simd) = pulp::aarch64::Neon::try_new() {
                return Simd::vectorize(simd, job);
            }
        }
        _ => {}
    }
    debug_assert_eq!(isa, Isa::Scalar, "{isa} was validated as available");
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("fma") {
        // SAFETY: the CPU has FMA (checked just above).
        return unsafe { scalar_with_fma(job) };
    }
    Simd::vectorize(pulp::Scalar::new(), job)
}

/// The scalar token, compiled where `f32::mul_add` is one instruction instead of
/// a call into libm's software fma: the same arithmetic (a fused multiply-add is
/// exactly rounded either way), several times faster.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "fma")]
unsafe fn scalar_with_fma<Job: WithSimd>(job: Job) -> Job::Output {
    // `with_simd` directly: pulp's scalar `vectorize` is an out-of-line function
    // compiled without FMA, and would hide the feature from the kernel.
    job.with_simd(pulp::Scalar::new())
}
