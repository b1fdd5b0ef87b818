//! SIMD microkernels behind the `softmax` crate.
//!
//! Every pass is one generic body written against [`pulp::Simd`] and run
//! through one loop driver ([`loops`]); the same code runs on AVX-512, AVX2+FMA,
//! NEON, pulp's scalar token (the reference path) and pulp's emulated wide
//! scalar tokens (so 16-lane logic is tested on any CPU). Passes run over f32
//! rows; f16 and bf16 rows are widened into an f32 stage a chunk at a time (or
//! once per row, when a method reads the row again) and rounded as they are
//! stored. Kernels know nothing of threads or errors: the `softmax` crate
//! validates shapes and chooses the ISA, then runs a [`Job`] (cut into
//! [`Batch`] parts for its tasks) with that ISA's [`arch::Arch`] token inside
//! one target-feature region for every row of the job.
//!
//! Operations, each with its jobs, their split between rows and the row code:
//!
//! | file               | operation |
//! |--------------------|-----------|
//! | `forward.rs`       | softmax, log-softmax, logsumexp: three-pass and online, and the special-value rules |
//! | `backward.rs`      | softmax and log-softmax backward, the Jacobian |
//! | `cross_entropy.rs` | cross-entropy and its gradient from logits; labels and targets |
//! | `sample/`          | sampling a token: block passes, truncation, the draw |
//! | `attention.rs`     | attention-score softmax: scale, soft-cap, masks, ALiBi, sinks; its backward pass |
//!
//! The passes and what they stand on:
//!
//! | file          | contents |
//! |---------------|----------|
//! | `arch.rs`     | ISA tokens and their target-feature regions, f16/bf16 conversions (the only `unsafe`) |
//! | `loops.rs`    | the loop driver: head, unrolled body, tail; staged f16/bf16 rows |
//! | `storage.rs`  | f32/f16/bf16 rows: widening and narrowing |
//! | `strided.rs`  | strided views of a batch, cut between rows |
//! | `exp.rs`      | the vector exp and its constants |
//! | `tanh.rs`     | the soft-cap c·tanh(k·x) and its slope, from the exp's reduction |
//! | `max.rs`      | max- and min-reduce |
//! | `shift.rs`    | z = (x - max)/t, three ways |
//! | `exp_sum.rs`  | exp-subtract(-store)-sum |
//! | `output.rs`   | scale, exp-scale, log-softmax output, special fills |
//! | `scan.rs`     | NaN / +inf counting for special rows |
//! | `random.rs`   | the counter-based random source (SplitMix64 keyed by seed, row, step) |

#![deny(unsafe_code)]

pub mod arch;
mod attention;
mod backward;
mod cross_entropy;
pub mod exp;
mod exp_sum;
mod forward;
pub mod loops;
mod max;
mod output;
pub mod random;
mod sample;
mod scan;
mod shift;
mod storage;
mod strided;
mod tanh;

pub use attention::{
    AlibiOn, AttentionBackward, AttentionForward, Grid, GridMut, Layout, Logit, Mask, MaskData,
    Positions,
};
pub use backward::{Backward, Jacobian};
pub use cross_entropy::{CrossEntropy, Labels, LossOptions, RowTarget, Targets};
pub use forward::{Forward, LogSumExp, RowSoftmax, ShortSoftmax, ONLINE_BLOCK, SHORT_ROW_VECTORS};
pub use half;
pub use loops::SHORT_ROW;
pub use pulp;
pub use sample::{Draw, Drawn, Sample, SampleOptions, TokenLogprob, BLOCK as SAMPLE_BLOCK};
pub use storage::{AnySlice, AnySliceMut, Kind, Storage};
pub use strided::{Strided, StridedMut};
pub use tanh::SoftCap;

use arch::Arch;
pub use loops::{Stage, CHUNK};

/// How a row's maximum and sum are found.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Method {
    /// max; exp-subtract-store-sum; scale (softmax: 2 reads + 2 writes after the max read).
    ThreePass,
    /// Milakov & Gimelshein: running max and rescaled running sum in one read; then the output.
    Online,
}

impl Method {
    /// Every method.
    pub const ALL: [Method; 2] = [Method::ThreePass, Method::Online];
}

/// What a forward pass writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Output {
    Softmax,
    LogSoftmax,
}

/// A temperature t > 0 and its reciprocal (rounded once from the exact 1/t).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Temperature {
    t: f32,
    inv: f32,
}

impl Temperature {
    /// `t` must be finite and at least `f32::MIN_POSITIVE`, so 1/t is finite
    /// (the `softmax` crate checks it).
    pub fn new(t: f32) -> Self {
        debug_assert!(t.is_finite() && t >= f32::MIN_POSITIVE);
        Self {
            t,
            inv: (1.0 / t as f64) as f32,
        }
    }
    pub fn get(self) -> f32 {
        self.t
    }
}

impl Default for Temperature {
    fn default() -> Self {
        Self::new(1.0)
    }
}

/// Elements a buffer of `rows` rows of `cols` elements at `stride` must hold:
/// (rows - 1) · stride + cols (the last row needs no padding); `None` on overflow.
pub fn required_len(rows: usize, cols: usize, stride: usize) -> Option<usize> {
    match rows {
        0 => Some(0),
        _ => (rows - 1).checked_mul(stride)?.checked_add(cols),
    }
}

/// A job that runs rows with one ISA token, inside that ISA's target-feature region.
pub trait Job {
    type Output;
    /// The f32 working space [`Job::run`] needs: a [`Stage`] when a row is f16
    /// or bf16, and whatever else the job keeps per row.
    fn scratch_len(&self) -> usize;
    /// Runs every row; `scratch` holds at least [`Job::scratch_len`] values.
    fn run<A: Arch>(self, arch: A, scratch: &mut [f32]) -> Self::Output;
}

/// A job over rows that can be cut between rows, for the tasks of a batch;
/// the parts' outputs combine into the whole's.
pub trait Batch: Job + Sized {
    fn rows(&self) -> usize;
    /// The first `k` rows and the rest.
    fn split_at(self, k: usize) -> (Self, Self);
    fn combine(a: Self::Output, b: Self::Output) -> Self::Output;
}

/// Runs `job` with `arch` inside the token's target-feature region, so the
/// row logic around the passes is compiled with the ISA's features too.
#[inline(always)]
pub fn run_in_region<A: Arch, J: Job>(arch: A, job: J, scratch: &mut [f32]) -> J::Output {
    struct InRegion<'s, A, J>(A, J, &'s mut [f32]);
    impl<A: Arch, J: Job> arch::Body for InRegion<'_, A, J> {
        type Output = J::Output;
        #[inline(always)]
        fn call(self) -> J::Output {
            self.1.run(self.0, self.2)
        }
    }
    arch.region(InRegion(arch, job, scratch))
}

/// The stage a job over rows of these kinds needs: none when every row is f32.
#[inline(always)]
fn stage_len(kinds: &[Kind]) -> usize {
    if kinds.iter().all(|&k| k == Kind::F32) {
        0
    } else {
        Stage::LEN
    }
}
