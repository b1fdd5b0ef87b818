//! Fused cross-entropy from logits: the loss and its gradient, with one exp
//! per element (three-pass) or one read for the statistics (online).

use crate::batch::{self, Parallelism};
use crate::rows::{output_len, same_shape};
use crate::{Algorithm, Element, Error, Isa, Rows, RowsMut, Softmax};
use rayon::ThreadPool;
use softmax_kernels::{Labels, LossOptions, Targets};
use std::sync::Arc;

/// How the row losses combine into the returned value, and how the gradient is scaled.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Reduction {
    /// Per-row losses only (the call must be given a `losses` buffer); returns
    /// their sum. Each row's gradient is that of its own loss.
    None,
    /// Returns the sum of the row losses; gradients as for `None`.
    Sum,
    /// Returns the sum divided by the number of rows (soft targets), the number
    /// of rows not ignored (labels), or the sum of the label weights of the rows
    /// not ignored (labels with class weights); gradients are divided by the same.
    /// When that is 0 (every row ignored) the loss is NaN and the gradient 0.
    #[default]
    Mean,
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for i32 {}
    impl Sealed for i64 {}
    impl Sealed for u32 {}
    impl Sealed for u64 {}
    impl Sealed for usize {}
}

/// An integer type for class labels: `i32`, `i64`, `u32`, `u64` or `usize`.
pub trait Label: sealed::Sealed + Copy + Send + Sync + 'static {
    #[doc(hidden)]
    fn any(labels: &[Self]) -> Labels<'_>;
}

macro_rules! label {
    ($($t:ty => $v:ident),*) => {$(
        impl Label for $t {
            #[inline]
            fn any(labels: &[$t]) -> Labels<'_> {
                Labels::$v(labels)
            }
        }
    )*};
}

label!(i32 => I32, i64 => I64, u32 => U32, u64 => U64, usize => Usize);

/// The default ignore index (as in PyTorch).
pub const DEFAULT_IGNORE_INDEX: i64 = -100;

/// Cross-entropy options: temperature, soft-cap, ignore index, label
/// smoothing, class weights, reduction, ISA and parallelism. Cheap to clone; borrows the weights.
#[derive(Clone, Debug)]
pub struct CrossEntropy<'w> {
    softmax: Softmax,
    ignore_index: Option<i64>,
    smoothing: f32,
    weights: Option<&'w [f32]>,
    reduction: Reduction,
}

impl Default for CrossEntropy<'_> {
    fn default() -> Self {
        Self::new()
    }
}

/// What the rows are scored against, before validation.
enum Scored<'a, T, L> {
    Labels(&'a [L]),
    Soft(Rows<'a, T>),
}

impl<'w> CrossEntropy<'w> {
    /// Temperature 1, ignore index -100, no smoothing, no weights,
    /// `Reduction::Mean`, the best ISA of this CPU, `Parallelism::Auto`.
    pub fn new() -> Self {
        Self {
            softmax: Softmax::new(),
            ignore_index: Some(DEFAULT_IGNORE_INDEX),
            smoothing: 0.0,
            weights: None,
            reduction: Reduction::Mean,
        }
    }

    /// Scores softmax(x / t); the loss's gradient with respect to x carries the 1/t.
    /// `t` must be finite and at least `f32::MIN_POSITIVE`.
    pub fn with_temperature(mut self, t: f32) -> Result<Self, Error> {
        self.softmax = self.softmax.with_temperature(t)?;
        Ok(self)
    }

    /// Scores softmax(v / t) with v = c · tanh(x / c), the logits soft-capped
    /// (Gemma 2's 30); the gradient with respect to x carries 1 − tanh²(x / c).
    /// The checks and the special values of [`Softmax::with_soft_cap`]. Each
    /// row is capped into working space once (with the cap's slope beside it
    /// when there is a gradient), then scored as without a cap.
    pub fn with_soft_cap(mut self, c: f32) -> Result<Self, Error> {
        self.softmax = self.softmax.with_soft_cap(c)?;
        Ok(self)
    }

    /// Runs on `isa`; an error if this CPU lacks it.
    pub fn with_isa(mut self, isa: Isa) -> Result<Self, Error> {
        self.softmax = self.softmax.with_isa(isa)?;
        Ok(self)
    }

    /// How each row is passed over (default `Algorithm::Auto`). With a
    /// gradient, `ThreePass` takes one exp per element: the max, then exp
    /// stored (in the gradient buffer, or in working space in place or for an
    /// f16 or bf16 gradient) while the sum is taken, then the gradient from
    /// the stored values. `Online` reads each row once for its statistics and
    /// takes exp again for the gradient. `Auto` is `ThreePass` below
    /// [`AUTO_ONLINE_FROM_COLS`](crate::AUTO_ONLINE_FROM_COLS) columns, as for
    /// softmax. Soft targets, and class weights with label smoothing, always
    /// run online; the loss alone needs no stored values and runs online too.
    pub fn with_algorithm(mut self, algorithm: Algorithm) -> Self {
        self.softmax = self.softmax.with_algorithm(algorithm);
        self
    }

    /// Where the rows of a batch run (default `Parallelism::Auto`).
    pub fn with_parallelism(mut self, parallelism: Parallelism) -> Self {
        self.softmax = self.softmax.with_parallelism(parallelism);
        self
    }

    /// Runs large batches on `pool`.
    pub fn with_thread_pool(self, pool: Arc<ThreadPool>) -> Self {
        self.with_parallelism(Parallelism::Pool(pool))
    }

    /// Rows whose label equals `index` add 0 to the loss, get a zero gradient
    /// and are not counted by `Reduction::Mean`. `None`: every label must be a class.
    pub fn with_ignore_index(mut self, index: Option<i64>) -> Self {
        self.ignore_index = index;
        self
    }

    /// Label smoothing ε in [0, 1): the target becomes (1 − ε)·target + ε/K.
    pub fn with_label_smoothing(mut self, epsilon: f32) -> Result<Self, Error> {
        if !(0.0..1.0).contains(&epsilon) {
            return Err(Error::InvalidSmoothing(epsilon));
        }
        self.smoothing = epsilon;
        Ok(self)
    }

    /// Per-class weights w (one per class, finite and ≥ 0), for label targets:
    /// class c's term of the loss is multiplied by `w[c]`.
    pub fn with_weights(mut self, weights: &'w [f32]) -> Result<Self, Error> {
        if let Some((class, &weight)) = weights
            .iter()
            .enumerate()
            .find(|(_, w)| !(w.is_finite() && **w >= 0.0))
        {
            return Err(Error::InvalidWeight { class, weight });
        }
        self.weights = Some(weights);
        Ok(self)
    }

    /// How the row losses combine into the returned loss (default `Reduction::Mean`).
    pub fn with_reduction(mut self, reduction: Reduction) -> Self {
        self.reduction = reduction;
        self
    }

    /// The temperature t.
    pub fn temperature(&self) -> f32 {
        self.softmax.temperature()
    }
    /// The soft-cap c, if any.
    pub fn soft_cap(&self) -> Option<f32> {
        self.softmax.soft_cap()
    }
    /// The ISA the rows run on.
    pub fn isa(&self) -> Isa {
        self.softmax.isa()
    }
    /// How each row is passed over.
    pub fn algorithm(&self) -> Algorithm {
        self.softmax.algorithm()
    }
    /// Where the rows of a batch run.
    pub fn parallelism(&self) -> &Parallelism {
        self.softmax.parallelism()
    }
    /// The label that marks a row as ignored, if any.
    pub fn ignore_index(&self) -> Option<i64> {
        self.ignore_index
    }
    /// The label smoothing ε.
    pub fn label_smoothing(&self) -> f32 {
        self.smoothing
    }
    /// The per-class weights, if set.
    pub fn weights(&self) -> Option<&'w [f32]> {
        self.weights
    }
    /// How the row losses combine.
    pub fn reduction(&self) -> Reduction {
        self.reduction
    }

    /// The loss of each row of `logits` against its class label, reduced as
    /// the options say; per-row losses go into `losses` when given (at least
    /// one per row; required with `Reduction::None`).
    pub fn loss<T: Element, L: Label>(
        &self,
        logits: Rows<'_, T>,
        labels: &[L],
        losses: Option<&mut [f32]>,
    ) -> Result<f32, Error> {
        self.call(Some(logits), None, Scored::Labels(labels), losses)
    }

    /// [`CrossEntropy::loss`], with the gradient of the reduced loss with respect
    /// to the logits written into `grad`.
    pub fn loss_and_grad<T: Element, L: Label>(
        &self,
        logits: Rows<'_, T>,
        labels: &[L],
        grad: RowsMut<'_, T>,
        losses: Option<&mut [f32]>,
    ) -> Result<f32, Error> {
        self.call(Some(logits), Some(grad), Scored::Labels(labels), losses)
    }

    /// [`CrossEntropy::loss_and_grad`] with the gradient written over the logits.
    pub fn loss_and_grad_in_place<T: Element, L: Label>(
        &self,
        logits: RowsMut<'_, T>,
        labels: &[L],
        losses: Option<&mut [f32]>,
    ) -> Result<f32, Error> {
        self.call(None, Some(logits), Scored::Labels(labels), losses)
    }

    /// The loss of each row of `logits` against the distribution in the same row
    /// of `targets` (−Σ q·log-softmax; terms with q = 0 add 0). Class weights
    /// do not apply: multiply the targets by them instead (the same loss and
    /// gradient under every reduction).
    pub fn soft_loss<T: Element>(
        &self,
        logits: Rows<'_, T>,
        targets: Rows<'_, T>,
        losses: Option<&mut [f32]>,
    ) -> Result<f32, Error> {
        self.call::<T, u32>(Some(logits), None, Scored::Soft(targets), losses)
    }

    /// [`CrossEntropy::soft_loss`] with the gradient written into `grad`.
    pub fn soft_loss_and_grad<T: Element>(
        &self,
        logits: Rows<'_, T>,
        targets: Rows<'_, T>,
        grad: RowsMut<'_, T>,
        losses: Option<&mut [f32]>,
    ) -> Result<f32, Error> {
        self.call::<T, u32>(Some(logits), Some(grad), Scored::Soft(targets), losses)
    }

    /// [`CrossEntropy::soft_loss_and_grad`] with the gradient written over the logits.
    pub fn soft_loss_and_grad_in_place<T: Element>(
        &self,
        logits: RowsMut<'_, T>,
        targets: Rows<'_, T>,
        losses: Option<&mut [f32]>,
    ) -> Result<f32, Error> {
        self.call::<T, u32>(None, Some(logits), Scored::Soft(targets), losses)
    }

    /// Validates everything, then runs. `x` is `None` in place (then `grad` holds the logits).
    fn call<T: Element, L: Label>(
        &self,
        x: Option<Rows<'_, T>>,
        grad: Option<RowsMut<'_, T>>,
        scored: Scored<'_, T, L>,
        losses: Option<&mut [f32]>,
    ) -> Result<f32, Error> {
        let (rows, cols) = match (&x, &grad) {
            (Some(x), _) => (x.rows, x.cols),
            (None, Some(g)) => (g.rows, g.cols),
            (None, None) => unreachable!("every entry point passes logits"),
        };
        if let (Some(_), Some(g)) = (&x, &grad) {
            same_shape((rows, cols), (g.rows, g.cols))?;
        }
        if let Some(l) = &losses {
            output_len(l.len(), rows)?;
        } else if self.reduction == Reduction::None {
            return Err(Error::LossesRequired);
        }
        let (targets, denominator) = match scored {
            Scored::Labels(labels) => self.check_labels(labels, rows, cols)?,
            Scored::Soft(q) => {
                if self.weights.is_some() {
                    return Err(Error::WeightsWithSoftTargets);
                }
                same_shape((rows, cols), (q.rows, q.cols))?;
                (Targets::Soft(q.kernel_view()), rows as f64)
            }
        };
        let grad_scale = match self.reduction {
            Reduction::Mean if denominator > 0.0 => 1.0 / denominator,
            Reduction::Mean => 0.0,
            Reduction::None | Reduction::Sum => 1.0,
        };
        let options = LossOptions {
            temperature: self.softmax.temperature,
            smoothing: self.smoothing,
            weights: self.weights,
            weight_sum: match self.weights {
                Some(w) => w.iter().map(|&w| w as f64).sum(),
                None => cols as f64,
            },
            grad_scale,
            cap: self.softmax.kernel_soft_cap(),
        };
        let job = softmax_kernels::CrossEntropy {
            options,
            method: self.softmax.algorithm().method(cols),
            targets,
            x: x.map(|x| x.kernel_view()),
            grad: grad.map(|g| g.into_kernel_view()),
            losses: losses.map(|l| &mut l[..rows]),
        };
        let sum = batch::run(job, cols, self.softmax.isa, &self.softmax.parallelism);
        Ok(match self.reduction {
            Reduction::Mean => (sum / denominator) as f32,
            Reduction::None | Reduction::Sum => sum as f32,
        })
    }

    /// The kernel's targets and the mean's denominator, or the first bad label.
    fn check_labels<'l, L: Label>(
        &self,
        labels: &'l [L],
        rows: usize,
        cols: usize,
    ) -> Result<(Targets<'l>, f64), Error> {
        if labels.len() != rows {
            return Err(Error::LabelCount {
                labels: labels.len(),
                rows,
            });
        }
        if let Some(w) = self.weights {
            if w.len() != cols {
                return Err(Error::WeightCount {
                    weights: w.len(),
                    classes: cols,
                });
            }
        }
        let any = L::any(labels);
        let ignore = self.ignore_index.map(i128::from);
        let mut denominator = 0.0f64;
        for row in 0..rows {
            let label = any.get(row);
            if Some(label) == ignore {
                continue;
            }
            if !(0..cols as i128).contains(&label) {
                return Err(Error::LabelOutOfRange {
                    row,
                    label,
                    classes: cols,
                });
            }
            denominator += self.weights.map_or(1.0, |w| w[label as usize] as f64);
        }
        Ok((
            Targets::Labels {
                labels: any,
                ignore,
            },
            denominator,
        ))
    }
}
