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
        Io::Read(x) => {
            let (body, tail) = S::as_simd_f32s(x);
            drive(simd, kernel, ReadLanes::<S> { body, tail });
        }
        Io::Map(x, y) => {
            assert_eq!(x.len(), y.len(), "a pass writes a row as long as it reads");
            let (xb, xt) = S::as_simd_f32s(x);
            let (yb, yt) = S::as_mut_simd_f32s(y);
            drive(simd, kernel, MapLanes::<S> { xb, xt, yb, yt });
        }
        Io::InPlace(y) => {
            let (yb, yt) = S::as_mut_simd_f32s(y);
            drive(simd, kernel, InPlaceLanes::<S> { yb, yt });
        }
    }
}

/// Vector access to the full vectors and the partial tail of one pass.
trait Lanes<S: Simd> {
    fn body_len(&self) -> usize;
    fn tail_len(&self) -> usize;
    fn load(&self, i: usize) -> S::f32s;
    fn store(&mut self, i: usize, v: S::f32s);
    /// The tail's lanes; lanes past the row are 0 (the caller replaces them).
    fn load_tail(&self, simd: S) -> S::f32s;
    fn store_tail(&mut self, simd: S, v: S::f32s);
}

struct ReadLanes<'a, S: Simd> {
    body: &'a [S::f32s],
    tail: &'a [f32],
}

impl<S: Simd> Lanes<S> for ReadLanes<'_, S> {
    #[inline(always)]
    fn body_len(&self) -> usize {
        self.body.len()
    }
    #[inline(always)]
    fn tail_len(&self) -> usize {
        self.tail.len()
    }
    #[inline(always)]
    fn load(&self, i: usize) -> S::f32s {
        self.body[i]
    }
    #[inline(always)]
    fn store(&mut self, _: usize, _: S::f32s) {}
    #[inline(always)]
    fn load_tail(&self, simd: S) -> S::f32s {
        simd.partial_load_f32s(self.tail)
    }
    #[inline(always)]
    fn store_tail(&mut self, _: S, _: S::f32s) {}
}

struct MapLanes<'a, S: Simd> {
    xb: &'a [S::f32s],
    xt: &'a [f32],
    yb: &'a mut [S::f32s],
    yt: &'a mut [f32],
}

impl<S: Simd> Lanes<S> for MapLanes<'_, S> {
    #[inline(always)]
    fn body_len(&self) -> usize {
        self.xb.len()
    }
    #[inline(always)]
    fn tail_len(&self) -> usize {
        self.xt.len()
    }
    #[inline(always)]
    fn load(&self, i: usize) -> S::f32s {
        self.xb[i]
    }
    #[inline(always)]
    fn store(&mut self, i: usize, v: S::f32s) {
        self.yb[i] = v;
    }
    #[inline(always)]
    fn load_tail(&self, simd: S) -> S::f32s {
        simd.partial_load_f32s(self.xt)
    }
    #[inline(always)]
    fn store_tail(&mut self, simd: S, v: S::f32s) {
        simd.partial_store_f32s(self.yt, v)
    }
}

struct InPlaceLanes<'a, S: Simd> {
    yb: &'a mut [S::f32s],
    yt: &'a mut [f32],
}

impl<S: Simd> Lanes<S> for InPlaceLanes<'_, S> {
    #[inline(always)]
    fn body_len(&self) -> usize {
        self.yb.len()
    }
    #[inline(always)]
    fn tail_len(&self) -> usize {
        self.yt.len()
    }
    #[inline(always)]
    fn load(&self, i: usize) -> S::f32s {
        self.yb[i]
    }
    #[inline(always)]
    fn store(&mut self, i: usize, v: S::f32s) {
        self.yb[i] = v;
    }
    #[inline(always)]
    fn load_tail(&self, simd: S) -> S::f32s {
        simd.partial_load_f32s(self.yt)
    }
    #[inline(always)]
    fn store_tail(&mut self, simd: S, v: S::f32s) {
        simd.partial_store_f32s(self.yt, v)
    }
}

#[inline(always)]
fn drive<S: Simd, K: Kernel<S>, L: Lanes<S>>(simd: S, kernel: &mut K, mut lanes: L) {
    let body_len = lanes.body_len();
    let init = kernel.init(simd);
    let mut acc = [init; UNROLL];
    let steps = body_len / UNROLL;
    let mut since_flush = 0usize;
    for s in 0..steps {
        let base = s * UNROLL;
        for (j, a) in acc.iter_mut().enumerate() {
            let (next, y) = kernel.step(simd, *a, lanes.load(base + j));
            *a = next;
            lanes.store(base + j, y);
        }
        since_flush += 1;
        if since_flush == K::FLUSH_STEPS {
            since_flush = 0;
            let merged = merge_all(simd, kernel, acc);
            kernel.flush(simd, merged);
            acc = [init; UNROLL];
        }
    }
    for (j, i) in (steps * UNROLL..body_len).enumerate() {
        let (next, y) = kernel.step(simd, acc[j], lanes.load(i));
        acc[j] = next;
        lanes.store(i, y);
    }
    let tail_len = lanes.tail_len();
    if tail_len > 0 {
        let valid = simd.mask_between_m32s(0, tail_len as u32).mask();
        let fill = simd.splat_f32s(kernel.fill());
        let x = simd.select_f32s(valid, lanes.load_tail(simd), fill);
        let (next, y) = kernel.step(simd, acc[UNROLL - 1], x);
        acc[UNROLL - 1] = next;
        lanes.store_tail(simd, y);
    }
    let merged = merge_all(simd, kernel, acc);
    kernel.flush(simd, merged);
}

#[inline(always)]
fn merge_all<S: Simd, K: Kernel<S>>(simd: S, kernel: &K, acc: [K::Acc; UNROLL]) -> K::Acc {
    let a = kernel.merge(simd, acc[0], acc[1]);
    let b = kernel.merge(simd, acc[2], acc[3]);
    kernel.merge(simd, a, b)
}

/// The lanes of a vector, in order.
#[inline(always)]
pub(crate) fn lanes<S: Simd>(v: &S::f32s) -> &[f32] {
    pulp::bytemuck::cast_slice(core::slice::from_ref(v))
}
