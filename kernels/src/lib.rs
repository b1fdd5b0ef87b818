//! SIMD microkernels behind the `softmax` crate.
//!
//! Every pass is one generic body written against [`pulp::Simd`] and run
//! through one loop shape ([`loops`]); the same code runs on AVX-512, AVX2+FMA,
//! NEON, pulp's scalar token (the reference path) and pulp's emulated wide
//! scalar tokens (so 16-lane logic is tested on any CPU). Rows are f32, f16 or
//! bf16 in memory; the loop widens them on load and rounds on store, so every
//! kernel computes in f32 lanes. Kernels know nothing of threads or errors: the
//! `softmax` crate validates shapes and chooses the ISA, then runs a
//! [`Forward`] or [`LogSumExp`] [`Job`] with that ISA's [`arch::Arch`] token
//! inside one target-feature region for every row of the job.
//!
//! | file          | pass |
//! |---------------|------|
//! | `arch.rs`     | ISA tokens with f16/bf16 conversions (the only `unsafe`) |
//! | `storage.rs`  | f32/f16/bf16 rows as f32 vectors |
//! | `exp.rs`      | the vector exp and its constants |
//! | `max.rs`      | max- and min-reduce |
//! | `shift.rs`    | z = (x - max)/t, three ways |
//! | `exp_sum.rs`  | exp-subtract(-store)-sum |
//! | `output.rs`   | scale, exp-scale, log-softmax output, special fills |
//! | `two_pass.rs` | the two-pass (mantissa, exponent) sum and its output |
//! | `scan.rs`     | NaN / +inf counting for special rows |
//! | `row.rs`      | the three algorithms and the special-value rules |
//! | `backward.rs` | softmax and log-softmax backward, the Jacobian |
//! | `cross_entropy.rs` | cross-entropy and its gradient from logits |
//! | `random.rs`   | the counter-based random source (SplitMix64 keyed by seed, row, step) |
//! | `sample.rs`   | sampling a token: block maxima and sums, truncation, the draw |

#![deny(unsafe_code)]

pub mod arch;
mod backward;
mod cross_entropy;
pub mod exp;
mod exp_sum;
pub mod loops;
mod max;
mod output;
pub mod random;
mod row;
mod sample;
mod scan;
mod shift;
mod storage;
mod two_pass;

pub use cross_entropy::{LossOptions, RowTarget};
pub use half;
pub use pulp;
pub use row::ONLINE_BLOCK;
pub use sample::{Draw, Drawn, SampleOptions, TokenLogprob, BLOCK as SAMPLE_BLOCK};
pub use storage::{AnySlice, AnySliceMut, Kind, Storage};

use arch::Arch;
pub use loops::{Stage, CHUNK};

/// How a row's maximum and sum are found.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Method {
    /// max; exp-subtract-store-sum; scale (softmax: 2 reads + 2 writes after the max read).
    ThreePass,
    /// Dukhan & Ablavatski: sum of (mantissa, exponent) pairs with no max; recompute and scale.
    TwoPass,
    /// Milakov & Gimelshein: running max and rescaled running sum in one read; then the output.
    Online,
}

impl Method {
    /// Every method.
    pub const ALL: [Method; 3] = [Method::ThreePass, Method::TwoPass, Method::Online];
}

/// What a forward pass writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Output {
    Softmax,
    LogSoftmax,
}

/// A temperature t > 0 and its reciprocal (rounded once from the exact 1/t).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Temperature {
    t: f32,
    inv: f32,
}

impl Temperature {
    /// `t` must be finite and at least `f32::MIN_POSITIVE`, so 1/t is finite
    /// (the `softmax` crate checks it).
    pub fn new(t: f32) -> Self {
        debug_assert!(t.is_finite() && t >= f32::MIN_POSITIVE);
        Self {
            t,
            inv: (1.0 / t as f64) as f32,
        }
    }
    pub fn get(self) -> f32 {
        self.t
    }
}

impl Default for Temperature {
    fn default() -> Self {
        Self::new(1.0)
    }
}

/// Elements a buffer of `rows` rows of `cols` elements at `stride` must hold:
/// (rows - 1) · stride + cols (the last row needs no padding); `None` on overflow.
pub fn required_len(rows: usize, cols: usize, stride: usize) -> Option<usize> {
    match rows {
        0 => Some(0),
        _ => (rows - 1).checked_mul(stride)?.checked_add(cols),
    }
}

/// A job that runs rows with one ISA token, inside that ISA's target-feature region.
pub trait Job {
    type Output;
    /// The f32 working space [`Job::run`] needs: a [`Stage`] when a row is f16
    /// or bf16, and whatever else the job keeps per row.
    fn scratch_len(&self) -> usize;
    /// Runs every row; `scratch` holds at least [`Job::scratch_len`] values.
    fn run<A: Arch>(self, arch: A, scratch: &mut [f32]) -> Self::Output;
}

/// Runs `job` with `arch` inside the token's target-feature region, so the
/// row logic around the passes is compiled with the ISA's features too.
#[inline(always)]
pub fn run_in_region<A: Arch, J: Job>(arch: A, job: J, scratch: &mut [f32]) -> J::Output {
    struct InRegion<'s, A, J>(A, J, &'s mut [f32]);
    impl<A: Arch, J: Job> arch::Body for InRegion<'_, A, J> {
        type Output = J::Output;
        #[inline(always)]
        fn call(self) -> J::Output {
            self.1.run(self.0, self.2)
        }
    }
    arch.region(InRegion(arch, job, scratch))
}

/// The stage a job over rows of these kinds needs: none when every row is f32.
#[inline(always)]
fn stage_len(kinds: &[Kind]) -> usize {
    if kinds.iter().all(|&k| k == Kind::F32) {
        0
    } else {
        Stage::LEN
    }
}

/// Read-only strided rows.
#[derive(Clone, Copy, Debug)]
pub struct Strided<'a> {
    data: AnySlice<'a>,
    rows: usize,
    cols: usize,
    stride: usize,
}

/// Writable strided rows.
#[derive(Debug)]
pub struct StridedMut<'a> {
    data: AnySliceMut<'a>,
    rows: usize,
    cols: usize,
    stride: usize,
}

fn check_shape(len: usize, rows: usize, cols: usize, stride: usize) {
    assert!(rows <= 1 || stride >= cols, "stride {stride} < cols {cols}");
    let need = required_len(rows, cols, stride).expect("rows × stride overflows usize");
    assert!(len >= need, "buffer of {len} elements, {need} needed");
}

impl<'a> Strided<'a> {
    /// Panics unless the shape fits `data` (the `softmax` crate checks first).
    pub fn new(data: impl Into<AnySlice<'a>>, rows: usize, cols: usize, stride: usize) -> Self {
        let data = data.into();
        check_shape(data.len(), rows, cols, stride);
        Self {
            data,
            rows,
            cols,
            stride,
        }
    }
    #[inline]
    pub fn rows(&self) -> usize {
        self.rows
    }
    #[inline]
    pub fn cols(&self) -> usize {
        self.cols
    }
    #[inline]
    pub fn kind(&self) -> Kind {
        self.data.kind()
    }
    #[inline]
    pub fn row(&self, i: usize) -> AnySlice<'a> {
        let start = i * self.stride;
        self.data.slice(start..start + self.cols)
    }
    /// The first `k` rows and the rest.
    pub fn split_at(self, k: usize) -> (Self, Self) {
        let k = k.min(self.rows);
        let (a, b) = self.data.split_at((k * self.stride).min(self.data.len()));
        (
            Self {
                data: a,
                rows: k,
                ..self
            },
            Self {
                data: b,
                rows: self.rows - k,
                ..self
            },
        )
    }
}

impl<'a> StridedMut<'a> {
    /// Panics unless the shape fits `data` (the `softmax` crate checks first).
    pub fn new(data: impl Into<AnySliceMut<'a>>, rows: usize, cols: usize, stride: usize) -> Self {
        let data = data.into();
        check_shape(data.len(), rows, cols, stride);
        Self {
            data,
            rows,
            cols,
            stride,
        }
    }
    #[inline]
    pub fn rows(&self) -> usize {
        self.rows
    }
    #[inline]
    pub fn cols(&self) -> usize {
        self.cols
    }
    #[inline]
    pub fn kind(&self) -> Kind {
        self.data.kind()
    }
    #[inline]
    pub fn row_mut(&mut self, i: usize) -> AnySliceMut<'_> {
        let start = i * self.stride;
        self.data.reborrow().into_slice(start..start + self.cols)
    }
    /// The first `k` rows and the rest.
    pub fn split_at(self, k: usize) -> (Self, Self) {
        let k = k.min(self.rows);
        let at = (k * self.stride).min(self.data.len());
        let (a, b) = self.data.split_at(at);
        let (rows, cols, stride) = (self.rows, self.cols, self.stride);
        (
            Self {
                data: a,
                rows: k,
                cols,
                stride,
            },
            Self {
                data: b,
                rows: rows - k,
                cols,
                stride,
            },
        )
    }
}

/// Softmax or log-softmax over rows: `x → y`, or in place on `y` when `x` is `None`.
pub struct Forward<'a> {
    pub output: Output,
    pub method: Method,
    pub temperature: Temperature,
    pub x: Option<Strided<'a>>,
    pub y: StridedMut<'a>,
}

impl Forward<'_> {
    /// The row read first: `x`, or `y` in place.
    #[inline(always)]
    fn input_kind(&self) -> Kind {
        self.x.as_ref().map_or(self.y.kind(), |x| x.kind())
    }

    /// (stage, widened input, exponentials) lengths of the scratch space: a
    /// [`Stage`] for f16 or bf16 rows; the input row in f32 when it is
    /// f16 or bf16 and the method reads it more than once; and a row of f32
    /// exponentials for a three-pass softmax whose output is not f32.
    #[inline(always)]
    fn scratch_parts(&self) -> (usize, usize, usize) {
        let stage = stage_len(&[self.input_kind(), self.y.kind()]);
        let cols = self.y.cols();
        let widened = widened_len(self.method, self.input_kind(), cols);
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
/// reads it: three-pass and two-pass read a row two or three times, and
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
            x,
            mut y,
        } = self;
        if let Some(x) = &x {
            assert!(
                x.rows == y.rows && x.cols == y.cols,
                "input and output shapes differ"
            );
        }
        let scratch = &mut scratch[..stage_len + widened_len + exps_len];
        let (stage, rest) = scratch.split_at_mut(stage_len);
        let (space, exps) = rest.split_at_mut(widened_len);
        let mut stage = Stage::new(stage);
        for i in 0..y.rows {
            let yi = y.row_mut(i);
            // A match, not Option::map: a closure would be compiled outside the
            // target-feature region. In place, the passes read the widened copy.
            let xi = match (&x, widened_len) {
                (Some(x), 0) => Some(x.row(i)),
                (None, 0) => None,
                (Some(x), _) => Some(widen_into(arch, x.row(i), space)),
                (None, _) => Some(widen_into(arch, yi.shared(), space)),
            };
            let st = &mut stage;
            row::forward_row(arch, st, output, method, temperature, xi, yi, exps);
        }
    }
}

/// t · ln Σ exp(x/t) of each row into `out[i]`, rounded to `out`'s type.
pub struct LogSumExp<'a> {
    pub method: Method,
    pub temperature: Temperature,
    pub x: Strided<'a>,
    pub out: AnySliceMut<'a>,
}

impl Job for LogSumExp<'_> {
    type Output = ();

    fn scratch_len(&self) -> usize {
        let kind = self.x.kind();
        stage_len(&[kind]) + widened_len(self.method, kind, self.x.cols)
    }

    #[inline(always)]
    fn run<A: Arch>(mut self, arch: A, scratch: &mut [f32]) {
        assert!(self.out.len() >= self.x.rows, "one output per row");
        let (stage, space) = scratch.split_at_mut(stage_len(&[self.x.kind()]));
        let mut stage = Stage::new(stage);
        let (method, t) = (self.method, self.temperature);
        let widen = rereads(method, self.x.kind());
        for i in 0..self.x.rows {
            let xi = match widen {
                true => widen_into(arch, self.x.row(i), space),
                false => self.x.row(i),
            };
            let value = row::logsumexp_row(arch, &mut stage, method, t, xi);
            self.out.set(i, value);
        }
    }
}

/// The backward pass of softmax or log-softmax over rows: from the forward
/// output `y` and the upstream gradient `g` into `dx`, or in place over g
/// (`dx` holds g) when `g` is `None`. All three rows are of one type.
pub struct Backward<'a> {
    pub output: Output,
    pub temperature: Temperature,
    pub y: Strided<'a>,
    pub g: Option<Strided<'a>>,
    pub dx: StridedMut<'a>,
}

impl Job for Backward<'_> {
    type Output = ();

    fn scratch_len(&self) -> usize {
        stage_len(&[self.y.kind(), self.dx.kind()])
    }

    #[inline(always)]
    fn run<A: Arch>(mut self, arch: A, scratch: &mut [f32]) {
        assert!(self.y.rows == self.dx.rows && self.y.cols == self.dx.cols);
        let mut stage = Stage::new(scratch);
        for i in 0..self.dx.rows {
            // A match, not Option::map: a closure would be compiled outside the region.
            #[allow(clippy::manual_map)]
            let gi = match &self.g {
                Some(g) => Some(g.row(i)),
                None => None,
            };
            let (y, dx) = (self.y.row(i), self.dx.row_mut(i));
            let (output, t, st) = (self.output, self.temperature, &mut stage);
            backward::backward_row(arch, st, output, t, y, gi, dx);
        }
    }
}

/// The softmax Jacobian (diag(y) - y yᵀ)/t of one row y of K elements, into
/// `out`, K rows of K (row-major).
pub struct Jacobian<'a> {
    pub temperature: Temperature,
    pub y: AnySlice<'a>,
    pub out: AnySliceMut<'a>,
}

impl Job for Jacobian<'_> {
    type Output = ();

    fn scratch_len(&self) -> usize {
        stage_len(&[self.y.kind(), self.out.kind()])
    }

    #[inline(always)]
    fn run<A: Arch>(mut self, arch: A, scratch: &mut [f32]) {
        let k = self.y.len();
        assert_eq!(self.out.len(), k * k, "a Jacobian of K×K elements");
        let mut stage = Stage::new(scratch);
        for i in 0..k {
            let row = self.out.reborrow().into_slice(i * k..(i + 1) * k);
            backward::jacobian_row(arch, &mut stage, self.temperature, self.y, i, row);
        }
    }
}

/// Class labels of any integer type.
#[derive(Clone, Copy, Debug)]
pub enum Labels<'a> {
    I32(&'a [i32]),
    I64(&'a [i64]),
    U32(&'a [u32]),
    U64(&'a [u64]),
    Usize(&'a [usize]),
}

impl<'a> Labels<'a> {
    pub fn len(&self) -> usize {
        match self {
            Labels::I32(l) => l.len(),
            Labels::I64(l) => l.len(),
            Labels::U32(l) => l.len(),
            Labels::U64(l) => l.len(),
            Labels::Usize(l) => l.len(),
        }
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Label `i`, exactly.
    #[inline(always)]
    pub fn get(&self, i: usize) -> i128 {
        match self {
            Labels::I32(l) => l[i] as i128,
            Labels::I64(l) => l[i] as i128,
            Labels::U32(l) => l[i] as i128,
            Labels::U64(l) => l[i] as i128,
            Labels::Usize(l) => l[i] as i128,
        }
    }
    pub fn split_at(self, k: usize) -> (Self, Self) {
        macro_rules! split {
            ($v:ident, $l:expr) => {{
                let (a, b) = $l.split_at(k);
                (Labels::$v(a), Labels::$v(b))
            }};
        }
        match self {
            Labels::I32(l) => split!(I32, l),
            Labels::I64(l) => split!(I64, l),
            Labels::U32(l) => split!(U32, l),
            Labels::U64(l) => split!(U64, l),
            Labels::Usize(l) => split!(Usize, l),
        }
    }
}

/// What the rows of a cross-entropy batch are scored against.
#[derive(Clone, Copy, Debug)]
pub enum Targets<'a> {
    /// One label per row (each below the row length, or equal to `ignore`).
    Labels {
        labels: Labels<'a>,
        ignore: Option<i128>,
    },
    /// A target distribution per row, in rows of the logits' type and shape.
    Soft(Strided<'a>),
}

impl<'a> Targets<'a> {
    #[inline(always)]
    fn row(&self, i: usize) -> RowTarget<'a> {
        match self {
            Targets::Labels { labels, ignore } => {
                let label = labels.get(i);
                if Some(label) == *ignore {
                    RowTarget::Ignored
                } else {
                    RowTarget::Class(label as usize)
                }
            }
            Targets::Soft(q) => RowTarget::Soft(q.row(i)),
        }
    }
    pub fn split_at(self, k: usize) -> (Self, Self) {
        match self {
            Targets::Labels { labels, ignore } => {
                let (a, b) = labels.split_at(k);
                (
                    Targets::Labels { labels: a, ignore },
                    Targets::Labels { labels: b, ignore },
                )
            }
            Targets::Soft(q) => {
                let (a, b) = q.split_at(k);
                (Targets::Soft(a), Targets::Soft(b))
            }
        }
    }
}

/// Cross-entropy of each row of logits `x` against its target: the loss into
/// `losses[i]` (when given), the gradient into `grad` (when given; over the
/// logits in place when `x` is `None`). Returns the sum of the row losses.
pub struct CrossEntropy<'a> {
    pub options: LossOptions<'a>,
    pub targets: Targets<'a>,
    pub x: Option<Strided<'a>>,
    pub grad: Option<StridedMut<'a>>,
    pub losses: Option<&'a mut [f32]>,
}

impl CrossEntropy<'_> {
    /// (rows, cols) of the logits (in place: of the gradient rows that hold them).
    fn shape(&self) -> (usize, usize) {
        match (&self.x, &self.grad) {
            (Some(x), _) => (x.rows, x.cols),
            (None, Some(g)) => (g.rows, g.cols),
            (None, None) => (0, 0),
        }
    }
    pub fn rows(&self) -> usize {
        self.shape().0
    }
    pub fn cols(&self) -> usize {
        self.shape().1
    }
}

impl Job for CrossEntropy<'_> {
    type Output = f64;

    fn scratch_len(&self) -> usize {
        let x = self.x.as_ref().map(|x| x.kind());
        let g = self.grad.as_ref().map(|g| g.kind());
        let q = match &self.targets {
            Targets::Soft(q) => Some(q.kind()),
            Targets::Labels { .. } => None,
        };
        stage_len(&[x, g, q].map(|k| k.unwrap_or(Kind::F32)))
    }

    #[inline(always)]
    fn run<A: Arch>(mut self, arch: A, scratch: &mut [f32]) -> f64 {
        let rows = self.rows();
        let mut stage = Stage::new(scratch);
        let mut total = 0.0;
        for i in 0..rows {
            // Matches, not Option::map: a closure would be compiled outside the region.
            #[allow(clippy::manual_map)]
            let xi = match &self.x {
                Some(x) => Some(x.row(i)),
                None => None,
            };
            #[allow(clippy::manual_map)]
            let gi = match &mut self.grad {
                Some(g) => Some(g.row_mut(i)),
                None => None,
            };
            let target = self.targets.row(i);
            let st = &mut stage;
            let loss = cross_entropy::cross_entropy_row(arch, st, &self.options, target, xi, gi);
            if let Some(losses) = self.losses.as_deref_mut() {
                losses[i] = loss as f32;
            }
            total += loss;
        }
        total
    }
}

/// One token drawn from each row of logits `x`, into `out[i]`; the top-n
/// (token, log-probability) pairs of row i into `top[i·n .. (i+1)·n]`.
/// Row i draws from the stream (seed, `first_row` + i, step).
pub struct Sample<'a> {
    pub options: SampleOptions<'a>,
    pub x: Strided<'a>,
    pub first_row: u64,
    pub out: &'a mut [Drawn],
    pub top: &'a mut [TokenLogprob],
    pub top_n: usize,
    /// When given: row i's truncated log-probabilities into
    /// `kept[i·cols .. (i+1)·cols]` (-inf where truncation drops a token).
    pub kept: Option<&'a mut [f32]>,
}

impl Sample<'_> {
    /// The first `k` rows and the rest.
    pub fn split_at(self, k: usize) -> (Self, Self) {
        let (xa, xb) = self.x.split_at(k);
        let k = xa.rows;
        let (oa, ob) = self.out.split_at_mut(k.min(self.out.len()));
        let cut = (k * self.top_n).min(self.top.len());
        let (ta, tb) = self.top.split_at_mut(cut);
        let (options, top_n, first_row) = (self.options, self.top_n, self.first_row);
        let cols = xa.cols;
        let (ka, kb) = match self.kept {
            Some(kept) => {
                let (a, b) = kept.split_at_mut((k * cols).min(kept.len()));
                (Some(a), Some(b))
            }
            None => (None, None),
        };
        (
            Sample {
                options,
                x: xa,
                first_row,
                out: oa,
                top: ta,
                top_n,
                kept: ka,
            },
            Sample {
                options,
                x: xb,
                first_row: first_row + k as u64,
                out: ob,
                top: tb,
                top_n,
                kept: kb,
            },
        )
    }
}

impl Job for Sample<'_> {
    type Output = ();

    fn scratch_len(&self) -> usize {
        stage_len(&[self.x.kind()])
    }

    #[inline(always)]
    fn run<A: Arch>(mut self, arch: A, scratch: &mut [f32]) {
        let mut stage = Stage::new(scratch);
        let (rows, cols) = (self.x.rows, self.x.cols);
        assert!(self.out.len() >= rows, "one outcome per row");
        assert!(self.top.len() >= rows * self.top_n, "top_n pairs per row");
        let mut ws = sample::Workspace::default();
        let o = &self.options;
        for i in 0..rows {
            let stream = random::Stream::new(o.seed, self.first_row + i as u64, o.step);
            let top = &mut self.top[i * self.top_n..(i + 1) * self.top_n];
            // A match, not Option::map: a closure would be compiled outside the region.
            #[allow(clippy::manual_map)]
            let kept = match self.kept.as_deref_mut() {
                Some(k) => Some(&mut k[i * cols..(i + 1) * cols]),
                None => None,
            };
            let x = self.x.row(i);
            let st = &mut stage;
            self.out[i] = sample::sample_row(arch, st, x, o, stream, &mut ws, top, kept);
        }
    }
}
