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

/// The environment variable that narrows the backends the tests iterate:
/// a comma-separated list of names (`scalar`, `avx2`, `avx512`, `neon`,
/// `emu128`, `emu256`, `emu512`). Unset or empty: every available ISA and, off
/// qemu, every emulated token. A named ISA this CPU lacks fails the test, so a
/// run under emulation cannot pass by testing nothing.
pub const BACKENDS_VAR: &str = "SOFTMAX_TEST_BACKENDS";

/// The backend names [`BACKENDS_VAR`] asks for; `None` when it is unset or empty.
pub fn requested_backends() -> Option<Vec<String>> {
    let list = std::env::var(BACKENDS_VAR).ok()?;
    let names: Vec<String> = list
        .split(',')
        .map(|s| s.trim().to_ascii_lowercase())
        .filter(|s| !s.is_empty())
        .collect();
    for n in &names {
        assert!(
            Isa::ALL.iter().any(|i| i.name() == n)
                || Backend::EMULATED.iter().any(|b| b.name() == n),
            "{BACKENDS_VAR}: unknown backend {n:?}"
        );
    }
    (!names.is_empty()).then_some(names)
}

/// Whether the backend called `name` is to run: [`BACKENDS_VAR`] is unset or
/// names it. (Available or not: that is the caller's question.)
pub fn requested(name: &str) -> bool {
    requested_backends().is_none_or(|r| r.iter().any(|n| n == name))
}

/// Every ISA this CPU has (only those [`BACKENDS_VAR`] names, when set);
/// prints a `SKIPPED:` line for each other one.
pub fn available_isas() -> (Vec<Isa>, Vec<Isa>) {
    let narrowed = requested_backends().is_some();
    let (run, skipped): (Vec<Isa>, Vec<Isa>) = Isa::ALL
        .into_iter()
        .partition(|i| requested(i.name()) && i.is_available());
    for isa in &skipped {
        match narrowed {
            false => eprintln!("SKIPPED: {isa} not available on this CPU"),
            true if requested(isa.name()) => {
                panic!("{BACKENDS_VAR} asks for {isa}, which this CPU does not have")
            }
            true => eprintln!("SKIPPED: {isa} not requested in {BACKENDS_VAR}"),
        }
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
