//! The crate's one error type.

use crate::Isa;
use std::fmt;

/// Why a call was refused. When a call returns an error it has written nothing.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum Error {
    /// Input and output rows differ in length.
    LengthMismatch { input: usize, output: usize },
    /// Input and output batches differ in shape.
    ShapeMismatch {
        input: (usize, usize),
        output: (usize, usize),
    },
    /// A row stride shorter than a row.
    StrideTooSmall { stride: usize, cols: usize },
    /// A buffer too short for its rows at its stride.
    BufferTooShort {
        len: usize,
        required: usize,
        rows: usize,
        cols: usize,
        stride: usize,
    },
    /// rows × stride does not fit in `usize`.
    ShapeOverflow { rows: usize, stride: usize },
    /// A contiguous batch whose length is not a whole number of rows.
    LengthNotMultiple { len: usize, cols: usize },
    /// An output slice with fewer elements than the batch has rows.
    OutputTooShort { len: usize, rows: usize },
    /// A temperature that is not finite, or below the smallest normal f32 (≤ 0 included).
    InvalidTemperature(f32),
    /// An ISA this CPU (or this build's target) does not have.
    IsaUnavailable(Isa),
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
