//! One result of the report: what was measured (the operation, its table, its
//! element types), its measurement, and the ratios against its yardsticks.

use crate::attention::{Variant, ATTENTION_TOLERANCE};
use crate::sampling::Case;
use crate::timing::Measurement;
use crate::training::{Pass, TRAINING_TOLERANCE};
use crate::workload::{Pair, Shape};
use softmax::{Algorithm, Isa};

/// What one configuration calls.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Op {
    Naive,
    CopyScale,
    /// ONNX Runtime's CPU softmax (the side-by-side table).
    OnnxRuntime,
    /// candle's `softmax_last_dim` (the side-by-side table, `--features candle`).
    Candle,
    Softmax(Isa, Algorithm),
    LogSoftmax(Isa, Algorithm),
    LogSumExp(Isa, Algorithm),
    /// A pass of the training table, on the detected ISA.
    Training(Pass),
    /// A case of the sampling table, on the detected ISA.
    Sampling(Case),
    /// A variant of the attention table, on the detected ISA.
    Attention(Variant),
}

impl Op {
    pub fn name(self) -> &'static str {
        match self {
            Op::Naive => "naive",
            Op::CopyScale => "copy-scale",
            Op::OnnxRuntime => "onnxruntime",
            Op::Candle => "candle",
            Op::Softmax(..) => "softmax",
            Op::LogSoftmax(..) => "log-softmax",
            Op::LogSumExp(..) => "logsumexp",
            Op::Training(pass) => pass.name(),
            Op::Sampling(case) => case.name(),
            Op::Attention(variant) => variant.name(),
        }
    }

    pub fn isa(self) -> String {
        match self {
            Op::Naive => "scalar".into(),
            Op::OnnxRuntime => "mlas".into(),
            Op::Candle => "scalar".into(),
            Op::CopyScale | Op::Training(_) | Op::Sampling(_) | Op::Attention(_) => {
                format!("{}", Isa::detect())
            }
            Op::Softmax(isa, _) | Op::LogSoftmax(isa, _) | Op::LogSumExp(isa, _) => isa.to_string(),
        }
    }

    pub fn algorithm(self) -> &'static str {
        match self {
            Op::Naive => "3-loop",
            Op::CopyScale => "y=c·x",
            Op::OnnxRuntime => "Softmax-13",
            Op::Candle => "last-dim",
            Op::Softmax(_, a) | Op::LogSoftmax(_, a) | Op::LogSumExp(_, a) => a.name(),
            Op::Training(Pass::Forward) => Algorithm::Auto.name(),
            Op::Training(_) | Op::Attention(_) => "-",
            Op::Sampling(case) => case.method(),
        }
    }
}

/// Which table a record belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Section {
    /// Every ISA × algorithm × op, f32 in and out.
    Main,
    /// Softmax, auto, detected ISA, by element types.
    HalfPrecision,
    /// Backward passes and cross-entropy beside the forward softmax, f32.
    Training,
    /// Samplers on one f32 row beside its forward softmax and a full sort.
    Sampling,
    /// Attention-score softmax variants beside the plain softmax of their rows, f32.
    Attention,
    /// The crate beside ONNX Runtime, alternated on the same buffers.
    Peers,
}

impl Section {
    pub fn name(self) -> &'static str {
        match self {
            Section::Main => "main",
            Section::HalfPrecision => "half-precision",
            Section::Training => "training",
            Section::Sampling => "sampling",
            Section::Attention => "attention",
            Section::Peers => "peers",
        }
    }
}

pub struct Record {
    pub shape: Shape,
    pub op: Op,
    pub threads: usize,
    pub out_of_cache: bool,
    pub buffer_sets: usize,
    pub m: Measurement,
    /// Throughput relative to the naive loop and to copy-scale, same shape and threads.
    pub vs_naive: f64,
    pub vs_copy: f64,
    pub section: Section,
    pub elements: Pair,
    /// Half-precision table: throughput ÷ f32→f32's, same shape and threads.
    pub vs_f32: f64,
    /// Training, sampling and attention tables: throughput ÷ the forward
    /// softmax's, same shape and threads (for a sampler, the softmax's time ÷
    /// its time).
    pub vs_forward: f64,
    /// Attention table: the forward softmax of the same rows, timed in turns
    /// with this op so the pair shares the machine's moments; its error is
    /// also in `m.error`, which ok() reads.
    pub forward: Option<Measurement>,
    /// Sampling table: the full-sort sampler's time ÷ this one's.
    pub vs_full_sort: f64,
    /// Side-by-side table: ONNX Runtime's time ÷ this one's, the median over
    /// rounds of the ratio within a round.
    pub vs_ort: f64,
}

impl Record {
    /// A record of `section` with no ratios yet, f32 in and out.
    pub fn new(section: Section, shape: Shape, op: Op, threads: usize, m: Measurement) -> Record {
        Record {
            shape,
            op,
            threads,
            out_of_cache: false,
            buffer_sets: 1,
            m,
            vs_naive: f64::NAN,
            vs_copy: f64::NAN,
            section,
            elements: Pair::F32,
            vs_f32: f64::NAN,
            vs_forward: f64::NAN,
            forward: None,
            vs_full_sort: f64::NAN,
            vs_ort: f64::NAN,
        }
    }

    pub fn elements_per_s(&self) -> f64 {
        (self.m.block_rows * self.shape.cols) as f64 / self.m.seconds_per_call
    }

    pub fn gelem(&self) -> f64 {
        self.elements_per_s() / 1e9
    }

    /// Bytes each element costs when read and written once: logsumexp only reads.
    pub fn bytes_per_element(&self) -> f64 {
        let (input, output) = (self.elements.input.bytes(), self.elements.output.bytes());
        match self.op {
            Op::LogSumExp(..) => input as f64,
            Op::Training(pass) => pass.bytes_per_element() as f64,
            Op::Sampling(case) => case.bytes_per_element() as f64,
            _ => (input + output) as f64,
        }
    }

    pub fn gbytes(&self) -> f64 {
        self.elements_per_s() * self.bytes_per_element() / 1e9
    }

    pub fn tolerance(&self) -> f64 {
        match self.op {
            Op::Training(_) => TRAINING_TOLERANCE,
            Op::Attention(_) => ATTENTION_TOLERANCE,
            Op::Sampling(case) => case.tolerance(),
            _ => self.elements.output.tolerance(),
        }
    }

    pub fn ok(&self) -> bool {
        // Copy-scale must be exact; everything else within the tolerance.
        match self.op {
            Op::CopyScale => self.m.error == 0.0,
            _ => self.m.error <= self.tolerance(),
        }
    }
}
