//! The paths under test: each ISA through the public API (serial), and pulp's
//! emulated wide scalar tokens running the very same kernel bodies through the
//! kernels crate, so 4-, 8- and 16-lane logic is exercised on any CPU.

use softmax::{Algorithm, Element, Isa, Parallelism, Softmax, AUTO_ONLINE_FROM_COLS};
use softmax_kernels::arch::Portable;
use softmax_kernels::{
    AnySliceMut, Forward, Job, LogSumExp, Method, Output, Strided, StridedMut, Temperature,
};

/// Every algorithm, `Auto` first.
pub const ALGORITHMS: [Algorithm; 4] = [
    Algorithm::Auto,
    Algorithm::ThreePass,
    Algorithm::TwoPass,
    Algorithm::Online,
];

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

    /// The backends that run here (available ISAs, then the emulated tokens),
    /// and the ISAs this CPU lacks (each printed as `SKIPPED:`).
    pub fn available() -> (Vec<Backend>, Vec<Isa>) {
        let (isas, skipped) = super::available_isas();
        let mut backends: Vec<Backend> = isas.into_iter().map(Backend::Isa).collect();
        backends.extend(Backend::EMULATED);
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
            .isa(isa)
            .unwrap_or_else(|e| panic!("{isa} was reported available: {e}"))
            .temperature(t)
            .unwrap_or_else(|e| panic!("temperature {t:e} is valid: {e}"))
            .algorithm(algorithm)
            .parallelism(Parallelism::Serial)
    }

    /// The kernel method `algorithm` means for rows of `cols` (as the crate maps `Auto`).
    fn method(algorithm: Algorithm, cols: usize) -> Method {
        match algorithm {
            Algorithm::Auto if cols < AUTO_ONLINE_FROM_COLS => Method::ThreePass,
            Algorithm::Auto | Algorithm::Online => Method::Online,
            Algorithm::ThreePass => Method::ThreePass,
            Algorithm::TwoPass => Method::TwoPass,
        }
    }

    fn vectorize<J: Job>(self, job: J) -> J::Output {
        match self {
            Backend::Emu128 => job.run(Portable(pulp::Scalar128b)),
            Backend::Emu256 => job.run(Portable(pulp::Scalar256b)),
            Backend::Emu512 => job.run(Portable(pulp::Scalar512b)),
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
                let mut scratch = vec![0.0f32; n + softmax_kernels::Stage::LEN];
                self.vectorize(Forward {
                    output,
                    method: Self::method(algorithm, n),
                    temperature: Temperature::new(t),
                    x: x.map(|x| Strided::new(I::any(x), 1, n, n)),
                    y: StridedMut::new(O::any_mut(y), 1, n, n),
                    scratch: &mut scratch,
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
                    x: Strided::new(I::any(x), 1, n, n),
                    out: AnySliceMut::F32(&mut out),
                });
                out[0]
            }
        }
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
