//! Training-side operations: the softmax and log-softmax backward passes, the
//! softmax Jacobian and the fused cross-entropy (loss and gradient), on every
//! backend (each available ISA through the public API, and the emulated 4-,
//! 8- and 16-lane tokens through kernel jobs):
//!
//! - accuracy against the f64 reference over lengths × offsets × value ranges ×
//!   temperatures, with the bounds of `common::training` (tables printed with
//!   `--nocapture`), in place == out of place bit for bit, guards untouched;
//! - f16 and bf16: the f32 arithmetic on the widened inputs, rounded once, and
//!   within one output ULP (plus the f32 bound) of the f64 reference;
//! - finite differences of f64 composites: each gradient is the true gradient;
//! - special rows (NaN, +inf, all −inf), ignored rows, the empty mean;
//! - strided batches against row-by-row calls; bitwise determinism of totals,
//!   per-row losses and gradients across thread counts;
//! - every error leaves every buffer untouched.

// Element-wise comparisons index several parallel rows at once.
#![allow(clippy::needless_range_loop)]

use crate::common;

use common::inputs::{sentinel, untouched, SENTINEL};
use common::training::{
    backward_reference, loss_reference, softmax_f64, LossConfig, Shape, Table, Target,
};
use common::{Backend, Guarded, Narrow, Rng, Values, EMULATED_TARGET};
use softmax::half::{bf16, f16};
use softmax::{
    Algorithm, CrossEntropy, Error, Isa, Parallelism, Reduction, Rows, RowsMut, Softmax,
};
use softmax_kernels::Output;
use std::sync::Arc;

/// Every length through 3 widest steps + 1 (as the forward matrix).
fn short_lengths() -> Vec<usize> {
    let all: Vec<usize> = (0..=3 * 16 * 4 + 1).collect();
    if EMULATED_TARGET {
        all.into_iter().filter(|n| n % 7 == 0 || *n < 20).collect()
    } else {
        all
    }
}

const SAMPLED_OFFSETS: [usize; 4] = [0, 1, 7, 15];

fn offsets() -> &'static [usize] {
    if EMULATED_TARGET {
        &[0, 7]
    } else {
        &SAMPLED_OFFSETS
    }
}

fn long_lengths() -> &'static [usize] {
    if EMULATED_TARGET {
        &[255, 1021]
    } else {
        &[255, 256, 257, 1021, 1024, 4093, 4096, 65537]
    }
}

fn backends() -> Vec<Backend> {
    Backend::available().0
}

fn output_name(output: Output) -> &'static str {
    match output {
        Output::Softmax => "softmax_backward",
        Output::LogSoftmax => "log_softmax_backward",
    }
}

/// The forward output (softmax or log-softmax of x/t) from the crate, as the
/// backward pass's input.
fn forward(output: Output, t: f32, x: &[f32]) -> Vec<f32> {
    let sm = Softmax::new().with_temperature(t).unwrap();
    let mut y = vec![0.0f32; x.len()];
    match output {
        Output::Softmax => sm.softmax(x, &mut y),
        Output::LogSoftmax => sm.log_softmax(x, &mut y),
    }
    .unwrap();
    y
}

fn widen<T: Narrow>(v: &[T]) -> Vec<f64> {
    v.iter().map(|v| v.to_f64()).collect()
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter()
        .map(|v| {
            if v.is_nan() {
                f32::NAN.to_bits()
            } else {
                v.to_bits()
            }
        })
        .collect()
}

/// One backward case on every backend: out of place and in place at `offset`,
/// guards, in place == out of place, every element against the reference.
#[allow(clippy::too_many_arguments)]
fn check_backward(
    table: &mut Table,
    backends: &[Backend],
    output: Output,
    t: f32,
    values: &str,
    offset: usize,
    y: &[f32],
    g: &[f32],
) {
    let n = y.len();
    let r = backward_reference(output, t, &widen(y), &widen(g));
    let op = output_name(output);
    let yb = Guarded::with_values(y, offset);
    let gb = Guarded::with_values(g, offset);
    for &backend in backends {
        let ctx = || format!("len {n} offset {offset} values {values} t {t:e} f32");
        let mut dx = Guarded::new(n, offset);
        backend.backward(
            output,
            t,
            Parallelism::Serial,
            Shape::row(n),
            yb.values(),
            Some(gb.values()),
            dx.values_mut(),
        );
        let mut inplace = Guarded::with_values(g, offset);
        backend.backward(
            output,
            t,
            Parallelism::Serial,
            Shape::row(n),
            yb.values(),
            None,
            inplace.values_mut(),
        );
        let name = backend.name();
        for (what, buf) in [("dx", &dx), ("in place", &inplace), ("y", &yb), ("g", &gb)] {
            if let Some(at) = buf.damaged_guard() {
                table.fail(
                    op,
                    format!("[{name} | {op}] {}: {what} guard damaged at {at}", ctx()),
                );
            }
        }
        table.expect(bits(dx.values()) == bits(inplace.values()), op, || {
            format!(
                "[{name} | {op}] {}: in place differs from out of place",
                ctx()
            )
        });
        for i in 0..n {
            table.check(
                op,
                name,
                dx.values()[i] as f64,
                r.dx[i],
                r.bound[i],
                r.scale,
                || format!("{} index {i}", ctx()),
            );
        }
    }
}

#[test]
fn backward_accuracy_every_length_offset_and_range() {
    let mut table = Table::new("backward_accuracy_every_length_offset_and_range");
    let backends = backends();
    for output in [Output::Softmax, Output::LogSoftmax] {
        for values in Values::ALL {
            for t in [1.0f32, 0.7] {
                for n in short_lengths() {
                    for &offset in offsets() {
                        let seed = [values as u64, n as u64, offset as u64, t.to_bits() as u64];
                        let mut rng = Rng::for_case(&seed);
                        let x = values.generate(&mut rng, n, t);
                        let y = forward(output, t, &x);
                        let g: Vec<f32> = (0..n)
                            .map(|i| {
                                if i % 2 == 0 {
                                    rng.normal(1.0)
                                } else {
                                    rng.uniform(-1.0, 1.0)
                                }
                            })
                            .collect();
                        check_backward(
                            &mut table,
                            &backends,
                            output,
                            t,
                            values.name(),
                            offset,
                            &y,
                            &g,
                        );
                    }
                }
            }
        }
    }
    // Long rows: several flushes of the f32 accumulators, and past 2^16.
    for output in [Output::Softmax, Output::LogSoftmax] {
        for values in [Values::Normal1, Values::Uniform10, Values::Masked30] {
            for &n in long_lengths() {
                let t = 1.0;
                let mut rng = Rng::for_case(&[values as u64, n as u64, 99]);
                let x = values.generate(&mut rng, n, t);
                let y = forward(output, t, &x);
                let g: Vec<f32> = (0..n).map(|_| rng.normal(1.0)).collect();
                check_backward(&mut table, &backends, output, t, values.name(), 3, &y, &g);
            }
        }
    }
    table.finish();
}

/// f16/bf16 backward: the f32 path on the widened rows, rounded once, and
/// within one ULP (plus the f32 bound) of the f64 reference.
fn backward_half<T: Narrow>(table: &mut Table) {
    let backends = backends();
    let mut lengths: Vec<usize> = (0..=70).collect();
    lengths.extend([193, 1021]);
    for output in [Output::Softmax, Output::LogSoftmax] {
        for values in [Values::Normal1, Values::Uniform10, Values::Masked30] {
            for &n in &lengths {
                let t = if n % 2 == 0 { 1.0 } else { 0.7 };
                let mut rng = Rng::for_case(&[values as u64, n as u64, 7]);
                let x = values.generate(&mut rng, n, t);
                let y: Vec<T> = forward(output, t, &x)
                    .into_iter()
                    .map(T::from_f32)
                    .collect();
                let g: Vec<T> = (0..n).map(|_| T::from_f32(rng.normal(1.0))).collect();
                let (y32, g32): (Vec<f32>, Vec<f32>) = (
                    y.iter().map(|v| v.to_f32()).collect(),
                    g.iter().map(|v| v.to_f32()).collect(),
                );
                let r = backward_reference(output, t, &widen(&y), &widen(&g));
                let op = format!("{} {}", output_name(output), T::NAME);
                for &backend in &backends {
                    let name = backend.name();
                    let ctx = || format!("len {n} values {} t {t:e} {}", values.name(), T::NAME);
                    let mut dx = vec![T::from_f32(f32::NAN); n];
                    let s = Shape::row(n);
                    backend.backward(output, t, Parallelism::Serial, s, &y, Some(&g), &mut dx);
                    let mut dx32 = vec![0.0f32; n];
                    backend.backward(
                        output,
                        t,
                        Parallelism::Serial,
                        s,
                        &y32,
                        Some(&g32),
                        &mut dx32,
                    );
                    let mut inplace = g.clone();
                    backend.backward(output, t, Parallelism::Serial, s, &y, None, &mut inplace);
                    table.expect(inplace == dx, &op, || {
                        format!("[{name} | {op}] {}: in place differs", ctx())
                    });
                    for i in 0..n {
                        let same = T::from_f32(dx32[i]);
                        table.expect(same == dx[i] || (same.to_f64().is_nan() && dx[i].to_f64().is_nan()), &op, || {
                            format!(
                                "[{name} | {op}] {} index {i}: got {:?}, the f32 path rounded is {same:?}",
                                ctx(),
                                dx[i]
                            )
                        });
                        let bound = r.bound[i] + T::ulp(r.dx[i]);
                        table.check(&op, name, dx[i].to_f64(), r.dx[i], bound, r.scale, || {
                            format!("{} index {i}", ctx())
                        });
                    }
                }
            }
        }
    }
}

#[test]
fn backward_f16_and_bf16() {
    let mut table = Table::new("backward_f16_and_bf16 (bound: f32 bound + 1 ULP of the type)");
    backward_half::<f16>(&mut table);
    backward_half::<bf16>(&mut table);
    table.finish();
}

#[test]
fn jacobian_accuracy() {
    let mut table = Table::new("jacobian_accuracy");
    let backends = backends();
    let mut lengths: Vec<usize> = (0..=40).collect();
    lengths.extend([64, 100]);
    for values in [
        Values::Normal1,
        Values::Uniform10,
        Values::Masked30,
        Values::NearCutoff,
    ] {
        for &n in &lengths {
            for t in [1.0f32, 0.7] {
                let mut rng = Rng::for_case(&[values as u64, n as u64, t.to_bits() as u64]);
                let x = values.generate(&mut rng, n, t);
                let y = forward(Output::Softmax, t, &x);
                let y64 = widen(&y);
                let t64 = t as f64;
                let jac: Vec<f64> = (0..n * n)
                    .map(|ij| {
                        let (i, j) = (ij / n, ij % n);
                        let d = if i == j { y64[i] } else { 0.0 };
                        (d - y64[i] * y64[j]) / t64
                    })
                    .collect();
                let scale = jac.iter().fold(0.0f64, |m, v| m.max(v.abs()));
                for &backend in &backends {
                    let name = backend.name();
                    let ctx = |ij: usize| {
                        format!(
                            "len {n} values {} t {t:e} element ({}, {})",
                            values.name(),
                            ij / n,
                            ij % n
                        )
                    };
                    let mut out = vec![f32::NAN; n * n];
                    backend.jacobian(t, &y, &mut out);
                    for ij in 0..n * n {
                        let bound =
                            4.0 * common::bounds::U * jac[ij].abs() + common::training::TINY;
                        table.check(
                            "jacobian f32",
                            name,
                            out[ij] as f64,
                            jac[ij],
                            bound,
                            scale,
                            || ctx(ij),
                        );
                    }
                    // Narrow outputs, and a narrow input: within one ULP of the type.
                    let mut h = vec![f16::NAN; n * n];
                    backend.jacobian(t, &y, &mut h);
                    let mut b = vec![bf16::NAN; n * n];
                    backend.jacobian(t, &y, &mut b);
                    for ij in 0..n * n {
                        let bound = 4.0 * common::bounds::U * jac[ij].abs() + f16::ulp(jac[ij]);
                        table.check(
                            "jacobian f32→f16",
                            name,
                            h[ij].to_f64(),
                            jac[ij],
                            bound,
                            scale,
                            || ctx(ij),
                        );
                        let bound = 4.0 * common::bounds::U * jac[ij].abs() + bf16::ulp(jac[ij]);
                        table.check(
                            "jacobian f32→bf16",
                            name,
                            b[ij].to_f64(),
                            jac[ij],
                            bound,
                            scale,
                            || ctx(ij),
                        );
                    }
                    let yh: Vec<bf16> = y.iter().map(|v| bf16::from_f32(*v)).collect();
                    let mut from_h = vec![f32::NAN; n * n];
                    backend.jacobian(t, &yh, &mut from_h);
                    let mut from_w = vec![f32::NAN; n * n];
                    let yw: Vec<f32> = yh.iter().map(|v| v.to_f32()).collect();
                    backend.jacobian(t, &yw, &mut from_w);
                    table.expect(bits(&from_h) == bits(&from_w), "jacobian bf16→f32", || {
                        format!("[{name} | jacobian bf16→f32] len {n}: differs from the widened f32 input")
                    });
                }
            }
        }
    }
    table.finish();
}

/// The loss configurations of the accuracy sweep.
fn sweep_configs(weights: &[f32]) -> Vec<(LossConfig<'_>, bool)> {
    let mut cfgs = vec![];
    let plain = LossConfig::new(1.0);
    cfgs.push((plain, false));
    cfgs.push((
        LossConfig {
            smoothing: 0.1,
            t: 0.7,
            ..plain
        },
        false,
    ));
    cfgs.push((
        LossConfig {
            weights: Some(weights),
            smoothing: 0.05,
            reduction: Reduction::Sum,
            ..plain
        },
        false,
    ));
    cfgs.push((
        LossConfig {
            smoothing: 0.05,
            t: 1.5,
            reduction: Reduction::Sum,
            ..plain
        },
        true,
    ));
    // Hard labels both ways: one exp per element above, exp taken twice here.
    cfgs.push((
        LossConfig {
            algorithm: Algorithm::Online,
            ..plain
        },
        false,
    ));
    cfgs.push((
        LossConfig {
            smoothing: 0.1,
            t: 0.7,
            algorithm: Algorithm::Online,
            ..plain
        },
        false,
    ));
    cfgs
}

/// A random distribution over `n` classes with some exact zeros.
fn soft_target(rng: &mut Rng, n: usize) -> Vec<f32> {
    let raw: Vec<f64> = (0..n)
        .map(|_| if rng.chance(0.3) { 0.0 } else { rng.unit() })
        .collect();
    let s: f64 = raw.iter().sum();
    raw.iter()
        .map(|v| {
            if s > 0.0 {
                (v / s) as f32
            } else {
                1.0 / n as f32
            }
        })
        .collect()
}

/// One cross-entropy row on every backend, in type T: loss, loss-only call,
/// gradient (against the f64 reference and against the crate's softmax minus
/// the target), in place == out of place, guards; for T ≠ f32, the f32 path.
#[allow(clippy::too_many_arguments)]
fn check_loss_row<T: Narrow>(
    table: &mut Table,
    backends: &[Backend],
    cfg: &LossConfig<'_>,
    soft: bool,
    values: &str,
    offset: usize,
    x: &[f32],
    label: i64,
    q: &[f32],
) {
    let n = x.len();
    let xt: Vec<T> = x.iter().map(|v| T::from_f32(*v)).collect();
    let qt: Vec<T> = q.iter().map(|v| T::from_f32(*v)).collect();
    let xw: Vec<f32> = xt.iter().map(|v| v.to_f32()).collect();
    let qw: Vec<f32> = qt.iter().map(|v| v.to_f32()).collect();
    let labels = [label];
    let a = if soft {
        cfg.soft_targets(&widen(&qt))
    } else if Some(label) == cfg.ignore {
        vec![0.0; n]
    } else {
        cfg.label_targets(n, label as usize)
    };
    let r = loss_reference(&xw, cfg.t, a.clone());
    let target_t = if soft {
        Target::Soft(&qt)
    } else {
        Target::Labels(&labels)
    };
    let target_w = if soft {
        Target::Soft(&qw)
    } else {
        Target::Labels(&labels)
    };
    let denominator = cfg.denominator(&target_t, 1);
    let scale = cfg.scale(denominator);
    // Row losses and totals are f32: beyond its range the f64 value rounds to ±inf.
    let as_f32 = |v: f64| {
        if v.abs() > f32::MAX as f64 {
            v as f32 as f64
        } else {
            v
        }
    };
    let want_total = as_f32(cfg.reduce(r.loss, denominator));
    let want_loss = as_f32(r.loss);
    // The crate's own softmax, for "softmax minus target".
    let crate_p = forward(Output::Softmax, cfg.t, &xw);
    let kind = if soft { "soft" } else { "label" };
    let op = |what: &str| format!("ce {kind} {what} {}", T::NAME);
    let ctx = || {
        format!(
            "len {n} offset {offset} values {values} {} {kind} label {label} {}",
            cfg.describe(),
            T::NAME
        )
    };
    let xb = Guarded::with_values(&xw, offset);
    let xg: Vec<T> = if T::NAME == "f32" { vec![] } else { xt.clone() };
    for &backend in backends {
        let name = backend.name();
        let s = Shape::row(n);
        // Out of place (f32 rows on guarded buffers; half rows on plain ones).
        let mut grad = vec![T::from_f32(f32::NAN); n];
        let mut losses = [f32::NAN; 2];
        let mut gb = Guarded::new(n, offset);
        let total = if T::NAME == "f32" {
            let tw = match target_t {
                Target::Soft(_) => Target::Soft(&qw[..]),
                Target::Labels(l) => Target::Labels(l),
            };
            let total = backend.cross_entropy(
                cfg,
                Parallelism::Serial,
                s,
                Some(xb.values()),
                tw,
                Some(gb.values_mut()),
                Some(&mut losses),
            );
            grad = gb.values().iter().map(|v| T::from_f32(*v)).collect();
            for (what, b) in [("grad", &gb), ("logits", &xb)] {
                if let Some(at) = b.damaged_guard() {
                    table.fail(
                        &op("guard"),
                        format!("[{name}] {}: {what} guard damaged at {at}", ctx()),
                    );
                }
            }
            total
        } else {
            backend.cross_entropy(
                cfg,
                Parallelism::Serial,
                s,
                Some(&xg),
                target_t,
                Some(&mut grad),
                Some(&mut losses),
            )
        };
        table.expect(losses[1].is_nan(), &op("losses"), || {
            format!("[{name}] {}: wrote past the losses", ctx())
        });
        // Loss only, and in place.
        let mut only = [f32::NAN];
        let xs: &[T] = &xt;
        let only_total = backend.cross_entropy(
            cfg,
            Parallelism::Serial,
            s,
            Some(xs),
            target_t,
            None,
            Some(&mut only),
        );
        let mut inplace = xt.clone();
        let mut in_losses = [f32::NAN];
        let in_total = backend.cross_entropy(
            cfg,
            Parallelism::Serial,
            s,
            None,
            target_t,
            Some(&mut inplace),
            Some(&mut in_losses),
        );
        let nan_eq = |a: f32, b: f32| a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan());
        table.expect(
            nan_eq(in_total, total) && nan_eq(in_losses[0], losses[0]) && inplace == grad
                || grad.iter().any(|g| g.to_f64().is_nan()) && in_losses[0].is_nan(),
            &op("in place"),
            || {
                format!(
                    "[{name}] {}: in place {in_total:e} differs from out of place {total:e}",
                    ctx()
                )
            },
        );
        let lb = r.loss_bound();
        table.check(
            &op("row loss"),
            name,
            losses[0] as f64,
            want_loss,
            lb,
            r.loss.abs(),
            ctx,
        );
        table.check(
            &op("loss-only row loss"),
            name,
            only[0] as f64,
            want_loss,
            lb,
            r.loss.abs(),
            ctx,
        );
        table.expect(
            nan_eq(only_total, only[0] * 0.0 + total)
                || nan_eq(only_total, total)
                || (only_total as f64 - total as f64).abs() <= 2.0 * lb * scale.max(1.0),
            &op("loss-only"),
            || {
                format!(
                    "[{name}] {}: loss only {only_total:e} vs fused {total:e}",
                    ctx()
                )
            },
        );
        let tb =
            lb * if cfg.reduction == Reduction::Mean {
                1.0 / denominator
            } else {
                1.0
            } + 2.0 * common::bounds::U * want_total.abs();
        table.check(
            &op("total"),
            name,
            total as f64,
            want_total,
            tb,
            want_total.abs(),
            ctx,
        );
        let gscale = r.grad.iter().fold(0.0f64, |m, v| m.max((v * scale).abs()));
        let half_ulp = |v: f64| if T::NAME == "f32" { 0.0 } else { T::ulp(v) };
        for j in 0..n {
            let want = r.grad[j] * scale;
            let bound = r.grad_bound(j, scale, 1.0) + half_ulp(want);
            table.check(
                &op("grad"),
                name,
                grad[j].to_f64(),
                want,
                bound,
                gscale,
                || format!("{} index {j}", ctx()),
            );
            if r.r.kind == common::RowKind::Finite {
                let own = scale * (r.total * crate_p[j] as f64 - a[j]) / cfg.t as f64;
                let bound = r.grad_bound(j, scale, 2.0) + half_ulp(want);
                table.check(
                    &op("grad vs crate softmax−a"),
                    name,
                    grad[j].to_f64(),
                    own,
                    bound,
                    gscale,
                    || format!("{} index {j}", ctx()),
                );
            }
        }
        if T::NAME != "f32" {
            // The same arithmetic as f32 on the widened rows: the losses bit
            // for bit, the gradient rounded once.
            let mut g32 = vec![0.0f32; n];
            let mut l32 = [f32::NAN];
            backend.cross_entropy(
                cfg,
                Parallelism::Serial,
                s,
                Some(&xw),
                target_w,
                Some(&mut g32),
                Some(&mut l32),
            );
            table.expect(nan_eq(l32[0], losses[0]), &op("= f32 path"), || {
                format!(
                    "[{name}] {}: row loss {:e} vs f32 path {:e}",
                    ctx(),
                    losses[0],
                    l32[0]
                )
            });
            for j in 0..n {
                let same = T::from_f32(g32[j]);
                table.expect(
                    same == grad[j] || (same.to_f64().is_nan() && grad[j].to_f64().is_nan()),
                    &op("= f32 path"),
                    || {
                        format!(
                            "[{name}] {} index {j}: grad {:?} vs the f32 path rounded {same:?}",
                            ctx(),
                            grad[j]
                        )
                    },
                );
            }
        }
    }
}

#[test]
fn cross_entropy_accuracy_every_length_offset_and_range() {
    let mut table = Table::new("cross_entropy_accuracy_every_length_offset_and_range");
    let backends = backends();
    let max_n = 3 * 16 * 4 + 1 + 65537;
    let weights: Vec<f32> = {
        let mut rng = Rng::new(42);
        (0..max_n).map(|_| rng.uniform(0.0, 3.0)).collect()
    };
    let mut lengths: Vec<usize> = short_lengths().into_iter().filter(|&n| n > 0).collect();
    lengths.extend(long_lengths());
    for values in Values::ALL {
        for &n in &lengths {
            let long = n > 200;
            if long && !matches!(values, Values::Normal1 | Values::Masked30 | Values::Huge) {
                continue;
            }
            let offs: &[usize] = if long { &[3] } else { offsets() };
            for &offset in offs {
                let w = &weights[..n];
                for (c, (cfg, soft)) in sweep_configs(w).into_iter().enumerate() {
                    let seed = [values as u64, n as u64, offset as u64, c as u64];
                    let mut rng = Rng::for_case(&seed);
                    let x = values.generate(&mut rng, n, cfg.t);
                    let label = if !soft && rng.chance(0.05) {
                        -100
                    } else {
                        rng.below(n) as i64
                    };
                    let q = soft_target(&mut rng, n);
                    check_loss_row::<f32>(
                        &mut table,
                        &backends,
                        &cfg,
                        soft,
                        values.name(),
                        offset,
                        &x,
                        label,
                        &q,
                    );
                }
            }
        }
    }
    table.finish();
}

#[test]
fn cross_entropy_f16_and_bf16() {
    let mut table = Table::new("cross_entropy_f16_and_bf16 (bound: f32 bound + 1 ULP of the type)");
    let backends = backends();
    let weights: Vec<f32> = (0..2000).map(|i| 0.5 + (i % 5) as f32 * 0.25).collect();
    let mut lengths: Vec<usize> = (1..=70).collect();
    lengths.extend([193, 1021]);
    for values in [
        Values::Normal1,
        Values::Uniform10,
        Values::Masked30,
        Values::MaskedSuffix,
    ] {
        for &n in &lengths {
            for (c, (cfg, soft)) in sweep_configs(&weights[..n]).into_iter().enumerate() {
                let mut rng = Rng::for_case(&[values as u64, n as u64, c as u64, 16]);
                let x = values.generate(&mut rng, n, cfg.t);
                let label = rng.below(n) as i64;
                let q = soft_target(&mut rng, n);
                check_loss_row::<f16>(
                    &mut table,
                    &backends,
                    &cfg,
                    soft,
                    values.name(),
                    0,
                    &x,
                    label,
                    &q,
                );
                check_loss_row::<bf16>(
                    &mut table,
                    &backends,
                    &cfg,
                    soft,
                    values.name(),
                    0,
                    &x,
                    label,
                    &q,
                );
            }
        }
    }
    table.finish();
}

/// Central difference of `f` at `x` along coordinate `j`, step h ~1e-4·max(1, |x_j|),
/// with one Richardson step ((4·D(h/2) − D(h))/3, error O(h⁴)) so that the
/// truncation error stays far below the tolerance even where the gradient is
/// small next to the function's curvature (t = 0.5 and spread logits).
fn central_difference(f: &dyn Fn(&[f64]) -> f64, x: &[f64], j: usize) -> f64 {
    let d = |h: f64| {
        let (mut up, mut down) = (x.to_vec(), x.to_vec());
        up[j] += h;
        down[j] -= h;
        // The step actually taken (x ± h rounds).
        (f(&up) - f(&down)) / (up[j] - down[j])
    };
    let h = 1e-4 * x[j].abs().max(1.0);
    (4.0 * d(h / 2.0) - d(h)) / 3.0
}

/// Tolerance of the finite-difference checks, relative to max |gradient|.
/// Our gradients carry ≲ 1e-6 relative error (the f32 bounds above, with
/// K ≤ 12); a central difference with h ≤ 4e-4 on |x| ≤ 4 has truncation
/// error h²/6·|f'''| ≲ 1e-7·max|grad|/t³ and rounding ~1e-16·|f|/h ~ 1e-11, so
/// 1e-4 leaves two orders of margin while any wrong term (a missing 1/t, a
/// wrong smoothing or weight normalisation, a sign) is off by ≫ 1e-2.
const FD_TOLERANCE: f64 = 1e-4;

struct FdReport {
    table: Table,
    worst: std::collections::BTreeMap<String, f64>,
}

impl FdReport {
    fn compare(
        &mut self,
        op: &str,
        backend: &str,
        ours: &[f32],
        fd: &[f64],
        floor: f64,
        ctx: &dyn Fn() -> String,
    ) {
        // Relative to max|gradient|, or to the conditioning of the dot product
        // (Σ|g_j y_j|/t, Σ|g_j|·max y/t) when the gradient cancels below it: the
        // f32 result is only that accurate (see the backward bounds).
        let scale = fd
            .iter()
            .fold(0.0f64, |m, v| m.max(v.abs()))
            .max(floor)
            .max(1e-30);
        for (j, (&o, &d)) in ours.iter().zip(fd).enumerate() {
            let rel = (o as f64 - d).abs() / scale;
            let w = self.worst.entry(op.to_string()).or_insert(0.0);
            *w = w.max(rel);
            self.table.expect(rel <= FD_TOLERANCE, op, || {
                format!("[{backend} | {op}] {} index {j}: ours {o:e}, finite difference {d:e} (relative {rel:e})", ctx())
            });
        }
    }

    fn finish(self) {
        for (op, w) in &self.worst {
            eprintln!("finite differences: {op:<28} max |ours − FD| / max|FD| = {w:.3e}");
        }
        self.table.finish();
    }
}

#[test]
fn finite_differences_of_backward_and_jacobian() {
    let mut report = FdReport {
        table: Table::new("finite_differences_of_backward_and_jacobian"),
        worst: Default::default(),
    };
    for backend in backends() {
        for k in 1..=12usize {
            for t in [1.0f32, 0.5, 2.5] {
                let mut rng = Rng::for_case(&[k as u64, t.to_bits() as u64, 5]);
                let x: Vec<f32> = (0..k).map(|_| rng.uniform(-4.0, 4.0)).collect();
                let g: Vec<f32> = (0..k).map(|_| rng.normal(1.0)).collect();
                let x64 = widen(&x);
                let g64 = widen(&g);
                let t64 = t as f64;
                let name = backend.name();
                let ctx = || format!("K {k} t {t:e} f32");
                for output in [Output::Softmax, Output::LogSoftmax] {
                    let y = forward(output, t, &x);
                    let mut dx = vec![0.0f32; k];
                    backend.backward(
                        output,
                        t,
                        Parallelism::Serial,
                        Shape::row(k),
                        &y,
                        Some(&g),
                        &mut dx,
                    );
                    let f = |x: &[f64]| -> f64 {
                        let (p, l) = softmax_f64(x, t64);
                        let y = if output == Output::Softmax { p } else { l };
                        y.iter().zip(&g64).map(|(y, g)| y * g).sum()
                    };
                    let fd: Vec<f64> = (0..k).map(|j| central_difference(&f, &x64, j)).collect();
                    let floor = match output {
                        Output::Softmax => {
                            y.iter()
                                .zip(&g)
                                .map(|(y, g)| (y * g).abs() as f64)
                                .sum::<f64>()
                                / t64
                        }
                        Output::LogSoftmax => {
                            let ymax = y.iter().fold(0.0f64, |m, v| m.max((*v as f64).exp()));
                            g.iter().map(|g| g.abs() as f64).sum::<f64>() * ymax / t64
                        }
                    };
                    report.compare(output_name(output), name, &dx, &fd, floor, &ctx);
                }
                let y = forward(Output::Softmax, t, &x);
                let mut jac = vec![0.0f32; k * k];
                backend.jacobian(t, &y, &mut jac);
                for i in 0..k {
                    let f = |x: &[f64]| softmax_f64(x, t64).0[i];
                    // Row i holds ∂y_i/∂x_j.
                    let fd: Vec<f64> = (0..k).map(|j| central_difference(&f, &x64, j)).collect();
                    report.compare(
                        "jacobian",
                        name,
                        &jac[i * k..(i + 1) * k],
                        &fd,
                        0.0,
                        &|| format!("K {k} t {t:e} row {i}"),
                    );
                }
            }
        }
    }
    report.finish();
}

/// The reduced loss of a batch in f64 (every row finite), as the function the
/// finite differences differentiate.
fn batch_loss_f64(cfg: &LossConfig<'_>, shape: Shape, x: &[f64], target: &Target<'_, f32>) -> f64 {
    let mut sum = 0.0;
    for i in 0..shape.rows {
        let Some(a) = cfg.row_targets(target, shape, i) else {
            continue;
        };
        let (_, l) = softmax_f64(&x[shape.range(i)], cfg.t as f64);
        sum -= a.iter().zip(&l).map(|(a, l)| a * l).sum::<f64>();
    }
    cfg.reduce(sum, cfg.denominator(target, shape.rows))
}

#[test]
fn finite_differences_of_cross_entropy() {
    let mut report = FdReport {
        table: Table::new("finite_differences_of_cross_entropy"),
        worst: Default::default(),
    };
    let weights: Vec<f32> = (0..12).map(|i| 0.25 + 0.3 * i as f32).collect();
    for backend in backends() {
        for k in 1..=12usize {
            let rows = 3;
            let shape = Shape {
                rows,
                cols: k,
                stride: k,
            };
            let mut rng = Rng::for_case(&[k as u64, 11]);
            let x: Vec<f32> = (0..rows * k).map(|_| rng.uniform(-4.0, 4.0)).collect();
            let labels: Vec<i64> = vec![rng.below(k) as i64, -100, rng.below(k) as i64];
            let q: Vec<f32> = (0..rows).flat_map(|_| soft_target(&mut rng, k)).collect();
            let plain = LossConfig::new(1.0);
            let configs: Vec<(&str, LossConfig<'_>, bool)> = vec![
                ("labels mean", plain, false),
                (
                    "labels sum t=0.5",
                    LossConfig {
                        t: 0.5,
                        reduction: Reduction::Sum,
                        ..plain
                    },
                    false,
                ),
                (
                    "labels smoothing 0.2 t=2.5",
                    LossConfig {
                        t: 2.5,
                        smoothing: 0.2,
                        ..plain
                    },
                    false,
                ),
                (
                    "labels weights mean",
                    LossConfig {
                        weights: Some(&weights[..k]),
                        ..plain
                    },
                    false,
                ),
                (
                    "labels weights+smoothing",
                    LossConfig {
                        weights: Some(&weights[..k]),
                        smoothing: 0.3,
                        t: 0.7,
                        ..plain
                    },
                    false,
                ),
                ("soft mean", plain, true),
                (
                    "soft smoothing t=1.7",
                    LossConfig {
                        t: 1.7,
                        smoothing: 0.1,
                        ..plain
                    },
                    true,
                ),
                (
                    "soft none",
                    LossConfig {
                        reduction: Reduction::None,
                        ..plain
                    },
                    true,
                ),
            ];
            let x64 = widen(&x);
            for (what, cfg, soft) in configs {
                let target = if soft {
                    Target::Soft(&q[..])
                } else {
                    Target::Labels(&labels)
                };
                let mut grad = vec![0.0f32; rows * k];
                let mut losses = [0.0f32; 3];
                backend.cross_entropy(
                    &cfg,
                    Parallelism::Serial,
                    shape,
                    Some(&x),
                    target,
                    Some(&mut grad),
                    Some(&mut losses),
                );
                let f = |x: &[f64]| batch_loss_f64(&cfg, shape, x, &target);
                let fd: Vec<f64> = (0..rows * k)
                    .map(|j| central_difference(&f, &x64, j))
                    .collect();
                report.compare(
                    &format!("ce {what}"),
                    backend.name(),
                    &grad,
                    &fd,
                    0.0,
                    &|| format!("K {k} rows {rows} {}", cfg.describe()),
                );
            }
        }
    }
    report.finish();
}

/// Special rows, checked exactly: NaN, +inf, all −inf, ignored rows, the empty mean.
#[test]
fn cross_entropy_special_rows() {
    let (inf, ninf, nan) = (f32::INFINITY, f32::NEG_INFINITY, f32::NAN);
    let k = 4;
    let x = vec![
        0.5, nan, 1.0, 2.0, // NaN anywhere
        inf, 1.0, inf, 0.0, // two +inf, label on one
        inf, 1.0, 3.0, 0.0, // one +inf, label elsewhere: loss +inf
        ninf, ninf, ninf, ninf, // all −inf, label 2: loss +inf
        ninf, ninf, ninf, ninf, // all −inf, ignored
        1.0, 2.0, ninf, 0.0, // label on a −inf entry: +inf
        1.0, 2.0, 3.0, 4.0, // ordinary, ignored
    ];
    let labels: Vec<i64> = vec![0, 2, 1, 2, -100, 2, -100];
    let rows = labels.len();
    let shape = Shape {
        rows,
        cols: k,
        stride: k,
    };
    let cfg = LossConfig {
        smoothing: 0.0,
        reduction: Reduction::Sum,
        ..LossConfig::new(1.0)
    };
    let two = 2f64.ln();
    let want_loss = [
        f64::NAN,
        two,
        f64::INFINITY,
        f64::INFINITY,
        0.0,
        f64::INFINITY,
        0.0,
    ];
    let want_grad: Vec<Vec<f64>> = vec![
        vec![f64::NAN; 4],
        vec![0.5, 0.0, -0.5, 0.0],
        vec![1.0, -1.0, 0.0, 0.0],
        vec![0.0, 0.0, -1.0, 0.0],
        vec![0.0; 4],
        vec![-999.0; 4], // finite row: checked against the reference below
        vec![0.0; 4],
    ];
    for backend in backends() {
        let name = backend.name();
        let mut grad = vec![f32::NAN; rows * k];
        let mut losses = vec![f32::NAN; rows];
        let total = backend.cross_entropy(
            &cfg,
            Parallelism::Serial,
            shape,
            Some(&x),
            Target::Labels(&labels),
            Some(&mut grad),
            Some(&mut losses),
        );
        assert!(
            total.is_nan(),
            "[{name}] a NaN row makes the sum NaN, got {total}"
        );
        for i in 0..rows {
            let w = want_loss[i];
            let got = losses[i] as f64;
            assert!(
                (w.is_nan() && got.is_nan())
                    || got == w
                    || (got - w).abs() <= 4.0 * common::bounds::U * w.abs(),
                "[{name}] row {i}: loss {got:e}, expected {w:e}"
            );
            let row = &grad[i * k..(i + 1) * k];
            let want: Vec<f64> = if i == 5 {
                let r = loss_reference(&x[i * k..(i + 1) * k], 1.0, cfg.label_targets(k, 2));
                r.grad
            } else {
                want_grad[i].clone()
            };
            for j in 0..k {
                let (g, w) = (row[j] as f64, want[j]);
                assert!(
                    (w.is_nan() && g.is_nan())
                        || (g - w).abs() <= 4.0 * common::bounds::U * w.abs() + 1e-30,
                    "[{name}] row {i} index {j}: gradient {g:e}, expected {w:e}"
                );
            }
        }
        // The empty mean: every row ignored → NaN, gradient 0.
        let mean = LossConfig::new(1.0);
        let ignored = vec![-100i64; rows];
        let mut grad = vec![f32::NAN; rows * k];
        let total = backend.cross_entropy(
            &mean,
            Parallelism::Serial,
            shape,
            Some(&x),
            Target::Labels(&ignored),
            Some(&mut grad),
            None,
        );
        assert!(
            total.is_nan(),
            "[{name}] the mean of no rows is NaN, got {total}"
        );
        assert!(
            grad.iter().all(|g| g.to_bits() == 0),
            "[{name}] the empty mean's gradient is +0: {grad:?}"
        );
        // All −inf with soft targets: +inf where some target weight is > 0;
        // with a target of zeros, 0.
        let xs = vec![ninf; 2 * k];
        let q = vec![0.0, 0.5, 0.5, 0.0, 0.0, 0.0, 0.0, 0.0];
        let s2 = Shape {
            rows: 2,
            cols: k,
            stride: k,
        };
        let mut losses = [f32::NAN; 2];
        let mut grad = vec![f32::NAN; 2 * k];
        let cfg = LossConfig {
            reduction: Reduction::None,
            ..LossConfig::new(1.0)
        };
        backend.cross_entropy(
            &cfg,
            Parallelism::Serial,
            s2,
            Some(&xs),
            Target::Soft(&q),
            Some(&mut grad),
            Some(&mut losses),
        );
        assert_eq!(
            losses,
            [f32::INFINITY, 0.0],
            "[{name}] all −inf rows with soft targets"
        );
        let want: Vec<f32> = q.iter().map(|q| -q).collect();
        assert_eq!(
            bits(&grad.iter().map(|g| g + 0.0).collect::<Vec<_>>()),
            bits(&want.iter().map(|g| g + 0.0).collect::<Vec<_>>()),
            "[{name}] all −inf gradient = −a/t"
        );
    }
}

/// A strided batch (stride > cols), with sentinels in the padding.
struct Padded<T> {
    data: Vec<T>,
    shape: Shape,
}

impl<T: Narrow> Padded<T> {
    fn new(shape: Shape, mut value: impl FnMut(usize, usize) -> f32) -> Self {
        let mut data = vec![sentinel::<T>(); shape.rows * shape.stride + 5];
        for i in 0..shape.rows {
            for j in 0..shape.cols {
                data[i * shape.stride + j] = T::from_f32(value(i, j));
            }
        }
        Padded { data, shape }
    }
    fn row(&self, i: usize) -> &[T] {
        &self.data[self.shape.range(i)]
    }
    fn padding_intact(&self) -> bool {
        self.data.iter().enumerate().all(|(k, v)| {
            let (i, j) = (k / self.shape.stride, k % self.shape.stride);
            (i < self.shape.rows && j < self.shape.cols) || untouched(std::slice::from_ref(v))
        })
    }
}

fn strided_case<T: Narrow>(backend: Backend, shape: Shape, par: &Parallelism) {
    let name = backend.name();
    let (rows, cols) = (shape.rows, shape.cols);
    let ctx = format!(
        "[{name}] {} rows {rows} cols {cols} stride {}",
        T::NAME,
        shape.stride
    );
    let mut rng = Rng::for_case(&[rows as u64, cols as u64, 3]);
    let x = Padded::<T>::new(shape, |_, _| rng.uniform(-6.0, 6.0));
    let g = Padded::<T>::new(shape, |_, _| rng.normal(1.0));
    for output in [Output::Softmax, Output::LogSoftmax] {
        let mut y = Padded::<T>::new(shape, |_, _| 0.0);
        for i in 0..rows {
            let xr: Vec<f32> = x.row(i).iter().map(|v| v.to_f32()).collect();
            let yr = forward(output, 1.3, &xr);
            for j in 0..cols {
                y.data[i * shape.stride + j] = T::from_f32(yr[j]);
            }
        }
        let mut dx = Padded::<T>::new(shape, |_, _| SENTINEL);
        backend.backward(
            output,
            1.3,
            par.clone(),
            shape,
            &y.data,
            Some(&g.data),
            &mut dx.data,
        );
        let mut inplace = Padded::<T>::new(shape, |i, j| g.row(i)[j].to_f32());
        backend.backward(
            output,
            1.3,
            par.clone(),
            shape,
            &y.data,
            None,
            &mut inplace.data,
        );
        assert!(
            dx.padding_intact() && inplace.padding_intact(),
            "{ctx} {}: padding written",
            output_name(output)
        );
        for i in 0..rows {
            let mut one = vec![T::from_f32(0.0); cols];
            backend.backward(
                output,
                1.3,
                Parallelism::Serial,
                Shape::row(cols),
                y.row(i),
                Some(g.row(i)),
                &mut one,
            );
            assert!(
                dx.row(i) == &one[..],
                "{ctx} {}: row {i} differs from the row call",
                output_name(output)
            );
            assert!(
                inplace.row(i) == &one[..],
                "{ctx} {}: row {i} in place differs",
                output_name(output)
            );
        }
    }
    // Cross-entropy: labels (with an ignored row) and soft targets; Sum so each
    // row's gradient is that of its own loss.
    let labels: Vec<i64> = (0..rows)
        .map(|i| {
            if i == 1 {
                -100
            } else {
                ((i * 7) % cols) as i64
            }
        })
        .collect();
    let q = Padded::<T>::new(shape, |_, _| rng.unit() as f32 / cols as f32);
    let weights: Vec<f32> = (0..cols).map(|c| 1.0 + (c % 3) as f32).collect();
    let plain = LossConfig::new(0.8);
    for (what, cfg, soft) in [
        (
            "labels",
            LossConfig {
                reduction: Reduction::Sum,
                smoothing: 0.1,
                ..plain
            },
            false,
        ),
        (
            "labels weights",
            LossConfig {
                reduction: Reduction::Sum,
                weights: Some(&weights),
                ..plain
            },
            false,
        ),
        (
            "soft",
            LossConfig {
                reduction: Reduction::Sum,
                ..plain
            },
            true,
        ),
    ] {
        let target = if soft {
            Target::Soft(&q.data[..])
        } else {
            Target::Labels(&labels)
        };
        let mut grad = Padded::<T>::new(shape, |_, _| SENTINEL);
        let mut losses = vec![f32::NAN; rows + 1];
        let total = backend.cross_entropy(
            &cfg,
            par.clone(),
            shape,
            Some(&x.data),
            target,
            Some(&mut grad.data),
            Some(&mut losses),
        );
        let mut inplace = Padded::<T>::new(shape, |i, j| x.row(i)[j].to_f32());
        let mut in_losses = vec![f32::NAN; rows];
        let in_total = backend.cross_entropy(
            &cfg,
            par.clone(),
            shape,
            None,
            target,
            Some(&mut inplace.data),
            Some(&mut in_losses),
        );
        assert!(
            grad.padding_intact() && inplace.padding_intact(),
            "{ctx} ce {what}: padding written"
        );
        assert!(
            losses[rows].is_nan(),
            "{ctx} ce {what}: wrote past the rows' losses"
        );
        assert_eq!(
            total.to_bits(),
            in_total.to_bits(),
            "{ctx} ce {what}: in place total"
        );
        assert_eq!(
            bits(&losses[..rows]),
            bits(&in_losses),
            "{ctx} ce {what}: in place losses"
        );
        let wide = |p: &Padded<T>| {
            p.data
                .iter()
                .map(|v| v.to_f64().to_bits())
                .collect::<Vec<u64>>()
        };
        assert!(
            wide(&grad) == wide(&inplace),
            "{ctx} ce {what}: in place gradient {:?} differs from out of place {:?}",
            inplace.data,
            grad.data
        );
        let mut sum = 0.0f64;
        for i in 0..rows {
            let one_shape = Shape::row(cols);
            let l1 = [labels[i]];
            let t1 = if soft {
                Target::Soft(q.row(i))
            } else {
                Target::Labels(&l1)
            };
            let mut g1 = vec![T::from_f32(0.0); cols];
            let mut loss1 = [f32::NAN];
            backend.cross_entropy(
                &cfg,
                Parallelism::Serial,
                one_shape,
                Some(x.row(i)),
                t1,
                Some(&mut g1),
                Some(&mut loss1),
            );
            assert_eq!(
                losses[i].to_bits(),
                loss1[0].to_bits(),
                "{ctx} ce {what}: row {i} loss differs from the row call"
            );
            assert!(
                grad.row(i) == &g1[..],
                "{ctx} ce {what}: row {i} gradient differs from the row call"
            );
            sum += loss1[0] as f64;
        }
        let rel = (total as f64 - sum).abs() / sum.abs().max(1e-30);
        assert!(
            rel <= 1e-6,
            "{ctx} ce {what}: total {total:e} vs Σ row losses {sum:e}"
        );
    }
}

#[test]
fn strided_batches_match_row_calls() {
    let pool = Arc::new(
        rayon::ThreadPoolBuilder::new()
            .num_threads(2)
            .build()
            .unwrap(),
    );
    let cases = [
        (7, 1, 2),
        (7, 5, 8),
        (5, 16, 19),
        (6, 33, 40),
        (3, 100, 101),
        (40, 1000, 1003),
    ];
    common::for_each_backend("strided_batches_match_row_calls", |backend| {
        for &(rows, cols, stride) in &cases {
            let shape = Shape { rows, cols, stride };
            let pars: Vec<Parallelism> = match backend {
                Backend::Isa(_) => vec![Parallelism::Serial, Parallelism::Pool(pool.clone())],
                _ => vec![Parallelism::Serial],
            };
            for par in &pars {
                strided_case::<f32>(backend, shape, par);
                if cols <= 100 {
                    strided_case::<f16>(backend, shape, par);
                    strided_case::<bf16>(backend, shape, par);
                }
            }
        }
    });
}

/// Totals, per-row losses and gradients, bit for bit, across Serial, Auto and
/// pools of 1, 2 and 3 threads, on a batch the crate splits (320 × 1000).
#[test]
fn cross_entropy_is_deterministic_across_thread_counts() {
    let (rows, cols) = (320, 1000);
    assert!(rows * cols >= softmax::PARALLEL_MIN_ELEMENTS);
    let shape = Shape {
        rows,
        cols,
        stride: cols,
    };
    let mut rng = Rng::new(2024);
    let x: Vec<f32> = (0..rows * cols).map(|_| rng.normal(3.0)).collect();
    let labels: Vec<i64> = (0..rows)
        .map(|i| {
            if i % 9 == 4 {
                -100
            } else {
                rng.below(cols) as i64
            }
        })
        .collect();
    let q: Vec<f32> = (0..rows)
        .flat_map(|_| soft_target(&mut rng, cols))
        .collect();
    let weights: Vec<f32> = (0..cols).map(|_| rng.uniform(0.1, 2.0)).collect();
    let pools: Vec<Parallelism> = (1..=3)
        .map(|n| {
            Parallelism::Pool(Arc::new(
                rayon::ThreadPoolBuilder::new()
                    .num_threads(n)
                    .build()
                    .unwrap(),
            ))
        })
        .collect();
    let mut pars = vec![
        ("Serial".to_string(), Parallelism::Serial),
        ("Auto".to_string(), Parallelism::Auto),
    ];
    pars.extend(
        pools
            .into_iter()
            .enumerate()
            .map(|(i, p)| (format!("pool of {}", i + 1), p)),
    );
    let plain = LossConfig::new(1.0);
    let configs = [
        (
            "labels sum",
            LossConfig {
                reduction: Reduction::Sum,
                ..plain
            },
            false,
        ),
        (
            "labels mean smoothing",
            LossConfig {
                smoothing: 0.1,
                t: 0.9,
                ..plain
            },
            false,
        ),
        (
            "labels mean weights",
            LossConfig {
                weights: Some(&weights),
                ..plain
            },
            false,
        ),
        (
            "soft sum",
            LossConfig {
                reduction: Reduction::Sum,
                ..plain
            },
            true,
        ),
        ("soft mean", plain, true),
    ];
    common::for_each_isa(
        "cross_entropy_is_deterministic_across_thread_counts",
        |isa| {
            let backend = Backend::Isa(isa);
            for (what, cfg, soft) in &configs {
                let target = if *soft {
                    Target::Soft(&q[..])
                } else {
                    Target::Labels(&labels)
                };
                let run = |par: &Parallelism| {
                    let mut grad = vec![0.0f32; rows * cols];
                    let mut losses = vec![0.0f32; rows];
                    let total = backend.cross_entropy(
                        cfg,
                        par.clone(),
                        shape,
                        Some(&x),
                        target,
                        Some(&mut grad),
                        Some(&mut losses),
                    );
                    let only = backend.cross_entropy(
                        cfg,
                        par.clone(),
                        shape,
                        Some(&x),
                        target,
                        None,
                        None,
                    );
                    (total.to_bits(), only.to_bits(), bits(&losses), bits(&grad))
                };
                let serial = run(&Parallelism::Serial);
                for (pname, par) in &pars {
                    let got = run(par);
                    assert_eq!(got.0, serial.0, "[{isa}] ce {what} f32 {rows}x{cols}: total with {pname} differs from Serial");
                    assert_eq!(
                        got.1, serial.1,
                        "[{isa}] ce {what} f32 {rows}x{cols}: loss-only total with {pname} differs"
                    );
                    assert!(
                        got.2 == serial.2,
                        "[{isa}] ce {what} f32 {rows}x{cols}: per-row losses with {pname} differ"
                    );
                    assert!(
                        got.3 == serial.3,
                        "[{isa}] ce {what} f32 {rows}x{cols}: gradient with {pname} differs"
                    );
                }
            }
            // Backward rows, too.
            let y: Vec<f32> = x
                .chunks(cols)
                .flat_map(|r| forward(Output::Softmax, 1.0, r))
                .collect();
            let g: Vec<f32> = (0..rows * cols)
                .map(|i| ((i * 37) % 101) as f32 / 50.0 - 1.0)
                .collect();
            let mut serial = vec![0.0f32; rows * cols];
            backend.backward(
                Output::Softmax,
                1.0,
                Parallelism::Serial,
                shape,
                &y,
                Some(&g),
                &mut serial,
            );
            for (pname, par) in &pars {
                let mut dx = vec![0.0f32; rows * cols];
                backend.backward(
                    Output::Softmax,
                    1.0,
                    par.clone(),
                    shape,
                    &y,
                    Some(&g),
                    &mut dx,
                );
                assert!(
                    bits(&dx) == bits(&serial),
                    "[{isa}] softmax_backward_rows {rows}x{cols}: {pname} differs"
                );
            }
        },
    );
}

// ---- Errors: one test per variant; every buffer untouched. ----

fn ce(isa: Isa) -> CrossEntropy<'static> {
    CrossEntropy::new().with_isa(isa).unwrap()
}

/// Runs `call` on copies of the buffers and checks the error and that nothing changed.
struct Buffers {
    a: Vec<f32>,
    b: Vec<f32>,
    c: Vec<f32>,
    losses: Vec<f32>,
}

impl Buffers {
    fn new(n: usize, losses: usize) -> Self {
        let mut rng = Rng::new(n as u64);
        let mut v = || (0..n).map(|_| rng.uniform(-1.0, 1.0)).collect::<Vec<f32>>();
        Buffers {
            a: v(),
            b: v(),
            c: v(),
            losses: vec![7.5; losses],
        }
    }

    fn expect(
        mut self,
        what: &str,
        want: impl Fn(&Error) -> bool,
        call: impl FnOnce(&mut [f32], &mut [f32], &mut [f32], &mut [f32]) -> Result<(), Error>,
    ) {
        let before = (
            self.a.clone(),
            self.b.clone(),
            self.c.clone(),
            self.losses.clone(),
        );
        let result = call(&mut self.a, &mut self.b, &mut self.c, &mut self.losses);
        match result {
            Err(e) if want(&e) => {}
            other => panic!("{what}: expected the error, got {other:?}"),
        }
        assert!(
            bits(&before.0) == bits(&self.a)
                && bits(&before.1) == bits(&self.b)
                && bits(&before.2) == bits(&self.c)
                && bits(&before.3) == bits(&self.losses),
            "{what}: a buffer changed although the call failed"
        );
    }
}

fn r(d: &[f32], rows: usize, cols: usize) -> Rows<'_, f32> {
    Rows::new(d, rows, cols, cols).unwrap()
}

fn rm(d: &mut [f32], rows: usize, cols: usize) -> RowsMut<'_, f32> {
    RowsMut::new(d, rows, cols, cols).unwrap()
}

#[test]
fn error_length_mismatch() {
    common::for_each_isa("error_length_mismatch", |isa| {
        let sm = Softmax::new().with_isa(isa).unwrap();
        let is = |e: &Error| matches!(e, Error::LengthMismatch { .. });
        Buffers::new(8, 0).expect(
            &format!("[{isa}] softmax_backward dx short"),
            is,
            |y, g, dx, _| sm.softmax_backward(y, g, &mut dx[..7]),
        );
        Buffers::new(8, 0).expect(
            &format!("[{isa}] softmax_backward g short"),
            is,
            |y, g, dx, _| sm.softmax_backward(y, &g[..5], dx),
        );
        Buffers::new(8, 0).expect(
            &format!("[{isa}] log_softmax_backward"),
            is,
            |y, g, dx, _| sm.log_softmax_backward(&y[..3], g, dx),
        );
        Buffers::new(8, 0).expect(
            &format!("[{isa}] softmax_backward_in_place"),
            is,
            |y, g, _, _| sm.softmax_backward_in_place(&y[..7], g),
        );
        Buffers::new(8, 0).expect(
            &format!("[{isa}] log_softmax_backward_in_place"),
            is,
            |y, g, _, _| sm.log_softmax_backward_in_place(y, &mut g[..1]),
        );
    });
}

#[test]
fn error_shape_mismatch() {
    common::for_each_isa("error_shape_mismatch", |isa| {
        let sm = Softmax::new().with_isa(isa).unwrap();
        let is = |e: &Error| matches!(e, Error::ShapeMismatch { .. });
        Buffers::new(12, 4).expect(
            &format!("[{isa}] softmax_backward_rows"),
            is,
            |y, g, dx, _| sm.softmax_backward_rows(r(y, 3, 4), r(g, 3, 4), rm(dx, 4, 3)),
        );
        Buffers::new(12, 4).expect(
            &format!("[{isa}] log_softmax_backward_rows g"),
            is,
            |y, g, dx, _| sm.log_softmax_backward_rows(r(y, 3, 4), r(g, 2, 6), rm(dx, 3, 4)),
        );
        Buffers::new(12, 4).expect(
            &format!("[{isa}] softmax_backward_rows_in_place"),
            is,
            |y, g, _, _| sm.softmax_backward_rows_in_place(r(y, 2, 4), rm(g, 3, 4)),
        );
        Buffers::new(12, 4).expect(
            &format!("[{isa}] log_softmax_backward_rows_in_place"),
            is,
            |y, g, _, _| sm.log_softmax_backward_rows_in_place(r(y, 3, 4), rm(g, 2, 4)),
        );
        let labels = [0i64, 1, 2];
        Buffers::new(12, 4).expect(
            &format!("[{isa}] loss_and_grad grad shape"),
            is,
            |x, g, _, l| {
                ce(isa)
                    .loss_and_grad(r(x, 3, 4), &labels, rm(g, 2, 4), Some(l))
                    .map(|_| ())
            },
        );
        Buffers::new(12, 4).expect(
            &format!("[{isa}] soft_loss targets shape"),
            is,
            |x, q, _, l| {
                ce(isa)
                    .soft_loss(r(x, 3, 4), r(q, 3, 3), Some(l))
                    .map(|_| ())
            },
        );
        Buffers::new(12, 4).expect(
            &format!("[{isa}] soft_loss_and_grad grad shape"),
            is,
            |x, q, g, l| {
                ce(isa)
                    .soft_loss_and_grad(r(x, 3, 4), r(q, 3, 4), rm(g, 4, 3), Some(l))
                    .map(|_| ())
            },
        );
        Buffers::new(12, 4).expect(
            &format!("[{isa}] soft_loss_and_grad_in_place targets"),
            is,
            |x, q, _, l| {
                ce(isa)
                    .soft_loss_and_grad_in_place(rm(x, 3, 4), r(q, 2, 4), Some(l))
                    .map(|_| ())
            },
        );
    });
}

#[test]
fn error_jacobian_length() {
    common::for_each_isa("error_jacobian_length", |isa| {
        let sm = Softmax::new().with_isa(isa).unwrap();
        for len in [0, 15, 17, 4] {
            Buffers::new(20, 0).expect(
                &format!("[{isa}] jacobian K=4 len {len}"),
                |e| *e == Error::JacobianLength { len, cols: 4 },
                |y, out, _, _| sm.softmax_jacobian(&y[..4], &mut out[..len]),
            );
        }
    });
}

#[test]
fn error_label_count() {
    common::for_each_isa("error_label_count", |isa| {
        let is = |e: &Error| *e == Error::LabelCount { labels: 2, rows: 3 };
        let labels = [0u32, 1];
        Buffers::new(12, 3).expect(&format!("[{isa}] loss"), is, |x, _, _, l| {
            ce(isa).loss(r(x, 3, 4), &labels, Some(l)).map(|_| ())
        });
        Buffers::new(12, 3).expect(&format!("[{isa}] loss_and_grad"), is, |x, g, _, l| {
            ce(isa)
                .loss_and_grad(r(x, 3, 4), &labels, rm(g, 3, 4), Some(l))
                .map(|_| ())
        });
        Buffers::new(12, 3).expect(
            &format!("[{isa}] loss_and_grad_in_place"),
            is,
            |x, _, _, l| {
                ce(isa)
                    .loss_and_grad_in_place(rm(x, 3, 4), &labels, Some(l))
                    .map(|_| ())
            },
        );
    });
}

#[test]
fn error_label_out_of_range() {
    common::for_each_isa("error_label_out_of_range", |isa| {
        // The first bad row is reported; the row before it is valid, so nothing may be written for it either.
        let labels = [1i64, 4, -1];
        let is = |e: &Error| {
            *e == Error::LabelOutOfRange {
                row: 1,
                label: 4,
                classes: 4,
            }
        };
        Buffers::new(12, 3).expect(&format!("[{isa}] loss_and_grad i64"), is, |x, g, _, l| {
            ce(isa)
                .loss_and_grad(r(x, 3, 4), &labels, rm(g, 3, 4), Some(l))
                .map(|_| ())
        });
        let labels = [1i32, 0, -100, -5];
        let is = |e: &Error| {
            *e == Error::LabelOutOfRange {
                row: 3,
                label: -5,
                classes: 4,
            }
        };
        Buffers::new(16, 4).expect(
            &format!("[{isa}] loss_and_grad_in_place i32"),
            is,
            |x, _, _, l| {
                ce(isa)
                    .loss_and_grad_in_place(rm(x, 4, 4), &labels, Some(l))
                    .map(|_| ())
            },
        );
        // Without an ignore index, -100 is out of range.
        let labels = [1usize, 2, 3];
        let is = |e: &Error| matches!(e, Error::LabelOutOfRange { row: 0, .. });
        let labels_i = [-100i64, 2, 3];
        Buffers::new(12, 3).expect(&format!("[{isa}] ignore None"), is, |x, g, _, l| {
            ce(isa)
                .with_ignore_index(None)
                .loss_and_grad(r(x, 3, 4), &labels_i, rm(g, 3, 4), Some(l))
                .map(|_| ())
        });
        let is = |e: &Error| {
            *e == Error::LabelOutOfRange {
                row: 2,
                label: u64::MAX as i128,
                classes: 4,
            }
        };
        let big = [1u64, 2, u64::MAX];
        Buffers::new(12, 3).expect(&format!("[{isa}] u64::MAX"), is, |x, _, _, l| {
            ce(isa).loss(r(x, 3, 4), &big, Some(l)).map(|_| ())
        });
        let _ = labels;
    });
}

#[test]
fn error_weight_count() {
    let w = [1.0f32, 2.0, 3.0];
    common::for_each_isa("error_weight_count", |isa| {
        let labels = [0i64, 1, 2];
        Buffers::new(12, 3).expect(
            &format!("[{isa}] 3 weights, 4 classes"),
            |e| {
                *e == Error::WeightCount {
                    weights: 3,
                    classes: 4,
                }
            },
            |x, g, _, l| {
                ce(isa)
                    .with_weights(&w)
                    .unwrap()
                    .loss_and_grad(r(x, 3, 4), &labels, rm(g, 3, 4), Some(l))
                    .map(|_| ())
            },
        );
    });
}

#[test]
fn error_weights_with_soft_targets() {
    let w = [1.0f32; 4];
    common::for_each_isa("error_weights_with_soft_targets", |isa| {
        let is = |e: &Error| *e == Error::WeightsWithSoftTargets;
        Buffers::new(12, 3).expect(&format!("[{isa}] soft_loss_and_grad"), is, |x, q, g, l| {
            ce(isa)
                .with_weights(&w)
                .unwrap()
                .soft_loss_and_grad(r(x, 3, 4), r(q, 3, 4), rm(g, 3, 4), Some(l))
                .map(|_| ())
        });
        Buffers::new(12, 3).expect(
            &format!("[{isa}] soft_loss_and_grad_in_place"),
            is,
            |x, q, _, l| {
                ce(isa)
                    .with_weights(&w)
                    .unwrap()
                    .soft_loss_and_grad_in_place(rm(x, 3, 4), r(q, 3, 4), Some(l))
                    .map(|_| ())
            },
        );
    });
}

#[test]
fn error_output_too_short() {
    common::for_each_isa("error_output_too_short", |isa| {
        let is = |e: &Error| *e == Error::OutputTooShort { len: 2, rows: 3 };
        let labels = [0i64, 1, 2];
        Buffers::new(12, 2).expect(&format!("[{isa}] loss_and_grad"), is, |x, g, _, l| {
            ce(isa)
                .loss_and_grad(r(x, 3, 4), &labels, rm(g, 3, 4), Some(l))
                .map(|_| ())
        });
        Buffers::new(12, 2).expect(
            &format!("[{isa}] soft_loss_and_grad_in_place"),
            is,
            |x, q, _, l| {
                ce(isa)
                    .soft_loss_and_grad_in_place(rm(x, 3, 4), r(q, 3, 4), Some(l))
                    .map(|_| ())
            },
        );
    });
}

#[test]
fn error_losses_required() {
    common::for_each_isa("error_losses_required", |isa| {
        let is = |e: &Error| *e == Error::LossesRequired;
        let labels = [0i64, 1, 2];
        Buffers::new(12, 0).expect(&format!("[{isa}] loss_and_grad None"), is, |x, g, _, _| {
            ce(isa)
                .with_reduction(Reduction::None)
                .loss_and_grad(r(x, 3, 4), &labels, rm(g, 3, 4), None)
                .map(|_| ())
        });
        Buffers::new(12, 0).expect(
            &format!("[{isa}] soft_loss_and_grad_in_place None"),
            is,
            |x, q, _, _| {
                ce(isa)
                    .with_reduction(Reduction::None)
                    .soft_loss_and_grad_in_place(rm(x, 3, 4), r(q, 3, 4), None)
                    .map(|_| ())
            },
        );
    });
}

#[test]
fn error_invalid_options() {
    for eps in [-0.1f32, 1.0, 1.5, f32::NAN, f32::INFINITY] {
        match CrossEntropy::new().with_label_smoothing(eps) {
            Err(Error::InvalidSmoothing(e)) => assert!(
                e.to_bits() == eps.to_bits(),
                "smoothing {eps}: reported {e}"
            ),
            other => panic!("smoothing {eps}: expected InvalidSmoothing, got {other:?}"),
        }
    }
    for (w, class) in [
        (vec![1.0, -1.0], 1usize),
        (vec![f32::NAN], 0),
        (vec![0.0, 1.0, f32::INFINITY], 2),
    ] {
        match CrossEntropy::new().with_weights(&w) {
            Err(Error::InvalidWeight { class: c, .. }) => assert_eq!(c, class, "weights {w:?}"),
            other => panic!("weights {w:?}: expected InvalidWeight, got {other:?}"),
        }
    }
    assert!(matches!(
        CrossEntropy::new().with_temperature(0.0),
        Err(Error::InvalidTemperature(_))
    ));
    // Zero weights and ε = 0 are valid.
    assert!(CrossEntropy::new().with_weights(&[0.0, 0.0]).is_ok());
    assert!(CrossEntropy::new().with_label_smoothing(0.0).is_ok());
}

/// Library bug (kernels/src/cross_entropy.rs, `cross_entropy_row`): with a hard
/// label, no smoothing and no weights, the gradient pass sums z_j over the row
/// and then multiplies that sum by the smoothing base (0); a logit of −inf (a
/// masked class, z = −inf) makes it −inf·0 = NaN, so the fused loss is NaN
/// although every target weight on the −inf entries is 0. The loss-only call
/// (which skips that pass) returns the right value.
#[test]
fn loss_and_grad_with_a_masked_logit_and_no_smoothing() {
    common::for_each_isa(
        "loss_and_grad_with_a_masked_logit_and_no_smoothing",
        |isa| {
            let x = [0.0f32, f32::NEG_INFINITY];
            let mut grad = [f32::NAN; 2];
            let ce = CrossEntropy::new()
                .with_isa(isa)
                .unwrap()
                .with_reduction(Reduction::Sum);
            let only = ce
                .loss(Rows::contiguous(&x, 2).unwrap(), &[0i64], None)
                .unwrap();
            let fused = ce
                .loss_and_grad(
                    Rows::contiguous(&x, 2).unwrap(),
                    &[0i64],
                    RowsMut::contiguous(&mut grad, 2).unwrap(),
                    None,
                )
                .unwrap();
            assert_eq!(
                only, 0.0,
                "[{isa}] loss of [0, -inf] against label 0 (p = 1)"
            );
            assert_eq!(
                grad,
                [0.0, 0.0],
                "[{isa}] gradient of [0, -inf] against label 0"
            );
            assert_eq!(
                fused, 0.0,
                "[{isa}] fused loss of [0, -inf] against label 0 (loss-only gives {only})"
            );
        },
    );
}
