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
//! A kernel that produces values has them stored by the same loop (out of place
//! or in place); a reduction over a read-only row stores nothing. Tails never
//! read or write outside the caller's slice: pulp's partial loads and stores
//! touch only the lanes that exist, and the missing lanes are replaced by the
//! kernel's fill value before the kernel sees them (a zero fill is wrong for max).

use pulp::Simd;

/// Independent accumulators (and vectors in flight) per step.
pub const UNROLL: usize = 4;

/// One pass over a row, written once for every ISA.
pub(crate) trait Kernel<S: Simd> {
    /// Per-accumulator state.
    type Acc: Copy;
    /// Unrolled steps between two flushes of the accumulators into the kernel's total
    /// (bounds how many terms an f32 lane accumulates before it is taken in wider precision).
    const FLUSH_STEPS: usize = usize::MAX;
    /// The value masked-off tail lanes take; a step on it must leave the accumulator unchanged.
    fn fill(&self) -> f32;
    fn init(&self, simd: S) -> Self::Acc;
    /// Consumes one vector; returns the new accumulator and the values to store (if any).
    fn step(&self, simd: S, acc: Self::Acc, x: S::f32s) -> (Self::Acc, S::f32s);
    /// The step on the masked tail, whose first `valid` lanes are the row's and
    /// the rest hold [`Kernel::fill`]; a kernel whose step cannot take the fill
    /// handles the tail here.
    #[inline(always)]
    fn step_tail(&self, simd: S, acc: Self::Acc, x: S::f32s, valid: usize) -> (Self::Acc, S::f32s) {
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
    Read(&'a [f32]),
    /// Reads the first row, writes the second (same length).
    Map(&'a [f32], &'a mut [f32]),
    /// Reads and overwrites the row.
    InPlace(&'a mut [f32]),
}

impl<'a> Io<'a> {
    /// Out of place when `x` is given, else in place on `y`.
    #[inline(always)]
    pub(crate) fn write(x: Option<&'a [f32]>, y: &'a mut [f32]) -> Self {
        match x {
            Some(x) => Io::Map(x, y),
            None => Io::InPlace(y),
        }
    }
}

/// Runs `kernel` over the row in `io`.
#[inline(always)]
pub(crate) fn run<S: Simd, K: Kernel<S>>(simd: S, io: Io<'_>, kernel: &mut K) {
    match io {
        Io::Read(x) => drive(simd, kernel, ReadLanes::<S>::new(x)),
        Io::Map(x, y) => drive(simd, kernel, WriteLanes::<S, _>::map(x, y)),
        Io::InPlace(y) => drive(simd, kernel, WriteLanes::<S, _>::with(Same, y)),
    }
}

/// Vector access to one pass's row, split up front into blocks of [`UNROLL`]
/// full vectors, the full vectors left over (fewer than UNROLL), and the
/// partial tail. The pieces are cut once with equal lengths for input and
/// output, so indexing inside the loop needs no bounds check.
trait Lanes<S: Simd> {
    fn blocks(&self) -> usize;
    fn load_block(&self, i: usize) -> [S::f32s; UNROLL];
    fn store_block(&mut self, i: usize, v: [S::f32s; UNROLL]);
    fn rest(&self) -> usize;
    fn load_rest(&self, j: usize) -> S::f32s;
    fn store_rest(&mut self, j: usize, v: S::f32s);
    fn tail_len(&self) -> usize;
    /// The tail's lanes; lanes past the row are 0 (the caller replaces them).
    fn load_tail(&self, simd: S) -> S::f32s;
    fn store_tail(&mut self, simd: S, v: S::f32s);
}

type Blocks<'a, S> = &'a [[<S as Simd>::f32s; UNROLL]];
type BlocksMut<'a, S> = &'a mut [[<S as Simd>::f32s; UNROLL]];

struct ReadLanes<'a, S: Simd> {
    blocks: Blocks<'a, S>,
    rest: &'a [S::f32s],
    tail: &'a [f32],
}

impl<'a, S: Simd> ReadLanes<'a, S> {
    #[inline(always)]
    fn new(x: &'a [f32]) -> Self {
        let (body, tail) = S::as_simd_f32s(x);
        let (blocks, rest) = body.as_chunks::<UNROLL>();
        Self { blocks, rest, tail }
    }
}

impl<S: Simd> Lanes<S> for ReadLanes<'_, S> {
    #[inline(always)]
    fn blocks(&self) -> usize {
        self.blocks.len()
    }
    #[inline(always)]
    fn load_block(&self, i: usize) -> [S::f32s; UNROLL] {
        self.blocks[i]
    }
    #[inline(always)]
    fn store_block(&mut self, _: usize, _: [S::f32s; UNROLL]) {}
    #[inline(always)]
    fn rest(&self) -> usize {
        self.rest.len()
    }
    #[inline(always)]
    fn load_rest(&self, j: usize) -> S::f32s {
        self.rest[j]
    }
    #[inline(always)]
    fn store_rest(&mut self, _: usize, _: S::f32s) {}
    #[inline(always)]
    fn tail_len(&self) -> usize {
        self.tail.len()
    }
    #[inline(always)]
    fn load_tail(&self, simd: S) -> S::f32s {
        simd.partial_load_f32s(self.tail)
    }
    #[inline(always)]
    fn store_tail(&mut self, _: S, _: S::f32s) {}
}

/// The output side of a writing pass; the input is `x` (out of place) or the
/// output itself (in place).
struct WriteLanes<'a, S: Simd, X> {
    x: X,
    blocks: BlocksMut<'a, S>,
    rest: &'a mut [S::f32s],
    tail: &'a mut [f32],
}

/// In place: the pass reads what it overwrites.
struct Same;

impl<'a, S: Simd, X> WriteLanes<'a, S, X> {
    #[inline(always)]
    fn with(x: X, y: &'a mut [f32]) -> Self {
        let (body, tail) = S::as_mut_simd_f32s(y);
        let (blocks, rest) = body.as_chunks_mut::<UNROLL>();
        Self {
            x,
            blocks,
            rest,
            tail,
        }
    }
}

impl<'a, S: Simd> WriteLanes<'a, S, ReadLanes<'a, S>> {
    #[inline(always)]
    fn map(x: &'a [f32], y: &'a mut [f32]) -> Self {
        assert_eq!(x.len(), y.len(), "a pass writes a row as long as it reads");
        let w = Self::with(ReadLanes::new(x), y);
        // Equal lengths, stated where the optimiser can see them.
        let x = ReadLanes {
            blocks: &w.x.blocks[..w.blocks.len()],
            rest: &w.x.rest[..w.rest.len()],
            tail: w.x.tail,
        };
        Self { x, ..w }
    }
}

/// Where a writing pass reads its block `i`, its left-over vector `j` and its tail.
trait Source<S: Simd> {
    fn block(&self, own: &[[S::f32s; UNROLL]], i: usize) -> [S::f32s; UNROLL];
    fn rest(&self, own: &[S::f32s], j: usize) -> S::f32s;
    fn tail(&self, simd: S, own: &[f32]) -> S::f32s;
}

impl<S: Simd> Source<S> for Same {
    #[inline(always)]
    fn block(&self, own: &[[S::f32s; UNROLL]], i: usize) -> [S::f32s; UNROLL] {
        own[i]
    }
    #[inline(always)]
    fn rest(&self, own: &[S::f32s], j: usize) -> S::f32s {
        own[j]
    }
    #[inline(always)]
    fn tail(&self, simd: S, own: &[f32]) -> S::f32s {
        simd.partial_load_f32s(own)
    }
}

impl<S: Simd> Source<S> for ReadLanes<'_, S> {
    #[inline(always)]
    fn block(&self, _: &[[S::f32s; UNROLL]], i: usize) -> [S::f32s; UNROLL] {
        self.blocks[i]
    }
    #[inline(always)]
    fn rest(&self, _: &[S::f32s], j: usize) -> S::f32s {
        self.rest[j]
    }
    #[inline(always)]
    fn tail(&self, simd: S, _: &[f32]) -> S::f32s {
        simd.partial_load_f32s(self.tail)
    }
}

impl<S: Simd, X: Source<S>> Lanes<S> for WriteLanes<'_, S, X> {
    #[inline(always)]
    fn blocks(&self) -> usize {
        self.blocks.len()
    }
    #[inline(always)]
    fn load_block(&self, i: usize) -> [S::f32s; UNROLL] {
        self.x.block(self.blocks, i)
    }
    #[inline(always)]
    fn store_block(&mut self, i: usize, v: [S::f32s; UNROLL]) {
        self.blocks[i] = v;
    }
    #[inline(always)]
    fn rest(&self) -> usize {
        self.rest.len()
    }
    #[inline(always)]
    fn load_rest(&self, j: usize) -> S::f32s {
        self.x.rest(self.rest, j)
    }
    #[inline(always)]
    fn store_rest(&mut self, j: usize, v: S::f32s) {
        self.rest[j] = v;
    }
    #[inline(always)]
    fn tail_len(&self) -> usize {
        self.tail.len()
    }
    #[inline(always)]
    fn load_tail(&self, simd: S) -> S::f32s {
        self.x.tail(simd, self.tail)
    }
    #[inline(always)]
    fn store_tail(&mut self, simd: S, v: S::f32s) {
        simd.partial_store_f32s(self.tail, v)
    }
}

#[inline(always)]
fn drive<S: Simd, K: Kernel<S>, L: Lanes<S>>(simd: S, kernel: &mut K, mut lanes: L) {
    let init = kernel.init(simd);
    let mut acc = [init; UNROLL];
    let mut since_flush = 0usize;
    for i in 0..lanes.blocks() {
        let x = lanes.load_block(i);
        let mut y = x;
        for j in 0..UNROLL {
            (acc[j], y[j]) = kernel.step(simd, acc[j], x[j]);
        }
        lanes.store_block(i, y);
        since_flush += 1;
        if since_flush == K::FLUSH_STEPS {
            since_flush = 0;
            let merged = merge_all(simd, kernel, acc);
            kernel.flush(simd, merged);
            acc = [init; UNROLL];
        }
    }
    for (j, a) in acc.iter_mut().enumerate().take(lanes.rest()) {
        let (next, y) = kernel.step(simd, *a, lanes.load_rest(j));
        *a = next;
        lanes.store_rest(j, y);
    }
    let tail_len = lanes.tail_len();
    if tail_len > 0 {
        let valid = simd.mask_between_m32s(0, tail_len as u32).mask();
        let fill = simd.splat_f32s(kernel.fill());
        let x = simd.select_f32s(valid, lanes.load_tail(simd), fill);
        let (next, y) = kernel.step_tail(simd, acc[UNROLL - 1], x, tail_len);
        acc[UNROLL - 1] = next;
        lanes.store_tail(simd, y);
    }
    let merged = merge_all(simd, kernel, acc);
    kernel.flush(simd, merged);
}

#[inline(always)]
fn merge_all<S: Simd, K: Kernel<S>>(simd: S, kernel: &K, acc: [K::Acc; UNROLL]) -> K::Acc {
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
