//! The training-side paths and their references: backward passes, the softmax
//! Jacobian and the fused cross-entropy, run on every backend (each ISA through
//! the public API, the emulated 4/8/16-lane tokens through kernel jobs), an f64
//! reference for each, their error bounds, and a small error table.
//!
//! Bounds (U = 2⁻²⁴, c = `temperature_factor(t)`, every reference in f64 from
//! the same f32 inputs):
//!
//! | quantity                         | bound on \|computed − exact\|                                   |
//! |----------------------------------|-----------------------------------------------------------------|
//! | softmax backward dx_i            | 8U·max\|dx*\| + y_i·8U·Σ_j\|g_j y_j\| / t + 2⁻¹⁴⁹                |
//! | log-softmax backward dx_i        | 8U·max\|dx*\| + e^(y_i)·(c·\|y_i\| + 16)·U·Σ_j\|g_j\| / t + 2⁻¹⁴⁹ |
//! | Jacobian J_ij                    | 4U·\|J*_ij\| + 2⁻¹⁴⁹                                            |
//! | cross-entropy row loss L         | 8U·\|L*\| + A·`logsumexp_bound` / t                              |
//! | cross-entropy gradient (x_j)     | k·(A·`softmax_bound`(t, l*_j, p*_j) + 4U·(A·p*_j + a_j))         |
//!
//! Softmax backward: the dot product s = ⟨g, y⟩ is accumulated in f32 lanes of
//! at most 8 fused multiply-adds before each lane goes into f64, so |s − s*| ≤
//! 8U·Σ|g_j y_j| (the conditioning term, carried into dx_i by the factor y_i/t);
//! the rest (g_i − s, × y_i, × 1/t) is a few roundings of at most max|dx|.
//! Log-softmax backward: σ = Σg the same way (8U·Σ|g|), and e^(y_i) carries the
//! exp error (c·|y_i| + 8)·U of the accuracy table; both multiply e^(y_i)/t.
//! The 2⁻¹⁴⁹ covers one rounding into the subnormal range.
//! Cross-entropy: a_j is the target weight, A = Σa_j, k = scale/t, and the
//! probability is computed as e^(z_j − ln S), so the softmax bound takes the
//! log-probability l*_j (not z_j) as its argument; the 4U covers the roundings
//! of a_j, of the difference and of the product by k. The loss is a sum of
//! non-negative terms a_j·(ln S − z_j), so it is relative, plus ln S's error.

use super::backend::Backend;
use super::bounds::{logsumexp_bound, softmax_bound, temperature_factor, U};
use super::element::Narrow;
use super::oracle::{reference, sum_f64, Reference, RowKind};
use softmax::{
    Algorithm, CrossEntropy, Element, Isa, Parallelism, Reduction, Rows, RowsMut, Softmax,
};
use softmax_kernels::{
    Backward, Jacobian, Labels, LossOptions, Method, Output, Strided, StridedMut, Targets,
    Temperature,
};
use std::collections::BTreeMap;

/// 2⁻¹⁴⁹, the smallest subnormal f32: one rounding into the subnormal range.
pub const TINY: f64 = 1.401_298_464_324_817e-45;

/// The shape of a batch: `rows` rows of `cols`, `stride` elements apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shape {
    pub rows: usize,
    pub cols: usize,
    pub stride: usize,
}

impl Shape {
    pub fn row(cols: usize) -> Self {
        Shape {
            rows: 1,
            cols,
            stride: cols,
        }
    }

    /// The index range of row `i`.
    pub fn range(&self, i: usize) -> std::ops::Range<usize> {
        i * self.stride..i * self.stride + self.cols
    }
}

/// Cross-entropy options as the tests set them.
#[derive(Clone, Copy, Debug)]
pub struct LossConfig<'w> {
    pub t: f32,
    pub smoothing: f32,
    pub weights: Option<&'w [f32]>,
    pub reduction: Reduction,
    pub ignore: Option<i64>,
    /// `ThreePass` (one exp per element, where the target allows) or `Online`.
    pub algorithm: Algorithm,
}

impl<'w> LossConfig<'w> {
    pub fn new(t: f32) -> Self {
        LossConfig {
            t,
            smoothing: 0.0,
            weights: None,
            reduction: Reduction::Mean,
            ignore: Some(softmax::DEFAULT_IGNORE_INDEX),
            algorithm: Algorithm::Auto,
        }
    }

    pub fn describe(&self) -> String {
        format!(
            "t {:e} smoothing {} weights {} reduction {:?} ignore {:?} {:?}",
            self.t,
            self.smoothing,
            if self.weights.is_some() { "yes" } else { "no" },
            self.reduction,
            self.ignore,
            self.algorithm
        )
    }

    /// The public API's options, on `isa` and `parallelism`.
    pub fn api(&self, isa: Isa, parallelism: Parallelism) -> CrossEntropy<'w> {
        let mut ce = CrossEntropy::new()
            .with_isa(isa)
            .unwrap()
            .with_temperature(self.t)
            .unwrap()
            .with_label_smoothing(self.smoothing)
            .unwrap()
            .with_ignore_index(self.ignore)
            .with_reduction(self.reduction)
            .with_algorithm(self.algorithm)
            .with_parallelism(parallelism);
        if let Some(w) = self.weights {
            ce = ce.with_weights(w).unwrap();
        }
        ce
    }

    /// The mean's denominator: non-ignored rows, Σ w[label] over them, or the row count.
    pub fn denominator(&self, target: &Target<'_, impl Copy>, rows: usize) -> f64 {
        match target {
            Target::Labels(labels) => labels
                .iter()
                .filter(|&&l| Some(l) != self.ignore)
                .map(|&l| self.weights.map_or(1.0, |w| w[l as usize] as f64))
                .sum(),
            Target::Soft(_) => rows as f64,
        }
    }

    /// The gradient's scale: 1, or 1/D for a mean (0 when D = 0).
    pub fn scale(&self, denominator: f64) -> f64 {
        match self.reduction {
            Reduction::Mean if denominator > 0.0 => 1.0 / denominator,
            Reduction::Mean => 0.0,
            _ => 1.0,
        }
    }

    /// The returned value from the sum of the row losses.
    pub fn reduce(&self, sum: f64, denominator: f64) -> f64 {
        match self.reduction {
            Reduction::Mean => sum / denominator,
            _ => sum,
        }
    }

    /// The target weights a_c of a row with label `label` of `cols` classes.
    pub fn label_targets(&self, cols: usize, label: usize) -> Vec<f64> {
        let eps = self.smoothing as f64;
        let w = |c: usize| self.weights.map_or(1.0, |w| w[c] as f64);
        (0..cols)
            .map(|c| {
                let on = if c == label { (1.0 - eps) * w(c) } else { 0.0 };
                on + eps / cols as f64 * w(c)
            })
            .collect()
    }

    /// The target weights a_c of a row with soft target `q`.
    pub fn soft_targets(&self, q: &[f64]) -> Vec<f64> {
        let eps = self.smoothing as f64;
        let k = q.len() as f64;
        q.iter().map(|&q| (1.0 - eps) * q + eps / k).collect()
    }

    /// The target weights of row `i` (None: ignored).
    pub fn row_targets<T: Narrow>(
        &self,
        target: &Target<'_, T>,
        shape: Shape,
        i: usize,
    ) -> Option<Vec<f64>> {
        match target {
            Target::Labels(labels) if Some(labels[i]) == self.ignore => None,
            Target::Labels(labels) => Some(self.label_targets(shape.cols, labels[i] as usize)),
            Target::Soft(q) => {
                let q: Vec<f64> = q[shape.range(i)].iter().map(|v| v.to_f64()).collect();
                Some(self.soft_targets(&q))
            }
        }
    }
}

/// What the rows are scored against: one label per row, or soft targets laid
/// out like the logits (same shape and stride).
#[derive(Clone, Copy, Debug)]
pub enum Target<'a, T> {
    Labels(&'a [i64]),
    Soft(&'a [T]),
}

fn softmax_options(isa: Isa, t: f32, parallelism: Parallelism) -> Softmax {
    Softmax::new()
        .with_isa(isa)
        .unwrap_or_else(|e| panic!("{isa} was reported available: {e}"))
        .with_temperature(t)
        .unwrap_or_else(|e| panic!("temperature {t:e} is valid: {e}"))
        .with_parallelism(parallelism)
}

fn rows<T: Element>(data: &[T], s: Shape) -> Rows<'_, T> {
    Rows::new(data, s.rows, s.cols, s.stride).unwrap()
}

fn rows_mut<T: Element>(data: &mut [T], s: Shape) -> RowsMut<'_, T> {
    RowsMut::new(data, s.rows, s.cols, s.stride).unwrap()
}

impl Backend {
    /// The backward pass of `output` for a batch of `shape`: from `y` and `g`
    /// into `dx`, or in place (`dx` holds g on entry) when `g` is `None`.
    /// A single row (rows = 1, stride = cols) goes through the slice API.
    #[allow(clippy::too_many_arguments)]
    pub fn backward<T: Element>(
        self,
        output: Output,
        t: f32,
        parallelism: Parallelism,
        shape: Shape,
        y: &[T],
        g: Option<&[T]>,
        dx: &mut [T],
    ) {
        match self {
            Backend::Isa(isa) => {
                let sm = softmax_options(isa, t, parallelism);
                let single = shape == Shape::row(shape.cols);
                let result = match (output, g, single) {
                    (Output::Softmax, Some(g), true) => sm.softmax_backward(y, g, dx),
                    (Output::Softmax, None, true) => sm.softmax_backward_in_place(y, dx),
                    (Output::LogSoftmax, Some(g), true) => sm.log_softmax_backward(y, g, dx),
                    (Output::LogSoftmax, None, true) => sm.log_softmax_backward_in_place(y, dx),
                    (Output::Softmax, Some(g), false) => sm.softmax_backward_rows(
                        rows(y, shape),
                        rows(g, shape),
                        rows_mut(dx, shape),
                    ),
                    (Output::Softmax, None, false) => {
                        sm.softmax_backward_rows_in_place(rows(y, shape), rows_mut(dx, shape))
                    }
                    (Output::LogSoftmax, Some(g), false) => sm.log_softmax_backward_rows(
                        rows(y, shape),
                        rows(g, shape),
                        rows_mut(dx, shape),
                    ),
                    (Output::LogSoftmax, None, false) => {
                        sm.log_softmax_backward_rows_in_place(rows(y, shape), rows_mut(dx, shape))
                    }
                };
                result.unwrap_or_else(|e| panic!("{isa}: a valid backward call failed: {e}"));
            }
            _ => {
                let (r, c, s) = (shape.rows, shape.cols, shape.stride);
                self.vectorize(Backward {
                    output,
                    temperature: Temperature::new(t),
                    cap: None,
                    y: Strided::new(T::any(y), r, c, s),
                    g: g.map(|g| Strided::new(T::any(g), r, c, s)),
                    dx: StridedMut::new(T::any_mut(dx), r, c, s),
                });
            }
        }
    }

    /// The softmax Jacobian of `y` into `out` (K×K).
    pub fn jacobian<T: Element, O: Element>(self, t: f32, y: &[T], out: &mut [O]) {
        match self {
            Backend::Isa(isa) => softmax_options(isa, t, Parallelism::Serial)
                .softmax_jacobian(y, out)
                .unwrap_or_else(|e| panic!("{isa}: a valid Jacobian call failed: {e}")),
            _ => self.vectorize(Jacobian {
                temperature: Temperature::new(t),
                cap: None,
                y: T::any(y),
                out: O::any_mut(out),
            }),
        }
    }

    /// Cross-entropy of the batch `x` (or, in place, of `grad`'s contents when
    /// `x` is `None`) against `target`; the gradient into `grad` when given.
    /// Returns the reduced loss.
    #[allow(clippy::too_many_arguments)]
    pub fn cross_entropy<T: Element>(
        self,
        cfg: &LossConfig<'_>,
        parallelism: Parallelism,
        shape: Shape,
        x: Option<&[T]>,
        target: Target<'_, T>,
        grad: Option<&mut [T]>,
        losses: Option<&mut [f32]>,
    ) -> f32 {
        match self {
            Backend::Isa(isa) => {
                let ce = cfg.api(isa, parallelism);
                let result = match (x, grad, target) {
                    (Some(x), None, Target::Labels(l)) => ce.loss(rows(x, shape), l, losses),
                    (Some(x), Some(g), Target::Labels(l)) => {
                        ce.loss_and_grad(rows(x, shape), l, rows_mut(g, shape), losses)
                    }
                    (None, Some(g), Target::Labels(l)) => {
                        ce.loss_and_grad_in_place(rows_mut(g, shape), l, losses)
                    }
                    (Some(x), None, Target::Soft(q)) => {
                        ce.soft_loss(rows(x, shape), rows(q, shape), losses)
                    }
                    (Some(x), Some(g), Target::Soft(q)) => ce.soft_loss_and_grad(
                        rows(x, shape),
                        rows(q, shape),
                        rows_mut(g, shape),
                        losses,
                    ),
                    (None, Some(g), Target::Soft(q)) => {
                        ce.soft_loss_and_grad_in_place(rows_mut(g, shape), rows(q, shape), losses)
                    }
                    (None, None, _) => unreachable!("no logits"),
                };
                result.unwrap_or_else(|e| panic!("{isa}: a valid cross-entropy call failed: {e}"))
            }
            _ => {
                let (r, c, s) = (shape.rows, shape.cols, shape.stride);
                let denominator = match target {
                    Target::Labels(l) => cfg.denominator(&Target::<f32>::Labels(l), r),
                    Target::Soft(_) => r as f64,
                };
                let targets = match target {
                    Target::Labels(labels) => Targets::Labels {
                        labels: Labels::I64(labels),
                        ignore: cfg.ignore.map(i128::from),
                    },
                    Target::Soft(q) => Targets::Soft(Strided::new(T::any(q), r, c, s)),
                };
                let options = LossOptions {
                    temperature: Temperature::new(cfg.t),
                    smoothing: cfg.smoothing,
                    weights: cfg.weights,
                    weight_sum: match cfg.weights {
                        Some(w) => w.iter().map(|&w| w as f64).sum(),
                        None => c as f64,
                    },
                    grad_scale: cfg.scale(denominator),
                    cap: None,
                };
                let method = match cfg.algorithm {
                    Algorithm::Online => Method::Online,
                    _ => Method::ThreePass,
                };
                let sum = self.vectorize(softmax_kernels::CrossEntropy {
                    options,
                    method,
                    targets,
                    x: x.map(|x| Strided::new(T::any(x), r, c, s)),
                    grad: grad.map(|g| StridedMut::new(T::any_mut(g), r, c, s)),
                    losses: losses.map(|l| &mut l[..r]),
                });
                cfg.reduce(sum, denominator) as f32
            }
        }
    }
}

/// The exact backward pass of one row, from the f32 (or widened) inputs.
pub struct BackwardRef {
    pub dx: Vec<f64>,
    /// The per-element bound.
    pub bound: Vec<f64>,
    /// max |dx*|: the scale of the bound.
    pub scale: f64,
}

#[allow(clippy::type_complexity)]
pub fn backward_reference(output: Output, t: f32, y: &[f64], g: &[f64]) -> BackwardRef {
    let t64 = t as f64;
    let (dx, bound): (Vec<f64>, Box<dyn Fn(usize, f64) -> f64>);
    match output {
        Output::Softmax => {
            let s = sum_f64(g.iter().zip(y).map(|(g, y)| g * y));
            let dot_abs = sum_f64(g.iter().zip(y).map(|(g, y)| (g * y).abs()));
            dx = y.iter().zip(g).map(|(y, g)| y * (g - s) / t64).collect();
            let y = y.to_vec();
            bound = Box::new(move |i, max| 8.0 * U * max + y[i] * 8.0 * U * dot_abs / t64 + TINY);
        }
        Output::LogSoftmax => {
            let sigma = sum_f64(g.iter().copied());
            let g_abs = sum_f64(g.iter().map(|g| g.abs()));
            dx = y
                .iter()
                .zip(g)
                .map(|(y, g)| (g - y.exp() * sigma) / t64)
                .collect();
            let c = temperature_factor(t);
            let y = y.to_vec();
            bound = Box::new(move |i, max| {
                let e = y[i].exp();
                let exp_part = if e == 0.0 {
                    0.0
                } else {
                    e * (c * y[i].abs() + 16.0) * U * g_abs / t64
                };
                8.0 * U * max + exp_part + TINY
            });
        }
    }
    let scale = dx.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    let bound = (0..dx.len()).map(|i| bound(i, scale)).collect();
    BackwardRef { dx, bound, scale }
}

/// The exact loss and gradient of one row.
pub struct LossRef {
    /// −Σ_{a_c ≠ 0} a_c·l_c.
    pub loss: f64,
    /// (A·p_c − a_c)/t, before the reduction's scale.
    pub grad: Vec<f64>,
    pub a: Vec<f64>,
    /// A = Σ a_c.
    pub total: f64,
    pub r: Reference,
}

/// A sum that stays exact-ish on finite terms and IEEE on infinite ones.
fn robust_sum(terms: &[f64]) -> f64 {
    if terms.iter().all(|v| v.is_finite()) {
        sum_f64(terms.iter().copied())
    } else {
        terms.iter().sum()
    }
}

pub fn loss_reference(x: &[f32], t: f32, a: Vec<f64>) -> LossRef {
    let r = reference(x, t);
    let total = sum_f64(a.iter().copied());
    let terms: Vec<f64> = a
        .iter()
        .zip(&r.log_softmax)
        .filter(|(a, _)| **a != 0.0)
        .map(|(a, l)| a * l)
        .collect();
    let (loss, grad) = if r.kind == RowKind::Nan {
        (f64::NAN, vec![f64::NAN; x.len()])
    } else {
        let t64 = t as f64;
        let grad = a
            .iter()
            .zip(&r.softmax)
            .map(|(a, p)| (total * p - a) / t64)
            .collect();
        (-robust_sum(&terms), grad)
    };
    LossRef {
        loss,
        grad,
        a,
        total,
        r,
    }
}

impl LossRef {
    /// The bound on the row loss.
    pub fn loss_bound(&self) -> f64 {
        let lse = if self.r.kind == RowKind::Finite {
            self.total * logsumexp_bound(self.r.t, self.r.max, self.r.finite) / self.r.t as f64
        } else {
            0.0
        };
        8.0 * U * self.loss.abs() + lse
    }

    /// The bound on gradient element `j` scaled by `scale`; `softmax_terms` is
    /// how many softmax errors it carries (1 against the f64 reference, 2
    /// against the crate's own softmax).
    pub fn grad_bound(&self, j: usize, scale: f64, softmax_terms: f64) -> f64 {
        let (p, a) = (self.r.softmax[j], self.a[j]);
        let k = scale / self.r.t as f64;
        let sm = if self.r.kind == RowKind::Finite {
            let l = self.r.log_softmax[j];
            let l = if l.is_finite() { l } else { 0.0 };
            softmax_terms * self.total * softmax_bound(self.r.t, l, p)
        } else {
            0.0
        };
        k * (sm + 4.0 * U * (self.total * p + a)) + TINY
    }
}

/// How a value compares with its reference: `Ok(error)` or why it fails.
/// A NaN reference wants a NaN; an infinite one wants the same infinity.
pub fn compare(got: f64, want: f64, bound: f64) -> Result<f64, String> {
    if want.is_nan() {
        return if got.is_nan() {
            Ok(0.0)
        } else {
            Err(format!("got {got:e}, expected NaN"))
        };
    }
    if want.is_infinite() {
        return if got == want {
            Ok(0.0)
        } else {
            Err(format!("got {got:e}, expected {want:e}"))
        };
    }
    let err = (got - want).abs();
    if err <= bound {
        Ok(err)
    } else {
        Err(format!(
            "got {got:e}, expected {want:e}: error {err:e} > bound {bound:e} ({:.3}×)",
            err / bound
        ))
    }
}

/// softmax(x/t) and log-softmax(x/t) in f64 of an f64 row (finite entries).
pub fn softmax_f64(x: &[f64], t: f64) -> (Vec<f64>, Vec<f64>) {
    let m = x.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let z: Vec<f64> = x.iter().map(|v| (v - m) / t).collect();
    let s = sum_f64(z.iter().map(|z| z.exp()));
    let ln = s.ln();
    (
        z.iter().map(|z| z.exp() / s).collect(),
        z.iter().map(|z| z - ln).collect(),
    )
}

/// One cell of the table: the largest error in units of its bound and in
/// units of 2⁻²⁴ of its scale.
#[derive(Clone, Copy, Debug, Default)]
struct Cell {
    ratio: f64,
    units: f64,
    checks: u64,
}

/// An error table (operation × backend) and the first failures.
pub struct Table {
    title: String,
    cells: BTreeMap<(String, String), Cell>,
    failures: BTreeMap<String, String>,
    failed: u64,
}

impl Table {
    pub fn new(title: &str) -> Self {
        Table {
            title: title.to_string(),
            cells: BTreeMap::new(),
            failures: BTreeMap::new(),
            failed: 0,
        }
    }

    /// Checks `got` against `want` within `bound`; records the error in units
    /// of the bound and of U·`scale`.
    #[allow(clippy::too_many_arguments)]
    pub fn check(
        &mut self,
        op: &str,
        backend: &str,
        got: f64,
        want: f64,
        bound: f64,
        scale: f64,
        context: impl FnOnce() -> String,
    ) {
        let cell = self
            .cells
            .entry((op.to_string(), backend.to_string()))
            .or_default();
        cell.checks += 1;
        match compare(got, want, bound) {
            Ok(err) => {
                if err > 0.0 {
                    cell.ratio = cell.ratio.max(err / bound);
                    if scale > 0.0 {
                        cell.units = cell.units.max(err / (U * scale));
                    }
                }
            }
            Err(why) => self.fail(op, format!("[{backend} | {op}] {}: {why}", context())),
        }
    }

    /// Records a failure; the first message of each kind is kept.
    pub fn fail(&mut self, kind: &str, message: String) {
        self.failed += 1;
        if self.failures.len() < 40 {
            self.failures.entry(kind.to_string()).or_insert(message);
        }
    }

    /// Fails unless `ok`.
    pub fn expect(&mut self, ok: bool, kind: &str, message: impl FnOnce() -> String) {
        if !ok {
            self.fail(kind, message());
        }
    }

    /// Prints the table and fails the test if any check failed.
    pub fn finish(self) {
        let mut s = format!(
            "\n{} — max |error| / bound, and in units of 2^-24 of the scale (max|dx*|, |L*|, …)\n",
            self.title
        );
        for ((op, backend), c) in &self.cells {
            s += &format!(
                "{op:<34} {backend:<8} {:>10.4} of bound {:>10.3} U  ({} checks)\n",
                c.ratio, c.units, c.checks
            );
        }
        eprintln!("{s}");
        assert!(
            self.failed == 0,
            "{}: {} check(s) failed; the first of each kind:\n{}",
            self.title,
            self.failed,
            self.failures.into_values().collect::<Vec<_>>().join("\n")
        );
    }
}
