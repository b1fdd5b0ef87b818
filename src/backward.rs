//! Backward passes: the vector–Jacobian products of softmax and log-softmax,
//! and the softmax Jacobian; under a soft-cap, through it, from the logits.

use crate::batch;
use crate::rows::{same_len, same_shape};
use crate::{Element, Error, Rows, RowsMut, Softmax};
use softmax_kernels::{Backward, Jacobian, Output, SoftCap, Strided, StridedMut};

/// A slice as a batch of one row.
fn one_row<T: Element>(row: &[T]) -> Strided<'_> {
    let n = row.len();
    Strided::new(T::any(row), 1, n, n)
}

impl Softmax {
    /// The cap and its logits, as the kernels take them: `x` is required
    /// under a cap and ignored without one.
    fn cap_with<'a>(
        &self,
        x: Option<Strided<'a>>,
    ) -> Result<Option<(SoftCap, Strided<'a>)>, Error> {
        match (self.kernel_soft_cap(), x) {
            (None, _) => Ok(None),
            (Some(cap), Some(x)) => Ok(Some((cap, x))),
            (Some(_), None) => Err(Error::LogitsRequired),
        }
    }

    fn backward(
        &self,
        output: Output,
        x: Option<Strided<'_>>,
        y: Strided<'_>,
        g: Option<Strided<'_>>,
        dx: StridedMut<'_>,
    ) -> Result<(), Error> {
        let cols = dx.cols();
        let job = Backward {
            output,
            temperature: self.temperature,
            cap: self.cap_with(x)?,
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
        x: Option<&[T]>,
        y: &[T],
        g: Option<&[T]>,
        dx: &mut [T],
    ) -> Result<(), Error> {
        same_len(y.len(), dx.len())?;
        for row in [x, g].into_iter().flatten() {
            same_len(row.len(), dx.len())?;
        }
        let n = y.len();
        let (x, y, g) = (x.map(one_row), one_row(y), g.map(one_row));
        self.backward(output, x, y, g, StridedMut::new(T::any_mut(dx), 1, n, n))
    }

    fn backward_rows<T: Element>(
        &self,
        output: Output,
        x: Option<Rows<'_, T>>,
        y: Rows<'_, T>,
        g: Option<Rows<'_, T>>,
        dx: RowsMut<'_, T>,
    ) -> Result<(), Error> {
        same_shape((y.rows, y.cols), (dx.rows, dx.cols))?;
        for rows in [&x, &g].into_iter().flatten() {
            same_shape((rows.rows, rows.cols), (dx.rows, dx.cols))?;
        }
        let (x, g) = (x.map(|x| x.kernel_view()), g.map(|g| g.kernel_view()));
        self.backward(output, x, y.kernel_view(), g, dx.into_kernel_view())
    }

    /// dx = y ⊙ (g − ⟨g, y⟩) / t: the gradient through y = softmax(x / t), from
    /// the forward output `y` and the upstream gradient `g`.
    pub fn softmax_backward<T: Element>(
        &self,
        y: &[T],
        g: &[T],
        dx: &mut [T],
    ) -> Result<(), Error> {
        self.backward_row(Output::Softmax, None, y, Some(g), dx)
    }

    /// g ← y ⊙ (g − ⟨g, y⟩) / t.
    pub fn softmax_backward_in_place<T: Element>(&self, y: &[T], g: &mut [T]) -> Result<(), Error> {
        self.backward_row(Output::Softmax, None, y, None, g)
    }

    /// dx = (g − exp(y) · Σg) / t: the gradient through y = log-softmax(x / t),
    /// from the forward output `y` and the upstream gradient `g`.
    pub fn log_softmax_backward<T: Element>(
        &self,
        y: &[T],
        g: &[T],
        dx: &mut [T],
    ) -> Result<(), Error> {
        self.backward_row(Output::LogSoftmax, None, y, Some(g), dx)
    }

    /// g ← (g − exp(y) · Σg) / t.
    pub fn log_softmax_backward_in_place<T: Element>(
        &self,
        y: &[T],
        g: &mut [T],
    ) -> Result<(), Error> {
        self.backward_row(Output::LogSoftmax, None, y, None, g)
    }

    /// [`Softmax::softmax_backward`] of each row.
    pub fn softmax_backward_rows<T: Element>(
        &self,
        y: Rows<'_, T>,
        g: Rows<'_, T>,
        dx: RowsMut<'_, T>,
    ) -> Result<(), Error> {
        self.backward_rows(Output::Softmax, None, y, Some(g), dx)
    }

    /// [`Softmax::softmax_backward_in_place`] of each row: `g` becomes dx.
    pub fn softmax_backward_rows_in_place<T: Element>(
        &self,
        y: Rows<'_, T>,
        g: RowsMut<'_, T>,
    ) -> Result<(), Error> {
        self.backward_rows(Output::Softmax, None, y, None, g)
    }

    /// [`Softmax::log_softmax_backward`] of each row.
    pub fn log_softmax_backward_rows<T: Element>(
        &self,
        y: Rows<'_, T>,
        g: Rows<'_, T>,
        dx: RowsMut<'_, T>,
    ) -> Result<(), Error> {
        self.backward_rows(Output::LogSoftmax, None, y, Some(g), dx)
    }

    /// [`Softmax::log_softmax_backward_in_place`] of each row: `g` becomes dx.
    pub fn log_softmax_backward_rows_in_place<T: Element>(
        &self,
        y: Rows<'_, T>,
        g: RowsMut<'_, T>,
    ) -> Result<(), Error> {
        self.backward_rows(Output::LogSoftmax, None, y, None, g)
    }

    /// [`Softmax::softmax_backward`] under a soft-cap: dx = y ⊙ (g − ⟨g, y⟩) / t
    /// ⊙ (1 − tanh²(x / c)), reading the logits `x` the forward pass took
    /// (without a cap `x` is checked for length and not read). The methods
    /// without logits return [`Error::LogitsRequired`] under a cap.
    pub fn softmax_backward_with_logits<T: Element>(
        &self,
        x: &[T],
        y: &[T],
        g: &[T],
        dx: &mut [T],
    ) -> Result<(), Error> {
        self.backward_row(Output::Softmax, Some(x), y, Some(g), dx)
    }

    /// [`Softmax::softmax_backward_with_logits`] in place: g becomes dx.
    pub fn softmax_backward_with_logits_in_place<T: Element>(
        &self,
        x: &[T],
        y: &[T],
        g: &mut [T],
    ) -> Result<(), Error> {
        self.backward_row(Output::Softmax, Some(x), y, None, g)
    }

    /// [`Softmax::log_softmax_backward`] under a soft-cap: dx = (g − exp(y) · Σg)
    /// / t ⊙ (1 − tanh²(x / c)), reading the logits `x`.
    pub fn log_softmax_backward_with_logits<T: Element>(
        &self,
        x: &[T],
        y: &[T],
        g: &[T],
        dx: &mut [T],
    ) -> Result<(), Error> {
        self.backward_row(Output::LogSoftmax, Some(x), y, Some(g), dx)
    }

    /// [`Softmax::log_softmax_backward_with_logits`] in place: g becomes dx.
    pub fn log_softmax_backward_with_logits_in_place<T: Element>(
        &self,
        x: &[T],
        y: &[T],
        g: &mut [T],
    ) -> Result<(), Error> {
        self.backward_row(Output::LogSoftmax, Some(x), y, None, g)
    }

    /// [`Softmax::softmax_backward_with_logits`] of each row.
    pub fn softmax_backward_rows_with_logits<T: Element>(
        &self,
        x: Rows<'_, T>,
        y: Rows<'_, T>,
        g: Rows<'_, T>,
        dx: RowsMut<'_, T>,
    ) -> Result<(), Error> {
        self.backward_rows(Output::Softmax, Some(x), y, Some(g), dx)
    }

    /// [`Softmax::softmax_backward_with_logits_in_place`] of each row.
    pub fn softmax_backward_rows_with_logits_in_place<T: Element>(
        &self,
        x: Rows<'_, T>,
        y: Rows<'_, T>,
        g: RowsMut<'_, T>,
    ) -> Result<(), Error> {
        self.backward_rows(Output::Softmax, Some(x), y, None, g)
    }

    /// [`Softmax::log_softmax_backward_with_logits`] of each row.
    pub fn log_softmax_backward_rows_with_logits<T: Element>(
        &self,
        x: Rows<'_, T>,
        y: Rows<'_, T>,
        g: Rows<'_, T>,
        dx: RowsMut<'_, T>,
    ) -> Result<(), Error> {
        self.backward_rows(Output::LogSoftmax, Some(x), y, Some(g), dx)
    }

    /// [`Softmax::log_softmax_backward_with_logits_in_place`] of each row.
    pub fn log_softmax_backward_rows_with_logits_in_place<T: Element>(
        &self,
        x: Rows<'_, T>,
        y: Rows<'_, T>,
        g: RowsMut<'_, T>,
    ) -> Result<(), Error> {
        self.backward_rows(Output::LogSoftmax, Some(x), y, None, g)
    }

    /// The Jacobian ∂y/∂x = (diag(y) − y yᵀ) / t of y = softmax(x / t), from
    /// the K outputs `y`, into `jacobian` (K rows of K, row-major: element
    /// (i, j) is ∂y_i/∂x_j). The diagonal is computed in f64.
    pub fn softmax_jacobian<T: Element, O: Element>(
        &self,
        y: &[T],
        jacobian: &mut [O],
    ) -> Result<(), Error> {
        self.jacobian(None, y, jacobian)
    }

    /// [`Softmax::softmax_jacobian`] under a soft-cap: (diag(y) − y yᵀ) / t ·
    /// diag(1 − tanh²(x / c)), reading the logits `x` (as long as `y`).
    pub fn softmax_jacobian_with_logits<T: Element, O: Element>(
        &self,
        x: &[T],
        y: &[T],
        jacobian: &mut [O],
    ) -> Result<(), Error> {
        same_len(x.len(), y.len())?;
        self.jacobian(Some(x), y, jacobian)
    }

    fn jacobian<T: Element, O: Element>(
        &self,
        x: Option<&[T]>,
        y: &[T],
        jacobian: &mut [O],
    ) -> Result<(), Error> {
        let k = y.len();
        let cap = match (self.kernel_soft_cap(), x) {
            (None, _) => None,
            (Some(cap), Some(x)) => Some((cap, T::any(x))),
            (Some(_), None) => return Err(Error::LogitsRequired),
        };
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
            cap,
            y: T::any(y),
            out: O::any_mut(jacobian),
        };
        batch::run_here(job, self.isa);
        Ok(())
    }
}
