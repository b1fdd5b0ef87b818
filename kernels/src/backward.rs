//! Backward passes (vector–Jacobian products) of softmax(x/t) and
//! log-softmax(x/t), and the Jacobian of softmax, from the forward output y
//! and the upstream gradient g.
//!
//! ```text
//! softmax      s = Σ g·y                        (pass 1: f32 lanes, into f64 every SUM_FLUSH_STEPS)
//!              dx = y · ((g - s_hi) - s_lo) / t  (pass 2; s = s_hi + s_lo, two f32s)
//! log-softmax  σ = Σ g                          (pass 1, the same way)
//!              dx = (g - e^y · σ) / t            (pass 2)
//! jacobian     J[i] = y · (-y_i / t);  J[i][i] = y_i (1 - y_i) / t  (the diagonal in f64)
//! ```
//! Pass 2 may write over g. Non-finite inputs propagate as IEEE arithmetic
//! does: a NaN or infinite g (or a NaN y) makes s, and so every dx of the row, NaN.
//! Under a soft-cap v = (c/t)·tanh(x/c), pass 3 multiplies dx by
//! 1 − tanh²(x/c) (the 1/t is already in), reading the logits x.

use crate::arch::Arch;
use crate::exp::{exp_nonpositive, CUTOFF};
use crate::exp_sum::{sum_lanes_f64, sums_lanes_into, SUM_FLUSH_STEPS};
use crate::loops::{read, read_pair, run_pair, write, Kernel, PairIo, Stage};
use crate::output::{Elementwise, Map};
use crate::storage::{AnySlice, AnySliceMut};
use crate::strided::{SplitRows, Strided, StridedMut};
use crate::tanh::{CapSlope, SoftCap};
use crate::{stage_len, Batch, Job, Output, Temperature};
use pulp::Simd;

/// Σ main·side over a pair of rows.
pub(crate) struct Dot {
    pub(crate) total: f64,
}

impl<S: Simd> Kernel<S, (S::f32s, S::f32s)> for Dot {
    sums_lanes_into!(total);
    #[inline(always)]
    fn fill(&self) -> f32 {
        0.0
    }
    #[inline(always)]
    fn step(&self, simd: S, acc: S::f32s, (g, y): (S::f32s, S::f32s)) -> (S::f32s, S::f32s) {
        (simd.mul_add_f32s(g, y, acc), g)
    }
}

/// (Σ main·side, Σ side) over a pair of rows, in one read: ⟨g, y⟩ and Σy,
/// each summed as [`Dot`] and [`Sum`] sum theirs.
pub(crate) struct DotAndSum {
    pub(crate) dot: f64,
    pub(crate) sum: f64,
}

impl<S: Simd> Kernel<S, (S::f32s, S::f32s)> for DotAndSum {
    type Acc = (S::f32s, S::f32s);
    const FLUSH_STEPS: usize = SUM_FLUSH_STEPS;
    #[inline(always)]
    fn fill(&self) -> f32 {
        0.0
    }
    #[inline(always)]
    fn init(&self, simd: S) -> Self::Acc {
        (simd.splat_f32s(0.0), simd.splat_f32s(0.0))
    }
    #[inline(always)]
    fn step(&self, simd: S, (d, s): Self::Acc, (g, y): (S::f32s, S::f32s)) -> (Self::Acc, S::f32s) {
        ((simd.mul_add_f32s(g, y, d), simd.add_f32s(s, y)), g)
    }
    #[inline(always)]
    fn merge(&self, simd: S, a: Self::Acc, b: Self::Acc) -> Self::Acc {
        (simd.add_f32s(a.0, b.0), simd.add_f32s(a.1, b.1))
    }
    #[inline(always)]
    fn flush(&mut self, _: S, (d, s): Self::Acc) {
        self.dot += sum_lanes_f64::<S>(&d);
        self.sum += sum_lanes_f64::<S>(&s);
    }
}

/// Σ x over a row.
pub(crate) struct Sum {
    pub(crate) total: f64,
}

impl<S: Simd> Kernel<S> for Sum {
    sums_lanes_into!(total);
    #[inline(always)]
    fn fill(&self) -> f32 {
        0.0
    }
    #[inline(always)]
    fn step(&self, simd: S, acc: S::f32s, x: S::f32s) -> (S::f32s, S::f32s) {
        (simd.add_f32s(acc, x), x)
    }
}

/// dx = y · ((g - hi) - lo) · inv_t, with (main, side) = (g, y).
pub(crate) struct SoftmaxGrad {
    pub(crate) hi: f32,
    pub(crate) lo: f32,
    pub(crate) inv_t: f32,
}

impl<S: Simd> Elementwise<S, (S::f32s, S::f32s)> for SoftmaxGrad {
    #[inline(always)]
    fn apply(&self, simd: S, (g, y): (S::f32s, S::f32s)) -> S::f32s {
        let d = simd.sub_f32s(g, simd.splat_f32s(self.hi));
        let d = simd.sub_f32s(d, simd.splat_f32s(self.lo));
        simd.mul_f32s(simd.mul_f32s(y, d), simd.splat_f32s(self.inv_t))
    }
}

/// dx = (g - e^y · σ) · inv_t, with (main, side) = (g, y).
struct LogSoftmaxGrad {
    sigma: f32,
    inv_t: f32,
}

impl<S: Simd> Elementwise<S, (S::f32s, S::f32s)> for LogSoftmaxGrad {
    #[inline(always)]
    fn apply(&self, simd: S, (g, y): (S::f32s, S::f32s)) -> S::f32s {
        let e = exp_nonpositive(simd, y, simd.splat_f32s(CUTOFF));
        let d = simd.mul_add_f32s(simd.neg_f32s(e), simd.splat_f32s(self.sigma), g);
        simd.mul_f32s(d, simd.splat_f32s(self.inv_t))
    }
}

/// x · c.
struct Times(f32);

impl<S: Simd> Elementwise<S> for Times {
    #[inline(always)]
    fn apply(&self, simd: S, x: S::f32s) -> S::f32s {
        simd.mul_f32s(x, simd.splat_f32s(self.0))
    }
}

/// The backward pass of one row: `g` given, or in place (`dx` holds g).
#[inline(always)]
pub(crate) fn backward_row<A: Arch>(
    arch: A,
    st: &mut Stage<'_>,
    output: Output,
    temperature: Temperature,
    y: AnySlice<'_>,
    g: Option<AnySlice<'_>>,
    dx: AnySliceMut<'_>,
) {
    let inv_t = temperature.inv;
    let g_in = g.unwrap_or(dx.shared());
    match output {
        Output::Softmax => {
            let mut dot = Dot { total: 0.0 };
            read_pair(arch, g_in, y, st, &mut dot);
            let hi = dot.total as f32;
            let lo = (dot.total - hi as f64) as f32;
            let grad = SoftmaxGrad { hi, lo, inv_t };
            run_pair(arch, PairIo::write(g, y, dx), st, &mut Map(grad));
        }
        Output::LogSoftmax => {
            let mut sum = Sum { total: 0.0 };
            read(arch, g_in, st, &mut sum);
            let grad = LogSoftmaxGrad {
                sigma: sum.total as f32,
                inv_t,
            };
            run_pair(arch, PairIo::write(g, y, dx), st, &mut Map(grad));
        }
    }
}

/// Row `i` of the softmax Jacobian, diag(y)/t - y yᵀ/t, into `out` (as long
/// as y); under a soft-cap, column j times 1 − tanh²(x_j/c), read from `cap`'s logits.
#[inline(always)]
pub(crate) fn jacobian_row<A: Arch>(
    arch: A,
    st: &mut Stage<'_>,
    temperature: Temperature,
    cap: Option<(SoftCap, AnySlice<'_>)>,
    y: AnySlice<'_>,
    i: usize,
    mut out: AnySliceMut<'_>,
) {
    let inv_t = temperature.inv as f64;
    let yi = y.get(i);
    let times = &mut Map(Times((-yi * inv_t) as f32));
    write(arch, Some(y), out.reborrow(), st, times);
    let diagonal = yi * (1.0 - yi) * inv_t;
    match cap {
        None => out.set(i, diagonal),
        Some((cap, x)) => {
            let slope = cap.slope_f64(x.get(i));
            let io = PairIo::InPlace(out.reborrow(), x);
            run_pair(arch, io, st, &mut Map(CapSlope { cap, factor: 1.0 }));
            out.set(i, diagonal * slope);
        }
    }
}

/// The backward pass of softmax or log-softmax over rows: from the forward
/// output `y` and the upstream gradient `g` into `dx`, or in place over g
/// (`dx` holds g) when `g` is `None`; through a soft-cap, with its logits
/// `x`, when `cap` is given. All the rows are of one type.
pub struct Backward<'a> {
    pub output: Output,
    pub temperature: Temperature,
    pub cap: Option<(SoftCap, Strided<'a>)>,
    pub y: Strided<'a>,
    pub g: Option<Strided<'a>>,
    pub dx: StridedMut<'a>,
}

impl Job for Backward<'_> {
    type Output = ();

    fn scratch_len(&self) -> usize {
        stage_len(&[self.y.kind(), self.dx.kind()])
    }

    #[inline(always)]
    fn run<A: Arch>(mut self, arch: A, scratch: &mut [f32]) {
        assert!(self.y.rows() == self.dx.rows() && self.y.cols() == self.dx.cols());
        let mut stage = Stage::new(scratch);
        for i in 0..self.dx.rows() {
            // A match, not Option::map: a closure would be compiled outside the region.
            #[allow(clippy::manual_map)]
            let gi = match &self.g {
                Some(g) => Some(g.row(i)),
                None => None,
            };
            let (y, mut dx) = (self.y.row(i), self.dx.row_mut(i));
            let (output, t, st) = (self.output, self.temperature, &mut stage);
            backward_row(arch, st, output, t, y, gi, dx.reborrow());
            if let Some((cap, x)) = &self.cap {
                let io = PairIo::InPlace(dx, x.row(i));
                run_pair(
                    arch,
                    io,
                    st,
                    &mut Map(CapSlope {
                        cap: *cap,
                        factor: 1.0,
                    }),
                );
            }
        }
    }
}

/// The softmax Jacobian (diag(y) - y yᵀ)/t of one row y of K elements, into
/// `out`, K rows of K (row-major); under a soft-cap, times diag(1 − tanh²(x/c))
/// on the right, with the row's logits x.
pub struct Jacobian<'a> {
    pub temperature: Temperature,
    pub cap: Option<(SoftCap, AnySlice<'a>)>,
    pub y: AnySlice<'a>,
    pub out: AnySliceMut<'a>,
}

impl Job for Jacobian<'_> {
    type Output = ();

    fn scratch_len(&self) -> usize {
        stage_len(&[self.y.kind(), self.out.kind()])
    }

    #[inline(always)]
    fn run<A: Arch>(mut self, arch: A, scratch: &mut [f32]) {
        let k = self.y.len();
        if let Some((_, x)) = &self.cap {
            assert_eq!(x.len(), k, "one logit per output");
        }
        assert_eq!(self.out.len(), k * k, "a Jacobian of K×K elements");
        let mut stage = Stage::new(scratch);
        for i in 0..k {
            let row = self.out.reborrow().into_slice(i * k..(i + 1) * k);
            let t = self.temperature;
            jacobian_row(arch, &mut stage, t, self.cap, self.y, i, row);
        }
    }
}

impl Batch for Backward<'_> {
    fn rows(&self) -> usize {
        self.dx.rows()
    }
    fn split_at(self, k: usize) -> (Self, Self) {
        let (ya, yb) = self.y.split_at(k);
        let (ga, gb) = self.g.split_rows(k);
        let (da, db) = self.dx.split_at(k);
        let (ca, cb) = match self.cap {
            Some((cap, x)) => {
                let (xa, xb) = x.split_at(k);
                (Some((cap, xa)), Some((cap, xb)))
            }
            None => (None, None),
        };
        let half = |y, g, dx, cap| Backward {
            y,
            g,
            dx,
            cap,
            ..self
        };
        (half(ya, ga, da, ca), half(yb, gb, db, cb))
    }
    fn combine(_: (), _: ()) {}
}
