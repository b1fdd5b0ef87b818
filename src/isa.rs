//! Instruction sets: detected once, and each one usable by name.

use std::fmt;
use std::sync::OnceLock;

/// An instruction set the kernels are compiled for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Isa {
    /// Portable scalar code: the reference every SIMD path is tested against.
    Scalar,
    /// x86-64-v3: AVX2 + FMA + F16C (8 f32 lanes).
    Avx2,
    /// x86-64-v4: AVX-512 F/BW/CD/DQ/VL (16 f32 lanes).
    Avx512,
    /// AArch64 Advanced SIMD (4 f32 lanes).
    Neon,
}

impl Isa {
    /// Every ISA the crate knows, whether or not this CPU has it.
    pub const ALL: [Isa; 4] = [Isa::Scalar, Isa::Avx2, Isa::Avx512, Isa::Neon];

    /// The best ISA this CPU has (detected once, then cached).
    pub fn detect() -> Isa {
        static BEST: OnceLock<Isa> = OnceLock::new();
        *BEST.get_or_init(|| {
            [Isa::Avx512, Isa::Avx2, Isa::Neon]
                .into_iter()
                .find(|isa| isa.is_available())
                .unwrap_or(Isa::Scalar)
        })
    }

    /// Every ISA usable on this CPU, Scalar first.
    pub fn available() -> Vec<Isa> {
        Isa::ALL.into_iter().filter(|i| i.is_available()).collect()
    }

    /// Whether this CPU (and this build's target) has the ISA.
    pub fn is_available(self) -> bool {
        match self {
            Isa::Scalar => true,
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => softmax_kernels::arch::Avx2::try_new().is_some(),
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => softmax_kernels::arch::Avx512::try_new().is_some(),
            #[cfg(target_arch = "aarch64")]
            Isa::Neon => softmax_kernels::arch::Neon::try_new().is_some(),
            #[allow(unreachable_patterns)]
            _ => false,
        }
    }

    /// Lower-case name: "scalar", "avx2", "avx512", "neon".
    pub fn name(self) -> &'static str {
        match self {
            Isa::Scalar => "scalar",
            Isa::Avx2 => "avx2",
            Isa::Avx512 => "avx512",
            Isa::Neon => "neon",
        }
    }

    /// f32 lanes per vector.
    pub fn lanes(self) -> usize {
        match self {
            Isa::Scalar => 1,
            Isa::Avx2 => 8,
            Isa::Avx512 => 16,
            Isa::Neon => 4,
        }
    }
}

impl fmt::Display for Isa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}
