//! The test matrix: every operation (softmax, log-softmax, logsumexp; in place
//! and out of place) × every backend (each available ISA, and emu128/emu256/emu512)
//! × every algorithm (Auto, ThreePass, Online) × row lengths × start
//! offsets × value ranges × temperatures, each result against the f64 oracle.
//!
//! The full cross product is large, so it is cut in slices: every length and
//! every offset for one value range at t = 1, then every length at a few offsets
//! for the other ranges and temperatures, then long rows. Each test prints its
//! error table (max |error| / bound per backend, algorithm and operation); run
//! with `--nocapture` to see them.

use crate::common;

use common::{check_row, reference, Backend, Label, Rng, Sweep, Values, ALGORITHMS};

/// 16 lanes × 4 accumulators is the widest step; 3 of them plus 1 reaches the
/// unrolled body, the single-vector loop and the masked tail of every ISA.
const SHORT_LENGTHS: std::ops::RangeInclusive<usize> = 0..=3 * 16 * 4 + 1;

/// Misalignments, in elements past a 64-byte boundary.
const ALL_OFFSETS: [usize; 16] = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15];
const SAMPLED_OFFSETS: [usize; 4] = [0, 1, 7, 15];

/// Powers of two and primes around them, across many online blocks (2048
/// elements each) and past 2^16.
const LONG_LENGTHS: [usize; 8] = [255, 256, 257, 1021, 1024, 4093, 4096, 65537];

/// Checks every operation of every backend and algorithm on rows of `values`
/// at temperature `t`, for each length and offset.
fn sweep(sweep: &mut Sweep, values: Values, t: f32, lengths: &[usize], offsets: &[usize]) {
    let backends = sweep.backends();
    for &n in lengths {
        for &offset in offsets {
            let seed = [values as u64, n as u64, offset as u64, t.to_bits() as u64];
            let x = values.generate(&mut Rng::for_case(&seed), n, t);
            let r = reference(&x, t);
            let label = Label {
                values: values.name(),
                t,
                offset,
            };
            for &backend in &backends {
                for algorithm in ALGORITHMS {
                    check_row(sweep, backend, algorithm, label, &x, &r);
                }
            }
        }
    }
}

fn short_lengths() -> Vec<usize> {
    SHORT_LENGTHS.collect()
}

#[test]
fn every_length_and_offset_uniform_t1() {
    let mut s = Sweep::new("every_length_and_offset_uniform_t1");
    sweep(
        &mut s,
        Values::Uniform10,
        1.0,
        &short_lengths(),
        &ALL_OFFSETS,
    );
    s.finish();
}

fn every_value_range(title: &str, t: f32) {
    let mut s = Sweep::new(title);
    for values in Values::ALL {
        sweep(&mut s, values, t, &short_lengths(), &SAMPLED_OFFSETS);
    }
    s.finish();
}

#[test]
fn every_value_range_t1() {
    every_value_range("every_value_range_t1", 1.0);
}

#[test]
fn every_value_range_t0_7() {
    every_value_range("every_value_range_t0_7", 0.7);
}

#[test]
fn every_value_range_t2_5() {
    every_value_range("every_value_range_t2_5", 2.5);
}

#[test]
fn cold_temperature_1e_4() {
    let mut s = Sweep::new("cold_temperature_1e_4");
    for values in [
        Values::Uniform10,
        Values::Normal30,
        Values::Huge,
        Values::NearCutoff,
        Values::Masked30,
        Values::Constant,
    ] {
        sweep(&mut s, values, 1e-4, &short_lengths(), &[0, 7]);
    }
    s.finish();
}

#[test]
fn long_rows() {
    let mut s = Sweep::new("long_rows");
    // Under qemu, two offsets instead of four.
    let offsets: &[usize] = if common::EMULATED_TARGET {
        &[0, 7]
    } else {
        &SAMPLED_OFFSETS
    };
    for (values, t) in [
        (Values::Uniform10, 1.0),
        (Values::Normal30, 0.7),
        (Values::NearCutoff, 1.0),
        (Values::Masked30, 2.5),
        (Values::Huge, 1.0),
        (Values::Constant, 1.0),
    ] {
        sweep(&mut s, values, t, &LONG_LENGTHS, offsets);
    }
    s.finish();
}

/// 2^20 elements: the f32 accumulators' flush to f64, many online blocks, and
/// sums far from 1 before scaling.
/// The heaviest case: under qemu (aarch64) it runs on the native ISAs only, for
/// one value range.
#[test]
fn rows_of_2_pow_20() {
    let mut s = Sweep::new("rows_of_2_pow_20");
    let cases: &[(Values, f32, usize)] = if common::EMULATED_TARGET {
        s.retain_backends(|b| matches!(b, Backend::Isa(_)));
        &[(Values::Normal30, 1.0, 3)]
    } else {
        s.retain_backends(|b| matches!(b, Backend::Isa(_) | Backend::Emu512));
        &[
            (Values::Normal30, 1.0, 0),
            (Values::NearCutoff, 0.7, 3),
            (Values::Masked30, 2.5, 9),
        ]
    };
    for &(values, t, offset) in cases {
        sweep(&mut s, values, t, &[1 << 20], &[offset]);
    }
    s.finish();
}
