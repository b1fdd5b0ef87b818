//! What the report (`src/main.rs`) and the criterion benches (`benches/`)
//! share: the workloads and their checks, the yardsticks, the training,
//! attention and sampling cases, and how a configuration is timed; and the
//! report's measurements. Every call into the softmax crate's generic API is made
//! here, so its kernels are compiled once, in this crate, not once more in
//! the report binary.

#![forbid(unsafe_code)]

pub mod attention;
pub mod baselines;
pub mod measure;
pub mod peers;
pub mod record;
pub mod sampling;
pub mod timing;
pub mod training;
pub mod workload;
