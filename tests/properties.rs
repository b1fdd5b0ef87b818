//! Properties of softmax as the literature states them, on random rows, for
//! every backend and algorithm:
//!
//! - translation invariance: softmax(x + c) = softmax(x);
//! - order preservation: x_i < x_j ⇒ y_i ≤ y_j (and x_i = x_j ⇒ y_i = y_j);
//! - a distribution: every y_i in [0, 1], Σ y = 1 (log-softmax ≤ 0);
//! - scaling changes the output, and temperature undoes it:
//!   softmax(2x) ≠ softmax(x), softmax(2x / 2) = softmax(x).
//!
//! "=" is within the accuracy bound of the common module, against the f64
//! reference of the row.

use crate::common;

use common::bounds::{log_softmax_bound, logsumexp_bound, softmax_bound, SUM_BOUND};
use common::oracle::sum_f64;
use common::{reference, Backend, Rng, Sweep, Values, ALGORITHMS};
use softmax::Algorithm;

/// Lengths for the property rows: short, around vector widths, and one online block and more.
const LENGTHS: [usize; 8] = [2, 3, 7, 16, 33, 100, 193, 2500];

fn context(backend: Backend, algorithm: Algorithm, n: usize, what: &str) -> String {
    format!(
        "[isa {} | algorithm {}] len {n} {what}",
        backend.name(),
        algorithm.name()
    )
}

/// Runs `property` for every backend, algorithm and length, collecting failures.
fn for_every_case(title: &str, mut property: impl FnMut(&mut Sweep, Backend, Algorithm, usize)) {
    let mut sweep = Sweep::new(title);
    for backend in sweep.backends() {
        for algorithm in ALGORITHMS {
            for n in LENGTHS {
                property(&mut sweep, backend, algorithm, n);
            }
        }
    }
    sweep.finish();
}

/// Small integers: x + c is exact in f32 for the shifts used, so both rows have
/// the same exact softmax.
#[test]
fn translation_invariance() {
    for_every_case("translation_invariance", |sweep, backend, algorithm, n| {
        let mut rng = Rng::for_case(&[20, n as u64]);
        let x: Vec<f32> = (0..n).map(|_| rng.below(61) as f32 - 30.0).collect();
        for t in [1.0f32, 0.7] {
            let r = reference(&x, t);
            let base = backend.all_ops(algorithm, t, &x);
            for c in [1.0f32, -7.0, 1024.0, -65536.0, 1048576.0] {
                let shifted: Vec<f32> = x.iter().map(|v| v + c).collect();
                let moved = backend.all_ops(algorithm, t, &shifted);
                let ctx = context(backend, algorithm, n, &format!("t {t} shift {c}"));
                for (i, &xi) in x.iter().enumerate() {
                    let (y, yc, want, z) =
                        (base.softmax[i], moved.softmax[i], r.softmax[i], r.z[i]);
                    let bound = softmax_bound(t, z, want);
                    sweep.expect((yc as f64 - want).abs() <= bound, || {
                        format!(
                            "{ctx}: softmax(x + c)[{i}] = {yc:e}, exact softmax(x)[{i}] = \
                             {want:e} (softmax(x)[{i}] = {y:e}); x[{i}] = {xi}, bound {bound:e}"
                        )
                    });
                    let (l, lc, want) =
                        (base.log_softmax[i], moved.log_softmax[i], r.log_softmax[i]);
                    let bound = log_softmax_bound(t, z, want);
                    sweep.expect((lc as f64 - want).abs() <= bound, || {
                        format!(
                            "{ctx}: log_softmax(x + c)[{i}] = {lc:e}, exact log_softmax(x)[{i}] \
                             = {want:e} (log_softmax(x)[{i}] = {l:e}); bound {bound:e}"
                        )
                    });
                }
                // logsumexp moves with the shift: LSE(x + c) = LSE(x) + c.
                let want = r.logsumexp + c as f64;
                let bound = logsumexp_bound(t, r.max + c, n);
                sweep.expect((moved.logsumexp as f64 - want).abs() <= bound, || {
                    format!(
                        "{ctx}: logsumexp(x + c) = {:e}, expected logsumexp(x) + c = {want:e}, \
                         bound {bound:e}",
                        moved.logsumexp
                    )
                });
            }
        }
    });
}

/// Rows with many ties (a coarse grid), a wide normal row, and a dense row of
/// consecutive f32 values around the exp range-reduction switch points
/// z = (k + ½) ln 2, where a polynomial's error changes sign.
fn order_rows(n: usize) -> Vec<(&'static str, Vec<f32>)> {
    let mut rng = Rng::for_case(&[21, n as u64]);
    let grid: Vec<f32> = (0..n).map(|_| rng.below(64) as f32 / 8.0 - 4.0).collect();
    let mut dense = vec![0.0f32];
    for k in 0..n.min(40) {
        let switch = -((k as f32) + 0.5) * std::f32::consts::LN_2;
        dense.extend((0..32).map(|d| f32::from_bits(switch.to_bits() + d - 16)));
    }
    vec![
        ("ties on a 1/8 grid", grid),
        ("N(0,30)", Values::Normal30.generate(&mut rng, n, 1.0)),
        (
            "uniform[-10,10]",
            Values::Uniform10.generate(&mut rng, n, 1.0),
        ),
        ("consecutive f32 around z = (k+1/2) ln 2", dense),
    ]
}

#[test]
fn order_preservation() {
    for_every_case("order_preservation", |sweep, backend, algorithm, n| {
        for (what, x) in order_rows(n) {
            let mut order: Vec<usize> = (0..x.len()).collect();
            order.sort_by(|&a, &b| x[a].total_cmp(&x[b]));
            for t in [1.0f32, 2.5] {
                let out = backend.all_ops(algorithm, t, &x);
                let ctx = context(backend, algorithm, x.len(), &format!("{what} t {t}"));
                for (op, y) in [("softmax", &out.softmax), ("log_softmax", &out.log_softmax)] {
                    for pair in order.windows(2) {
                        let (a, b) = (pair[0], pair[1]);
                        let ok = if x[a] < x[b] {
                            y[a] <= y[b]
                        } else {
                            y[a] == y[b]
                        };
                        sweep.expect(ok, || {
                            format!(
                                "{ctx}: {op} breaks the order: x[{a}] = {:e} {} x[{b}] = {:e} \
                                 but y[{a}] = {:e} ({:#010x}), y[{b}] = {:e} ({:#010x})",
                                x[a],
                                if x[a] < x[b] { "<" } else { "=" },
                                x[b],
                                y[a],
                                y[a].to_bits(),
                                y[b],
                                y[b].to_bits()
                            )
                        });
                    }
                }
            }
        }
    });
}

#[test]
fn outputs_form_a_distribution() {
    for_every_case(
        "outputs_form_a_distribution",
        |sweep, backend, algorithm, n| {
            let mut rng = Rng::for_case(&[22, n as u64]);
            for values in [
                Values::Uniform10,
                Values::Normal30,
                Values::Masked30,
                Values::NearCutoff,
            ] {
                let x = values.generate(&mut rng, n, 1.0);
                if x.iter().all(|v| *v == f32::NEG_INFINITY) {
                    continue; // an empty distribution: see special_values.rs
                }
                for t in [1.0f32, 0.7, 2.5] {
                    let out = backend.all_ops(algorithm, t, &x);
                    let ctx = context(backend, algorithm, n, &format!("{} t {t}", values.name()));
                    let bad = out.softmax.iter().position(|y| !(0.0..=1.0).contains(y));
                    sweep.expect(bad.is_none(), || {
                        let i = bad.unwrap();
                        format!(
                            "{ctx}: softmax[{i}] = {:e} is outside [0, 1]; x[{i}] = {:e}",
                            out.softmax[i], x[i]
                        )
                    });
                    let bad = out.log_softmax.iter().position(|l| l.is_nan() || *l > 0.0);
                    sweep.expect(bad.is_none(), || {
                        let i = bad.unwrap();
                        format!(
                            "{ctx}: log_softmax[{i}] = {:e} ({:#010x}) is not ≤ 0; x[{i}] = {:e} \
                             ({:#010x}), row max {:e}, row {x:?}",
                            out.log_softmax[i],
                            out.log_softmax[i].to_bits(),
                            x[i],
                            x[i].to_bits(),
                            x.iter().copied().fold(f32::NEG_INFINITY, f32::max)
                        )
                    });
                    let sum = sum_f64(out.softmax.iter().map(|&y| y as f64));
                    sweep.expect((sum - 1.0).abs() <= SUM_BOUND, || {
                        format!("{ctx}: Σ softmax = {sum:.17}, |Σ − 1| > {SUM_BOUND:e}")
                    });
                }
            }
        },
    );
}

#[test]
fn scaling_changes_the_output_and_temperature_undoes_it() {
    for_every_case(
        "scaling_changes_the_output_and_temperature_undoes_it",
        |sweep, backend, algorithm, n| {
            let mut rng = Rng::for_case(&[23, n as u64]);
            let x: Vec<f32> = (0..n).map(|_| rng.uniform(-3.0, 3.0)).collect();
            let doubled: Vec<f32> = x.iter().map(|v| 2.0 * v).collect(); // exact
            let r = reference(&x, 1.0);
            let ctx = context(backend, algorithm, n, "uniform[-3,3]");
            let plain = backend.all_ops(algorithm, 1.0, &x);
            let sharper = backend.all_ops(algorithm, 1.0, &doubled);
            let undone = backend.all_ops(algorithm, 2.0, &doubled);

            // softmax(2x) is a different distribution: some entry moves by far more than rounding.
            let moved = (0..n).any(|i| {
                let bound = softmax_bound(1.0, r.z[i], r.softmax[i]);
                (sharper.softmax[i] as f64 - plain.softmax[i] as f64).abs() > 100.0 * bound
            });
            sweep.expect(moved, || format!("{ctx}: softmax(2x) equals softmax(x)"));

            // softmax(2x / 2) with t = 2 is softmax(x): within the bound of the t = 2 call.
            for i in 0..n {
                let (want, z) = (r.softmax[i], r.z[i]);
                let (got, base) = (undone.softmax[i], plain.softmax[i]);
                let bound = softmax_bound(2.0, z, want);
                sweep.expect((got as f64 - base as f64).abs() <= bound, || {
                    format!(
                        "{ctx}: softmax(2x, t = 2)[{i}] = {got:e} but softmax(x, t = 1)[{i}] = \
                     {base:e}; exact {want:e}, bound {bound:e}"
                    )
                });
                let (want, got, base) = (
                    r.log_softmax[i],
                    undone.log_softmax[i],
                    plain.log_softmax[i],
                );
                let bound = log_softmax_bound(2.0, z, want);
                sweep.expect((got as f64 - base as f64).abs() <= bound, || {
                    format!(
                    "{ctx}: log_softmax(2x, t = 2)[{i}] = {got:e} but log_softmax(x, t = 1)[{i}] \
                     = {base:e}; bound {bound:e}"
                )
                });
            }
            // t · LSE(2x / t) at t = 2 is 2 · LSE(x).
            let want = 2.0 * r.logsumexp;
            let bound = logsumexp_bound(2.0, 2.0 * r.max, n);
            sweep.expect((undone.logsumexp as f64 - want).abs() <= bound, || {
            format!(
                "{ctx}: logsumexp(2x, t = 2) = {:e}, expected 2 · LSE(x) = {want:e}, bound {bound:e}",
                undone.logsumexp
            )
        });
        },
    );
}
