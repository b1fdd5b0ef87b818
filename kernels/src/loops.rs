//! The one loop every pass runs in, and where its rows come from.
//!
//! ```text
//! for each block of UNROLL full vectors:    acc[j] = step(acc[j], x[i + j])   (independent chains)
//!     every FLUSH_STEPS blocks:             flush(merge(acc)); acc = init
//! for each remaining full vector:           acc[j] = step(acc[j], x[i])
//! masked tail:                              lanes past the row hold the kernel's neutral `fill`
//! flush(merge(acc))                         (unless nothing was stepped since the last flush)
//! ```
//!
//! `x[i]` is one vector of a row, or a pair of vectors from two rows of equal
//! length read in step (a main row and a side row: `run_pair`; the backward
//! passes and the cross-entropy with weights or soft targets). A kernel that
//! produces values has them stored by the same loop (out of place or in
//! place); a reduction over a read-only row stores nothing.
//!
//! Kernels and the loop see only f32 rows: a pass is compiled three times
//! (read, map, in place), not once per pairing of element types. An f16 or
//! bf16 row goes through the [`Stage`] a chunk at a time: the chunk is widened
//! into f32 (exactly), the f32 pass runs on it, and what the pass writes is
//! rounded to nearest even into the caller's row. A chunk is a multiple of
//! every ISA's FLUSH_STEPS blocks, so a staged pass adds in the same order as
//! one over the whole row. Each pass and each conversion runs in its own
//! out-of-line function with the ISA's target features ([`Arch::region`]).
//! Tails never read or write outside the caller's slice: partial loads and
//! stores touch only the lanes that exist, and the missing lanes take the
//! kernel's fill value before the kernel sees them (a zero fill is wrong for max).
//!
//! Two variants serve the rows of a forward job: `run_short` compiles the
//! loop of a short f32 row into the job's own region instead of calling the
//! pass's region, and `run_short_ahead` also asks the memory system for the
//! batch's next row while the pass runs. Both run the same loop, so they
//! give the same bits.

use crate::arch::{Arch, Body, F32s};
use crate::storage::{narrow, widen, AnySlice, AnySliceMut};
use pulp::Simd;

/// Independent accumulators (and vectors in flight) per step.
pub const UNROLL: usize = 4;

/// One pass over a row, written once for every ISA. `X` is what one step
/// reads: a vector of the row, or a pair of vectors from two rows.
pub(crate) trait Kernel<S: Simd, X: Copy = <S as Simd>::f32s> {
    /// Per-accumulator state.
    type Acc: Copy;
    /// Unrolled steps between two flushes of the accumulators into the kernel's total
    /// (bounds how many terms an f32 lane accumulates before it is taken in wider precision).
    const FLUSH_STEPS: usize = usize::MAX;
    /// The value masked-off tail lanes take (in every row read); a step on it
    /// must leave the accumulator unchanged.
    fn fill(&self) -> f32;
    /// The neutral accumulator: flushing it changes nothing.
    fn init(&self, simd: S) -> Self::Acc;
    /// Consumes one vector (or pair); returns the new accumulator and the values to store (if any).
    fn step(&self, simd: S, acc: Self::Acc, x: X) -> (Self::Acc, S::f32s);
    /// The step on the masked tail, whose first `valid` lanes are the row's and
    /// the rest hold [`Kernel::fill`]; a kernel whose step cannot take the fill
    /// handles the tail here.
    #[inline(always)]
    fn step_tail(&self, simd: S, acc: Self::Acc, x: X, valid: usize) -> (Self::Acc, S::f32s) {
        let _ = valid;
        self.step(simd, acc, x)
    }
    fn merge(&self, simd: S, a: Self::Acc, b: Self::Acc) -> Self::Acc;
    /// Takes a merged accumulator into the kernel's running total.
    fn flush(&mut self, simd: S, acc: Self::Acc);
}

/// Where a pass reads and writes.
pub(crate) enum Io<'a> {
    /// Reads the row, writes nothing.
    Read(AnySlice<'a>),
    /// Reads the first row, writes the second (same length).
    Map(AnySlice<'a>, AnySliceMut<'a>),
    /// Reads and overwrites the row.
    InPlace(AnySliceMut<'a>),
}

impl<'a> Io<'a> {
    /// Out of place when `x` is given, else in place on `y`.
    #[inline(always)]
    pub(crate) fn write(x: Option<AnySlice<'a>>, y: AnySliceMut<'a>) -> Self {
        match x {
            Some(x) => Io::Map(x, y),
            None => Io::InPlace(y),
        }
    }
}

/// Where a pass over two rows of equal length reads and writes: a main row and
/// a side row. The side row is of the main row's type or f32; anything written
/// is of the main row's type.
pub(crate) enum PairIo<'a> {
    /// Reads (main, side), writes nothing.
    Read(AnySlice<'a>, AnySlice<'a>),
    /// Reads (main, side), writes the third row.
    Map(AnySlice<'a>, AnySlice<'a>, AnySliceMut<'a>),
    /// Reads (main, side), overwrites main.
    InPlace(AnySliceMut<'a>, AnySlice<'a>),
}

impl<'a> PairIo<'a> {
    /// Out of place when `main` is given, else in place on `out`.
    #[inline(always)]
    pub(crate) fn write(
        main: Option<AnySlice<'a>>,
        side: AnySlice<'a>,
        out: AnySliceMut<'a>,
    ) -> Self {
        match main {
            Some(main) => PairIo::Map(main, side, out),
            None => PairIo::InPlace(out, side),
        }
    }
}

/// Elements of a row widened per chunk. A multiple of every ISA's block
/// (UNROLL vectors) times FLUSH_STEPS, so a chunked pass adds in the same
/// order as an unchunked one, and of the sampler's block.
pub const CHUNK: usize = 2048;

/// Working space for passes over f16 or bf16 rows: a chunk of f32 for the
/// main row and one for the side row. Empty for jobs whose rows are all f32.
pub struct Stage<'a> {
    main: &'a mut [f32],
    side: &'a mut [f32],
}

impl<'a> Stage<'a> {
    /// f32 values a stage needs.
    pub const LEN: usize = 2 * CHUNK;

    /// The stage in `space`, which holds at least [`Stage::LEN`] values, or none
    /// (then every row the stage serves must be f32).
    #[inline(always)]
    pub fn new(space: &'a mut [f32]) -> Self {
        let space = if space.len() >= Self::LEN {
            &mut space[..Self::LEN]
        } else {
            &mut space[..0]
        };
        let (main, side) = space.split_at_mut(space.len() / 2);
        Self { main, side }
    }

    /// No space: for jobs whose rows are all f32.
    #[inline(always)]
    pub fn none() -> Stage<'static> {
        Stage {
            main: &mut [],
            side: &mut [],
        }
    }
}

/// The chunks `(start, end)` of a row of `n` elements.
#[inline(always)]
pub(crate) fn chunks(n: usize) -> impl Iterator<Item = (usize, usize)> {
    (0..n).step_by(CHUNK).map(move |s| (s, n.min(s + CHUNK)))
}

/// Runs `kernel` over the row in `io` ([`read`] or [`write`]).
#[inline(always)]
pub(crate) fn run<A: Arch, K: Kernel<A::Simd>>(
    arch: A,
    io: Io<'_>,
    stage: &mut Stage<'_>,
    kernel: &mut K,
) {
    match io {
        Io::Read(x) => read(arch, x, stage, kernel),
        Io::Map(x, y) => write(arch, Some(x), y, stage, kernel),
        Io::InPlace(y) => write(arch, None, y, stage, kernel),
    }
}

/// f32 rows up to this many elements may run a pass compiled into the
/// caller ([`run_short`]).
pub const SHORT_ROW: usize = 512;

/// Whether a pass over an f32 row of `n` elements runs compiled into its
/// caller (see [`run_short`]).
#[inline(always)]
fn runs_here<A: Arch>(n: usize) -> bool {
    A::JOBS_IN_REGION && n <= SHORT_ROW
}

/// Runs `kernel` over a row of `n` elements through `lanes`: compiled into
/// the caller when [`runs_here`] says so, else in the pass's own region.
#[inline(always)]
fn here_or_region<A, L, K>(arch: A, kernel: &mut K, lanes: L, n: usize)
where
    A: Arch,
    L: Load<A> + Store<A>,
    K: Kernel<A::Simd, L::In>,
{
    match runs_here::<A>(n) {
        true => drive(arch, kernel, lanes),
        false => pass(arch, kernel, lanes),
    }
}

/// [`run`], with the loop compiled into the caller when the rows are f32 and
/// at most [`SHORT_ROW`] long and `A`'s jobs run inside its region
/// ([`Arch::JOBS_IN_REGION`]): a short row's passes then cost no call,
/// argument block or register saves, which on rows of a few hundred
/// elements weigh as much as the arithmetic. Longer rows keep the pass's
/// own region, where its loop has every register to itself.
#[inline(always)]
pub(crate) fn run_short<A: Arch, K: Kernel<A::Simd>>(
    arch: A,
    io: Io<'_>,
    stage: &mut Stage<'_>,
    kernel: &mut K,
) {
    match io {
        Io::Read(AnySlice::F32(x)) if runs_here::<A>(x.len()) => {
            drive(arch, kernel, Split(Row::new(x), NoStore))
        }
        Io::Map(AnySlice::F32(x), AnySliceMut::F32(y)) if runs_here::<A>(y.len()) => {
            assert_eq!(x.len(), y.len(), "a pass writes a row as long as it reads");
            let w = RowMut::new(y);
            drive(arch, kernel, Split(Row::new(x).fit(&w), w))
        }
        Io::InPlace(AnySliceMut::F32(y)) if runs_here::<A>(y.len()) => {
            drive(arch, kernel, RowMut::new(y))
        }
        io => run(arch, io, stage, kernel),
    }
}

/// The row after this one in a batch, by address, for a pass to ask the
/// memory system for while it runs ([`run_short_ahead`]); never read.
#[derive(Clone, Copy, Debug)]
pub(crate) struct NextRow {
    start: *const f32,
    len: usize,
}

impl NextRow {
    /// No row to ask for.
    pub(crate) const NONE: NextRow = NextRow {
        start: core::ptr::null(),
        len: 0,
    };

    /// The f32 row `row`.
    #[inline(always)]
    pub(crate) fn of(row: &[f32]) -> Self {
        Self {
            start: row.as_ptr(),
            len: row.len(),
        }
    }
}

/// Rows a pass asks for ahead of their use, a block at a time: the batch's
/// next row ([`NextRow`]), or that and the row's own output when a later,
/// lighter pass writes it (log-softmax's), so its stores find their lines.
pub(crate) trait AskAhead: Copy {
    /// Asks for `floats` elements from offset `start` of each row.
    fn ask<A: Arch>(&self, arch: A, start: usize, floats: usize);
}

impl AskAhead for NextRow {
    #[inline(always)]
    fn ask<A: Arch>(&self, arch: A, start: usize, floats: usize) {
        if start < self.len {
            for line in (0..floats).step_by(16) {
                arch.prefetch(self.start.wrapping_add(start + line));
            }
        }
    }
}

impl AskAhead for (NextRow, NextRow) {
    #[inline(always)]
    fn ask<A: Arch>(&self, arch: A, start: usize, floats: usize) {
        self.0.ask(arch, start, floats);
        self.1.ask(arch, start, floats);
    }
}

/// [`run_short`] for a pass over one row of a batch that also asks for the
/// next row's cache lines, a block's worth at the same offset with each
/// block: memory streams the next row in while this pass computes, so the
/// next row's passes find it in cache instead of waiting for it. Rows of
/// other kinds run as in [`run_short`].
#[inline(always)]
pub(crate) fn run_short_ahead<A: Arch, K: Kernel<A::Simd>, P: AskAhead>(
    arch: A,
    io: Io<'_>,
    next: P,
    stage: &mut Stage<'_>,
    kernel: &mut K,
) {
    match io {
        Io::Read(AnySlice::F32(x)) => {
            let n = x.len();
            here_or_region(arch, kernel, Ahead(Split(Row::new(x), NoStore), next), n)
        }
        Io::Map(AnySlice::F32(x), AnySliceMut::F32(y)) => {
            assert_eq!(x.len(), y.len(), "a pass writes a row as long as it reads");
            let n = y.len();
            let w = RowMut::new(y);
            here_or_region(arch, kernel, Ahead(Split(Row::new(x).fit(&w), w), next), n)
        }
        Io::InPlace(AnySliceMut::F32(y)) => {
            let n = y.len();
            here_or_region(arch, kernel, Ahead(RowMut::new(y), next), n)
        }
        io => run_short(arch, io, stage, kernel),
    }
}

/// Runs a reduction `kernel` over `x`: straight through an f32 row, a
/// chunk at a time through the stage for f16 and bf16.
#[inline(always)]
pub(crate) fn read<A: Arch, K: Kernel<A::Simd>>(
    arch: A,
    x: AnySlice<'_>,
    stage: &mut Stage<'_>,
    kernel: &mut K,
) {
    match x {
        AnySlice::F32(x) => read_f32(arch, kernel, x),
        x => read_staged(arch, x, stage, &mut |x| read_f32(arch, kernel, x)),
    }
}

/// Runs `kernel` from `x` into `y` (same length), or over `y` in place when
/// `x` is `None`: straight through f32 rows, a chunk at a time through the
/// stage when either row is f16 or bf16.
#[inline(always)]
pub(crate) fn write<A: Arch, K: Kernel<A::Simd>>(
    arch: A,
    x: Option<AnySlice<'_>>,
    y: AnySliceMut<'_>,
    stage: &mut Stage<'_>,
    kernel: &mut K,
) {
    match (x, y) {
        (Some(AnySlice::F32(x)), AnySliceMut::F32(y)) => map_f32(arch, kernel, x, y),
        (None, AnySliceMut::F32(y)) => pass(arch, kernel, RowMut::new(y)),
        (x, y) => write_staged(arch, x, y, stage, &mut |chunk| match chunk {
            Chunk::Map(x, y) => map_f32(arch, kernel, x, y),
            Chunk::InPlace(y) => pass(arch, kernel, RowMut::new(y)),
        }),
    }
}

#[inline(always)]
fn read_f32<A: Arch, K: Kernel<A::Simd>>(arch: A, kernel: &mut K, x: &[f32]) {
    pass(arch, kernel, Split(Row::new(x), NoStore))
}

/// Runs `kernel` from the f32 row `x` into `y`, or over `y` in place when
/// `x` is `None`: the chunk step of a pass whose caller stages its own rows,
/// compiled into the caller for short rows as in [`run_short`].
#[inline(always)]
pub(crate) fn map_or_update<A: Arch, K: Kernel<A::Simd>>(
    arch: A,
    kernel: &mut K,
    x: Option<&[f32]>,
    y: &mut [f32],
) {
    let n = y.len();
    match x {
        Some(x) => {
            assert_eq!(x.len(), n, "a pass writes a row as long as it reads");
            let w = RowMut::new(y);
            here_or_region(arch, kernel, Split(Row::new(x).fit(&w), w), n)
        }
        None => here_or_region(arch, kernel, RowMut::new(y), n),
    }
}

/// [`map_or_update`] over (main, side) pairs, the side row read alongside.
#[inline(always)]
pub(crate) fn map_or_update_pair<A, K>(
    arch: A,
    kernel: &mut K,
    x: Option<&[f32]>,
    side: &[f32],
    y: &mut [f32],
) where
    A: Arch,
    K: Kernel<A::Simd, (F32s<A>, F32s<A>)>,
{
    let n = y.len();
    assert!(side.len() == n, "paired rows differ in length");
    match x {
        Some(x) => {
            assert_eq!(x.len(), n, "paired rows differ in length");
            let w = RowMut::new(y);
            let (main, side) = (Row::new(x).fit(&w), Row::new(side).fit(&w));
            here_or_region(arch, kernel, Split(Pair(main, side), w), n)
        }
        None => {
            let w = RowMut::new(y);
            let side = Row::new(side).fit(&w);
            here_or_region(arch, kernel, WithSide(w, side), n)
        }
    }
}

#[inline(always)]
fn map_f32<A: Arch, K: Kernel<A::Simd>>(arch: A, kernel: &mut K, x: &[f32], y: &mut [f32]) {
    assert_eq!(x.len(), y.len(), "a pass writes a row as long as it reads");
    let w = RowMut::new(y);
    pass(arch, kernel, Split(Row::new(x).fit(&w), w));
}

/// An f32 chunk a staged pass runs on.
enum Chunk<'a> {
    Map(&'a [f32], &'a mut [f32]),
    InPlace(&'a mut [f32]),
}

/// The chunk loops of f16 and bf16 rows: one copy per ISA, not per kernel
/// (the kernel's f32 pass comes in as `pass`), out of line: they run once
/// per row, and every pass and conversion in them is a region of its own.
#[inline(never)]
fn read_staged<A: Arch>(
    arch: A,
    x: AnySlice<'_>,
    stage: &mut Stage<'_>,
    pass: &mut dyn FnMut(&[f32]),
) {
    for (s, e) in chunks(x.len()) {
        let xs = &mut stage.main[..e - s];
        widen(arch, x.slice(s..e), xs);
        pass(xs);
    }
}

/// See [`read_staged`].
#[inline(never)]
fn write_staged<A: Arch>(
    arch: A,
    x: Option<AnySlice<'_>>,
    mut y: AnySliceMut<'_>,
    stage: &mut Stage<'_>,
    pass: &mut dyn FnMut(Chunk<'_>),
) {
    let st = &mut *stage.main;
    if let Some(x) = &x {
        assert_eq!(x.len(), y.len(), "a pass writes a row as long as it reads");
    }
    for (s, e) in chunks(y.len()) {
        match (x, y.reborrow().into_slice(s..e)) {
            // Widened straight into the output, then in place there.
            (Some(x), AnySliceMut::F32(y)) => {
                widen(arch, x.slice(s..e), y);
                pass(Chunk::InPlace(y));
            }
            (Some(AnySlice::F32(x)), y) => {
                pass(Chunk::Map(&x[s..e], &mut st[..e - s]));
                narrow(arch, &st[..e - s], y);
            }
            (x, y) => {
                let ys = &mut st[..e - s];
                match x {
                    Some(x) => widen(arch, x.slice(s..e), ys),
                    None => widen(arch, y.shared(), ys),
                }
                pass(Chunk::InPlace(ys));
                narrow(arch, ys, y);
            }
        }
    }
}

/// Runs `kernel` over (main, side) pairs of `io`: straight through when
/// every row is f32, else a chunk at a time with each half row widened into
/// its half of the stage.
#[inline(always)]
pub(crate) fn run_pair<A: Arch, K: Kernel<A::Simd, (F32s<A>, F32s<A>)>>(
    arch: A,
    io: PairIo<'_>,
    stage: &mut Stage<'_>,
    kernel: &mut K,
) {
    match io {
        PairIo::Read(m, s) => read_pair(arch, m, s, stage, kernel),
        PairIo::Map(AnySlice::F32(m), AnySlice::F32(s), AnySliceMut::F32(y)) => {
            map_pair_f32(arch, kernel, m, s, y)
        }
        PairIo::InPlace(AnySliceMut::F32(y), AnySlice::F32(s)) => {
            update_pair_f32(arch, kernel, y, s)
        }
        io => pair_staged(arch, io, stage, &mut |y, s| {
            update_pair_f32(arch, kernel, y, s)
        }),
    }
}

/// Runs a reduction `kernel` over (main, side) pairs, like [`run_pair`].
#[inline(always)]
pub(crate) fn read_pair<A: Arch, K: Kernel<A::Simd, (F32s<A>, F32s<A>)>>(
    arch: A,
    main: AnySlice<'_>,
    side: AnySlice<'_>,
    stage: &mut Stage<'_>,
    kernel: &mut K,
) {
    match (main, side) {
        (AnySlice::F32(m), AnySlice::F32(s)) => read_pair_f32(arch, kernel, m, s),
        (m, s) => pair_staged(arch, PairIo::Read(m, s), stage, &mut |m, s| {
            read_pair_f32(arch, kernel, m, s)
        }),
    }
}

#[inline(always)]
fn read_pair_f32<A, K>(arch: A, kernel: &mut K, m: &[f32], s: &[f32])
where
    A: Arch,
    K: Kernel<A::Simd, (F32s<A>, F32s<A>)>,
{
    assert_eq!(m.len(), s.len(), "paired rows differ in length");
    let main = Row::new(m);
    let side = Row::new(s).fit(&main);
    pass(arch, kernel, Split(Pair(main, side), NoStore))
}

#[inline(always)]
fn map_pair_f32<A, K>(arch: A, kernel: &mut K, m: &[f32], s: &[f32], y: &mut [f32])
where
    A: Arch,
    K: Kernel<A::Simd, (F32s<A>, F32s<A>)>,
{
    let n = y.len();
    assert!(m.len() == n && s.len() == n, "paired rows differ in length");
    let w = RowMut::new(y);
    let (main, side) = (Row::new(m).fit(&w), Row::new(s).fit(&w));
    pass(arch, kernel, Split(Pair(main, side), w))
}

#[inline(always)]
fn update_pair_f32<A, K>(arch: A, kernel: &mut K, y: &mut [f32], s: &[f32])
where
    A: Arch,
    K: Kernel<A::Simd, (F32s<A>, F32s<A>)>,
{
    assert_eq!(y.len(), s.len(), "paired rows differ in length");
    let w = RowMut::new(y);
    let side = Row::new(s).fit(&w);
    pass(arch, kernel, WithSide(w, side))
}

/// [`run_pair`] with a half-precision row: each chunk of the main row is
/// widened into the stage and the pass runs on it there (in place when it
/// writes, then rounded into the output); a half side row is widened into
/// the stage's other half. `pass` gets the (main, side) chunk in f32; what
/// it writes into main is rounded into the output, when there is one. One
/// copy per ISA, like [`read_staged`].
#[inline(never)]
fn pair_staged<A: Arch>(
    arch: A,
    io: PairIo<'_>,
    stage: &mut Stage<'_>,
    pass: &mut dyn FnMut(&mut [f32], &[f32]),
) {
    let (main, side, mut out) = match io {
        PairIo::Read(m, s) => (Some(m), s, None),
        PairIo::Map(m, s, y) => (Some(m), s, Some(y)),
        PairIo::InPlace(y, s) => (None, s, Some(y)),
    };
    let n = side.len();
    if let Some(m) = &main {
        assert_eq!(m.len(), n, "paired rows differ in length");
    }
    if let Some(y) = &out {
        assert_eq!(y.len(), n, "paired rows differ in length");
    }
    for (a, b) in chunks(n) {
        let ms = &mut stage.main[..b - a];
        match (main, out.as_mut()) {
            (Some(m), _) => widen(arch, m.slice(a..b), ms),
            // In place: the main row is the output, read before it is overwritten.
            (None, Some(y)) => widen(arch, y.shared().slice(a..b), ms),
            (None, None) => unreachable!("an in-place pass has a row to write"),
        }
        let ss = match side.slice(a..b) {
            AnySlice::F32(s) => s,
            s => {
                let ss = &mut stage.side[..b - a];
                widen(arch, s, ss);
                ss
            }
        };
        pass(ms, ss);
        if let Some(y) = out.as_mut() {
            narrow(arch, ms, y.reborrow().into_slice(a..b));
        }
    }
}

/// A row's full vectors, split into blocks of [`UNROLL`], the vectors left
/// over (fewer than UNROLL), and the partial tail.
struct Pieces<'a, V> {
    blocks: &'a [[V; UNROLL]],
    rest: &'a [V],
    tail: &'a [f32],
}

/// What one step of a pass reads: a vector of a row, or a pair from two rows.
trait Load<A: Arch> {
    type In: Copy;
    /// (blocks, rest, tail length) of the row.
    fn counts(&self) -> (usize, usize, usize);
    /// Vector j of block i.
    fn block(&self, arch: A, i: usize, j: usize) -> Self::In;
    fn vector(&self, arch: A, j: usize) -> Self::In;
    /// The tail's lanes, with `fill` in the lanes past the row.
    fn tail(&self, arch: A, fill: f32) -> Self::In;
}

/// Where a pass's values go.
trait Store<A: Arch> {
    /// Vector j of block i.
    fn block(&mut self, arch: A, i: usize, j: usize, v: F32s<A>);
    fn vector(&mut self, arch: A, j: usize, v: F32s<A>);
    fn tail(&mut self, arch: A, v: F32s<A>);
}

/// A read-only f32 row.
struct Row<'a, A: Arch>(Pieces<'a, F32s<A>>);

impl<'a, A: Arch> Row<'a, A> {
    #[inline(always)]
    fn new(x: &'a [f32]) -> Self {
        let (body, tail) = A::Simd::as_simd_f32s(x);
        let (blocks, rest) = body.as_chunks::<UNROLL>();
        Self(Pieces { blocks, rest, tail })
    }
    /// Cut to the piece counts of the row it is read beside (equal for equal
    /// lengths), stated where the optimiser can see them: no bounds checks.
    #[inline(always)]
    fn fit<L: Load<A>>(self, other: &L) -> Self {
        let (blocks, rest, _) = other.counts();
        Self(Pieces {
            blocks: &self.0.blocks[..blocks],
            rest: &self.0.rest[..rest],
            tail: self.0.tail,
        })
    }
}

/// A writable f32 row; it reads what it holds (in place).
struct RowMut<'a, A: Arch> {
    blocks: &'a mut [[F32s<A>; UNROLL]],
    rest: &'a mut [F32s<A>],
    tail: &'a mut [f32],
}

impl<'a, A: Arch> RowMut<'a, A> {
    #[inline(always)]
    fn new(y: &'a mut [f32]) -> Self {
        let (body, tail) = A::Simd::as_mut_simd_f32s(y);
        let (blocks, rest) = body.as_chunks_mut::<UNROLL>();
        Self { blocks, rest, tail }
    }
}

/// The tail's lanes with `fill` past the row.
#[inline(always)]
fn filled_tail<A: Arch>(arch: A, tail: &[f32], fill: f32) -> F32s<A> {
    let simd = arch.simd();
    let valid = simd.mask_between_m32s(0, tail.len() as u32).mask();
    simd.select_f32s(valid, simd.partial_load_f32s(tail), simd.splat_f32s(fill))
}

impl<A: Arch> Load<A> for Row<'_, A> {
    type In = F32s<A>;
    #[inline(always)]
    fn counts(&self) -> (usize, usize, usize) {
        (self.0.blocks.len(), self.0.rest.len(), self.0.tail.len())
    }
    #[inline(always)]
    fn block(&self, _: A, i: usize, j: usize) -> F32s<A> {
        self.0.blocks[i][j]
    }
    #[inline(always)]
    fn vector(&self, _: A, j: usize) -> F32s<A> {
        self.0.rest[j]
    }
    #[inline(always)]
    fn tail(&self, arch: A, fill: f32) -> F32s<A> {
        filled_tail(arch, self.0.tail, fill)
    }
}

impl<A: Arch> Load<A> for RowMut<'_, A> {
    type In = F32s<A>;
    #[inline(always)]
    fn counts(&self) -> (usize, usize, usize) {
        (self.blocks.len(), self.rest.len(), self.tail.len())
    }
    #[inline(always)]
    fn block(&self, _: A, i: usize, j: usize) -> F32s<A> {
        self.blocks[i][j]
    }
    #[inline(always)]
    fn vector(&self, _: A, j: usize) -> F32s<A> {
        self.rest[j]
    }
    #[inline(always)]
    fn tail(&self, arch: A, fill: f32) -> F32s<A> {
        filled_tail(arch, self.tail, fill)
    }
}

impl<A: Arch> Store<A> for RowMut<'_, A> {
    #[inline(always)]
    fn block(&mut self, _: A, i: usize, j: usize, v: F32s<A>) {
        self.blocks[i][j] = v;
    }
    #[inline(always)]
    fn vector(&mut self, _: A, j: usize, v: F32s<A>) {
        self.rest[j] = v;
    }
    #[inline(always)]
    fn tail(&mut self, arch: A, v: F32s<A>) {
        arch.simd().partial_store_f32s(self.tail, v)
    }
}

/// A reduction's store: nothing.
struct NoStore;

impl<A: Arch> Store<A> for NoStore {
    #[inline(always)]
    fn block(&mut self, _: A, _: usize, _: usize, _: F32s<A>) {}
    #[inline(always)]
    fn vector(&mut self, _: A, _: usize, _: F32s<A>) {}
    #[inline(always)]
    fn tail(&mut self, _: A, _: F32s<A>) {}
}

/// Two rows of equal length read in step: (main, side).
struct Pair<M, S>(M, S);

impl<A: Arch, M: Load<A, In = F32s<A>>, S: Load<A, In = F32s<A>>> Load<A> for Pair<M, S> {
    type In = (F32s<A>, F32s<A>);
    #[inline(always)]
    fn counts(&self) -> (usize, usize, usize) {
        self.0.counts()
    }
    #[inline(always)]
    fn block(&self, arch: A, i: usize, j: usize) -> Self::In {
        (self.0.block(arch, i, j), self.1.block(arch, i, j))
    }
    #[inline(always)]
    fn vector(&self, arch: A, j: usize) -> Self::In {
        (self.0.vector(arch, j), self.1.vector(arch, j))
    }
    #[inline(always)]
    fn tail(&self, arch: A, fill: f32) -> Self::In {
        (self.0.tail(arch, fill), self.1.tail(arch, fill))
    }
}

/// Reads through `L`, writes through `W` (out of place, or nowhere).
struct Split<L, W>(L, W);

impl<A: Arch, L: Load<A>, W> Load<A> for Split<L, W> {
    type In = L::In;
    #[inline(always)]
    fn counts(&self) -> (usize, usize, usize) {
        self.0.counts()
    }
    #[inline(always)]
    fn block(&self, arch: A, i: usize, j: usize) -> L::In {
        self.0.block(arch, i, j)
    }
    #[inline(always)]
    fn vector(&self, arch: A, j: usize) -> L::In {
        self.0.vector(arch, j)
    }
    #[inline(always)]
    fn tail(&self, arch: A, fill: f32) -> L::In {
        self.0.tail(arch, fill)
    }
}

impl<A: Arch, L, W: Store<A>> Store<A> for Split<L, W> {
    #[inline(always)]
    fn block(&mut self, arch: A, i: usize, j: usize, v: F32s<A>) {
        self.1.block(arch, i, j, v)
    }
    #[inline(always)]
    fn vector(&mut self, arch: A, j: usize, v: F32s<A>) {
        self.1.vector(arch, j, v)
    }
    #[inline(always)]
    fn tail(&mut self, arch: A, v: F32s<A>) {
        self.1.tail(arch, v)
    }
}

/// Reads and writes through `L`, and with the first vector of each block asks
/// for the same block of the rows in `P` (one prefetch per 64-byte line).
struct Ahead<L, P>(L, P);

impl<A: Arch, L: Load<A>, P: AskAhead> Load<A> for Ahead<L, P> {
    type In = L::In;
    #[inline(always)]
    fn counts(&self) -> (usize, usize, usize) {
        self.0.counts()
    }
    #[inline(always)]
    fn block(&self, arch: A, i: usize, j: usize) -> L::In {
        if j == 0 {
            let floats = UNROLL * (core::mem::size_of::<F32s<A>>() / 4);
            self.1.ask(arch, i * floats, floats);
        }
        self.0.block(arch, i, j)
    }
    #[inline(always)]
    fn vector(&self, arch: A, j: usize) -> L::In {
        self.0.vector(arch, j)
    }
    #[inline(always)]
    fn tail(&self, arch: A, fill: f32) -> L::In {
        self.0.tail(arch, fill)
    }
}

impl<A: Arch, L: Store<A>, P> Store<A> for Ahead<L, P> {
    #[inline(always)]
    fn block(&mut self, arch: A, i: usize, j: usize, v: F32s<A>) {
        self.0.block(arch, i, j, v)
    }
    #[inline(always)]
    fn vector(&mut self, arch: A, j: usize, v: F32s<A>) {
        self.0.vector(arch, j, v)
    }
    #[inline(always)]
    fn tail(&mut self, arch: A, v: F32s<A>) {
        self.0.tail(arch, v)
    }
}

/// Reads (w, side) pairs and overwrites `w`: in place with a side row, a
/// single borrow of `w` for both its loads and its stores.
struct WithSide<'a, A: Arch>(RowMut<'a, A>, Row<'a, A>);

impl<A: Arch> Load<A> for WithSide<'_, A> {
    type In = (F32s<A>, F32s<A>);
    #[inline(always)]
    fn counts(&self) -> (usize, usize, usize) {
        Load::counts(&self.0)
    }
    #[inline(always)]
    fn block(&self, arch: A, i: usize, j: usize) -> Self::In {
        (Load::block(&self.0, arch, i, j), self.1.block(arch, i, j))
    }
    #[inline(always)]
    fn vector(&self, arch: A, j: usize) -> Self::In {
        (Load::vector(&self.0, arch, j), self.1.vector(arch, j))
    }
    #[inline(always)]
    fn tail(&self, arch: A, fill: f32) -> Self::In {
        (Load::tail(&self.0, arch, fill), self.1.tail(arch, fill))
    }
}

impl<A: Arch> Store<A> for WithSide<'_, A> {
    #[inline(always)]
    fn block(&mut self, arch: A, i: usize, j: usize, v: F32s<A>) {
        Store::block(&mut self.0, arch, i, j, v)
    }
    #[inline(always)]
    fn vector(&mut self, arch: A, j: usize, v: F32s<A>) {
        Store::vector(&mut self.0, arch, j, v)
    }
    #[inline(always)]
    fn tail(&mut self, arch: A, v: F32s<A>) {
        Store::tail(&mut self.0, arch, v)
    }
}

/// A short f32 row held in vectors (registers, once inlined): up to
/// [`UNROLL`] full vectors, or fewer and a partial tail. The passes run on it
/// through the same loop as on a row in memory ([`Resident::run`]), so they
/// add, round and flush exactly as they would there; the row is read once
/// and written once, and no pass is a call of its own.
pub(crate) struct Resident<A: Arch> {
    full: [F32s<A>; UNROLL],
    tail: F32s<A>,
    /// Full vectors held (all UNROLL: one block, no tail).
    n_full: usize,
    n_tail: usize,
}

impl<A: Arch> Resident<A> {
    /// Whether a row of `n` elements fits.
    #[inline(always)]
    pub(crate) fn fits(n: usize) -> bool {
        n <= UNROLL * (core::mem::size_of::<F32s<A>>() / 4)
    }

    /// The row `x`, which must fit.
    #[inline(always)]
    pub(crate) fn load(arch: A, x: &[f32]) -> Self {
        debug_assert!(Self::fits(x.len()));
        let simd = arch.simd();
        let (body, tail) = A::Simd::as_simd_f32s(x);
        let zero = simd.splat_f32s(0.0);
        let mut full = [zero; UNROLL];
        // Constant indices once unrolled: the vectors stay in registers.
        for (j, v) in full.iter_mut().enumerate() {
            if j < body.len() {
                *v = body[j];
            }
        }
        let n_tail = tail.len();
        let tail = if n_tail > 0 {
            simd.partial_load_f32s(tail)
        } else {
            zero
        };
        Self {
            full,
            tail,
            n_full: body.len(),
            n_tail,
        }
    }

    /// Writes the row into `y`, of the length it was loaded with.
    #[inline(always)]
    pub(crate) fn store(&self, arch: A, y: &mut [f32]) {
        let (body, tail) = A::Simd::as_mut_simd_f32s(y);
        assert!(body.len() == self.n_full && tail.len() == self.n_tail);
        for (j, &v) in self.full.iter().enumerate() {
            if j < body.len() {
                body[j] = v;
            }
        }
        if !tail.is_empty() {
            arch.simd().partial_store_f32s(tail, self.tail);
        }
    }

    /// Runs `kernel` over the row, keeping what it stores.
    #[inline(always)]
    pub(crate) fn run<K: Kernel<A::Simd>>(&mut self, arch: A, kernel: &mut K) {
        drive(arch, kernel, self)
    }
}

impl<A: Arch> Load<A> for &mut Resident<A> {
    type In = F32s<A>;
    #[inline(always)]
    fn counts(&self) -> (usize, usize, usize) {
        match self.n_full {
            UNROLL => (1, 0, 0),
            n => (0, n, self.n_tail),
        }
    }
    #[inline(always)]
    fn block(&self, _: A, _: usize, j: usize) -> F32s<A> {
        self.full[j]
    }
    #[inline(always)]
    fn vector(&self, _: A, j: usize) -> F32s<A> {
        self.full[j]
    }
    #[inline(always)]
    fn tail(&self, arch: A, fill: f32) -> F32s<A> {
        let simd = arch.simd();
        let valid = simd.mask_between_m32s(0, self.n_tail as u32).mask();
        simd.select_f32s(valid, self.tail, simd.splat_f32s(fill))
    }
}

impl<A: Arch> Store<A> for &mut Resident<A> {
    #[inline(always)]
    fn block(&mut self, _: A, _: usize, j: usize, v: F32s<A>) {
        self.full[j] = v;
    }
    #[inline(always)]
    fn vector(&mut self, _: A, j: usize, v: F32s<A>) {
        self.full[j] = v;
    }
    #[inline(always)]
    fn tail(&mut self, _: A, v: F32s<A>) {
        self.tail = v;
    }
}

/// One pass over one row (or chunk), run out of line in the token's region.
struct Pass<'k, A, K, L> {
    arch: A,
    kernel: &'k mut K,
    lanes: L,
}

impl<A, L, K> Body for Pass<'_, A, K, L>
where
    A: Arch,
    L: Load<A> + Store<A>,
    K: Kernel<A::Simd, L::In>,
{
    type Output = ();
    #[inline(always)]
    fn call(self) {
        drive(self.arch, self.kernel, self.lanes)
    }
}

#[inline(always)]
fn pass<A, L, K>(arch: A, kernel: &mut K, lanes: L)
where
    A: Arch,
    L: Load<A> + Store<A>,
    K: Kernel<A::Simd, L::In>,
{
    arch.region(Pass {
        arch,
        kernel,
        lanes,
    })
}

/// The loop: unrolled blocks, the vectors left over, the masked tail.
#[inline(always)]
fn drive<A, L, K>(arch: A, kernel: &mut K, mut lanes: L)
where
    A: Arch,
    L: Load<A> + Store<A>,
    K: Kernel<A::Simd, L::In>,
{
    let simd = arch.simd();
    let init = kernel.init(simd);
    let mut acc = [init; UNROLL];
    let (blocks, rest, tail_len) = Load::counts(&lanes);
    let mut since_flush = 0usize;
    for i in 0..blocks {
        // Each vector loaded, stepped and stored in turn: fewer values live at once.
        for (j, a) in acc.iter_mut().enumerate() {
            let y;
            (*a, y) = kernel.step(simd, *a, Load::block(&lanes, arch, i, j));
            Store::block(&mut lanes, arch, i, j, y);
        }
        since_flush += 1;
        if since_flush == K::FLUSH_STEPS {
            since_flush = 0;
            let merged = merge_all(simd, kernel, acc);
            kernel.flush(simd, merged);
            acc = [init; UNROLL];
        }
    }
    for (j, a) in acc.iter_mut().enumerate().take(rest) {
        let (next, y) = kernel.step(simd, *a, Load::vector(&lanes, arch, j));
        *a = next;
        Store::vector(&mut lanes, arch, j, y);
    }
    if tail_len > 0 {
        let x = Load::tail(&lanes, arch, kernel.fill());
        let (next, y) = kernel.step_tail(simd, acc[UNROLL - 1], x, tail_len);
        acc[UNROLL - 1] = next;
        Store::tail(&mut lanes, arch, y);
    }
    // Nothing stepped since the last flush (a row, or chunk, of whole flush
    // periods): flushing the neutral accumulators would change nothing, except
    // for kernels that count their flushes (one value per block).
    if since_flush > 0 || rest > 0 || tail_len > 0 || blocks == 0 {
        let merged = merge_all(simd, kernel, acc);
        kernel.flush(simd, merged);
    }
}

#[inline(always)]
fn merge_all<S: Simd, X: Copy, K: Kernel<S, X>>(
    simd: S,
    kernel: &K,
    acc: [K::Acc; UNROLL],
) -> K::Acc {
    // Pairwise, so the merged terms form a balanced tree.
    let mut acc = acc;
    let mut width = UNROLL;
    while width > 1 {
        let half = width / 2;
        for j in 0..half {
            acc[j] = kernel.merge(simd, acc[j], acc[j + half]);
        }
        if width % 2 == 1 {
            acc[0] = kernel.merge(simd, acc[0], acc[width - 1]);
        }
        width -= half;
    }
    acc[0]
}

/// The lanes of a vector, in order.
#[inline(always)]
pub(crate) fn lanes<S: Simd>(v: &S::f32s) -> &[f32] {
    pulp::bytemuck::cast_slice(core::slice::from_ref(v))
}
