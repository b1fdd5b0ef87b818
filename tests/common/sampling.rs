//! Sampling test machinery: the sort-based f64 reference of the distribution a
//! sampler draws from, the reference draw from the crate's documented random
//! stream, and Pearson's chi-square goodness-of-fit test with its p-value.
//!
//! The reference follows the rules of `Sampler`, written the obvious way (sort,
//! then cut), so that it shares nothing with the kernels' sort-free algorithm:
//!
//! ```text
//! v = x + bias (f64; a bias of -inf bans)          z = (v - max v)/t
//! top-k:  keep v ≥ the k-th largest finite v (all of them when fewer are finite)
//! top-p:  over what top-k kept, sorted descending, weights e^z: the first value
//!         at which the running mass reaches p·total is the cut; keep v ≥ cut
//! min-p:  keep z ≥ ln(min_p)
//! kept:   ln p = z - ln Σ_kept e^z;   any v = +inf: the +inf tokens, each -ln(count)
//! ```

use softmax::{Draw, Sampler};
use softmax_kernels::random::{Stream, INVERSE_CDF};

/// Sampling options as the tests spell them (validated by the builder).
#[derive(Clone, Debug)]
pub struct Options {
    pub t: f32,
    pub top_k: Option<usize>,
    pub top_p: f32,
    pub min_p: f32,
    /// One entry per token; -inf bans.
    pub bias: Vec<(usize, f32)>,
    pub draw: Draw,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            t: 1.0,
            top_k: None,
            top_p: 1.0,
            min_p: 0.0,
            bias: Vec::new(),
            draw: Draw::InverseCdf,
        }
    }
}

impl Options {
    pub fn t(t: f32) -> Self {
        Options {
            t,
            ..Default::default()
        }
    }
    pub fn top_k(mut self, k: usize) -> Self {
        self.top_k = Some(k);
        self
    }
    pub fn top_p(mut self, p: f32) -> Self {
        self.top_p = p;
        self
    }
    pub fn min_p(mut self, p: f32) -> Self {
        self.min_p = p;
        self
    }
    pub fn bias(mut self, bias: &[(usize, f32)]) -> Self {
        self.bias = bias.to_vec();
        self
    }
    pub fn draw(mut self, draw: Draw) -> Self {
        self.draw = draw;
        self
    }

    /// The sampler these options describe.
    pub fn sampler(&self, seed: u64) -> Sampler {
        let name = self.name();
        let mut s = Sampler::new(seed)
            .with_temperature(self.t)
            .unwrap_or_else(|e| panic!("{name}: {e}"))
            .with_top_p(self.top_p)
            .unwrap_or_else(|e| panic!("{name}: {e}"))
            .with_min_p(self.min_p)
            .unwrap_or_else(|e| panic!("{name}: {e}"))
            .with_draw(self.draw);
        if let Some(k) = self.top_k {
            s = s.with_top_k(k).unwrap_or_else(|e| panic!("{name}: {e}"));
        }
        if !self.bias.is_empty() {
            s = s
                .with_logit_bias(&self.bias)
                .unwrap_or_else(|e| panic!("{name}: {e}"));
        }
        s
    }

    /// Whether anything is cut (a full row otherwise).
    pub fn truncates(&self, n: usize) -> bool {
        self.top_k.is_some_and(|k| k < n) || self.top_p < 1.0 || self.min_p > 0.0
    }

    /// top-p with no top-k below the row length: the one cut whose target
    /// mass comes from the SIMD per-block sums (f32 lanes), so from the ISA.
    pub fn top_p_without_top_k(&self, n: usize) -> bool {
        self.top_p < 1.0 && self.top_k.is_none_or(|k| k >= n)
    }

    pub fn name(&self) -> String {
        let mut s = format!("t={}", self.t);
        if let Some(k) = self.top_k {
            s += &format!(" top_k={k}");
        }
        if self.top_p < 1.0 {
            s += &format!(" top_p={}", self.top_p);
        }
        if self.min_p > 0.0 {
            s += &format!(" min_p={}", self.min_p);
        }
        if !self.bias.is_empty() {
            s += &format!(" bias={:?}", self.bias);
        }
        s + &format!(" {:?}", self.draw)
    }
}

/// v = x + bias, in f64; a bias of -inf bans whatever x is.
pub fn biased(x: &[f64], bias: &[(usize, f32)]) -> Vec<f64> {
    let mut v = x.to_vec();
    for &(i, b) in bias {
        v[i] = if b == f32::NEG_INFINITY {
            f64::NEG_INFINITY
        } else {
            v[i] + b as f64
        };
    }
    v
}

/// The cuts, in the reference's units; the tests move them slightly to find
/// the sets a correct implementation may return near a boundary.
#[derive(Clone, Copy, Debug)]
pub struct Cuts {
    /// 0: the first index of the max.
    pub t: f64,
    pub top_k: Option<usize>,
    /// ≥ 1: off.
    pub top_p: f64,
    /// -inf: off.
    pub ln_min_p: f64,
}

impl Cuts {
    pub fn of(o: &Options) -> Self {
        Cuts {
            t: o.t as f64,
            top_k: o.top_k,
            top_p: o.top_p as f64,
            ln_min_p: (o.min_p as f64).ln(),
        }
    }
}

/// The largest finite-or-infinite v (NaN-free input), -inf when nothing is finite.
pub fn max_of(v: &[f64]) -> f64 {
    v.iter().fold(f64::NEG_INFINITY, |m, &x| m.max(x))
}

/// The tokens the rules keep, or `None` when no logit is above -inf.
pub fn kept_set(v: &[f64], c: Cuts) -> Option<Vec<bool>> {
    let max = max_of(v);
    if max == f64::NEG_INFINITY {
        return None;
    }
    if c.t == 0.0 {
        let first = v.iter().position(|&x| x == max).unwrap();
        return Some((0..v.len()).map(|i| i == first).collect());
    }
    if max == f64::INFINITY {
        return Some(v.iter().map(|&x| x == f64::INFINITY).collect());
    }
    let mut keep: Vec<bool> = v.iter().map(|&x| x > f64::NEG_INFINITY).collect();
    let mut sorted: Vec<f64> = v
        .iter()
        .copied()
        .filter(|&x| x > f64::NEG_INFINITY)
        .collect();
    sorted.sort_by(|a, b| b.total_cmp(a));
    if let Some(k) = c.top_k {
        if sorted.len() >= k {
            let kth = sorted[k - 1];
            for (kp, &x) in keep.iter_mut().zip(v) {
                *kp &= x >= kth;
            }
            sorted.retain(|&x| x >= kth);
        }
    }
    let w = |x: f64| ((x - max) / c.t).exp();
    if c.top_p < 1.0 {
        let total: f64 = sorted.iter().map(|&x| w(x)).sum();
        let target = c.top_p * total;
        let mut acc = 0.0;
        let mut cut = *sorted.last().unwrap();
        for &x in &sorted {
            acc += w(x);
            if acc >= target {
                cut = x;
                break;
            }
        }
        for (kp, &x) in keep.iter_mut().zip(v) {
            *kp &= x >= cut;
        }
    }
    for (kp, &x) in keep.iter_mut().zip(v) {
        *kp &= (x - max) / c.t >= c.ln_min_p;
    }
    Some(keep)
}

/// ln of the renormalised softmax(v/t) over `keep`, -inf elsewhere; the +inf
/// tokens share the mass when there are any.
pub fn logprobs_over(v: &[f64], t: f64, keep: &[bool]) -> Vec<f64> {
    let max = max_of(v);
    if t == 0.0 {
        return keep
            .iter()
            .map(|&k| if k { 0.0 } else { f64::NEG_INFINITY })
            .collect();
    }
    if max == f64::INFINITY {
        let count = keep.iter().filter(|&&k| k).count() as f64;
        return keep
            .iter()
            .map(|&k| if k { -count.ln() } else { f64::NEG_INFINITY })
            .collect();
    }
    let z = |x: f64| (x - max) / t;
    let total: f64 = v
        .iter()
        .zip(keep)
        .filter(|(_, &k)| k)
        .map(|(&x, _)| z(x).exp())
        .sum();
    let ln_total = total.ln();
    v.iter()
        .zip(keep)
        .map(|(&x, &k)| {
            if k {
                z(x) - ln_total
            } else {
                f64::NEG_INFINITY
            }
        })
        .collect()
}

/// The exact probabilities a draw with options `o` samples from x (f64).
pub fn probabilities(x: &[f64], o: &Options) -> Vec<f64> {
    let v = biased(x, &o.bias);
    let c = Cuts::of(o);
    let keep = kept_set(&v, c).expect("a finite logit");
    logprobs_over(&v, c.t, &keep)
        .into_iter()
        .map(f64::exp)
        .collect()
}

/// Relative width of the top-p window in which either neighbouring set is
/// accepted: when top-k precedes top-p the kernel sums the kept weights in
/// f64, so only summation order separates it from the reference (1e-9 is
/// ~10⁷ times that); without top-k its target is p × the SIMD per-block sums
/// (f32 lanes, polynomial exp, z rounded to f32: a few 1e-7 relative, up to
/// ~1e-6 on long rows), so the window is 1e-5 there.
pub fn top_p_window(o: &Options, n: usize) -> f64 {
    if o.top_p_without_top_k(n) {
        1e-5
    } else {
        1e-9
    }
}

/// Width, in units of z, of the min-p window: the kernel compares v with
/// max + t·ln(min_p), the reference z with ln(min_p); both round in f64.
pub const MIN_P_WINDOW: f64 = 1e-9;

/// What a [`KeptReference`] check found.
#[derive(Clone, Copy, Debug, Default)]
pub struct KeptCheck {
    /// The reference's sets at the two edges of the windows differed.
    pub ambiguous: bool,
    /// The largest |got − expected| of a kept log-probability, relative to max(1, |expected|).
    pub max_error: f64,
}

/// The reference's kept sets for one row and one set of options: the exact
/// set, and the sets at the two edges of the top-p and min-p windows.
pub struct KeptReference<'a> {
    v: &'a [f64],
    t: f64,
    exact: Vec<bool>,
    small: Vec<bool>,
    large: Vec<bool>,
}

impl<'a> KeptReference<'a> {
    /// `None` when no logit of v is above -inf.
    pub fn new(v: &'a [f64], o: &Options) -> Option<Self> {
        let c = Cuts::of(o);
        let window = top_p_window(o, v.len());
        let (p_lo, p_hi) = if c.top_p < 1.0 {
            (
                c.top_p * (1.0 - window),
                (c.top_p * (1.0 + window)).min(1.0),
            )
        } else {
            (1.0, 1.0)
        };
        let exact = kept_set(v, c)?;
        let small = kept_set(
            v,
            Cuts {
                top_p: p_lo,
                ln_min_p: c.ln_min_p + MIN_P_WINDOW,
                ..c
            },
        )?;
        let large = kept_set(
            v,
            Cuts {
                top_p: p_hi,
                ln_min_p: c.ln_min_p - MIN_P_WINDOW,
                ..c
            },
        )?;
        Some(KeptReference {
            v,
            t: c.t,
            exact,
            small,
            large,
        })
    }

    pub fn exact(&self) -> &[bool] {
        &self.exact
    }

    /// Checks a `truncated_logprobs` output: its finite entries must be the
    /// reference's set when the window edges agree, else a threshold set
    /// {v ≥ τ} lying between the two edge sets; each value must be ln of the
    /// renormalised softmax(v/t) over that set within `tol` × max(1, |value|).
    pub fn check(&self, got: &[f32], tol: f64) -> Result<KeptCheck, String> {
        let (v, n) = (self.v, self.v.len());
        if let Some(i) = got.iter().position(|g| g.is_nan() || *g == f32::INFINITY) {
            return Err(format!("token {i} holds {} (v = {})", got[i], v[i]));
        }
        let kept: Vec<bool> = got.iter().map(|&g| g > f32::NEG_INFINITY).collect();
        let ambiguous = self.small != self.large;
        if !ambiguous && kept != self.exact {
            let diff: Vec<usize> = (0..n).filter(|&i| kept[i] != self.exact[i]).collect();
            return Err(format!(
                "kept set differs from the reference at {} tokens (got {} kept, want {}): {}",
                diff.len(),
                kept.iter().filter(|&&k| k).count(),
                self.exact.iter().filter(|&&k| k).count(),
                diff.iter()
                    .take(6)
                    .map(|&i| format!(
                        "[{i}: v={} got={} want kept={}]",
                        v[i], got[i], self.exact[i]
                    ))
                    .collect::<Vec<_>>()
                    .join(" ")
            ));
        }
        if ambiguous {
            if let Some(i) =
                (0..n).find(|&i| (self.small[i] && !kept[i]) || (kept[i] && !self.large[i]))
            {
                return Err(format!(
                    "near a cut, token {i} (v = {}, got {}) lies outside the accepted range of sets",
                    v[i], got[i]
                ));
            }
            let lowest_kept = (0..n)
                .filter(|&i| kept[i])
                .map(|i| v[i])
                .fold(f64::INFINITY, f64::min);
            if let Some(i) = (0..n).find(|&i| !kept[i] && v[i] >= lowest_kept) {
                return Err(format!(
                    "not a threshold set: token {i} (v = {}) dropped, v = {lowest_kept} kept",
                    v[i]
                ));
            }
        }
        if !kept.iter().any(|&k| k) {
            return Err("nothing kept".into());
        }
        let want = logprobs_over(v, self.t, &kept);
        let mut max_error = 0.0f64;
        for i in (0..n).filter(|&i| kept[i]) {
            let err = (got[i] as f64 - want[i]).abs() / want[i].abs().max(1.0);
            max_error = max_error.max(err);
            if err > tol || err.is_nan() {
                return Err(format!(
                    "token {i}: ln p = {} but the reference gives {} (v = {}, error {err:.2e} > {tol:.0e})",
                    got[i], want[i], v[i]
                ));
            }
        }
        Ok(KeptCheck {
            ambiguous,
            max_error,
        })
    }
}

/// The reference of a draw from a known kept set with the crate's random
/// stream: inverse CDF walks the kept tokens in index order with weights
/// e^z until the running sum exceeds u·Σ (u the stream's uniform at counter
/// `INVERSE_CDF`); Gumbel-max takes argmax z + G_i (G_i the stream's Gumbel
/// variate at counter i), the lowest index on a tie. z is taken relative to the
/// max rounded to f32, as the kernel does, so that the weights agree to the
/// last bit. Returns the token and whether the draw falls within 1e-9 of a
/// boundary (where rounding may pick a neighbour).
pub fn reference_draw(
    v: &[f64],
    keep: &[bool],
    t: f32,
    draw: Draw,
    stream: Stream,
) -> (usize, bool) {
    let max = max_of(v);
    let reference = (max as f32).clamp(f32::MIN, f32::MAX) as f64;
    let inv_t = 1.0 / t as f64;
    let z = |x: f64| (x - reference) * inv_t;
    let kept = || (0..v.len()).filter(|&i| keep[i]);
    match draw {
        Draw::InverseCdf => {
            let total: f64 = kept().map(|i| z(v[i]).exp()).sum();
            let target = stream.uniform(INVERSE_CDF) * total;
            let mut acc = 0.0;
            let mut near = false;
            let mut chosen = None;
            for i in kept() {
                acc += z(v[i]).exp();
                near |= (acc - target).abs() <= 1e-9 * total;
                if acc > target && chosen.is_none() {
                    chosen = Some(i);
                }
            }
            (chosen.unwrap_or_else(|| kept().next_back().unwrap()), near)
        }
        Draw::GumbelMax => {
            let mut best = (f64::NEG_INFINITY, usize::MAX);
            let mut second = f64::NEG_INFINITY;
            for i in kept() {
                let g = z(v[i]) + stream.gumbel(i as u64);
                if g > best.0 {
                    second = best.0;
                    best = (g, i);
                } else {
                    second = second.max(g);
                }
            }
            let near = best.0 - second <= 1e-12 * best.0.abs().max(1.0);
            (best.1, near)
        }
        other => panic!("a draw the reference does not know: {other:?}"),
    }
}

/// The outcome of a chi-square goodness-of-fit test.
#[derive(Clone, Copy, Debug)]
pub struct Fit {
    pub chi2: f64,
    pub df: usize,
    pub p_value: f64,
    /// Bins after pooling.
    pub bins: usize,
}

/// Pearson's chi-square of `counts` against `probs` (which sum to 1). Bins
/// whose expected count is below 5 are pooled into one bin (merged with the
/// smallest other bin if the pool itself expects fewer than 5). A draw of a
/// zero-probability token is an error, not a statistic: returned as `Err`.
pub fn chi_square(counts: &[u64], probs: &[f64]) -> Result<Fit, String> {
    assert_eq!(counts.len(), probs.len());
    let draws: u64 = counts.iter().sum();
    if let Some(i) = (0..counts.len()).find(|&i| probs[i] == 0.0 && counts[i] > 0) {
        return Err(format!(
            "token {i} has probability 0 but was drawn {} times",
            counts[i]
        ));
    }
    let n = draws as f64;
    let mut bins: Vec<(f64, f64)> = Vec::new(); // (observed, expected)
    let mut pool = (0.0, 0.0);
    for (&c, &p) in counts.iter().zip(probs) {
        let e = p * n;
        if e >= 5.0 {
            bins.push((c as f64, e));
        } else if p > 0.0 {
            pool.0 += c as f64;
            pool.1 += e;
        }
    }
    if pool.1 > 0.0 {
        if pool.1 < 5.0 && !bins.is_empty() {
            let smallest = (0..bins.len())
                .min_by(|&a, &b| bins[a].1.total_cmp(&bins[b].1))
                .unwrap();
            bins[smallest].0 += pool.0;
            bins[smallest].1 += pool.1;
        } else {
            bins.push(pool);
        }
    }
    if bins.len() < 2 {
        return Ok(Fit {
            chi2: 0.0,
            df: 0,
            p_value: 1.0,
            bins: bins.len(),
        });
    }
    let chi2: f64 = bins.iter().map(|&(o, e)| (o - e) * (o - e) / e).sum();
    let df = bins.len() - 1;
    Ok(Fit {
        chi2,
        df,
        p_value: gamma_q(df as f64 / 2.0, chi2 / 2.0),
        bins: bins.len(),
    })
}

/// ln Γ(x) for x > 0: Lanczos' approximation (g = 7, nine terms; relative
/// error near 1e-15), with the reflection formula below ½.
pub fn ln_gamma(x: f64) -> f64 {
    const G: f64 = 7.0;
    const C: [f64; 9] = [
        0.999_999_999_999_809_9,
        676.520_368_121_885_1,
        -1_259.139_216_722_402_8,
        771.323_428_777_653_1,
        -176.615_029_162_140_6,
        12.507_343_278_686_905,
        -0.138_571_095_265_720_12,
        9.984_369_578_019_572e-6,
        1.505_632_735_149_311_6e-7,
    ];
    if x < 0.5 {
        let pi = std::f64::consts::PI;
        return (pi / (pi * x).sin()).ln() - ln_gamma(1.0 - x);
    }
    let x = x - 1.0;
    let mut a = C[0];
    for (k, &c) in C.iter().enumerate().skip(1) {
        a += c / (x + k as f64);
    }
    let t = x + G + 0.5;
    0.5 * (2.0 * std::f64::consts::PI).ln() + (x + 0.5) * t.ln() - t + a.ln()
}

/// The regularised upper incomplete gamma function Q(a, x) = Γ(a, x)/Γ(a),
/// the chi-square survival function at Q(df/2, χ²/2). Below x = a + 1 the
/// power series of the lower function P converges fast (Q = 1 − P); above it,
/// the continued fraction of Q, evaluated by the modified Lentz method.
pub fn gamma_q(a: f64, x: f64) -> f64 {
    assert!(a > 0.0 && x >= 0.0, "gamma_q({a}, {x})");
    if x == 0.0 {
        return 1.0;
    }
    // x^a e^-x / Γ(a), the factor both expansions share.
    let front = (a * x.ln() - x - ln_gamma(a)).exp();
    if x < a + 1.0 {
        // P(a, x) = front · Σₙ xⁿ / (a (a+1) … (a+n)).
        let mut term = 1.0 / a;
        let mut sum = term;
        let mut denom = a;
        for _ in 0..10_000 {
            denom += 1.0;
            term *= x / denom;
            sum += term;
            if term.abs() < sum.abs() * 1e-16 {
                break;
            }
        }
        (1.0 - front * sum).max(0.0)
    } else {
        // Q(a, x) = front · 1/(x+1−a− 1·(1−a)/(x+3−a− 2·(2−a)/(x+5−a− …))).
        let tiny = 1e-300;
        let mut b = x + 1.0 - a;
        let mut c = 1.0 / tiny;
        let mut d = 1.0 / b;
        let mut h = d;
        for i in 1..10_000 {
            let an = -(i as f64) * (i as f64 - a);
            b += 2.0;
            d = an * d + b;
            if d.abs() < tiny {
                d = tiny;
            }
            c = b + an / c;
            if c.abs() < tiny {
                c = tiny;
            }
            d = 1.0 / d;
            let delta = d * c;
            h *= delta;
            if (delta - 1.0).abs() < 1e-16 {
                break;
            }
        }
        front * h
    }
}
