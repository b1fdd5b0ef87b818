//! The integration tests, in one binary (the kernels are instantiated for the
//! emulated tokens once, not once per file): one module per subject, one
//! shared harness in [`common`]. The allocation test is the one exception
//! (`tests/alloc.rs`): its counting global allocator must see no other test.

#![deny(unsafe_code)]

mod common;

mod api;
mod attention;
mod batch;
mod errors;
mod half;
mod matrix;
mod properties;
mod sampling;
mod soft_cap;
mod special_values;
mod training;
