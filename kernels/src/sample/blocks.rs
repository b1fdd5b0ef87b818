//! The sampler's two SIMD passes over a row, one value per block of
//! [`BLOCK`] elements: the maxima (pass 1, with the NaN test) and the sums of
//! e^z (pass 2, only when a draw or top-p needs the mass).

use super::{Row, Weights};
use crate::arch::Arch;
use crate::exp::CUTOFF;
use crate::exp_sum::sum_lanes_f64;
use crate::loops::{read, Kernel, Stage, UNROLL};
use crate::shift::{with_shift, AnyShift, Shift};
use crate::storage::{AnySlice, Storage};
use pulp::Simd;

/// Elements per block of the per-block maxima and sums. A multiple of every
/// ISA's UNROLL vectors, so a block is a whole number of loop steps.
pub const BLOCK: usize = 64;

/// Loop steps per block for a token with these vectors.
const fn steps_per_block<S: Simd>() -> usize {
    BLOCK / (UNROLL * (core::mem::size_of::<S::f32s>() / core::mem::size_of::<f32>()))
}

/// One value per block, written as the loop flushes each block.
struct PerBlock<'a, T> {
    out: &'a mut [T],
    next: usize,
}

impl<'a, T> PerBlock<'a, T> {
    #[inline(always)]
    fn new(out: &'a mut [T]) -> Self {
        Self { out, next: 0 }
    }
    /// The next block's value. A row that is a whole number of blocks ends on
    /// an empty flush, which has no block to go to.
    #[inline(always)]
    fn push(&mut self, value: T) {
        if self.next < self.out.len() {
            self.out[self.next] = value;
            self.next += 1;
        }
    }
}

/// Pass 1: the max of each block, and whether the row holds a NaN.
struct BlockMax<'a> {
    out: PerBlock<'a, f32>,
    nan: bool,
}

impl<S: Simd> Kernel<S> for BlockMax<'_> {
    /// (max, lanes that have seen no NaN)
    type Acc = (S::f32s, S::m32s);
    const FLUSH_STEPS: usize = steps_per_block::<S>();

    #[inline(always)]
    fn fill(&self) -> f32 {
        f32::NEG_INFINITY
    }
    #[inline(always)]
    fn init(&self, simd: S) -> Self::Acc {
        let zero = simd.splat_f32s(0.0);
        (
            simd.splat_f32s(f32::NEG_INFINITY),
            simd.equal_f32s(zero, zero),
        )
    }
    #[inline(always)]
    fn step(&self, simd: S, (m, ok): Self::Acc, x: S::f32s) -> (Self::Acc, S::f32s) {
        let ok = simd.and_m32s(ok, simd.equal_f32s(x, x));
        ((simd.max_f32s(m, x), ok), x)
    }
    #[inline(always)]
    fn merge(&self, simd: S, a: Self::Acc, b: Self::Acc) -> Self::Acc {
        (simd.max_f32s(a.0, b.0), simd.and_m32s(a.1, b.1))
    }
    #[inline(always)]
    fn flush(&mut self, simd: S, (m, ok): Self::Acc) {
        self.out.push(simd.reduce_max_f32s(m));
        let bad = simd.select_f32s(ok, simd.splat_f32s(0.0), simd.splat_f32s(1.0));
        self.nan |= simd.reduce_max_f32s(bad) > 0.0;
    }
}

/// Pass 2: Σ e^z of each block, z = (x - reference)/t, in f32 lanes then f64.
struct BlockSums<'a, Z> {
    shift: Z,
    out: PerBlock<'a, f64>,
}

impl<S: Simd, Z: Shift> Kernel<S> for BlockSums<'_, Z> {
    type Acc = S::f32s;
    const FLUSH_STEPS: usize = steps_per_block::<S>();

    #[inline(always)]
    fn fill(&self) -> f32 {
        f32::NEG_INFINITY
    }
    #[inline(always)]
    fn init(&self, simd: S) -> S::f32s {
        simd.splat_f32s(0.0)
    }
    #[inline(always)]
    fn step(&self, simd: S, acc: S::f32s, x: S::f32s) -> (S::f32s, S::f32s) {
        let e = crate::exp::exp_flushed_below::<S, true>(simd, self.shift.z(simd, x), CUTOFF);
        (simd.add_f32s(acc, e), e)
    }
    #[inline(always)]
    fn merge(&self, simd: S, a: S::f32s, b: S::f32s) -> S::f32s {
        simd.add_f32s(a, b)
    }
    #[inline(always)]
    fn flush(&mut self, _: S, acc: S::f32s) {
        self.out.push(sum_lanes_f64::<S>(&acc));
    }
}

/// The max of each block into `out` (one per block); true if the row holds a NaN.
#[inline(always)]
pub(super) fn block_maxima<A: Arch>(
    arch: A,
    st: &mut Stage<'_>,
    x: AnySlice<'_>,
    out: &mut [f32],
) -> bool {
    let mut k = BlockMax {
        out: PerBlock::new(out),
        nan: false,
    };
    read(arch, x, st, &mut k);
    k.nan
}

/// Σ e^z of each block into `out` (one per block), z = (v - max)·inv_t;
/// returns their total. The SIMD pass takes z from the f32 nearest the max (no
/// unbiased logit lies above it), and its sums are rescaled to the max in f64;
/// the blocks holding a bias, and every block when that scale is out of range
/// (a biased max far off the f32 grid at a tiny t), are summed in f64.
#[inline(always)]
pub(super) fn block_sums<A: Arch, T: Storage>(
    arch: A,
    st: &mut Stage<'_>,
    x: AnySlice<'_>,
    row: &Row<'_, T>,
    w: Weights,
    inv_t: f32,
    out: &mut Vec<f64>,
) -> f64 {
    out.clear();
    out.resize(row.blocks(), 0.0);
    let reference = (w.reference as f32).clamp(f32::MIN, f32::MAX);
    let scale = w.w(reference as f64);
    let mut buf = [0.0; BLOCK];
    if (1e-30..=1e30).contains(&scale) {
        with_shift!(AnyShift::new(reference, f32::NEG_INFINITY, inv_t), z => {
            let mut k = BlockSums { shift: z, out: PerBlock::new(out) };
            read(arch, x, st, &mut k);
        });
        if scale != 1.0 {
            for s in out.iter_mut() {
                *s *= scale;
            }
        }
    } else {
        for (b, s) in out.iter_mut().enumerate() {
            let len = row.values(b, &mut buf);
            *s = buf[..len].iter().map(|&v| w.w(v)).sum();
        }
        return out.iter().sum();
    }
    for b in row.biased_blocks() {
        let len = row.values(b, &mut buf);
        out[b] = buf[..len].iter().map(|&v| w.w(v)).sum();
    }
    out.iter().sum()
}
