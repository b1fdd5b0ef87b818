//! Attention-score softmax, fused: scale, soft-cap, masks (a tensor, or by
//! position), ALiBi and sinks in the softmax's own passes, with its backward pass.

use crate::batch::{self, Parallelism};
use crate::{Element, Error, Isa};
use rayon::ThreadPool;
use softmax_kernels::{
    AlibiOn, AttentionBackward, AttentionForward, Grid, GridMut, Layout, Logit, Mask, MaskData,
    Positions, SoftCap,
};
use std::sync::Arc;

/// Strides of a packed (batch, heads, queries, keys) tensor: row-major, rows
/// of `keys` one after another.
pub fn packed_strides(dims: [usize; 4]) -> [usize; 3] {
    let [_, heads, queries, keys] = dims;
    let sq = keys;
    let sh = queries.saturating_mul(sq);
    [heads.saturating_mul(sh), sh, sq]
}

/// The elements a tensor of these dims and strides reaches (the end of its
/// last row), or `None` on overflow; 0 when it has no element.
fn reach(dims: [usize; 4], strides: [usize; 3]) -> Option<usize> {
    if dims.contains(&0) {
        return Some(0);
    }
    let mut end = dims[3];
    for (d, s) in dims[..3].iter().zip(strides) {
        end = end.checked_add((d - 1).checked_mul(s)?)?;
    }
    Some(end)
}

fn layout(len: usize, dims: [usize; 4], strides: [usize; 3]) -> Result<Layout, Error> {
    let rows = dims[0]
        .checked_mul(dims[1])
        .and_then(|r| r.checked_mul(dims[2]));
    let required = match (rows, reach(dims, strides)) {
        (Some(_), Some(r)) => r,
        _ => usize::MAX,
    };
    if required > len || required == usize::MAX {
        return Err(Error::TensorTooShort { len, required });
    }
    Ok(Layout { dims, strides })
}

/// Attention scores, read-only: `dims` = (batch, heads, queries, keys); row
/// (b, h, q) is `data[b·strides[0] + h·strides[1] + q·strides[2] ..][..keys]`.
/// Rows may overlap (a stride of 0 repeats a row).
#[derive(Clone, Copy, Debug)]
pub struct Scores<'a, T> {
    data: &'a [T],
    layout: Layout,
}

impl<'a, T: Element> Scores<'a, T> {
    /// Scores of these dims at these strides (of batch, head, query, in elements).
    pub fn new(data: &'a [T], dims: [usize; 4], strides: [usize; 3]) -> Result<Self, Error> {
        let layout = layout(data.len(), dims, strides)?;
        Ok(Self { data, layout })
    }
    /// Packed scores ([`packed_strides`]).
    pub fn contiguous(data: &'a [T], dims: [usize; 4]) -> Result<Self, Error> {
        Self::new(data, dims, packed_strides(dims))
    }
    /// (batch, heads, queries, keys).
    pub fn dims(&self) -> [usize; 4] {
        self.layout.dims
    }
    /// Strides of batch, head and query, in elements.
    pub fn strides(&self) -> [usize; 3] {
        self.layout.strides
    }
    fn grid(&self) -> Grid<'a> {
        Grid {
            data: T::any(self.data),
            layout: self.layout,
        }
    }
}

/// Attention scores, writable: as [`Scores`], but rows must not overlap and
/// must lie in (batch, head, query) order: the query stride at least `keys`,
/// the head stride past a head's last row, the batch stride past a batch's.
/// Elements between rows are never touched.
#[derive(Debug)]
pub struct ScoresMut<'a, T> {
    data: &'a mut [T],
    layout: Layout,
}

impl<'a, T: Element> ScoresMut<'a, T> {
    /// See [`Scores::new`] and the ordering rule above.
    pub fn new(data: &'a mut [T], dims: [usize; 4], strides: [usize; 3]) -> Result<Self, Error> {
        let layout = layout(data.len(), dims, strides)?;
        if !ordered(dims, strides) {
            return Err(Error::OverlappingRows { dims, strides });
        }
        Ok(Self { data, layout })
    }
    /// Packed scores ([`packed_strides`]).
    pub fn contiguous(data: &'a mut [T], dims: [usize; 4]) -> Result<Self, Error> {
        Self::new(data, dims, packed_strides(dims))
    }
    /// (batch, heads, queries, keys).
    pub fn dims(&self) -> [usize; 4] {
        self.layout.dims
    }
    /// Strides of batch, head and query, in elements.
    pub fn strides(&self) -> [usize; 3] {
        self.layout.strides
    }
    fn grid(self) -> GridMut<'a> {
        // Row 0 starts at element 0.
        GridMut {
            data: T::any_mut(self.data),
            layout: self.layout,
            first: 0,
            rows: self.layout.rows(),
        }
    }
}

/// Whether rows of these dims and strides lie one after another without
/// overlap, in (batch, head, query) order.
fn ordered(dims: [usize; 4], strides: [usize; 3]) -> bool {
    if dims.contains(&0) {
        return true;
    }
    let [b, h, q, keys] = dims;
    let [sb, sh, sq] = strides;
    // The span of one query row, of one head's rows, of one batch's rows.
    let q_span = keys;
    let h_span = (q - 1).saturating_mul(sq).saturating_add(q_span);
    let b_span = (h - 1).saturating_mul(sh).saturating_add(h_span);
    (q == 1 || sq >= q_span) && (h == 1 || sh >= h_span) && (b == 1 || sb >= b_span)
}

/// A mask over attention scores: additive (f32, f16 or bf16; −inf hides a
/// key) or keep-flags (`false` hides a key). Its dims (batch, heads, queries,
/// keys) broadcast over the scores': batch and heads must divide the scores'
/// (row (b, h, q) reads mask row (b mod batch, h mod heads, q), ggml's
/// rule), queries must equal the scores' or be 1 (one row for every query),
/// keys must be equal.
#[derive(Clone, Copy, Debug)]
pub struct AttentionMask<'a> {
    data: MaskData<'a>,
    layout: Layout,
}

impl<'a> AttentionMask<'a> {
    /// An additive mask, added to each logit (times the head's ALiBi slope).
    pub fn additive<T: Element>(
        data: &'a [T],
        dims: [usize; 4],
        strides: [usize; 3],
    ) -> Result<Self, Error> {
        let layout = layout(data.len(), dims, strides)?;
        Ok(Self {
            data: MaskData::Additive(T::any(data)),
            layout,
        })
    }
    /// A keep-mask: key j of row (b, h, q) is visible where the flag is `true`.
    pub fn keep(data: &'a [bool], dims: [usize; 4], strides: [usize; 3]) -> Result<Self, Error> {
        let layout = layout(data.len(), dims, strides)?;
        Ok(Self {
            data: MaskData::Keep(data),
            layout,
        })
    }
    /// (batch, heads, queries, keys).
    pub fn dims(&self) -> [usize; 4] {
        self.layout.dims
    }
}

/// The per-call inputs of an attention softmax beside the scores: a mask,
/// one sink logit per head, and key lengths (padding) per batch.
#[derive(Clone, Copy, Debug, Default)]
pub struct AttentionInputs<'a> {
    mask: Option<AttentionMask<'a>>,
    sinks: Option<&'a [f32]>,
    key_lens: Option<&'a [usize]>,
}

impl<'a> AttentionInputs<'a> {
    /// No mask, no sinks, every key of every batch.
    pub fn new() -> Self {
        Self::default()
    }
    /// A mask tensor.
    pub fn with_mask(mut self, mask: AttentionMask<'a>) -> Self {
        self.mask = Some(mask);
        self
    }
    /// One sink logit per head: it joins each row's max and sum (after the
    /// scale, the cap and the mask, which it does not take) and is not written.
    pub fn with_sinks(mut self, sinks: &'a [f32]) -> Self {
        self.sinks = Some(sinks);
        self
    }
    /// Keys visible per batch: key j of batch b is hidden from j ≥ key_lens[b]
    /// (one length for every batch, or one per batch).
    pub fn with_key_lens(mut self, key_lens: &'a [usize]) -> Self {
        self.key_lens = Some(key_lens);
        self
    }
}

/// ALiBi slopes per head.
#[derive(Clone, Debug, PartialEq)]
pub enum Alibi {
    /// From a maximum bias, as ggml computes them for n heads: with
    /// n₂ = 2^⌊log2 n⌋, m0 = 2^(−max_bias/n₂), m1 = 2^(−max_bias/2/n₂), head
    /// h < n₂ takes m0^(h+1) and the others m1^(2(h−n₂)+1) (f32 `powf`).
    /// A max bias of 0 gives slope 1 to every head.
    MaxBias(f32),
    /// One slope per head, as given.
    Slopes(Arc<[f32]>),
}

/// What a head's ALiBi slope multiplies.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum AlibiBias {
    /// The mask's values (ggml's `soft_max_ext`, whose mask holds the
    /// positional bias): v += slope · m.
    #[default]
    Mask,
    /// The distance from the query, with no tensor: v += m + slope · (j − p),
    /// p the query's position (see [`AttentionSoftmax::with_query_offset`]).
    Distance,
}

/// The slopes ggml's `soft_max_ext` gives `heads` heads for `max_bias`.
pub fn alibi_slopes(heads: usize, max_bias: f32) -> Vec<f32> {
    if max_bias <= 0.0 || heads == 0 {
        return vec![1.0; heads];
    }
    let n2 = 1usize << (usize::BITS - 1 - heads.leading_zeros());
    let m0 = 2.0f32.powf(-max_bias / n2 as f32);
    let m1 = 2.0f32.powf(-(max_bias / 2.0) / n2 as f32);
    (0..heads)
        .map(|h| match h < n2 {
            true => m0.powf((h + 1) as f32),
            false => m1.powf((2 * (h - n2) + 1) as f32),
        })
        .collect()
}

/// Options of the attention-score softmax: for a row x of head h and query
/// position p, y = softmax(v) with
/// v_j = s·x_j → c·tanh(v/c) (with a soft-cap) → + slope_h·m_j (a mask) and
/// an optional sink logit per head in the max and the sum; keys hidden by
/// position (causal, window, key length) are written 0 and cost no exp.
///
/// Special values: a mask value of −inf (or a `false` keep-flag) hides the
/// key whatever its score, NaN included; over the visible logits the plain
/// softmax's rules hold (a NaN makes the row NaN, +inf logits share the row);
/// a row with no visible key is 0 (with or without a sink); a NaN sink
/// makes its rows NaN, a +inf sink takes their mass. Under a soft-cap a score
/// of ±inf becomes ±c: hide keys with the mask, not with −inf scores.
#[derive(Clone, Debug)]
pub struct AttentionSoftmax {
    scale: f32,
    soft_cap: Option<f32>,
    causal: bool,
    window: Option<usize>,
    query_offset: Option<i64>,
    alibi: Option<Alibi>,
    alibi_bias: AlibiBias,
    isa: Isa,
    parallelism: Parallelism,
}

impl Default for AttentionSoftmax {
    fn default() -> Self {
        Self::new()
    }
}

impl AttentionSoftmax {
    /// Scale 1, no cap, no positional mask, no ALiBi, the best ISA, `Parallelism::Auto`.
    pub fn new() -> Self {
        Self {
            scale: 1.0,
            soft_cap: None,
            causal: false,
            window: None,
            query_offset: None,
            alibi: None,
            alibi_bias: AlibiBias::Mask,
            isa: Isa::detect(),
            parallelism: Parallelism::Auto,
        }
    }

    /// Multiplies the scores by `scale` first (1/√d, say); any finite value.
    pub fn with_scale(mut self, scale: f32) -> Result<Self, Error> {
        if !scale.is_finite() {
            return Err(invalid("scale", scale as f64));
        }
        self.scale = scale;
        self.logit()?;
        Ok(self)
    }

    /// Caps the scaled scores at ±cap: v = cap · tanh(s·x / cap) (Gemma 2's
    /// 50 on attention, Grok's 30). `cap` finite and > 0, with 2·s/cap
    /// finite (a scale set later is checked against the cap too).
    pub fn with_soft_cap(mut self, cap: f32) -> Result<Self, Error> {
        self.soft_cap = Some(cap);
        self.logit()?;
        Ok(self)
    }

    /// Hides key j from query position p when j > p.
    pub fn with_causal(mut self) -> Self {
        self.causal = true;
        self
    }

    /// Hides key j from query position p when j ≤ p − window (a sliding
    /// window of `window` keys ending at p, with [`Self::with_causal`]).
    pub fn with_window(mut self, window: usize) -> Result<Self, Error> {
        if window == 0 {
            return Err(invalid("window", 0.0));
        }
        self.window = Some(window);
        Ok(self)
    }

    /// Query q sits at position q + offset among the keys. Default: keys −
    /// queries (the last query sees the last key: a KV cache's decode and
    /// prefill; 0 for a square block).
    pub fn with_query_offset(mut self, offset: i64) -> Self {
        self.query_offset = Some(offset);
        self
    }

    /// ALiBi slopes per head (applied as [`Self::with_alibi_bias`] says).
    pub fn with_alibi(mut self, alibi: Alibi) -> Result<Self, Error> {
        match &alibi {
            Alibi::MaxBias(b) if !(b.is_finite() && *b >= 0.0) => {
                return Err(invalid("max_bias", *b as f64))
            }
            Alibi::Slopes(s) => {
                if let Some(bad) = s.iter().find(|v| !v.is_finite()) {
                    return Err(invalid("slope", *bad as f64));
                }
            }
            _ => {}
        }
        self.alibi = Some(alibi);
        Ok(self)
    }

    /// What the ALiBi slope multiplies (default: the mask, as ggml).
    pub fn with_alibi_bias(mut self, bias: AlibiBias) -> Self {
        self.alibi_bias = bias;
        self
    }

    /// Runs on `isa`; an error if this CPU lacks it.
    pub fn with_isa(mut self, isa: Isa) -> Result<Self, Error> {
        if !isa.is_available() {
            return Err(Error::IsaUnavailable(isa));
        }
        self.isa = isa;
        Ok(self)
    }

    /// Where the rows run (default `Parallelism::Auto`).
    pub fn with_parallelism(mut self, parallelism: Parallelism) -> Self {
        self.parallelism = parallelism;
        self
    }

    /// Runs large calls on `pool` (shorthand for `Parallelism::Pool`).
    pub fn with_thread_pool(self, pool: Arc<ThreadPool>) -> Self {
        self.with_parallelism(Parallelism::Pool(pool))
    }

    /// The ISA the rows run on.
    pub fn isa(&self) -> Isa {
        self.isa
    }

    fn logit(&self) -> Result<(Logit, f32), Error> {
        let s = self.scale;
        match self.soft_cap {
            None => Ok((Logit::Scaled(s), s)),
            Some(c) => {
                let k = s / c;
                let ok = c.is_finite() && c > 0.0 && k.is_finite() && (2.0 * k).is_finite();
                if !ok {
                    return Err(invalid("soft_cap", c as f64));
                }
                // A negative scale folds into the cap's sign: c·tanh(k·x) is odd.
                let cap = match k > 0.0 {
                    true => SoftCap::new(k, c),
                    false if k < 0.0 => SoftCap::new(-k, -c),
                    false => return Ok((Logit::Scaled(0.0), 0.0)),
                };
                Ok((Logit::Capped(cap), c * k))
            }
        }
    }

    fn slopes(&self, heads: usize) -> Result<Option<Arc<[f32]>>, Error> {
        match &self.alibi {
            None => Ok(None),
            Some(Alibi::MaxBias(b)) => Ok(Some(alibi_slopes(heads, *b).into())),
            Some(Alibi::Slopes(s)) if s.len() == heads => Ok(Some(s.clone())),
            Some(Alibi::Slopes(s)) => Err(Error::CountMismatch {
                what: "slopes",
                len: s.len(),
                expected: heads,
            }),
        }
    }

    fn positions<'a>(
        &self,
        dims: [usize; 4],
        key_lens: Option<&'a [usize]>,
    ) -> Result<Positions<'a>, Error> {
        if let Some(lens) = key_lens {
            if lens.len() != 1 && lens.len() != dims[0] {
                return Err(Error::CountMismatch {
                    what: "key lengths",
                    len: lens.len(),
                    expected: dims[0],
                });
            }
        }
        let [_, _, queries, keys] = dims;
        Ok(Positions {
            causal: self.causal,
            window: self.window,
            query_offset: self.query_offset.unwrap_or(keys as i64 - queries as i64),
            key_lens,
        })
    }

    /// Checks the options against the call and gives `run` the job.
    fn with_job<R>(
        &self,
        x: Option<Grid<'_>>,
        y: GridMut<'_>,
        inputs: &AttentionInputs<'_>,
        run: impl FnOnce(AttentionForward<'_>) -> R,
    ) -> Result<R, Error> {
        let dims = y.layout.dims;
        let (logit, _) = self.logit()?;
        let slopes = self.slopes(dims[1])?;
        let positions = self.positions(dims, inputs.key_lens)?;
        if let Some(sinks) = inputs.sinks {
            per_head("sinks", sinks.len(), dims[1])?;
        }
        let mask = match inputs.mask {
            Some(m) => {
                broadcasts(m.layout.dims, dims)?;
                Some(Mask {
                    data: m.data,
                    layout: m.layout,
                })
            }
            None => None,
        };
        let alibi_on = match self.alibi_bias {
            AlibiBias::Mask => AlibiOn::Mask,
            AlibiBias::Distance => AlibiOn::Distance,
        };
        Ok(run(AttentionForward {
            logit,
            x,
            y,
            mask,
            slopes: slopes.as_deref(),
            alibi_on,
            sinks: inputs.sinks,
            positions,
        }))
    }

    fn forward(
        &self,
        x: Option<Grid<'_>>,
        y: GridMut<'_>,
        inputs: &AttentionInputs<'_>,
    ) -> Result<(), Error> {
        let cols = y.layout.keys();
        self.with_job(x, y, inputs, |job| {
            batch::run(job, cols, self.isa, &self.parallelism)
        })
    }

    /// The attention softmax of `x` into `y` (same dims).
    pub fn softmax<I: Element, O: Element>(
        &self,
        x: Scores<'_, I>,
        y: ScoresMut<'_, O>,
        inputs: &AttentionInputs<'_>,
    ) -> Result<(), Error> {
        same_dims("output", y.dims(), x.dims())?;
        self.forward(Some(x.grid()), y.grid(), inputs)
    }

    /// The attention softmax of `x`, in place.
    pub fn softmax_in_place<T: Element>(
        &self,
        x: ScoresMut<'_, T>,
        inputs: &AttentionInputs<'_>,
    ) -> Result<(), Error> {
        self.forward(None, x.grid(), inputs)
    }

    /// The backward pass: from the forward output `y` and the gradient `dy`
    /// into `dx`, the gradient of the raw scores (through the scale and the
    /// soft-cap, whose slope needs the scores `x`). With `sink_grads` (one
    /// per head), the gradient of each head's sink is written there: the
    /// sum over its rows of −p_sink·⟨dy, y⟩, p_sink = 1 − Σy. Hidden keys get 0.
    pub fn backward<T: Element>(
        &self,
        y: Scores<'_, T>,
        dy: Scores<'_, T>,
        dx: ScoresMut<'_, T>,
        x: Option<Scores<'_, T>>,
        sink_grads: Option<&mut [f32]>,
    ) -> Result<(), Error> {
        same_dims("dy", dy.dims(), dx.dims())?;
        self.backward_any(y, Some(dy.grid()), dx, x, sink_grads)
    }

    /// [`Self::backward`] in place: `dx` holds dy and receives dx.
    pub fn backward_in_place<T: Element>(
        &self,
        y: Scores<'_, T>,
        dx: ScoresMut<'_, T>,
        x: Option<Scores<'_, T>>,
        sink_grads: Option<&mut [f32]>,
    ) -> Result<(), Error> {
        self.backward_any(y, None, dx, x, sink_grads)
    }

    fn backward_any<T: Element>(
        &self,
        y: Scores<'_, T>,
        dy: Option<Grid<'_>>,
        dx: ScoresMut<'_, T>,
        x: Option<Scores<'_, T>>,
        sink_grads: Option<&mut [f32]>,
    ) -> Result<(), Error> {
        let dims = dx.dims();
        same_dims("y", y.dims(), dims)?;
        if let Some(x) = &x {
            same_dims("scores", x.dims(), dims)?;
        }
        let (logit, factor) = self.logit()?;
        if matches!(logit, Logit::Capped(_)) && x.is_none() {
            return Err(Error::ScoresRequired);
        }
        if let Some(g) = &sink_grads {
            per_head("sink gradients", g.len(), dims[1])?;
        }
        let job = AttentionBackward {
            logit,
            factor,
            x: x.map(|x| x.grid()),
            y: y.grid(),
            dy,
            dx: dx.grid(),
            sink_grads: sink_grads.is_some(),
        };
        let sums = batch::run(job, dims[3], self.isa, &self.parallelism);
        if let Some(out) = sink_grads {
            for (o, s) in out.iter_mut().zip(&sums) {
                *o = *s as f32;
            }
        }
        Ok(())
    }

    /// Runs a forward call with a kernel token of the caller's choosing,
    /// serially: the tests' hook for pulp's emulated wide tokens.
    #[doc(hidden)]
    pub fn softmax_with_arch<A: softmax_kernels::arch::Arch, I: Element, O: Element>(
        &self,
        arch: A,
        x: Option<Scores<'_, I>>,
        y: ScoresMut<'_, O>,
        inputs: &AttentionInputs<'_>,
    ) -> Result<(), Error> {
        if let Some(x) = &x {
            same_dims("output", y.dims(), x.dims())?;
        }
        self.with_job(x.map(|x| x.grid()), y.grid(), inputs, |job| {
            let mut scratch = vec![0.0f32; softmax_kernels::Job::scratch_len(&job)];
            softmax_kernels::Job::run(job, arch, &mut scratch)
        })
    }
}

fn invalid(option: &'static str, value: f64) -> Error {
    Error::InvalidAttentionOption { option, value }
}

fn per_head(what: &'static str, len: usize, heads: usize) -> Result<(), Error> {
    match len == heads {
        true => Ok(()),
        false => Err(Error::CountMismatch {
            what,
            len,
            expected: heads,
        }),
    }
}

fn same_dims(what: &'static str, dims: [usize; 4], scores: [usize; 4]) -> Result<(), Error> {
    match dims == scores {
        true => Ok(()),
        false => Err(Error::TensorShapeMismatch { what, dims, scores }),
    }
}

/// Whether a mask of `mask` dims broadcasts over scores of `scores` dims.
fn broadcasts(mask: [usize; 4], scores: [usize; 4]) -> Result<(), Error> {
    let divides = |m: usize, s: usize| s.is_multiple_of(m);
    let ok = divides(mask[0], scores[0])
        && divides(mask[1], scores[1])
        && (mask[2] == scores[2] || mask[2] == 1)
        && mask[3] == scores[3];
    match ok {
        true => Ok(()),
        false => Err(Error::TensorShapeMismatch {
            what: "mask",
            dims: mask,
            scores,
        }),
    }
}
