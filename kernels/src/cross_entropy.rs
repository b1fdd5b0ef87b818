//! Cross-entropy from logits, with its gradient, without a probability ever
//! being stored: one exp per element (three-pass) or one read for the
//! statistics (online).
//!
//! ```text
//! target a_j = c·[j = label] + b + s·v_j      (hard label: c = (1-ε)·w_label, b + s·v_j = ε/K·w_j;
//!                                              soft target q: c = 0, b = ε/K, s = 1-ε, v = q)
//! A = Σ a_j                                   (known for hard labels; soft ones sum q first)
//! k = 1/t · (1 or 1/N for a mean)
//!
//! three-pass (a gradient, no side row: s = 0)
//! pass 1    max of z = (x - max)/t
//! pass 2    e_j = e^(z_j) stored (in the gradient row when it is f32 and not the logits,
//!           else in a row of working space), S = Σ e_j, and T = b·Σ z_j when b ≠ 0
//! pass 3    grad_j = k·A/S · e_j - k·b            (the label's entry then set apart, in f64)
//!
//! online (any target; the loss alone)
//! pass 1    (max, ln S) of z                      (the online statistics: one read)
//! pass 2    grad_j = k·(A·e^(z_j - ln S) - a_j)
//!           T = Σ_{a_j ≠ 0} (b + s·v_j)·z_j       (same read; skipped when there is no gradient
//!                                                 and no per-class term)
//!
//! T is summed as (x·2^-64 - max·2^-64)·2^64/t so that it stays finite for logits near ±f32::MAX.
//! loss      A·ln S - c·z_label - T                (= -Σ a_j·log-softmax_j, in f64)
//! ```
//! A term whose target is 0 adds 0 even where its log-probability is -inf.
//! Rows whose max is not finite follow the forward rules (NaN anywhere: loss and
//! gradient NaN; k entries of +inf share probability 1/k and log-probability
//! -ln k, the rest 0 and -inf; all -inf: probability 0, log-probability -inf)
//! and are computed element by element in f64.
//!
//! Under a soft-cap v = (c/t)·tanh(x/c) each row is first capped into working
//! space, with dv/dx = (1/t)·(1 − tanh²(x/c)) beside it when there is a
//! gradient; the row is then scored as above at t = 1, and its gradient
//! (in f32) times dv/dx is rounded once into the caller's row.

use crate::arch::Arch;
use crate::backward::Sum;
use crate::exp::{exp_flushed_below, CUTOFF};
use crate::exp_sum::{sum_lanes_f64, sums_lanes_into, SUM_FLUSH_STEPS};
use crate::forward::{
    classify, exp_pass, finite_or_nan, online_stats, row_range, softmax_cutoff, stored_floor,
    ExpPass, Special, Stats, SumExp, PEAKED,
};
use crate::loops::{read, read_pair, run, run_pair, write, Io, Kernel, PairIo, Stage};
use crate::output::{Fill, Map, Product, ScaleOffset};
use crate::shift::{with_shift_and_test, AnyShift, Shift};
use crate::storage::{AnySlice, AnySliceMut, Kind};
use crate::strided::{SplitRows, Strided, StridedMut};
use crate::tanh::{Slope, SoftCap};
use crate::{stage_len, Batch, Job, Method, Temperature};
use pulp::Simd;

/// What one row is scored against.
#[derive(Clone, Copy, Debug)]
pub enum RowTarget<'a> {
    /// A class index (below the row length).
    Class(usize),
    /// No target: loss 0, gradient 0.
    Ignored,
    /// A target distribution as long as the row.
    Soft(AnySlice<'a>),
}

/// The options of a cross-entropy call, the same for every row.
#[derive(Clone, Copy, Debug)]
pub struct LossOptions<'a> {
    pub temperature: Temperature,
    /// Label smoothing ε in [0, 1).
    pub smoothing: f32,
    /// Per-class weights (hard labels only), finite and ≥ 0.
    pub weights: Option<&'a [f32]>,
    /// Σ weights, or the class count without weights.
    pub weight_sum: f64,
    /// Multiplies every gradient (1, or 1/N for a mean).
    pub grad_scale: f64,
    /// A soft-cap on the logits, the temperature folded into its c.
    pub cap: Option<SoftCap>,
}

/// The target of a row as coefficients: a_j = label_coef·[j = label] + base + side_coef·v_j.
struct Coefficients<'a> {
    label: Option<usize>,
    label_coef: f64,
    base: f64,
    side_coef: f64,
    side: Option<AnySlice<'a>>,
    /// A = Σ a_j.
    total: f64,
}

impl Coefficients<'_> {
    #[inline(always)]
    fn at(&self, j: usize) -> f64 {
        let side = match self.side {
            Some(v) if self.side_coef != 0.0 => self.side_coef * v.get(j),
            _ => 0.0,
        };
        let label = if self.label == Some(j) {
            self.label_coef
        } else {
            0.0
        };
        label + self.base + side
    }
}

/// Pass 2: the gradient (when written) and Σ (b + s·v_j)·z_j over the terms whose target is not 0.
struct LossGrad<Z, const FLUSH: bool> {
    shift: Z,
    cutoff: f32,
    /// k·A/S.
    r: f32,
    base: f32,
    side: f32,
    /// k·b and k·s.
    base_k: f32,
    side_k: f32,
    /// max · 2^-64.
    max_scaled: f32,
    /// Σ of the terms' (x - max)·2^-64.
    total: f64,
}

/// 2^-64: scales x - max into range for any pair of finite f32s.
const DOWN: f32 = 1.0 / 18_446_744_073_709_551_616.0;
/// 2^64.
const UP: f64 = 18_446_744_073_709_551_616.0;

impl<Z: Shift, const FLUSH: bool> LossGrad<Z, FLUSH> {
    #[inline(always)]
    fn exp<S: Simd, const F: bool>(&self, simd: S, z: S::f32s) -> S::f32s {
        exp_flushed_below::<S, F>(simd, z, self.cutoff)
    }
    #[inline(always)]
    fn scaled_difference<S: Simd>(&self, simd: S, x: S::f32s) -> S::f32s {
        scaled_difference(simd, x, self.max_scaled)
    }
}

/// (x - max)·2^-64 from `max_scaled` = max·2^-64, rounded once: finite wherever x is.
#[inline(always)]
fn scaled_difference<S: Simd>(simd: S, x: S::f32s, max_scaled: f32) -> S::f32s {
    simd.mul_add_f32s(x, simd.splat_f32s(DOWN), simd.splat_f32s(-max_scaled))
}

/// Keeps the first `valid` lanes of `v` and zeroes the rest.
#[inline(always)]
fn first_lanes<S: Simd>(simd: S, v: S::f32s, valid: usize) -> S::f32s {
    let keep = simd.mask_between_m32s(0, valid as u32).mask();
    simd.select_f32s(keep, v, simd.splat_f32s(0.0))
}

/// Hard labels without per-class terms beyond a constant b: a_j = b (+ the label).
impl<S: Simd, Z: Shift, const FLUSH: bool> Kernel<S> for LossGrad<Z, FLUSH> {
    // Σ (x - max)·2^-64.
    sums_lanes_into!(total);
    #[inline(always)]
    fn fill(&self) -> f32 {
        f32::NEG_INFINITY
    }
    #[inline(always)]
    fn step(&self, simd: S, acc: S::f32s, x: S::f32s) -> (S::f32s, S::f32s) {
        let z = self.shift.z(simd, x);
        let e = self.exp::<S, FLUSH>(simd, z);
        let g = simd.mul_add_f32s(e, simd.splat_f32s(self.r), simd.splat_f32s(-self.base_k));
        (simd.add_f32s(acc, self.scaled_difference(simd, x)), g)
    }
    #[inline(always)]
    fn step_tail(&self, simd: S, acc: S::f32s, x: S::f32s, valid: usize) -> (S::f32s, S::f32s) {
        let z = self.shift.z(simd, x);
        let e = self.exp::<S, true>(simd, z);
        let g = simd.mul_add_f32s(e, simd.splat_f32s(self.r), simd.splat_f32s(-self.base_k));
        let d = self.scaled_difference(simd, x);
        (simd.add_f32s(acc, first_lanes(simd, d, valid)), g)
    }
}

impl<Z: Shift, const FLUSH: bool> LossGrad<Z, FLUSH> {
    /// (Σ-term, gradient) of (x, v) with the underflow test (`F`) or without.
    #[inline(always)]
    fn pair<S: Simd, const F: bool>(&self, simd: S, x: S::f32s, v: S::f32s) -> (S::f32s, S::f32s) {
        let z = self.shift.z(simd, x);
        let e = self.exp::<S, F>(simd, z);
        let a = simd.mul_add_f32s(simd.splat_f32s(self.side), v, simd.splat_f32s(self.base));
        let a_k = simd.mul_add_f32s(
            simd.splat_f32s(self.side_k),
            v,
            simd.splat_f32s(self.base_k),
        );
        let g = simd.mul_add_f32s(e, simd.splat_f32s(self.r), simd.neg_f32s(a_k));
        let zero = simd.splat_f32s(0.0);
        let counted = simd.not_m32s(simd.equal_f32s(a, zero));
        let d = self.scaled_difference(simd, x);
        (simd.select_f32s(counted, simd.mul_f32s(a, d), zero), g)
    }
}

/// [`LossGrad`]'s gradient alone, for targets with no per-class term (b = 0, no side row).
struct GradOnly<K>(K);

impl<S: Simd, Z: Shift, const FLUSH: bool> Kernel<S> for GradOnly<LossGrad<Z, FLUSH>> {
    type Acc = ();
    #[inline(always)]
    fn fill(&self) -> f32 {
        f32::NEG_INFINITY
    }
    #[inline(always)]
    fn init(&self, _: S) {}
    #[inline(always)]
    fn step(&self, simd: S, _: (), x: S::f32s) -> ((), S::f32s) {
        let k = &self.0;
        let e = k.exp::<S, FLUSH>(simd, k.shift.z(simd, x));
        (
            (),
            simd.mul_add_f32s(e, simd.splat_f32s(k.r), simd.splat_f32s(-k.base_k)),
        )
    }
    #[inline(always)]
    fn step_tail(&self, simd: S, _: (), x: S::f32s, _: usize) -> ((), S::f32s) {
        let k = &self.0;
        let e = k.exp::<S, true>(simd, k.shift.z(simd, x));
        (
            (),
            simd.mul_add_f32s(e, simd.splat_f32s(k.r), simd.splat_f32s(-k.base_k)),
        )
    }
    #[inline(always)]
    fn merge(&self, _: S, _: (), _: ()) {}
    #[inline(always)]
    fn flush(&mut self, _: S, _: ()) {}
}

/// [`LossGrad`] over (x, v) pairs.
struct WithSide<K>(K);

/// A side row v: per-class weights, or a soft target.
impl<S: Simd, Z: Shift, const FLUSH: bool> Kernel<S, (S::f32s, S::f32s)>
    for WithSide<LossGrad<Z, FLUSH>>
{
    // Σ a_j·(x_j - max)·2^-64.
    sums_lanes_into!(0.total);
    #[inline(always)]
    fn fill(&self) -> f32 {
        f32::NEG_INFINITY
    }
    #[inline(always)]
    fn step(&self, simd: S, acc: S::f32s, (x, v): (S::f32s, S::f32s)) -> (S::f32s, S::f32s) {
        let (t, g) = self.0.pair::<S, FLUSH>(simd, x, v);
        (simd.add_f32s(acc, t), g)
    }
    #[inline(always)]
    fn step_tail(
        &self,
        simd: S,
        acc: S::f32s,
        (x, v): (S::f32s, S::f32s),
        valid: usize,
    ) -> (S::f32s, S::f32s) {
        let (t, g) = self.0.pair::<S, true>(simd, x, v);
        (simd.add_f32s(acc, first_lanes(simd, t, valid)), g)
    }
}

/// The logits of a row: `x`, or (in place) the gradient row that still holds them.
#[inline(always)]
fn logits<'s>(x: &Option<AnySlice<'s>>, grad: Option<&'s AnySliceMut<'_>>) -> AnySlice<'s> {
    match (x, grad) {
        (Some(x), _) => *x,
        (None, Some(g)) => g.shared(),
        (None, None) => unreachable!("a cross-entropy row needs its logits"),
    }
}

/// The loss of one row; its gradient too when `grad` is given. In place when
/// `x` is `None` (then `grad` holds the logits). `exps` holds a row of f32
/// where [`stored_passes`] keeps the exponentials outside the gradient row.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub(crate) fn cross_entropy_row<A: Arch>(
    arch: A,
    st: &mut Stage<'_>,
    options: &LossOptions<'_>,
    method: Method,
    target: RowTarget<'_>,
    x: Option<AnySlice<'_>>,
    mut grad: Option<AnySliceMut<'_>>,
    exps: &mut [f32],
) -> f64 {
    let k = logits(&x, grad.as_ref()).len();
    let eps = options.smoothing as f64;
    let per_class = if k > 0 { eps / k as f64 } else { 0.0 };
    let c = match target {
        RowTarget::Ignored => {
            if let Some(g) = grad {
                write(arch, None, g, st, &mut Map(Fill(0.0)));
            }
            return 0.0;
        }
        RowTarget::Class(label) => {
            let w = options.weights.map_or(1.0, |w| w[label] as f64);
            let (base, side_coef, side) = match options.weights {
                Some(weights) if eps > 0.0 => (0.0, per_class, Some(AnySlice::F32(weights))),
                _ => (per_class, 0.0, None),
            };
            Coefficients {
                label: Some(label),
                label_coef: (1.0 - eps) * w,
                base,
                side_coef,
                side,
                total: (1.0 - eps) * w + per_class * options.weight_sum,
            }
        }
        RowTarget::Soft(q) => {
            let mut sum = Sum { total: 0.0 };
            read(arch, q, st, &mut sum);
            Coefficients {
                label: None,
                label_coef: 0.0,
                base: per_class,
                side_coef: 1.0 - eps,
                side: Some(q),
                total: (1.0 - eps) * sum.total + eps,
            }
        }
    };
    let inv_t = options.temperature.inv;
    let scale = options.grad_scale * inv_t as f64;
    let passes = match (method, c.side, grad.as_mut()) {
        (Method::ThreePass, None, Some(g)) => stored_passes(arch, st, &c, scale, inv_t, x, g, exps),
        _ => online_passes(arch, st, &c, scale, inv_t, x, grad.as_mut()),
    };
    let Row {
        max,
        ln_sum,
        terms,
        x_label,
    } = match passes {
        Ok(row) => row,
        Err(special) => return special_row(special, &c, scale, x, grad),
    };
    let mut loss = c.total * ln_sum - terms;
    if let (Some(label), Some(x_label)) = (c.label, x_label) {
        let z_label = (x_label - max as f64) * inv_t as f64;
        if c.label_coef != 0.0 {
            loss -= c.label_coef * z_label;
        }
        if let Some(g) = grad.as_mut() {
            let p = (z_label - ln_sum).exp();
            g.set(label, scale * (c.total * p - c.at(label)));
        }
    }
    loss
}

/// The loss of one soft-capped row (see the module's notes), its gradient too
/// when `grad` is given; in place when `x` is `None`. `space` holds a row of
/// f32 for the capped logits, one for dv/dx (with a gradient) and one for the
/// f32 gradient (for a gradient that is not f32).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn capped_cross_entropy_row<A: Arch>(
    arch: A,
    st: &mut Stage<'_>,
    options: &LossOptions<'_>,
    cap: SoftCap,
    method: Method,
    target: RowTarget<'_>,
    x: Option<AnySlice<'_>>,
    grad: Option<AnySliceMut<'_>>,
    space: &mut [f32],
) -> f64 {
    if let RowTarget::Ignored = target {
        return cross_entropy_row(arch, st, options, method, target, x, grad, &mut []);
    }
    let source = logits(&x, grad.as_ref());
    let n = source.len();
    let (v, rest) = space.split_at_mut(n);
    let (slope, rest) = rest.split_at_mut(if grad.is_some() { n } else { 0 });
    write(arch, Some(source), AnySliceMut::F32(v), st, &mut Map(cap));
    if grad.is_some() {
        let factor = options.temperature.inv;
        let slope_of = &mut Map(Slope { cap, factor });
        write(arch, Some(source), AnySliceMut::F32(slope), st, slope_of);
    }
    let inner = LossOptions {
        temperature: Temperature::default(),
        cap: None,
        ..*options
    };
    let v = Some(AnySlice::F32(v));
    let Some(mut g) = grad else {
        return cross_entropy_row(arch, st, &inner, method, target, v, None, &mut []);
    };
    let slope = AnySlice::F32(slope);
    if g.kind() == Kind::F32 {
        let gv = Some(g.reborrow());
        let loss = cross_entropy_row(arch, st, &inner, method, target, v, gv, &mut []);
        run_pair(arch, PairIo::InPlace(g, slope), st, &mut Map(Product));
        return loss;
    }
    let g32 = &mut rest[..n];
    let gv = Some(AnySliceMut::F32(&mut *g32));
    let loss = cross_entropy_row(arch, st, &inner, method, target, v, gv, &mut []);
    let io = PairIo::Map(AnySlice::F32(g32), slope, g);
    run_pair(arch, io, st, &mut Map(Product));
    loss
}

/// What the passes over a row with a finite max leave for its loss: the max,
/// ln S, T (the Σ of the per-class terms) and the label's logit (read before
/// an in-place gradient overwrote it).
struct Row {
    max: f32,
    ln_sum: f64,
    terms: f64,
    x_label: Option<f64>,
}

/// `Method::Online`: the statistics in one read, then a pass that takes
/// exp(z) again for the gradient (when there is one) and T (when the target
/// has per-class terms). Any target; the only method for soft targets and
/// weights with smoothing.
#[inline(always)]
fn online_passes<A: Arch>(
    arch: A,
    st: &mut Stage<'_>,
    c: &Coefficients<'_>,
    scale: f64,
    inv_t: f32,
    x: Option<AnySlice<'_>>,
    mut grad: Option<&mut AnySliceMut<'_>>,
) -> Result<Row, Special> {
    let stats = online_stats(arch, st, logits(&x, grad.as_deref()), inv_t);
    let (max, min, ln_sum) = match stats {
        Stats::Finite { max, min, ln_sum } => (max, min, ln_sum),
        Stats::Special(special) => return Err(special),
    };
    // Read before the gradient pass, which may overwrite it. Matches, not
    // Option::map: a closure may be compiled outside the region.
    #[allow(clippy::manual_map)]
    let x_label = match c.label {
        Some(j) => Some(logits(&x, grad.as_deref()).get(j)),
        None => None,
    };
    let has_terms = c.base != 0.0 || c.side.is_some();
    let mut terms = 0.0;
    if grad.is_some() || has_terms {
        let (cutoff, flush) = softmax_cutoff(max, min, inv_t, ln_sum);
        #[allow(clippy::manual_map)]
        let grad = match grad.as_mut() {
            Some(g) => Some(g.reborrow()),
            None => None,
        };
        let io = Pass {
            x,
            grad,
            side: c.side,
        };
        let r = (scale * c.total * (-ln_sum).exp()) as f32;
        let shift = AnyShift::new(max, min, inv_t);
        let scaled = with_shift_and_test!(shift, flush, z, TEST => {
            io.run::<A, _, TEST>(arch, st, loss_grad(z, cutoff, r, c, scale, max))
        });
        terms = scaled * UP * inv_t as f64;
        // Without a side row each term is b·z: none at all when b = 0 (a -inf
        // logit would otherwise give 0·-inf).
        if c.side.is_none() {
            terms = if c.base != 0.0 { terms * c.base } else { 0.0 };
        }
    }
    Ok(Row {
        max,
        ln_sum,
        terms,
        x_label,
    })
}

/// `Method::ThreePass` with a gradient and no side row: the max; exp(z)
/// stored (in the gradient row when it is f32 and not the logits, else in
/// `exps`) while S and T are summed; then the gradient from the stored
/// values, k·(A·e/S - b). One exp per element.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn stored_passes<A: Arch>(
    arch: A,
    st: &mut Stage<'_>,
    c: &Coefficients<'_>,
    scale: f64,
    inv_t: f32,
    x: Option<AnySlice<'_>>,
    grad: &mut AnySliceMut<'_>,
    exps: &mut [f32],
) -> Result<Row, Special> {
    let (max, min) = row_range(arch, st, logits(&x, Some(grad)));
    if !max.is_finite() {
        return Err(classify(arch, st, logits(&x, Some(grad))));
    }
    // A match, not Option::map: a closure may be compiled outside the region.
    #[allow(clippy::manual_map)]
    let x_label = match c.label {
        Some(j) => Some(logits(&x, Some(grad)).get(j)),
        None => None,
    };
    let n = grad.len();
    let sum_terms = c.base != 0.0;
    let range = (max, min, inv_t);
    let in_grad = match x {
        Some(x) if grad.kind() == Kind::F32 => {
            let io = Io::Map(x, grad.reborrow());
            let pass = StoreExp { io, max, sum_terms };
            Some(exp_pass(arch, st, range, pass))
        }
        _ => None,
    };
    let ((sum, scaled), e) = match in_grad {
        Some(sums) => (sums, None),
        None => {
            let io = Io::Map(logits(&x, Some(grad)), AnySliceMut::F32(&mut exps[..n]));
            let pass = StoreExp { io, max, sum_terms };
            (
                exp_pass(arch, st, range, pass),
                Some(AnySlice::F32(&exps[..n])),
            )
        }
    };
    let ln_sum = match finite_or_nan(arch, st, logits(&x, Some(grad)), range, sum) {
        Stats::Finite { ln_sum, .. } => ln_sum,
        Stats::Special(special) => return Err(special),
    };
    // 1/S, unless S was recomputed apart from the max's terms for accuracy.
    let inv_sum = if sum < PEAKED {
        (-ln_sum).exp()
    } else {
        1.0 / sum
    };
    let r = (scale * c.total * inv_sum) as f32;
    let offset = (scale * c.base) as f32;
    let (floor, flush) = stored_floor(max, min, inv_t, sum);
    let y = grad.reborrow();
    if flush {
        write(
            arch,
            e,
            y,
            st,
            &mut Map(ScaleOffset::<true> { floor, r, offset }),
        );
    } else {
        write(
            arch,
            e,
            y,
            st,
            &mut Map(ScaleOffset::<false> { floor, r, offset }),
        );
    }
    let terms = match sum_terms {
        true => scaled * UP * inv_t as f64 * c.base,
        false => 0.0,
    };
    Ok(Row {
        max,
        ln_sum,
        terms,
        x_label,
    })
}

/// Σ exp(z), stored through `io`, and Σ (x - max)·2^-64 when `sum_terms`.
struct StoreExp<'a> {
    io: Io<'a>,
    max: f32,
    sum_terms: bool,
}

impl ExpPass for StoreExp<'_> {
    type Output = (f64, f64);
    #[inline(always)]
    fn pass<A: Arch, Z: Shift, const FLUSH: bool>(
        self,
        arch: A,
        st: &mut Stage<'_>,
        z: Z,
    ) -> (f64, f64) {
        if self.sum_terms {
            let mut k = ExpSumTerms::<Z, FLUSH> {
                shift: z,
                max_scaled: self.max * DOWN,
                total: 0.0,
                terms: 0.0,
            };
            run(arch, self.io, st, &mut k);
            (k.total, k.terms)
        } else {
            (SumExp(self.io).pass::<A, Z, FLUSH>(arch, st, z), 0.0)
        }
    }
}

/// Σ exp(z) with the exponentials stored, and Σ (x - max)·2^-64 beside it.
struct ExpSumTerms<Z, const FLUSH: bool> {
    shift: Z,
    max_scaled: f32,
    total: f64,
    terms: f64,
}

impl<S: Simd, Z: Shift, const FLUSH: bool> Kernel<S> for ExpSumTerms<Z, FLUSH> {
    /// (Σ exp(z), Σ (x - max)·2^-64)
    type Acc = (S::f32s, S::f32s);
    const FLUSH_STEPS: usize = SUM_FLUSH_STEPS;

    #[inline(always)]
    fn fill(&self) -> f32 {
        f32::NEG_INFINITY
    }
    #[inline(always)]
    fn init(&self, simd: S) -> Self::Acc {
        (simd.splat_f32s(0.0), simd.splat_f32s(0.0))
    }
    #[inline(always)]
    fn step(&self, simd: S, (sum, terms): Self::Acc, x: S::f32s) -> (Self::Acc, S::f32s) {
        let e = exp_flushed_below::<S, FLUSH>(simd, self.shift.z(simd, x), CUTOFF);
        let d = scaled_difference(simd, x, self.max_scaled);
        ((simd.add_f32s(sum, e), simd.add_f32s(terms, d)), e)
    }
    #[inline(always)]
    fn step_tail(
        &self,
        simd: S,
        (sum, terms): Self::Acc,
        x: S::f32s,
        valid: usize,
    ) -> (Self::Acc, S::f32s) {
        // The fill lanes (-inf) need the underflow test, and no term.
        let e = exp_flushed_below::<S, true>(simd, self.shift.z(simd, x), CUTOFF);
        let d = first_lanes(simd, scaled_difference(simd, x, self.max_scaled), valid);
        ((simd.add_f32s(sum, e), simd.add_f32s(terms, d)), e)
    }
    #[inline(always)]
    fn merge(&self, simd: S, a: Self::Acc, b: Self::Acc) -> Self::Acc {
        (simd.add_f32s(a.0, b.0), simd.add_f32s(a.1, b.1))
    }
    #[inline(always)]
    fn flush(&mut self, _: S, (sum, terms): Self::Acc) {
        self.total += sum_lanes_f64::<S>(&sum);
        self.terms += sum_lanes_f64::<S>(&terms);
    }
}

#[inline(always)]
fn loss_grad<Z: Shift, const FLUSH: bool>(
    shift: Z,
    cutoff: f32,
    r: f32,
    c: &Coefficients<'_>,
    scale: f64,
    max: f32,
) -> LossGrad<Z, FLUSH> {
    LossGrad {
        max_scaled: max * DOWN,
        shift,
        cutoff,
        r,
        base: c.base as f32,
        side: c.side_coef as f32,
        base_k: (scale * c.base) as f32,
        side_k: (scale * c.side_coef) as f32,
        total: 0.0,
    }
}

/// Where pass 2 reads and writes.
struct Pass<'a, 'g> {
    x: Option<AnySlice<'a>>,
    grad: Option<AnySliceMut<'g>>,
    side: Option<AnySlice<'a>>,
}

impl Pass<'_, '_> {
    /// Runs `k` over the row and returns its Σ-term.
    #[inline(always)]
    fn run<A: Arch, Z: Shift, const FLUSH: bool>(
        self,
        arch: A,
        st: &mut Stage<'_>,
        mut k: LossGrad<Z, FLUSH>,
    ) -> f64 {
        match (self.side, self.x, self.grad) {
            (None, x, Some(g)) if k.base == 0.0 => {
                write(arch, x, g, st, &mut GradOnly(k));
                return 0.0;
            }
            (None, Some(x), None) => read(arch, x, st, &mut k),
            (None, x, Some(g)) => write(arch, x, g, st, &mut k),
            (Some(v), Some(x), None) => {
                let mut k2 = WithSide(k);
                read_pair(arch, x, v, st, &mut k2);
                return k2.0.total;
            }
            (Some(v), x, Some(g)) => {
                let mut k2 = WithSide(k);
                run_pair(arch, PairIo::write(x, v, g), st, &mut k2);
                return k2.0.total;
            }
            (_, None, None) => unreachable!(),
        }
        k.total
    }
}

/// A row whose max is not finite, element by element in f64 under the forward rules.
#[inline(always)]
fn special_row(
    special: Special,
    c: &Coefficients<'_>,
    scale: f64,
    x: Option<AnySlice<'_>>,
    mut grad: Option<AnySliceMut<'_>>,
) -> f64 {
    let mut loss = 0.0;
    for j in 0..logits(&x, grad.as_ref()).len() {
        let xj = logits(&x, grad.as_ref()).get(j);
        let (p, log_p) = match special {
            Special::Nan => (f64::NAN, f64::NAN),
            Special::Masked => (0.0, f64::NEG_INFINITY),
            Special::PosInf(n) if xj == f64::INFINITY => (1.0 / n as f64, -(n as f64).ln()),
            Special::PosInf(_) => (0.0, f64::NEG_INFINITY),
        };
        let a = c.at(j);
        if a != 0.0 || log_p.is_nan() {
            loss -= a * log_p;
        }
        if let Some(g) = grad.as_mut() {
            g.set(j, scale * (c.total * p - a));
        }
    }
    loss
}

/// Class labels of any integer type.
#[derive(Clone, Copy, Debug)]
pub enum Labels<'a> {
    I32(&'a [i32]),
    I64(&'a [i64]),
    U32(&'a [u32]),
    U64(&'a [u64]),
    Usize(&'a [usize]),
}

impl<'a> Labels<'a> {
    pub fn len(&self) -> usize {
        match self {
            Labels::I32(l) => l.len(),
            Labels::I64(l) => l.len(),
            Labels::U32(l) => l.len(),
            Labels::U64(l) => l.len(),
            Labels::Usize(l) => l.len(),
        }
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Label `i`, exactly.
    #[inline(always)]
    pub fn get(&self, i: usize) -> i128 {
        match self {
            Labels::I32(l) => l[i] as i128,
            Labels::I64(l) => l[i] as i128,
            Labels::U32(l) => l[i] as i128,
            Labels::U64(l) => l[i] as i128,
            Labels::Usize(l) => l[i] as i128,
        }
    }
    pub fn split_at(self, k: usize) -> (Self, Self) {
        macro_rules! split {
            ($v:ident, $l:expr) => {{
                let (a, b) = $l.split_at(k);
                (Labels::$v(a), Labels::$v(b))
            }};
        }
        match self {
            Labels::I32(l) => split!(I32, l),
            Labels::I64(l) => split!(I64, l),
            Labels::U32(l) => split!(U32, l),
            Labels::U64(l) => split!(U64, l),
            Labels::Usize(l) => split!(Usize, l),
        }
    }
}

/// What the rows of a cross-entropy batch are scored against.
#[derive(Clone, Copy, Debug)]
pub enum Targets<'a> {
    /// One label per row (each below the row length, or equal to `ignore`).
    Labels {
        labels: Labels<'a>,
        ignore: Option<i128>,
    },
    /// A target distribution per row, in rows of the logits' type and shape.
    Soft(Strided<'a>),
}

impl<'a> Targets<'a> {
    #[inline(always)]
    fn row(&self, i: usize) -> RowTarget<'a> {
        match self {
            Targets::Labels { labels, ignore } => {
                let label = labels.get(i);
                if Some(label) == *ignore {
                    RowTarget::Ignored
                } else {
                    RowTarget::Class(label as usize)
                }
            }
            Targets::Soft(q) => RowTarget::Soft(q.row(i)),
        }
    }
    pub fn split_at(self, k: usize) -> (Self, Self) {
        match self {
            Targets::Labels { labels, ignore } => {
                let (a, b) = labels.split_at(k);
                (
                    Targets::Labels { labels: a, ignore },
                    Targets::Labels { labels: b, ignore },
                )
            }
            Targets::Soft(q) => {
                let (a, b) = q.split_at(k);
                (Targets::Soft(a), Targets::Soft(b))
            }
        }
    }
}

/// Cross-entropy of each row of logits `x` against its target: the loss into
/// `losses[i]` (when given), the gradient into `grad` (when given; over the
/// logits in place when `x` is `None`). Returns the sum of the row losses.
pub struct CrossEntropy<'a> {
    pub options: LossOptions<'a>,
    /// `ThreePass`: one exp per element, stored between the sum and the
    /// gradient, where the row has a gradient and no side row (labels, with
    /// weights or smoothing but not both); otherwise, and for `Online`, the
    /// statistics in one read and exp taken again for the gradient.
    pub method: Method,
    pub targets: Targets<'a>,
    pub x: Option<Strided<'a>>,
    pub grad: Option<StridedMut<'a>>,
    pub losses: Option<&'a mut [f32]>,
}

impl CrossEntropy<'_> {
    /// (rows, cols) of the logits (in place: of the gradient rows that hold them).
    fn shape(&self) -> (usize, usize) {
        match (&self.x, &self.grad) {
            (Some(x), _) => (x.rows(), x.cols()),
            (None, Some(g)) => (g.rows(), g.cols()),
            (None, None) => (0, 0),
        }
    }
    pub fn rows(&self) -> usize {
        self.shape().0
    }
    pub fn cols(&self) -> usize {
        self.shape().1
    }

    /// (stage, exponentials) lengths of the scratch space: a [`Stage`] for
    /// f16 or bf16 rows, and a row of f32 exponentials where
    /// [`stored_passes`] runs and cannot keep them in the gradient row (in
    /// place, or a gradient that is not f32); under a cap, the rows of
    /// [`capped_cross_entropy_row`] instead.
    #[inline(always)]
    fn scratch_parts(&self) -> (usize, usize) {
        let x = self.x.as_ref().map(|x| x.kind());
        let g = self.grad.as_ref().map(|g| g.kind());
        let q = match &self.targets {
            Targets::Soft(q) => Some(q.kind()),
            Targets::Labels { .. } => None,
        };
        let stage = stage_len(&[x, g, q].map(|k| k.unwrap_or(Kind::F32)));
        let side_row = match self.targets {
            Targets::Soft(_) => true,
            Targets::Labels { .. } => {
                self.options.weights.is_some() && self.options.smoothing > 0.0
            }
        };
        let stored = self.method == Method::ThreePass && !side_row;
        let cols = self.cols();
        let exps = match (self.options.cap, stored, x, g) {
            // The capped rows, dv/dx, and an f32 gradient unless the caller's is one.
            (Some(_), _, _, None) => cols,
            (Some(_), _, _, Some(Kind::F32)) => 2 * cols,
            (Some(_), _, _, Some(_)) => 3 * cols,
            (None, true, None, Some(_)) => cols,
            (None, true, Some(_), Some(g)) if g != Kind::F32 => cols,
            _ => 0,
        };
        (stage, exps)
    }
}

impl Job for CrossEntropy<'_> {
    type Output = f64;

    fn scratch_len(&self) -> usize {
        let (stage, exps) = self.scratch_parts();
        stage + exps
    }

    #[inline(always)]
    fn run<A: Arch>(mut self, arch: A, scratch: &mut [f32]) -> f64 {
        let rows = self.rows();
        let (stage_len, exps_len) = self.scratch_parts();
        let (stage, exps) = scratch[..stage_len + exps_len].split_at_mut(stage_len);
        let mut stage = Stage::new(stage);
        let method = self.method;
        let mut total = 0.0;
        for i in 0..rows {
            // Matches, not Option::map: a closure would be compiled outside the region.
            #[allow(clippy::manual_map)]
            let xi = match &self.x {
                Some(x) => Some(x.row(i)),
                None => None,
            };
            #[allow(clippy::manual_map)]
            let gi = match &mut self.grad {
                Some(g) => Some(g.row_mut(i)),
                None => None,
            };
            let target = self.targets.row(i);
            let st = &mut stage;
            let options = &self.options;
            let loss = match options.cap {
                Some(cap) => {
                    capped_cross_entropy_row(arch, st, options, cap, method, target, xi, gi, exps)
                }
                None => cross_entropy_row(arch, st, options, method, target, xi, gi, exps),
            };
            if let Some(losses) = self.losses.as_deref_mut() {
                losses[i] = loss as f32;
            }
            total += loss;
        }
        total
    }
}

impl Batch for CrossEntropy<'_> {
    fn rows(&self) -> usize {
        CrossEntropy::rows(self)
    }
    fn split_at(self, k: usize) -> (Self, Self) {
        let (xa, xb) = self.x.split_rows(k);
        let (ga, gb) = self.grad.split_rows(k);
        let (ta, tb) = self.targets.split_at(k);
        let (la, lb) = self.losses.split_rows(k);
        let (options, method) = (self.options, self.method);
        let part = |x, grad, targets, losses| CrossEntropy {
            options,
            method,
            targets,
            x,
            grad,
            losses,
        };
        (part(xa, ga, ta, la), part(xb, gb, tb, lb))
    }
    /// The sum of the row losses.
    fn combine(a: f64, b: f64) -> f64 {
        a + b
    }
}
