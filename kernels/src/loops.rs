//! The one loop shape every pass runs in.
//!
//! ```text
//! for each step of UNROLL full vectors:      acc[j] = step(acc[j], x[i + j])   (independent chains)
//!     every FLUSH_STEPS steps:              flush(merge(acc)); acc = init
//! for each remaining full vector:            acc[j] = step(acc[j], x[i])
//! masked tail:                               lanes past the row hold the kernel's neutral `fill`
//! flush(merge(acc))
//! ```
//!
//! `x[i]` is one vector of a row, or a pair of vectors from two rows of equal
//! length read in step (a main row and a side row: `run_pair`; the backward
//! passes and the cross-entropy with weights or soft targets).
//! A kernel that produces values has them stored by the same loop (out of place
//! or in place); a reduction over a read-only row stores nothing. Each pass
//! runs in its own out-of-line function with the ISA's target features
//! ([`Arch::region`]), so a loop is compiled once per kernel, not once per
//! place that runs it.
//!
//! Rows are f32, f16 or bf16, and kernels see only f32 vectors: loads widen
//! a half-precision row in registers and stores round to nearest even (see
//! [`run`] and [`crate::storage`]). Tails never read or write outside the caller's slice:
//! partial loads and stores touch only the lanes that exist, and the missing
//! lanes are replaced by the kernel's fill value before the kernel sees them
//! (a zero fill is wrong for max).

use crate::arch::{Arch, Body, F32s};
use crate::storage::{AnySlice, AnySliceMut, Storage};
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

/// Elements converted per chunk when an f16 row is mapped onto a bf16 row or
/// the reverse: the input is widened a chunk at a time into an L1-resident f32
/// stage. A multiple of every ISA's block (UNROLL vectors) times FLUSH_STEPS,
/// so a chunked pass adds in the same order as an unchunked one.
pub const CHUNK: usize = 2048;

/// Working space for passes from f16 to bf16 rows or back: one chunk of f32.
/// Empty otherwise.
pub struct Stage<'a> {
    x: &'a mut [f32],
}

impl<'a> Stage<'a> {
    /// f32 values a stage needs.
    pub const LEN: usize = CHUNK;

    /// The stage in `space`, which holds [`Stage::LEN`] values or none.
    #[inline(always)]
    pub fn new(space: &'a mut [f32]) -> Self {
        Self { x: space }
    }
}

/// Runs `kernel` over the row in `io`. Loads widen and stores round to nearest
/// even in registers, for every pairing of f32 with f16 or bf16 and for f16 or
/// bf16 with itself; only f16 into bf16 (or back) widens its input through the
/// stage first. Each pairing is its own compiled loop, out of line.
#[inline(always)]
pub(crate) fn run<A: Arch, K: Kernel<A::Simd>>(
    arch: A,
    io: Io<'_>,
    stage: &mut Stage<'_>,
    kernel: &mut K,
) {
    match io {
        Io::Read(AnySlice::F32(x)) => read(arch, kernel, x),
        Io::Read(AnySlice::F16(x)) => read(arch, kernel, x),
        Io::Read(AnySlice::BF16(x)) => read(arch, kernel, x),
        Io::Map(x, y) => {
            assert_eq!(x.len(), y.len(), "a pass writes a row as long as it reads");
            match (x, y) {
                (AnySlice::F32(x), AnySliceMut::F32(y)) => map(arch, kernel, x, y),
                (AnySlice::F16(x), AnySliceMut::F32(y)) => map(arch, kernel, x, y),
                (AnySlice::BF16(x), AnySliceMut::F32(y)) => map(arch, kernel, x, y),
                (AnySlice::F32(x), AnySliceMut::F16(y)) => map(arch, kernel, x, y),
                (AnySlice::F32(x), AnySliceMut::BF16(y)) => map(arch, kernel, x, y),
                (AnySlice::F16(x), AnySliceMut::F16(y)) => map(arch, kernel, x, y),
                (AnySlice::BF16(x), AnySliceMut::BF16(y)) => map(arch, kernel, x, y),
                (x, mut y) => {
                    for start in (0..y.len().max(1)).step_by(CHUNK) {
                        let end = y.len().min(start + CHUNK);
                        let xin = &mut stage.x[..end - start];
                        widen(arch, x.slice(start..end), xin);
                        match y.reborrow().into_slice(start..end) {
                            AnySliceMut::F16(y) => map(arch, kernel, xin, y),
                            AnySliceMut::BF16(y) => map(arch, kernel, xin, y),
                            AnySliceMut::F32(y) => map(arch, kernel, xin, y),
                        }
                    }
                }
            }
        }
        Io::InPlace(AnySliceMut::F32(y)) => update(arch, kernel, y),
        Io::InPlace(AnySliceMut::F16(y)) => update(arch, kernel, y),
        Io::InPlace(AnySliceMut::BF16(y)) => update(arch, kernel, y),
    }
}

#[inline(always)]
fn read<A: Arch, K: Kernel<A::Simd>, T: Storage>(arch: A, kernel: &mut K, x: &[T]) {
    in_region(arch, kernel, ReadOnly(One(Vectors::<A, T>::new(x))));
}

#[inline(always)]
fn map<A: Arch, K: Kernel<A::Simd>, I: Storage, O: Storage>(
    arch: A,
    kernel: &mut K,
    x: &[I],
    y: &mut [O],
) {
    let w = VectorsMut::<A, O>::new(y);
    // Equal lengths, stated where the optimiser can see them.
    let r = Vectors::<A, I>::new(x).fit(w.blocks(), w.rest());
    in_region(arch, kernel, Mapped { src: One(r), w });
}

#[inline(always)]
fn update<A: Arch, K: Kernel<A::Simd>, T: Storage>(arch: A, kernel: &mut K, y: &mut [T]) {
    in_region(
        arch,
        kernel,
        Updated {
            w: VectorsMut::<A, T>::new(y),
        },
    );
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

/// Runs `kernel` over (main, side) pairs of `io`, widening each in registers.
/// Each supported pairing of types is its own compiled loop.
#[inline(always)]
pub(crate) fn run_pair<A: Arch, K: Kernel<A::Simd, (F32s<A>, F32s<A>)>>(
    arch: A,
    io: PairIo<'_>,
    kernel: &mut K,
) {
    use AnySlice as R;
    use AnySliceMut as W;
    match io {
        PairIo::Read(main, side) => {
            assert_eq!(main.len(), side.len(), "paired rows differ in length");
            match (main, side) {
                (R::F32(m), R::F32(s)) => read_pair(arch, kernel, m, s),
                (R::F16(m), R::F16(s)) => read_pair(arch, kernel, m, s),
                (R::BF16(m), R::BF16(s)) => read_pair(arch, kernel, m, s),
                (R::F16(m), R::F32(s)) => read_pair(arch, kernel, m, s),
                (R::BF16(m), R::F32(s)) => read_pair(arch, kernel, m, s),
                _ => unsupported(),
            }
        }
        PairIo::Map(main, side, out) => {
            let n = main.len();
            assert!(
                side.len() == n && out.len() == n,
                "paired rows differ in length"
            );
            match (main, side, out) {
                (R::F32(m), R::F32(s), W::F32(y)) => map_pair(arch, kernel, m, s, y),
                (R::F16(m), R::F16(s), W::F16(y)) => map_pair(arch, kernel, m, s, y),
                (R::BF16(m), R::BF16(s), W::BF16(y)) => map_pair(arch, kernel, m, s, y),
                (R::F16(m), R::F32(s), W::F16(y)) => map_pair(arch, kernel, m, s, y),
                (R::BF16(m), R::F32(s), W::BF16(y)) => map_pair(arch, kernel, m, s, y),
                _ => unsupported(),
            }
        }
        PairIo::InPlace(main, side) => {
            assert_eq!(main.len(), side.len(), "paired rows differ in length");
            match (main, side) {
                (W::F32(y), R::F32(s)) => update_pair(arch, kernel, y, s),
                (W::F16(y), R::F16(s)) => update_pair(arch, kernel, y, s),
                (W::BF16(y), R::BF16(s)) => update_pair(arch, kernel, y, s),
                (W::F16(y), R::F32(s)) => update_pair(arch, kernel, y, s),
                (W::BF16(y), R::F32(s)) => update_pair(arch, kernel, y, s),
                _ => unsupported(),
            }
        }
    }
}

/// A pairing the crate never makes (it checks types before it builds a job).
/// The message formats nothing: a Debug impl would be compiled outside the region.
#[inline(always)]
fn unsupported() -> ! {
    panic!(
        "no paired pass for these row types: the side row is f32 or the main row's type, \
         and a written row is of the main row's type"
    )
}

#[inline(always)]
fn read_pair<A: Arch, K, M: Storage, S: Storage>(arch: A, kernel: &mut K, m: &[M], s: &[S])
where
    K: Kernel<A::Simd, (F32s<A>, F32s<A>)>,
{
    let m = Vectors::<A, M>::new(m);
    let s = Vectors::<A, S>::new(s).fit(m.blocks.len(), m.rest.len());
    in_region(arch, kernel, ReadOnly(Two(m, s)));
}

#[inline(always)]
fn map_pair<A: Arch, K, M: Storage, S: Storage, O: Storage>(
    arch: A,
    kernel: &mut K,
    m: &[M],
    s: &[S],
    y: &mut [O],
) where
    K: Kernel<A::Simd, (F32s<A>, F32s<A>)>,
{
    let w = VectorsMut::<A, O>::new(y);
    let (blocks, rest) = (w.blocks(), w.rest());
    let src = Two(
        Vectors::<A, M>::new(m).fit(blocks, rest),
        Vectors::<A, S>::new(s).fit(blocks, rest),
    );
    in_region(arch, kernel, Mapped { src, w });
}

#[inline(always)]
fn update_pair<A: Arch, K, M: Storage, S: Storage>(arch: A, kernel: &mut K, y: &mut [M], s: &[S])
where
    K: Kernel<A::Simd, (F32s<A>, F32s<A>)>,
{
    let w = VectorsMut::<A, M>::new(y);
    let side = Vectors::<A, S>::new(s).fit(w.blocks(), w.rest());
    in_region(arch, kernel, UpdatedWith { w, side });
}

/// Copies a pass's values through unchanged (the conversions happen in the loads and stores).
struct Convert;

impl<S: Simd> Kernel<S> for Convert {
    type Acc = ();
    #[inline(always)]
    fn fill(&self) -> f32 {
        0.0
    }
    #[inline(always)]
    fn init(&self, _: S) {}
    #[inline(always)]
    fn step(&self, _: S, _: (), x: S::f32s) -> ((), S::f32s) {
        ((), x)
    }
    #[inline(always)]
    fn merge(&self, _: S, _: (), _: ()) {}
    #[inline(always)]
    fn flush(&mut self, _: S, _: ()) {}
}

/// `src` exactly as f32, into `dst` of the same length.
#[inline(always)]
fn widen<A: Arch>(arch: A, src: AnySlice<'_>, dst: &mut [f32]) {
    match src {
        AnySlice::F16(src) => map(arch, &mut Convert, src, dst),
        AnySlice::BF16(src) => map(arch, &mut Convert, src, dst),
        AnySlice::F32(src) => dst.copy_from_slice(src),
    }
}

/// Vector access to a row, split up front into blocks of [`UNROLL`] full
/// vectors, the full vectors left over (fewer than UNROLL), and the partial
/// tail. Loads give f32 vectors whatever the storage type.
pub(crate) trait Reader<A: Arch> {
    fn blocks(&self) -> usize;
    fn load_block(&self, arch: A, i: usize) -> [F32s<A>; UNROLL];
    fn rest(&self) -> usize;
    fn load_rest(&self, arch: A, j: usize) -> F32s<A>;
    fn tail_len(&self) -> usize;
    /// The tail's lanes; lanes past the row are 0 (the caller replaces them).
    fn load_tail(&self, arch: A) -> F32s<A>;
}

/// A read-only row cut to the piece counts of the row it is mapped onto
/// (equal for equal lengths), so indexing inside the loop needs no bounds check.
pub(crate) trait Fit {
    fn fit(self, blocks: usize, rest: usize) -> Self;
}

/// A writable row; it reads what it holds (in place).
pub(crate) trait Writer<A: Arch>: Reader<A> {
    fn store_block(&mut self, arch: A, i: usize, v: [F32s<A>; UNROLL]);
    fn store_rest(&mut self, arch: A, j: usize, v: F32s<A>);
    fn store_tail(&mut self, arch: A, v: F32s<A>);
}

type Block<A, T> = [<T as Storage>::Vector<A>; UNROLL];

/// A read-only row of one storage type.
pub(crate) struct Vectors<'a, A: Arch, T: Storage> {
    blocks: &'a [Block<A, T>],
    rest: &'a [T::Vector<A>],
    tail: &'a [T],
}

impl<'a, A: Arch, T: Storage> Vectors<'a, A, T> {
    #[inline(always)]
    fn new(x: &'a [T]) -> Self {
        let (body, tail) = T::split::<A>(x);
        let (blocks, rest) = body.as_chunks::<UNROLL>();
        Self { blocks, rest, tail }
    }
}

impl<A: Arch, T: Storage> Fit for Vectors<'_, A, T> {
    #[inline(always)]
    fn fit(self, blocks: usize, rest: usize) -> Self {
        Self {
            blocks: &self.blocks[..blocks],
            rest: &self.rest[..rest],
            tail: self.tail,
        }
    }
}

/// A writable row of one storage type.
pub(crate) struct VectorsMut<'a, A: Arch, T: Storage> {
    blocks: &'a mut [Block<A, T>],
    rest: &'a mut [T::Vector<A>],
    tail: &'a mut [T],
}

impl<'a, A: Arch, T: Storage> VectorsMut<'a, A, T> {
    #[inline(always)]
    fn new(y: &'a mut [T]) -> Self {
        let (body, tail) = T::split_mut::<A>(y);
        let (blocks, rest) = body.as_chunks_mut::<UNROLL>();
        Self { blocks, rest, tail }
    }
}

/// The loads of both typed rows.
macro_rules! typed_reader {
    ($ty:ident) => {
        impl<A: Arch, T: Storage> Reader<A> for $ty<'_, A, T> {
            #[inline(always)]
            fn blocks(&self) -> usize {
                self.blocks.len()
            }
            #[inline(always)]
            fn load_block(&self, arch: A, i: usize) -> [F32s<A>; UNROLL] {
                let b = &self.blocks[i];
                let mut out = [T::load(arch, b[0]); UNROLL];
                for j in 1..UNROLL {
                    out[j] = T::load(arch, b[j]);
                }
                out
            }
            #[inline(always)]
            fn rest(&self) -> usize {
                self.rest.len()
            }
            #[inline(always)]
            fn load_rest(&self, arch: A, j: usize) -> F32s<A> {
                T::load(arch, self.rest[j])
            }
            #[inline(always)]
            fn tail_len(&self) -> usize {
                self.tail.len()
            }
            #[inline(always)]
            fn load_tail(&self, arch: A) -> F32s<A> {
                T::load_partial(arch, self.tail)
            }
        }
    };
}

typed_reader!(Vectors);
typed_reader!(VectorsMut);

impl<A: Arch, T: Storage> Writer<A> for VectorsMut<'_, A, T> {
    #[inline(always)]
    fn store_block(&mut self, arch: A, i: usize, v: [F32s<A>; UNROLL]) {
        let b = &mut self.blocks[i];
        for j in 0..UNROLL {
            b[j] = T::store(arch, v[j]);
        }
    }
    #[inline(always)]
    fn store_rest(&mut self, arch: A, j: usize, v: F32s<A>) {
        self.rest[j] = T::store(arch, v);
    }
    #[inline(always)]
    fn store_tail(&mut self, arch: A, v: F32s<A>) {
        T::store_partial(arch, self.tail, v)
    }
}

/// What one pass does with its rows: what a step reads (`In`: one vector, or a
/// pair from two rows of equal length) and where its values go (nowhere, another
/// row, or back over the first row read).
trait Lanes<A: Arch> {
    type In: Copy;
    fn blocks(&self) -> usize;
    fn load_block(&self, arch: A, i: usize) -> [Self::In; UNROLL];
    fn store_block(&mut self, arch: A, i: usize, v: [F32s<A>; UNROLL]);
    fn rest(&self) -> usize;
    fn load_rest(&self, arch: A, j: usize) -> Self::In;
    fn store_rest(&mut self, arch: A, j: usize, v: F32s<A>);
    fn tail_len(&self) -> usize;
    /// The tail's lanes, with `fill` in the lanes past the row.
    fn load_tail(&self, arch: A, fill: f32) -> Self::In;
    fn store_tail(&mut self, arch: A, v: F32s<A>);
}

/// What a pass reads: one row, or two rows read in step.
trait Source<A: Arch> {
    type In: Copy;
    /// The piece counts of the (first) row.
    fn pieces(&self) -> (usize, usize, usize);
    fn load_block(&self, arch: A, i: usize) -> [Self::In; UNROLL];
    fn load_rest(&self, arch: A, j: usize) -> Self::In;
    fn load_tail(&self, arch: A, fill: f32) -> Self::In;
}

/// The tail of `r` with `fill` past the row.
#[inline(always)]
fn filled_tail<A: Arch, R: Reader<A>>(arch: A, r: &R, fill: f32) -> F32s<A> {
    let simd = arch.simd();
    let valid = simd.mask_between_m32s(0, r.tail_len() as u32).mask();
    simd.select_f32s(valid, r.load_tail(arch), simd.splat_f32s(fill))
}

/// Pairs of vectors from two blocks.
#[inline(always)]
fn zip<V: Copy>(a: [V; UNROLL], b: [V; UNROLL]) -> [(V, V); UNROLL] {
    let mut out = [(a[0], b[0]); UNROLL];
    for j in 1..UNROLL {
        out[j] = (a[j], b[j]);
    }
    out
}

/// One row.
struct One<R>(R);

impl<A: Arch, R: Reader<A>> Source<A> for One<R> {
    type In = F32s<A>;
    #[inline(always)]
    fn pieces(&self) -> (usize, usize, usize) {
        (self.0.blocks(), self.0.rest(), self.0.tail_len())
    }
    #[inline(always)]
    fn load_block(&self, arch: A, i: usize) -> [F32s<A>; UNROLL] {
        self.0.load_block(arch, i)
    }
    #[inline(always)]
    fn load_rest(&self, arch: A, j: usize) -> F32s<A> {
        self.0.load_rest(arch, j)
    }
    #[inline(always)]
    fn load_tail(&self, arch: A, fill: f32) -> F32s<A> {
        filled_tail(arch, &self.0, fill)
    }
}

/// Two rows of equal length, read in step: (main, side).
struct Two<R1, R2>(R1, R2);

impl<A: Arch, R1: Reader<A>, R2: Reader<A>> Source<A> for Two<R1, R2> {
    type In = (F32s<A>, F32s<A>);
    #[inline(always)]
    fn pieces(&self) -> (usize, usize, usize) {
        (self.0.blocks(), self.0.rest(), self.0.tail_len())
    }
    #[inline(always)]
    fn load_block(&self, arch: A, i: usize) -> [Self::In; UNROLL] {
        zip(self.0.load_block(arch, i), self.1.load_block(arch, i))
    }
    #[inline(always)]
    fn load_rest(&self, arch: A, j: usize) -> Self::In {
        (self.0.load_rest(arch, j), self.1.load_rest(arch, j))
    }
    #[inline(always)]
    fn load_tail(&self, arch: A, fill: f32) -> Self::In {
        (
            filled_tail(arch, &self.0, fill),
            filled_tail(arch, &self.1, fill),
        )
    }
}

/// Reads only.
struct ReadOnly<R>(R);

/// Reads `src`, writes `w` (same length).
struct Mapped<R, W> {
    src: R,
    w: W,
}

/// Reads and overwrites `w`.
struct Updated<W> {
    w: W,
}

/// Reads (w, side) pairs and overwrites `w`.
struct UpdatedWith<W, R> {
    w: W,
    side: R,
}

impl<A: Arch, R: Source<A>> Lanes<A> for ReadOnly<R> {
    type In = R::In;
    #[inline(always)]
    fn blocks(&self) -> usize {
        self.0.pieces().0
    }
    #[inline(always)]
    fn load_block(&self, arch: A, i: usize) -> [R::In; UNROLL] {
        self.0.load_block(arch, i)
    }
    #[inline(always)]
    fn store_block(&mut self, _: A, _: usize, _: [F32s<A>; UNROLL]) {}
    #[inline(always)]
    fn rest(&self) -> usize {
        self.0.pieces().1
    }
    #[inline(always)]
    fn load_rest(&self, arch: A, j: usize) -> R::In {
        self.0.load_rest(arch, j)
    }
    #[inline(always)]
    fn store_rest(&mut self, _: A, _: usize, _: F32s<A>) {}
    #[inline(always)]
    fn tail_len(&self) -> usize {
        self.0.pieces().2
    }
    #[inline(always)]
    fn load_tail(&self, arch: A, fill: f32) -> R::In {
        self.0.load_tail(arch, fill)
    }
    #[inline(always)]
    fn store_tail(&mut self, _: A, _: F32s<A>) {}
}

/// The writing half of a [`Lanes`] impl: piece counts and stores go to `self.w`.
macro_rules! writes_to_w {
    () => {
        #[inline(always)]
        fn blocks(&self) -> usize {
            self.w.blocks()
        }
        #[inline(always)]
        fn store_block(&mut self, arch: A, i: usize, v: [F32s<A>; UNROLL]) {
            self.w.store_block(arch, i, v)
        }
        #[inline(always)]
        fn rest(&self) -> usize {
            self.w.rest()
        }
        #[inline(always)]
        fn store_rest(&mut self, arch: A, j: usize, v: F32s<A>) {
            self.w.store_rest(arch, j, v)
        }
        #[inline(always)]
        fn tail_len(&self) -> usize {
            self.w.tail_len()
        }
        #[inline(always)]
        fn store_tail(&mut self, arch: A, v: F32s<A>) {
            self.w.store_tail(arch, v)
        }
    };
}

impl<A: Arch, R: Source<A>, W: Writer<A>> Lanes<A> for Mapped<R, W> {
    type In = R::In;
    writes_to_w!();
    #[inline(always)]
    fn load_block(&self, arch: A, i: usize) -> [R::In; UNROLL] {
        self.src.load_block(arch, i)
    }
    #[inline(always)]
    fn load_rest(&self, arch: A, j: usize) -> R::In {
        self.src.load_rest(arch, j)
    }
    #[inline(always)]
    fn load_tail(&self, arch: A, fill: f32) -> R::In {
        self.src.load_tail(arch, fill)
    }
}

impl<A: Arch, W: Writer<A>> Lanes<A> for Updated<W> {
    type In = F32s<A>;
    writes_to_w!();
    #[inline(always)]
    fn load_block(&self, arch: A, i: usize) -> [F32s<A>; UNROLL] {
        self.w.load_block(arch, i)
    }
    #[inline(always)]
    fn load_rest(&self, arch: A, j: usize) -> F32s<A> {
        self.w.load_rest(arch, j)
    }
    #[inline(always)]
    fn load_tail(&self, arch: A, fill: f32) -> F32s<A> {
        filled_tail(arch, &self.w, fill)
    }
}

impl<A: Arch, W: Writer<A>, R: Reader<A>> Lanes<A> for UpdatedWith<W, R> {
    type In = (F32s<A>, F32s<A>);
    writes_to_w!();
    #[inline(always)]
    fn load_block(&self, arch: A, i: usize) -> [Self::In; UNROLL] {
        zip(self.w.load_block(arch, i), self.side.load_block(arch, i))
    }
    #[inline(always)]
    fn load_rest(&self, arch: A, j: usize) -> Self::In {
        (self.w.load_rest(arch, j), self.side.load_rest(arch, j))
    }
    #[inline(always)]
    fn load_tail(&self, arch: A, fill: f32) -> Self::In {
        (
            filled_tail(arch, &self.w, fill),
            filled_tail(arch, &self.side, fill),
        )
    }
}

/// One pass over one row (or chunk), run out of line in the token's region.
struct Pass<'k, A, K, L> {
    arch: A,
    kernel: &'k mut K,
    lanes: L,
}

impl<A: Arch, L: Lanes<A>, K: Kernel<A::Simd, L::In>> Body for Pass<'_, A, K, L> {
    type Output = ();
    #[inline(always)]
    fn call(self) {
        drive(self.arch, self.kernel, self.lanes)
    }
}

#[inline(always)]
fn in_region<A: Arch, L: Lanes<A>, K: Kernel<A::Simd, L::In>>(arch: A, kernel: &mut K, lanes: L) {
    arch.region(Pass {
        arch,
        kernel,
        lanes,
    })
}

#[inline(always)]
fn drive<A: Arch, L: Lanes<A>, K: Kernel<A::Simd, L::In>>(arch: A, kernel: &mut K, mut lanes: L) {
    let simd = arch.simd();
    let init = kernel.init(simd);
    let mut acc = [init; UNROLL];
    let mut since_flush = 0usize;
    for i in 0..lanes.blocks() {
        let x = lanes.load_block(arch, i);
        let mut y = [simd.splat_f32s(0.0); UNROLL];
        for j in 0..UNROLL {
            (acc[j], y[j]) = kernel.step(simd, acc[j], x[j]);
        }
        lanes.store_block(arch, i, y);
        since_flush += 1;
        if since_flush == K::FLUSH_STEPS {
            since_flush = 0;
            let merged = merge_all(simd, kernel, acc);
            kernel.flush(simd, merged);
            acc = [init; UNROLL];
        }
    }
    for (j, a) in acc.iter_mut().enumerate().take(lanes.rest()) {
        let (next, y) = kernel.step(simd, *a, lanes.load_rest(arch, j));
        *a = next;
        lanes.store_rest(arch, j, y);
    }
    let tail_len = lanes.tail_len();
    if tail_len > 0 {
        let x = lanes.load_tail(arch, kernel.fill());
        let (next, y) = kernel.step_tail(simd, acc[UNROLL - 1], x, tail_len);
        acc[UNROLL - 1] = next;
        lanes.store_tail(arch, y);
    }
    let merged = merge_all(simd, kernel, acc);
    kernel.flush(simd, merged);
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
