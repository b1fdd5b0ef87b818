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
    Simd::vectorize(pulp::Scalar::new(), job)
}
