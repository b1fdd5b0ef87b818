//! Sampling a token from a row of logits, with truncation, without sorting
//! the row and without writing a normalised copy of it.
//!
//! ```text
//! v = x + bias (a bias of -inf bans), z = (v - max)/t; under a soft-cap x is
//!          c·tanh(x/c), capped into working space before anything else
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

mod blocks;
mod draw;
mod truncate;

use crate::arch::Arch;
use crate::loops::write;
use crate::loops::Stage;
use crate::output::Map;
use crate::random::Stream;
use crate::storage::AnySliceMut;
use crate::storage::{AnySlice, Storage};
use crate::strided::Strided;
use crate::tanh::SoftCap;
use crate::{stage_len, Batch, Job, Temperature};
use blocks::{block_maxima, block_sums};
use draw::{draw, sample_infinite};
use truncate::top_logprobs;

pub use blocks::BLOCK;

/// How the token is drawn from the logits that truncation keeps.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
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
    /// A soft-cap c·tanh(x/c) on the logits, before everything else: the
    /// row is capped into working space once (f32, the same bits on every
    /// ISA) and sampled from there.
    pub cap: Option<SoftCap>,
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

/// One token drawn from each row of logits `x`, into `out[i]`; the top-n
/// (token, log-probability) pairs of row i into `top[i·n .. (i+1)·n]`.
/// Row i draws from the stream (seed, `first_row` + i, step).
pub struct Sample<'a> {
    pub options: SampleOptions<'a>,
    pub x: Strided<'a>,
    pub first_row: u64,
    pub out: &'a mut [Drawn],
    pub top: &'a mut [TokenLogprob],
    pub top_n: usize,
    /// When given: row i's truncated log-probabilities into
    /// `kept[i·cols .. (i+1)·cols]` (-inf where truncation drops a token).
    pub kept: Option<&'a mut [f32]>,
}

impl Batch for Sample<'_> {
    fn rows(&self) -> usize {
        self.x.rows()
    }
    fn split_at(self, k: usize) -> (Self, Self) {
        let (xa, xb) = self.x.split_at(k);
        let k = xa.rows();
        let (oa, ob) = self.out.split_at_mut(k.min(self.out.len()));
        let cut = (k * self.top_n).min(self.top.len());
        let (ta, tb) = self.top.split_at_mut(cut);
        let (options, top_n, first_row) = (self.options, self.top_n, self.first_row);
        let cols = xa.cols();
        let (ka, kb) = match self.kept {
            Some(kept) => {
                let (a, b) = kept.split_at_mut((k * cols).min(kept.len()));
                (Some(a), Some(b))
            }
            None => (None, None),
        };
        (
            Sample {
                options,
                x: xa,
                first_row,
                out: oa,
                top: ta,
                top_n,
                kept: ka,
            },
            Sample {
                options,
                x: xb,
                first_row: first_row + k as u64,
                out: ob,
                top: tb,
                top_n,
                kept: kb,
            },
        )
    }
    fn combine(_: (), _: ()) {}
}

impl Job for Sample<'_> {
    type Output = ();

    fn scratch_len(&self) -> usize {
        let capped = match self.options.cap {
            Some(_) => self.x.cols(),
            None => 0,
        };
        stage_len(&[self.x.kind()]) + capped
    }

    #[inline(always)]
    fn run<A: Arch>(mut self, arch: A, scratch: &mut [f32]) {
        let (stage, capped) = scratch.split_at_mut(stage_len(&[self.x.kind()]));
        let mut stage = Stage::new(stage);
        let (rows, cols) = (self.x.rows(), self.x.cols());
        assert!(self.out.len() >= rows, "one outcome per row");
        assert!(self.top.len() >= rows * self.top_n, "top_n pairs per row");
        let mut ws = Workspace::default();
        let o = &self.options;
        for i in 0..rows {
            let stream = Stream::new(o.seed, self.first_row + i as u64, o.step);
            let top = &mut self.top[i * self.top_n..(i + 1) * self.top_n];
            // A match, not Option::map: a closure would be compiled outside the region.
            #[allow(clippy::manual_map)]
            let kept = match self.kept.as_deref_mut() {
                Some(k) => Some(&mut k[i * cols..(i + 1) * cols]),
                None => None,
            };
            let st = &mut stage;
            let x = match o.cap {
                Some(cap) => {
                    let v = &mut capped[..cols];
                    write(
                        arch,
                        Some(self.x.row(i)),
                        AnySliceMut::F32(v),
                        st,
                        &mut Map(cap),
                    );
                    AnySlice::F32(v)
                }
                None => self.x.row(i),
            };
            self.out[i] = sample_row(arch, st, x, o, stream, &mut ws, top, kept);
        }
    }
}
