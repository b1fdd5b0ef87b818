//! Fused SIMD softmax, log-softmax and log-sum-exp for CPUs.
//!
//! ```
//! use softmax::{Softmax, Rows, RowsMut};
//!
//! let logits = [1.0f32, 2.0, 3.0, f32::NEG_INFINITY];
//! let mut probs = [0.0f32; 4];
//! softmax::softmax(&logits, &mut probs)?;
//! assert!((probs.iter().sum::<f32>() - 1.0).abs() < 1e-6);
//! assert_eq!(probs[3], 0.0);
//!
//! // A batch of 2 rows of 3, stored 4 apart, at temperature 0.7, in place.
//! let mut batch = [0.5f32, 1.0, 1.5, 99.0, -1.0, 0.0, 1.0, 99.0];
//! let sm = Softmax::new().temperature(0.7)?;
//! sm.softmax_rows_in_place(RowsMut::new(&mut batch, 2, 3, 4)?)?;
//! assert_eq!(batch[3], 99.0); // padding between rows is never touched
//!
//! let lse = sm.logsumexp(&logits)?;
//! assert!(lse > 3.0);
//! # let _ = Rows::new(&logits, 1, 4, 4)?;
//! # Ok::<(), softmax::Error>(())
//! ```
//!
//! Accuracy bounds, the special-value rules and the ISA list are in the README.

mod batch;
mod dispatch;
mod element;
mod error;
mod isa;
mod options;
mod rows;

pub use batch::{Parallelism, PARALLEL_MIN_ELEMENTS, TASK_MIN_ELEMENTS};
pub use element::Element;
pub use error::Error;
pub use isa::Isa;
pub use options::{Algorithm, Softmax, AUTO_ONLINE_FROM_COLS};
pub use rows::{Rows, RowsMut};

/// Facts about this build, for reports.
pub mod build_info {
    /// The cargo profile the crate was built with.
    pub const PROFILE: &str = env!("SOFTMAX_BUILD_PROFILE");
    /// The target triple.
    pub const TARGET: &str = env!("SOFTMAX_BUILD_TARGET");
    /// Target features enabled at compile time (the baseline; faster ISAs are chosen at run time).
    pub const TARGET_FEATURES: &str = env!("SOFTMAX_BUILD_TARGET_FEATURES");
}

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
