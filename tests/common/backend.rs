//! The paths under test: each ISA through the public API (serial), and pulp's
//! emulated wide scalar tokens running the very same kernel bodies through the
//! kernels crate, so 4-, 8- and 16-lane logic is exercised on any CPU.

use softmax::{
    Algorithm, Element, Error, Isa, Parallelism, Rows, Sampler, Softmax, AUTO_ONLINE_FROM_COLS,
};
use softmax_kernels::arch::Portable;
use softmax_kernels::{
    AnySliceMut, Drawn, Forward, Job, LogSumExp, Method, Output, Sample, Strided, StridedMut,
    Temperature,
};

/// Every algorithm, `Auto` first.
pub const ALGORITHMS: [Algorithm; 3] = [Algorithm::Auto, Algorithm::ThreePass, Algorithm::Online];

/// Where a row is computed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Backend {
    /// The public API, forced to this ISA, serial.
    Isa(Isa),
    /// `pulp::Scalar128b` (4 f32 lanes) through the kernels crate.
    Emu128,
    /// `pulp::Scalar256b` (8 f32 lanes).
    Emu256,
    /// `pulp::Scalar512b` (16 f32 lanes).
    Emu512,
}

impl Backend {
    pub const EMULATED: [Backend; 3] = [Backend::Emu128, Backend::Emu256, Backend::Emu512];

    /// The backends that run here (available ISAs, then the emulated tokens;
    /// only those `SOFTMAX_TEST_BACKENDS` names, when set), and the ISAs
    /// skipped (each printed as `SKIPPED:`). Unless named, under qemu
    /// (aarch64) only the ISAs run: the emulated tokens are portable code
    /// that the native run already covers, at a tenth of the cost.
    pub fn available() -> (Vec<Backend>, Vec<Isa>) {
        let (isas, skipped) = super::available_isas();
        let mut backends: Vec<Backend> = isas.into_iter().map(Backend::Isa).collect();
        match super::requested_backends() {
            // Named emulated tokens run even under qemu: they were asked for.
            Some(_) => backends.extend(
                Backend::EMULATED
                    .into_iter()
                    .filter(|b| super::requested(b.name())),
            ),
            None if !super::EMULATED_TARGET => backends.extend(Backend::EMULATED),
            None => {}
        }
        (backends, skipped)
    }

    pub fn name(self) -> &'static str {
        match self {
            Backend::Isa(isa) => isa.name(),
            Backend::Emu128 => "emu128",
            Backend::Emu256 => "emu256",
            Backend::Emu512 => "emu512",
        }
    }

    fn options(isa: Isa, algorithm: Algorithm, t: f32) -> Softmax {
        Softmax::new()
            .with_isa(isa)
            .unwrap_or_else(|e| panic!("{isa} was reported available: {e}"))
            .with_temperature(t)
            .unwrap_or_else(|e| panic!("temperature {t:e} is valid: {e}"))
            .with_algorithm(algorithm)
            .with_parallelism(Parallelism::Serial)
    }

    /// The kernel method `algorithm` means for rows of `cols` (as the crate maps `Auto`).
    fn method(algorithm: Algorithm, cols: usize) -> Method {
        match algorithm {
            Algorithm::Auto if cols < AUTO_ONLINE_FROM_COLS => Method::ThreePass,
            Algorithm::Auto | Algorithm::Online => Method::Online,
            Algorithm::ThreePass => Method::ThreePass,
            other => panic!("an algorithm the tests do not know: {other:?}"),
        }
    }

    /// Runs a kernel job on an emulated token, with the working space it asks for.
    pub fn vectorize<J: Job>(self, job: J) -> J::Output {
        let scratch = &mut vec![0.0f32; job.scratch_len()];
        match self {
            Backend::Emu128 => job.run(Portable(pulp::Scalar128b), scratch),
            Backend::Emu256 => job.run(Portable(pulp::Scalar256b), scratch),
            Backend::Emu512 => job.run(Portable(pulp::Scalar512b), scratch),
            Backend::Isa(isa) => unreachable!("{isa} runs through the public API"),
        }
    }

    /// Softmax or log-softmax of `x` into `y`, or of `y` in place when `x` is `None`.
    pub fn forward<I: Element, O: Element>(
        self,
        output: Output,
        algorithm: Algorithm,
        t: f32,
        x: Option<&[I]>,
        y: &mut [O],
    ) {
        match self {
            Backend::Isa(isa) => {
                let sm = Self::options(isa, algorithm, t);
                let result = match (output, x) {
                    (Output::Softmax, Some(x)) => sm.softmax(x, y),
                    (Output::Softmax, None) => sm.softmax_in_place(y),
                    (Output::LogSoftmax, Some(x)) => sm.log_softmax(x, y),
                    (Output::LogSoftmax, None) => sm.log_softmax_in_place(y),
                };
                result.unwrap_or_else(|e| panic!("{isa}: a valid call failed: {e}"));
            }
            _ => {
                let n = y.len();
                self.vectorize(Forward {
                    output,
                    method: Self::method(algorithm, n),
                    temperature: Temperature::new(t),
                    cap: None,
                    x: x.map(|x| Strided::new(I::any(x), 1, n, n)),
                    y: StridedMut::new(O::any_mut(y), 1, n, n),
                });
            }
        }
    }

    /// t · ln Σ exp(x / t).
    pub fn logsumexp<I: Element>(self, algorithm: Algorithm, t: f32, x: &[I]) -> f32 {
        match self {
            Backend::Isa(isa) => Self::options(isa, algorithm, t)
                .logsumexp(x)
                .unwrap_or_else(|e| panic!("{isa}: a valid call failed: {e}")),
            _ => {
                let n = x.len();
                let mut out = [f32::NAN];
                self.vectorize(LogSumExp {
                    method: Self::method(algorithm, n),
                    temperature: Temperature::new(t),
                    cap: None,
                    x: Strided::new(I::any(x), 1, n, n),
                    out: AnySliceMut::F32(&mut out),
                });
                out[0]
            }
        }
    }

    /// `sampler`'s draws at `step` from rows of `cols` logits (row i from the
    /// stream (seed, i, step)) into `tokens`, and, when `kept` is given, each
    /// row's truncated log-probabilities into it (`rows × cols` values).
    /// The public API's errors; nothing is written on an error.
    pub fn sample<T: Element>(
        self,
        sampler: &Sampler,
        x: &[T],
        cols: usize,
        step: u64,
        tokens: &mut [usize],
        kept: Option<&mut [f32]>,
    ) -> Result<(), Error> {
        let rows = Rows::contiguous(x, cols)?;
        if let Backend::Isa(isa) = self {
            let sampler = sampler.clone().with_isa(isa)?;
            return match kept {
                Some(kept) => {
                    assert_eq!(rows.rows(), 1, "truncated_logprobs takes one row");
                    sampler.truncated_logprobs(x, kept)?;
                    sampler.sample_rows(rows, step, tokens)
                }
                None => sampler.sample_rows(rows, step, tokens),
            };
        }
        let n = rows.rows();
        if n > 0 && cols == 0 {
            return Err(Error::EmptyRow);
        }
        let mut outcomes = vec![Drawn::NoFinite; n];
        let mut staged = kept.as_ref().map(|k| vec![0.0f32; k.len()]);
        self.vectorize(Sample {
            options: sampler.kernel_options(step),
            x: Strided::new(T::any(x), n, cols, cols),
            first_row: 0,
            out: &mut outcomes,
            top: &mut [],
            top_n: 0,
            kept: staged.as_deref_mut(),
        });
        for (row, outcome) in outcomes.iter().enumerate() {
            match *outcome {
                Drawn::Token { .. } => {}
                Drawn::Nan => return Err(Error::NanLogit { row }),
                Drawn::NoFinite => return Err(Error::NoFiniteLogit { row }),
            }
        }
        for (token, outcome) in tokens.iter_mut().zip(outcomes) {
            if let Drawn::Token { index, .. } = outcome {
                *token = index;
            }
        }
        if let (Some(kept), Some(staged)) = (kept, staged) {
            kept.copy_from_slice(&staged);
        }
        Ok(())
    }

    /// Every operation on `x`, each into a fresh buffer.
    pub fn all_ops(self, algorithm: Algorithm, t: f32, x: &[f32]) -> Outputs {
        let run = |output, in_place: bool| {
            let mut y = if in_place {
                x.to_vec()
            } else {
                vec![0.0; x.len()]
            };
            let x = (!in_place).then_some(x);
            self.forward(output, algorithm, t, x, &mut y);
            y
        };
        Outputs {
            softmax: run(Output::Softmax, false),
            softmax_in_place: run(Output::Softmax, true),
            log_softmax: run(Output::LogSoftmax, false),
            log_softmax_in_place: run(Output::LogSoftmax, true),
            logsumexp: self.logsumexp(algorithm, t, x),
        }
    }
}

/// The results of every operation on one row.
#[derive(Clone, Debug)]
pub struct Outputs {
    pub softmax: Vec<f32>,
    pub softmax_in_place: Vec<f32>,
    pub log_softmax: Vec<f32>,
    pub log_softmax_in_place: Vec<f32>,
    pub logsumexp: f32,
}

impl Outputs {
    /// The bit patterns of every output, NaN payloads folded to one pattern
    /// (the rules fix that an output is NaN, not which NaN).
    pub fn bits(&self) -> Vec<u32> {
        let canon = |v: &f32| {
            if v.is_nan() {
                f32::NAN.to_bits()
            } else {
                v.to_bits()
            }
        };
        self.softmax
            .iter()
            .chain(&self.softmax_in_place)
            .chain(&self.log_softmax)
            .chain(&self.log_softmax_in_place)
            .chain(std::iter::once(&self.logsumexp))
            .map(canon)
            .collect()
    }
}

/// An operation, as named in reports and assertion messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Op {
    Softmax,
    /// The out-of-place softmax, only its outputs in the normal range (y ≥ 2⁻¹²⁶,
    /// y* ≥ 2⁻¹²⁶), against the relative part of the bound y*·(c·|z| + 8)·2⁻²⁴:
    /// a report column, since near 2⁻¹²⁶ the absolute slack dominates `Softmax`.
    SoftmaxNormal,
    SoftmaxInPlace,
    /// |Σ y − 1| of the out-of-place softmax.
    SoftmaxSum,
    LogSoftmax,
    LogSoftmaxInPlace,
    LogSumExp,
}

impl Op {
    pub const ALL: [Op; 7] = [
        Op::Softmax,
        Op::SoftmaxNormal,
        Op::SoftmaxInPlace,
        Op::SoftmaxSum,
        Op::LogSoftmax,
        Op::LogSoftmaxInPlace,
        Op::LogSumExp,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Op::Softmax => "softmax",
            Op::SoftmaxInPlace => "softmax_in_place",
            Op::SoftmaxNormal => "softmax y≥2^-126",
            Op::SoftmaxSum => "softmax Σ",
            Op::LogSoftmax => "log_softmax",
            Op::LogSoftmaxInPlace => "log_softmax_in_place",
            Op::LogSumExp => "logsumexp",
        }
    }
}
