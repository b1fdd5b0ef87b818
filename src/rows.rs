//! Strided row views: a row-major batch of `rows` × `cols` with a row stride.

use crate::{Element, Error};

fn validate(len: usize, rows: usize, cols: usize, stride: usize) -> Result<(), Error> {
    if stride < cols {
        return Err(Error::StrideTooSmall { stride, cols });
    }
    let required = softmax_kernels::required_len(rows, cols, stride)
        .ok_or(Error::ShapeOverflow { rows, stride })?;
    if len < required {
        return Err(Error::BufferTooShort {
            len,
            required,
            rows,
            cols,
            stride,
        });
    }
    Ok(())
}

/// An input row and an output row of equal length, or the error.
pub(crate) fn same_len(input: usize, output: usize) -> Result<(), Error> {
    if input != output {
        return Err(Error::LengthMismatch { input, output });
    }
    Ok(())
}

/// An output of at least one value per row, or the error.
pub(crate) fn output_len(len: usize, rows: usize) -> Result<(), Error> {
    if len < rows {
        return Err(Error::OutputTooShort { len, rows });
    }
    Ok(())
}

/// Input and output batches of equal (rows, cols), or the error.
pub(crate) fn same_shape(input: (usize, usize), output: (usize, usize)) -> Result<(), Error> {
    if input != output {
        return Err(Error::ShapeMismatch { input, output });
    }
    Ok(())
}

fn rows_of(len: usize, cols: usize) -> Result<usize, Error> {
    match cols {
        0 if len == 0 => Ok(0),
        0 => Err(Error::LengthNotMultiple { len, cols }),
        _ if !len.is_multiple_of(cols) => Err(Error::LengthNotMultiple { len, cols }),
        _ => Ok(len / cols),
    }
}

/// Read-only rows: row `i` is `data[i * stride .. i * stride + cols]`.
#[derive(Clone, Copy, Debug)]
pub struct Rows<'a, T> {
    pub(crate) data: &'a [T],
    pub(crate) rows: usize,
    pub(crate) cols: usize,
    pub(crate) stride: usize,
}

impl<'a, T: Element> Rows<'a, T> {
    /// `rows` rows of `cols` elements, `stride` apart (stride ≥ cols). The buffer must hold
    /// (rows - 1) · stride + cols elements: the last row needs no padding.
    pub fn new(data: &'a [T], rows: usize, cols: usize, stride: usize) -> Result<Self, Error> {
        validate(data.len(), rows, cols, stride)?;
        Ok(Self {
            data,
            rows,
            cols,
            stride,
        })
    }

    /// Densely packed rows of `cols` elements; `data.len()` must be a multiple of `cols`.
    pub fn contiguous(data: &'a [T], cols: usize) -> Result<Self, Error> {
        let rows = rows_of(data.len(), cols)?;
        Self::new(data, rows, cols, cols)
    }

    /// The number of rows.
    pub fn rows(&self) -> usize {
        self.rows
    }
    /// Elements per row.
    pub fn cols(&self) -> usize {
        self.cols
    }
    /// Elements from the start of one row to the start of the next.
    pub fn stride(&self) -> usize {
        self.stride
    }

    pub(crate) fn kernel_view(&self) -> softmax_kernels::Strided<'a> {
        softmax_kernels::Strided::new(T::any(self.data), self.rows, self.cols, self.stride)
    }
}

/// Writable rows: row `i` is `data[i * stride .. i * stride + cols]`; the
/// elements between rows are never touched.
#[derive(Debug)]
pub struct RowsMut<'a, T> {
    pub(crate) data: &'a mut [T],
    pub(crate) rows: usize,
    pub(crate) cols: usize,
    pub(crate) stride: usize,
}

impl<'a, T: Element> RowsMut<'a, T> {
    /// See [`Rows::new`].
    pub fn new(data: &'a mut [T], rows: usize, cols: usize, stride: usize) -> Result<Self, Error> {
        validate(data.len(), rows, cols, stride)?;
        Ok(Self {
            data,
            rows,
            cols,
            stride,
        })
    }

    /// See [`Rows::contiguous`].
    pub fn contiguous(data: &'a mut [T], cols: usize) -> Result<Self, Error> {
        let rows = rows_of(data.len(), cols)?;
        Self::new(data, rows, cols, cols)
    }

    /// The number of rows.
    pub fn rows(&self) -> usize {
        self.rows
    }
    /// Elements per row.
    pub fn cols(&self) -> usize {
        self.cols
    }
    /// Elements from the start of one row to the start of the next.
    pub fn stride(&self) -> usize {
        self.stride
    }

    pub(crate) fn into_kernel_view(self) -> softmax_kernels::StridedMut<'a> {
        softmax_kernels::StridedMut::new(T::any_mut(self.data), self.rows, self.cols, self.stride)
    }
}
