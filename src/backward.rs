//! Backward passes: the vector–Jacobian products of softmax and log-softmax,
//! and the softmax Jacobian.

use crate::batch;
use crate::rows::{same_len, same_shape};
use crate::{Element, Error, Rows, RowsMut, Softmax};
use softmax_kernels::{Backward, Jacobian, Output, Strided, StridedMut};

impl Softmax {
    fn backward(
        &self,
        output: Output,
        y: Strided<'_>,
        g: Option<Strided<'_>>,
        dx: StridedMut<'_>,
    ) -> Result<(), Error> {
        let cols = dx.cols();
        let job = Backward {
            output,
            temperature: self.temperature,
            y,
            g,
            dx,
        };
        batch::run(job, cols, self.isa, &self.parallelism);
        Ok(())
    }

    fn backward_row<T: Element>(
        &self,
        output: Output,
        y: &[T],
        g: Option<&[T]>,
        dx: &mut [T],
    ) -> Result<(), Error> {
        same_len(y.len(), dx.len())?;
        if let Some(g) = g {
            same_len(g.len(), dx.len())?;
        }
        let n = y.len();
        let y = Strided::new(T::any(y), 1, n, n);
        let g = g.map(|g| Strided::new(T::any(g), 1, n, n));
        self.backward(output, y, g, StridedMut::new(T::any_mut(dx), 1, n, n))
    }

    fn backward_rows<T: Element>(
        &self,
        output: Output,
        y: Rows<'_, T>,
        g: Option<Rows<'_, T>>,
        dx: RowsMut<'_, T>,
    ) -> Result<(), Error> {
        same_shape((y.rows, y.cols), (dx.rows, dx.cols))?;
        if let Some(g) = &g {
            same_shape((g.rows, g.cols), (dx.rows, dx.cols))?;
        }
        let g = g.map(|g| g.kernel_view());
        self.backward(output, y.kernel_view(), g, dx.into_kernel_view())
    }

    /// dx = y ⊙ (g − ⟨g, y⟩) / t: the gradient through y = softmax(x / t), from
    /// the forward output `y` and the upstream gradient `g`.
    pub fn softmax_backward<T: Element>(
        &self,
        y: &[T],
        g: &[T],
        dx: &mut [T],
    ) -> Result<(), Error> {
        self.backward_row(Output::Softmax, y, Some(g), dx)
    }

    /// g ← y ⊙ (g − ⟨g, y⟩) / t.
    pub fn softmax_backward_in_place<T: Element>(&self, y: &[T], g: &mut [T]) -> Result<(), Error> {
        self.backward_row(Output::Softmax, y, None, g)
    }

    /// dx = (g − exp(y) · Σg) / t: the gradient through y = log-softmax(x / t),
    /// from the forward output `y` and the upstream gradient `g`.
    pub fn log_softmax_backward<T: Element>(
        &self,
        y: &[T],
        g: &[T],
        dx: &mut [T],
    ) -> Result<(), Error> {
        self.backward_row(Output::LogSoftmax, y, Some(g), dx)
    }

    /// g ← (g − exp(y) · Σg) / t.
    pub fn log_softmax_backward_in_place<T: Element>(
        &self,
        y: &[T],
        g: &mut [T],
    ) -> Result<(), Error> {
        self.backward_row(Output::LogSoftmax, y, None, g)
    }

    /// [`Softmax::softmax_backward`] of each row.
    pub fn softmax_backward_rows<T: Element>(
        &self,
        y: Rows<'_, T>,
        g: Rows<'_, T>,
        dx: RowsMut<'_, T>,
    ) -> Result<(), Error> {
        self.backward_rows(Output::Softmax, y, Some(g), dx)
    }

    /// [`Softmax::softmax_backward_in_place`] of each row: `g` becomes dx.
    pub fn softmax_backward_rows_in_place<T: Element>(
        &self,
        y: Rows<'_, T>,
        g: RowsMut<'_, T>,
    ) -> Result<(), Error> {
        self.backward_rows(Output::Softmax, y, None, g)
    }

    /// [`Softmax::log_softmax_backward`] of each row.
    pub fn log_softmax_backward_rows<T: Element>(
        &self,
        y: Rows<'_, T>,
        g: Rows<'_, T>,
        dx: RowsMut<'_, T>,
    ) -> Result<(), Error> {
        self.backward_rows(Output::LogSoftmax, y, Some(g), dx)
    }

    /// [`Softmax::log_softmax_backward_in_place`] of each row: `g` becomes dx.
    pub fn log_softmax_backward_rows_in_place<T: Element>(
        &self,
        y: Rows<'_, T>,
        g: RowsMut<'_, T>,
    ) -> Result<(), Error> {
        self.backward_rows(Output::LogSoftmax, y, None, g)
    }

    /// The Jacobian ∂y/∂x = (diag(y) − y yᵀ) / t of y = softmax(x / t), from
    /// the K outputs `y`, into `jacobian` (K rows of K, row-major: element
    /// (i, j) is ∂y_i/∂x_j). The diagonal is computed in f64.
    pub fn softmax_jacobian<T: Element, O: Element>(
        &self,
        y: &[T],
        jacobian: &mut [O],
    ) -> Result<(), Error> {
        let k = y.len();
        let required = k
            .checked_mul(k)
            .ok_or(Error::ShapeOverflow { rows: k, stride: k })?;
        if jacobian.len() != required {
            return Err(Error::JacobianLength {
                len: jacobian.len(),
                cols: k,
            });
        }
        let job = Jacobian {
            temperature: self.temperature,
            y: T::any(y),
            out: O::any_mut(jacobian),
        };
        batch::run_here(job, self.isa);
        Ok(())
    }
}
