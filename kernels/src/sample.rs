//! Sampling a token from a row of logits, with truncation, without sorting
//! the row and without writing a normalised copy of it.
//!
//! ```text
//! v = x + bias (a bias of -inf bans), z = (v - max)/t
//! pass 1 (SIMD, one read): max of each block of BLOCK elements, and whether any is NaN
//! t = 0:   the first index holding max
//! top-k:   L = k-th largest block max ≤ k-th largest v, so only blocks with max ≥ L
//!          can hold the top k; collect their v ≥ L, select the k-th (τk), keep v ≥ τk
//! top-p:   over what top-k kept (else over the row: pass 2, Σ e^z per block, and a
//!          candidate set {v ≥ max - d·t} grown d = 8, 9, …, 16, 32, … until it holds
//!          p·Σ), keep the largest v until their mass reaches p (a quickselect that
//!          carries the mass it sets aside; the candidates are never sorted whole)
//! min-p:   keep z ≥ ln(min_p) (relative to the max probability; no exp)
//! draw:    inverse CDF over the kept set in index order (one uniform, f64 sums), or
//!          argmax z + Gumbel noise keyed by token index
//! no truncation: inverse CDF walks the per-block sums of pass 2, then one block;
//!          Gumbel-max skips every token whose noise cannot beat the best so far
//!          (a per-block bound on the 53 random bits, no logarithm)
//! ```
//! Every set is a threshold set {v ≥ τ}: ties at a cut are all kept. The kept
//! set, its weights and the draw are computed in f64 from exact inputs, so the
//! result does not depend on the ISA; only the per-block sums of pass 2 (f32
//! lanes) do, and they decide a draw only on a full row or for top-p without
//! top-k.

use crate::arch::Arch;
use crate::exp::CUTOFF;
use crate::exp_sum::sum_lanes_f64;
use crate::loops::{read, Kernel, Stage, UNROLL};
use crate::random::{gumbel_at_most, gumbel_of, Stream, INVERSE_CDF};
use crate::shift::{with_shift, AnyShift, Shift};
use crate::storage::{AnySlice, Storage};
use crate::Temperature;
use pulp::Simd;

/// Elements per block of the per-block maxima and sums. A multiple of every
/// ISA's UNROLL vectors, so a block is a whole number of loop steps.
pub const BLOCK: usize = 64;

/// Loop steps per block for a token with these vectors.
const fn steps_per_block<S: Simd>() -> usize {
    BLOCK / (UNROLL * (core::mem::size_of::<S::f32s>() / core::mem::size_of::<f32>()))
}

/// One value per block, written as the loop flushes each block.
struct PerBlock<'a, T> {
    out: &'a mut [T],
    next: usize,
}

impl<'a, T> PerBlock<'a, T> {
    #[inline(always)]
    fn new(out: &'a mut [T]) -> Self {
        Self { out, next: 0 }
    }
    /// The next block's value. A row that is a whole number of blocks ends on
    /// an empty flush, which has no block to go to.
    #[inline(always)]
    fn push(&mut self, value: T) {
        if self.next < self.out.len() {
            self.out[self.next] = value;
            self.next += 1;
        }
    }
}

/// Pass 1: the max of each block, and whether the row holds a NaN.
struct BlockMax<'a> {
    out: PerBlock<'a, f32>,
    nan: bool,
}

impl<S: Simd> Kernel<S> for BlockMax<'_> {
    /// (max, lanes that have seen no NaN)
    type Acc = (S::f32s, S::m32s);
    const FLUSH_STEPS: usize = steps_per_block::<S>();

    #[inline(always)]
    fn fill(&self) -> f32 {
        f32::NEG_INFINITY
    }
    #[inline(always)]
    fn init(&self, simd: S) -> Self::Acc {
        let zero = simd.splat_f32s(0.0);
        (
            simd.splat_f32s(f32::NEG_INFINITY),
            simd.equal_f32s(zero, zero),
        )
    }
    #[inline(always)]
    fn step(&self, simd: S, (m, ok): Self::Acc, x: S::f32s) -> (Self::Acc, S::f32s) {
        let ok = simd.and_m32s(ok, simd.equal_f32s(x, x));
        ((simd.max_f32s(m, x), ok), x)
    }
    #[inline(always)]
    fn merge(&self, simd: S, a: Self::Acc, b: Self::Acc) -> Self::Acc {
        (simd.max_f32s(a.0, b.0), simd.and_m32s(a.1, b.1))
    }
    #[inline(always)]
    fn flush(&mut self, simd: S, (m, ok): Self::Acc) {
        self.out.push(simd.reduce_max_f32s(m));
        let bad = simd.select_f32s(ok, simd.splat_f32s(0.0), simd.splat_f32s(1.0));
        self.nan |= simd.reduce_max_f32s(bad) > 0.0;
    }
}

/// Pass 2: Σ e^z of each block, z = (x - reference)/t, in f32 lanes then f64.
struct BlockSums<'a, Z> {
    shift: Z,
    out: PerBlock<'a, f64>,
}

impl<S: Simd, Z: Shift> Kernel<S> for BlockSums<'_, Z> {
    type Acc = S::f32s;
    const FLUSH_STEPS: usize = steps_per_block::<S>();

    #[inline(always)]
    fn fill(&self) -> f32 {
        f32::NEG_INFINITY
    }
    #[inline(always)]
    fn init(&self, simd: S) -> S::f32s {
        simd.splat_f32s(0.0)
    }
    #[inline(always)]
    fn step(&self, simd: S, acc: S::f32s, x: S::f32s) -> (S::f32s, S::f32s) {
        let e = crate::exp::exp_flushed_below::<S, true>(simd, self.shift.z(simd, x), CUTOFF);
        (simd.add_f32s(acc, e), e)
    }
    #[inline(always)]
    fn merge(&self, simd: S, a: S::f32s, b: S::f32s) -> S::f32s {
        simd.add_f32s(a, b)
    }
    #[inline(always)]
    fn flush(&mut self, _: S, acc: S::f32s) {
        self.out.push(sum_lanes_f64::<S>(&acc));
    }
}

/// How the token is drawn from the logits that truncation keeps.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Draw {
    /// One uniform u; the first token whose running sum of e^z (in index order)
    /// exceeds u·Σe^z.
    #[default]
    InverseCdf,
    /// argmax z + G, G a standard Gumbel variate per token (the exponential race).
    GumbelMax,
}

/// What to sample and how. Validated by the `softmax` crate.
#[derive(Clone, Copy, Debug)]
pub struct SampleOptions<'a> {
    /// `None`: temperature 0, the first index of the max.
    pub temperature: Option<Temperature>,
    /// Keep the logits ≥ the k-th largest (`usize::MAX`: off).
    pub top_k: usize,
    /// Keep the smallest top set holding this share of the mass (1: off).
    pub top_p: f64,
    /// Keep probabilities ≥ min_p · the largest (0: off).
    pub min_p: f64,
    /// Added to the logits before anything else: sorted by index, one entry
    /// per index, each index below the row length, no NaN and no +inf.
    pub bias: &'a [(u32, f32)],
    pub draw: Draw,
    pub seed: u64,
    pub step: u64,
    /// Return the drawn token's log-probability (under softmax(x + bias), t = 1).
    pub logprob: bool,
}

/// A token and its log-probability.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct TokenLogprob {
    pub token: usize,
    pub logprob: f32,
}

/// The outcome of one row.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub enum Drawn {
    Token {
        index: usize,
        /// When asked for: ln softmax(x + bias)ᵢ at t = 1.
        logprob: Option<f32>,
    },
    /// The row holds a NaN.
    Nan,
    /// Nothing to draw: an empty row, or every logit -inf after the bias.
    #[default]
    NoFinite,
}

/// Buffers a job reuses from row to row.
#[derive(Default)]
pub(crate) struct Workspace {
    maxima: Vec<f32>,
    vmax: Vec<f64>,
    sums: Vec<f64>,
    cand: Vec<Cand>,
    sorted: Vec<f64>,
    weighted: Vec<(f64, f64)>,
}

/// A candidate token: its biased logit and index.
#[derive(Clone, Copy, Debug)]
struct Cand {
    v: f64,
    i: usize,
}

/// A row with its bias, read a block at a time.
struct Row<'x, T> {
    x: &'x [T],
    bias: &'x [(u32, f32)],
}

impl<T: Storage> Row<'_, T> {
    #[inline(always)]
    fn blocks(&self) -> usize {
        self.x.len().div_ceil(BLOCK)
    }
    #[inline(always)]
    fn range(&self, b: usize) -> core::ops::Range<usize> {
        b * BLOCK..((b + 1) * BLOCK).min(self.x.len())
    }
    /// The blocks holding a bias entry, each once, in order.
    #[inline(always)]
    fn biased_blocks(&self) -> impl Iterator<Item = usize> + '_ {
        self.bias
            .chunk_by(|a, b| a.0 as usize / BLOCK == b.0 as usize / BLOCK)
            .map(|entries| entries[0].0 as usize / BLOCK)
    }
    /// The bias entries of block `b`.
    #[inline(always)]
    fn bias_of(&self, b: usize) -> &[(u32, f32)] {
        let r = self.range(b);
        let lo = self.bias.partition_point(|e| (e.0 as usize) < r.start);
        let hi = self.bias.partition_point(|e| (e.0 as usize) < r.end);
        &self.bias[lo..hi]
    }
    /// The biased logits of block `b` into `out`; returns how many.
    #[inline(always)]
    fn values(&self, b: usize, out: &mut [f64; BLOCK]) -> usize {
        let r = self.range(b);
        let start = r.start;
        let len = r.len();
        for (o, &x) in out.iter_mut().zip(&self.x[r]) {
            *o = x.to_f64();
        }
        for &(i, d) in self.bias_of(b) {
            out[i as usize - start] = biased(out[i as usize - start], d);
        }
        len
    }
    /// The biased logit of token `i`.
    #[inline(always)]
    fn value(&self, i: usize) -> f64 {
        let x = self.x[i].to_f64();
        match self.bias.binary_search_by_key(&(i as u32), |e| e.0) {
            Ok(k) => biased(x, self.bias[k].1),
            Err(_) => x,
        }
    }
    /// Every candidate with v ≥ `floor` (and v > -inf), in index order, from
    /// the blocks whose max reaches `floor`.
    fn collect(&self, vmax: &[f64], floor: f64, out: &mut Vec<Cand>) {
        out.clear();
        self.collect_below(vmax, floor, None, out);
    }
    /// Appends the candidates with `floor` ≤ v < `below` (no upper limit when
    /// `None`), in index order.
    fn collect_below(&self, vmax: &[f64], floor: f64, below: Option<f64>, out: &mut Vec<Cand>) {
        let (open, below) = (below.is_none(), below.unwrap_or(0.0));
        let mut buf = [0.0; BLOCK];
        for (b, &m) in vmax.iter().enumerate() {
            if m < floor || m == f64::NEG_INFINITY {
                continue;
            }
            let len = self.values(b, &mut buf);
            for (j, &v) in buf[..len].iter().enumerate() {
                if v >= floor && v > f64::NEG_INFINITY && (open || v < below) {
                    out.push(Cand {
                        v,
                        i: b * BLOCK + j,
                    });
                }
            }
        }
    }
}

/// x + d, where a bias of -inf bans whatever x is.
#[inline(always)]
fn biased(x: f64, d: f32) -> f64 {
    if d == f32::NEG_INFINITY {
        f64::NEG_INFINITY
    } else {
        x + d as f64
    }
}

/// A lower bound of the k-th largest logit of a row (1-based): the k-th largest
/// block max (k distinct logits reach it), or -inf when there are k blocks or
/// fewer. `space` is working room.
fn kth_largest_floor(vmax: &[f64], k: usize, space: &mut Vec<f64>) -> f64 {
    if vmax.len() <= k {
        return f64::NEG_INFINITY;
    }
    space.clear();
    space.extend_from_slice(vmax);
    kth_largest(space, k)
}

/// The k-th largest of `values` (1-based), reordering them. Never inlined, as
/// every per-row function here that sorts or selects: std's sort stays out of
/// the vectorised region.
#[inline(never)]
fn kth_largest(values: &mut [f64], k: usize) -> f64 {
    let (_, kth, _) = values.select_nth_unstable_by(k - 1, |a, b| b.total_cmp(a));
    *kth
}

/// Weights e^z, z = (v - reference)/t; the reference is the row's max, so
/// every weight is at most 1.
#[derive(Clone, Copy)]
struct Weights {
    reference: f64,
    inv_t: f64,
}

impl Weights {
    #[inline(always)]
    fn z(self, v: f64) -> f64 {
        (v - self.reference) * self.inv_t
    }
    #[inline(always)]
    fn w(self, v: f64) -> f64 {
        self.z(v).exp()
    }
}

/// The max of each block into `out` (one per block); true if the row holds a NaN.
#[inline(always)]
fn block_maxima<A: Arch>(arch: A, st: &mut Stage<'_>, x: AnySlice<'_>, out: &mut [f32]) -> bool {
    let mut k = BlockMax {
        out: PerBlock::new(out),
        nan: false,
    };
    read(arch, x, st, &mut k);
    k.nan
}

/// Σ e^z of each block into `out` (one per block), z = (v - max)·inv_t;
/// returns their total. The SIMD pass takes z from the f32 nearest the max (no
/// unbiased logit lies above it), and its sums are rescaled to the max in f64;
/// the blocks holding a bias, and every block when that scale is out of range
/// (a biased max far off the f32 grid at a tiny t), are summed in f64.
#[inline(always)]
fn block_sums<A: Arch, T: Storage>(
    arch: A,
    st: &mut Stage<'_>,
    x: AnySlice<'_>,
    row: &Row<'_, T>,
    w: Weights,
    inv_t: f32,
    out: &mut Vec<f64>,
) -> f64 {
    out.clear();
    out.resize(row.blocks(), 0.0);
    let reference = (w.reference as f32).clamp(f32::MIN, f32::MAX);
    let scale = w.w(reference as f64);
    let mut buf = [0.0; BLOCK];
    if (1e-30..=1e30).contains(&scale) {
        with_shift!(AnyShift::new(reference, f32::NEG_INFINITY, inv_t), z => {
            let mut k = BlockSums { shift: z, out: PerBlock::new(out) };
            read(arch, x, st, &mut k);
        });
        if scale != 1.0 {
            for s in out.iter_mut() {
                *s *= scale;
            }
        }
    } else {
        for (b, s) in out.iter_mut().enumerate() {
            let len = row.values(b, &mut buf);
            *s = buf[..len].iter().map(|&v| w.w(v)).sum();
        }
        return out.iter().sum();
    }
    for b in row.biased_blocks() {
        let len = row.values(b, &mut buf);
        out[b] = buf[..len].iter().map(|&v| w.w(v)).sum();
    }
    out.iter().sum()
}

/// One row: the drawn token (and its log-probability), the top-n
/// (token, log-probability) pairs into `top` (n = its length), and, when
/// given, the log-probabilities of the truncated distribution the token is
/// drawn from into `kept` (-inf for every token truncation drops).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub(crate) fn sample_row<A: Arch>(
    arch: A,
    st: &mut Stage<'_>,
    x: AnySlice<'_>,
    o: &SampleOptions<'_>,
    stream: Stream,
    ws: &mut Workspace,
    top: &mut [TokenLogprob],
    kept: Option<&mut [f32]>,
) -> Drawn {
    match x {
        AnySlice::F32(s) => sample_typed(arch, st, x, s, o, stream, ws, top, kept),
        AnySlice::F16(s) => sample_typed(arch, st, x, s, o, stream, ws, top, kept),
        AnySlice::BF16(s) => sample_typed(arch, st, x, s, o, stream, ws, top, kept),
    }
}

#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn sample_typed<A: Arch, T: Storage>(
    arch: A,
    st: &mut Stage<'_>,
    xs: AnySlice<'_>,
    x: &[T],
    o: &SampleOptions<'_>,
    stream: Stream,
    ws: &mut Workspace,
    top: &mut [TokenLogprob],
    kept: Option<&mut [f32]>,
) -> Drawn {
    let n = x.len();
    if n == 0 {
        return Drawn::NoFinite;
    }
    let row = Row { x, bias: o.bias };
    let nb = row.blocks();
    ws.maxima.clear();
    ws.maxima.resize(nb, f32::NEG_INFINITY);
    if block_maxima(arch, st, xs, &mut ws.maxima) {
        return Drawn::Nan;
    }
    ws.vmax.clear();
    ws.vmax.extend(ws.maxima.iter().map(|&m| m as f64));
    let mut buf = [0.0; BLOCK];
    for b in row.biased_blocks() {
        let len = row.values(b, &mut buf);
        ws.vmax[b] = buf[..len].iter().fold(f64::NEG_INFINITY, |m, &v| m.max(v));
    }
    let max = ws.vmax.iter().fold(f64::NEG_INFINITY, |m, &v| m.max(v));
    if max == f64::NEG_INFINITY {
        return Drawn::NoFinite;
    }
    if max == f64::INFINITY {
        return sample_infinite(&row, o, stream, ws, top, kept);
    }
    let reference = max;
    let logprobs = if o.logprob || !top.is_empty() {
        let w1 = Weights {
            reference,
            inv_t: 1.0,
        };
        let lse = reference + block_sums(arch, st, xs, &row, w1, 1.0, &mut ws.sums).ln();
        top_logprobs(&row, &ws.vmax, lse, &mut ws.cand, &mut ws.sorted, top);
        Some(lse)
    } else {
        None
    };
    let index = match o.temperature {
        None => {
            let index = first_max(&row, &ws.vmax, max);
            if let Some(kept) = kept {
                kept.fill(f32::NEG_INFINITY);
                kept[index] = 0.0;
            }
            index
        }
        Some(t) => {
            let w = Weights {
                reference,
                inv_t: 1.0 / t.get() as f64,
            };
            draw(arch, st, xs, &row, o, t, w, max, stream, ws, kept)
        }
    };
    Drawn::Token {
        index,
        logprob: logprobs.map(|lse| (row.value(index) - lse) as f32),
    }
}

/// The first index holding the max.
fn first_max<T: Storage>(row: &Row<'_, T>, vmax: &[f64], max: f64) -> usize {
    let b = vmax.iter().position(|&m| m == max).unwrap_or(0);
    let mut buf = [0.0; BLOCK];
    let len = row.values(b, &mut buf);
    b * BLOCK + buf[..len].iter().position(|&v| v == max).unwrap_or(0)
}

/// Truncates and draws (t > 0, finite max).
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn draw<A: Arch, T: Storage>(
    arch: A,
    st: &mut Stage<'_>,
    xs: AnySlice<'_>,
    row: &Row<'_, T>,
    o: &SampleOptions<'_>,
    t: Temperature,
    w: Weights,
    max: f64,
    stream: Stream,
    ws: &mut Workspace,
    kept: Option<&mut [f32]>,
) -> usize {
    let n = row.x.len();
    let top_k = o.top_k < n;
    let top_p = o.top_p < 1.0;
    let min_p = if o.min_p > 0.0 {
        max + t.get() as f64 * o.min_p.ln()
    } else {
        f64::NEG_INFINITY
    };
    if !top_k && !top_p && min_p == f64::NEG_INFINITY && kept.is_none() {
        return match o.draw {
            Draw::InverseCdf => {
                let total = block_sums(arch, st, xs, row, w, t.inv, &mut ws.sums);
                inverse_cdf_blocks(row, &ws.sums, total, w, stream)
            }
            Draw::GumbelMax => gumbel_blocks(row, &ws.vmax, w, max, stream),
        };
    }
    let mut tau = min_p;
    if top_k {
        let k = o.top_k;
        let mut floor = kth_largest_floor(&ws.vmax, k, &mut ws.sorted);
        if !top_p {
            // min-p cuts no fewer than top-k here; collect no more than both keep.
            floor = floor.max(min_p);
        }
        row.collect(&ws.vmax, floor, &mut ws.cand);
        if ws.cand.len() >= k {
            ws.sorted.clear();
            ws.sorted.extend(ws.cand.iter().map(|c| c.v));
            let tau_k = kth_largest(&mut ws.sorted, k);
            ws.cand.retain(|c| c.v >= tau_k);
            tau = tau.max(tau_k);
        }
        if top_p {
            let mass: f64 = ws.cand.iter().map(|c| w.w(c.v)).sum();
            tau = tau.max(nucleus_cut(&ws.cand, o.top_p * mass, w, &mut ws.weighted));
        }
    } else if top_p {
        let target = o.top_p * block_sums(arch, st, xs, row, w, t.inv, &mut ws.sums);
        // Grow the candidate set until it holds the nucleus: one e-fold of
        // weight at a time while the bulk of most rows lies there, then
        // doubling. Each step adds only the logits between the old and new floors.
        let mut depth = 8.0;
        let mut below = None;
        let mut mass = 0.0;
        ws.cand.clear();
        loop {
            let floor = if depth > 1024.0 {
                f64::NEG_INFINITY
            } else {
                max - depth / w.inv_t
            };
            let start = ws.cand.len();
            row.collect_below(&ws.vmax, floor, below, &mut ws.cand);
            mass += ws.cand[start..].iter().map(|c| w.w(c.v)).sum::<f64>();
            if mass >= target || floor == f64::NEG_INFINITY {
                break;
            }
            below = Some(floor);
            depth = if depth < 16.0 {
                depth + 1.0
            } else {
                depth * 2.0
            };
        }
        tau = tau.max(nucleus_cut(&ws.cand, target, w, &mut ws.weighted));
    } else {
        row.collect(&ws.vmax, min_p, &mut ws.cand);
    }
    ws.cand.retain(|c| c.v >= tau);
    into_index_order(&mut ws.cand);
    if let Some(kept) = kept {
        let total: f64 = ws.cand.iter().map(|c| w.w(c.v)).sum();
        let ln_total = total.ln();
        kept.fill(f32::NEG_INFINITY);
        for c in &ws.cand {
            kept[c.i] = (w.z(c.v) - ln_total) as f32;
        }
    }
    match o.draw {
        Draw::InverseCdf => inverse_cdf(&ws.cand, w, stream),
        Draw::GumbelMax => gumbel_max(&ws.cand, w, stream),
    }
}

/// Puts a kept set in index order (the growth of top-p appends out of order),
/// so the draw does not depend on how the set was found; already in order on
/// the other paths. Once per row, never inlined: std's sort stays out of the
/// vectorised region that calls it.
#[inline(never)]
fn into_index_order(cand: &mut [Cand]) {
    cand.sort_unstable_by_key(|c| c.i);
}

/// The largest τ such that the candidates with v ≥ τ hold at least `target`
/// of the mass (the smallest candidate when none does). A quickselect that
/// carries the mass of what it has set aside above: expected linear time, so a
/// large candidate set is never sorted whole.
#[inline(never)]
fn nucleus_cut(cand: &[Cand], target: f64, w: Weights, space: &mut Vec<(f64, f64)>) -> f64 {
    space.clear();
    space.extend(cand.iter().map(|c| (c.v, w.w(c.v))));
    let by_value_desc = |a: &(f64, f64), b: &(f64, f64)| b.0.total_cmp(&a.0);
    let mut above = 0.0;
    let mut part = &mut space[..];
    while part.len() > 32 {
        let mid = part.len() / 2;
        part.select_nth_unstable_by(mid, by_value_desc);
        let upper: f64 = part[..=mid].iter().map(|e| e.1).sum();
        if above + upper >= target {
            part = &mut part[..=mid];
        } else {
            above += upper;
            part = &mut part[mid + 1..];
        }
    }
    part.sort_unstable_by(by_value_desc);
    for &(v, wv) in part.iter() {
        above += wv;
        if above >= target {
            return v;
        }
    }
    part.last().map_or(f64::NEG_INFINITY, |e| e.0)
}

/// Inverse CDF over candidates in index order.
fn inverse_cdf(cand: &[Cand], w: Weights, stream: Stream) -> usize {
    let total: f64 = cand.iter().map(|c| w.w(c.v)).sum();
    let mut left = stream.uniform(INVERSE_CDF) * total;
    let mut last = cand[0].i;
    for c in cand {
        let wi = w.w(c.v);
        if wi > 0.0 {
            last = c.i;
            left -= wi;
            if left < 0.0 {
                return c.i;
            }
        }
    }
    last
}

/// Gumbel-max over candidates: the largest z + G, the lowest index on a tie.
fn gumbel_max(cand: &[Cand], w: Weights, stream: Stream) -> usize {
    let mut best = (f64::NEG_INFINITY, cand[0].i);
    for c in cand {
        let g = w.z(c.v) + stream.gumbel(c.i as u64);
        if g > best.0 {
            best = (g, c.i);
        }
    }
    best.1
}

/// Inverse CDF over a whole row: find the block from the per-block sums, then
/// the token inside it from its f64 weights.
fn inverse_cdf_blocks<T: Storage>(
    row: &Row<'_, T>,
    sums: &[f64],
    total: f64,
    w: Weights,
    stream: Stream,
) -> usize {
    let target = stream.uniform(INVERSE_CDF) * total;
    let mut acc = 0.0;
    let mut chosen = None;
    for (b, &s) in sums.iter().enumerate() {
        if s > 0.0 {
            if acc + s > target {
                chosen = Some((b, (target - acc) / s));
                break;
            }
            // Rounding may leave the target past the last block: take the last one with mass.
            chosen = Some((b, 1.0));
            acc += s;
        }
    }
    let (b, share) = chosen.unwrap_or((0, 0.0));
    let mut buf = [0.0; BLOCK];
    let len = row.values(b, &mut buf);
    let weights = buf[..len].iter().map(|&v| w.w(v));
    let mut left = share * weights.clone().sum::<f64>();
    let mut last = b * BLOCK;
    for (j, wj) in weights.enumerate() {
        if wj > 0.0 {
            last = b * BLOCK + j;
            left -= wj;
            if left < 0.0 {
                return last;
            }
        }
    }
    last
}

/// Gumbel-max over a whole row. Token i can win only if its noise exceeds
/// best − z_i ≥ best − (its block's max z), so tokens whose random bits are
/// below that block's bound are skipped without a logarithm. The block of the
/// max runs first, so the bound is tight from the start.
fn gumbel_blocks<T: Storage>(
    row: &Row<'_, T>,
    vmax: &[f64],
    w: Weights,
    max: f64,
    stream: Stream,
) -> usize {
    let first = vmax.iter().position(|&m| m == max).unwrap_or(0);
    let mut best = (f64::NEG_INFINITY, usize::MAX);
    let order = core::iter::once(first).chain((0..vmax.len()).filter(|&b| b != first));
    for b in order {
        if vmax[b] == f64::NEG_INFINITY {
            continue;
        }
        let cut = if best.0 == f64::NEG_INFINITY {
            0
        } else {
            gumbel_at_most(best.0 - w.z(vmax[b]))
        };
        let plain = row.bias_of(b).is_empty();
        for i in row.range(b) {
            let bits = stream.bits(i as u64);
            if (bits >> 11) < cut {
                continue;
            }
            let v = if plain {
                row.x[i].to_f64()
            } else {
                row.value(i)
            };
            if v == f64::NEG_INFINITY {
                continue;
            }
            let g = w.z(v) + gumbel_of(bits);
            if g > best.0 || (g == best.0 && i < best.1) {
                best = (g, i);
            }
        }
    }
    best.1
}

/// A row holding +inf after the bias: the +inf tokens share all the mass, so
/// the draw is uniform over them (whatever the truncation, which keeps them all).
fn sample_infinite<T: Storage>(
    row: &Row<'_, T>,
    o: &SampleOptions<'_>,
    stream: Stream,
    ws: &mut Workspace,
    top: &mut [TokenLogprob],
    kept: Option<&mut [f32]>,
) -> Drawn {
    row.collect(&ws.vmax, f64::INFINITY, &mut ws.cand);
    let count = ws.cand.len();
    let share = -(count as f64).ln() as f32;
    if let Some(kept) = kept {
        kept.fill(f32::NEG_INFINITY);
        match o.temperature {
            // t = 0 draws the first +inf token, always.
            None => kept[ws.cand[0].i] = 0.0,
            Some(_) => {
                for c in &ws.cand {
                    kept[c.i] = share;
                }
            }
        }
    }
    let index = match (o.temperature, o.draw) {
        (None, _) => ws.cand[0].i,
        (Some(_), Draw::InverseCdf) => {
            let k = (stream.uniform(INVERSE_CDF) * count as f64) as usize;
            ws.cand[k.min(count - 1)].i
        }
        (Some(_), Draw::GumbelMax) => {
            let mut best = (f64::NEG_INFINITY, ws.cand[0].i);
            for c in &ws.cand {
                let g = stream.gumbel(c.i as u64);
                if g > best.0 {
                    best = (g, c.i);
                }
            }
            best.1
        }
    };
    let mut rest = 0..row.x.len();
    for (slot, item) in top.iter_mut().enumerate() {
        *item = match ws.cand.get(slot) {
            Some(c) => TokenLogprob {
                token: c.i,
                logprob: share,
            },
            None => {
                let token = rest
                    .by_ref()
                    .find(|&i| row.value(i) != f64::INFINITY)
                    .unwrap_or(0);
                TokenLogprob {
                    token,
                    logprob: f32::NEG_INFINITY,
                }
            }
        };
    }
    Drawn::Token {
        index,
        logprob: o.logprob.then_some(share),
    }
}

/// The n largest logits as (token, v - lse), largest first, lower index first
/// on a tie; -inf logits (lowest index first) when fewer than n are finite.
#[inline(never)]
fn top_logprobs<T: Storage>(
    row: &Row<'_, T>,
    vmax: &[f64],
    lse: f64,
    cand: &mut Vec<Cand>,
    sorted: &mut Vec<f64>,
    top: &mut [TokenLogprob],
) {
    let n = top.len();
    if n == 0 {
        return;
    }
    let floor = kth_largest_floor(vmax, n, sorted);
    row.collect(vmax, floor, cand);
    cand.sort_by(|a, b| b.v.total_cmp(&a.v).then(a.i.cmp(&b.i)));
    let mut masked = (0..row.x.len()).filter(|&i| row.value(i) == f64::NEG_INFINITY);
    for (slot, item) in top.iter_mut().enumerate() {
        *item = match cand.get(slot) {
            Some(c) => TokenLogprob {
                token: c.i,
                logprob: (c.v - lse) as f32,
            },
            None => TokenLogprob {
                token: masked.next().unwrap_or(0),
                logprob: f32::NEG_INFINITY,
            },
        };
    }
}
