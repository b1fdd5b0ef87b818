//! Sampling one token from one f32 row, for the report and the criterion
//! benches: the crate's `Sampler` in the
//! configurations an inference engine uses, beside two yardsticks measured in
//! the same run:
//! - the forward softmax of the row (out of place, `Algorithm::Auto`, the
//!   detected ISA): what every sampler is timed against, and
//! - a full-sort sampler written here the way engines write one: scale by 1/t,
//!   sort every (value, index) pair, keep the top k, softmax over them, cut at
//!   cumulative probability p, draw with one uniform.
//!
//! ```text
//! logits  x ~ N(0, 2²), xorshift64* + Box-Muller, then PEAKS at fixed values on
//!         tokens spread by splitmix64: a confident model over a long tail
//! cases   t = 0.8 throughout; top-k 50 + top-p 0.9 (inverse CDF, Gumbel-max);
//!         no truncation (both draws); min-p 0.05 alone; top-p 0.9 alone
//! check   a sampler: the kept set of truncated_logprobs is the one a full
//!         sort in f64 finds; DRAWS draws, every token inside it, and each
//!         kept token with p ≥ 1% (and the rest, pooled) drawn as often as p
//!         says within Z_LIMIT standard errors; where the draw does not depend
//!         on the ISA, the first ISA_STEPS tokens equal the scalar ISA's
//!         the softmax: vs the scalar ISA, |Δ| ≤ 1e-6·max(1,|ref|)
//!         the full sort: its kept set is the crate's (top-k + top-p) and its
//!         probabilities are within 1e-5 of exp(truncated_logprobs)
//! ```
//! The reference reuses one scratch buffer rather than allocating per call,
//! which only flatters it.

use crate::timing::{median, seconds_of};
use crate::workload::{splitmix64 as mix, xorshift64_star};
use softmax::{Draw, Isa, Parallelism, Sampler, Softmax};

/// The row lengths of the sampling table: a 128256-token vocabulary, and a
/// 32000-token one for `--quick`.
pub const SAMPLING_COLS: usize = 128256;
pub const QUICK_SAMPLING_COLS: usize = 32000;
pub const TEMPERATURE: f32 = 0.8;
pub const TOP_K: usize = 50;
pub const TOP_P: f32 = 0.9;
pub const MIN_P: f32 = 0.05;
pub const SEED: u64 = 42;
/// The bulk of the logits: N(0, LOGIT_SIGMA²).
pub const LOGIT_SIGMA: f32 = 2.0;
/// Logits a few tokens get instead: the model's favourites.
pub const PEAKS: [f32; 8] = [13.0, 12.0, 11.5, 11.0, 10.5, 10.0, 9.5, 9.0];
/// Targets from the issue, for top-k + top-p with the inverse CDF: at most
/// this many forward softmaxes of the same row, ...
pub const MAX_TIME_VS_SOFTMAX: f64 = 2.0;
/// ... and at least this many times faster than the full-sort sampler.
pub const MIN_SPEEDUP_VS_FULL_SORT: f64 = 10.0;
/// Draws per sampler check, and how far (in standard errors of a binomial
/// count) each frequency may stray from its probability.
pub const DRAWS: u64 = 200;
pub const Z_LIMIT: f64 = 5.0;
/// Draws compared with the scalar ISA's where they must agree.
pub const ISA_STEPS: u64 = 8;
/// The forward softmax against the scalar ISA, as in the main table.
pub const SOFTMAX_TOLERANCE: f64 = 1e-6;
/// The full sort's f32 probabilities against the crate's f64 ones.
pub const REFERENCE_TOLERANCE: f64 = 1e-5;

/// The draws the report times. Its own enum, not `softmax::Draw` (which is
/// non-exhaustive), so every match over the cases is exhaustive.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum By {
    InverseCdf,
    GumbelMax,
}

impl By {
    fn draw(self) -> Draw {
        match self {
            By::InverseCdf => Draw::InverseCdf,
            By::GumbelMax => Draw::GumbelMax,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Case {
    /// The yardstick: `Softmax::softmax`, out of place.
    Softmax,
    /// top-k 50 + top-p 0.9: the issue's target configuration.
    TopKTopP(By),
    /// No truncation.
    FullRow(By),
    /// min-p 0.05 alone (inverse CDF).
    MinP,
    /// top-p 0.9 alone (inverse CDF).
    TopP,
    /// The full-sort sampler (top-k 50 + top-p 0.9).
    FullSort,
}

impl Case {
    pub const ALL: [Case; 8] = [
        Case::Softmax,
        Case::TopKTopP(By::InverseCdf),
        Case::TopKTopP(By::GumbelMax),
        Case::FullRow(By::InverseCdf),
        Case::FullRow(By::GumbelMax),
        Case::MinP,
        Case::TopP,
        Case::FullSort,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Case::Softmax => "softmax",
            Case::TopKTopP(By::InverseCdf) => "top-k+top-p/inverse-cdf",
            Case::TopKTopP(By::GumbelMax) => "top-k+top-p/gumbel-max",
            Case::FullRow(By::InverseCdf) => "full-row/inverse-cdf",
            Case::FullRow(By::GumbelMax) => "full-row/gumbel-max",
            Case::MinP => "min-p/inverse-cdf",
            Case::TopP => "top-p/inverse-cdf",
            Case::FullSort => "full-sort-reference",
        }
    }

    /// How the token is drawn ("auto" for the softmax: its algorithm).
    pub fn method(self) -> &'static str {
        match self {
            Case::Softmax => "auto",
            Case::TopKTopP(By::InverseCdf)
            | Case::FullRow(By::InverseCdf)
            | Case::MinP
            | Case::TopP => "inverse-cdf",
            Case::TopKTopP(By::GumbelMax) | Case::FullRow(By::GumbelMax) => "gumbel-max",
            Case::FullSort => "sort",
        }
    }

    /// f32 bytes per element: the softmax reads and writes the row, a sampler reads it.
    pub fn bytes_per_element(self) -> u64 {
        match self {
            Case::Softmax => 8,
            _ => 4,
        }
    }

    /// The largest error `check` may return (see the module comment).
    pub fn tolerance(self) -> f64 {
        match self {
            Case::Softmax => SOFTMAX_TOLERANCE,
            Case::FullSort => REFERENCE_TOLERANCE,
            _ => Z_LIMIT,
        }
    }

    /// Whether the drawn token is the same on every ISA: only draws that use
    /// the per-block f32 sums (the full row by inverse CDF, top-p without
    /// top-k) may differ.
    fn isa_independent(self) -> bool {
        matches!(
            self,
            Case::TopKTopP(_) | Case::FullRow(By::GumbelMax) | Case::MinP
        )
    }

    /// The sampler of this case (None for the two yardsticks) on `isa`.
    pub fn sampler(self, isa: Isa) -> Option<Sampler> {
        let draw = match self {
            Case::TopKTopP(by) | Case::FullRow(by) => by.draw(),
            _ => Draw::InverseCdf,
        };
        let base = Sampler::new(SEED)
            .with_draw(draw)
            .with_temperature(TEMPERATURE)
            .and_then(|s| s.with_isa(isa))
            .expect("valid options on an available ISA")
            .with_parallelism(Parallelism::Serial);
        let sampler = match self {
            Case::Softmax | Case::FullSort => return None,
            Case::TopKTopP(_) => base.with_top_k(TOP_K).and_then(|s| s.with_top_p(TOP_P)),
            Case::FullRow(_) => Ok(base),
            Case::MinP => base.with_min_p(MIN_P),
            Case::TopP => base.with_top_p(TOP_P),
        };
        Some(sampler.expect("valid options"))
    }
}

/// Uniform in [0, 1) from 53 bits.
fn unit(bits: u64) -> f64 {
    (bits >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
}

/// N(0, LOGIT_SIGMA²) from a seeded xorshift64* (Box-Muller, f64), then
/// PEAKS on distinct tokens picked by splitmix64.
pub fn realistic_logits(cols: usize, seed: u64) -> Vec<f32> {
    let mut state = mix(seed) | 1;
    let mut next = || unit(xorshift64_star(&mut state));
    let mut x: Vec<f32> = (0..cols)
        .map(|_| {
            let (u, v) = (1.0 - next(), next());
            let normal = (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos();
            (normal * LOGIT_SIGMA as f64) as f32
        })
        .collect();
    let mut taken: Vec<usize> = Vec::new();
    let mut key = seed;
    for &peak in PEAKS.iter().take(cols) {
        let token = loop {
            key = key.wrapping_add(1);
            let token = (mix(key) % cols as u64) as usize;
            if !taken.contains(&token) {
                break token;
            }
        };
        taken.push(token);
        x[token] = peak;
    }
    x
}

/// The sampler engines write: scale, sort everything, top-k, softmax over
/// the kept, cumulative top-p cut, one uniform. f32 throughout, as they are.
pub struct FullSort {
    /// (x / t, token), sorted by value, largest first.
    pairs: Vec<(f32, u32)>,
    /// Probabilities of the first `kept` pairs, renormalised over them.
    probs: Vec<f32>,
    kept: usize,
}

impl Default for FullSort {
    fn default() -> Self {
        Self::new()
    }
}

impl FullSort {
    pub fn new() -> Self {
        Self {
            pairs: Vec::new(),
            probs: Vec::new(),
            kept: 0,
        }
    }

    /// Truncates `logits` with t = TEMPERATURE, k = TOP_K, p = TOP_P; returns
    /// the kept (token, probability) pairs, most likely first.
    pub fn truncate(&mut self, logits: &[f32]) -> impl Iterator<Item = (usize, f32)> + '_ {
        self.pairs.clear();
        self.pairs.extend(
            logits
                .iter()
                .enumerate()
                .map(|(i, &x)| (x / TEMPERATURE, i as u32)),
        );
        self.pairs.sort_unstable_by(|a, b| b.0.total_cmp(&a.0));
        let top = &self.pairs[..TOP_K.min(self.pairs.len())];
        let max = top[0].0;
        self.probs.clear();
        self.probs.extend(top.iter().map(|&(z, _)| (z - max).exp()));
        let sum: f32 = self.probs.iter().sum();
        self.probs.iter_mut().for_each(|p| *p /= sum);
        let mut cumulative = 0.0f32;
        self.kept = self.probs.len();
        for (j, &p) in self.probs.iter().enumerate() {
            cumulative += p;
            if cumulative >= TOP_P {
                self.kept = j + 1;
                break;
            }
        }
        let kept_mass: f32 = self.probs[..self.kept].iter().sum();
        self.probs.truncate(self.kept);
        self.probs.iter_mut().for_each(|p| *p /= kept_mass);
        let pairs = &self.pairs;
        self.probs
            .iter()
            .enumerate()
            .map(|(j, &p)| (pairs[j].1 as usize, p))
    }

    /// One token: truncate, then walk the kept probabilities with one uniform
    /// keyed by `step`.
    pub fn sample(&mut self, logits: &[f32], step: u64) -> usize {
        let u = unit(mix(SEED ^ mix(step))) as f32;
        let mut left = u;
        let mut last = 0;
        for (token, p) in self.truncate(logits) {
            last = token;
            left -= p;
            if left < 0.0 {
                return token;
            }
        }
        last
    }
}

/// The tokens `case` keeps, in index order, found the obvious way: z = x/t
/// in f64, one full sort, then top-k, top-p over what it kept, min-p, each a
/// threshold that keeps ties at the cut (as the crate documents).
fn sorted_kept(x: &[f32], case: Case) -> Vec<usize> {
    let inv_t = 1.0 / TEMPERATURE as f64;
    let mut z: Vec<(f64, usize)> = x
        .iter()
        .enumerate()
        .map(|(i, &v)| (v as f64 * inv_t, i))
        .collect();
    z.sort_by(|a, b| b.0.total_cmp(&a.0));
    let at_least = |z: &[(f64, usize)], cut: f64| z.partition_point(|e| e.0 >= cut);
    let mut n = z.len();
    if matches!(case, Case::TopKTopP(_)) && TOP_K < n {
        n = at_least(&z, z[TOP_K - 1].0);
    }
    if matches!(case, Case::TopKTopP(_) | Case::TopP) {
        let weights: Vec<f64> = z[..n].iter().map(|e| (e.0 - z[0].0).exp()).collect();
        let target = TOP_P as f64 * weights.iter().sum::<f64>();
        let mut mass = 0.0;
        let reached = weights.iter().position(|w| {
            mass += w;
            mass >= target
        });
        n = at_least(&z[..n], z[reached.unwrap_or(n - 1)].0);
    }
    if case == Case::MinP {
        n = at_least(&z, z[0].0 + (MIN_P as f64).ln());
    }
    let mut kept: Vec<usize> = z[..n].iter().map(|e| e.1).collect();
    kept.sort_unstable();
    kept
}

/// What a check found: the error (to compare with `Case::tolerance`) and
/// the number of tokens the case keeps (None for the softmax).
#[derive(Clone, Copy, Debug)]
pub struct Check {
    pub error: f64,
    pub kept: Option<usize>,
}

/// One row of logits, the softmax output, every case's sampler on the
/// detected ISA, the full-sort sampler, and the next step to draw.
pub struct SamplingRow {
    pub cols: usize,
    logits: Vec<f32>,
    probs: Vec<f32>,
    softmax: Softmax,
    samplers: Vec<(Case, Sampler)>,
    reference: FullSort,
    step: u64,
}

impl SamplingRow {
    pub fn new(cols: usize) -> Self {
        let samplers = Case::ALL
            .iter()
            .filter_map(|&c| c.sampler(Isa::detect()).map(|s| (c, s)))
            .collect();
        let mut reference = FullSort::new();
        let logits = realistic_logits(cols, SEED);
        // Sizes the scratch buffers before anything is timed.
        reference.sample(&logits, 0);
        Self {
            cols,
            probs: vec![0.0; cols],
            logits,
            softmax: Softmax::new().with_parallelism(Parallelism::Serial),
            samplers,
            reference,
            step: 0,
        }
    }

    fn sampler(&self, case: Case) -> &Sampler {
        let found = self.samplers.iter().find(|(c, _)| *c == case);
        &found.expect("a sampler case").1
    }

    /// One call of `case` at the next step: the token (0 for the softmax).
    pub fn call(&mut self, case: Case) -> usize {
        self.step += 1;
        match case {
            Case::Softmax => {
                self.softmax
                    .softmax(self.logits.as_slice(), self.probs.as_mut_slice())
                    .expect("a valid row");
                0
            }
            Case::FullSort => self.reference.sample(&self.logits, self.step),
            _ => self
                .sampler(case)
                .sample(self.logits.as_slice(), self.step)
                .expect("a valid row"),
        }
    }

    /// Runs `case` and checks its answer (see the module comment); also warms it up.
    pub fn check(&mut self, case: Case) -> Check {
        match case {
            Case::Softmax => self.check_softmax(),
            Case::FullSort => self.check_reference(),
            _ => self.check_sampler(case),
        }
    }

    fn check_softmax(&mut self) -> Check {
        self.probs.fill(f32::NAN);
        self.call(Case::Softmax);
        let scalar = Softmax::new()
            .with_isa(Isa::Scalar)
            .expect("the scalar ISA is always available")
            .with_algorithm(softmax::Algorithm::ThreePass);
        let mut want = vec![0.0f32; self.cols];
        scalar.softmax(self.logits.as_slice(), &mut want).unwrap();
        let mut worst = 0.0f64;
        for (&g, &w) in self.probs.iter().zip(&want) {
            let error = (g as f64 - w as f64).abs() / (w as f64).abs().max(1.0);
            worst = if error.is_nan() {
                f64::INFINITY
            } else {
                worst.max(error)
            };
        }
        Check {
            error: worst,
            kept: None,
        }
    }

    /// ln p of every token under `sampler`'s truncation (-inf: dropped).
    fn kept_logprobs(&self, sampler: &Sampler) -> Vec<f32> {
        let mut kept = vec![f32::NAN; self.cols];
        sampler
            .truncated_logprobs(self.logits.as_slice(), &mut kept)
            .expect("a valid row");
        kept
    }

    fn check_sampler(&mut self, case: Case) -> Check {
        let sampler = self.sampler(case).clone();
        let logprobs = self.kept_logprobs(&sampler);
        let kept = logprobs.iter().filter(|l| l.is_finite()).count();
        let same_set = sorted_kept(&self.logits, case)
            .into_iter()
            .eq((0..self.cols).filter(|&i| logprobs[i].is_finite()));
        if !same_set {
            return Check {
                error: f64::INFINITY,
                kept: Some(kept),
            };
        }
        let scalar = case.sampler(Isa::Scalar).expect("a sampler case");
        let mut counts = vec![0u64; self.cols];
        for step in 0..DRAWS {
            let token = sampler.sample(self.logits.as_slice(), step).unwrap();
            if !logprobs[token].is_finite() {
                return Check {
                    error: f64::INFINITY,
                    kept: Some(kept),
                };
            }
            if case.isa_independent() && step < ISA_STEPS {
                let want = scalar.sample(self.logits.as_slice(), step).unwrap();
                if token != want {
                    return Check {
                        error: f64::INFINITY,
                        kept: Some(kept),
                    };
                }
            }
            counts[token] += 1;
        }
        // Tokens with p ≥ 1% one by one, the rest pooled: |count − N·p| in
        // standard errors √(N·p·(1−p)).
        let n = DRAWS as f64;
        let z = |count: u64, p: f64| {
            let spread = (n * p * (1.0 - p)).sqrt().max(1e-12);
            (count as f64 - n * p).abs() / spread
        };
        let (mut worst, mut rest_count, mut rest_p) = (0.0f64, 0u64, 0.0f64);
        for (&count, &l) in counts.iter().zip(&logprobs) {
            let p = (l as f64).exp();
            if p >= 0.01 {
                worst = worst.max(z(count, p));
            } else {
                rest_count += count;
                rest_p += p;
            }
        }
        if rest_p > 0.0 || rest_count > 0 {
            worst = worst.max(z(rest_count, rest_p.min(1.0)));
        }
        Check {
            error: worst,
            kept: Some(kept),
        }
    }

    fn check_reference(&mut self) -> Check {
        let sampler = self.sampler(Case::TopKTopP(By::InverseCdf)).clone();
        let logprobs = self.kept_logprobs(&sampler);
        let want_kept = logprobs.iter().filter(|l| l.is_finite()).count();
        let kept: Vec<(usize, f32)> = self.reference.truncate(&self.logits).collect();
        let mut worst = if kept.len() == want_kept {
            0.0f64
        } else {
            f64::INFINITY
        };
        for &(token, p) in &kept {
            let want = (logprobs[token] as f64).exp();
            let error = (p as f64 - want).abs();
            worst = if error.is_nan() {
                f64::INFINITY
            } else {
                worst.max(error)
            };
        }
        for step in 0..ISA_STEPS {
            let token = self.reference.sample(&self.logits, step);
            if !logprobs[token].is_finite() {
                worst = f64::INFINITY;
            }
        }
        Check {
            error: worst,
            kept: Some(kept.len()),
        }
    }
}

/// Median seconds per call of one case, over `samples` samples of
/// `calls_per_sample` calls each.
#[derive(Clone, Copy, Debug)]
pub struct Timing {
    pub seconds_per_call: f64,
    pub samples: usize,
    pub calls_per_sample: usize,
}

/// Times every case in `cases` for about `seconds` each, interleaved: sample
/// s of every case runs before sample s + 1 of any, so load from other
/// processes that comes and goes lands on all cases alike and the ratios
/// between them hold. Each case is called once first (warm-up and sizing).
pub fn time_interleaved(
    work: &mut SamplingRow,
    cases: &[Case],
    seconds: f64,
    samples: usize,
) -> Vec<Timing> {
    let samples = samples.max(1);
    let calls: Vec<usize> = cases
        .iter()
        .map(|&case| {
            let one_call = seconds_of(|| {
                std::hint::black_box(work.call(case));
            });
            ((seconds / samples as f64 / one_call) as usize).max(1)
        })
        .collect();
    let mut per_call: Vec<Vec<f64>> = vec![Vec::with_capacity(samples); cases.len()];
    for _ in 0..samples {
        for (j, &case) in cases.iter().enumerate() {
            let sample = seconds_of(|| {
                for _ in 0..calls[j] {
                    std::hint::black_box(work.call(case));
                }
            });
            per_call[j].push(sample / calls[j] as f64);
        }
    }
    per_call
        .into_iter()
        .zip(calls)
        .map(|(mut times, calls_per_sample)| Timing {
            seconds_per_call: median(&mut times),
            samples,
            calls_per_sample,
        })
        .collect()
}

/// "≤2.0 met" / "≥10 missed" for the target of `case`, if it has one.
pub fn time_target(case: Case, time_vs_softmax: f64) -> String {
    match case {
        Case::TopKTopP(By::InverseCdf) => {
            let met = time_vs_softmax <= MAX_TIME_VS_SOFTMAX;
            format!(
                "≤{MAX_TIME_VS_SOFTMAX:.0} {}",
                if met { "met" } else { "missed" }
            )
        }
        _ => String::new(),
    }
}

pub fn speedup_target(case: Case, speedup: f64) -> String {
    match case {
        Case::TopKTopP(By::InverseCdf) => {
            let met = speedup >= MIN_SPEEDUP_VS_FULL_SORT;
            format!(
                "≥{MIN_SPEEDUP_VS_FULL_SORT:.0} {}",
                if met { "met" } else { "missed" }
            )
        }
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sampling_cases_pass_their_checks_on_a_small_row() {
        let mut work = SamplingRow::new(3000);
        for case in Case::ALL {
            let check = work.check(case);
            assert!(
                check.error <= case.tolerance(),
                "{} on 3000: {check:?}",
                case.name()
            );
        }
    }

    #[test]
    fn sampling_logits_have_the_peaks_and_spread_wanted() {
        let x = realistic_logits(SAMPLING_COLS, SEED);
        for peak in PEAKS {
            assert_eq!(x.iter().filter(|&&v| v == peak).count(), 1);
        }
        let n = x.len() as f64;
        let mean = x.iter().map(|&v| v as f64).sum::<f64>() / n;
        let var = x.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / n;
        assert!(
            mean.abs() < 0.05 && (var.sqrt() - 2.0).abs() < 0.05,
            "{mean} {var}"
        );
    }
}
