//! One row, start to finish: the three algorithms and the special-value rules.
//!
//! ```text
//! three-pass  max = max(x);  e = exp((x - max)/t), S = Σe (stored);  y = e / S
//! online      per block of ONLINE_BLOCK: m_b = max(block); if m_b > max: S *= e^((max - m_b)/t), max = m_b;
//!             S += Σ exp((block - max)/t)           (one read of the row from memory)
//!             then y = exp((x - max)/t) / S
//! two-pass    see two_pass.rs
//! ```
//! Statistics end as (max, ln S) with S = Σ exp((x - max)/t) ≥ 1, from which
//! log-softmax is y = (x - max)/t - ln S and logsumexp is max + t · ln S.
//!
//! Special values (every ISA, every algorithm): a NaN anywhere makes every
//! output NaN; k entries of +inf take 1/k each and the rest 0; a row of only
//! -inf (or an empty row) gives softmax 0, log-softmax -inf, logsumexp -inf.
//! They are found without a per-element test: the max is ±inf, or the sum is NaN.

use crate::exp::CUTOFF;
use crate::exp_sum::ExpSum;
use crate::loops::{run, Io};
use crate::max::MinMax;
use crate::output::{ExpScale, Fill, InfShare, LogSoftmaxOut, Map, Scale};
use crate::scan::SpecialScan;
use crate::shift::{with_shift, AnyShift, Shift};
use crate::two_pass::{TwoPassOut, TwoPassSum, LIMIT};
use crate::{Method, Output, Temperature};
use pulp::Simd;

/// Elements per online block: small enough that the block's second read hits L1.
pub const ONLINE_BLOCK: usize = 2048;

/// Lifts the subnormal floor a little so rounding never lands just below it.
const FLOOR_MARGIN: f64 = 1.0 + 1.0 / 524_288.0; // 1 + 2^-19

/// A row that follows the special-value rules instead of the formula.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Special {
    Nan,
    PosInf(u64),
    Masked,
}

#[derive(Clone, Copy, Debug)]
enum Stats {
    Special(Special),
    /// S = Σ exp((x - max)/t), as ln S; `min` is a lower bound of the row.
    Finite {
        max: f32,
        min: f32,
        ln_sum: f64,
    },
}

/// (max, min) of a row.
#[inline(always)]
fn row_range<S: Simd>(simd: S, x: &[f32]) -> (f32, f32) {
    let mut k = MinMax::new();
    run(simd, Io::Read(x), &mut k);
    (k.max, k.min)
}

/// Whether some z = (x - max)/t of a row with this max and min may fall below
/// `cutoff` (then the passes test each element). The margin covers the
/// roundings of z; a NaN or infinite bound answers yes.
#[inline(always)]
fn may_fall_below(max: f32, min: f32, inv_t: f32, cutoff: f64) -> bool {
    let z_min = (min as f64 - max as f64) * inv_t as f64;
    let above = z_min * (1.0 + 1.0 / 1_048_576.0) >= cutoff;
    !above
}

/// An upper bound of ln s for s ≥ 1, within ln 2 of it: (⌊log2 s⌋ + 1) · ln 2.
#[inline(always)]
fn ln_upper_bound(s: f64) -> f64 {
    let exponent = ((s.to_bits() >> 52) & 0x7ff) as f64 - 1023.0;
    (exponent + 1.0) * core::f64::consts::LN_2
}

/// Σ exp((x - max)/t) over `io`, storing the terms if `io` writes.
#[inline(always)]
fn exp_sum<S: Simd>(simd: S, io: Io<'_>, max: f32, min: f32, inv_t: f32) -> f64 {
    let flush = may_fall_below(max, min, inv_t, CUTOFF as f64);
    with_shift!(AnyShift::new(max, min, inv_t), z => if flush {
        exp_sum_with::<S, _, true>(simd, io, z)
    } else {
        exp_sum_with::<S, _, false>(simd, io, z)
    })
}

#[inline(always)]
fn exp_sum_with<S: Simd, Z: Shift, const FLUSH: bool>(simd: S, io: Io<'_>, z: Z) -> f64 {
    let mut k = ExpSum::<Z, FLUSH>::new(z);
    run(simd, io, &mut k);
    k.total
}

/// Classifies a row whose max is not finite (or a block that is all -inf).
#[inline(always)]
fn classify<S: Simd>(simd: S, x: &[f32]) -> Special {
    let mut k = SpecialScan::default();
    run(simd, Io::Read(x), &mut k);
    if k.nans > 0 {
        Special::Nan
    } else if k.pos_infs > 0 {
        Special::PosInf(k.pos_infs)
    } else {
        Special::Masked
    }
}

#[inline(always)]
fn finite_or_nan(max: f32, min: f32, sum: f64) -> Stats {
    if sum.is_nan() {
        Stats::Special(Special::Nan)
    } else {
        Stats::Finite {
            max,
            min,
            ln_sum: sum.ln(),
        }
    }
}

#[inline(always)]
fn three_pass_stats<S: Simd>(simd: S, x: &[f32], inv_t: f32) -> Stats {
    let (max, min) = row_range(simd, x);
    if !max.is_finite() {
        return Stats::Special(classify(simd, x));
    }
    finite_or_nan(max, min, exp_sum(simd, Io::Read(x), max, min, inv_t))
}

#[inline(always)]
fn online_stats<S: Simd>(simd: S, x: &[f32], inv_t: f32) -> Stats {
    let mut max = f32::NEG_INFINITY;
    let mut min = f32::INFINITY;
    let mut sum = 0.0f64;
    for block in x.chunks(ONLINE_BLOCK) {
        let (block_max, block_min) = row_range(simd, block);
        min = min.min(block_min);
        if block_max == f32::INFINITY {
            return Stats::Special(classify(simd, x));
        }
        if block_max == f32::NEG_INFINITY {
            // Only -inf here, unless a NaN hid from max.
            match classify(simd, block) {
                Special::Masked => continue,
                other => return Stats::Special(other),
            }
        }
        if block_max > max {
            sum *= ((max as f64 - block_max as f64) * inv_t as f64).exp();
            max = block_max;
        }
        sum += exp_sum(simd, Io::Read(block), max, block_min, inv_t);
    }
    if max == f32::NEG_INFINITY {
        return Stats::Special(Special::Masked);
    }
    finite_or_nan(max, min, sum)
}

/// Pass 1 of two-pass: either the (S, E, max) triple for pass 2, or the row's
/// statistics when the row is special or outside the exponent range.
enum TwoPass {
    Exp(TwoPassSum),
    Done(Stats),
}

#[inline(always)]
fn two_pass_sum<S: Simd>(simd: S, x: &[f32], inv_t: f32) -> TwoPass {
    let mut k = TwoPassSum::new(inv_t);
    run(simd, Io::Read(x), &mut k);
    if !k.max.is_finite() {
        return TwoPass::Done(Stats::Special(classify(simd, x)));
    }
    // Out of range first: such rows can make the pair sum NaN without any NaN input.
    let top = k.max * inv_t;
    if !(-LIMIT / 2.0..=LIMIT).contains(&top) {
        return TwoPass::Done(online_stats(simd, x, inv_t));
    }
    if k.sum.is_nan() {
        return TwoPass::Done(Stats::Special(Special::Nan));
    }
    TwoPass::Exp(k)
}

#[inline(always)]
fn stats<S: Simd>(simd: S, method: Method, x: &[f32], inv_t: f32) -> Stats {
    match method {
        Method::ThreePass => three_pass_stats(simd, x, inv_t),
        Method::Online => online_stats(simd, x, inv_t),
        Method::TwoPass => match two_pass_sum(simd, x, inv_t) {
            TwoPass::Done(stats) => stats,
            TwoPass::Exp(k) => {
                // ln Σ e^(x·inv_t) = E ln 2 + ln S; shifted by the max, in f64.
                let ln_sum =
                    k.exponent * core::f64::consts::LN_2 + k.sum.ln() - k.max as f64 * inv_t as f64;
                // S counts the max's own term, e^0 = 1, so ln S ≥ 0; the terms' rounding
                // can take it a hair below, which would make a log-probability positive.
                Stats::Finite {
                    max: k.max,
                    min: f32::NEG_INFINITY,
                    ln_sum: ln_sum.max(0.0),
                }
            }
        },
    }
}

/// Writes a special row's outputs. `x` is `None` in place (then `y` still holds the input).
#[inline(always)]
fn write_special<S: Simd>(
    simd: S,
    output: Output,
    special: Special,
    x: Option<&[f32]>,
    y: &mut [f32],
) {
    let io = Io::write(x, y);
    match (special, output) {
        (Special::Nan, _) => run(simd, io, &mut Map(Fill(f32::NAN))),
        (Special::Masked, Output::Softmax) => run(simd, io, &mut Map(Fill(0.0))),
        (Special::Masked, Output::LogSoftmax) => run(simd, io, &mut Map(Fill(f32::NEG_INFINITY))),
        (Special::PosInf(k), Output::Softmax) => run(
            simd,
            io,
            &mut Map(InfShare {
                on_inf: (1.0 / k as f64) as f32,
                other: 0.0,
            }),
        ),
        (Special::PosInf(k), Output::LogSoftmax) => run(
            simd,
            io,
            &mut Map(InfShare {
                on_inf: -(k as f64).ln() as f32,
                other: f32::NEG_INFINITY,
            }),
        ),
    }
}

/// The smallest normal f32 times S, raised by the margin: e below it gives a subnormal e/S.
#[inline(always)]
fn subnormal_floor(sum: f64) -> f32 {
    (f32::MIN_POSITIVE as f64 * sum * FLOOR_MARGIN) as f32
}

/// Softmax or log-softmax of one row: out of place when `x` is given, else in place on `y`.
#[inline(always)]
pub(crate) fn forward_row<S: Simd>(
    simd: S,
    output: Output,
    method: Method,
    temperature: Temperature,
    x: Option<&[f32]>,
    y: &mut [f32],
) {
    let inv_t = temperature.inv;
    let stats = match (output, method) {
        (Output::Softmax, Method::ThreePass) => {
            let (max, min) = row_range(simd, x.unwrap_or(y));
            if !max.is_finite() {
                let special = classify(simd, x.unwrap_or(y));
                return write_special(simd, output, special, x, y);
            }
            let sum = exp_sum(simd, Io::write(x, y), max, min, inv_t);
            if sum.is_nan() {
                return write_special(simd, output, Special::Nan, x, y);
            }
            let (floor, r) = (subnormal_floor(sum), (1.0 / sum) as f32);
            // Every stored e ≥ floor when z ≥ ln(floor) (the 1e-5 covers exp's
            // error); ln S is bounded from its exponent, saving a libm call per row.
            let floor_z = CUTOFF as f64 + ln_upper_bound(sum) + FLOOR_MARGIN.ln() + 1e-5;
            return if may_fall_below(max, min, inv_t, floor_z) {
                run(simd, Io::InPlace(y), &mut Map(Scale::<true> { floor, r }))
            } else {
                run(simd, Io::InPlace(y), &mut Map(Scale::<false> { floor, r }))
            };
        }
        (Output::Softmax, Method::TwoPass) => match two_pass_sum(simd, x.unwrap_or(y), inv_t) {
            TwoPass::Exp(k) => {
                let out = TwoPassOut::new(inv_t, k.sum, k.exponent);
                return run(simd, Io::write(x, y), &mut Map(out));
            }
            TwoPass::Done(stats) => stats,
        },
        _ => stats(simd, method, x.unwrap_or(y), inv_t),
    };
    match stats {
        Stats::Special(special) => write_special(simd, output, special, x, y),
        Stats::Finite { max, min, ln_sum } => {
            let shift = AnyShift::new(max, min, inv_t);
            match output {
                Output::Softmax => {
                    // e^z / S is subnormal below z = ln(MIN_POSITIVE · S).
                    let cutoff = (CUTOFF as f64 + ln_sum + FLOOR_MARGIN.ln()) as f32;
                    let r = (-ln_sum).exp() as f32;
                    let flush = may_fall_below(max, min, inv_t, cutoff as f64);
                    with_shift!(shift, z => if flush {
                        let map = ExpScale::<_, true> { shift: z, cutoff, r };
                        run(simd, Io::write(x, y), &mut Map(map))
                    } else {
                        let map = ExpScale::<_, false> { shift: z, cutoff, r };
                        run(simd, Io::write(x, y), &mut Map(map))
                    })
                }
                Output::LogSoftmax => with_shift!(shift, z => {
                    let map = LogSoftmaxOut {
                        shift: z,
                        ln_sum: ln_sum as f32,
                    };
                    run(simd, Io::write(x, y), &mut Map(map))
                }),
            }
        }
    }
}

/// t · ln Σ exp(x/t) of one row.
#[inline(always)]
pub(crate) fn logsumexp_row<S: Simd>(
    simd: S,
    method: Method,
    temperature: Temperature,
    x: &[f32],
) -> f32 {
    match stats(simd, method, x, temperature.inv) {
        Stats::Special(Special::Nan) => f32::NAN,
        Stats::Special(Special::PosInf(_)) => f32::INFINITY,
        Stats::Special(Special::Masked) => f32::NEG_INFINITY,
        Stats::Finite { max, ln_sum, .. } => (max as f64 + temperature.t as f64 * ln_sum) as f32,
    }
}
