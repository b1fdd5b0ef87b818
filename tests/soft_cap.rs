//! The soft-cap on logits, v = c·tanh(x/c) before the temperature, as an
//! option of `Softmax` (forward, backward, Jacobian), `CrossEntropy` and
//! `Sampler`: against an f64 reference of the formula on every backend, the
//! special values (a −inf logit stays hidden, +inf becomes c), half types,
//! and the errors.

// The references index rows by class, as the formulas do.
#![allow(clippy::needless_range_loop)]

use crate::common::bounds::{attention_bound, log_softmax_bound, logsumexp_bound, U};
use crate::common::training::{backward_reference, TINY};
use crate::common::{Backend, Rng, Sweep};
use half::{bf16, f16};
use softmax::{
    Algorithm, CrossEntropy, Element, Error, Parallelism, Reduction, Rows, RowsMut, Sampler,
    Softmax,
};
use softmax_kernels::{
    AnySliceMut, Backward, Forward, Labels, LogSumExp, LossOptions, Method, Output, Strided,
    StridedMut, Targets, Temperature,
};

/// (cap, temperature) pairs: Gemma 2's final cap, a tight one, and t ≠ 1.
const CAPS: [(f32, f32); 4] = [(30.0, 1.0), (30.0, 0.7), (5.0, 2.0), (1.0, 1.0)];

fn options(backend: Backend, c: f32, t: f32, algorithm: Algorithm) -> Softmax {
    let sm = Softmax::new()
        .with_temperature(t)
        .unwrap()
        .with_soft_cap(c)
        .unwrap()
        .with_algorithm(algorithm)
        .with_parallelism(Parallelism::Serial);
    match backend {
        Backend::Isa(isa) => sm.with_isa(isa).unwrap(),
        _ => sm,
    }
}

fn method(algorithm: Algorithm) -> Method {
    match algorithm {
        Algorithm::Online => Method::Online,
        _ => Method::ThreePass,
    }
}

/// Softmax or log-softmax of `x` into `y` (in place on `y` when `x` is
/// `None`): the public API on an ISA, the kernel job on an emulated token.
fn forward<I: Element, O: Element>(
    backend: Backend,
    sm: &Softmax,
    output: Output,
    x: Option<&[I]>,
    y: &mut [O],
) {
    if let Backend::Isa(isa) = backend {
        let result = match (output, x) {
            (Output::Softmax, Some(x)) => sm.softmax(x, y),
            (Output::Softmax, None) => sm.softmax_in_place(y),
            (Output::LogSoftmax, Some(x)) => sm.log_softmax(x, y),
            (Output::LogSoftmax, None) => sm.log_softmax_in_place(y),
        };
        return result.unwrap_or_else(|e| panic!("{isa}: {e}"));
    }
    let n = y.len();
    backend.vectorize(Forward {
        output,
        method: method(sm.algorithm()),
        temperature: Temperature::default(),
        cap: sm.kernel_soft_cap(),
        x: x.map(|x| Strided::new(I::any(x), 1, n, n)),
        y: StridedMut::new(O::any_mut(y), 1, n, n),
    });
}

fn logsumexp(backend: Backend, sm: &Softmax, x: &[f32]) -> f32 {
    if let Backend::Isa(_) = backend {
        return sm.logsumexp(x).unwrap();
    }
    let n = x.len();
    let mut out = [f32::NAN];
    backend.vectorize(LogSumExp {
        method: method(sm.algorithm()),
        temperature: Temperature::new(sm.temperature()),
        cap: sm.kernel_soft_cap(),
        x: Strided::new(x, 1, n, n),
        out: AnySliceMut::F32(&mut out),
    });
    out[0]
}

/// The exact capped row of finite or −inf logits: v = (c/t)·tanh(x/c).
struct Capped {
    v: Vec<f64>,
    max: f64,
    /// ln Σ e^(v − max).
    ln_sum: f64,
    /// |v − v*| ≤ size·U for the computed v: the tanh's 2 steps, the
    /// roundings of 1/c, c/t and the products (7 in all, 8 taken).
    size: Vec<f64>,
    worst: f64,
}

impl Capped {
    fn new(x: &[f32], c: f32, t: f32) -> Self {
        let (c, t) = (c as f64, t as f64);
        let v: Vec<f64> = x
            .iter()
            .map(|&x| match x {
                f32::NEG_INFINITY => f64::NEG_INFINITY,
                x => c / t * (x as f64 / c).tanh(),
            })
            .collect();
        let max = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let sum: f64 = v.iter().map(|v| (v - max).exp()).sum();
        let size: Vec<f64> = v.iter().map(|v| 8.0 * v.abs()).collect();
        let worst = size
            .iter()
            .filter(|s| s.is_finite())
            .fold(0.0f64, |m, s| m.max(*s));
        Self {
            v,
            max,
            ln_sum: sum.ln(),
            size,
            worst,
        }
    }
    fn z(&self, j: usize) -> f64 {
        self.v[j] - self.max
    }
    fn softmax(&self, j: usize) -> f64 {
        (self.z(j) - self.ln_sum).exp()
    }
    fn log_softmax(&self, j: usize) -> f64 {
        self.z(j) - self.ln_sum
    }
}

/// A row of normal logits (σ = `sigma`) with every 13th hidden by −inf.
fn logits(rng: &mut Rng, n: usize, sigma: f64) -> Vec<f32> {
    (0..n)
        .map(|j| match j % 13 == 12 {
            true => f32::NEG_INFINITY,
            false => rng.normal(sigma),
        })
        .collect()
}

/// Softmax, log-softmax (out of place and in place) and logsumexp of capped
/// rows on every backend and algorithm, against the f64 formula.
#[test]
fn capped_forward_matches_the_f64_formula() {
    let mut sweep = Sweep::new("soft-cap: forward");
    for backend in sweep.backends() {
        for (c, t) in CAPS {
            for n in [1usize, 3, 8, 17, 64, 1000, 4099] {
                let mut rng = Rng::for_case(&[n as u64, c.to_bits() as u64, t.to_bits() as u64]);
                let mut x = logits(&mut rng, n, 2.0 * c as f64);
                x[0] = x[0].abs(); // at least one visible logit
                let r = Capped::new(&x, c, t);
                for algorithm in [Algorithm::ThreePass, Algorithm::Online] {
                    let sm = options(backend, c, t, algorithm);
                    let what = format!("{} c {c} t {t} n {n} {algorithm:?}", backend.name());
                    for output in [Output::Softmax, Output::LogSoftmax] {
                        let mut out = vec![f32::NAN; n];
                        forward(backend, &sm, output, Some(&x), &mut out);
                        let mut in_place = x.clone();
                        forward::<f32, f32>(backend, &sm, output, None, &mut in_place);
                        let same = out
                            .iter()
                            .zip(&in_place)
                            .all(|(a, b)| a.to_bits() == b.to_bits());
                        sweep.expect(same, || format!("{what} {output:?}: in place differs"));
                        for (j, &y) in out.iter().enumerate() {
                            let (y, z) = (y as f64, r.z(j));
                            let (want, bound) = match output {
                                Output::Softmax => {
                                    let want = r.softmax(j);
                                    (want, attention_bound(z, r.size[j], r.worst, want))
                                }
                                Output::LogSoftmax => {
                                    let want = r.log_softmax(j);
                                    let logits = 2.0 * (r.size[j] + r.worst) * U;
                                    (want, log_softmax_bound(1.0, z, want) + logits)
                                }
                            };
                            // A hidden logit: exactly 0 (−inf as a log-probability).
                            let ok = match r.v[j] == f64::NEG_INFINITY {
                                false => (y - want).abs() <= bound,
                                true => y == want,
                            };
                            sweep.expect(ok, || {
                                format!(
                                    "{what} {output:?}: [{j}] = {y:e}, want {want:e} ± {bound:e}"
                                )
                            });
                        }
                    }
                    let got = logsumexp(backend, &sm, &x) as f64;
                    let want = t as f64 * (r.max + r.ln_sum);
                    let finite = x.iter().filter(|v| v.is_finite()).count();
                    let bound =
                        t as f64 * (logsumexp_bound(1.0, r.max as f32, finite) + 2.0 * r.worst * U);
                    sweep.expect((got - want).abs() <= bound, || {
                        format!("{what} logsumexp = {got:e}, want {want:e} ± {bound:e}")
                    });
                }
            }
        }
    }
    sweep.finish();
}

/// Under a cap a −inf logit keeps probability 0 (no leak to −c), +inf
/// becomes c like any large logit, a NaN makes the row NaN, and a row of
/// only −inf follows the plain rules.
#[test]
fn capped_special_values() {
    let mut sweep = Sweep::new("soft-cap: special values");
    let inf = f32::INFINITY;
    for backend in sweep.backends() {
        for algorithm in [Algorithm::ThreePass, Algorithm::Online] {
            let sm = options(backend, 5.0, 1.0, algorithm);
            let what = format!("{} {algorithm:?}", backend.name());
            let x = [1.0f32, inf, -inf, 1000.0];
            let mut y = [f32::NAN; 4];
            forward(backend, &sm, Output::Softmax, Some(&x[..]), &mut y);
            let (big, one) = (5.0f64.exp(), (5.0 * (0.2f64).tanh()).exp());
            let want = [one, big, 0.0, big].map(|e| e / (one + 2.0 * big));
            let ok = y
                .iter()
                .zip(&want)
                .all(|(&y, &w)| (y as f64 - w).abs() <= 16.0 * U * w);
            sweep.expect(ok && y[2] == 0.0, || {
                format!("{what}: {y:?}, want {want:?}")
            });
            let mut l = [f32::NAN; 4];
            forward(backend, &sm, Output::LogSoftmax, Some(&x[..]), &mut l);
            sweep.expect(l[2] == -inf && l[1] == l[3] && l[1] < 0.0, || {
                format!("{what}: log-softmax {l:?}")
            });
            let nan = [1.0f32, f32::NAN, 2.0];
            let mut y = [0.0f32; 3];
            forward(backend, &sm, Output::Softmax, Some(&nan[..]), &mut y);
            sweep.expect(y.iter().all(|v| v.is_nan()), || {
                format!("{what}: NaN row {y:?}")
            });
            let hidden = [-inf; 5];
            let mut y = [f32::NAN; 5];
            forward(backend, &sm, Output::Softmax, Some(&hidden[..]), &mut y);
            sweep.expect(y == [0.0; 5], || format!("{what}: −inf row {y:?}"));
            let lse = logsumexp(backend, &sm, &hidden);
            sweep.expect(lse == -inf, || {
                format!("{what}: −inf row's logsumexp {lse}")
            });
            let lse = logsumexp(backend, &sm, &[inf, inf]);
            let want = 5.0 + 2.0f32.ln();
            sweep.expect((lse - want).abs() <= 1e-6, || {
                format!("{what}: logsumexp of two +inf under cap 5 = {lse}, want {want}")
            });
        }
    }
    sweep.finish();
}

/// f16 and bf16 in and out: the f32 path's result rounded once more, so
/// within one step of the narrow type (in place too).
#[test]
fn capped_half_types_round_the_f32_result() {
    fn check<T: Element + Copy>(
        sweep: &mut Sweep,
        backend: Backend,
        name: &str,
        to: fn(f32) -> T,
        from: fn(T) -> f32,
        bits: fn(T) -> u16,
    ) {
        let mut rng = Rng::for_case(&[7, name.len() as u64]);
        let x: Vec<T> = logits(&mut rng, 300, 40.0).into_iter().map(to).collect();
        let wide: Vec<f32> = x.iter().map(|&v| from(v)).collect();
        for output in [Output::Softmax, Output::LogSoftmax] {
            let sm = options(backend, 30.0, 0.8, Algorithm::ThreePass);
            let mut want = vec![0.0f32; wide.len()];
            forward(backend, &sm, output, Some(&wide), &mut want);
            let mut got = vec![to(0.0); x.len()];
            forward(backend, &sm, output, Some(&x), &mut got);
            let mut in_place = x.clone();
            forward::<T, T>(backend, &sm, output, None, &mut in_place);
            for (j, (&w, (&g, &p))) in want.iter().zip(got.iter().zip(&in_place)).enumerate() {
                let step = bits(to(w)).abs_diff(bits(g));
                sweep.expect(step <= 1 && bits(g) == bits(p), || {
                    format!(
                        "{} {name} {output:?}: [{j}] = {} (in place {}), f32 path {w:e}",
                        backend.name(),
                        from(g),
                        from(p)
                    )
                });
            }
        }
    }
    let mut sweep = Sweep::new("soft-cap: f16 and bf16");
    for backend in sweep.backends() {
        check(
            &mut sweep,
            backend,
            "f16",
            f16::from_f32,
            f16::to_f32,
            f16::to_bits,
        );
        check(
            &mut sweep,
            backend,
            "bf16",
            bf16::from_f32,
            bf16::to_f32,
            bf16::to_bits,
        );
    }
    sweep.finish();
}

/// 1 − tanh²(x/c) in f64 (0 at ±inf).
fn sech2(x: f32, c: f32) -> f64 {
    let ch = (x as f64 / c as f64).cosh();
    1.0 / (ch * ch)
}

/// The backward passes through the cap, given the logits, against the f64
/// gradient of the crate's own forward output; in place too.
#[test]
fn capped_backward_through_the_logits() {
    let mut sweep = Sweep::new("soft-cap: backward");
    for backend in sweep.backends() {
        for (c, t) in CAPS {
            for n in [5usize, 40, 1025] {
                let mut rng = Rng::for_case(&[n as u64, 3, c.to_bits() as u64]);
                let x = logits(&mut rng, n, 2.0 * c as f64);
                let g: Vec<f32> = (0..n).map(|_| rng.uniform(-1.0, 1.0)).collect();
                let sm = options(backend, c, t, Algorithm::ThreePass);
                for output in [Output::Softmax, Output::LogSoftmax] {
                    let what = format!("{} c {c} t {t} n {n} {output:?}", backend.name());
                    let mut y = vec![0.0f32; n];
                    forward(backend, &sm, output, Some(&x), &mut y);
                    let wide = |v: &[f32]| v.iter().map(|&v| v as f64).collect::<Vec<_>>();
                    let r = backward_reference(output, t, &wide(&y), &wide(&g));
                    let mut dx = vec![f32::NAN; n];
                    let mut in_place = g.clone();
                    match backend {
                        Backend::Isa(_) => {
                            let (out, inp) = match output {
                                Output::Softmax => (
                                    sm.softmax_backward_with_logits(&x, &y, &g, &mut dx),
                                    sm.softmax_backward_with_logits_in_place(&x, &y, &mut in_place),
                                ),
                                Output::LogSoftmax => (
                                    sm.log_softmax_backward_with_logits(&x, &y, &g, &mut dx),
                                    sm.log_softmax_backward_with_logits_in_place(
                                        &x,
                                        &y,
                                        &mut in_place,
                                    ),
                                ),
                            };
                            out.and(inp).unwrap();
                        }
                        _ => {
                            for (gi, d) in [(Some(&g[..]), &mut dx), (None, &mut in_place)] {
                                backend.vectorize(Backward {
                                    output,
                                    temperature: Temperature::new(t),
                                    cap: Some((
                                        sm.kernel_soft_cap().unwrap(),
                                        Strided::new(&x[..], 1, n, n),
                                    )),
                                    y: Strided::new(&y[..], 1, n, n),
                                    g: gi.map(|g| Strided::new(g, 1, n, n)),
                                    dx: StridedMut::new(&mut d[..], 1, n, n),
                                });
                            }
                        }
                    }
                    for j in 0..n {
                        let s = sech2(x[j], c);
                        let want = r.dx[j] * s;
                        let bound = r.bound[j] * s + 16.0 * U * want.abs() + TINY;
                        let got = dx[j] as f64;
                        sweep.expect((got - want).abs() <= bound && dx[j].to_bits() == in_place[j].to_bits(), || {
                            format!("{what}: dx[{j}] = {got:e} (in place {:e}), want {want:e} ± {bound:e}", in_place[j])
                        });
                    }
                }
            }
        }
    }
    sweep.finish();
}

/// The capped Jacobian, (diag(y) − y yᵀ)/t · diag(1 − tanh²(x/c)), on every ISA.
#[test]
fn capped_jacobian() {
    let mut sweep = Sweep::new("soft-cap: Jacobian");
    sweep.retain_backends(|b| matches!(b, Backend::Isa(_)));
    for backend in sweep.backends() {
        let (c, t) = (4.0f32, 0.5f32);
        let sm = options(backend, c, t, Algorithm::Auto);
        let x = [0.5f32, -3.0, 9.0, 2.0, f32::NEG_INFINITY, 1.0, -0.25];
        let k = x.len();
        let mut y = vec![0.0f32; k];
        sm.softmax(&x, &mut y).unwrap();
        let mut jac = vec![f32::NAN; k * k];
        sm.softmax_jacobian_with_logits(&x, &y, &mut jac).unwrap();
        for i in 0..k {
            for j in 0..k {
                let (yi, yj) = (y[i] as f64, y[j] as f64);
                let d = if i == j { yi } else { 0.0 };
                let want = (d - yi * yj) / t as f64 * sech2(x[j], c);
                let bound = 16.0 * U * (d + yi * yj) / t as f64 + TINY;
                let got = jac[i * k + j] as f64;
                sweep.expect((got - want).abs() <= bound, || {
                    format!(
                        "{}: J[{i}][{j}] = {got:e}, want {want:e} ± {bound:e}",
                        backend.name()
                    )
                });
            }
        }
    }
    sweep.finish();
}

/// Capped cross-entropy (labels; smoothing; mean and sum; gradient out of
/// place and in place, f32 and f16) against the f64 loss and gradient of
/// the capped logits.
#[test]
fn capped_cross_entropy() {
    let mut sweep = Sweep::new("soft-cap: cross-entropy");
    let (rows, cols) = (6usize, 700usize);
    for backend in sweep.backends() {
        for (c, t) in CAPS {
            for (smoothing, reduction) in [(0.0f32, Reduction::Mean), (0.1, Reduction::Sum)] {
                for algorithm in [Algorithm::ThreePass, Algorithm::Online] {
                    let mut rng = Rng::for_case(&[c.to_bits() as u64, t.to_bits() as u64]);
                    let mut x: Vec<f32> = (0..rows)
                        .flat_map(|_| logits(&mut rng, cols, 2.0 * c as f64))
                        .collect();
                    let labels: Vec<i64> = (0..rows as i64)
                        .map(|r| if r == 2 { -100 } else { r * 97 % cols as i64 })
                        .collect();
                    for (r, &l) in labels.iter().enumerate() {
                        if l >= 0 {
                            x[r * cols + l as usize] = rng.normal(c as f64); // a visible label
                        }
                    }
                    let what = format!(
                        "{} c {c} t {t} ε {smoothing} {reduction:?} {algorithm:?}",
                        backend.name()
                    );
                    let counted = labels.iter().filter(|&&l| l >= 0).count() as f64;
                    let scale = match reduction {
                        Reduction::Mean => 1.0 / counted,
                        _ => 1.0,
                    };
                    let (loss, grad, in_place, losses) = run_cross_entropy(
                        backend, c, t, smoothing, reduction, algorithm, &x, &labels, cols,
                    );
                    let mut want_total = 0.0;
                    for r in 0..rows {
                        let row = &x[r * cols..(r + 1) * cols];
                        let got_g = &grad[r * cols..(r + 1) * cols];
                        if labels[r] < 0 {
                            sweep.expect(
                                losses[r] == 0.0 && got_g.iter().all(|&g| g == 0.0),
                                || format!("{what}: ignored row {r}"),
                            );
                            continue;
                        }
                        let cap = Capped::new(row, c, t);
                        let label = labels[r] as usize;
                        let eps = smoothing as f64;
                        let a =
                            |j: usize| (1.0 - eps) * (j == label) as u8 as f64 + eps / cols as f64;
                        let want: f64 = -(0..cols)
                            .map(|j| match a(j) {
                                0.0 => 0.0,
                                w if cap.v[j] == f64::NEG_INFINITY => w * -1e300,
                                w => w * cap.log_softmax(j),
                            })
                            .sum::<f64>();
                        let want = if want.abs() > 1e200 {
                            f64::INFINITY
                        } else {
                            want
                        };
                        want_total += want;
                        let bound =
                            16.0 * U * want.abs() + 4.0 * (cap.worst + cap.max.abs() + 8.0) * U;
                        let got = losses[r] as f64;
                        sweep.expect((got - want).abs() <= bound || got == want, || {
                            format!("{what}: row {r} loss {got:e}, want {want:e} ± {bound:e}")
                        });
                        for j in 0..cols {
                            let p = cap.softmax(j);
                            let dv = scale * (p - a(j));
                            let want = dv * sech2(row[j], c) / t as f64;
                            let s = sech2(row[j], c) / t as f64;
                            let rel = (16.0 + 2.0 * (cap.size[j] + cap.worst)) * U;
                            // A probability below 2⁻¹²⁶ may be flushed to 0.
                            let flushed = 2.0 * f32::MIN_POSITIVE as f64 * scale * s.max(1.0);
                            let bound = scale * (p + a(j)) * rel * s + flushed + TINY;
                            let got = got_g[j] as f64;
                            let same = got_g[j].to_bits() == in_place[r * cols + j].to_bits();
                            let close = match cap.v[j] == f64::NEG_INFINITY {
                                false => (got - want).abs() <= bound,
                                true => got == 0.0,
                            };
                            sweep.expect(close && same, || {
                                format!("{what}: row {r} grad[{j}] = {got:e} (in place {:e}), want {want:e} ± {bound:e}", in_place[r * cols + j])
                            });
                        }
                    }
                    let want = want_total * scale;
                    let close = (loss as f64 - want).abs() <= 1e-5 * want.abs() + 1e-6;
                    sweep.expect(close || loss as f64 == want, || {
                        format!("{what}: loss {loss}, want {want}")
                    });
                    // f16 logits, gradient in place: the f32 result of the same logits, rounded once more.
                    if let Backend::Isa(_) = backend {
                        let x16: Vec<f16> = x.iter().map(|&v| f16::from_f32(v)).collect();
                        let wide: Vec<f32> = x16.iter().map(|v| v.to_f32()).collect();
                        let (l32, g32, _, _) = run_cross_entropy(
                            backend, c, t, smoothing, reduction, algorithm, &wide, &labels, cols,
                        );
                        let ce = cross_entropy(backend, c, t, smoothing, reduction, algorithm);
                        let mut g16 = x16.clone();
                        let l16 = ce
                            .loss_and_grad_in_place(
                                RowsMut::contiguous(&mut g16, cols).unwrap(),
                                &labels,
                                None,
                            )
                            .unwrap();
                        let steps = g16
                            .iter()
                            .zip(&g32)
                            .map(|(a, &b)| a.to_bits().abs_diff(f16::from_f32(b).to_bits()))
                            .max()
                            .unwrap();
                        sweep.expect(l16 == l32 && steps <= 1, || {
                            format!("{what}: f16 loss {l16} vs {l32}, grad {steps} steps off")
                        });
                    }
                }
            }
        }
    }
    sweep.finish();
}

fn cross_entropy(
    backend: Backend,
    c: f32,
    t: f32,
    smoothing: f32,
    reduction: Reduction,
    algorithm: Algorithm,
) -> CrossEntropy<'static> {
    let ce = CrossEntropy::new()
        .with_temperature(t)
        .unwrap()
        .with_soft_cap(c)
        .unwrap()
        .with_label_smoothing(smoothing)
        .unwrap()
        .with_reduction(reduction)
        .with_algorithm(algorithm)
        .with_parallelism(Parallelism::Serial);
    match backend {
        Backend::Isa(isa) => ce.with_isa(isa).unwrap(),
        _ => ce,
    }
}

/// (reduced loss, gradient, gradient computed in place, row losses).
#[allow(clippy::too_many_arguments)]
fn run_cross_entropy(
    backend: Backend,
    c: f32,
    t: f32,
    smoothing: f32,
    reduction: Reduction,
    algorithm: Algorithm,
    x: &[f32],
    labels: &[i64],
    cols: usize,
) -> (f32, Vec<f32>, Vec<f32>, Vec<f32>) {
    let rows = labels.len();
    let mut grad = vec![f32::NAN; x.len()];
    let mut in_place = x.to_vec();
    let mut losses = vec![f32::NAN; rows];
    let mut losses_in_place = vec![f32::NAN; rows];
    if let Backend::Isa(_) = backend {
        let ce = cross_entropy(backend, c, t, smoothing, reduction, algorithm);
        let logits = Rows::contiguous(x, cols).unwrap();
        let loss = ce
            .loss_and_grad(
                logits,
                labels,
                RowsMut::contiguous(&mut grad, cols).unwrap(),
                Some(&mut losses),
            )
            .unwrap();
        let again = ce
            .loss_and_grad_in_place(
                RowsMut::contiguous(&mut in_place, cols).unwrap(),
                labels,
                Some(&mut losses_in_place),
            )
            .unwrap();
        assert_eq!(loss, again, "in place");
        return (loss, grad, in_place, losses);
    }
    let counted = labels.iter().filter(|&&l| l >= 0).count() as f64;
    let options = LossOptions {
        temperature: Temperature::new(t),
        smoothing,
        weights: None,
        weight_sum: cols as f64,
        grad_scale: match reduction {
            Reduction::Mean => 1.0 / counted,
            _ => 1.0,
        },
        cap: Softmax::new()
            .with_temperature(t)
            .unwrap()
            .with_soft_cap(c)
            .unwrap()
            .kernel_soft_cap(),
    };
    let targets = || Targets::Labels {
        labels: Labels::I64(labels),
        ignore: Some(-100),
    };
    let sum = backend.vectorize(softmax_kernels::CrossEntropy {
        options,
        method: method(algorithm),
        targets: targets(),
        x: Some(Strided::new(x, rows, cols, cols)),
        grad: Some(StridedMut::new(&mut grad[..], rows, cols, cols)),
        losses: Some(&mut losses),
    });
    backend.vectorize(softmax_kernels::CrossEntropy {
        options,
        method: method(algorithm),
        targets: targets(),
        x: None,
        grad: Some(StridedMut::new(&mut in_place[..], rows, cols, cols)),
        losses: Some(&mut losses_in_place),
    });
    let loss = match reduction {
        Reduction::Mean => sum / counted,
        _ => sum,
    };
    (loss as f32, grad, in_place, losses)
}

/// The capped sampler draws the same tokens on every backend, its
/// truncated log-probabilities are those of the capped logits, a −inf logit
/// is never drawn, and greedy decoding takes the first of the capped ties.
#[test]
fn capped_sampling() {
    let mut sweep = Sweep::new("soft-cap: sampling");
    let (rows, cols) = (8usize, 3000usize);
    let mut rng = Rng::for_case(&[11]);
    let x: Vec<f32> = (0..rows)
        .flat_map(|_| logits(&mut rng, cols, 20.0))
        .collect();
    let sampler = Sampler::new(5)
        .with_soft_cap(30.0)
        .unwrap()
        .with_temperature(0.8)
        .unwrap()
        .with_top_k(40)
        .unwrap()
        .with_top_p(0.9)
        .unwrap();
    let mut first: Option<Vec<usize>> = None;
    for backend in sweep.backends() {
        let what = backend.name();
        let mut tokens = vec![usize::MAX; rows];
        for step in 0..4 {
            backend
                .sample(&sampler, &x, cols, step, &mut tokens, None)
                .unwrap();
            for (r, &tok) in tokens.iter().enumerate() {
                sweep.expect(x[r * cols + tok].is_finite(), || {
                    format!("{what}: row {r} drew a hidden token")
                });
            }
            match (&first, step) {
                (None, 0) => first = Some(tokens.clone()),
                (Some(f), 0) => sweep.expect(*f == tokens, || {
                    format!("{what}: tokens {tokens:?}, first backend {f:?}")
                }),
                _ => {}
            }
        }
        // The kept distribution of row 0 against the f64 capped logits.
        let row = &x[..cols];
        let cap = Capped::new(row, 30.0, 0.8);
        let mut kept = vec![f32::NAN; cols];
        backend
            .sample(&sampler, row, cols, 0, &mut tokens[..1], Some(&mut kept))
            .unwrap();
        let mut order: Vec<usize> = (0..cols).filter(|&j| cap.v[j].is_finite()).collect();
        order.sort_by(|&a, &b| cap.v[b].total_cmp(&cap.v[a]));
        let top: Vec<usize> = order[..40].to_vec();
        let lse = cap.max
            + top
                .iter()
                .map(|&j| (cap.v[j] - cap.max).exp())
                .sum::<f64>()
                .ln();
        let (mut mass, mut nucleus) = (0.0, Vec::new());
        for &j in &top {
            if mass >= 0.9 {
                break;
            }
            mass += (cap.v[j] - lse).exp();
            nucleus.push(j);
        }
        let lse_n = cap.max
            + nucleus
                .iter()
                .map(|&j| (cap.v[j] - cap.max).exp())
                .sum::<f64>()
                .ln();
        for j in 0..cols {
            let want = match nucleus.contains(&j) {
                true => cap.v[j] - lse_n,
                false => f64::NEG_INFINITY,
            };
            let got = kept[j] as f64;
            let bound = (64.0 + 4.0 * cap.worst) * U * (1.0 + want.abs());
            let ok = match want.is_finite() {
                true => (got - want).abs() <= bound,
                false => got == want,
            };
            sweep.expect(ok, || {
                format!("{what}: kept[{j}] = {got:e}, want {want:e} ± {bound:e}")
            });
        }
        // Greedy: the argmax of the capped logits; saturated ones tie at c.
        let greedy = Sampler::new(1)
            .with_soft_cap(1.0)
            .unwrap()
            .with_temperature(0.0)
            .unwrap();
        let saturated = [0.5f32, 500.0, 600.0, f32::INFINITY];
        let mut tok = [usize::MAX];
        backend
            .sample(&greedy, &saturated, 4, 0, &mut tok, None)
            .unwrap();
        sweep.expect(tok[0] == 1, || {
            format!("{what}: greedy over capped ties drew {}", tok[0])
        });
    }
    sweep.finish();
}

/// Bad caps are errors, and the calls that need the logits under a cap say
/// so, writing nothing.
#[test]
fn soft_cap_errors() {
    for c in [0.0f32, -1.0, f32::NAN, f32::INFINITY, 1e-39] {
        let err = Error::InvalidSoftCap {
            cap: c,
            temperature: 1.0,
        };
        let got = Softmax::new().with_soft_cap(c).unwrap_err();
        assert!(
            matches!(got, Error::InvalidSoftCap { .. }),
            "cap {c}: {got:?} (want {err:?})"
        );
        assert!(Sampler::new(0).with_soft_cap(c).is_err(), "sampler cap {c}");
        assert!(
            CrossEntropy::new().with_soft_cap(c).is_err(),
            "cross-entropy cap {c}"
        );
    }
    // c / t overflows: checked whichever is set second.
    assert!(Softmax::new()
        .with_temperature(1e-30)
        .unwrap()
        .with_soft_cap(1e30)
        .is_err());
    assert!(Softmax::new()
        .with_soft_cap(1e30)
        .unwrap()
        .with_temperature(1e-30)
        .is_err());
    let sm = Softmax::new().with_soft_cap(5.0).unwrap();
    assert_eq!(sm.soft_cap(), Some(5.0));
    let (y, g) = ([0.25f32; 4], [1.0f32; 4]);
    let mut dx = [7.0f32; 4];
    assert_eq!(
        sm.softmax_backward(&y, &g, &mut dx),
        Err(Error::LogitsRequired)
    );
    assert_eq!(
        sm.log_softmax_backward(&y, &g, &mut dx),
        Err(Error::LogitsRequired)
    );
    let mut jac = [7.0f32; 16];
    assert_eq!(
        sm.softmax_jacobian(&y, &mut jac),
        Err(Error::LogitsRequired)
    );
    assert!(dx == [7.0; 4] && jac == [7.0; 16], "written on an error");
    assert!(matches!(
        sm.softmax_backward_with_logits(&[0.0; 3], &y, &g, &mut dx),
        Err(Error::LengthMismatch { .. })
    ));
    // Without a cap the logits are checked and not read: the plain gradient.
    let plain = Softmax::new();
    let mut with_x = [0.0f32; 4];
    plain
        .softmax_backward_with_logits(&[f32::NAN; 4], &[0.1, 0.2, 0.3, 0.4], &g, &mut with_x)
        .unwrap();
    let mut without = [0.0f32; 4];
    plain
        .softmax_backward(&[0.1, 0.2, 0.3, 0.4], &g, &mut without)
        .unwrap();
    assert_eq!(with_x, without);
}
