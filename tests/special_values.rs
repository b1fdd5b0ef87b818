//! The special-value rules, on every backend and algorithm:
//!
//! - a NaN anywhere in a row → every output NaN, logsumexp NaN;
//! - k entries of +inf share the mass (1/k each, exactly 0 elsewhere; log-softmax
//!   −ln k and −inf; logsumexp +inf);
//! - a row of only −inf → softmax 0, log-softmax −inf, logsumexp −inf;
//! - −inf among finite entries → exactly 0 (log-softmax −inf);
//! - an empty row is valid (logsumexp −inf, nothing written);
//! - huge finite inputs and cold temperatures never overflow;
//! - no softmax output is ever subnormal.
//!
//! Rows that follow a rule (not the formula) must give bit-identical results on
//! every backend and algorithm.

use crate::common;

use common::{check_row, reference, Backend, Label, Rng, RowKind, Sweep, Values, ALGORITHMS};
use softmax::{Isa, Parallelism, RowsMut, Softmax};

/// A named row at a temperature.
struct Row {
    name: String,
    x: Vec<f32>,
    t: f32,
}

fn row(name: impl Into<String>, x: Vec<f32>, t: f32) -> Row {
    Row {
        name: name.into(),
        x,
        t,
    }
}

/// Checks every row on every backend and algorithm (at offsets 0 and 3), and
/// that rows following a special rule give identical bits everywhere.
fn check_rows(title: &str, rows: &[Row]) {
    let mut sweep = Sweep::new(title);
    let backends = sweep.backends();
    for Row { name, x, t } in rows {
        let r = reference(x, *t);
        let mut first: Option<(String, Vec<u32>)> = None;
        for offset in [0, 3] {
            let label = Label {
                values: name,
                t: *t,
                offset,
            };
            for &backend in &backends {
                for algorithm in ALGORITHMS {
                    let out = check_row(&mut sweep, backend, algorithm, label, x, &r);
                    if r.kind == RowKind::Finite {
                        continue;
                    }
                    let who = format!("{} {}", backend.name(), algorithm.name());
                    match &first {
                        None => first = Some((who, out.bits())),
                        Some((first_who, bits)) => sweep.expect(*bits == out.bits(), || {
                            format!(
                                "{title}: row '{name}' (len {}, t {t:e}, {:?}): {who} differs \
                                 bitwise from {first_who}",
                                x.len(),
                                r.kind
                            )
                        }),
                    }
                }
            }
        }
    }
    sweep.finish();
}

/// Lengths around every vector width, unroll and online block (2048) boundary.
const LENGTHS: [usize; 12] = [1, 2, 3, 5, 16, 17, 63, 64, 65, 193, 2049, 4099];

fn uniform(rng: &mut Rng, n: usize) -> Vec<f32> {
    Values::Uniform10.generate(rng, n, 1.0)
}

/// Positions to plant a special value: the ends, the middle, and the start of
/// the second online block.
fn positions(n: usize) -> Vec<usize> {
    let mut p = vec![0, n / 2, n - 1];
    if n > 2048 {
        p.push(2048);
    }
    p.dedup();
    p
}

#[test]
fn nan_anywhere_makes_every_output_nan() {
    let nans = [
        f32::NAN,
        -f32::NAN,
        f32::from_bits(0x7f80_0001), // signalling
        f32::from_bits(0xffff_ffff),
    ];
    let mut rows = Vec::new();
    for n in LENGTHS {
        let mut rng = Rng::for_case(&[1, n as u64]);
        for (k, &at) in positions(n).iter().enumerate() {
            let nan = nans[k % nans.len()];
            let mut x = uniform(&mut rng, n);
            x[at] = nan;
            rows.push(row(
                format!("NaN {:#x} at {at} among finite", nan.to_bits()),
                x.clone(),
                1.0,
            ));
            let mut with_inf = x.clone();
            with_inf[n - 1 - at] = f32::INFINITY;
            if n > 1 {
                rows.push(row(format!("NaN at {at} and +inf"), with_inf, 0.7));
            }
            let mut masked = vec![f32::NEG_INFINITY; n];
            masked[at] = nan;
            rows.push(row(format!("NaN at {at}, rest -inf"), masked, 1.0));
            let mut huge: Vec<f32> = Values::Huge.generate(&mut rng, n, 1.0);
            huge[at] = nan;
            rows.push(row(format!("NaN at {at} among ±3e38"), huge, 2.5));
        }
    }
    // Online corner cases: a masked first block hiding a NaN, then finite blocks.
    let mut x = uniform(&mut Rng::new(7), 4099);
    x[..2048].fill(f32::NEG_INFINITY);
    x[1000] = f32::NAN;
    rows.push(row("NaN in an otherwise masked first block", x, 1.0));
    let mut x = uniform(&mut Rng::new(8), 4099);
    x[..2048].fill(f32::NEG_INFINITY);
    x[4000] = f32::NAN;
    rows.push(row("masked first block, NaN in the last", x, 1.0));
    check_rows("nan_anywhere_makes_every_output_nan", &rows);
}

#[test]
fn positive_infinities_share_the_mass() {
    let mut rows = Vec::new();
    for n in LENGTHS {
        let mut rng = Rng::for_case(&[2, n as u64]);
        for k in [1, 2, 3, 5] {
            if k > n {
                continue;
            }
            let mut x = Values::Masked30.generate(&mut rng, n, 1.0);
            let mut planted = 0;
            while planted < k {
                let at = rng.below(n);
                if x[at] != f32::INFINITY {
                    x[at] = f32::INFINITY;
                    planted += 1;
                }
            }
            rows.push(row(format!("{k} × +inf among finite and -inf"), x, 1.0));
        }
        rows.push(row("all +inf", vec![f32::INFINITY; n], 2.5));
        let mut x = vec![f32::NEG_INFINITY; n];
        x[n - 1] = f32::INFINITY;
        rows.push(row("+inf last, rest -inf", x, 1.0));
    }
    // Online: the +inf only in the second block, after a finite first block.
    let mut x = uniform(&mut Rng::new(9), 4099);
    x[3000] = f32::INFINITY;
    x[4098] = f32::INFINITY;
    rows.push(row("two +inf in the second and third blocks", x, 0.7));
    check_rows("positive_infinities_share_the_mass", &rows);
}

#[test]
fn all_negative_infinity_rows_are_empty_distributions() {
    let mut rows: Vec<Row> = LENGTHS
        .iter()
        .map(|&n| row("all -inf", vec![f32::NEG_INFINITY; n], 1.0))
        .collect();
    rows.push(row("all -inf, t 0.7", vec![f32::NEG_INFINITY; 100], 0.7));
    rows.push(row("empty", Vec::new(), 1.0));
    rows.push(row("empty, t 2.5", Vec::new(), 2.5));
    check_rows("all_negative_infinity_rows_are_empty_distributions", &rows);
}

#[test]
fn negative_infinity_among_finite_gives_exact_zero() {
    let mut rows = Vec::new();
    for n in LENGTHS {
        let mut rng = Rng::for_case(&[3, n as u64]);
        for values in [Values::Masked30, Values::MaskedPrefix, Values::MaskedSuffix] {
            rows.push(row(values.name(), values.generate(&mut rng, n, 1.0), 1.0));
        }
        let mut x = vec![f32::NEG_INFINITY; n];
        x[rng.below(n)] = -3e38;
        rows.push(row("one finite -3e38, rest -inf", x, 1.0));
    }
    check_rows("negative_infinity_among_finite_gives_exact_zero", &rows);
}

#[test]
fn empty_rows_are_valid_and_write_nothing() {
    common::for_each_isa("empty_rows_are_valid_and_write_nothing", |isa| {
        for algorithm in ALGORITHMS {
            let sm = Softmax::new()
                .with_isa(isa)
                .unwrap()
                .with_algorithm(algorithm);
            let ctx = format!("[isa {isa} | algorithm {}]", algorithm.name());
            let empty: [f32; 0] = [];
            assert_eq!(
                sm.logsumexp(&empty),
                Ok(f32::NEG_INFINITY),
                "{ctx} logsumexp"
            );
            assert_eq!(
                sm.softmax(&empty, &mut [0.0f32; 0]),
                Ok(()),
                "{ctx} softmax"
            );
            assert_eq!(
                sm.log_softmax(&empty, &mut [0.0f32; 0]),
                Ok(()),
                "{ctx} log_softmax"
            );
            assert_eq!(
                sm.softmax_in_place(&mut [0.0f32; 0]),
                Ok(()),
                "{ctx} softmax_in_place"
            );
            assert_eq!(
                sm.log_softmax_in_place(&mut [0.0f32; 0]),
                Ok(()),
                "{ctx} log_softmax_in_place"
            );

            // Rows of zero columns, 3 apart: nothing of the buffer is written.
            let sentinel = common::inputs::SENTINEL;
            let x = vec![sentinel; 7];
            let mut buf = vec![sentinel; 7];
            let sm = sm.with_parallelism(Parallelism::Serial);
            let rows = || softmax::Rows::new(&x, 3, 0, 3).unwrap();
            sm.softmax_rows(rows(), RowsMut::new(&mut buf, 3, 0, 3).unwrap())
                .unwrap();
            sm.log_softmax_rows(rows(), RowsMut::new(&mut buf, 3, 0, 3).unwrap())
                .unwrap();
            sm.softmax_rows_in_place(RowsMut::new(&mut buf, 3, 0, 3).unwrap())
                .unwrap();
            sm.log_softmax_rows_in_place(RowsMut::new(&mut buf, 3, 0, 3).unwrap())
                .unwrap();
            assert!(
                buf.iter().all(|v| v.to_bits() == sentinel.to_bits()),
                "{ctx}: a batch of empty rows wrote into the buffer: {buf:?}"
            );
            let mut out = [0.0f32; 4];
            sm.logsumexp_rows(rows(), &mut out).unwrap();
            assert_eq!(
                out,
                [f32::NEG_INFINITY, f32::NEG_INFINITY, f32::NEG_INFINITY, 0.0],
                "{ctx}"
            );
        }
    });
}

#[test]
fn huge_finite_inputs_do_not_overflow() {
    let mut rows = Vec::new();
    for t in [1.0f32, 0.7, 2.5, 1e-4] {
        for n in [1, 2, 3, 17, 64, 193, 2049] {
            let mut rng = Rng::for_case(&[4, n as u64, t.to_bits() as u64]);
            let alternating: Vec<f32> = (0..n)
                .map(|i| if i % 2 == 0 { 3e38 } else { -3e38 })
                .collect();
            rows.push(row("±3e38 alternating", alternating, t));
            let extremes: Vec<f32> = (0..n)
                .map(|i| if i % 3 == 0 { -f32::MAX } else { f32::MAX })
                .collect();
            rows.push(row("±f32::MAX", extremes, t));
            rows.push(row("all f32::MAX", vec![f32::MAX; n], t));
            rows.push(row("all -f32::MAX", vec![-f32::MAX; n], t));
            rows.push(row(
                "uniform ±3e38",
                Values::Huge.generate(&mut rng, n, t),
                t,
            ));
            let near_max: Vec<f32> = (0..n).map(|_| rng.uniform(3.0e38, 3.4e38)).collect();
            rows.push(row("uniform [3e38, 3.4e38]", near_max, t));
        }
    }
    check_rows("huge_finite_inputs_do_not_overflow", &rows);
}

#[test]
fn cold_temperature_does_not_overflow() {
    let t = 1e-4;
    let mut rows = Vec::new();
    for n in [1, 2, 3, 17, 64, 65, 193, 2049] {
        let mut rng = Rng::for_case(&[5, n as u64]);
        rows.push(row("uniform [-10, 10]", uniform(&mut rng, n), t));
        let wide: Vec<f32> = (0..n).map(|_| rng.uniform(-1e3, 1e3)).collect();
        rows.push(row("uniform [-1e3, 1e3]", wide, t));
        // Near-ties with the max: z a few ulp of x over 1e-4.
        let ties: Vec<f32> = (0..n)
            .map(|i| f32::from_bits(1.0f32.to_bits() - (i as u32 % 7)))
            .collect();
        rows.push(row("within 7 ulp of 1.0", ties, t));
        rows.push(row(
            "uniform ±3e38",
            Values::Huge.generate(&mut rng, n, t),
            t,
        ));
    }
    check_rows("cold_temperature_does_not_overflow", &rows);
}

/// Rows built so that e^z / S lands within a few ulp of 2^-126 for many entries,
/// with S = k (k copies of the max), at t = 1 and 0.7: no output may be subnormal.
#[test]
fn no_subnormal_outputs_near_the_cutoff() {
    let mut rows = Vec::new();
    for t in [1.0f32, 0.7] {
        for k in [1usize, 3, 1000] {
            // z = ln(k · 2^-126) is where e^z / k crosses 2^-126.
            let z0 = (k as f64).ln() + (f32::MIN_POSITIVE as f64).ln();
            let center = (z0 * t as f64) as f32;
            let mut x = vec![0.0f32; k];
            let below = (0..700).map(|i| f32::from_bits(center.to_bits() + i));
            let above = (1..700).map(|i| f32::from_bits(center.to_bits() - i));
            x.extend(below.chain(above));
            rows.push(row(
                format!("{k} × max 0, then z around ln({k}·2^-126)"),
                x,
                t,
            ));
        }
    }
    let mut rng = Rng::new(6);
    for n in [2, 17, 64, 193, 2049, 4099] {
        rows.push(row(
            "near-exp-cutoff",
            Values::NearCutoff.generate(&mut rng, n, 1.0),
            1.0,
        ));
    }
    check_rows("no_subnormal_outputs_near_the_cutoff", &rows);
}

/// The kernels skip their per-element underflow tests when the row's minimum
/// shows that no exp (z ≥ exp cutoff) and no output (e^z / S ≥ 2^-126) can
/// fall below the normal range. Rows whose minimum sits a few ulp either side
/// of each threshold check that the choice is made on the safe side.
#[test]
fn rows_whose_minimum_sits_at_an_underflow_threshold() {
    let mut rows = Vec::new();
    for t in [1.0f32, 0.7, 3.0] {
        for k in [1usize, 5] {
            // exp's own cutoff, and where e^z / k crosses 2^-126.
            let thresholds = [
                ("exp cutoff", softmax_kernels::exp::CUTOFF as f64),
                (
                    "output floor",
                    (k as f64).ln() + (f32::MIN_POSITIVE as f64).ln(),
                ),
            ];
            for (what, z0) in thresholds {
                let center = (z0 * t as f64) as f32;
                for side in [-1i64, 1] {
                    // Entries from `center` towards 0 (side 1) or a few ulp past it.
                    let start = center.to_bits() as i64 + side * 3;
                    let mut x = vec![0.0f32; k];
                    x.extend((0..300).map(|i| f32::from_bits((start - i) as u32)));
                    x.extend((0..300).map(|i| center * (i as f32 / 300.0)));
                    let name = format!("{k} × max 0, min near {what} ({side:+})");
                    rows.push(row(name, x, t));
                }
            }
        }
    }
    check_rows("rows_whose_minimum_sits_at_an_underflow_threshold", &rows);
}

/// Any finite t > 0 is valid: the smallest normal and subnormal temperatures
/// (1/t overflows f32) and the largest (1/t is subnormal).
#[test]
fn extreme_valid_temperatures() {
    // A subnormal t has no finite f32 reciprocal and is refused (tests/errors.rs).
    let mut rows = Vec::new();
    for t in [f32::MIN_POSITIVE, 1e30, f32::MAX] {
        for n in [1, 2, 3, 17, 64, 193] {
            let mut rng = Rng::for_case(&[10, n as u64, t.to_bits() as u64]);
            rows.push(row("uniform [-10, 10]", uniform(&mut rng, n), t));
        }
    }
    check_rows("extreme_valid_temperatures", &rows);
}

/// The emulated tokens exist on every CPU; the skipped ISAs are only those this
/// CPU lacks, and Scalar always runs.
#[test]
fn backends_cover_every_available_isa() {
    let (backends, skipped) = Backend::available();
    // With SOFTMAX_TEST_BACKENDS set, only the ISAs it names (each available,
    // or the harness would have failed) are listed.
    if common::requested_backends().is_none() {
        assert!(backends.contains(&Backend::Isa(Isa::Scalar)));
    }
    for isa in Isa::ALL {
        let runs = isa.is_available() && common::requested(isa.name());
        assert_eq!(
            backends.contains(&Backend::Isa(isa)),
            runs,
            "{isa}: listed iff available (and requested)"
        );
        assert_eq!(
            skipped.contains(&isa),
            !runs,
            "{isa}: skipped iff not listed"
        );
    }
}
