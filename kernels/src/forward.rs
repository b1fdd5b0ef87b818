//! Softmax, log-softmax and logsumexp: one row start to finish (the two
//! algorithms and the special-value rules), and the jobs over rows.
//!
//! ```text
//! three-pass  max = max(x);  e = exp((x - max)/t), S = Σe (stored);  y = e / S
//! online      per block of ONLINE_BLOCK: m_b = max(block); if m_b > max: S *= e^((max - m_b)/t), max = m_b;
//!             S += Σ exp((block - max)/t)           (one read of the row from memory)
//!             then y = exp((x - max)/t) / S
//! ```
//! Statistics end as (max, ln S) with S = Σ exp((x - max)/t) ≥ 1, from which
//! log-softmax is y = (x - max)/t - ln S and logsumexp is max + t · ln S.
//!
//! Special values (every ISA, every algorithm): a NaN anywhere makes every
//! output NaN; k entries of +inf take 1/k each and the rest 0; a row of only
//! -inf (or an empty row) gives softmax 0, log-softmax -inf, logsumexp -inf.
//! They are found without a per-element test: the max is ±inf, or the sum is NaN.

use crate::arch::Arch;
use crate::exp::CUTOFF;
use crate::exp_sum::{ExpSum, ExpSumBelowMax};
use crate::loops::{
    read, run, run_short, run_short_ahead, write, AskAhead, Io, NextRow, Resident, Stage, SHORT_ROW,
};
use crate::max::MinMax;
use crate::output::{ExpScale, Fill, InfShare, LogSoftmaxOut, Map, Scale};
use crate::scan::SpecialScan;
use crate::shift::{with_shift, with_shift_and_test, AnyShift, Shift};
use crate::storage::{self, AnySlice, AnySliceMut, Kind};
use crate::strided::{SplitRows, Strided, StridedMut};
use crate::tanh::SoftCap;
use crate::{stage_len, Batch, Job, Method, Output, Temperature};

/// Elements per online block: small enough that the block's second read hits L1.
pub const ONLINE_BLOCK: usize = 2048;

/// Lifts the subnormal floor a little so rounding never lands just below it.
const FLOOR_MARGIN: f64 = 1.0 + 1.0 / 524_288.0; // 1 + 2^-19

/// A row that follows the special-value rules instead of the formula.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Special {
    Nan,
    PosInf(u64),
    Masked,
}

#[derive(Clone, Copy, Debug)]
pub(crate) enum Stats {
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
pub(crate) fn row_range<A: Arch>(arch: A, st: &mut Stage<'_>, x: AnySlice<'_>) -> (f32, f32) {
    let mut k = MinMax::new();
    read(arch, x, st, &mut k);
    (k.max, k.min)
}

/// [`row_range`], compiled into the caller for a short f32 row ([`run_short`]).
#[inline(always)]
fn row_range_short<A: Arch>(arch: A, st: &mut Stage<'_>, x: AnySlice<'_>) -> (f32, f32) {
    let mut k = MinMax::new();
    run_short(arch, Io::Read(x), st, &mut k);
    (k.max, k.min)
}

/// Whether some z = (x - max)/t of a row with this max and min may fall below
/// `cutoff` (then the passes test each element). The margin covers the
/// roundings of z; a NaN or infinite bound answers yes.
#[inline(always)]
pub(crate) fn may_fall_below(max: f32, min: f32, inv_t: f32, cutoff: f64) -> bool {
    let z_min = (min as f64 - max as f64) * inv_t as f64;
    let above = z_min * (1.0 + 1.0 / 1_048_576.0) >= cutoff;
    !above
}

/// The z below which e^z / S is subnormal, z = ln(MIN_POSITIVE · S) (with
/// the floor's margin), and whether some z of a row with this max, min and
/// 1/t may fall below it (then the softmax output is tested per element).
#[inline(always)]
pub(crate) fn softmax_cutoff(max: f32, min: f32, inv_t: f32, ln_sum: f64) -> (f32, bool) {
    let cutoff = (CUTOFF as f64 + ln_sum + FLOOR_MARGIN.ln()) as f32;
    (cutoff, may_fall_below(max, min, inv_t, cutoff as f64))
}

/// An upper bound of ln s for s ≥ 1, within ln 2 of it: (⌊log2 s⌋ + 1) · ln 2.
#[inline(always)]
fn ln_upper_bound(s: f64) -> f64 {
    let exponent = ((s.to_bits() >> 52) & 0x7ff) as f64 - 1023.0;
    (exponent + 1.0) * core::f64::consts::LN_2
}

/// A pass over e^z, z = (x - max)/t, compiled for each form of z and with or
/// without the per-element underflow test; [`exp_pass`] picks the variant.
pub(crate) trait ExpPass {
    type Output;
    fn pass<A: Arch, Z: Shift, const FLUSH: bool>(
        self,
        arch: A,
        st: &mut Stage<'_>,
        z: Z,
    ) -> Self::Output;
}

/// Runs `pass` with the cheapest exact form of z for a row with this max,
/// min and 1/t, testing each element against the exp cutoff only where some
/// z of the row may fall below it.
#[inline(always)]
pub(crate) fn exp_pass<A: Arch, P: ExpPass>(
    arch: A,
    st: &mut Stage<'_>,
    (max, min, inv_t): (f32, f32, f32),
    pass: P,
) -> P::Output {
    let flush = may_fall_below(max, min, inv_t, CUTOFF as f64);
    with_shift_and_test!(AnyShift::new(max, min, inv_t), flush, z, TEST => {
        pass.pass::<A, _, TEST>(arch, st, z)
    })
}

/// Σ e^z over a row, storing the terms if the [`Io`] writes.
pub(crate) struct SumExp<'a>(pub(crate) Io<'a>);

impl ExpPass for SumExp<'_> {
    type Output = f64;
    #[inline(always)]
    fn pass<A: Arch, Z: Shift, const FLUSH: bool>(self, arch: A, st: &mut Stage<'_>, z: Z) -> f64 {
        let mut k = ExpSum::<Z, FLUSH>::new(z);
        run(arch, self.0, st, &mut k);
        k.total
    }
}

/// (Σ e^z over the entries below the max, count of entries at it).
struct SumBelowMax<'a>(AnySlice<'a>);

impl ExpPass for SumBelowMax<'_> {
    type Output = (f64, f64);
    #[inline(always)]
    fn pass<A: Arch, Z: Shift, const FLUSH: bool>(
        self,
        arch: A,
        st: &mut Stage<'_>,
        z: Z,
    ) -> (f64, f64) {
        let mut k = ExpSumBelowMax::<Z, FLUSH>::new(z);
        read(arch, self.0, st, &mut k);
        (k.total, k.maxima)
    }
}

/// Σ exp((x - max)/t) over `io`, storing the terms if `io` writes.
#[inline(always)]
fn exp_sum<A: Arch>(
    arch: A,
    st: &mut Stage<'_>,
    io: Io<'_>,
    max: f32,
    min: f32,
    inv_t: f32,
) -> f64 {
    exp_pass(arch, st, (max, min, inv_t), SumExp(io))
}

/// [`SumExp`] for a row of a forward job, which asks for `next` (the batch's
/// next row, and for log-softmax perhaps its output row) while it runs: a row with no z below the exp cutoff (the common
/// case) runs through [`run_short_ahead`], compiled into the caller when it
/// is a short f32 row; a row that needs the per-element test runs as in
/// [`SumExp`]. The same arithmetic either way, so the same bits.
struct SumExpAhead<'a, P>(Io<'a>, P);

impl<P: AskAhead> ExpPass for SumExpAhead<'_, P> {
    type Output = f64;
    #[inline(always)]
    fn pass<A: Arch, Z: Shift, const FLUSH: bool>(self, arch: A, st: &mut Stage<'_>, z: Z) -> f64 {
        let mut k = ExpSum::<Z, FLUSH>::new(z);
        match FLUSH {
            false => run_short_ahead(arch, self.0, self.1, st, &mut k),
            true => run(arch, self.0, st, &mut k),
        }
        k.total
    }
}

/// Classifies a row whose max is not finite (or a block that is all -inf).
#[inline(always)]
pub(crate) fn classify<A: Arch>(arch: A, st: &mut Stage<'_>, x: AnySlice<'_>) -> Special {
    let mut k = SpecialScan::default();
    read(arch, x, st, &mut k);
    if k.nans > 0 {
        Special::Nan
    } else if k.pos_infs > 0 {
        Special::PosInf(k.pos_infs)
    } else {
        Special::Masked
    }
}

/// S below this is recomputed without the max's own term (see [`ln_sum_peaked`]).
pub(crate) const PEAKED: f64 = 1.0 + 1.0 / 64.0;

/// The statistics of a row with a finite max and min, from its sum S.
#[inline(always)]
pub(crate) fn finite_or_nan<A: Arch>(
    arch: A,
    st: &mut Stage<'_>,
    x: AnySlice<'_>,
    (max, min, inv_t): (f32, f32, f32),
    sum: f64,
) -> Stats {
    if sum.is_nan() {
        return Stats::Special(Special::Nan);
    }
    let ln_sum = if sum < PEAKED {
        ln_sum_peaked(arch, st, x, max, min, inv_t)
    } else {
        sum.ln()
    };
    Stats::Finite { max, min, ln_sum }
}

/// ln S of a row whose max dominates (S < 1 + 2^-6), with relative accuracy.
/// There ln S ≈ S - 1 is the log-softmax of the max itself, but the terms
/// that make up S - 1 were added into the f32 lane that also held the max's
/// e^0 = 1 and lost their bits below 2^-24. Summed apart from the max's terms,
/// they keep them: ln S = ln_1p(m - 1 + Σ_{x < max} e^z) with m the count of maxima.
#[inline(always)]
fn ln_sum_peaked<A: Arch>(
    arch: A,
    st: &mut Stage<'_>,
    x: AnySlice<'_>,
    max: f32,
    min: f32,
    inv_t: f32,
) -> f64 {
    let (others, maxima) = exp_pass(arch, st, (max, min, inv_t), SumBelowMax(x));
    (maxima - 1.0 + others).ln_1p()
}

#[inline(always)]
fn three_pass_stats<A: Arch>(
    arch: A,
    st: &mut Stage<'_>,
    x: AnySlice<'_>,
    inv_t: f32,
    next: impl AskAhead,
) -> Stats {
    let (max, min) = row_range_short(arch, st, x);
    if !max.is_finite() {
        return Stats::Special(classify(arch, st, x));
    }
    let sum = exp_pass(arch, st, (max, min, inv_t), SumExpAhead(Io::Read(x), next));
    finite_or_nan(arch, st, x, (max, min, inv_t), sum)
}

#[inline(always)]
pub(crate) fn online_stats<A: Arch>(
    arch: A,
    st: &mut Stage<'_>,
    x: AnySlice<'_>,
    inv_t: f32,
) -> Stats {
    let mut max = f32::NEG_INFINITY;
    let mut min = f32::INFINITY;
    let mut sum = 0.0f64;
    for start in (0..x.len()).step_by(ONLINE_BLOCK) {
        let block = x.slice(start..x.len().min(start + ONLINE_BLOCK));
        let (block_max, block_min) = row_range(arch, st, block);
        min = min.min(block_min);
        if block_max == f32::INFINITY {
            return Stats::Special(classify(arch, st, x));
        }
        if block_max == f32::NEG_INFINITY {
            // Only -inf here, unless a NaN hid from max.
            match classify(arch, st, block) {
                Special::Masked => continue,
                other => return Stats::Special(other),
            }
        }
        if block_max > max {
            sum *= ((max as f64 - block_max as f64) * inv_t as f64).exp();
            max = block_max;
        }
        sum += exp_sum(arch, st, Io::Read(block), max, block_min, inv_t);
    }
    if max == f32::NEG_INFINITY {
        return Stats::Special(Special::Masked);
    }
    finite_or_nan(arch, st, x, (max, min, inv_t), sum)
}

/// The statistics behind log-softmax and logsumexp; three-pass asks for
/// `next` (the batch's next row, perhaps with the output row) while it sums.
#[inline(always)]
fn stats<A: Arch>(
    arch: A,
    st: &mut Stage<'_>,
    method: Method,
    x: AnySlice<'_>,
    inv_t: f32,
    next: impl AskAhead,
) -> Stats {
    match method {
        Method::ThreePass => three_pass_stats(arch, st, x, inv_t, next),
        Method::Online => online_stats(arch, st, x, inv_t),
    }
}

/// Writes a special row's outputs. `x` is `None` in place (then `y` still holds the input).
#[inline(always)]
fn write_special<A: Arch>(
    arch: A,
    st: &mut Stage<'_>,
    output: Output,
    special: Special,
    x: Option<AnySlice<'_>>,
    y: AnySliceMut<'_>,
) {
    match (special, output) {
        (Special::Nan, _) => write(arch, x, y, st, &mut Map(Fill(f32::NAN))),
        (Special::Masked, Output::Softmax) => write(arch, x, y, st, &mut Map(Fill(0.0))),
        (Special::Masked, Output::LogSoftmax) => {
            write(arch, x, y, st, &mut Map(Fill(f32::NEG_INFINITY)))
        }
        (Special::PosInf(k), Output::Softmax) => write(
            arch,
            x,
            y,
            st,
            &mut Map(InfShare {
                on_inf: (1.0 / k as f64) as f32,
                other: 0.0,
            }),
        ),
        (Special::PosInf(k), Output::LogSoftmax) => write(
            arch,
            x,
            y,
            st,
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

/// For exponentials e = exp(z) stored while their sum S was taken: the floor
/// below which e/S is subnormal, and whether some e of a row with this max,
/// min and 1/t may fall below it (then the output pass tests each one).
#[inline(always)]
pub(crate) fn stored_floor(max: f32, min: f32, inv_t: f32, sum: f64) -> (f32, bool) {
    // Every stored e ≥ floor when z ≥ ln(floor) (the 1e-5 covers exp's
    // error); ln S is bounded from its exponent, saving a libm call per row.
    let floor_z = CUTOFF as f64 + ln_upper_bound(sum) + FLOOR_MARGIN.ln() + 1e-5;
    (
        subnormal_floor(sum),
        may_fall_below(max, min, inv_t, floor_z),
    )
}

/// The three-pass softmax of a short f32 row (out of place from an f32 row,
/// or in place), held in registers: the passes of [`forward_row`] with the
/// same arithmetic, without a read or a call per pass. `None`, with `y`
/// untouched, for a row of another kind or length, or one that follows the
/// special-value rules.
#[inline(always)]
fn short_softmax<A: Arch>(
    arch: A,
    x: Option<AnySlice<'_>>,
    y: &mut AnySliceMut<'_>,
    inv_t: f32,
) -> Option<()> {
    let (x, y) = match (x, y) {
        (Some(AnySlice::F32(x)), AnySliceMut::F32(y)) => (Some(x), y),
        (None, AnySliceMut::F32(y)) => (None, y),
        _ => return None,
    };
    if !Resident::<A>::fits(y.len()) {
        return None;
    }
    let mut row = Resident::load(arch, x.unwrap_or(y));
    let mut range = MinMax::new();
    row.run(arch, &mut range);
    let (max, min) = (range.max, range.min);
    if !max.is_finite() {
        return None;
    }
    // As in exp_pass: the cheapest exact z, and the underflow test where needed.
    let flush = may_fall_below(max, min, inv_t, CUTOFF as f64);
    let sum = with_shift_and_test!(AnyShift::new(max, min, inv_t), flush, z, TEST => {
        let mut k = ExpSum::<_, TEST>::new(z);
        row.run(arch, &mut k);
        k.total
    });
    if sum.is_nan() {
        return None;
    }
    let (floor, flush) = stored_floor(max, min, inv_t, sum);
    let r = (1.0 / sum) as f32;
    if flush {
        row.run(arch, &mut Map(Scale::<true> { floor, r }));
    } else {
        row.run(arch, &mut Map(Scale::<false> { floor, r }));
    }
    row.store(arch, y);
    Some(())
}

/// The three-pass softmax of a row through memory: max; exp stored (in `y`
/// when it is f32, else in `exps`) while summed; the stored values scaled.
/// A short f32 row runs its passes compiled into the caller ([`run_short`]);
/// the exp pass asks for `next`, the batch's next row.
#[inline(always)]
fn three_pass_softmax<A: Arch>(
    arch: A,
    st: &mut Stage<'_>,
    inv_t: f32,
    x: Option<AnySlice<'_>>,
    mut y: AnySliceMut<'_>,
    exps: &mut [f32],
    next: NextRow,
) {
    let (max, min) = row_range_short(arch, st, x.unwrap_or(y.shared()));
    if !max.is_finite() {
        let special = classify(arch, st, x.unwrap_or(y.shared()));
        return write_special(arch, st, Output::Softmax, special, x, y);
    }
    // Where the exponentials wait for the sum: the output itself when it is f32.
    let in_output = y.kind() == Kind::F32;
    let n = y.len();
    let io = match in_output {
        true => Io::write(x, y.reborrow()),
        false => Io::Map(x.unwrap_or(y.shared()), AnySliceMut::F32(&mut exps[..n])),
    };
    let sum = exp_pass(arch, st, (max, min, inv_t), SumExpAhead(io, next));
    if sum.is_nan() {
        return write_special(arch, st, Output::Softmax, Special::Nan, x, y);
    }
    let (floor, flush) = stored_floor(max, min, inv_t, sum);
    let r = (1.0 / sum) as f32;
    // A match, not bool::then: a closure would be compiled outside the region.
    let io = match in_output {
        true => Io::InPlace(y),
        false => Io::Map(AnySlice::F32(&exps[..n]), y),
    };
    if flush {
        run_short(arch, io, st, &mut Map(Scale::<true> { floor, r }))
    } else {
        run_short(arch, io, st, &mut Map(Scale::<false> { floor, r }))
    }
}

/// The three-pass softmax of each row. An f32 row (out of place from an f32
/// row, or in place) is matched here, once, and goes to the passes as its
/// slice, kept in registers rather than as a view in memory.
#[inline(always)]
fn softmax_rows<A: Arch>(
    arch: A,
    st: &mut Stage<'_>,
    temperature: Temperature,
    x: Option<Strided<'_>>,
    mut y: StridedMut<'_>,
    exps: &mut [f32],
) {
    let inv_t = temperature.inv;
    for i in 0..y.rows() {
        // A match, not Option::map: a closure would be compiled outside the
        // target-feature region.
        #[allow(clippy::manual_map)]
        let xi = match &x {
            Some(x) => Some(x.row(i)),
            None => None,
        };
        let next = match &x {
            Some(x) => x.next_row(i),
            None => y.next_row(i),
        };
        match (xi, y.row_mut(i)) {
            (Some(AnySlice::F32(xi)), AnySliceMut::F32(yi)) => {
                softmax_f32(arch, inv_t, Some(AnySlice::F32(xi)), yi, next)
            }
            (None, AnySliceMut::F32(yi)) => softmax_f32(arch, inv_t, None, yi, next),
            (xi, yi) => softmax_any(arch, st, inv_t, xi, yi, exps, next),
        }
    }
}

/// The three-pass softmax of an f32 row (`x` is f32 or `None`: in place).
#[inline(always)]
fn softmax_f32<A: Arch>(
    arch: A,
    inv_t: f32,
    x: Option<AnySlice<'_>>,
    y: &mut [f32],
    next: NextRow,
) {
    softmax_any(
        arch,
        &mut Stage::none(),
        inv_t,
        x,
        AnySliceMut::F32(y),
        &mut [],
        next,
    )
}

/// The three-pass softmax of a row of any kinds: in registers when it is short
/// enough, else through memory.
#[inline(always)]
pub(crate) fn softmax_any<A: Arch>(
    arch: A,
    st: &mut Stage<'_>,
    inv_t: f32,
    x: Option<AnySlice<'_>>,
    mut y: AnySliceMut<'_>,
    exps: &mut [f32],
    next: NextRow,
) {
    if short_softmax(arch, x, &mut y, inv_t).is_none() {
        three_pass_softmax(arch, st, inv_t, x, y, exps, next)
    }
}

/// Softmax or log-softmax of one row: out of place when `x` is given, else in
/// place on `y`. A three-pass softmax into a row that is not f32 keeps its
/// exponentials in `exps` (at least as long as the row): rounding them to
/// the output type before the division would round twice.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub(crate) fn forward_row<A: Arch>(
    arch: A,
    st: &mut Stage<'_>,
    output: Output,
    method: Method,
    temperature: Temperature,
    x: Option<AnySlice<'_>>,
    y: AnySliceMut<'_>,
    exps: &mut [f32],
    next: NextRow,
) {
    let inv_t = temperature.inv;
    let stats = match (output, method) {
        (Output::Softmax, Method::ThreePass) => {
            return softmax_any(arch, st, inv_t, x, y, exps, next)
        }
        _ => {
            // Log-softmax's output pass only subtracts, and would wait for its
            // row's lines: out of place, a row longer than a short one is
            // asked for with the next input row.
            let out = match (output, x.is_some(), &y) {
                (Output::LogSoftmax, true, AnySliceMut::F32(out)) if out.len() > SHORT_ROW => {
                    NextRow::of(out)
                }
                _ => NextRow::NONE,
            };
            stats(
                arch,
                st,
                method,
                x.unwrap_or(y.shared()),
                inv_t,
                (next, out),
            )
        }
    };
    match stats {
        Stats::Special(special) => write_special(arch, st, output, special, x, y),
        Stats::Finite { max, min, ln_sum } => {
            let shift = AnyShift::new(max, min, inv_t);
            match output {
                Output::Softmax => {
                    let (cutoff, flush) = softmax_cutoff(max, min, inv_t, ln_sum);
                    let r = (-ln_sum).exp() as f32;
                    with_shift_and_test!(shift, flush, z, TEST => {
                        let map = ExpScale::<_, TEST> { shift: z, cutoff, r };
                        write(arch, x, y, st, &mut Map(map))
                    })
                }
                // Into f16 or bf16, z - ln S is rounded to odd in f32 so that
                // the second rounding is as if from the exact difference.
                Output::LogSoftmax if y.kind() != Kind::F32 => with_shift!(shift, z => {
                    let map = LogSoftmaxOut::<_, true> {
                        shift: z,
                        ln_sum: ln_sum as f32,
                    };
                    write(arch, x, y, st, &mut Map(map))
                }),
                Output::LogSoftmax => with_shift!(shift, z => {
                    let map = LogSoftmaxOut::<_, false> {
                        shift: z,
                        ln_sum: ln_sum as f32,
                    };
                    run_short(arch, Io::write(x, y), st, &mut Map(map))
                }),
            }
        }
    }
}

/// t · ln Σ exp(x/t) of one row, in f64 (the caller rounds it once to its type).
#[inline(always)]
pub(crate) fn logsumexp_row<A: Arch>(
    arch: A,
    st: &mut Stage<'_>,
    method: Method,
    temperature: Temperature,
    x: AnySlice<'_>,
    next: NextRow,
) -> f64 {
    match stats(arch, st, method, x, temperature.inv, next) {
        Stats::Special(Special::Nan) => f64::NAN,
        Stats::Special(Special::PosInf(_)) => f64::INFINITY,
        Stats::Special(Special::Masked) => f64::NEG_INFINITY,
        Stats::Finite { max, ln_sum, .. } => max as f64 + temperature.t as f64 * ln_sum,
    }
}

/// Softmax or log-softmax over rows: `x → y`, or in place on `y` when `x` is `None`.
/// Under a soft-cap the rows are softmax(v), v = cap(x) (the temperature
/// folded into the cap's c), and `temperature` must be 1.
pub struct Forward<'a> {
    pub output: Output,
    pub method: Method,
    pub temperature: Temperature,
    pub cap: Option<SoftCap>,
    pub x: Option<Strided<'a>>,
    pub y: StridedMut<'a>,
}

/// Softmax or log-softmax of one soft-capped row: v = cap(x) written once (into
/// `y` when it is f32, else into `v_space`), then the method's passes over v.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn capped_row<A: Arch>(
    arch: A,
    st: &mut Stage<'_>,
    output: Output,
    method: Method,
    cap: SoftCap,
    x: Option<AnySlice<'_>>,
    mut y: AnySliceMut<'_>,
    v_space: &mut [f32],
    exps: &mut [f32],
) {
    let one = Temperature::default();
    if y.kind() == Kind::F32 {
        write(arch, x, y.reborrow(), st, &mut Map(cap));
        return forward_row(arch, st, output, method, one, None, y, exps, NextRow::NONE);
    }
    let v = &mut v_space[..y.len()];
    let source = x.unwrap_or(y.shared());
    write(arch, Some(source), AnySliceMut::F32(v), st, &mut Map(cap));
    let v = Some(AnySlice::F32(v));
    forward_row(arch, st, output, method, one, v, y, exps, NextRow::NONE)
}

/// ln Σ exp(v) of a soft-capped row, v = cap(x) written into `v_space`.
#[inline(always)]
fn capped_logsumexp<A: Arch>(
    arch: A,
    st: &mut Stage<'_>,
    method: Method,
    cap: SoftCap,
    x: AnySlice<'_>,
    v_space: &mut [f32],
) -> f64 {
    let v = &mut v_space[..x.len()];
    write(arch, Some(x), AnySliceMut::F32(v), st, &mut Map(cap));
    let v = AnySlice::F32(v);
    logsumexp_row(arch, st, method, Temperature::default(), v, NextRow::NONE)
}

impl Forward<'_> {
    /// The row read first: `x`, or `y` in place.
    #[inline(always)]
    fn input_kind(&self) -> Kind {
        self.x.as_ref().map_or(self.y.kind(), |x| x.kind())
    }

    /// (stage, widened input, exponentials) lengths of the scratch space: a
    /// [`Stage`] for f16 or bf16 rows; the input row in f32 when it is
    /// f16 or bf16 and the method reads it more than once (under a cap: the
    /// capped row, when the output is not f32); and a row of f32
    /// exponentials for a three-pass softmax whose output is not f32.
    #[inline(always)]
    fn scratch_parts(&self) -> (usize, usize, usize) {
        let stage = stage_len(&[self.input_kind(), self.y.kind()]);
        let cols = self.y.cols();
        let widened = match self.cap {
            Some(_) if self.y.kind() != Kind::F32 => cols,
            Some(_) => 0,
            None => widened_len(self.method, self.input_kind(), cols),
        };
        let three_pass_softmax = self.output == Output::Softmax && self.method == Method::ThreePass;
        let exps = if three_pass_softmax && self.y.kind() != Kind::F32 {
            cols
        } else {
            0
        };
        (stage, widened, exps)
    }
}

/// Whether a row of this kind is widened into f32 once, before the method
/// reads it: three-pass reads a row two or three times, and
/// widening it once costs less than converting it on every read. Online
/// rows (beyond the last-level cache) are read once, a chunk at a time.
#[inline(always)]
fn rereads(method: Method, kind: Kind) -> bool {
    kind != Kind::F32 && method != Method::Online
}

/// The scratch a row of `cols` elements of this kind needs for its f32 copy.
#[inline(always)]
fn widened_len(method: Method, kind: Kind, cols: usize) -> usize {
    if rereads(method, kind) {
        cols
    } else {
        0
    }
}

/// `x` widened into the front of `space`.
#[inline(always)]
fn widen_into<'s, A: Arch>(arch: A, x: AnySlice<'_>, space: &'s mut [f32]) -> AnySlice<'s> {
    let space = &mut space[..x.len()];
    storage::widen(arch, x, space);
    AnySlice::F32(space)
}

impl Job for Forward<'_> {
    type Output = ();

    fn scratch_len(&self) -> usize {
        let (stage, widened, exps) = self.scratch_parts();
        stage + widened + exps
    }

    #[inline(always)]
    fn run<A: Arch>(self, arch: A, scratch: &mut [f32]) {
        let (stage_len, widened_len, exps_len) = self.scratch_parts();
        let Forward {
            output,
            method,
            temperature,
            cap,
            x,
            mut y,
        } = self;
        if let Some(x) = &x {
            assert!(
                x.rows() == y.rows() && x.cols() == y.cols(),
                "input and output shapes differ"
            );
        }
        let scratch = &mut scratch[..stage_len + widened_len + exps_len];
        let (stage, rest) = scratch.split_at_mut(stage_len);
        let (space, exps) = rest.split_at_mut(widened_len);
        let mut stage = Stage::new(stage);
        if let Some(cap) = cap {
            for i in 0..y.rows() {
                // A match, not Option::map: a closure would be compiled outside the region.
                #[allow(clippy::manual_map)]
                let xi = match &x {
                    Some(x) => Some(x.row(i)),
                    None => None,
                };
                let (yi, st) = (y.row_mut(i), &mut stage);
                capped_row(arch, st, output, method, cap, xi, yi, space, exps);
            }
            return;
        }
        if output == Output::Softmax && method == Method::ThreePass && widened_len == 0 {
            return softmax_rows(arch, &mut stage, temperature, x, y, exps);
        }
        for i in 0..y.rows() {
            let next_in_place = y.next_row(i);
            let yi = y.row_mut(i);
            // A match, not Option::map: a closure would be compiled outside the
            // target-feature region. In place, the passes read the widened copy.
            let (xi, next) = match (&x, widened_len) {
                (Some(x), 0) => (Some(x.row(i)), x.next_row(i)),
                (None, 0) => (None, next_in_place),
                (Some(x), _) => (Some(widen_into(arch, x.row(i), space)), NextRow::NONE),
                (None, _) => (Some(widen_into(arch, yi.shared(), space)), NextRow::NONE),
            };
            let st = &mut stage;
            forward_row(arch, st, output, method, temperature, xi, yi, exps, next);
        }
    }
}

/// The softmax of one f32 row of at most [`SHORT_ROW_VECTORS`] vectors, in
/// place when `x` is `None`: held in registers, with no per-row setup (a
/// single call's cheapest path). Three-pass, with the same arithmetic as
/// [`Forward`]. Outputs `false`, with `y` untouched, for a row that is longer
/// or follows the special-value rules: then run it as a [`RowSoftmax`].
pub struct ShortSoftmax<'a> {
    pub temperature: Temperature,
    pub x: Option<&'a [f32]>,
    pub y: &'a mut [f32],
}

/// Vectors of f32 a [`ShortSoftmax`] row may span.
pub const SHORT_ROW_VECTORS: usize = crate::loops::UNROLL;

impl Job for ShortSoftmax<'_> {
    type Output = bool;

    fn scratch_len(&self) -> usize {
        0
    }

    #[inline(always)]
    fn run<A: Arch>(self, arch: A, _: &mut [f32]) -> bool {
        let x = match self.x {
            Some(x) if x.len() == self.y.len() => Some(AnySlice::F32(x)),
            Some(_) => return false,
            None => None,
        };
        let mut y = AnySliceMut::F32(self.y);
        short_softmax(arch, x, &mut y, self.temperature.inv).is_some()
    }
}

/// The three-pass softmax of one f32 row, in place when `x` is `None`, as a
/// job of its own: a single call with none of a batch's views, splitting or
/// working space. The row takes the passes of a batch row ([`softmax_any`]),
/// compiled into this job's region up to [`SHORT_ROW`] elements: the same
/// bits, special values included.
pub struct RowSoftmax<'a> {
    pub temperature: Temperature,
    pub x: Option<&'a [f32]>,
    pub y: &'a mut [f32],
}

impl Job for RowSoftmax<'_> {
    type Output = ();

    fn scratch_len(&self) -> usize {
        0
    }

    #[inline(always)]
    fn run<A: Arch>(self, arch: A, _: &mut [f32]) {
        // A match, not Option::map: a closure would be compiled outside the region.
        let x = match self.x {
            Some(x) => {
                assert_eq!(
                    x.len(),
                    self.y.len(),
                    "a softmax writes a row as long as it reads"
                );
                Some(AnySlice::F32(x))
            }
            None => None,
        };
        let inv_t = self.temperature.inv;
        let y = AnySliceMut::F32(self.y);
        softmax_any(
            arch,
            &mut Stage::none(),
            inv_t,
            x,
            y,
            &mut [],
            NextRow::NONE,
        )
    }
}

/// t · ln Σ exp(x/t) of each row into `out[i]`, rounded to `out`'s type;
/// under a soft-cap t · ln Σ exp(v), v = cap(x) with 1/t folded into the
/// cap's c (then `temperature` is still t).
pub struct LogSumExp<'a> {
    pub method: Method,
    pub temperature: Temperature,
    pub cap: Option<SoftCap>,
    pub x: Strided<'a>,
    pub out: AnySliceMut<'a>,
}

impl Job for LogSumExp<'_> {
    type Output = ();

    fn scratch_len(&self) -> usize {
        let (kind, cols) = (self.x.kind(), self.x.cols());
        let space = match self.cap {
            Some(_) => cols,
            None => widened_len(self.method, kind, cols),
        };
        stage_len(&[kind]) + space
    }

    #[inline(always)]
    fn run<A: Arch>(mut self, arch: A, scratch: &mut [f32]) {
        assert!(self.out.len() >= self.x.rows(), "one output per row");
        let (stage, space) = scratch.split_at_mut(stage_len(&[self.x.kind()]));
        let mut stage = Stage::new(stage);
        let (method, t) = (self.method, self.temperature);
        if let Some(cap) = self.cap {
            for i in 0..self.x.rows() {
                let ln_sum = capped_logsumexp(arch, &mut stage, method, cap, self.x.row(i), space);
                self.out.set(i, t.t as f64 * ln_sum);
            }
            return;
        }
        let widen = rereads(method, self.x.kind());
        for i in 0..self.x.rows() {
            let (xi, next) = match widen {
                true => (widen_into(arch, self.x.row(i), space), NextRow::NONE),
                false => (self.x.row(i), self.x.next_row(i)),
            };
            let value = logsumexp_row(arch, &mut stage, method, t, xi, next);
            self.out.set(i, value);
        }
    }
}

impl Batch for Forward<'_> {
    fn rows(&self) -> usize {
        self.y.rows()
    }
    fn split_at(self, k: usize) -> (Self, Self) {
        let (xa, xb) = self.x.split_rows(k);
        let (ya, yb) = self.y.split_at(k);
        let half = |x, y| Forward { x, y, ..self };
        (half(xa, ya), half(xb, yb))
    }
    fn combine(_: (), _: ()) {}
}

impl Batch for LogSumExp<'_> {
    fn rows(&self) -> usize {
        self.x.rows()
    }
    fn split_at(self, k: usize) -> (Self, Self) {
        let (xa, xb) = self.x.split_at(k);
        let (oa, ob) = self.out.split_at(xa.rows());
        let half = |x, out| LogSumExp { x, out, ..self };
        (half(xa, oa), half(xb, ob))
    }
    fn combine(_: (), _: ()) {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::arch::Portable;

    /// Rows of every length that fits: ordinary, shifted by a temperature,
    /// wide enough to need the underflow test, and special (which the short
    /// path leaves alone, untouched).
    fn rows(n: usize) -> Vec<(f32, Vec<f32>)> {
        let ramp = |scale: f32| {
            (0..n)
                .map(|i| ((i * 7919) % 23) as f32 * scale - 5.0)
                .collect()
        };
        let mut special: Vec<f32> = ramp(1.0);
        if n > 0 {
            special[n / 2] = f32::INFINITY;
        }
        vec![
            (1.0, ramp(1.0)),
            (0.7, ramp(0.37)),
            (1.0, ramp(9.0)),
            (2.5, ramp(-4.0)),
            (1.0, special),
        ]
    }

    /// The short path gives the bits of the passes through memory, in place
    /// and out of place, or declines and leaves the row as it was.
    fn short_equals_memory<A: Arch>(arch: A) {
        let max_len = crate::loops::UNROLL * (core::mem::size_of::<crate::arch::F32s<A>>() / 4);
        for n in 0..=max_len {
            for (t, x) in rows(n) {
                let inv_t = Temperature::new(t).inv;
                let mut memory = vec![f32::NAN; n];
                let mut st = Stage::none();
                let (xs, ys) = (AnySlice::F32(&x), AnySliceMut::F32(&mut memory));
                three_pass_softmax(arch, &mut st, inv_t, Some(xs), ys, &mut [], NextRow::NONE);
                let mut short = vec![f32::NAN; n];
                let done = short_softmax(arch, Some(xs), &mut AnySliceMut::F32(&mut short), inv_t);
                let mut in_place = x.clone();
                let done_in_place =
                    short_softmax(arch, None, &mut AnySliceMut::F32(&mut in_place), inv_t);
                assert_eq!(done.is_some(), done_in_place.is_some(), "n {n}");
                let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
                if done.is_some() {
                    assert_eq!(bits(&short), bits(&memory), "n {n} t {t} x {x:?}");
                    assert_eq!(bits(&in_place), bits(&memory), "n {n} t {t} in place");
                } else {
                    assert!(short.iter().all(|v| v.is_nan()), "n {n}: written");
                    assert_eq!(bits(&in_place), bits(&x), "n {n}: written in place");
                }
            }
        }
        let mut too_long = vec![0.0f32; max_len + 1];
        let x = too_long.clone();
        assert!(short_softmax(
            arch,
            Some(AnySlice::F32(&x)),
            &mut AnySliceMut::F32(&mut too_long),
            1.0
        )
        .is_none());
    }

    #[test]
    fn short_rows_match_the_passes_through_memory() {
        short_equals_memory(Portable(pulp::Scalar::new()));
        short_equals_memory(Portable(pulp::Scalar128b));
        short_equals_memory(Portable(pulp::Scalar256b));
        short_equals_memory(Portable(pulp::Scalar512b));
        #[cfg(target_arch = "x86_64")]
        {
            if let Some(arch) = crate::arch::Avx2::try_new() {
                short_equals_memory(arch);
            }
            if let Some(arch) = crate::arch::Avx512::try_new() {
                short_equals_memory(arch);
            }
        }
        #[cfg(target_arch = "aarch64")]
        if let Some(arch) = crate::arch::Neon::try_new() {
            short_equals_memory(arch);
        }
    }
}
