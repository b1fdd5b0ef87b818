//! What the report and the criterion benches run on: shapes, the logits, the
//! element types and their checks, half-precision buffers and the scalar
//! reference they are checked against.
//!
//! ```text
//! logits   uniform in ±LOGIT_RANGE from xorshift64* (the same for every shape
//!          of the same size); training and sampling inputs use the same
//!          generators, seeded per row or per case with splitmix64
//! check    f32 out: |Δ| ≤ 1e-6·max(1, |ref|); f16/bf16 out: one unit in the
//!          last place, |Δ| ≤ 2^-p·max(|ref|, 2^-14)
//! ```

use softmax::half::{bf16, f16};
use softmax::{Algorithm, Element, Isa, Parallelism, Rows, RowsMut, Softmax};
use std::fmt;

/// Logits are uniform in ±LOGIT_RANGE: a spread like real LLM logits, no special values.
pub const LOGIT_RANGE: f32 = 10.0;
/// |Δ| ≤ TOLERANCE · max(1, |reference|): absolute for probabilities (≤ 1),
/// relative for log-probabilities and logsumexp, whose magnitude grows with ln n.
pub const TOLERANCE: f64 = 1e-6;
/// Half-precision outputs: |Δ| ≤ 2^-p · max(|reference|, HALF_FLOOR) with p the
/// type's stored mantissa bits (one unit in the last place). Below the floor the
/// bound is absolute: 2^-24 for f16, its subnormal spacing, and 2^-21 for bf16.
pub const HALF_FLOOR: f64 = 1.0 / (1 << 14) as f64;

/// A batch of `rows` rows of `cols` elements.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shape {
    pub rows: usize,
    pub cols: usize,
}

impl Shape {
    pub const fn new(rows: usize, cols: usize) -> Shape {
        Shape { rows, cols }
    }

    pub fn elements(self) -> usize {
        self.rows * self.cols
    }

    /// "ROWSxCOLS" ('×' and 'X' too), both at least 1.
    pub fn parse(text: &str) -> Result<Shape, String> {
        let bad = || format!("bad shape {text:?}: expected ROWSxCOLS, e.g. 64x1024");
        let (rows, cols) = text.split_once(['x', 'X', '×']).ok_or_else(bad)?;
        let rows: usize = rows.trim().parse().map_err(|_| bad())?;
        let cols: usize = cols.trim().parse().map_err(|_| bad())?;
        if rows == 0 || cols == 0 || rows.checked_mul(cols).is_none() {
            return Err(format!("bad shape {text:?}: rows and cols must be ≥ 1"));
        }
        Ok(Shape { rows, cols })
    }
}

impl fmt::Display for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Through `pad` so table columns can align it.
        f.pad(&format!("{}x{}", self.rows, self.cols))
    }
}

/// The report's main table: single rows (latency), small batches, a tall-thin
/// batch, and batches that spill the last-level cache. 32000 and 128256 are
/// LLM vocabulary sizes.
pub const STANDARD_SHAPES: [Shape; 8] = [
    Shape::new(1, 1024),
    Shape::new(1, 32000),
    Shape::new(1, 128256),
    Shape::new(64, 1024),
    Shape::new(256, 4096),
    Shape::new(4096, 128),
    LLM_BATCH,
    Shape::new(2048, 2048),
];
pub const QUICK_SHAPES: [Shape; 2] = [Shape::new(1, 1024), Shape::new(64, 1024)];
/// 512 rows of a 32000-token vocabulary: 64 MiB of f32 logits and 64 MiB of
/// output, beyond any last-level cache this crate targets.
pub const LLM_BATCH: Shape = Shape::new(512, 32000);
/// The standard shapes the half-precision table measures: single rows and a
/// small batch in cache, and the batch that spills the cache.
pub const HALF_SHAPES: [Shape; 4] = [
    Shape::new(1, 1024),
    Shape::new(1, 32000),
    Shape::new(64, 1024),
    LLM_BATCH,
];
/// The training batch: 512 rows of a 128256-token vocabulary, f32 (263 MB per
/// tensor; its passes touch two or three of them).
pub const TRAINING_SHAPE: Shape = Shape::new(512, 128256);
/// The training batch that stays in cache (1 MiB per tensor), and `--quick`'s.
pub const SMALL_TRAINING_SHAPE: Shape = Shape::new(64, 4096);

/// An element type of the API.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dtype {
    F32,
    F16,
    Bf16,
}

impl Dtype {
    pub const ALL: [Dtype; 3] = [Dtype::F32, Dtype::F16, Dtype::Bf16];

    /// The dtype of an [`Element`].
    pub fn of<T: Element>() -> Dtype {
        let found = Dtype::ALL.into_iter().find(|d| d.name() == T::NAME);
        found.expect("every Element is f32, f16 or bf16")
    }

    pub fn name(self) -> &'static str {
        match self {
            Dtype::F32 => f32::NAME,
            Dtype::F16 => f16::NAME,
            Dtype::Bf16 => bf16::NAME,
        }
    }

    pub fn parse(name: &str) -> Result<Dtype, String> {
        Dtype::ALL
            .into_iter()
            .find(|d| d.name() == name.trim().to_ascii_lowercase())
            .ok_or_else(|| format!("unknown element type {name:?}; expected f32, f16 or bf16"))
    }

    pub fn bytes(self) -> usize {
        match self {
            Dtype::F32 => 4,
            Dtype::F16 | Dtype::Bf16 => 2,
        }
    }

    /// `v` stored as this type and widened back: what the kernels read.
    pub fn round(self, v: f32) -> f32 {
        match self {
            Dtype::F32 => v,
            Dtype::F16 => f16::from_f32(v).to_f32(),
            Dtype::Bf16 => bf16::from_f32(v).to_f32(),
        }
    }

    /// An output of this type passes if |Δ| / error_scale(reference) ≤ tolerance.
    pub fn error_scale(self, reference: f64) -> f64 {
        match self {
            Dtype::F32 => reference.abs().max(1.0),
            Dtype::F16 | Dtype::Bf16 => reference.abs().max(HALF_FLOOR),
        }
    }

    /// One unit in the last place for half precision (10 and 7 stored mantissa bits).
    pub fn tolerance(self) -> f64 {
        match self {
            Dtype::F32 => TOLERANCE,
            Dtype::F16 => 1.0 / (1 << 10) as f64,
            Dtype::Bf16 => 1.0 / (1 << 7) as f64,
        }
    }
}

/// Input and output element types of a call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pair {
    pub input: Dtype,
    pub output: Dtype,
}

impl Pair {
    pub const F32: Pair = Pair::same(Dtype::F32);

    pub const fn same(dtype: Dtype) -> Pair {
        Pair {
            input: dtype,
            output: dtype,
        }
    }

    /// "f16" (same in and out) or "f32-f16" (in-out).
    pub fn parse(text: &str) -> Result<Pair, String> {
        match text.split_once(['-', '→']) {
            Some((input, output)) => Ok(Pair {
                input: Dtype::parse(input)?,
                output: Dtype::parse(output)?,
            }),
            None => Dtype::parse(text).map(Pair::same),
        }
    }
}

impl fmt::Display for Pair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(&format!("{}→{}", self.input.name(), self.output.name()))
    }
}

/// splitmix64: seeds for per-row streams, labels and token positions.
pub fn splitmix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// xorshift64*: advances `state` (never 0) and returns the next 64 bits.
pub fn xorshift64_star(state: &mut u64) -> u64 {
    *state ^= *state >> 12;
    *state ^= *state << 25;
    *state ^= *state >> 27;
    state.wrapping_mul(0x2545_f491_4f6c_dd1d)
}

/// Uniform in ±range from the top 24 of `bits`.
pub fn uniform_f32(bits: u64, range: f32) -> f32 {
    ((bits >> 40) as f32 / (1u32 << 24) as f32 * 2.0 - 1.0) * range
}

/// Logits uniform in ±LOGIT_RANGE, the same for every shape of this many elements.
pub fn logits(count: usize) -> Vec<f32> {
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    (0..count)
        .map(|_| uniform_f32(xorshift64_star(&mut state), LOGIT_RANGE))
        .collect()
}

/// The crate's scalar ISA, three-pass, one thread: what every result is checked against.
pub fn scalar_reference() -> Softmax {
    Softmax::new()
        .with_isa(Isa::Scalar)
        .expect("the scalar ISA is always available")
        .with_algorithm(Algorithm::ThreePass)
        .with_parallelism(Parallelism::Serial)
}

/// The scalar ISA's softmax of `logits` stored as `input` (what the kernels read), in f32.
pub fn reference_softmax(input: Dtype, logits: &[f32], cols: usize) -> Vec<f32> {
    let x: Vec<f32> = logits.iter().map(|&v| input.round(v)).collect();
    let mut y = vec![0.0; x.len()];
    scalar_reference()
        .softmax_rows(
            Rows::contiguous(x.as_slice(), cols).unwrap(),
            RowsMut::contiguous(&mut y, cols).unwrap(),
        )
        .unwrap();
    y
}

/// max |got − want| / max(1, |want|) for f32 outputs, / max(|want|, 2^-14) for
/// half-precision ones (then compared with one unit in their last place);
/// infinite if anything is NaN.
pub fn max_error<O: Element>(got: &[O], want: &[f32]) -> f64 {
    let dtype = Dtype::of::<O>();
    let mut worst = 0.0f64;
    for (&g, &w) in got.iter().zip(want) {
        let err = (g.to_f32() as f64 - w as f64).abs() / dtype.error_scale(w as f64);
        if err.is_nan() {
            return f64::INFINITY;
        }
        worst = worst.max(err);
    }
    worst
}

/// Softmax inputs stored as `I` and outputs as `O` for one shape, in `sets`
/// identical buffer sets used in turn (so that an out-of-cache batch meets
/// cold memory on every call). Outputs start as NaN, written so that page
/// faults are not timed.
pub struct Typed<I, O> {
    pub shape: Shape,
    pub x: Vec<Vec<I>>,
    pub y: Vec<Vec<O>>,
}

impl<I: Element, O: Element> Typed<I, O> {
    pub fn new(shape: Shape, logits: &[f32], sets: usize) -> Self {
        let x: Vec<I> = logits.iter().map(|&v| I::from_f32(v)).collect();
        Self {
            shape,
            x: vec![x; sets],
            y: vec![vec![O::from_f32(f32::NAN); shape.elements()]; sets],
        }
    }

    pub fn sets(&self) -> usize {
        self.x.len()
    }

    /// Softmax of `count` rows from `row` of buffer set `set`.
    pub fn softmax(
        &mut self,
        options: &Softmax,
        (set, row): (usize, usize),
        count: usize,
    ) -> Result<(), softmax::Error> {
        let cols = self.shape.cols;
        let elements = row * cols..(row + count) * cols;
        let x = Rows::contiguous(&self.x[set][elements.clone()], cols)?;
        let y = RowsMut::contiguous(&mut self.y[set][elements], cols)?;
        options.softmax_rows(x, y)
    }

    /// The error of the first `count` rows of set 0 against `want`, the scalar
    /// ISA's softmax of the input as stored ([`reference_softmax`]).
    pub fn error(&self, count: usize, want: &[f32]) -> f64 {
        let elements = 0..count * self.shape.cols;
        max_error(&self.y[0][elements.clone()], &want[elements])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_rounding_is_within_the_half_tolerances() {
        for dtype in [Dtype::F16, Dtype::Bf16] {
            for &v in &[1.0f32, 0.3, 1e-3, 7e-5, 3e-6, 1e-9, 0.0] {
                let err = (dtype.round(v) as f64 - v as f64).abs() / dtype.error_scale(v as f64);
                assert!(
                    err <= dtype.tolerance() / 2.0,
                    "{} {v}: {err:e}",
                    dtype.name()
                );
            }
        }
    }

    #[test]
    fn dtypes_of_elements() {
        assert_eq!(Dtype::of::<f32>(), Dtype::F32);
        assert_eq!(Dtype::of::<f16>(), Dtype::F16);
        assert_eq!(Dtype::of::<bf16>(), Dtype::Bf16);
        assert_eq!(Pair::parse("f16-f32").unwrap().to_string(), "f16→f32");
    }

    #[test]
    fn logits_are_in_range_and_reproducible() {
        let x = logits(1000);
        assert_eq!(x, logits(1000));
        assert!(x.iter().all(|v| v.abs() <= LOGIT_RANGE));
    }
}
