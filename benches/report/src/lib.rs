//! What the report (`src/main.rs`) and the criterion benches (`benches/`)
//! share: the workloads and their checks, the yardsticks, the training and
//! sampling cases, and how a configuration is timed.

#![forbid(unsafe_code)]

pub mod baselines;
pub mod sampling;
pub mod timing;
pub mod training;
pub mod workload;
