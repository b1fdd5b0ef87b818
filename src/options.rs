//! The options value and its operations.

use crate::batch::{self, Parallelism};
use crate::dispatch;
use crate::rows::{output_len, same_len, same_shape};
use crate::{Element, Error, Isa, Rows, RowsMut};
use rayon::ThreadPool;
use softmax_kernels::{
    AnySlice, AnySliceMut, Forward, LogSumExp, Method, Output, RowSoftmax, ShortSoftmax, SoftCap,
    Strided, StridedMut, Temperature, SHORT_ROW, SHORT_ROW_VECTORS,
};
use std::sync::Arc;

/// How each row's maximum and sum are computed. All give results within the
/// documented bounds; they differ in memory traffic and arithmetic.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Algorithm {
    /// Three-pass for rows that stay in cache, online beyond
    /// ([`AUTO_ONLINE_FROM_COLS`]).
    #[default]
    Auto,
    /// Max; exp-subtract-store-sum; scale.
    ThreePass,
    /// Milakov & Gimelshein (2018): running max and rescaled running sum in one
    /// read (updated per L1-sized block), then one output pass.
    Online,
}

impl Algorithm {
    /// Every algorithm that names a method (not `Auto`).
    pub const METHODS: [Algorithm; 2] = [Algorithm::ThreePass, Algorithm::Online];

    /// The name the report and error messages use: `"auto"`, `"three-pass"`, ….
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::Auto => "auto",
            Algorithm::ThreePass => "three-pass",
            Algorithm::Online => "online",
        }
    }

    /// The method used for rows of `cols` elements.
    pub(crate) fn method(self, cols: usize) -> Method {
        match self {
            Algorithm::Auto if cols < AUTO_ONLINE_FROM_COLS => Method::ThreePass,
            Algorithm::Auto => Method::Online,
            Algorithm::ThreePass => Method::ThreePass,
            Algorithm::Online => Method::Online,
        }
    }
}

/// `Algorithm::Auto` switches from three-pass to online at this row length
/// (4 Mi elements, 16 MiB of f32 per row). Measured on one thread (AMD EPYC
/// Zen 3, AVX2, 32 MiB L3): three-pass is 1.4× online at 2^20 columns, the two
/// tie at 2^22, and online leads by 5–10% at 2^24, where a row and its output no
/// longer fit the last-level cache and online's single read of the input pays.
/// A two-pass algorithm (Dukhan & Ablavatski's (mantissa, exponent) sums) was
/// dropped: it never led, at 0.30–0.87× three-pass and behind online at every
/// length measured, 2^18 to 2^26 columns (see the CHANGELOG).
pub const AUTO_ONLINE_FROM_COLS: usize = 1 << 22;

/// The soft-cap c·tanh(x/c) followed by the temperature, v = (c/t)·tanh(x/c),
/// as kernel constants; an error unless c is finite and > 0 with 2/c and c/t finite.
pub(crate) fn fold_soft_cap(c: f32, t: f32) -> Result<SoftCap, Error> {
    let k = 1.0 / c;
    let scaled = (c as f64 / t as f64) as f32;
    let ok = c.is_finite() && c > 0.0 && (2.0 * k).is_finite() && scaled.is_finite();
    match ok {
        true => Ok(SoftCap::new(k, scaled)),
        false => Err(Error::InvalidSoftCap {
            cap: c,
            temperature: t,
        }),
    }
}

/// Softmax options: temperature, soft-cap, ISA, algorithm, parallelism. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Softmax {
    pub(crate) temperature: Temperature,
    soft_cap: Option<f32>,
    pub(crate) isa: Isa,
    algorithm: Algorithm,
    pub(crate) parallelism: Parallelism,
}

impl Default for Softmax {
    fn default() -> Self {
        Self::new()
    }
}

impl Softmax {
    /// Temperature 1, no soft-cap, the best ISA of this CPU, `Algorithm::Auto`,
    /// `Parallelism::Auto`.
    pub fn new() -> Self {
        Self {
            temperature: Temperature::default(),
            soft_cap: None,
            isa: Isa::detect(),
            algorithm: Algorithm::Auto,
            parallelism: Parallelism::Auto,
        }
    }

    /// Computes softmax(x / t); `t` must be finite and at least `f32::MIN_POSITIVE`
    /// (a subnormal t has no finite f32 reciprocal).
    pub fn with_temperature(mut self, t: f32) -> Result<Self, Error> {
        if !(t.is_finite() && t >= f32::MIN_POSITIVE) {
            return Err(Error::InvalidTemperature(t));
        }
        if let Some(c) = self.soft_cap {
            fold_soft_cap(c, t)?;
        }
        self.temperature = Temperature::new(t);
        Ok(self)
    }

    /// Caps the logits before the temperature: softmax(v / t) with
    /// v = c · tanh(x / c) (Gemma 2's final-logit cap of 30). `c` must be
    /// finite and positive, with 2/c and c/t finite (a temperature set later
    /// is checked against the cap too). A −inf logit stays −inf (a hidden class keeps
    /// probability 0), +inf becomes c. Each row is capped once into working
    /// space (into the output when it is f32), then takes the algorithm's
    /// passes. The backward passes and the Jacobian then need the logits:
    /// the `…_with_logits` methods.
    pub fn with_soft_cap(mut self, c: f32) -> Result<Self, Error> {
        fold_soft_cap(c, self.temperature.get())?;
        self.soft_cap = Some(c);
        Ok(self)
    }

    /// Runs on `isa`; an error if this CPU lacks it.
    pub fn with_isa(mut self, isa: Isa) -> Result<Self, Error> {
        if !isa.is_available() {
            return Err(Error::IsaUnavailable(isa));
        }
        self.isa = isa;
        Ok(self)
    }

    /// How each row's maximum and sum are found (default `Algorithm::Auto`).
    pub fn with_algorithm(mut self, algorithm: Algorithm) -> Self {
        self.algorithm = algorithm;
        self
    }

    /// Where the rows of a batch run (default `Parallelism::Auto`).
    pub fn with_parallelism(mut self, parallelism: Parallelism) -> Self {
        self.parallelism = parallelism;
        self
    }

    /// Runs large batches on `pool` (shorthand for `Parallelism::Pool`).
    pub fn with_thread_pool(self, pool: Arc<ThreadPool>) -> Self {
        self.with_parallelism(Parallelism::Pool(pool))
    }

    /// The temperature t.
    pub fn temperature(&self) -> f32 {
        self.temperature.get()
    }
    /// The soft-cap c, if any.
    pub fn soft_cap(&self) -> Option<f32> {
        self.soft_cap
    }

    /// The cap with the temperature folded in, as the kernels take it: the
    /// hook through which the tests run capped rows on the emulated tokens.
    #[doc(hidden)]
    pub fn kernel_soft_cap(&self) -> Option<SoftCap> {
        let c = self.soft_cap?;
        // Checked when the cap or the temperature was set.
        fold_soft_cap(c, self.temperature.get()).ok()
    }

    /// The temperature the kernels apply: 1 under a cap, which carries 1/t.
    fn kernel_temperature(&self) -> Temperature {
        match self.soft_cap {
            Some(_) => Temperature::default(),
            None => self.temperature,
        }
    }
    /// The ISA the rows run on.
    pub fn isa(&self) -> Isa {
        self.isa
    }
    /// The algorithm asked for (`Auto` is resolved per call, by row length).
    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }
    /// Where the rows of a batch run.
    pub fn parallelism(&self) -> &Parallelism {
        &self.parallelism
    }

    fn forward(&self, output: Output, x: Option<Strided<'_>>, y: StridedMut<'_>) {
        let cols = y.cols();
        let job = Forward {
            output,
            method: self.algorithm.method(cols),
            temperature: self.kernel_temperature(),
            cap: self.kernel_soft_cap(),
            x,
            y,
        };
        batch::run(job, cols, self.isa, &self.parallelism);
    }

    /// Whether a softmax row of `n` elements may take [`ShortSoftmax`], held
    /// in registers (f32 in and out).
    fn resident_row(&self, output: Output, n: usize) -> bool {
        output == Output::Softmax
            && self.soft_cap.is_none()
            && n <= SHORT_ROW_VECTORS * self.isa.lanes()
            && self.algorithm.method(n) == Method::ThreePass
    }

    /// Whether a softmax row of `n` elements may take [`RowSoftmax`] (f32 in and out).
    fn short_row(&self, output: Output, n: usize) -> bool {
        output == Output::Softmax
            && self.soft_cap.is_none()
            && n <= SHORT_ROW
            && self.algorithm.method(n) == Method::ThreePass
    }

    /// Runs a short f32 softmax row in registers; `false` where it needs
    /// another path (another type, or a row under the special-value rules).
    fn resident_softmax(&self, x: Option<AnySlice<'_>>, y: AnySliceMut<'_>) -> bool {
        let Some((x, y)) = f32_row(x, y) else {
            return false;
        };
        let temperature = self.temperature;
        dispatch::run(self.isa, ShortSoftmax { temperature, x, y }, &mut [])
    }

    /// Runs a short f32 softmax row as a job of its own, without a batch's
    /// machinery; `false` for rows of other types, which take the general path.
    fn short_softmax(&self, x: Option<AnySlice<'_>>, y: AnySliceMut<'_>) -> bool {
        let Some((x, y)) = f32_row(x, y) else {
            return false;
        };
        let temperature = self.temperature;
        dispatch::run(self.isa, RowSoftmax { temperature, x, y }, &mut []);
        true
    }

    fn forward_row<I: Element, O: Element>(
        &self,
        output: Output,
        x: &[I],
        y: &mut [O],
    ) -> Result<(), Error> {
        same_len(x.len(), y.len())?;
        let n = x.len();
        if self.resident_row(output, n) && self.resident_softmax(Some(I::any(x)), O::any_mut(y)) {
            return Ok(());
        }
        if self.short_row(output, n) && self.short_softmax(Some(I::any(x)), O::any_mut(y)) {
            return Ok(());
        }
        let x = Strided::new(I::any(x), 1, n, n);
        let y = StridedMut::new(O::any_mut(y), 1, n, n);
        self.forward(output, Some(x), y);
        Ok(())
    }

    fn forward_row_in_place<T: Element>(&self, output: Output, x: &mut [T]) -> Result<(), Error> {
        let n = x.len();
        if self.resident_row(output, n) && self.resident_softmax(None, T::any_mut(x)) {
            return Ok(());
        }
        if self.short_row(output, n) && self.short_softmax(None, T::any_mut(x)) {
            return Ok(());
        }
        self.forward(output, None, StridedMut::new(T::any_mut(x), 1, n, n));
        Ok(())
    }

    fn forward_rows<I: Element, O: Element>(
        &self,
        output: Output,
        x: Rows<'_, I>,
        y: RowsMut<'_, O>,
    ) -> Result<(), Error> {
        same_shape((x.rows, x.cols), (y.rows, y.cols))?;
        self.forward(output, Some(x.kernel_view()), y.into_kernel_view());
        Ok(())
    }

    /// y = softmax(x / t).
    pub fn softmax<I: Element, O: Element>(&self, x: &[I], y: &mut [O]) -> Result<(), Error> {
        self.forward_row(Output::Softmax, x, y)
    }

    /// x ← softmax(x / t).
    pub fn softmax_in_place<T: Element>(&self, x: &mut [T]) -> Result<(), Error> {
        self.forward_row_in_place(Output::Softmax, x)
    }

    /// y = log-softmax(x / t) = x/t − LSE(x/t).
    pub fn log_softmax<I: Element, O: Element>(&self, x: &[I], y: &mut [O]) -> Result<(), Error> {
        self.forward_row(Output::LogSoftmax, x, y)
    }

    /// x ← log-softmax(x / t).
    pub fn log_softmax_in_place<T: Element>(&self, x: &mut [T]) -> Result<(), Error> {
        self.forward_row_in_place(Output::LogSoftmax, x)
    }

    /// t · ln Σ exp(x / t): the smooth maximum (→ max x as t → 0); -inf for an
    /// empty row. Under a soft-cap, t · ln Σ exp(v / t).
    pub fn logsumexp<T: Element>(&self, x: &[T]) -> Result<f32, Error> {
        let n = x.len();
        let mut out = [0.0f32];
        let job = LogSumExp {
            method: self.algorithm.method(n),
            temperature: self.temperature,
            cap: self.kernel_soft_cap(),
            x: Strided::new(T::any(x), 1, n, n),
            out: AnySliceMut::F32(&mut out),
        };
        batch::run(job, n, self.isa, &Parallelism::Serial);
        Ok(out[0])
    }

    /// Softmax of each row of `x` into the same row of `y`.
    pub fn softmax_rows<I: Element, O: Element>(
        &self,
        x: Rows<'_, I>,
        y: RowsMut<'_, O>,
    ) -> Result<(), Error> {
        self.forward_rows(Output::Softmax, x, y)
    }

    /// Softmax of each row, in place.
    pub fn softmax_rows_in_place<T: Element>(&self, x: RowsMut<'_, T>) -> Result<(), Error> {
        self.forward(Output::Softmax, None, x.into_kernel_view());
        Ok(())
    }

    /// Log-softmax of each row of `x` into the same row of `y`.
    pub fn log_softmax_rows<I: Element, O: Element>(
        &self,
        x: Rows<'_, I>,
        y: RowsMut<'_, O>,
    ) -> Result<(), Error> {
        self.forward_rows(Output::LogSoftmax, x, y)
    }

    /// Log-softmax of each row, in place.
    pub fn log_softmax_rows_in_place<T: Element>(&self, x: RowsMut<'_, T>) -> Result<(), Error> {
        self.forward(Output::LogSoftmax, None, x.into_kernel_view());
        Ok(())
    }

    /// Logsumexp of each row into `out[row]` (`out` needs at least one value per row),
    /// rounded to `out`'s element type.
    pub fn logsumexp_rows<T: Element, O: Element>(
        &self,
        x: Rows<'_, T>,
        out: &mut [O],
    ) -> Result<(), Error> {
        output_len(out.len(), x.rows)?;
        let cols = x.cols;
        let job = LogSumExp {
            method: self.algorithm.method(cols),
            temperature: self.temperature,
            cap: self.kernel_soft_cap(),
            x: x.kernel_view(),
            out: O::any_mut(&mut out[..x.rows]),
        };
        batch::run(job, cols, self.isa, &self.parallelism);
        Ok(())
    }
}

/// The f32 input (or none: in place) and output of a row whose output is
/// f32 and whose input, if any, is too.
fn f32_row<'a>(
    x: Option<AnySlice<'a>>,
    y: AnySliceMut<'a>,
) -> Option<(Option<&'a [f32]>, &'a mut [f32])> {
    match (x, y) {
        (Some(AnySlice::F32(x)), AnySliceMut::F32(y)) => Some((Some(x), y)),
        (None, AnySliceMut::F32(y)) => Some((None, y)),
        _ => None,
    }
}
