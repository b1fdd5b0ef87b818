//! The one place an ISA becomes a kernel token and a job enters its
//! target-feature region. Called once per call or per rayon chunk, never per row.

use crate::Isa;
use softmax_kernels::arch::Portable;
use softmax_kernels::{run_in_region, Job};

/// Runs `job` with the token for `isa`, which the caller has checked is available.
/// Building a token checks every feature its region enables (`softmax_kernels::arch`).
/// Not `#[inline]`: one copy per job type, not one per codegen unit that calls it.
pub(crate) fn run<J: Job>(isa: Isa, job: J, scratch: &mut [f32]) -> J::Output {
    match isa {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => {
            if let Some(arch) = softmax_kernels::arch::Avx512::try_new() {
                return run_in_region(arch, job, scratch);
            }
        }
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => {
            if let Some(arch) = softmax_kernels::arch::Avx2::try_new() {
                return run_in_region(arch, job, scratch);
            }
        }
        #[cfg(target_arch = "aarch64")]
        Isa::Neon => {
            if let Some(arch) = softmax_kernels::arch::Neon::try_new() {
                return run_in_region(arch, job, scratch);
            }
        }
        _ => {}
    }
    debug_assert_eq!(isa, Isa::Scalar, "{isa} was validated as available");
    job.run(Portable(pulp::Scalar::new()), scratch)
}
