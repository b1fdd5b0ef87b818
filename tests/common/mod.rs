//! Shared test machinery, in one place:
//!
//! - [`bounds`]: the accuracy table (the specification's error bounds);
//! - [`oracle`]: the f64 reference, special-value rules included;
//! - [`backend`]: every path the tests drive — each ISA of the public API, and
//!   pulp's emulated 4-, 8- and 16-lane scalar tokens through the kernels crate;
//! - [`inputs`]: a deterministic PRNG, the value ranges, guarded misaligned buffers;
//! - [`check`]: the per-row checker and the sweep report (error table + failures);
//! - [`sampling`]: the sort-based reference of a sampler's distribution, and chi-square.
//!
//! An ISA this CPU lacks is printed as `SKIPPED: <isa> not available on this CPU`
//! and never counted as run.

pub mod backend;
pub mod bounds;
pub mod check;
pub mod element;
pub mod inputs;
pub mod oracle;
pub mod sampling;
pub mod training;

pub use backend::{Backend, ALGORITHMS};
pub use check::{check_row, Label, Sweep};
pub use element::Narrow;
pub use inputs::{Guarded, Rng, Values};
pub use oracle::{reference, RowKind};

use softmax::Isa;

/// True when the tests run on aarch64, which CI reaches only through qemu user
/// emulation (10–30× slower): the heaviest cases run on a reduced set there.
pub const EMULATED_TARGET: bool = cfg!(target_arch = "aarch64");

/// Every ISA this CPU has; prints a `SKIPPED:` line for each one it lacks.
pub fn available_isas() -> (Vec<Isa>, Vec<Isa>) {
    let (run, skipped): (Vec<Isa>, Vec<Isa>) = Isa::ALL.into_iter().partition(|i| i.is_available());
    for isa in &skipped {
        eprintln!("SKIPPED: {isa} not available on this CPU");
    }
    (run, skipped)
}

/// Prints which ISAs (or backends) a test ran on and which it skipped.
pub fn print_coverage(test: &str, ran: &[&str], skipped: &[Isa]) {
    let skipped: Vec<&str> = skipped.iter().map(|i| i.name()).collect();
    eprintln!(
        "{test}: ran on {} ({}); skipped {} ({})",
        ran.len(),
        ran.join(", "),
        skipped.len(),
        if skipped.is_empty() {
            "none".to_string()
        } else {
            skipped.join(", ")
        }
    );
}

/// Runs `f` once per available ISA of the public API, then prints the coverage line.
pub fn for_each_isa(test: &str, mut f: impl FnMut(Isa)) {
    let (isas, skipped) = available_isas();
    assert!(
        !isas.is_empty(),
        "{test}: no ISA available (Scalar always is)"
    );
    for &isa in &isas {
        f(isa);
    }
    let names: Vec<&str> = isas.iter().map(|i| i.name()).collect();
    print_coverage(test, &names, &skipped);
}

/// Runs `f` once per backend (available ISAs, then emu128/emu256/emu512), then
/// prints the coverage line.
pub fn for_each_backend(test: &str, mut f: impl FnMut(Backend)) {
    let (backends, skipped) = Backend::available();
    for &b in &backends {
        f(b);
    }
    let names: Vec<&str> = backends.iter().map(|b| b.name()).collect();
    print_coverage(test, &names, &skipped);
}
