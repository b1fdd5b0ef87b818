//! What the report (`src/main.rs`) and the criterion benches (`benches/`)
//! share: the yardsticks, and the training and sampling cases.

#![forbid(unsafe_code)]

pub mod baselines;
pub mod sampling;
pub mod training;
