#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]

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
