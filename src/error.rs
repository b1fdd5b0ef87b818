//! The crate's one error type.

use crate::Isa;
use std::fmt;

/// Why a call was refused. When a call returns an error it has written nothing.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum Error {
    /// Input and output rows differ in length.
    LengthMismatch {
        /// Elements in the input row.
        input: usize,
        /// Elements in the output row.
        output: usize,
    },
    /// Input and output batches differ in shape.
    ShapeMismatch {
        /// (rows, cols) of the input.
        input: (usize, usize),
        /// (rows, cols) of the output.
        output: (usize, usize),
    },
    /// A row stride shorter than a row.
    StrideTooSmall {
        /// The stride, in elements.
        stride: usize,
        /// The row length.
        cols: usize,
    },
    /// A buffer too short for its rows at its stride.
    BufferTooShort {
        /// Elements in the buffer.
        len: usize,
        /// Elements the shape needs: (rows - 1) · stride + cols.
        required: usize,
        /// Rows of the shape.
        rows: usize,
        /// Elements per row.
        cols: usize,
        /// Elements from one row's start to the next.
        stride: usize,
    },
    /// rows × stride does not fit in `usize`.
    ShapeOverflow {
        /// Rows of the shape.
        rows: usize,
        /// The stride, in elements.
        stride: usize,
    },
    /// A contiguous batch whose length is not a whole number of rows.
    LengthNotMultiple {
        /// Elements in the buffer.
        len: usize,
        /// The row length.
        cols: usize,
    },
    /// An output slice with fewer elements than the batch has rows.
    OutputTooShort {
        /// Elements in the output.
        len: usize,
        /// Rows of the batch.
        rows: usize,
    },
    /// A temperature that is not finite, or below the smallest normal f32 (≤ 0 included).
    InvalidTemperature(f32),
    /// An ISA this CPU (or this build's target) does not have.
    IsaUnavailable(Isa),
    /// A Jacobian buffer that does not hold exactly cols × cols elements.
    JacobianLength {
        /// Elements in the buffer.
        len: usize,
        /// The row length.
        cols: usize,
    },
    /// A label count different from the row count.
    LabelCount {
        /// Labels given.
        labels: usize,
        /// Rows of the batch.
        rows: usize,
    },
    /// A label that is neither a class (0 ≤ label < classes) nor the ignore index.
    LabelOutOfRange {
        /// The row whose label it is.
        row: usize,
        /// The label, exactly (any integer type fits).
        label: i128,
        /// The number of classes (the row length).
        classes: usize,
    },
    /// Label smoothing outside [0, 1).
    InvalidSmoothing(f32),
    /// A class weight that is not finite or is negative.
    InvalidWeight {
        /// The class it weighs.
        class: usize,
        /// The weight.
        weight: f32,
    },
    /// A weight count different from the class count.
    WeightCount {
        /// Weights given.
        weights: usize,
        /// The number of classes (the row length).
        classes: usize,
    },
    /// Class weights set for a soft-target loss.
    WeightsWithSoftTargets,
    /// `Reduction::None` without a buffer for the per-row losses.
    LossesRequired,
    /// A row of no elements where one is needed (sampling, soft-argmax).
    EmptyRow,
    /// A NaN logit in this row of a sampling call.
    NanLogit {
        /// The row, from 0.
        row: usize,
    },
    /// Every logit of this row is −inf after the bias: there is nothing to draw.
    NoFiniteLogit {
        /// The row, from 0.
        row: usize,
    },
    /// top-k with k = 0.
    InvalidTopK(usize),
    /// top-p outside (0, 1].
    InvalidTopP(f32),
    /// min-p outside [0, 1].
    InvalidMinP(f32),
    /// A logit bias that is NaN or +inf.
    InvalidBias {
        /// The token it biases.
        token: usize,
        /// The bias.
        bias: f32,
    },
    /// A logit bias or ban for a token past the end of the row.
    BiasOutOfRange {
        /// The token it names.
        token: usize,
        /// The row length.
        cols: usize,
    },
    /// An attention option out of its range (scale, soft-cap, window, ALiBi).
    InvalidAttentionOption {
        /// The option: "scale", "soft_cap", "window", "max_bias", "slope".
        option: &'static str,
        /// Its value.
        value: f64,
    },
    /// A scores tensor of (batch, heads, queries, keys) that its buffer
    /// cannot hold, or that overflows `usize`.
    TensorTooShort {
        /// Elements in the buffer.
        len: usize,
        /// Elements the shape and strides reach (`usize::MAX` on overflow).
        required: usize,
    },
    /// Writable scores whose rows overlap, or do not lie in (batch, head,
    /// query) order: each stride must clear the rows inside it.
    OverlappingRows {
        /// (batch, heads, queries, keys).
        dims: [usize; 4],
        /// Strides of batch, head and query, in elements.
        strides: [usize; 3],
    },
    /// Two tensors of an attention call whose shapes differ, or a mask that
    /// does not broadcast over the scores.
    TensorShapeMismatch {
        /// What the shape belongs to: "output", "mask", "dy", "scores".
        what: &'static str,
        /// Its (batch, heads, queries, keys).
        dims: [usize; 4],
        /// The scores' (batch, heads, queries, keys).
        scores: [usize; 4],
    },
    /// A per-head or per-batch list of the wrong length.
    CountMismatch {
        /// The list: "sinks", "slopes", "sink gradients", "key lengths".
        what: &'static str,
        /// Its length.
        len: usize,
        /// The length expected.
        expected: usize,
    },
    /// The backward pass of a soft-capped softmax needs the raw scores.
    ScoresRequired,
    /// A soft-cap c that is not finite and > 0, or with 2/c or c/t not finite.
    InvalidSoftCap {
        /// The cap c.
        cap: f32,
        /// The temperature t it is combined with.
        temperature: f32,
    },
    /// The backward pass or the Jacobian of a soft-capped softmax, asked for
    /// without the logits (the `…_with_logits` methods take them).
    LogitsRequired,
    /// More top log-probabilities asked for than the row has tokens.
    TooManyLogprobs {
        /// Pairs asked for.
        requested: usize,
        /// The row length.
        cols: usize,
    },
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Error::LengthMismatch { input, output } => write!(
                f,
                "input has {input} elements but output has {output}; they must be equal"
            ),
            Error::ShapeMismatch { input, output } => write!(
                f,
                "input is {}×{} but output is {}×{}; the shapes (rows×cols) must be equal",
                input.0, input.1, output.0, output.1
            ),
            Error::StrideTooSmall { stride, cols } => write!(
                f,
                "row stride {stride} is smaller than the row length {cols}; expected stride ≥ cols"
            ),
            Error::BufferTooShort { len, required, rows, cols, stride } => write!(
                f,
                "buffer holds {len} elements but {rows} rows of {cols} at stride {stride} need \
                 {required} ((rows - 1) × stride + cols)"
            ),
            Error::ShapeOverflow { rows, stride } => {
                write!(f, "{rows} rows at stride {stride} overflow the address space")
            }
            Error::LengthNotMultiple { len, cols } => write!(
                f,
                "a contiguous batch of {len} elements is not a whole number of rows of {cols}"
            ),
            Error::OutputTooShort { len, rows } => write!(
                f,
                "output holds {len} values but the batch has {rows} rows; expected at least one per row"
            ),
            Error::InvalidTemperature(t) => {
                write!(
                    f,
                    "temperature {t} is invalid; expected a finite value ≥ {:e} (the smallest normal f32)",
                    f32::MIN_POSITIVE
                )
            }
            Error::JacobianLength { len, cols } => write!(
                f,
                "Jacobian buffer holds {len} elements; a row of {cols} needs exactly {cols}×{cols}"
            ),
            Error::LabelCount { labels, rows } => write!(
                f,
                "{labels} labels for {rows} rows; expected one label per row"
            ),
            Error::LabelOutOfRange { row, label, classes } => write!(
                f,
                "label {label} of row {row} is out of range; expected 0 ≤ label < {classes} or the ignore index"
            ),
            Error::InvalidSmoothing(e) => {
                write!(f, "label smoothing {e} is invalid; expected 0 ≤ ε < 1")
            }
            Error::InvalidWeight { class, weight } => write!(
                f,
                "weight {weight} of class {class} is invalid; expected a finite value ≥ 0"
            ),
            Error::WeightCount { weights, classes } => write!(
                f,
                "{weights} class weights for rows of {classes} classes; expected one per class"
            ),
            Error::WeightsWithSoftTargets => write!(
                f,
                "class weights do not apply to soft targets; multiply the targets by the weights instead"
            ),
            Error::LossesRequired => write!(
                f,
                "Reduction::None returns per-row losses; pass a buffer with one value per row"
            ),
            Error::EmptyRow => write!(f, "the row is empty; expected at least one logit"),
            Error::NanLogit { row } => write!(
                f,
                "row {row} holds a NaN logit; a token cannot be drawn from it"
            ),
            Error::NoFiniteLogit { row } => write!(
                f,
                "every logit of row {row} is -inf after the bias; no token is left to draw"
            ),
            Error::InvalidTopK(k) => write!(f, "top-k of {k} is invalid; expected k ≥ 1"),
            Error::InvalidTopP(p) => write!(f, "top-p of {p} is invalid; expected 0 < p ≤ 1"),
            Error::InvalidMinP(p) => write!(f, "min-p of {p} is invalid; expected 0 ≤ min_p ≤ 1"),
            Error::InvalidBias { token, bias } => write!(
                f,
                "bias {bias} for token {token} is invalid; expected a finite value or -inf (a ban)"
            ),
            Error::BiasOutOfRange { token, cols } => write!(
                f,
                "a bias or ban names token {token} but rows have {cols} tokens; expected token < {cols}"
            ),
            Error::TooManyLogprobs { requested, cols } => write!(
                f,
                "{requested} top log-probabilities asked for rows of {cols} tokens; expected at most {cols}"
            ),
            Error::InvalidAttentionOption { option, value } => write!(
                f,
                "attention option {option} = {value} is invalid; expected {}",
                match option {
                    "scale" => "a finite value",
                    "soft_cap" => "a finite value > 0 (with a finite scale / cap)",
                    "window" => "a window of at least 1 key",
                    "max_bias" => "a finite value ≥ 0",
                    _ => "a finite slope",
                }
            ),
            Error::TensorTooShort { len, required } => write!(
                f,
                "buffer holds {len} elements but the shape and strides reach {required}"
            ),
            Error::OverlappingRows { dims, strides } => write!(
                f,
                "writable scores of dims {dims:?} with strides {strides:?} have overlapping \
                 rows; expected each stride to clear the rows inside it"
            ),
            Error::TensorShapeMismatch { what, dims, scores } => write!(
                f,
                "{what} has dims {dims:?} but the scores are {scores:?}; expected equal dims \
                 (a mask: batch and heads dividing the scores', queries equal or 1, keys equal)"
            ),
            Error::CountMismatch { what, len, expected } => {
                write!(f, "{len} {what} given; expected {expected}")
            }
            Error::ScoresRequired => write!(
                f,
                "the backward pass of a soft-capped softmax needs the raw scores; pass them"
            ),
            Error::InvalidSoftCap { cap, temperature } => write!(
                f,
                "soft-cap {cap} is invalid at temperature {temperature}; expected a finite cap > 0 with 2 / cap and cap / temperature finite"
            ),
            Error::LogitsRequired => write!(
                f,
                "the backward pass of a soft-capped softmax needs the logits x (the slope of the cap reads them); use the …_with_logits methods"
            ),
            Error::IsaUnavailable(isa) => write!(
                f,
                "{} is not available on this CPU; available: {}",
                isa.name(),
                Isa::available()
                    .iter()
                    .map(|i| i.name())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }
    }
}

impl std::error::Error for Error {}
