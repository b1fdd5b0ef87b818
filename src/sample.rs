//! Sampling tokens from logits: temperature, top-k, top-p, min-p and a logit
//! bias, drawn by inverse CDF or Gumbel-max from a counter-based random source;
//! Gumbel-softmax; soft-argmax.

use crate::batch::{self, Parallelism};
use crate::rows::{output_len, same_len, same_shape};
use crate::{Element, Error, Isa, Rows, RowsMut, Softmax};
use rayon::ThreadPool;
use softmax_kernels::random::Stream;
use softmax_kernels::{Drawn, Sample, SampleOptions, Temperature};
use std::sync::Arc;

pub use softmax_kernels::{Draw, TokenLogprob};

/// Draws tokens from rows of logits. The options apply in this fixed order,
/// as in Hugging Face's generation:
///
/// 0. **soft-cap**, when set: x ← c · tanh(x / c) (Gemma 2's final-logit cap;
///    −inf stays −inf, +inf becomes c), as a model computes its logits;
/// 1. **logit bias** v = x + bias (a bias of −inf bans the token);
/// 2. **temperature** t: z = v / t (t = 0: the first index of the largest v,
///    whatever the other options);
/// 3. **top-k**: keep the logits ≥ the k-th largest (ties at the cut are all kept);
/// 4. **top-p**: over what top-k kept, keep the largest logits until their
///    probability reaches p (ties at the cut are all kept);
/// 5. **min-p**: keep the tokens whose probability is ≥ min_p × the largest
///    (z ≥ max z + ln min_p, computed on logits, no exp);
/// 6. **draw** one token from softmax(z) over what is kept ([`Draw`]).
///
/// Randomness comes from a counter-based generator keyed by (seed, row, step):
/// row i of a batch (row 0 for a single row) at `step`. The same call gives
/// the same token whatever the thread count; across ISAs, see the README.
#[derive(Clone, Debug)]
pub struct Sampler {
    softmax: Softmax,
    soft_cap: Option<f32>,
    temperature: Option<Temperature>,
    top_k: Option<usize>,
    top_p: f32,
    min_p: f32,
    bias: Vec<(u32, f32)>,
    draw: Draw,
    seed: u64,
}

impl Sampler {
    /// Temperature 1, no truncation, no bias, [`Draw::InverseCdf`], the best
    /// ISA of this CPU, `Parallelism::Auto`.
    pub fn new(seed: u64) -> Self {
        Self {
            softmax: Softmax::new(),
            soft_cap: None,
            temperature: Some(Temperature::default()),
            top_k: None,
            top_p: 1.0,
            min_p: 0.0,
            bias: Vec::new(),
            draw: Draw::InverseCdf,
            seed,
        }
    }

    /// Samples softmax(x / t); t = 0 takes the argmax (the lowest index on a tie).
    /// `t` must be 0 or finite and at least `f32::MIN_POSITIVE`.
    pub fn with_temperature(mut self, t: f32) -> Result<Self, Error> {
        self.temperature = match t {
            0.0 => None,
            _ if t.is_finite() && t >= f32::MIN_POSITIVE => Some(Temperature::new(t)),
            _ => return Err(Error::InvalidTemperature(t)),
        };
        Ok(self)
    }

    /// Caps the logits first: x ← c · tanh(x / c), c finite and > 0 with 2/c
    /// finite. Each row is capped once into working space, in f32 with the
    /// same bits on every ISA, and sampled from there; log-probabilities are
    /// those of the capped logits. At t = 0 the argmax is taken over the
    /// capped logits, where logits far above c may tie at c (the lowest index wins).
    pub fn with_soft_cap(mut self, c: f32) -> Result<Self, Error> {
        crate::options::fold_soft_cap(c, 1.0)?;
        self.soft_cap = Some(c);
        Ok(self)
    }

    /// Keeps the k largest logits (and any tied with the k-th); k ≥ 1.
    pub fn with_top_k(mut self, k: usize) -> Result<Self, Error> {
        if k == 0 {
            return Err(Error::InvalidTopK(k));
        }
        self.top_k = Some(k);
        Ok(self)
    }

    /// Nucleus sampling: p in (0, 1]; 1 keeps everything.
    pub fn with_top_p(mut self, p: f32) -> Result<Self, Error> {
        if !(p > 0.0 && p <= 1.0) {
            return Err(Error::InvalidTopP(p));
        }
        self.top_p = p;
        Ok(self)
    }

    /// Drops tokens whose probability is below min_p × the largest; min_p in
    /// [0, 1], 0 keeps everything.
    pub fn with_min_p(mut self, min_p: f32) -> Result<Self, Error> {
        if !(0.0..=1.0).contains(&min_p) {
            return Err(Error::InvalidMinP(min_p));
        }
        self.min_p = min_p;
        Ok(self)
    }

    /// Adds `bias` to the logit of `token` for each pair (several pairs for one
    /// token add up); −inf bans the token. Replaces any earlier bias and bans.
    /// A NaN or +inf bias is an error; a token past the row is an error at the call.
    pub fn with_logit_bias(mut self, bias: &[(usize, f32)]) -> Result<Self, Error> {
        let mut entries = Vec::with_capacity(bias.len());
        for &(token, b) in bias {
            if b.is_nan() || b == f32::INFINITY {
                return Err(Error::InvalidBias { token, bias: b });
            }
            let index = u32::try_from(token).map_err(|_| Error::BiasOutOfRange {
                token,
                cols: u32::MAX as usize,
            })?;
            entries.push((index, b));
        }
        entries.sort_by_key(|e| e.0);
        let mut merged: Vec<(u32, f32)> = Vec::with_capacity(entries.len());
        for (i, b) in entries {
            match merged.last_mut() {
                Some(last) if last.0 == i => {
                    last.1 = if last.1 == f32::NEG_INFINITY || b == f32::NEG_INFINITY {
                        f32::NEG_INFINITY
                    } else {
                        last.1 + b
                    }
                }
                _ => merged.push((i, b)),
            }
        }
        self.bias = merged;
        Ok(self)
    }

    /// Bans `tokens` (a bias of −inf), keeping the other bias entries.
    pub fn ban(self, tokens: &[usize]) -> Result<Self, Error> {
        let mut all: Vec<(usize, f32)> = self.bias.iter().map(|&(i, b)| (i as usize, b)).collect();
        all.extend(tokens.iter().map(|&t| (t, f32::NEG_INFINITY)));
        self.with_logit_bias(&all)
    }

    /// How the token is drawn from what truncation keeps (default `Draw::InverseCdf`).
    pub fn with_draw(mut self, draw: Draw) -> Self {
        self.draw = draw;
        self
    }

    /// The seed of the random streams: row i at step s draws from (seed, i, s).
    pub fn with_seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// Runs on `isa`; an error if this CPU lacks it.
    pub fn with_isa(mut self, isa: Isa) -> Result<Self, Error> {
        self.softmax = self.softmax.with_isa(isa)?;
        Ok(self)
    }

    /// Where the rows of a batch run (default `Parallelism::Auto`).
    pub fn with_parallelism(mut self, parallelism: Parallelism) -> Self {
        self.softmax = self.softmax.with_parallelism(parallelism);
        self
    }

    /// Runs large batches on `pool`.
    pub fn with_thread_pool(self, pool: Arc<ThreadPool>) -> Self {
        self.with_parallelism(Parallelism::Pool(pool))
    }

    /// The soft-cap c, if any.
    pub fn soft_cap(&self) -> Option<f32> {
        self.soft_cap
    }
    /// The temperature t (0: the argmax).
    pub fn temperature(&self) -> f32 {
        self.temperature.map_or(0.0, |t| t.get())
    }
    /// k of top-k, if set.
    pub fn top_k(&self) -> Option<usize> {
        self.top_k
    }
    /// p of top-p (1: off).
    pub fn top_p(&self) -> f32 {
        self.top_p
    }
    /// min-p (0: off).
    pub fn min_p(&self) -> f32 {
        self.min_p
    }
    /// How the token is drawn.
    pub fn draw(&self) -> Draw {
        self.draw
    }
    /// The seed of the random streams.
    pub fn seed(&self) -> u64 {
        self.seed
    }
    /// The ISA the rows run on.
    pub fn isa(&self) -> Isa {
        self.softmax.isa()
    }
    /// Where the rows of a batch run.
    pub fn parallelism(&self) -> &Parallelism {
        self.softmax.parallelism()
    }

    /// One token from `logits` at `step` (the stream of row 0).
    pub fn sample<T: Element>(&self, logits: &[T], step: u64) -> Result<usize, Error> {
        let n = logits.len();
        let mut token = [0usize];
        self.rows(Rows::new(logits, 1, n, n)?, step, &mut token, None, None)?;
        Ok(token[0])
    }

    /// [`Sampler::sample`], with the drawn token's log-probability and the
    /// `top.len()` most likely tokens with theirs, most likely first (the lower
    /// index first on a tie). Log-probabilities are those of the model,
    /// ln softmax(x + bias) at t = 1 before truncation, each computed as
    /// v − logsumexp(v) (never the log of a rounded probability).
    pub fn sample_with_logprobs<T: Element>(
        &self,
        logits: &[T],
        step: u64,
        top: &mut [TokenLogprob],
    ) -> Result<TokenLogprob, Error> {
        let n = logits.len();
        let mut drawn = [TokenLogprob::default()];
        let rows = Rows::new(logits, 1, n, n)?;
        self.rows_with_logprobs(rows, step, &mut drawn, top, top.len())?;
        Ok(drawn[0])
    }

    /// One token per row into `tokens` (at least one per row); row i draws
    /// from the stream (seed, i, step).
    pub fn sample_rows<T: Element>(
        &self,
        logits: Rows<'_, T>,
        step: u64,
        tokens: &mut [usize],
    ) -> Result<(), Error> {
        self.rows(logits, step, tokens, None, None)
    }

    /// The distribution a draw from `logits` samples: ln of the truncated,
    /// renormalised softmax(v / t) into `out` (as long as `logits`), −inf for
    /// every token the options drop. At t = 0: 0 at the argmax, −inf elsewhere.
    /// For speculative decoding and for checking a truncation; a full pass
    /// that writes a row, unlike [`Sampler::sample`].
    pub fn truncated_logprobs<T: Element>(
        &self,
        logits: &[T],
        out: &mut [f32],
    ) -> Result<(), Error> {
        same_len(logits.len(), out.len())?;
        let n = logits.len();
        let mut token = [0usize];
        let mut staged = vec![0.0f32; n];
        let rows = Rows::new(logits, 1, n, n)?;
        self.rows(rows, 0, &mut token, None, Some(&mut staged))?;
        out.copy_from_slice(&staged);
        Ok(())
    }

    /// [`Sampler::sample_rows`] with log-probabilities: the drawn token of row i
    /// into `drawn[i]`, its `top_n` most likely tokens into `top[i·top_n ..]`.
    pub fn sample_rows_with_logprobs<T: Element>(
        &self,
        logits: Rows<'_, T>,
        step: u64,
        drawn: &mut [TokenLogprob],
        top: &mut [TokenLogprob],
        top_n: usize,
    ) -> Result<(), Error> {
        self.rows_with_logprobs(logits, step, drawn, top, top_n)
    }

    fn rows_with_logprobs<T: Element>(
        &self,
        logits: Rows<'_, T>,
        step: u64,
        drawn: &mut [TokenLogprob],
        top: &mut [TokenLogprob],
        top_n: usize,
    ) -> Result<(), Error> {
        let rows = logits.rows;
        output_len(drawn.len(), rows)?;
        if top_n > logits.cols {
            return Err(Error::TooManyLogprobs {
                requested: top_n,
                cols: logits.cols,
            });
        }
        let need = rows * top_n;
        if top.len() < need {
            // Counted in rows: whole top-n lists.
            return Err(Error::OutputTooShort {
                len: top.len() / top_n,
                rows,
            });
        }
        let mut tokens = vec![0usize; rows];
        let mut logprobs = vec![0.0f32; rows];
        let mut staged = vec![TokenLogprob::default(); need];
        self.rows(
            logits,
            step,
            &mut tokens,
            Some((&mut logprobs, &mut staged, top_n)),
            None,
        )?;
        for (d, (&token, &logprob)) in drawn.iter_mut().zip(tokens.iter().zip(&logprobs)) {
            *d = TokenLogprob { token, logprob };
        }
        top[..need].copy_from_slice(&staged);
        Ok(())
    }

    /// Validates, runs the batch, and writes `tokens` (and the log-probabilities)
    /// only when every row drew a token.
    fn rows<T: Element>(
        &self,
        logits: Rows<'_, T>,
        step: u64,
        tokens: &mut [usize],
        extra: Option<(&mut [f32], &mut [TokenLogprob], usize)>,
        kept: Option<&mut [f32]>,
    ) -> Result<(), Error> {
        let (rows, cols) = (logits.rows, logits.cols);
        output_len(tokens.len(), rows)?;
        if rows > 0 && cols == 0 {
            return Err(Error::EmptyRow);
        }
        if let Some(&(token, _)) = self.bias.last() {
            if token as usize >= cols {
                return Err(Error::BiasOutOfRange {
                    token: token as usize,
                    cols,
                });
            }
        }
        let mut outcomes = vec![Drawn::NoFinite; rows];
        let logprob = extra.is_some();
        let (logprobs, top, top_n) = match extra {
            Some((l, t, n)) => (Some(l), t, n),
            None => (None, &mut [][..], 0),
        };
        let job = Sample {
            options: self.options(step, logprob),
            x: logits.kernel_view(),
            first_row: 0,
            out: &mut outcomes,
            top,
            top_n,
            kept,
        };
        batch::run(job, cols, self.softmax.isa, &self.softmax.parallelism);
        for (row, outcome) in outcomes.iter().enumerate() {
            match *outcome {
                Drawn::Token { .. } => {}
                Drawn::Nan => return Err(Error::NanLogit { row }),
                Drawn::NoFinite => return Err(Error::NoFiniteLogit { row }),
            }
        }
        let mut logprobs = logprobs;
        for (row, outcome) in outcomes.into_iter().enumerate() {
            if let Drawn::Token { index, logprob } = outcome {
                tokens[row] = index;
                if let Some(l) = logprobs.as_deref_mut() {
                    l[row] = logprob.unwrap_or(f32::NAN);
                }
            }
        }
        Ok(())
    }

    /// The kernel options of a draw at `step`: the hook through which the
    /// tests run the sampling kernels on the emulated wide tokens.
    #[doc(hidden)]
    pub fn kernel_options(&self, step: u64) -> SampleOptions<'_> {
        self.options(step, false)
    }

    fn options(&self, step: u64, logprob: bool) -> SampleOptions<'_> {
        SampleOptions {
            // Checked when the cap was set.
            cap: self
                .soft_cap
                .and_then(|c| crate::options::fold_soft_cap(c, 1.0).ok()),
            temperature: self.temperature,
            top_k: self.top_k.unwrap_or(usize::MAX),
            top_p: self.top_p as f64,
            min_p: self.min_p as f64,
            bias: &self.bias,
            draw: self.draw,
            seed: self.seed,
            step,
            logprob,
        }
    }
}

/// The Gumbel-max trick: argmax(x + G), G a standard Gumbel variate per token
/// from the stream (seed, 0, step): an exact sample of softmax(x). The same
/// token as `Sampler::new(seed).with_draw(Draw::GumbelMax).sample(x, step)`.
pub fn gumbel_max<T: Element>(logits: &[T], seed: u64, step: u64) -> Result<usize, Error> {
    Sampler::new(seed)
        .with_draw(Draw::GumbelMax)
        .sample(logits, step)
}

/// Gumbel-softmax (the concrete / relaxed one-hot distribution):
/// y = softmax((x + G)/τ), G a standard Gumbel variate per token from the stream
/// (seed, row, step); with `hard`, y is the one-hot of argmax(x + G) instead
/// (the straight-through estimator's forward value; its backward pass is the
/// softmax backward of the soft y, which a `hard(false)` call returns).
#[derive(Clone, Debug)]
pub struct GumbelSoftmax {
    softmax: Softmax,
    hard: bool,
    seed: u64,
}

impl GumbelSoftmax {
    /// τ = 1, soft, the best ISA of this CPU.
    pub fn new(seed: u64) -> Self {
        Self {
            softmax: Softmax::new(),
            hard: false,
            seed,
        }
    }

    /// The relaxation temperature τ: finite and at least `f32::MIN_POSITIVE`.
    pub fn with_tau(mut self, tau: f32) -> Result<Self, Error> {
        self.softmax = self.softmax.with_temperature(tau)?;
        Ok(self)
    }

    /// Writes the one-hot of the drawn token instead of the relaxed y.
    pub fn with_hard(mut self, hard: bool) -> Self {
        self.hard = hard;
        self
    }

    /// Runs on `isa`; an error if this CPU lacks it.
    pub fn with_isa(mut self, isa: Isa) -> Result<Self, Error> {
        self.softmax = self.softmax.with_isa(isa)?;
        Ok(self)
    }

    /// The relaxation temperature τ.
    pub fn tau(&self) -> f32 {
        self.softmax.temperature()
    }
    /// Whether the one-hot is written.
    pub fn hard(&self) -> bool {
        self.hard
    }
    /// The seed of the random streams.
    pub fn seed(&self) -> u64 {
        self.seed
    }
    /// The ISA the rows run on.
    pub fn isa(&self) -> Isa {
        self.softmax.isa()
    }

    /// y = softmax((x + G)/τ) (or its hard one-hot) at `step`, as row 0;
    /// returns argmax(x + G), the lowest index on a tie.
    pub fn sample<I: Element, O: Element>(
        &self,
        x: &[I],
        y: &mut [O],
        step: u64,
    ) -> Result<usize, Error> {
        same_len(x.len(), y.len())?;
        let n = x.len();
        let mut index = [0usize];
        let (x, y) = (Rows::new(x, 1, n, n)?, RowsMut::new(y, 1, n, n)?);
        self.sample_rows(x, y, step, &mut index)?;
        Ok(index[0])
    }

    /// Each row of `x` into the same row of `y`; row i uses the stream
    /// (seed, i, step); the argmax of each row into `indices`.
    pub fn sample_rows<I: Element, O: Element>(
        &self,
        x: Rows<'_, I>,
        y: RowsMut<'_, O>,
        step: u64,
        indices: &mut [usize],
    ) -> Result<(), Error> {
        same_shape((x.rows, x.cols), (y.rows, y.cols))?;
        output_len(indices.len(), x.rows)?;
        // Every row is perturbed (and checked) before anything is written.
        let mut perturbed = vec![0.0f32; x.rows * x.cols];
        let mut argmax = vec![0usize; x.rows];
        for (r, index) in argmax.iter_mut().enumerate() {
            let xi = &x.data[r * x.stride..r * x.stride + x.cols];
            let p = &mut perturbed[r * x.cols..(r + 1) * x.cols];
            *index = perturb(xi, p, r, Stream::new(self.seed, r as u64, step))?;
        }
        for (r, &index) in argmax.iter().enumerate() {
            let p = &perturbed[r * x.cols..(r + 1) * x.cols];
            let yi = &mut y.data[r * y.stride..r * y.stride + y.cols];
            self.write(p, yi, index)?;
        }
        indices[..x.rows].copy_from_slice(&argmax);
        Ok(())
    }

    fn write<O: Element>(&self, perturbed: &[f32], y: &mut [O], index: usize) -> Result<(), Error> {
        if self.hard {
            let mut y = O::any_mut(y);
            for i in 0..y.len() {
                y.set(i, if i == index { 1.0 } else { 0.0 });
            }
            return Ok(());
        }
        self.softmax.softmax(perturbed, y)
    }
}

/// x + G into `out` (rounded to f32); returns argmax(x + G), the lowest index on a tie.
fn perturb<T: Element>(
    x: &[T],
    out: &mut [f32],
    row: usize,
    stream: Stream,
) -> Result<usize, Error> {
    if x.is_empty() {
        return Err(Error::EmptyRow);
    }
    let xs = T::any(x);
    let mut best = (f64::NEG_INFINITY, None);
    for (i, o) in out.iter_mut().enumerate() {
        let v = xs.get(i);
        if v.is_nan() {
            return Err(Error::NanLogit { row });
        }
        let g = v + stream.gumbel(i as u64);
        *o = g as f32;
        if g > best.0 {
            best = (g, Some(i));
        }
    }
    best.1.ok_or(Error::NoFiniteLogit { row })
}

impl Softmax {
    /// The expected index under softmax(x / t): Σᵢ i · softmax(x/t)ᵢ, in f64,
    /// rounded once. NaN for a row holding a NaN or entirely −inf; an error for
    /// an empty row.
    pub fn soft_argmax<T: Element>(&self, x: &[T]) -> Result<f32, Error> {
        let mut out = [0.0f32];
        let n = x.len();
        self.soft_argmax_rows(Rows::new(x, 1, n, n)?, &mut out)?;
        Ok(out[0])
    }

    /// [`Softmax::soft_argmax`] of each row into `out` (at least one per row).
    pub fn soft_argmax_rows<T: Element>(
        &self,
        x: Rows<'_, T>,
        out: &mut [f32],
    ) -> Result<(), Error> {
        output_len(out.len(), x.rows)?;
        if x.rows > 0 && x.cols == 0 {
            return Err(Error::EmptyRow);
        }
        let mut y = vec![0.0f32; x.rows * x.cols];
        let (rows, cols) = (x.rows, x.cols);
        self.softmax_rows(x, RowsMut::new(&mut y, rows, cols, cols)?)?;
        for (r, o) in out.iter_mut().take(rows).enumerate() {
            let yi = &y[r * cols..(r + 1) * cols];
            let (mut mass, mut moment) = (0.0f64, 0.0f64);
            for (i, &p) in yi.iter().enumerate() {
                mass += p as f64;
                moment += i as f64 * p as f64;
            }
            *o = if mass > 0.0 {
                (moment / mass) as f32
            } else {
                f32::NAN
            };
        }
        Ok(())
    }
}
