//! Fused SIMD softmax, log-softmax and log-sum-exp for CPUs, with the
//! training passes and sampling around them.
//!
//! One generic kernel body per pass is dispatched at run time to AVX-512,
//! AVX2+FMA or NEON, with a scalar path that runs the same code. Rows are
//! f32, `half::f16` or `half::bf16` ([`Element`]), computed in f32; results
//! are checked against an f64 reference to documented bounds on every ISA.
//!
//! ```
//! use softmax::{Rows, RowsMut, Softmax};
//!
//! # fn main() -> Result<(), softmax::Error> {
//! let logits = [1.0f32, 2.0, 3.0, f32::NEG_INFINITY];
//! let mut probs = [0.0f32; 4];
//! softmax::softmax(&logits, &mut probs)?;
//!
//! // Options: a temperature, a named ISA, an algorithm, a thread pool.
//! let sm = Softmax::new().with_temperature(0.7)?;
//! let x = [0.5f32, 1.0, 1.5, -1.0, 0.0, 1.0];
//! let mut y = [0.0f32; 6];
//! sm.softmax_rows(Rows::contiguous(&x, 3)?, RowsMut::contiguous(&mut y, 3)?)?;
//! # Ok(())
//! # }
//! ```
//!
//! - [`Softmax`]: softmax, log-softmax and logsumexp over a row or strided
//!   [`Rows`] / [`RowsMut`] batches, in place or out of place; the backward
//!   passes and the Jacobian.
//! - [`CrossEntropy`]: the loss and its gradient from logits, with labels or
//!   soft targets, smoothing, class weights and reductions.
//! - [`Sampler`], [`gumbel_max`], [`GumbelSoftmax`]: a token from logits with
//!   temperature, top-k, top-p, min-p and a logit bias, reproducible from a
//!   seed whatever the thread count.
//! - [`Isa`] names a path ([`Isa::detect`], [`Isa::available`]); every call
//!   returns a [`Result`] and writes nothing on an [`Error`]; batches run on
//!   rayon ([`Parallelism`], [`ThreadPool`]).
//!
//! The README has the accuracy tables, the special-value rules and the
//! measured speed.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

// The README's examples are compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;

mod attention;
mod backward;
mod batch;
mod cross_entropy;
mod dispatch;
mod element;
mod error;
mod isa;
mod options;
mod rows;
mod sample;

/// The `half` crate, whose `f16` and `bf16` are the half-precision [`Element`]s.
pub use half;
/// Rayon's thread pool and its builder, for [`Parallelism::Pool`] and the
/// `with_thread_pool` options.
pub use rayon::{ThreadPool, ThreadPoolBuilder};

pub use attention::{
    alibi_slopes, packed_strides, Alibi, AlibiBias, AttentionInputs, AttentionMask,
    AttentionSoftmax, Scores, ScoresMut,
};
pub use batch::{Parallelism, PARALLEL_MIN_ELEMENTS, TASK_MIN_ELEMENTS};
pub use cross_entropy::{CrossEntropy, Label, Reduction, DEFAULT_IGNORE_INDEX};
pub use element::Element;
pub use error::Error;
pub use isa::Isa;
pub use options::{Algorithm, Softmax, AUTO_ONLINE_FROM_COLS};
pub use rows::{Rows, RowsMut};
pub use sample::{gumbel_max, Draw, GumbelSoftmax, Sampler, TokenLogprob};

/// y = softmax(x) with default options.
pub fn softmax<I: Element, O: Element>(x: &[I], y: &mut [O]) -> Result<(), Error> {
    Softmax::new().softmax(x, y)
}

/// x ← softmax(x) with default options.
pub fn softmax_in_place<T: Element>(x: &mut [T]) -> Result<(), Error> {
    Softmax::new().softmax_in_place(x)
}

/// y = log-softmax(x) with default options.
pub fn log_softmax<I: Element, O: Element>(x: &[I], y: &mut [O]) -> Result<(), Error> {
    Softmax::new().log_softmax(x, y)
}

/// x ← log-softmax(x) with default options.
pub fn log_softmax_in_place<T: Element>(x: &mut [T]) -> Result<(), Error> {
    Softmax::new().log_softmax_in_place(x)
}

/// ln Σ exp(x) with default options; -inf for an empty row.
pub fn logsumexp<T: Element>(x: &[T]) -> Result<f32, Error> {
    Softmax::new().logsumexp(x)
}
