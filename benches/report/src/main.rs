//! `cargo run --release --bin report`: how fast is each ISA × algorithm of the
//! softmax crate, compared with the softmax people first write and with the memory bus?
//!
//! For a standard set of shapes it measures softmax (every algorithm),
//! log-softmax and logsumexp (`Algorithm::Auto`) on every available ISA, with
//! one thread and with a rayon pool of all cores, beside two yardsticks
//! measured in the same run:
//! - a naive scalar softmax (three plain loops, `f32::exp`, a division), and
//! - copy-scale `y = c·x` on the best ISA: the same bytes read and written as
//!   softmax with no arithmetic to speak of, i.e. what the memory system allows.
//!
//! A second table, "half precision", measures softmax (`Algorithm::Auto`, the
//! detected ISA) with f16 and bf16 storage beside f32 on a few of those shapes
//! (single rows, a small batch, the out-of-cache batch), and gives each pair of
//! element types its throughput as a multiple of f32→f32's in the same run.
//!
//! A third table, "training", measures on one f32 batch (by default 512×128256:
//! 263 MB per tensor) the backward passes of softmax and log-softmax and
//! cross-entropy from logits (loss and gradient, out of place and in place; the
//! loss alone) beside the forward softmax, and gives each its throughput as a
//! multiple of the forward softmax's in the same run.
//!
//! A fourth table, "sampling", draws one token from one f32 row of LLM-like
//! logits (by default 128256 wide; the library's `sampling` module) with `Sampler` in the
//! configurations engines use, one thread, and gives each its median time as a
//! multiple of the forward softmax of the same row, and the full-sort sampler
//! engines write as a multiple of each, all measured in the same run.
//!
//! A fifth table, "attention", measures the attention-score softmax
//! (`AttentionSoftmax`, f32, scale 0.125) as LLM inference calls it: prefill
//! 32×512×512 causal by position, with an f16 mask, with soft-cap and mask;
//! decode 32×1×4096 with a padding mask; ALiBi with sinks 32×64×1024. It times
//! each in turns with the forward softmax of the same rows and gives its
//! throughput as a multiple of the softmax's.
//!
//! Every configuration is checked once against the crate's scalar ISA before it
//! is timed (half-precision outputs within one unit in the last place of their
//! type; training passes on a few rows; attention variants on every row). Results go to stdout as tables, progress to stderr, and files to
//!
//! Modules: `flags` (the command line), `machine` (CPU, caches, cores, build
//! facts), `tables` (stdout), `output` (CSV, JSON, SVG files) and `run` (the
//! tables in order); the measurements themselves (`measure`, `record`) are in
//! the library, the one crate that instantiates the softmax kernels.

#![forbid(unsafe_code)]

mod flags;
mod machine;
mod output;
mod run;
mod svg;
mod tables;

use run::Failure;

fn main() {
    let config = flags::Config::from_args();
    match run::run(&config) {
        Ok(()) => {}
        Err(Failure::Check) => std::process::exit(1),
        Err(Failure::Output(message)) => {
            eprintln!("report: {message}");
            std::process::exit(2);
        }
    }
}
