//! SIMD microkernels behind the `softmax` crate.
//!
//! Every pass is one generic body written against [`pulp::Simd`] and run
//! through one loop shape ([`loops`]); the same code runs on AVX-512, AVX2+FMA,
//! NEON, pulp's scalar token (the reference path) and pulp's emulated wide
//! scalar tokens (so 16-lane logic is tested on any CPU). Kernels know nothing
//! of threads, errors or element types other than f32 lanes: the `softmax`
//! crate validates shapes and chooses the ISA, then hands a [`Forward`] or
//! [`LogSumExp`] job to `Simd::vectorize`, which runs every row of the job
//! inside the target-feature region.
//!
//! | file          | pass |
//! |---------------|------|
//! | `exp.rs`      | the vector exp and its constants |
//! | `max.rs`      | max- and min-reduce |
//! | `shift.rs`    | z = (x - max)/t, three ways |
//! | `exp_sum.rs`  | exp-subtract(-store)-sum |
//! | `output.rs`   | scale, exp-scale, log-softmax output, special fills |
//! | `two_pass.rs` | the two-pass (mantissa, exponent) sum and its output |
//! | `scan.rs`     | NaN / +inf counting for special rows |
//! | `row.rs`      | the three algorithms and the special-value rules |

#![forbid(unsafe_code)]

pub mod exp;
mod exp_sum;
pub mod loops;
mod max;
mod output;
mod row;
mod scan;
mod shift;
mod two_pass;

pub use pulp;
pub use row::ONLINE_BLOCK;

use pulp::{Simd, WithSimd};

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

/// Read-only strided rows.
#[derive(Clone, Copy, Debug)]
pub struct Strided<'a> {
    data: &'a [f32],
    rows: usize,
    cols: usize,
    stride: usize,
}

/// Writable strided rows.
#[derive(Debug)]
pub struct StridedMut<'a> {
    data: &'a mut [f32],
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
    pub fn new(data: &'a [f32], rows: usize, cols: usize, stride: usize) -> Self {
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
    pub fn row(&self, i: usize) -> &'a [f32] {
        let start = i * self.stride;
        &self.data[start..start + self.cols]
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
    pub fn new(data: &'a mut [f32], rows: usize, cols: usize, stride: usize) -> Self {
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
    pub fn row_mut(&mut self, i: usize) -> &mut [f32] {
        let start = i * self.stride;
        &mut self.data[start..start + self.cols]
    }
    /// The first `k` rows and the rest.
    pub fn split_at(self, k: usize) -> (Self, Self) {
        let k = k.min(self.rows);
        let at = (k * self.stride).min(self.data.len());
        let (a, b) = self.data.split_at_mut(at);
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

impl WithSimd for Forward<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) {
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
        for i in 0..y.rows {
            // A match, not Option::map: a closure would be compiled outside the
            // target-feature region.
            #[allow(clippy::manual_map)]
            let xi = match &x {
                Some(x) => Some(x.row(i)),
                None => None,
            };
            row::forward_row(simd, output, method, temperature, xi, y.row_mut(i));
        }
    }
}

/// t · ln Σ exp(x/t) of each row into `out[i]`.
pub struct LogSumExp<'a> {
    pub method: Method,
    pub temperature: Temperature,
    pub x: Strided<'a>,
    pub out: &'a mut [f32],
}

impl WithSimd for LogSumExp<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) {
        assert!(self.out.len() >= self.x.rows, "one output per row");
        for (i, out) in self.out[..self.x.rows].iter_mut().enumerate() {
            *out = row::logsumexp_row(simd, self.method, self.temperature, self.x.row(i));
        }
    }
}
