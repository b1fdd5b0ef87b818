//! Attention-score softmax, fused: each row of scores x (batch b, head h,
//! query q) becomes logits and their softmax in three passes, with no pre-pass.
//!
//! ```text
//! visible keys  [lo, hi) from the positions: causal j ≤ p, window j > p − w,
//!               key length j < len_b (p = q + query offset); the rest are written 0
//! pass 1        v = s·x, or c·tanh(s·x/c)                 (the soft-cap, tanh.rs)
//!               v += slope_h · m          m: the mask row (f32/f16/bf16 additive,
//!                                          or keep-flags as 0 / −inf); −inf hides the
//!                                          key whatever the score
//!               v += slope_h · (j − p)    ALiBi by distance, instead of scaling m
//!               v stored (in y when y is f32), max and min taken
//! pass 2        M = max(max v, sink_h);  e = exp(v − M) stored;  S = Σe + exp(sink_h − M)
//! pass 3        y = e / S                 (the sink's share is not written)
//! ```
//! Special values follow the plain softmax's rules over v (a NaN anywhere
//! visible makes the row NaN; k values of +inf share the row; a row with no
//! visible key, or only hidden ones, is 0), and a sink joins them: a NaN sink
//! makes the row NaN, a +inf sink takes the whole mass (or a share of it with
//! +inf logits).
//!
//! The backward pass takes y and dy: g = y·(dy − ⟨dy, y⟩) is the gradient of
//! the logits, dx = g·s (times 1 − tanh²(s·x/c) under a cap, from x), and a
//! sink's gradient is −p_sink·⟨dy, y⟩ with p_sink = 1 − Σy, summed over its
//! head's rows.

// Matches, not Option::map, throughout: a closure would be compiled outside
// the target-feature region.
#![allow(clippy::manual_map)]

use crate::arch::{Arch, F32s};
use crate::backward::{Dot, DotAndSum, SoftmaxGrad};
use crate::exp::CUTOFF;
use crate::exp_sum::ExpSum;
use crate::forward::{classify, may_fall_below, softmax_any, stored_floor, Special};
use crate::loops::{
    chunks, map_or_update, map_or_update_pair, read_pair, run_pair, run_short, run_short_ahead,
    write, Io, Kernel, NextRow, PairIo, Stage, CHUNK,
};
use crate::max::MinMax;
use crate::output::{Fill, InfShare, Map, Scale};
use crate::shift::Unit;
use crate::storage::{widen, AnySlice, AnySliceMut, Kind};
use crate::tanh::{CapSlope, SoftCap};
use crate::{stage_len, Batch, Job};
use pulp::Simd;

/// How a raw score becomes a logit.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Logit {
    /// v = s · x.
    Scaled(f32),
    /// v = c · tanh(k · x): a soft-cap c after a scale s, with k = s / c.
    Capped(SoftCap),
}

/// A grid of rows: `dims` = (batch, heads, queries, keys); row (b, h, q)
/// starts at b·strides[0] + h·strides[1] + q·strides[2] and holds `keys`
/// elements. Rows are numbered (b·heads + h)·queries + q.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout {
    pub dims: [usize; 4],
    pub strides: [usize; 3],
}

impl Layout {
    /// Rows of the grid.
    #[inline]
    pub fn rows(&self) -> usize {
        self.dims[0] * self.dims[1] * self.dims[2]
    }
    /// Elements per row.
    #[inline]
    pub fn keys(&self) -> usize {
        self.dims[3]
    }
    /// (batch, head, query) of row `r`.
    #[inline(always)]
    pub fn coords(&self, r: usize) -> (usize, usize, usize) {
        let [_, heads, queries, _] = self.dims;
        (r / (heads * queries), (r / queries) % heads, r % queries)
    }
    /// Where row `r` starts.
    #[inline(always)]
    pub fn offset(&self, r: usize) -> usize {
        let (b, h, q) = self.coords(r);
        self.offset_of(b, h, q)
    }
    /// Where row (b, h, q) starts.
    #[inline(always)]
    fn offset_of(&self, b: usize, h: usize, q: usize) -> usize {
        let [sb, sh, sq] = self.strides;
        b * sb + h * sh + q * sq
    }
    /// (batch, head, query) of rows `first`, `first + 1`, …: one division
    /// per walk, not three per row.
    #[inline(always)]
    fn walk(&self, first: usize) -> Walk {
        let (b, h, q) = self.coords(first);
        Walk {
            at: (b, h, q),
            heads: self.dims[1],
            queries: self.dims[2],
        }
    }
}

/// See [`Layout::walk`].
struct Walk {
    at: (usize, usize, usize),
    heads: usize,
    queries: usize,
}

impl Iterator for Walk {
    type Item = (usize, usize, usize);
    #[inline(always)]
    fn next(&mut self) -> Option<Self::Item> {
        let now = self.at;
        let (b, h, q) = now;
        self.at = match (q + 1 < self.queries, h + 1 < self.heads) {
            (true, _) => (b, h, q + 1),
            (false, true) => (b, h + 1, 0),
            (false, false) => (b + 1, 0, 0),
        };
        Some(now)
    }
}

/// Read-only rows on a [`Layout`] (they may overlap).
#[derive(Clone, Copy, Debug)]
pub struct Grid<'a> {
    pub data: AnySlice<'a>,
    pub layout: Layout,
}

impl<'a> Grid<'a> {
    #[inline(always)]
    fn row(&self, (b, h, q): (usize, usize, usize)) -> AnySlice<'a> {
        let start = self.layout.offset_of(b, h, q);
        self.data.slice(start..start + self.layout.keys())
    }
}

/// Writable rows on a [`Layout`] whose rows lie one after another in memory
/// without overlap; `data` starts at row `first`.
#[derive(Debug)]
pub struct GridMut<'a> {
    pub data: AnySliceMut<'a>,
    pub layout: Layout,
    pub first: usize,
    pub rows: usize,
}

impl<'a> GridMut<'a> {
    /// Row (b, h, q), one of this grid's; `base` is where row `first` starts.
    #[inline(always)]
    fn row_mut(&mut self, (b, h, q): (usize, usize, usize), base: usize) -> AnySliceMut<'_> {
        let start = self.layout.offset_of(b, h, q) - base;
        let keys = self.layout.keys();
        self.data.reborrow().into_slice(start..start + keys)
    }

    /// The first `k` of its rows and the rest.
    fn split_at(self, k: usize) -> (Self, Self) {
        let k = k.min(self.rows);
        let base = self.layout.offset(self.first);
        let at = match k < self.rows {
            true => self.layout.offset(self.first + k) - base,
            false => self.data.len(),
        };
        let (a, b) = self.data.split_at(at);
        let (layout, first, rows) = (self.layout, self.first, self.rows);
        (
            GridMut {
                data: a,
                layout,
                first,
                rows: k,
            },
            GridMut {
                data: b,
                layout,
                first: first + k,
                rows: rows - k,
            },
        )
    }
}

/// What a mask holds.
#[derive(Clone, Copy, Debug)]
pub enum MaskData<'a> {
    /// Added to the logits (times the head's ALiBi slope); −inf hides a key.
    Additive(AnySlice<'a>),
    /// `false` hides a key.
    Keep(&'a [bool]),
}

impl<'a> MaskData<'a> {
    #[inline(always)]
    fn slice(self, range: core::ops::Range<usize>) -> Self {
        match self {
            MaskData::Additive(m) => MaskData::Additive(m.slice(range)),
            MaskData::Keep(k) => MaskData::Keep(&k[range]),
        }
    }
}

/// A mask broadcast over the scores: `layout.dims` = (batch, heads, queries,
/// keys) with batch and heads dividing the scores' (row (b, h, q) reads mask
/// row (b mod batch, h mod heads, q), or q = 0 when the mask has one query).
#[derive(Clone, Copy, Debug)]
pub struct Mask<'a> {
    pub data: MaskData<'a>,
    pub layout: Layout,
}

impl<'a> Mask<'a> {
    #[inline(always)]
    fn row(&self, b: usize, h: usize, q: usize) -> MaskData<'a> {
        let [mb, mh, mq, keys] = self.layout.dims;
        let [sb, sh, sq] = self.layout.strides;
        let q = if mq == 1 { 0 } else { q };
        let start = (b % mb) * sb + (h % mh) * sh + q * sq;
        self.data.slice(start..start + keys)
    }
}

/// Where the keys a query sees lie, by position, with no tensor.
#[derive(Clone, Copy, Debug, Default)]
pub struct Positions<'a> {
    /// Key j is visible only if j ≤ p (p = q + `query_offset`).
    pub causal: bool,
    /// Key j is visible only if j > p − w.
    pub window: Option<usize>,
    /// The position of query 0 among the keys.
    pub query_offset: i64,
    /// Key j of batch b is visible only if j < key_lens[b mod len].
    pub key_lens: Option<&'a [usize]>,
}

impl Positions<'_> {
    /// The position p of query `q`.
    #[inline(always)]
    fn position(&self, q: usize) -> i64 {
        q as i64 + self.query_offset
    }

    /// The visible keys [lo, hi) of query `q` in batch `b`.
    #[inline(always)]
    pub fn visible(&self, b: usize, q: usize, keys: usize) -> (usize, usize) {
        let p = self.position(q);
        let clamp = |v: i64| v.clamp(0, keys as i64) as usize;
        let mut hi = keys;
        if self.causal {
            hi = clamp(p.saturating_add(1));
        }
        if let Some(lens) = self.key_lens {
            hi = hi.min(lens[b % lens.len()]);
        }
        let lo = match self.window {
            Some(w) => clamp(p.saturating_sub(w as i64).saturating_add(1)),
            None => 0,
        };
        (lo.min(hi), hi)
    }
}

/// What the head's ALiBi slope multiplies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AlibiOn {
    /// The mask's values (ggml's `soft_max_ext`): v += slope · m.
    Mask,
    /// The distance to the query: v += m + slope · (j − p).
    Distance,
}

/// The fused attention softmax over rows `first .. first + rows` of the
/// layout: from `x` into `y`, or in place on `y` when `x` is `None`.
pub struct AttentionForward<'a> {
    pub logit: Logit,
    pub x: Option<Grid<'a>>,
    pub y: GridMut<'a>,
    pub mask: Option<Mask<'a>>,
    /// One ALiBi slope per head, or none (slope 1 on the mask).
    pub slopes: Option<&'a [f32]>,
    pub alibi_on: AlibiOn,
    /// One sink logit per head.
    pub sinks: Option<&'a [f32]>,
    pub positions: Positions<'a>,
}

/// A logit from a score, per lane.
trait ToLogit: Copy {
    fn apply<S: Simd>(&self, simd: S, x: S::f32s) -> S::f32s;
}

#[derive(Clone, Copy)]
struct Times(f32);

impl ToLogit for Times {
    #[inline(always)]
    fn apply<S: Simd>(&self, simd: S, x: S::f32s) -> S::f32s {
        simd.mul_f32s(x, simd.splat_f32s(self.0))
    }
}

impl ToLogit for SoftCap {
    #[inline(always)]
    fn apply<S: Simd>(&self, simd: S, x: S::f32s) -> S::f32s {
        SoftCap::apply(self, simd, x)
    }
}

/// (max, min) accumulators, with masked tail lanes left out of both.
#[inline(always)]
fn take_range<S: Simd>(
    simd: S,
    (m, l): (S::f32s, S::f32s),
    v: S::f32s,
    valid: Option<usize>,
) -> (S::f32s, S::f32s) {
    match valid {
        None => (simd.max_f32s(m, v), simd.min_f32s(l, v)),
        Some(valid) => {
            let lanes = simd.mask_between_m32s(0, valid as u32).mask();
            let for_max = simd.select_f32s(lanes, v, simd.splat_f32s(f32::NEG_INFINITY));
            let for_min = simd.select_f32s(lanes, v, simd.splat_f32s(f32::INFINITY));
            (simd.max_f32s(m, for_max), simd.min_f32s(l, for_min))
        }
    }
}

/// Pass 1 without a bias row: v = logit(x), stored; max and min taken.
struct Logits<T> {
    to: T,
    range: MinMax,
}

/// Pass 1 with a bias row m: v = logit(x) + slope·m (−inf where m is −inf).
struct BiasedLogits<T> {
    to: T,
    slope: f32,
    range: MinMax,
}

/// The accumulator of pass 1: [`MinMax`]'s, over v (the tails are left out
/// in `step_tail`, so the row's fill is 0, a value tanh and the products keep finite).
macro_rules! range_acc {
    () => {
        type Acc = (S::f32s, S::f32s);
        #[inline(always)]
        fn fill(&self) -> f32 {
            0.0
        }
        #[inline(always)]
        fn init(&self, simd: S) -> Self::Acc {
            Kernel::<S>::init(&self.range, simd)
        }
        #[inline(always)]
        fn merge(&self, simd: S, a: Self::Acc, b: Self::Acc) -> Self::Acc {
            self.range.merge(simd, a, b)
        }
        #[inline(always)]
        fn flush(&mut self, simd: S, acc: Self::Acc) {
            self.range.flush(simd, acc)
        }
    };
}

impl<S: Simd, T: ToLogit> Kernel<S> for Logits<T> {
    range_acc!();
    #[inline(always)]
    fn step(&self, simd: S, acc: Self::Acc, x: S::f32s) -> (Self::Acc, S::f32s) {
        let v = self.to.apply(simd, x);
        (take_range(simd, acc, v, None), v)
    }
    #[inline(always)]
    fn step_tail(&self, simd: S, acc: Self::Acc, x: S::f32s, valid: usize) -> (Self::Acc, S::f32s) {
        let v = self.to.apply(simd, x);
        (take_range(simd, acc, v, Some(valid)), v)
    }
}

impl<T: ToLogit> BiasedLogits<T> {
    #[inline(always)]
    fn logit<S: Simd>(&self, simd: S, (x, m): (S::f32s, S::f32s)) -> S::f32s {
        let v = simd.mul_add_f32s(simd.splat_f32s(self.slope), m, self.to.apply(simd, x));
        let hidden = simd.equal_f32s(m, simd.splat_f32s(f32::NEG_INFINITY));
        simd.select_f32s(hidden, simd.splat_f32s(f32::NEG_INFINITY), v)
    }
}

impl<S: Simd, T: ToLogit> Kernel<S, (S::f32s, S::f32s)> for BiasedLogits<T> {
    range_acc!();
    #[inline(always)]
    fn step(&self, simd: S, acc: Self::Acc, xm: (S::f32s, S::f32s)) -> (Self::Acc, S::f32s) {
        let v = self.logit(simd, xm);
        (take_range(simd, acc, v, None), v)
    }
    #[inline(always)]
    fn step_tail(
        &self,
        simd: S,
        acc: Self::Acc,
        xm: (S::f32s, S::f32s),
        valid: usize,
    ) -> (Self::Acc, S::f32s) {
        let v = self.logit(simd, xm);
        (take_range(simd, acc, v, Some(valid)), v)
    }
}

/// The bias of one row: its mask row (then of its visible keys), its slope,
/// and the ALiBi distance term (slope, p, position of the first visible key).
#[derive(Clone, Copy)]
struct RowBias<'a> {
    mask: Option<MaskData<'a>>,
    slope: f32,
    distance: Option<(f32, i64, usize)>,
}

/// Chunk buffers of pass 1: the widened scores and the bias row.
struct Bufs<'s> {
    x: &'s mut [f32],
    side: &'s mut [f32],
}

/// Pass 1 over the visible keys: v = logit(x) + bias, into `v`; in place
/// (on `v`, already f32) when `x` is `None`. Returns (max, min) of v.
///
/// Only the first `valid` keys are visible; `v` may run on to the end of a
/// vector (keys the positions hide, still inside the row), so that no pass
/// over it ends in a masked tail: a partial load or store costs a jump on its
/// length, and rows whose visible lengths differ from one to the next (a
/// causal block) mispredict it in every pass. The keys past `valid` get −inf.
#[inline(always)]
fn logits_pass<A: Arch>(
    arch: A,
    bufs: &mut Bufs<'_>,
    logit: Logit,
    x: Option<AnySlice<'_>>,
    v: &mut [f32],
    valid: usize,
    bias: RowBias<'_>,
) -> (f32, f32) {
    let lanes = core::mem::size_of::<F32s<A>>() / 4;
    let (mut max, mut min) = (f32::NEG_INFINITY, f32::INFINITY);
    for (s, e) in chunks(v.len()) {
        let xs: Option<&[f32]> = match x {
            None => None,
            Some(AnySlice::F32(x)) => Some(&x[s..e]),
            Some(half) => {
                widen(arch, half.slice(s..e), &mut bufs.x[..e - s]);
                Some(&bufs.x[..e - s])
            }
        };
        let (side, slope) = bias_chunk(arch, &mut *bufs.side, bias, s, e);
        // Whole vectors of visible keys, then the vector holding the last ones.
        let f = match e > valid {
            true => s + (valid - s) / lanes * lanes,
            false => e,
        };
        let vs = &mut v[s..e];
        let (head, last) = vs.split_at_mut(f - s);
        let (m, l) = logits_chunk(arch, logit, xs, side, slope, head, 0);
        max = max.max(m);
        min = min.min(l);
        if !last.is_empty() {
            logits_chunk(arch, logit, xs, side, slope, last, f - s);
            for &v in &last[..valid - f] {
                max = max.max(v);
                min = min.min(v);
            }
            last[valid - f..].fill(f32::NEG_INFINITY);
            min = f32::NEG_INFINITY;
        }
    }
    (max, min)
}

/// The bias row of keys `s..e` of the visible ones, and the slope that
/// multiplies it: the mask row itself when it is f32 and no distance term
/// is added, else built in `side`.
#[inline(always)]
fn bias_chunk<'b>(
    arch: impl Arch,
    side: &'b mut [f32],
    bias: RowBias<'b>,
    s: usize,
    e: usize,
) -> (Option<&'b [f32]>, f32) {
    let mask = match bias.mask {
        Some(m) => Some(m.slice(s..e)),
        None => None,
    };
    match mask {
        None if bias.distance.is_none() => return (None, 1.0),
        Some(MaskData::Additive(AnySlice::F32(m))) if bias.distance.is_none() => {
            return (Some(m), bias.slope)
        }
        _ => {}
    }
    let side = &mut side[..e - s];
    let slope = match mask {
        None => {
            side.fill(0.0);
            1.0
        }
        Some(MaskData::Additive(m)) => {
            widen(arch, m, side);
            bias.slope
        }
        Some(MaskData::Keep(keep)) => {
            for (d, &k) in side.iter_mut().zip(keep) {
                *d = if k { 0.0 } else { f32::NEG_INFINITY };
            }
            1.0
        }
    };
    match bias.distance {
        None => (Some(side), slope),
        Some((alibi, p, first_key)) => {
            // m + slope·(j − p), rounded once; j − p is exact in f32 below 2^24.
            for (i, d) in side.iter_mut().enumerate() {
                let j = (first_key + s + i) as i64;
                *d = alibi.mul_add((j - p) as f32, *d);
            }
            (Some(side), 1.0)
        }
    }
}

/// Pass 1 over `v`, with the scores and bias from offset `at` of theirs.
#[inline(always)]
fn logits_chunk<A: Arch>(
    arch: A,
    logit: Logit,
    x: Option<&[f32]>,
    side: Option<&[f32]>,
    slope: f32,
    v: &mut [f32],
    at: usize,
) -> (f32, f32) {
    if v.is_empty() {
        return (f32::NEG_INFINITY, f32::INFINITY);
    }
    let range = at..at + v.len();
    let x = match x {
        Some(x) => Some(&x[range.clone()]),
        None => None,
    };
    let side = match side {
        Some(side) => Some(&side[range]),
        None => None,
    };
    match logit {
        Logit::Scaled(k) => logits_with(arch, Times(k), x, side, slope, v),
        Logit::Capped(cap) => logits_with(arch, cap, x, side, slope, v),
    }
}

#[inline(always)]
fn logits_with<A: Arch, T: ToLogit>(
    arch: A,
    to: T,
    x: Option<&[f32]>,
    side: Option<&[f32]>,
    slope: f32,
    v: &mut [f32],
) -> (f32, f32) {
    let range = MinMax::new();
    let MinMax { max, min } = match side {
        None => {
            let mut k = Logits { to, range };
            map_or_update(arch, &mut k, x, v);
            k.range
        }
        Some(side) => {
            let mut k = BiasedLogits { to, slope, range };
            map_or_update_pair(arch, &mut k, x, side, v);
            k.range
        }
    };
    (max, min)
}

/// Passes 2 and 3 on the logits `v` (f32, written over), into `out` (or
/// over `v` when `out` is `None`).
#[inline(always)]
fn softmax_of_logits<A: Arch>(
    arch: A,
    st: &mut Stage<'_>,
    v: &mut [f32],
    out: Option<AnySliceMut<'_>>,
    (max, min): (f32, f32),
    sink: f32,
    next: NextRow,
) {
    if !max.is_finite() || sink == f32::INFINITY {
        let special = classify(arch, st, AnySlice::F32(v));
        let share = |k: u64| InfShare {
            on_inf: (1.0 / k as f64) as f32,
            other: 0.0,
        };
        let sink_inf = (sink == f32::INFINITY) as u64;
        return match special {
            Special::Nan => put(arch, st, v, out, &mut Map(Fill(f32::NAN))),
            Special::PosInf(k) => put(arch, st, v, out, &mut Map(share(k + sink_inf))),
            Special::Masked => put(arch, st, v, out, &mut Map(Fill(0.0))),
        };
    }
    let top = max.max(sink);
    // −inf (a hidden key) is below every cutoff.
    let flush = may_fall_below(top, min, 1.0, CUTOFF as f64);
    let z = Unit::new(top);
    let mut sum = match flush {
        true => {
            let mut k = ExpSum::<Unit, true>::new(z);
            run_short_ahead(arch, Io::InPlace(AnySliceMut::F32(v)), next, st, &mut k);
            k.total
        }
        false => {
            let mut k = ExpSum::<Unit, false>::new(z);
            run_short_ahead(arch, Io::InPlace(AnySliceMut::F32(v)), next, st, &mut k);
            k.total
        }
    };
    if sink > f32::NEG_INFINITY {
        sum += (sink as f64 - top as f64).exp();
    }
    if sum.is_nan() {
        return put(arch, st, v, out, &mut Map(Fill(f32::NAN)));
    }
    let (floor, flush) = stored_floor(top, min, 1.0, sum);
    let r = (1.0 / sum) as f32;
    match flush {
        true => put(arch, st, v, out, &mut Map(Scale::<true> { floor, r })),
        false => put(arch, st, v, out, &mut Map(Scale::<false> { floor, r })),
    }
}

/// Runs an output pass from `v` into `out`, or over `v`.
#[inline(always)]
fn put<A: Arch, K: Kernel<A::Simd>>(
    arch: A,
    st: &mut Stage<'_>,
    v: &mut [f32],
    out: Option<AnySliceMut<'_>>,
    kernel: &mut K,
) {
    match out {
        None => run_short(arch, Io::InPlace(AnySliceMut::F32(v)), st, kernel),
        Some(out) => write(arch, Some(AnySlice::F32(v)), out, st, kernel),
    }
}

/// Writes +0 over `y`.
#[inline(always)]
fn zero(y: AnySliceMut<'_>) {
    match y {
        AnySliceMut::F32(y) => y.fill(0.0),
        AnySliceMut::F16(y) => y.fill(half::f16::ZERO),
        AnySliceMut::BF16(y) => y.fill(half::bf16::ZERO),
    }
}

/// One row: hidden keys written 0, then the three passes over the visible ones.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn attention_row<A: Arch>(
    arch: A,
    st: &mut Stage<'_>,
    bufs: &mut Bufs<'_>,
    v_space: &mut [f32],
    logit: Logit,
    x: Option<AnySlice<'_>>,
    mut y: AnySliceMut<'_>,
    bias: RowBias<'_>,
    (lo, hi): (usize, usize),
    sink: f32,
    next: NextRow,
    plain: Option<f32>,
) {
    let n = y.len();
    if sink.is_nan() {
        return write(arch, None, y, st, &mut Map(Fill(f32::NAN)));
    }
    // The visible keys: the plain softmax takes lo..hi; the fused passes run
    // on to the end of the last vector where the row allows (see
    // `logits_pass`). The rest is 0.
    let end = match plain {
        Some(_) => hi,
        None => {
            let lanes = core::mem::size_of::<F32s<A>>() / 4;
            (lo + (hi - lo).div_ceil(lanes) * lanes).min(n)
        }
    };
    zero(y.reborrow().into_slice(0..lo));
    zero(y.reborrow().into_slice(end..n));
    if let Some(s) = plain {
        // softmax(s·x) over the visible keys is the plain softmax at t = 1/s.
        let xv = match x {
            Some(x) => Some(x.slice(lo..hi)),
            None => None,
        };
        let exps = &mut v_space[..if y.kind() == Kind::F32 { 0 } else { hi - lo }];
        return softmax_any(arch, st, s, xv, y.into_slice(lo..hi), exps, next);
    }
    if lo == hi {
        return;
    }
    let xv = match x {
        Some(x) => Some(x.slice(lo..end)),
        None => None,
    };
    let mask = match bias.mask {
        Some(m) => Some(m.slice(lo..end)),
        None => None,
    };
    let bias = RowBias { mask, ..bias };
    match y.into_slice(lo..end) {
        AnySliceMut::F32(v) => {
            let range = logits_pass(arch, bufs, logit, xv, v, hi - lo, bias);
            softmax_of_logits(arch, st, v, None, range, sink, next);
        }
        mut out => {
            let v = &mut v_space[..end - lo];
            let input = match xv {
                Some(x) => x,
                None => out.shared(),
            };
            let range = logits_pass(arch, bufs, logit, Some(input), v, hi - lo, bias);
            softmax_of_logits(arch, st, v, Some(out.reborrow()), range, sink, next);
        }
    }
}

impl AttentionForward<'_> {
    /// (stage, widened scores chunk, bias chunk, logits row) scratch lengths.
    #[inline(always)]
    fn scratch_parts(&self) -> (usize, usize, usize, usize) {
        let out = self.y.data.kind();
        let input = self.x.as_ref().map_or(out, |x| x.data.kind());
        let stage = stage_len(&[input, out]);
        let x = if input == Kind::F32 { 0 } else { CHUNK };
        let side = match self.mask {
            Some(Mask {
                data: MaskData::Additive(AnySlice::F32(_)),
                ..
            }) if self.alibi_on == AlibiOn::Mask || self.slopes.is_none() => 0,
            None if self.alibi_on == AlibiOn::Mask || self.slopes.is_none() => 0,
            _ => CHUNK,
        };
        let v = if out == Kind::F32 {
            0
        } else {
            self.y.layout.keys()
        };
        (stage, x, side, v)
    }
}

impl Job for AttentionForward<'_> {
    type Output = ();

    fn scratch_len(&self) -> usize {
        let (a, b, c, d) = self.scratch_parts();
        a + b + c + d
    }

    #[inline(always)]
    fn run<A: Arch>(self, arch: A, scratch: &mut [f32]) {
        let (stage_len, x_len, side_len, v_len) = self.scratch_parts();
        let scratch = &mut scratch[..stage_len + x_len + side_len + v_len];
        let (stage, rest) = scratch.split_at_mut(stage_len);
        let (xbuf, rest) = rest.split_at_mut(x_len);
        let (side, v_space) = rest.split_at_mut(side_len);
        let mut stage = Stage::new(stage);
        let mut bufs = Bufs { x: xbuf, side };
        let AttentionForward {
            logit,
            x,
            mut y,
            mask,
            slopes,
            alibi_on,
            sinks,
            positions,
        } = self;
        let layout = y.layout;
        if let Some(x) = &x {
            assert_eq!(x.layout.dims, layout.dims, "input and output shapes differ");
        }
        let keys = layout.keys();
        let base = layout.offset(y.first);
        // Rows with nothing between the scale and the softmax but hidden
        // positions take the plain softmax's passes at t = 1/s: the logits
        // need no pass (or store) of their own. Only for 0 < s ≤ 1, where
        // s·x cannot overflow, so the rows' special values are the same.
        let plain = match logit {
            Logit::Scaled(s) if s > 0.0 && s <= 1.0 => {
                let bias = mask.is_some() || (alibi_on == AlibiOn::Distance && slopes.is_some());
                (!bias && sinks.is_none()).then_some(s)
            }
            _ => None,
        };
        let mut ahead = layout.walk(y.first);
        ahead.next();
        for (i, (b, h, q)) in layout.walk(y.first).take(y.rows).enumerate() {
            // The next row's scores, asked for while this row's exps run:
            // rows beyond the cache would otherwise each wait for memory.
            let following = match (ahead.next(), i + 1 < y.rows) {
                (Some(r), true) => Some(r),
                _ => None,
            };
            let next = match (following, &x, &y.data) {
                (Some(r), Some(x), _) => match x.row(r) {
                    AnySlice::F32(row) => NextRow::of(row),
                    _ => NextRow::NONE,
                },
                (Some(r), None, AnySliceMut::F32(data)) => {
                    let start = layout.offset_of(r.0, r.1, r.2) - base;
                    NextRow::of(&data[start..start + keys])
                }
                _ => NextRow::NONE,
            };
            let (lo, hi) = positions.visible(b, q, keys);
            let xr = match &x {
                Some(x) => Some(x.row((b, h, q))),
                None => None,
            };
            let slope = match slopes {
                Some(s) => s[h],
                None => 1.0,
            };
            let mask_row = match &mask {
                Some(m) => Some(m.row(b, h, q)),
                None => None,
            };
            let bias = match (alibi_on, slopes) {
                (AlibiOn::Distance, Some(_)) => RowBias {
                    mask: mask_row,
                    slope: 1.0,
                    distance: Some((slope, positions.position(q), lo)),
                },
                _ => RowBias {
                    mask: mask_row,
                    slope,
                    distance: None,
                },
            };
            let sink = match sinks {
                Some(s) => s[h],
                None => f32::NEG_INFINITY,
            };
            let yr = y.row_mut((b, h, q), base);
            let (st, bufs) = (&mut stage, &mut bufs);
            let span = (lo, hi);
            attention_row(
                arch, st, bufs, v_space, logit, xr, yr, bias, span, sink, next, plain,
            );
        }
    }
}

impl Batch for AttentionForward<'_> {
    fn rows(&self) -> usize {
        self.y.rows
    }
    fn split_at(self, k: usize) -> (Self, Self) {
        let (ya, yb) = self.y.split_at(k);
        let half = |y| AttentionForward { y, ..self };
        (half(ya), half(yb))
    }
    fn combine(_: (), _: ()) {}
}

/// The backward pass of [`AttentionForward`] over rows `first .. first +
/// rows`: from y and dy (in place over dx, which holds dy, when `dy` is
/// `None`) into dx; the raw scores `x` are read under a soft-cap. Every row
/// is of one element type. Outputs, when `sink_grads`, the sum of the sink
/// gradients over the rows of each head (else nothing).
pub struct AttentionBackward<'a> {
    pub logit: Logit,
    /// dx per unit of the logit's gradient where no cap bends it: s, or c·k.
    pub factor: f32,
    pub x: Option<Grid<'a>>,
    pub y: Grid<'a>,
    pub dy: Option<Grid<'a>>,
    pub dx: GridMut<'a>,
    pub sink_grads: bool,
}

impl Job for AttentionBackward<'_> {
    type Output = Vec<f64>;

    fn scratch_len(&self) -> usize {
        stage_len(&[self.y.data.kind(), self.dx.data.kind()])
    }

    #[inline(always)]
    fn run<A: Arch>(mut self, arch: A, scratch: &mut [f32]) -> Vec<f64> {
        let mut stage = Stage::new(scratch);
        let layout = self.dx.layout;
        let mut sinks = vec![0.0f64; if self.sink_grads { layout.dims[1] } else { 0 }];
        let base = layout.offset(self.dx.first);
        for r in layout.walk(self.dx.first).take(self.dx.rows) {
            let st = &mut stage;
            let y = self.y.row(r);
            let dy = match &self.dy {
                Some(dy) => Some(dy.row(r)),
                None => None,
            };
            let mut dx = self.dx.row_mut(r, base);
            let g = dy.unwrap_or(dx.shared());
            let dot = match self.sink_grads {
                // ⟨dy, y⟩ and Σy in one read of y.
                true => {
                    let mut k = DotAndSum { dot: 0.0, sum: 0.0 };
                    read_pair(arch, g, y, st, &mut k);
                    sinks[r.1] -= (1.0 - k.sum) * k.dot;
                    k.dot
                }
                false => {
                    let mut k = Dot { total: 0.0 };
                    read_pair(arch, g, y, st, &mut k);
                    k.total
                }
            };
            let hi = dot as f32;
            let lo = (dot - hi as f64) as f32;
            let grad = SoftmaxGrad {
                hi,
                lo,
                inv_t: self.factor,
            };
            run_pair(
                arch,
                PairIo::write(dy, y, dx.reborrow()),
                st,
                &mut Map(grad),
            );
            if let (Logit::Capped(cap), Some(x)) = (self.logit, &self.x) {
                let io = PairIo::InPlace(dx, x.row(r));
                run_pair(arch, io, st, &mut Map(CapSlope { cap, factor: 1.0 }));
            }
        }
        sinks
    }
}

impl Batch for AttentionBackward<'_> {
    fn rows(&self) -> usize {
        self.dx.rows
    }
    fn split_at(self, k: usize) -> (Self, Self) {
        let (a, b) = self.dx.split_at(k);
        let half = |dx| AttentionBackward { dx, ..self };
        (half(a), half(b))
    }
    fn combine(mut a: Vec<f64>, b: Vec<f64>) -> Vec<f64> {
        for (a, b) in a.iter_mut().zip(&b) {
            *a += b;
        }
        a
    }
}
