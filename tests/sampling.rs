//! Sampling: `Sampler` (temperature, top-k, top-p, min-p, logit bias, inverse
//! CDF and Gumbel-max draws, log-probabilities), `gumbel_max`, `GumbelSoftmax`
//! and `Softmax::soft_argmax`, against the sort-based f64 reference of
//! `common::sampling`:
//!
//! - chi-square goodness of fit of the draws to the exact truncated
//!   distribution, every option alone and chained, small vocabularies (10⁶
//!   draws) and a 32000-token row (10⁵ draws); p-values printed;
//! - the draw itself against the documented random stream (inverse CDF from
//!   the uniform at counter `INVERSE_CDF`, argmax z + Gumbel(i));
//! - `truncated_logprobs`: exactly the reference's kept set and its
//!   log-probabilities, on every ISA, for f32, f16 and bf16 rows;
//! - top-n log-probabilities, the drawn token's log-probability;
//! - the same tokens whatever the thread count, and across ISAs (exactly where
//!   the kernel promises it, else a measured mismatch rate);
//! - special values (t = 0, NaN, -inf, +inf, bans), every error with the
//!   caller's buffers untouched;
//! - Gumbel-softmax (soft, hard, f16/bf16 outputs) and soft-argmax.
//!
//! Significance: each chi-square test asserts p > ALPHA = 1e-4 (p from the
//! regularised upper incomplete gamma Q(df/2, χ²/2), bins expecting < 5 draws
//! pooled). The seeds are fixed, so a run is deterministic; a correct sampler
//! would fail a given check for about one seed in 10⁴ (26 checks: ≈ 2.6·10⁻³
//! for the whole file). Power: with 10⁶ draws, a token of probability 0.1
//! drawn 1 % too often adds χ² = 10 on its own; a few such bins on ~30 degrees
//! of freedom fail. A token that truncation drops fails at its first draw.

// Element-wise comparisons index several parallel rows at once.
#![allow(clippy::needless_range_loop)]

use crate::common;

use common::sampling::{
    biased, chi_square, gamma_q, kept_set, ln_gamma, max_of, probabilities, reference_draw, Cuts,
    KeptReference, Options,
};
use common::Narrow;
use common::{for_each_isa, print_coverage, Backend, Rng, EMULATED_TARGET};
use softmax::half::{bf16, f16};
use softmax::{
    gumbel_max, Draw, Element, Error, GumbelSoftmax, Isa, Parallelism, Rows, RowsMut, Sampler,
    Softmax, TokenLogprob,
};
use softmax_kernels::random::Stream;
use std::sync::Arc;

/// The per-test significance level of every chi-square test.
const ALPHA: f64 = 1e-4;

/// Draws for the small-vocabulary chi-square tests (qemu runs a fifth).
fn small_draws() -> usize {
    if EMULATED_TARGET {
        200_000
    } else {
        1_000_000
    }
}

/// Draws for the 32000-token chi-square tests.
fn large_draws() -> usize {
    if EMULATED_TARGET {
        20_000
    } else {
        100_000
    }
}

/// Logits per `sample_rows` call when counting draws.
const COUNT_BATCH_ELEMENTS: usize = 1 << 18;

/// How many times `sampler` draws each token from `row`: a batch of identical
/// rows per call (row i draws from the stream (seed, i, step)), steps 0, 1, ….
fn count_draws<T: Element>(sampler: &Sampler, row: &[T], draws: usize) -> Vec<u64> {
    count_draws_on(Backend::Isa(Isa::detect()), sampler, row, draws)
}

/// [`count_draws`] on `backend`.
fn count_draws_on<T: Element>(
    backend: Backend,
    sampler: &Sampler,
    row: &[T],
    draws: usize,
) -> Vec<u64> {
    let n = row.len();
    let rows = (COUNT_BATCH_ELEMENTS / n).clamp(1, draws);
    let batch: Vec<T> = row.iter().copied().cycle().take(rows * n).collect();
    let mut tokens = vec![0usize; rows];
    let mut counts = vec![0u64; n];
    let mut left = draws;
    let mut step = 0;
    while left > 0 {
        backend
            .sample(sampler, &batch, n, step, &mut tokens, None)
            .unwrap_or_else(|e| panic!("[{}] {e}", backend.name()));
        let take = rows.min(left);
        for &t in &tokens[..take] {
            counts[t] += 1;
        }
        left -= take;
        step += 1;
    }
    counts
}

/// Chi-square of `counts` against `probs`; prints the p-value and asserts p > ALPHA.
fn assert_fits(what: &str, counts: &[u64], probs: &[f64]) {
    let fit = chi_square(counts, probs).unwrap_or_else(|e| panic!("{what}: {e}"));
    eprintln!(
        "chi-square {what}: draws {}, bins {}, chi2 {:.1}, df {}, p = {:.4}",
        counts.iter().sum::<u64>(),
        fit.bins,
        fit.chi2,
        fit.df,
        fit.p_value
    );
    assert!(
        fit.df > 0,
        "{what}: a single possible outcome tests nothing"
    );
    assert!(
        fit.p_value > ALPHA,
        "{what}: chi2 = {:.1} on {} df, p = {:.3e} ≤ {ALPHA:e}",
        fit.chi2,
        fit.df,
        fit.p_value
    );
}

/// Draws from `row` with options `o` and checks the counts against the reference.
fn check_distribution<T: Narrow>(what: &str, o: &Options, seed: u64, row: &[f32], draws: usize) {
    let backend = Backend::Isa(Isa::detect());
    check_distribution_on::<T>(backend, what, o, seed, row, draws);
}

/// [`check_distribution`] on `backend`.
fn check_distribution_on<T: Narrow>(
    backend: Backend,
    what: &str,
    o: &Options,
    seed: u64,
    row: &[f32],
    draws: usize,
) {
    let xt: Vec<T> = row.iter().map(|&v| T::from_f32(v)).collect();
    let x: Vec<f64> = xt.iter().map(|v| v.to_f64()).collect();
    let counts = count_draws_on(backend, &o.sampler(seed), &xt, draws);
    let probs = probabilities(&x, o);
    let name = backend.name();
    assert_fits(
        &format!("{what} [{} {} {name}]", o.name(), T::NAME),
        &counts,
        &probs,
    );
}

/// Logits of n tokens, N(0, σ²), with `masked` of them -inf.
fn normal_row(seed: u64, n: usize, sigma: f64, masked: usize) -> Vec<f32> {
    let mut rng = Rng::new(seed);
    let mut x: Vec<f32> = (0..n).map(|_| rng.normal(sigma)).collect();
    for _ in 0..masked {
        x[rng.below(n)] = f32::NEG_INFINITY;
    }
    x
}

/// The first index of the largest logit.
fn argmax(x: &[f64]) -> usize {
    let m = max_of(x);
    x.iter().position(|&v| v == m).unwrap()
}

fn widen<T: Narrow>(x: &[T]) -> Vec<f64> {
    x.iter().map(|v| v.to_f64()).collect()
}

fn narrow<T: Narrow>(x: &[f32]) -> Vec<T> {
    x.iter().map(|&v| T::from_f32(v)).collect()
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|v| v.to_bits()).collect()
}

// ---- The statistics themselves ----

#[test]
fn gamma_q_matches_known_values() {
    let close = |got: f64, want: f64, what: &str| {
        assert!(
            (got - want).abs() <= 1e-9 * want.abs().max(1e-300),
            "{what}: {got} vs {want}"
        )
    };
    close(ln_gamma(10.0), 362_880f64.ln(), "ln Γ(10)");
    close(ln_gamma(0.5), std::f64::consts::PI.sqrt().ln(), "ln Γ(1/2)");
    close(ln_gamma(200.5), 860.582_203_509_782_5, "ln Γ(200.5)");
    let ln_170_factorial: f64 = (1..=170).map(|k| (k as f64).ln()).sum();
    close(ln_gamma(171.0), ln_170_factorial, "ln Γ(171)");
    for x in [0.01, 0.5, 3.0, 30.0] {
        // Q(1, x) = e^-x (the series branch below x = 2, the fraction above).
        close(gamma_q(1.0, x), (-x).exp(), &format!("Q(1, {x})"));
    }
    // Chi-square critical values from the tables: (df, χ², upper tail).
    for (df, chi2, p) in [
        (1.0, 3.841_458_820_694_124, 0.05),
        (1.0, 10.827_566_170_662_733, 0.001),
        (10.0, 18.307_038_053_275_146, 0.05),
        (10.0, 2.558_212_038_854_29, 0.99),
        (100.0, 124.342_113_404_2, 0.05),
    ] {
        let got = gamma_q(df / 2.0, chi2 / 2.0);
        assert!(
            (got - p).abs() <= 1e-8 * p,
            "df {df}, chi2 {chi2}: Q = {got}, tables say {p}"
        );
    }
    let fit = chi_square(&[500, 500], &[0.5, 0.5]).unwrap();
    assert_eq!((fit.chi2, fit.df, fit.p_value), (0.0, 1, 1.0));
    assert!(chi_square(&[10, 1], &[1.0, 0.0]).is_err());
}

// ---- Chi-square goodness of fit ----

#[test]
fn chi_square_full_row() {
    let row = normal_row(11, 40, 1.5, 3);
    for t in [1.0, 0.7] {
        for draw in [Draw::InverseCdf, Draw::GumbelMax] {
            let o = Options::t(t).draw(draw);
            check_distribution::<f32>("full row, 40 tokens", &o, 1, &row, small_draws());
        }
    }
}

#[test]
fn chi_square_on_the_emulated_tokens() {
    // The paths that read the per-block sums (a full-row inverse CDF, top-p
    // without top-k) or skip blocks by their maxima (a full-row Gumbel-max),
    // on the 4-, 8- and 16-lane logic, over a row of five blocks.
    // The emulated tokens the harness runs: all three natively, none under
    // qemu, or those SOFTMAX_TEST_BACKENDS names.
    let emulated: Vec<Backend> = Backend::available()
        .0
        .into_iter()
        .filter(|b| !matches!(b, Backend::Isa(_)))
        .collect();
    if emulated.is_empty() {
        eprintln!("chi_square_on_the_emulated_tokens: no emulated token runs here");
        return;
    }
    let row = normal_row(18, 300, 1.5, 5);
    let configs = [
        Options::t(1.0),
        Options::t(0.7).draw(Draw::GumbelMax),
        Options::t(0.8).top_p(0.9),
        Options::t(1.0).top_k(40).min_p(0.01),
    ];
    for (i, backend) in emulated.into_iter().enumerate() {
        for (j, o) in configs.iter().enumerate() {
            let seed = 30 + (i * configs.len() + j) as u64;
            // Fewer draws than the ISA tests: the emulated tokens are slow, and
            // 200 000 draws still put hundreds in each of the 300 bins.
            check_distribution_on::<f32>(backend, "300 tokens", o, seed, &row, 200_000);
        }
    }
}

#[test]
fn chi_square_gumbel_max_fn() {
    let row = normal_row(12, 12, 1.0, 1);
    let x = widen(&row);
    let mut counts = vec![0u64; row.len()];
    for step in 0..small_draws() as u64 {
        counts[gumbel_max(&row, 77, step).unwrap()] += 1;
    }
    assert_fits(
        "gumbel_max fn, 12 tokens",
        &counts,
        &probabilities(&x, &Options::t(1.0)),
    );
    // The documented equivalence, token for token.
    let sampler = Sampler::new(77).with_draw(Draw::GumbelMax);
    for step in 0..1000 {
        assert_eq!(
            gumbel_max(&row, 77, step).unwrap(),
            sampler.sample(&row, step).unwrap(),
            "step {step}"
        );
    }
}

/// Logits quantized to halves: many ties, and some at the top-k cut.
fn tied_row(seed: u64, n: usize) -> Vec<f32> {
    let mut rng = Rng::new(seed);
    (0..n)
        .map(|_| (rng.normal(1.5) * 2.0).round() / 2.0)
        .collect()
}

#[test]
fn chi_square_top_k() {
    let row = tied_row(13, 30);
    let x = widen(&row);
    let k = 6;
    // The row must tie at the cut, or the test would not show that ties are kept.
    let kept = kept_set(&x, Cuts::of(&Options::t(1.0).top_k(k))).unwrap();
    let kept = kept.iter().filter(|&&k| k).count();
    assert!(
        kept > k,
        "the row keeps {kept} at k = {k}: no tie at the cut"
    );
    check_distribution::<f32>(
        "top-k with ties",
        &Options::t(1.0).top_k(k),
        2,
        &row,
        small_draws(),
    );
    let o = Options::t(0.7).top_k(k).draw(Draw::GumbelMax);
    check_distribution::<f32>("top-k with ties", &o, 3, &row, small_draws());
}

#[test]
fn chi_square_top_p() {
    let row = normal_row(14, 50, 1.0, 2);
    let o = Options::t(0.7).top_p(0.8);
    check_distribution::<f32>("top-p", &o, 4, &row, small_draws());
    let o = Options::t(1.0).top_p(0.5).draw(Draw::GumbelMax);
    check_distribution::<f32>("top-p", &o, 5, &row, small_draws());
}

#[test]
fn chi_square_min_p() {
    let row = normal_row(15, 64, 1.5, 0);
    let o = Options::t(1.3).min_p(0.05).draw(Draw::GumbelMax);
    check_distribution::<f32>("min-p", &o, 6, &row, small_draws());
    let o = Options::t(1.0).min_p(0.1);
    check_distribution::<f32>("min-p", &o, 7, &row, small_draws());
}

#[test]
fn chi_square_chained_truncation() {
    let row = normal_row(16, 64, 1.0, 4);
    let o = Options::t(0.8).top_k(20).top_p(0.9).min_p(0.02);
    check_distribution::<f32>("top-k+top-p+min-p", &o, 8, &row, small_draws());
    check_distribution::<bf16>("top-k+top-p+min-p", &o, 9, &row, small_draws());
    let o = o.draw(Draw::GumbelMax);
    check_distribution::<f16>("top-k+top-p+min-p", &o, 10, &row, small_draws());
}

#[test]
fn chi_square_bias_and_ban() {
    let row = normal_row(17, 24, 1.0, 0);
    let top = argmax(&widen(&row));
    let other = if top == 7 { 8 } else { 7 };
    assert!(
        ![3, 10].contains(&top),
        "pick another row: the bias would hit the max"
    );
    let o = Options::t(1.0).bias(&[
        (3, 2.0),
        (10, -1.5),
        (top, f32::NEG_INFINITY),
        (other, f32::NEG_INFINITY),
    ]);
    check_distribution::<f32>("bias and ban", &o, 11, &row, small_draws());
    let o = o.top_k(8).draw(Draw::GumbelMax);
    check_distribution::<f32>("bias and ban", &o, 12, &row, small_draws());
}

#[test]
fn chi_square_positive_infinity_is_uniform() {
    // +inf at 2, 17 (block 0) and 70 (block 1); -inf and finite elsewhere.
    let mut row = normal_row(18, 100, 2.0, 10);
    for i in [2, 17, 70] {
        row[i] = f32::INFINITY;
    }
    let probs: Vec<f64> = (0..100)
        .map(|i| {
            if [2, 17, 70].contains(&i) {
                1.0 / 3.0
            } else {
                0.0
            }
        })
        .collect();
    let draws = small_draws() / 10;
    for (i, o) in [
        Options::t(1.0),
        Options::t(0.5).draw(Draw::GumbelMax),
        Options::t(1.0).top_k(1),
        Options::t(2.0).top_p(0.1).min_p(0.5).draw(Draw::GumbelMax),
        Options::t(1.0).bias(&[(5, 50.0)]),
    ]
    .into_iter()
    .enumerate()
    {
        let counts = count_draws(&o.sampler(20 + i as u64), &row, draws);
        assert_fits(&format!("+inf x3 [{}]", o.name()), &counts, &probs);
    }
}

#[test]
fn chi_square_vocab_32000() {
    let row = normal_row(19, 32_000, 2.5, 50);
    // A full-row Gumbel-max draw generates a variate per token: fewer draws.
    let draws = large_draws();
    for (seed, o, draws) in [
        (30, Options::t(0.8).top_k(50).top_p(0.9), draws),
        (31, Options::t(1.0), draws),
        (32, Options::t(1.0).draw(Draw::GumbelMax), draws * 3 / 10),
        (33, Options::t(0.6).top_p(0.9), draws),
    ] {
        let start = std::time::Instant::now();
        check_distribution::<f32>("32000 tokens", &o, seed, &row, draws);
        eprintln!("  ({} draws in {:.2?})", draws, start.elapsed());
    }
}

// ---- The draw against the documented random stream ----

/// Configurations for the per-row checks, some depending on the row length.
fn row_configs(rng: &mut Rng, n: usize) -> Vec<Options> {
    let k = 1 + rng.below(n.min(40));
    let mut bias = vec![];
    for (j, b) in [1.5, -2.0, f32::NEG_INFINITY].into_iter().enumerate() {
        let token = rng.below(n);
        if !bias.iter().any(|&(t, _)| t == token) && j < n {
            bias.push((token, b));
        }
    }
    vec![
        Options::t(1.0),
        Options::t(0.7).top_k(k),
        Options::t(1.0).top_p(0.9),
        Options::t(0.5).top_p(0.5).draw(Draw::GumbelMax),
        Options::t(1.3).min_p(0.1),
        Options::t(0.8).top_k(20).top_p(0.9).min_p(0.02),
        Options::t(1.0)
            .top_k(5)
            .top_p(0.95)
            .bias(&bias)
            .draw(Draw::GumbelMax),
        Options::t(2.0).bias(&bias),
        Options::t(0.0).top_k(3).top_p(0.5),
    ]
}

/// A row shape for the per-row checks.
#[derive(Clone, Copy, Debug)]
enum Kind {
    Uniform,
    Normal,
    /// Quantized to quarters: heavy ties.
    Tied,
    /// N(0, 30²): long tails, weights far below the f32 normal range.
    Wide,
    /// 30 % -inf.
    Masked,
}

impl Kind {
    const ALL: [Kind; 5] = [
        Kind::Uniform,
        Kind::Normal,
        Kind::Tied,
        Kind::Wide,
        Kind::Masked,
    ];

    fn row(self, rng: &mut Rng, n: usize) -> Vec<f32> {
        (0..n)
            .map(|_| match self {
                Kind::Uniform => rng.uniform(-10.0, 10.0),
                Kind::Normal => rng.normal(2.0),
                Kind::Tied => (rng.normal(2.0) * 4.0).round() / 4.0,
                Kind::Wide => rng.normal(30.0),
                Kind::Masked if rng.chance(0.3) => f32::NEG_INFINITY,
                Kind::Masked => rng.uniform(-10.0, 10.0),
            })
            .collect()
    }
}

#[test]
fn draws_follow_the_random_stream() {
    // The token of row r at `step` is the documented draw from the stream
    // (seed, r, step) over the kept set (taken from `truncated_logprobs`, which
    // `truncated_logprobs_match_the_reference` checks). Exact, except within
    // 1e-9 of a CDF boundary; a full-row inverse CDF chooses the block from
    // the SIMD per-block sums (f32 lanes), so there it may differ near a
    // boundary at the 1e-6 level: counted, and bounded.
    let mut rng = Rng::new(21);
    let (backends, skipped) = Backend::available();
    let (mut checked, mut near, mut full_row, mut full_row_differ) = (0, 0, 0, 0);
    let rows = if EMULATED_TARGET { 60 } else { 300 };
    for case in 0..rows {
        let n = match case % 3 {
            0 => 1 + rng.below(64),
            1 => 1 + rng.below(600),
            _ => 1000 + rng.below(4000),
        };
        let kind = Kind::ALL[case % Kind::ALL.len()];
        let row = kind.row(&mut rng, n);
        let batch: Vec<f32> = row.iter().copied().cycle().take(3 * n).collect();
        for o in row_configs(&mut rng, n) {
            let v = biased(&widen(&row), &o.bias);
            if max_of(&v) == f64::NEG_INFINITY || o.t == 0.0 {
                continue;
            }
            let sampler = o.sampler(case as u64);
            let step = rng.below(1000) as u64;
            for &backend in &backends {
                let mut kept = vec![0.0f32; n];
                let mut first = [0usize];
                backend
                    .sample(&sampler, &row, n, 0, &mut first, Some(&mut kept))
                    .unwrap();
                let keep: Vec<bool> = kept.iter().map(|&k| k > f32::NEG_INFINITY).collect();
                let mut tokens = [0usize; 3];
                backend
                    .sample(&sampler, &batch, n, step, &mut tokens, None)
                    .unwrap();
                for (r, &token) in tokens.iter().enumerate() {
                    let stream = Stream::new(case as u64, r as u64, step);
                    let (want, close) = reference_draw(&v, &keep, o.t, o.draw, stream);
                    let what = format!(
                        "{} case {case} {kind:?} n {n} [{}] row {r}",
                        backend.name(),
                        o.name()
                    );
                    assert!(keep[token], "{what}: drew {token}, which truncation drops");
                    checked += 1;
                    if close {
                        near += 1;
                        continue;
                    }
                    if o.draw == Draw::InverseCdf && !o.truncates(n) {
                        full_row += 1;
                        full_row_differ += (token != want) as usize;
                    } else {
                        assert_eq!(token, want, "{what}: not the documented draw");
                    }
                }
            }
        }
    }
    let names: Vec<&str> = backends.iter().map(|b| b.name()).collect();
    print_coverage("draws_follow_the_random_stream", &names, &skipped);
    eprintln!(
        "draws checked against the stream: {checked} ({near} within 1e-9 of a boundary, skipped); \
         full-row inverse CDF: {full_row_differ} of {full_row} differ"
    );
    assert!(
        full_row_differ * 1000 <= full_row,
        "full-row inverse CDF: {full_row_differ} of {full_row} draws differ from the f64 draw"
    );
}

// ---- truncated_logprobs: the kept set ----

/// Relative tolerance of a kept log-probability: one f32 rounding of a value
/// the kernel computes in f64 (2⁻²⁴ ≈ 6e-8), with room to spare.
const KEPT_TOL: f64 = 1e-6;

struct KeptStats {
    rows: usize,
    ambiguous: usize,
    /// Near a cut, and not the reference's exact set.
    neighbour: usize,
    max_error: f64,
}

/// Every config on one row, for every backend, with element type T.
fn check_kept_row<T: Narrow>(
    stats: &mut KeptStats,
    backends: &[Backend],
    rng: &mut Rng,
    kind: Kind,
    row: &[f32],
) {
    let n = row.len();
    let xt: Vec<T> = narrow(row);
    let x = widen(&xt);
    for o in row_configs(rng, n) {
        let v = biased(&x, &o.bias);
        let reference = KeptReference::new(&v, &o);
        let sampler = o.sampler(1);
        for &backend in backends {
            let what = format!(
                "{} {} {kind:?} n {n} [{}]",
                backend.name(),
                T::NAME,
                o.name()
            );
            let mut out = vec![7.0f32; n];
            let mut token = [0usize];
            let result = backend.sample(&sampler, &xt, n, 0, &mut token, Some(&mut out));
            let Some(reference) = &reference else {
                assert_eq!(result, Err(Error::NoFiniteLogit { row: 0 }), "{what}");
                assert!(out.iter().all(|&o| o == 7.0), "{what}: output written");
                continue;
            };
            result.unwrap_or_else(|e| panic!("{what}: {e}"));
            let check = reference
                .check(&out, KEPT_TOL)
                .unwrap_or_else(|e| panic!("{what}: {e}"));
            stats.rows += 1;
            stats.ambiguous += check.ambiguous as usize;
            let kept = out.iter().map(|&o| o > f32::NEG_INFINITY);
            stats.neighbour += !kept.eq(reference.exact().iter().copied()) as usize;
            stats.max_error = stats.max_error.max(check.max_error);
        }
    }
}

fn kept_sweep<T: Narrow>(lengths: &[usize], seed: u64) {
    let (backends, skipped) = Backend::available();
    let mut stats = KeptStats {
        rows: 0,
        ambiguous: 0,
        neighbour: 0,
        max_error: 0.0,
    };
    let mut rng = Rng::new(seed);
    for &n in lengths {
        for kind in Kind::ALL {
            let row = kind.row(&mut rng, n);
            check_kept_row::<T>(&mut stats, &backends, &mut rng, kind, &row);
        }
    }
    let names: Vec<&str> = backends.iter().map(|b| b.name()).collect();
    let test = format!("truncated_logprobs {}", T::NAME);
    print_coverage(&test, &names, &skipped);
    eprintln!(
        "truncated_logprobs {} lengths {}..={} on {}: {} checks, {} near a top-p/min-p cut \
         (either neighbouring set accepted; {} took the neighbour), max relative error {:.2e}",
        T::NAME,
        lengths.first().unwrap(),
        lengths.last().unwrap(),
        names.join(", "),
        stats.rows,
        stats.ambiguous,
        stats.neighbour,
        stats.max_error
    );
}

fn short_lengths() -> Vec<usize> {
    let step = if EMULATED_TARGET { 7 } else { 1 };
    (1..=300).step_by(step).collect()
}

fn long_lengths() -> Vec<usize> {
    if EMULATED_TARGET {
        vec![4096]
    } else {
        vec![4096, 32_000, 128_256]
    }
}

#[test]
fn truncated_logprobs_match_the_reference_f32() {
    kept_sweep::<f32>(&short_lengths(), 22);
    kept_sweep::<f32>(&long_lengths(), 23);
}

#[test]
fn truncated_logprobs_match_the_reference_f16() {
    kept_sweep::<f16>(&short_lengths(), 24);
    kept_sweep::<f16>(&long_lengths(), 25);
}

#[test]
fn truncated_logprobs_match_the_reference_bf16() {
    kept_sweep::<bf16>(&short_lengths(), 26);
    kept_sweep::<bf16>(&long_lengths(), 27);
}

#[test]
fn truncated_logprobs_at_temperature_zero() {
    for_each_isa("truncated_logprobs_at_temperature_zero", |isa| {
        let mut x = vec![0.5f32; 200];
        for i in [150, 70, 199] {
            x[i] = 3.0;
        }
        let sampler = Options::t(0.0).top_p(0.3).sampler(1).with_isa(isa).unwrap();
        let mut out = vec![1.0f32; 200];
        sampler.truncated_logprobs(&x, &mut out).unwrap();
        for (i, &o) in out.iter().enumerate() {
            let want = if i == 70 { 0.0 } else { f32::NEG_INFINITY };
            assert_eq!(o, want, "{isa}: token {i}");
        }
    });
}

// ---- Top-n log-probabilities ----

/// Absolute tolerance of a log-probability v − logsumexp(v) (plus one f32
/// rounding, relative): the kernel's logsumexp comes from the SIMD per-block
/// sums (f32 lanes, polynomial exp); measured at most ~2e-7 on these rows.
const LOGPROB_ABS_TOL: f64 = 1e-6;

fn logprob_close(got: f32, want: f64) -> bool {
    if want == f64::NEG_INFINITY {
        return got == f32::NEG_INFINITY;
    }
    (got as f64 - want).abs() <= LOGPROB_ABS_TOL + 2.0f64.powi(-23) * want.abs()
}

fn check_top_logprobs<T: Narrow>(seed: u64) {
    for_each_isa(&format!("top_logprobs {}", T::NAME), |isa| {
        let mut rng = Rng::new(seed);
        let mut max_error = 0.0f64;
        let mut lengths: Vec<usize> = short_lengths().into_iter().step_by(3).collect();
        lengths.extend([4096, 32_000]);
        for &n in &lengths {
            for kind in Kind::ALL {
                let row = kind.row(&mut rng, n);
                let xt: Vec<T> = narrow(&row);
                let configs = row_configs(&mut rng, n);
                let o = &configs[rng.below(configs.len())];
                let v = biased(&widen(&xt), &o.bias);
                let max = max_of(&v);
                let top_n = [1, 2, 5, n.min(20), n][rng.below(5)].min(n);
                let sampler = o.sampler(seed).with_isa(isa).unwrap();
                let what = format!(
                    "{isa} {} {kind:?} n {n} top {top_n} [{}]",
                    T::NAME,
                    o.name()
                );
                let mut top = vec![
                    TokenLogprob {
                        token: usize::MAX,
                        logprob: f32::NAN
                    };
                    top_n
                ];
                let step = rng.below(100) as u64;
                let result = sampler.sample_with_logprobs(&xt, step, &mut top);
                if max == f64::NEG_INFINITY {
                    assert_eq!(result, Err(Error::NoFiniteLogit { row: 0 }), "{what}");
                    assert!(top.iter().all(|t| t.token == usize::MAX), "{what}: written");
                    continue;
                }
                let drawn = result.unwrap_or_else(|e| panic!("{what}: {e}"));
                let lse = max + v.iter().map(|&x| (x - max).exp()).sum::<f64>().ln();
                let mut order: Vec<usize> = (0..n).collect();
                order.sort_by(|&a, &b| v[b].total_cmp(&v[a]).then(a.cmp(&b)));
                for (j, item) in top.iter().enumerate() {
                    let want = v[order[j]] - lse;
                    assert_eq!(item.token, order[j], "{what}: rank {j}");
                    assert!(
                        logprob_close(item.logprob, want),
                        "{what}: rank {j} token {}: logprob {} vs {want}",
                        item.token,
                        item.logprob
                    );
                    if want.is_finite() {
                        let err = (item.logprob as f64 - want).abs() / want.abs().max(1.0);
                        max_error = max_error.max(err);
                    }
                }
                let want = v[drawn.token] - lse;
                assert!(
                    logprob_close(drawn.logprob, want),
                    "{what}: drawn token {}: logprob {} vs {want}",
                    drawn.token,
                    drawn.logprob
                );
                if let Some(item) = top.iter().find(|t| t.token == drawn.token) {
                    assert_eq!(
                        item.logprob.to_bits(),
                        drawn.logprob.to_bits(),
                        "{what}: the drawn token's logprob differs from its top entry"
                    );
                }
                assert_eq!(
                    drawn.token,
                    sampler.sample(&xt, step).unwrap(),
                    "{what}: asking for log-probabilities changed the draw"
                );
            }
        }
        eprintln!(
            "top logprobs {isa} {}: max |error|/max(1, |lp|) {max_error:.2e} \
             (tolerance {LOGPROB_ABS_TOL:e} + 2^-23·|lp|)",
            T::NAME
        );
    });
}

#[test]
fn top_logprobs_f32() {
    check_top_logprobs::<f32>(40);
}

#[test]
fn top_logprobs_f16() {
    check_top_logprobs::<f16>(41);
}

#[test]
fn top_logprobs_bf16() {
    check_top_logprobs::<bf16>(42);
}

#[test]
fn top_logprobs_of_a_batch() {
    // Batch row i draws from the stream (seed, i, step): row 0 is the single-row call.
    let (rows, cols, top_n) = (6, 300, 4);
    let mut rng = Rng::new(43);
    let x: Vec<f32> = (0..rows * cols).map(|_| rng.normal(2.0)).collect();
    let sampler = Options::t(0.9).top_k(30).sampler(5);
    let mut drawn = vec![TokenLogprob::default(); rows];
    let mut top = vec![TokenLogprob::default(); rows * top_n];
    sampler
        .sample_rows_with_logprobs(
            Rows::contiguous(&x, cols).unwrap(),
            9,
            &mut drawn,
            &mut top,
            top_n,
        )
        .unwrap();
    let mut tokens = vec![0; rows];
    sampler
        .sample_rows(Rows::contiguous(&x, cols).unwrap(), 9, &mut tokens)
        .unwrap();
    for r in 0..rows {
        let row = &x[r * cols..(r + 1) * cols];
        assert_eq!(drawn[r].token, tokens[r], "row {r}");
        let mut single = vec![TokenLogprob::default(); top_n];
        let lp = sampler.sample_with_logprobs(row, 9, &mut single).unwrap();
        assert_eq!(&top[r * top_n..(r + 1) * top_n], &single[..], "row {r}");
        if r == 0 {
            assert_eq!(lp, drawn[0]);
        }
    }
}

// ---- Determinism: threads, strides, ISAs ----

fn determinism_configs() -> Vec<Options> {
    vec![
        Options::t(1.0),
        Options::t(1.0).draw(Draw::GumbelMax),
        Options::t(0.7).top_k(40),
        Options::t(1.0).top_p(0.9),
        Options::t(1.2).min_p(0.05).draw(Draw::GumbelMax),
        Options::t(0.8).top_k(50).top_p(0.9).min_p(0.02),
        Options::t(1.0).bias(&[(3, 4.0), (4000, f32::NEG_INFINITY)]),
        Options::t(0.0),
    ]
}

#[test]
fn same_tokens_whatever_the_thread_count() {
    let (rows, cols) = (64, 4096);
    let mut rng = Rng::new(50);
    let x: Vec<f32> = (0..rows * cols).map(|_| rng.normal(2.0)).collect();
    let pools: Vec<(String, Parallelism)> = [1, 2, 3]
        .into_iter()
        .map(|threads| {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            (
                format!("pool of {threads}"),
                Parallelism::Pool(Arc::new(pool)),
            )
        })
        .chain([("auto".to_string(), Parallelism::Auto)])
        .collect();
    for o in determinism_configs() {
        let batch = || Rows::contiguous(&x, cols).unwrap();
        let serial = o.sampler(3).with_parallelism(Parallelism::Serial);
        let mut want = vec![0usize; rows];
        serial.sample_rows(batch(), 17, &mut want).unwrap();
        let mut want_drawn = vec![TokenLogprob::default(); rows];
        let mut want_top = vec![TokenLogprob::default(); rows * 3];
        serial
            .sample_rows_with_logprobs(batch(), 17, &mut want_drawn, &mut want_top, 3)
            .unwrap();
        assert_eq!(
            want[0],
            serial.sample(&x[..cols], 17).unwrap(),
            "[{}] row 0",
            o.name()
        );
        for (name, parallelism) in &pools {
            let sampler = o.sampler(3).with_parallelism(parallelism.clone());
            let mut got = vec![0usize; rows];
            sampler.sample_rows(batch(), 17, &mut got).unwrap();
            assert_eq!(got, want, "[{}] {name} vs serial", o.name());
            let mut drawn = vec![TokenLogprob::default(); rows];
            let mut top = vec![TokenLogprob::default(); rows * 3];
            sampler
                .sample_rows_with_logprobs(batch(), 17, &mut drawn, &mut top, 3)
                .unwrap();
            assert_eq!(drawn, want_drawn, "[{}] {name}: drawn", o.name());
            assert_eq!(top, want_top, "[{}] {name}: top", o.name());
        }
        // A strided batch (6 elements of padding per row) draws the same tokens.
        let stride = cols + 6;
        let mut padded = vec![f32::NAN; (rows - 1) * stride + cols];
        for r in 0..rows {
            padded[r * stride..r * stride + cols].copy_from_slice(&x[r * cols..(r + 1) * cols]);
        }
        let mut got = vec![0usize; rows];
        serial
            .sample_rows(
                Rows::new(&padded, rows, cols, stride).unwrap(),
                17,
                &mut got,
            )
            .unwrap();
        assert_eq!(got, want, "[{}] strided", o.name());
    }
}

#[test]
fn same_tokens_on_every_isa() {
    // Where the kernel decides in f64 from exact inputs (top-k, min-p, t = 0,
    // every Gumbel-max draw that is not top-p alone), every ISA draws the same
    // token. A full-row inverse CDF, and top-p without top-k, take a sum from
    // the SIMD per-block sums (f32 lanes): mismatches are counted and bounded.
    // The emulated 4-, 8- and 16-lane tokens take part: their block sums are
    // summed in another lane order, like an ISA's.
    let (backends, skipped) = Backend::available();
    if !skipped.is_empty() {
        eprintln!("same_tokens_on_every_isa: not on this CPU: {skipped:?}");
    }
    let names: Vec<&str> = backends.iter().map(|b| b.name()).collect();
    if backends.len() < 2 {
        eprintln!("same_tokens_on_every_isa: only {names:?} here; nothing to compare");
    }
    let exact = [
        Options::t(1.0).draw(Draw::GumbelMax),
        Options::t(0.6).draw(Draw::GumbelMax).bias(&[(0, 3.0)]),
        Options::t(0.7).top_k(40),
        Options::t(1.1).top_k(1000).draw(Draw::GumbelMax),
        Options::t(1.0).top_k(50).top_p(0.9),
        Options::t(1.2).min_p(0.05),
        Options::t(0.8)
            .top_k(50)
            .top_p(0.9)
            .min_p(0.02)
            .draw(Draw::GumbelMax),
        Options::t(0.0).top_p(0.5),
    ];
    let counted = [
        Options::t(1.0),
        Options::t(0.7),
        Options::t(1.0).top_p(0.9),
        Options::t(1.0).top_p(0.9).draw(Draw::GumbelMax),
    ];
    let rows = if EMULATED_TARGET { 300 } else { 2000 };
    let mut differ = vec![0usize; counted.len()];
    let mut kept_differ = 0;
    let mut rng = Rng::new(51);
    for row in 0..rows {
        let n = 16 + rng.below(4096);
        let x: Vec<f32> = (0..n).map(|_| rng.normal(2.0)).collect();
        let step = row as u64;
        let tokens = |o: &Options| -> Vec<usize> {
            backends
                .iter()
                .map(|&b| {
                    let mut token = [0];
                    b.sample(&o.sampler(row as u64), &x, n, step, &mut token, None)
                        .unwrap();
                    token[0]
                })
                .collect()
        };
        for o in &exact {
            let t = tokens(o);
            assert!(
                t.iter().all(|&k| k == t[0]),
                "row {row} n {n} [{}]: tokens {t:?} on {names:?}",
                o.name()
            );
            let kept: Vec<Vec<u32>> = backends
                .iter()
                .map(|&b| {
                    let (mut out, mut token) = (vec![0.0f32; n], [0]);
                    b.sample(&o.sampler(0), &x, n, step, &mut token, Some(&mut out))
                        .unwrap();
                    bits(&out)
                })
                .collect();
            kept_differ += kept.iter().any(|k| *k != kept[0]) as usize;
        }
        for (c, o) in counted.iter().enumerate() {
            let t = tokens(o);
            differ[c] += t.iter().any(|&k| k != t[0]) as usize;
        }
    }
    assert_eq!(
        kept_differ, 0,
        "truncated_logprobs differ between ISAs where the kernel is exact"
    );
    for (o, &d) in counted.iter().zip(&differ) {
        let rate = d as f64 / rows as f64;
        eprintln!(
            "ISA mismatch rate [{}] on {names:?}: {d} of {rows} rows ({:.3} %)",
            o.name(),
            100.0 * rate
        );
        assert!(
            rate < 0.01,
            "[{}]: {d} of {rows} rows differ between ISAs",
            o.name()
        );
    }
}

// ---- Special values and rules ----

#[test]
fn temperature_zero_takes_the_first_max() {
    for_each_isa("temperature_zero_takes_the_first_max", |isa| {
        for n in [1, 2, 63, 64, 65, 200, 1000] {
            let mut x = vec![-1.0f32; n];
            let ties: Vec<usize> = [n - 1, n / 2, n / 3 + 1]
                .into_iter()
                .filter(|&i| i < n)
                .collect();
            for &i in &ties {
                x[i] = 2.5;
            }
            let first = *ties.iter().min().unwrap();
            for o in [
                Options::t(0.0),
                Options::t(0.0).top_k(1).draw(Draw::GumbelMax),
                Options::t(0.0).top_p(0.1).min_p(0.9),
            ] {
                let s = o.sampler(9).with_isa(isa).unwrap();
                let what = format!("{isa} n {n} [{}]", o.name());
                for step in 0..3 {
                    assert_eq!(s.sample(&x, step).unwrap(), first, "{what}");
                    assert_eq!(
                        s.sample(&narrow::<bf16>(&x), step).unwrap(),
                        first,
                        "{what}"
                    );
                }
            }
            if n >= 3 {
                // A bias decides the max; a ban of the first max moves it to the next.
                let last = n - 1;
                let s = Options::t(0.0)
                    .bias(&[(last, 10.0)])
                    .sampler(1)
                    .with_isa(isa)
                    .unwrap();
                assert_eq!(s.sample(&x, 0).unwrap(), last, "{isa} n {n}: bias");
                let mut sorted = ties.clone();
                sorted.sort();
                sorted.dedup();
                if sorted.len() > 1 {
                    let s = Sampler::new(1)
                        .with_temperature(0.0)
                        .unwrap()
                        .ban(&[first])
                        .unwrap();
                    let s = s.with_isa(isa).unwrap();
                    assert_eq!(s.sample(&x, 0).unwrap(), sorted[1], "{isa} n {n}: ban");
                }
            }
        }
    });
}

#[test]
fn nan_anywhere_is_an_error() {
    for_each_isa("nan_anywhere_is_an_error", |isa| {
        for n in [1, 7, 63, 64, 65, 130, 4099] {
            for at in [0, n / 2, n - 1] {
                let mut x = normal_row(n as u64, n, 1.0, 0);
                x[at] = f32::NAN;
                for o in [
                    Options::t(1.0),
                    Options::t(1.0).draw(Draw::GumbelMax),
                    Options::t(0.0),
                    Options::t(0.7).top_k(3),
                    Options::t(1.0).top_p(0.5),
                    Options::t(1.0).min_p(0.2),
                    // A ban does not hide the NaN: the row holds one.
                    Options::t(1.0).bias(&[(at, f32::NEG_INFINITY)]),
                ] {
                    let s = o.sampler(1).with_isa(isa).unwrap();
                    let what = format!("{isa} n {n} NaN at {at} [{}]", o.name());
                    let want = Err(Error::NanLogit { row: 0 });
                    assert_eq!(s.sample(&x, 0), want, "{what}");
                    assert_eq!(s.sample(&narrow::<f16>(&x), 0), want, "{what} f16");
                    assert_eq!(s.sample(&narrow::<bf16>(&x), 0), want, "{what} bf16");
                    let mut out = vec![3.0f32; n];
                    assert_eq!(
                        s.truncated_logprobs(&x, &mut out),
                        Err(Error::NanLogit { row: 0 })
                    );
                    assert!(out.iter().all(|&o| o == 3.0), "{what}: output written");
                    let mut top = vec![TokenLogprob::default(); 1];
                    assert_eq!(
                        s.sample_with_logprobs(&x, 0, &mut top),
                        Err(Error::NanLogit { row: 0 }),
                        "{what}"
                    );
                    assert_eq!(top[0], TokenLogprob::default(), "{what}: top written");
                }
            }
        }
        // In a batch, the error names the row; no token is written.
        let (rows, cols) = (5, 100);
        let mut x = normal_row(3, rows * cols, 1.0, 0);
        x[3 * cols + 42] = f32::NAN;
        let mut tokens = vec![usize::MAX; rows];
        let s = Sampler::new(1).with_isa(isa).unwrap();
        assert_eq!(
            s.sample_rows(Rows::contiguous(&x, cols).unwrap(), 0, &mut tokens),
            Err(Error::NanLogit { row: 3 }),
            "{isa}"
        );
        assert!(
            tokens.iter().all(|&t| t == usize::MAX),
            "{isa}: tokens written"
        );
        assert_eq!(
            gumbel_max(&x[3 * cols..4 * cols], 1, 0),
            Err(Error::NanLogit { row: 0 })
        );
    });
}

#[test]
fn nothing_finite_is_an_error() {
    for_each_isa("nothing_finite_is_an_error", |isa| {
        for n in [1, 5, 64, 65, 300] {
            let masked = vec![f32::NEG_INFINITY; n];
            let mut x = normal_row(n as u64, n, 1.0, 0);
            x[0] = f32::NEG_INFINITY;
            let all: Vec<usize> = (1..n).collect();
            for draw in [Draw::InverseCdf, Draw::GumbelMax] {
                for t in [1.0, 0.0] {
                    let base = Options::t(t).draw(draw).sampler(2).with_isa(isa).unwrap();
                    let what = format!("{isa} n {n} t {t} {draw:?}");
                    let want = Err(Error::NoFiniteLogit { row: 0 });
                    assert_eq!(base.sample(&masked, 0), want, "{what}: all -inf");
                    assert_eq!(
                        base.clone().with_top_k(2).unwrap().sample(&masked, 0),
                        want,
                        "{what}"
                    );
                    // -inf and bans together leave nothing.
                    let banned = base.clone().ban(&all).unwrap();
                    assert_eq!(banned.sample(&x, 0), want, "{what}: everything banned");
                    let mut out = vec![1.0f32; n];
                    let res = banned.truncated_logprobs(&x, &mut out);
                    assert_eq!(res, Err(Error::NoFiniteLogit { row: 0 }), "{what}");
                    assert!(out.iter().all(|&o| o == 1.0), "{what}: output written");
                }
            }
        }
        let (rows, cols) = (4, 70);
        let mut x = normal_row(4, rows * cols, 1.0, 0);
        x[2 * cols..3 * cols].fill(f32::NEG_INFINITY);
        let mut tokens = vec![usize::MAX; rows];
        assert_eq!(
            Sampler::new(1).with_isa(isa).unwrap().sample_rows(
                Rows::contiguous(&x, cols).unwrap(),
                0,
                &mut tokens
            ),
            Err(Error::NoFiniteLogit { row: 2 })
        );
        assert!(
            tokens.iter().all(|&t| t == usize::MAX),
            "{isa}: tokens written"
        );
        assert_eq!(
            gumbel_max(&[f32::NEG_INFINITY; 9], 1, 0),
            Err(Error::NoFiniteLogit { row: 0 })
        );
    });
}

#[test]
fn positive_infinity_takes_all_the_mass() {
    for_each_isa("positive_infinity_takes_all_the_mass", |isa| {
        for n in [3, 64, 65, 300] {
            let mut x = normal_row(n as u64, n, 1.0, 0);
            let inf: Vec<usize> = [1, n - 1, n / 2]
                .into_iter()
                .collect::<std::collections::BTreeSet<_>>()
                .into_iter()
                .collect();
            for &i in &inf {
                x[i] = f32::INFINITY;
            }
            for o in [
                Options::t(1.0),
                Options::t(0.5).top_k(1).top_p(0.2).min_p(0.9),
                Options::t(2.0).bias(&[(0, 5.0), (inf[0], -3.0)]),
            ] {
                let s = o.sampler(3).with_isa(isa).unwrap();
                let what = format!("{isa} n {n} +inf at {inf:?} [{}]", o.name());
                let mut out = vec![0.0f32; n];
                s.truncated_logprobs(&x, &mut out).unwrap();
                let share = -(inf.len() as f64).ln() as f32;
                for i in 0..n {
                    let want = if inf.contains(&i) {
                        share
                    } else {
                        f32::NEG_INFINITY
                    };
                    assert_eq!(out[i], want, "{what}: token {i}");
                }
                for step in 0..50 {
                    let t = s.sample(&x, step).unwrap();
                    assert!(inf.contains(&t), "{what}: drew {t}");
                }
                // The +inf tokens first (each -ln count), then the rest at -inf,
                // lowest index first (they tie at probability 0).
                let mut top = vec![TokenLogprob::default(); n];
                let drawn = s.sample_with_logprobs(&x, 0, &mut top).unwrap();
                assert_eq!(drawn.logprob, share, "{what}");
                let rest: Vec<usize> = (0..n).filter(|i| !inf.contains(i)).collect();
                let want: Vec<(usize, f32)> = inf
                    .iter()
                    .map(|&i| (i, share))
                    .chain(rest.iter().map(|&i| (i, f32::NEG_INFINITY)))
                    .collect();
                let got: Vec<(usize, f32)> = top.iter().map(|t| (t.token, t.logprob)).collect();
                assert_eq!(got, want, "{what}: top logprobs");
            }
            // A ban removes a +inf token.
            let s = Sampler::new(4)
                .ban(&[inf[0]])
                .unwrap()
                .with_isa(isa)
                .unwrap();
            for step in 0..50 {
                let t = s.sample(&x, step).unwrap();
                assert!(
                    inf[1..].contains(&t),
                    "{isa} n {n}: drew {t} (banned {})",
                    inf[0]
                );
            }
        }
    });
}

#[test]
fn truncated_logprobs_at_temperature_zero_with_infinities() {
    let x = [0.0f32, f32::INFINITY, 1.0, f32::INFINITY];
    let s = Sampler::new(1).with_temperature(0.0).unwrap();
    assert_eq!(s.sample(&x, 0), Ok(1));
    let mut out = [9.0f32; 4];
    s.truncated_logprobs(&x, &mut out).unwrap();
    assert_eq!(
        out,
        [f32::NEG_INFINITY, 0.0, f32::NEG_INFINITY, f32::NEG_INFINITY]
    );
}

#[test]
fn bias_off_the_f32_grid() {
    // v = [30, 30.100000023841858] at t = 1e-10: token 1 has probability 1 - e^-1e9.
    let x = [30.0f32, 29.0];
    let s = Sampler::new(1)
        .with_temperature(1e-10)
        .unwrap()
        .with_logit_bias(&[(1, 1.1)])
        .unwrap();
    for step in 0..5 {
        assert_eq!(s.sample(&x, step), Ok(1), "step {step}");
    }
    let mut out = [9.0f32; 2];
    s.truncated_logprobs(&x, &mut out).unwrap();
    assert!(out[1].abs() < 1e-6 && out[0] < -1e8, "{out:?}");
    // A finite bias that takes v past f32::MAX: token 0 is certain.
    let x = [3e38f32, 3e38, 0.0];
    let s = Sampler::new(1).with_logit_bias(&[(0, 3e38)]).unwrap();
    let mut out = [9.0f32; 3];
    s.truncated_logprobs(&x, &mut out).unwrap();
    // ln p₁ = 3e38 - 6e38 exactly; ln p₂ = -6e38 is past f32's range.
    assert_eq!(out, [0.0, -3e38, f32::NEG_INFINITY]);
    let mut top = [TokenLogprob::default(); 1];
    let drawn = s.sample_with_logprobs(&x, 0, &mut top).unwrap();
    assert_eq!((drawn.token, drawn.logprob), (0, 0.0));
}

#[test]
fn banned_and_masked_tokens_are_never_drawn() {
    let n = 50;
    let mut x = normal_row(60, n, 0.5, 0);
    x[7] = 6.0; // the max, by far
    x[8] = f32::NEG_INFINITY;
    for_each_isa("banned_and_masked_tokens_are_never_drawn", |isa| {
        for draw in [Draw::InverseCdf, Draw::GumbelMax] {
            let s = Sampler::new(5)
                .with_draw(draw)
                .ban(&[7])
                .unwrap()
                .with_isa(isa)
                .unwrap();
            let counts = count_draws(&s, &x, 20_000);
            assert_eq!((counts[7], counts[8]), (0, 0), "{isa} {draw:?}");
            let s = s.with_top_k(1).unwrap();
            let second = (0..n)
                .filter(|&i| i != 7)
                .max_by(|&a, &b| x[a].total_cmp(&x[b]).then(b.cmp(&a)))
                .unwrap();
            assert_eq!(
                s.sample(&x, 0).unwrap(),
                second,
                "{isa} {draw:?}: top-1 after the ban"
            );
        }
    });
}

#[test]
fn bias_entries_for_one_token_add_up() {
    let x = [0.0f32, 1.0, 2.0, 3.0];
    let one = Sampler::new(1).with_temperature(0.0).unwrap();
    let split = one.clone().with_logit_bias(&[(0, 2.0), (0, 2.0)]).unwrap();
    assert_eq!(split.sample(&x, 0), Ok(0), "0 + 2 + 2 = 4 > 3");
    let mut a = [0.0f32; 4];
    let mut b = [0.0f32; 4];
    Sampler::new(1)
        .with_logit_bias(&[(1, 0.5), (2, -1.0), (1, 0.25)])
        .unwrap()
        .truncated_logprobs(&x, &mut a)
        .unwrap();
    Sampler::new(1)
        .with_logit_bias(&[(1, 0.75), (2, -1.0)])
        .unwrap()
        .truncated_logprobs(&x, &mut b)
        .unwrap();
    assert_eq!(a, b);
    // A ban wins over any finite bias; `ban` keeps the earlier entries, and
    // `logit_bias` replaces them.
    let s = one
        .clone()
        .with_logit_bias(&[(3, 5.0), (3, f32::NEG_INFINITY)])
        .unwrap();
    assert_eq!(s.sample(&x, 0), Ok(2));
    let s = one
        .clone()
        .with_logit_bias(&[(0, 10.0)])
        .unwrap()
        .ban(&[3])
        .unwrap();
    assert_eq!(s.sample(&x, 0), Ok(0));
    let s = s.with_logit_bias(&[(1, 10.0)]).unwrap();
    assert_eq!(s.sample(&x, 0), Ok(1));
    // A bias is checked against the row at the call: token 9 fits a row of 10, not of 4.
    let s = one.with_logit_bias(&[(9, 100.0)]).unwrap();
    assert_eq!(s.sample(&[0.0f32; 10], 0), Ok(9));
    assert_eq!(
        s.sample(&x, 0),
        Err(Error::BiasOutOfRange { token: 9, cols: 4 })
    );
}

// ---- Errors: each one, with the caller's buffers untouched ----

#[test]
fn error_invalid_options() {
    assert_eq!(
        Sampler::new(0).with_top_k(0).err(),
        Some(Error::InvalidTopK(0))
    );
    assert!(Sampler::new(0).with_top_k(1).is_ok());
    for p in [
        0.0f32,
        -0.0,
        -0.5,
        1.0 + f32::EPSILON,
        2.0,
        f32::INFINITY,
        f32::NAN,
    ] {
        match Sampler::new(0).with_top_p(p) {
            Err(Error::InvalidTopP(q)) => assert_eq!(q.to_bits(), p.to_bits(), "top_p {p}"),
            other => panic!("top_p {p}: {other:?}"),
        }
    }
    for p in [1.0f32, 1e-30, 0.5] {
        assert!(Sampler::new(0).with_top_p(p).is_ok(), "top_p {p}");
    }
    for p in [-1e-30f32, -1.0, 1.0 + f32::EPSILON, f32::INFINITY, f32::NAN] {
        match Sampler::new(0).with_min_p(p) {
            Err(Error::InvalidMinP(q)) => assert_eq!(q.to_bits(), p.to_bits(), "min_p {p}"),
            other => panic!("min_p {p}: {other:?}"),
        }
    }
    for p in [0.0f32, 1.0, 0.5] {
        assert!(Sampler::new(0).with_min_p(p).is_ok(), "min_p {p}");
    }
    let subnormal = f32::MIN_POSITIVE / 2.0;
    for t in [
        -1.0f32,
        -f32::MIN_POSITIVE,
        f32::NAN,
        f32::INFINITY,
        f32::NEG_INFINITY,
        subnormal,
        1e-45,
    ] {
        match Sampler::new(0).with_temperature(t) {
            Err(Error::InvalidTemperature(u)) => assert_eq!(u.to_bits(), t.to_bits(), "t {t}"),
            other => panic!("temperature {t}: {other:?}"),
        }
        match GumbelSoftmax::new(0).with_tau(t) {
            Err(Error::InvalidTemperature(_)) => {}
            other => panic!("tau {t}: {other:?}"),
        }
    }
    assert!(matches!(
        GumbelSoftmax::new(0).with_tau(0.0),
        Err(Error::InvalidTemperature(_))
    ));
    for t in [0.0f32, f32::MIN_POSITIVE, 1.0, f32::MAX] {
        assert_eq!(
            Sampler::new(0).with_temperature(t).unwrap().temperature(),
            t
        );
    }
    for b in [f32::NAN, f32::INFINITY] {
        match Sampler::new(0).with_logit_bias(&[(1, 0.5), (3, b)]) {
            Err(Error::InvalidBias { token: 3, bias }) => {
                assert_eq!(bias.to_bits(), b.to_bits())
            }
            other => panic!("bias {b}: {other:?}"),
        }
    }
    assert!(Sampler::new(0)
        .with_logit_bias(&[(3, f32::NEG_INFINITY), (4, -1e30)])
        .is_ok());
}

/// The caller's buffers of a sampling call, filled with sentinels.
struct Outputs {
    tokens: Vec<usize>,
    drawn: Vec<TokenLogprob>,
    top: Vec<TokenLogprob>,
    logprobs: Vec<f32>,
}

const SENTINEL_LOGPROB: TokenLogprob = TokenLogprob {
    token: 12345,
    logprob: 0.125,
};

impl Outputs {
    fn new(tokens: usize, drawn: usize, top: usize, logprobs: usize) -> Self {
        Outputs {
            tokens: vec![usize::MAX; tokens],
            drawn: vec![SENTINEL_LOGPROB; drawn],
            top: vec![SENTINEL_LOGPROB; top],
            logprobs: vec![0.375; logprobs],
        }
    }

    fn untouched(&self) -> bool {
        self.tokens.iter().all(|&t| t == usize::MAX)
            && self.drawn.iter().all(|&d| d == SENTINEL_LOGPROB)
            && self.top.iter().all(|&d| d == SENTINEL_LOGPROB)
            && self.logprobs.iter().all(|&l| l == 0.375)
    }
}

/// Checks that `result` is the `want` error and that `out` still holds its sentinels.
fn expect_error<R: std::fmt::Debug>(
    what: &str,
    result: Result<R, Error>,
    want: Error,
    out: &Outputs,
) {
    assert_eq!(result.err(), Some(want), "{what}");
    assert!(
        out.untouched(),
        "{what}: a buffer changed although the call failed"
    );
}

#[test]
fn error_bias_out_of_range() {
    for_each_isa("error_bias_out_of_range", |isa| {
        let x = normal_row(70, 40, 1.0, 0);
        let want = Error::BiasOutOfRange {
            token: 10,
            cols: 10,
        };
        for s in [
            Sampler::new(1)
                .with_logit_bias(&[(2, 1.0), (10, 1.0)])
                .unwrap(),
            Sampler::new(1).ban(&[10]).unwrap(),
            Sampler::new(1)
                .ban(&[3, 10])
                .unwrap()
                .with_temperature(0.0)
                .unwrap(),
        ] {
            let s = s.with_isa(isa).unwrap();
            let row = &x[..10];
            let mut o = Outputs::new(4, 4, 8, 10);
            expect_error("sample", s.sample(row, 0), want.clone(), &o);
            let r = Rows::contiguous(&x, 10).unwrap();
            expect_error(
                "sample_rows",
                s.sample_rows(r, 0, &mut o.tokens),
                want.clone(),
                &o,
            );
            let mut top = o.top.clone();
            expect_error(
                "sample_with_logprobs",
                s.sample_with_logprobs(row, 0, &mut top[..2]),
                want.clone(),
                &Outputs {
                    top,
                    ..Outputs::new(0, 0, 0, 0)
                },
            );
            let res = s.sample_rows_with_logprobs(r, 0, &mut o.drawn, &mut o.top, 2);
            expect_error("sample_rows_with_logprobs", res, want.clone(), &o);
            let res = s.truncated_logprobs(row, &mut o.logprobs);
            expect_error("truncated_logprobs", res, want.clone(), &o);
            // The same sampler fits a longer row.
            assert!(s.sample(&x[..11], 0).is_ok());
        }
    });
}

#[test]
fn error_empty_row() {
    for_each_isa("error_empty_row", |isa| {
        let s = Sampler::new(1).with_isa(isa).unwrap();
        let empty: [f32; 0] = [];
        let mut o = Outputs::new(3, 3, 0, 0);
        expect_error("sample", s.sample(&empty, 0), Error::EmptyRow, &o);
        expect_error("sample f16", s.sample::<f16>(&[], 0), Error::EmptyRow, &o);
        let res = s.truncated_logprobs(&empty, &mut o.logprobs);
        expect_error("truncated_logprobs", res, Error::EmptyRow, &o);
        let r = Rows::new(&empty, 3, 0, 0).unwrap();
        expect_error(
            "sample_rows",
            s.sample_rows(r, 0, &mut o.tokens),
            Error::EmptyRow,
            &o,
        );
        let sm = Softmax::new().with_isa(isa).unwrap();
        expect_error("soft_argmax", sm.soft_argmax(&empty), Error::EmptyRow, &o);
        let mut out = Outputs::new(0, 0, 0, 3);
        let res = sm.soft_argmax_rows(r, &mut out.logprobs);
        expect_error("soft_argmax_rows", res, Error::EmptyRow, &out);
        let g = GumbelSoftmax::new(1).with_isa(isa).unwrap();
        let res = g.sample(&empty, &mut [0.0f32; 0], 0);
        expect_error("GumbelSoftmax::sample", res, Error::EmptyRow, &o);
        expect_error("gumbel_max", gumbel_max(&empty, 1, 0), Error::EmptyRow, &o);
        // No rows at all is not an error, and writes nothing.
        let none = Rows::new(&empty, 0, 0, 0).unwrap();
        assert!(s.sample_rows(none, 0, &mut o.tokens).is_ok() && o.untouched());
    });
}

#[test]
fn sample_with_logprobs_without_a_top_list() {
    let x = [1.0f32, 3.0, 2.0];
    let drawn = Sampler::new(1).sample_with_logprobs(&x, 0, &mut []);
    let drawn = drawn.expect("no top list asked for is valid");
    assert_eq!(drawn.token, Sampler::new(1).sample(&x, 0).unwrap());
    let mut d = [TokenLogprob::default(); 2];
    let x2 = [1.0f32, 3.0, 2.0, 0.0, 0.0, 0.0];
    Sampler::new(1)
        .sample_rows_with_logprobs(Rows::contiguous(&x2, 3).unwrap(), 0, &mut d, &mut [], 0)
        .expect("top_n = 0 needs no top buffer");
    // And on an empty row the error is EmptyRow, as for every other call.
    assert_eq!(
        Sampler::new(1).sample_with_logprobs::<f32>(&[], 0, &mut []),
        Err(Error::EmptyRow)
    );
    let mut d = [SENTINEL_LOGPROB; 3];
    assert_eq!(
        Sampler::new(1).sample_rows_with_logprobs::<f32>(
            Rows::new(&[], 3, 0, 0).unwrap(),
            0,
            &mut d,
            &mut [],
            0
        ),
        Err(Error::EmptyRow)
    );
}

#[test]
fn error_output_too_short() {
    for_each_isa("error_output_too_short", |isa| {
        let (rows, cols) = (5, 33);
        let x = normal_row(71, rows * cols, 1.0, 0);
        let r = Rows::contiguous(&x, cols).unwrap();
        let s = Sampler::new(1).with_isa(isa).unwrap();
        let mut o = Outputs::new(rows - 1, rows, rows * 3, 0);
        let res = s.sample_rows(r, 0, &mut o.tokens);
        expect_error(
            "sample_rows",
            res,
            Error::OutputTooShort { len: 4, rows: 5 },
            &o,
        );
        let mut o = Outputs::new(0, rows - 1, rows * 3, 0);
        let res = s.sample_rows_with_logprobs(r, 0, &mut o.drawn, &mut o.top, 3);
        expect_error("drawn", res, Error::OutputTooShort { len: 4, rows: 5 }, &o);
        let mut o = Outputs::new(0, rows, rows * 3 - 1, 0);
        let res = s.sample_rows_with_logprobs(r, 0, &mut o.drawn, &mut o.top, 3);
        assert!(
            // Counted in whole top-n lists: 14 values hold 4 lists of 3.
            res == Err(Error::OutputTooShort { len: 4, rows: 5 }),
            "top list: {res:?}"
        );
        assert!(o.untouched(), "top list: a buffer changed");
        let sm = Softmax::new().with_isa(isa).unwrap();
        let mut o = Outputs::new(0, 0, 0, rows - 1);
        let res = sm.soft_argmax_rows(r, &mut o.logprobs);
        expect_error(
            "soft_argmax_rows",
            res,
            Error::OutputTooShort { len: 4, rows: 5 },
            &o,
        );
        let mut y = vec![0.5f32; rows * cols];
        let mut indices = vec![usize::MAX; rows - 1];
        let g = GumbelSoftmax::new(1).with_isa(isa).unwrap();
        let res = g.sample_rows(
            r,
            RowsMut::contiguous(&mut y, cols).unwrap(),
            0,
            &mut indices,
        );
        assert_eq!(
            res,
            Err(Error::OutputTooShort { len: 4, rows: 5 }),
            "GumbelSoftmax"
        );
        assert!(y.iter().all(|&v| v == 0.5) && indices.iter().all(|&i| i == usize::MAX));
    });
}

#[test]
fn error_too_many_logprobs() {
    for_each_isa("error_too_many_logprobs", |isa| {
        let x = normal_row(72, 24, 1.0, 0);
        let s = Sampler::new(1).with_isa(isa).unwrap();
        let mut o = Outputs::new(0, 2, 2 * 13, 0);
        let res = s.sample_with_logprobs(&x[..12], 0, &mut o.top[..13]);
        let want = Error::TooManyLogprobs {
            requested: 13,
            cols: 12,
        };
        expect_error("sample_with_logprobs", res, want.clone(), &o);
        let r = Rows::contiguous(&x, 12).unwrap();
        let res = s.sample_rows_with_logprobs(r, 0, &mut o.drawn, &mut o.top, 13);
        expect_error("sample_rows_with_logprobs", res, want, &o);
        // Exactly the row is fine.
        assert!(s
            .sample_with_logprobs(&x[..12], 0, &mut o.top[..12])
            .is_ok());
    });
}

#[test]
fn error_length_mismatch() {
    for_each_isa("error_length_mismatch", |isa| {
        let x = normal_row(73, 20, 1.0, 0);
        let s = Sampler::new(1).with_isa(isa).unwrap();
        for len in [19, 21, 0] {
            let mut o = Outputs::new(0, 0, 0, len);
            let res = s.truncated_logprobs(&x, &mut o.logprobs);
            let want = Error::LengthMismatch {
                input: 20,
                output: len,
            };
            expect_error("truncated_logprobs", res, want.clone(), &o);
            let g = GumbelSoftmax::new(1).with_isa(isa).unwrap();
            let res = g.sample(&x, &mut o.logprobs, 0);
            expect_error("GumbelSoftmax::sample", res, want, &o);
        }
        let g = GumbelSoftmax::new(1).with_isa(isa).unwrap();
        let mut y = vec![0.375f32; 2 * 9];
        let mut indices = [usize::MAX; 2];
        let res = g.sample_rows(
            Rows::contiguous(&x, 10).unwrap(),
            RowsMut::contiguous(&mut y, 9).unwrap(),
            0,
            &mut indices,
        );
        assert!(matches!(res, Err(Error::ShapeMismatch { .. })), "{res:?}");
        assert!(y.iter().all(|&v| v == 0.375) && indices == [usize::MAX; 2]);
    });
}

#[test]
fn gumbel_softmax_rows_error_writes_nothing() {
    let x = [1.0f32, 2.0, 3.0, 1.0, 2.0, 3.0, 1.0, f32::NAN, 3.0];
    let mut y = [7.0f32; 9];
    let mut indices = [99usize; 3];
    let res = GumbelSoftmax::new(3).sample_rows(
        Rows::contiguous(&x, 3).unwrap(),
        RowsMut::contiguous(&mut y, 3).unwrap(),
        0,
        &mut indices,
    );
    assert_eq!(res, Err(Error::NanLogit { row: 2 }));
    assert_eq!(indices, [99; 3], "indices written");
    assert_eq!(y, [7.0; 9], "y written");
}

// ---- Gumbel-softmax ----

/// y = softmax((x + G)/τ) in f64, G from the stream (seed, row, step), x + G
/// rounded to f32 first as the crate documents.
fn gumbel_softmax_reference(x: &[f64], tau: f32, stream: Stream) -> (Vec<f64>, usize) {
    let p: Vec<f64> = x
        .iter()
        .enumerate()
        .map(|(i, &v)| (v + stream.gumbel(i as u64)) as f32 as f64)
        .collect();
    let exact: Vec<f64> = x
        .iter()
        .enumerate()
        .map(|(i, &v)| v + stream.gumbel(i as u64))
        .collect();
    let m = max_of(&p);
    let e: Vec<f64> = p.iter().map(|&v| ((v - m) / tau as f64).exp()).collect();
    let s: f64 = e.iter().sum();
    (e.iter().map(|v| v / s).collect(), argmax(&exact))
}

fn check_gumbel_softmax<I: Narrow, O: Narrow>(isa: Isa) {
    let mut rng = Rng::new(80);
    for n in [1, 2, 17, 64, 100, 1000] {
        let x32: Vec<f32> = (0..n).map(|_| rng.normal(2.0)).collect();
        let xt: Vec<I> = narrow(&x32);
        let x = widen(&xt);
        for tau in [1.0f32, 0.5, 2.0] {
            let what = format!("{isa} {}→{} n {n} τ {tau}", I::NAME, O::NAME);
            let g = GumbelSoftmax::new(6)
                .with_tau(tau)
                .unwrap()
                .with_isa(isa)
                .unwrap();
            let mut y = vec![O::from_f32(-1.0); n];
            let index = g.sample(&xt, &mut y, 4).unwrap();
            let y = widen(&y);
            let (want, want_index) = gumbel_softmax_reference(&x, tau, Stream::new(6, 0, 4));
            assert_eq!(index, want_index, "{what}: index");
            // O's rounding plus the f32 softmax bound, generously.
            let tol = 2.0f64.powi(-O::MANTISSA) + 1e-5;
            let abs = O::ulp(0.0).max(2.0 * f32::MIN_POSITIVE as f64);
            let sum: f64 = y.iter().sum();
            assert!(
                (sum - 1.0).abs() <= tol * (n as f64).sqrt().max(1.0) * 2.0,
                "{what}: Σ y = {sum}"
            );
            for i in 0..n {
                assert!((0.0..=1.0).contains(&y[i]), "{what}: y[{i}] = {}", y[i]);
                assert!(
                    (y[i] - want[i]).abs() <= tol * want[i] + abs,
                    "{what}: y[{i}] = {} vs {}",
                    y[i],
                    want[i]
                );
            }
            let ymax = max_of(&y);
            assert_eq!(y[index], ymax, "{what}: the index is not the argmax of y");
            // Hard: the one-hot of the same index (the same noise).
            let hard = g.clone().with_hard(true);
            let mut h = vec![O::from_f32(0.5); n];
            assert_eq!(
                hard.sample(&xt, &mut h, 4).unwrap(),
                index,
                "{what}: hard index"
            );
            for (i, v) in widen(&h).into_iter().enumerate() {
                assert_eq!(v, if i == index { 1.0 } else { 0.0 }, "{what}: hard y[{i}]");
            }
            // Same seed and step: the same bits; another step or seed: other noise.
            let mut again = vec![O::from_f32(0.0); n];
            g.sample(&xt, &mut again, 4).unwrap();
            assert_eq!(widen(&again), y, "{what}: not reproducible");
            if n >= 17 {
                g.sample(&xt, &mut again, 5).unwrap();
                assert_ne!(widen(&again), y, "{what}: step 5 gave the noise of step 4");
                GumbelSoftmax::new(7)
                    .with_tau(tau)
                    .unwrap()
                    .sample(&xt, &mut again, 4)
                    .unwrap();
                assert_ne!(widen(&again), y, "{what}: seed 7 gave the noise of seed 6");
            }
        }
    }
}

#[test]
fn gumbel_softmax_outputs() {
    for_each_isa("gumbel_softmax_outputs", |isa| {
        check_gumbel_softmax::<f32, f32>(isa);
        check_gumbel_softmax::<f32, f16>(isa);
        check_gumbel_softmax::<f32, bf16>(isa);
        check_gumbel_softmax::<f16, f32>(isa);
        check_gumbel_softmax::<bf16, bf16>(isa);
    });
}

#[test]
fn gumbel_softmax_rows() {
    // Row r uses the stream (seed, r, step): row 0 is the single-row call.
    let (rows, cols) = (4, 37);
    let x = normal_row(81, rows * cols, 1.5, 3);
    for hard in [false, true] {
        let g = GumbelSoftmax::new(8).with_hard(hard);
        let mut y = vec![0.0f32; rows * cols];
        let mut indices = vec![0; rows];
        g.sample_rows(
            Rows::contiguous(&x, cols).unwrap(),
            RowsMut::contiguous(&mut y, cols).unwrap(),
            2,
            &mut indices,
        )
        .unwrap();
        for r in 0..rows {
            let xr = widen(&x[r * cols..(r + 1) * cols]);
            let (want, index) = gumbel_softmax_reference(&xr, 1.0, Stream::new(8, r as u64, 2));
            assert_eq!(indices[r], index, "hard {hard} row {r}");
            let yr = &y[r * cols..(r + 1) * cols];
            for i in 0..cols {
                let w = if hard {
                    (i == index) as u8 as f64
                } else {
                    want[i]
                };
                assert!(
                    (yr[i] as f64 - w).abs() <= 1e-6 * w + 1e-37,
                    "hard {hard} row {r} y[{i}]"
                );
            }
        }
        let mut y0 = vec![0.0f32; cols];
        assert_eq!(g.sample(&x[..cols], &mut y0, 2).unwrap(), indices[0]);
        assert_eq!(bits(&y0), bits(&y[..cols]), "hard {hard}");
    }
}

#[test]
fn chi_square_gumbel_softmax_hard() {
    // The hard index is a draw from softmax(x).
    let (rows, cols) = (2000, 12);
    let row = normal_row(82, cols, 1.0, 1);
    let batch: Vec<f32> = row.iter().copied().cycle().take(rows * cols).collect();
    let g = GumbelSoftmax::new(9).with_hard(true);
    let mut y = vec![0.0f32; rows * cols];
    let mut indices = vec![0; rows];
    let mut counts = vec![0u64; cols];
    let steps = small_draws() / 5 / rows;
    for step in 0..steps as u64 {
        g.sample_rows(
            Rows::contiguous(&batch, cols).unwrap(),
            RowsMut::contiguous(&mut y, cols).unwrap(),
            step,
            &mut indices,
        )
        .unwrap();
        for &i in &indices {
            counts[i] += 1;
        }
    }
    assert_fits(
        "GumbelSoftmax hard indices, 12 tokens",
        &counts,
        &probabilities(&widen(&row), &Options::t(1.0)),
    );
}

#[test]
fn gumbel_softmax_special_rows() {
    let g = GumbelSoftmax::new(1);
    let mut y = [0.25f32; 4];
    assert_eq!(
        g.sample(&[0.0f32, f32::NAN, 1.0, 2.0], &mut y, 0),
        Err(Error::NanLogit { row: 0 })
    );
    assert_eq!(
        g.sample(&[f32::NEG_INFINITY; 4], &mut y, 0),
        Err(Error::NoFiniteLogit { row: 0 })
    );
    assert_eq!(y, [0.25; 4], "y written on an error");
    // -inf tokens get 0 and are never the index; +inf tokens take everything.
    let x = [f32::NEG_INFINITY, 0.0, f32::NEG_INFINITY, 1.0];
    for step in 0..100 {
        let i = g.sample(&x, &mut y, step).unwrap();
        assert!(i == 1 || i == 3, "step {step}: index {i}");
        assert_eq!((y[0], y[2]), (0.0, 0.0));
    }
    let x = [0.0f32, f32::INFINITY, 5.0, 1.0];
    let i = g.sample(&x, &mut y, 0).unwrap();
    assert_eq!((i, y), (1, [0.0, 1.0, 0.0, 0.0]));
}

// ---- Soft-argmax ----

fn soft_argmax_reference(x: &[f64], t: f64) -> f64 {
    let m = max_of(x);
    let e: Vec<f64> = x.iter().map(|&v| ((v - m) / t).exp()).collect();
    let s: f64 = e.iter().sum();
    e.iter()
        .enumerate()
        .map(|(i, &w)| i as f64 * w)
        .sum::<f64>()
        / s
}

fn check_soft_argmax<T: Narrow>(isa: Isa) -> f64 {
    let mut rng = Rng::new(90);
    let mut worst = 0.0f64;
    for n in [1, 2, 3, 15, 64, 65, 257, 1000, 4096] {
        for kind in Kind::ALL {
            let row: Vec<T> = narrow(&kind.row(&mut rng, n));
            let x = widen(&row);
            for t in [1.0f32, 0.5, 3.0] {
                let sm = Softmax::new()
                    .with_isa(isa)
                    .unwrap()
                    .with_temperature(t)
                    .unwrap();
                let got = sm.soft_argmax(&row).unwrap();
                let what = format!("{isa} {} {kind:?} n {n} t {t}", T::NAME);
                if max_of(&x) == f64::NEG_INFINITY {
                    assert!(got.is_nan(), "{what}: fully masked row gives {got}");
                    continue;
                }
                let want = soft_argmax_reference(&x, t as f64);
                // Each probability carries the softmax bound (a few 2^-24, relative);
                // Σ i·δp_i is at most (n-1)·Σ|δp_i|, so scale by n as well as by the result.
                let err = (got as f64 - want).abs() / (want + 1e-3 * n as f64).max(1.0);
                worst = worst.max(err);
                assert!(err <= 2e-6, "{what}: {got} vs {want} (error {err:.2e})");
            }
        }
    }
    worst
}

#[test]
fn soft_argmax_matches_the_reference() {
    for_each_isa("soft_argmax_matches_the_reference", |isa| {
        let e32 = check_soft_argmax::<f32>(isa);
        let e16 = check_soft_argmax::<f16>(isa);
        let eb16 = check_soft_argmax::<bf16>(isa);
        eprintln!(
            "soft_argmax {isa}: max scaled error f32 {e32:.2e}, f16 {e16:.2e}, bf16 {eb16:.2e}"
        );
        let sm = Softmax::new().with_isa(isa).unwrap();
        assert!(
            sm.soft_argmax(&[0.0f32, f32::NAN, 1.0]).unwrap().is_nan(),
            "{isa}: NaN row"
        );
        assert!(
            sm.soft_argmax(&[f32::NEG_INFINITY; 5]).unwrap().is_nan(),
            "{isa}: masked row"
        );
        assert_eq!(
            sm.soft_argmax(&[2.0f32; 5]).unwrap(),
            2.0,
            "{isa}: uniform row"
        );
        assert_eq!(
            sm.soft_argmax(&[0.0f32, f32::INFINITY, 0.0, f32::INFINITY])
                .unwrap(),
            2.0,
            "{isa}: the +inf tokens share the mass"
        );
        // Rows: each row as the single call; NaN only in its own row.
        let (rows, cols) = (5, 40);
        let mut x = normal_row(91, rows * cols, 2.0, 0);
        x[2 * cols + 3] = f32::NAN;
        x[4 * cols..].fill(f32::NEG_INFINITY);
        let mut out = vec![0.0f32; rows + 1];
        sm.soft_argmax_rows(Rows::contiguous(&x, cols).unwrap(), &mut out)
            .unwrap();
        for r in 0..rows {
            let single = sm.soft_argmax(&x[r * cols..(r + 1) * cols]).unwrap();
            assert_eq!(out[r].to_bits(), single.to_bits(), "{isa} row {r}");
            assert_eq!(single.is_nan(), r >= 2 && r != 3, "{isa} row {r}: {single}");
        }
        assert_eq!(out[rows], 0.0, "{isa}: wrote past the rows");
    });
}
