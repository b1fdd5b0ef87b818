//! The one place an ISA becomes a kernel token and a job enters its
//! target-feature region. Called once per call or per rayon chunk, never per row.

use crate::Isa;
use softmax_kernels::arch::Portable;
use softmax_kernels::Job;

/// Runs `job` with the token for `isa`, which the caller has checked is available.
#[inline]
pub(crate) fn run<J: Job>(isa: Isa, job: J) -> J::Output {
    match isa {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => {
            if let Some(arch) = softmax_kernels::arch::Avx512::try_new() {
                // SAFETY: the token proves the CPU has the region's features.
                return unsafe { regions::avx512(job, arch) };
            }
        }
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => {
            if let Some(arch) = softmax_kernels::arch::Avx2::try_new() {
                // SAFETY: the token proves the CPU has the region's features.
                return unsafe { regions::avx2(job, arch) };
            }
        }
        #[cfg(target_arch = "aarch64")]
        Isa::Neon => {
            if let Some(arch) = softmax_kernels::arch::Neon::try_new() {
                // SAFETY: the token proves the CPU has the region's features.
                return unsafe { regions::neon(job, arch) };
            }
        }
        _ => {}
    }
    debug_assert_eq!(isa, Isa::Scalar, "{isa} was validated as available");
    job.run(Portable(pulp::Scalar::new()))
}

/// The target-feature regions: each runs a whole job with the ISA's features
/// enabled. The loops themselves run in the token's per-pass regions
/// (`Arch::region`); the row logic around them runs here. The feature lists
/// are pulp's for the token, plus F16C (part of x86-64-v3, not of pulp's `V3`).
mod regions {
    use super::*;

    #[cfg(target_arch = "x86_64")]
    #[inline(never)]
    #[target_feature(
        enable = "sse,sse2,fxsr,sse3,ssse3,sse4.1,sse4.2,popcnt,avx,avx2,bmi1,bmi2,fma,lzcnt,f16c"
    )]
    pub(super) unsafe fn avx2<J: Job>(job: J, arch: softmax_kernels::arch::Avx2) -> J::Output {
        job.run(arch)
    }

    #[cfg(target_arch = "x86_64")]
    #[inline(never)]
    #[target_feature(
        enable = "sse,sse2,fxsr,sse3,ssse3,sse4.1,sse4.2,popcnt,avx,avx2,bmi1,bmi2,fma,lzcnt,f16c,avx512f,avx512bw,avx512cd,avx512dq,avx512vl"
    )]
    pub(super) unsafe fn avx512<J: Job>(job: J, arch: softmax_kernels::arch::Avx512) -> J::Output {
        job.run(arch)
    }

    #[cfg(target_arch = "aarch64")]
    #[inline(never)]
    #[target_feature(enable = "neon")]
    pub(super) unsafe fn neon<J: Job>(job: J, arch: softmax_kernels::arch::Neon) -> J::Output {
        job.run(arch)
    }
}
