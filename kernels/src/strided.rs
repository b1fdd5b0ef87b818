//! Strided views of a batch: `rows` rows of `cols` elements, `stride` apart,
//! over a row of any storage type; cut between rows for the tasks of a batch.

use crate::loops::NextRow;
use crate::required_len;
use crate::storage::{AnySlice, AnySliceMut, Kind};

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
    /// Row `i + 1` by address, when it exists and is f32.
    #[inline(always)]
    pub(crate) fn next_row(&self, i: usize) -> NextRow {
        match self.data {
            AnySlice::F32(s) if i + 1 < self.rows => {
                NextRow::of(&s[(i + 1) * self.stride..][..self.cols])
            }
            _ => NextRow::NONE,
        }
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
    /// Row `i + 1` by address, when it exists and is f32.
    #[inline(always)]
    pub(crate) fn next_row(&self, i: usize) -> NextRow {
        match &self.data {
            AnySliceMut::F32(s) if i + 1 < self.rows => {
                NextRow::of(&s[(i + 1) * self.stride..][..self.cols])
            }
            _ => NextRow::NONE,
        }
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

/// Row-indexed data that can be cut after its first `k` rows.
pub(crate) trait SplitRows: Sized {
    fn split_rows(self, k: usize) -> (Self, Self);
}

impl SplitRows for Strided<'_> {
    fn split_rows(self, k: usize) -> (Self, Self) {
        self.split_at(k)
    }
}

impl SplitRows for StridedMut<'_> {
    fn split_rows(self, k: usize) -> (Self, Self) {
        self.split_at(k)
    }
}

/// One value per row.
impl<T> SplitRows for &mut [T] {
    fn split_rows(self, k: usize) -> (Self, Self) {
        let k = k.min(self.len());
        self.split_at_mut(k)
    }
}

impl<T: SplitRows> SplitRows for Option<T> {
    fn split_rows(self, k: usize) -> (Self, Self) {
        match self {
            Some(v) => {
                let (a, b) = v.split_rows(k);
                (Some(a), Some(b))
            }
            None => (None, None),
        }
    }
}
