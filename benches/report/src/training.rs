//! The training passes on one f32 batch, for the report and the criterion
//! benches: the forward softmax
//! they are measured against, the softmax and log-softmax backward passes, and
//! cross-entropy from logits with and without its gradient.
//!
//! Buffers: logits x uniform in ±10; p = softmax(x) and l = log-softmax(x),
//! the forward outputs the backward passes read; an upstream gradient g
//! uniform in ±1; one class label per row; one output buffer that every pass
//! writes. An in-place pass is handed its input in that buffer first
//! (`reset`, which timing leaves out), so every call sees the same values.
//!
//! `check` compares a few rows (the first two and the last two, which fall in
//! different rayon tasks) with the crate's scalar ISA on one thread.

use crate::workload::{splitmix64 as mix, uniform_f32, xorshift64_star};
use rayon::prelude::*;
use softmax::{Algorithm, CrossEntropy, Isa, Parallelism, Reduction, Rows, RowsMut, Softmax};

/// A gradient row's entries are ~1/cols, so errors are scaled by the row's
/// largest |reference| rather than by max(1, |reference|), which would pass
/// a row of zeros; losses (~ln cols) by max(1, |reference|).
pub const TRAINING_TOLERANCE: f64 = 1e-5;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pass {
    /// `softmax_rows`, out of place, `Algorithm::Auto`: the yardstick.
    Forward,
    SoftmaxBackward,
    SoftmaxBackwardInPlace,
    LogSoftmaxBackward,
    /// `CrossEntropy::loss_and_grad` into a gradient buffer.
    CrossEntropyGrad,
    CrossEntropyGradInPlace,
    /// `CrossEntropy::loss`: no gradient.
    CrossEntropyLoss,
}

impl Pass {
    pub const ALL: [Pass; 7] = [
        Pass::Forward,
        Pass::SoftmaxBackward,
        Pass::SoftmaxBackwardInPlace,
        Pass::LogSoftmaxBackward,
        Pass::CrossEntropyGrad,
        Pass::CrossEntropyGradInPlace,
        Pass::CrossEntropyLoss,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Pass::Forward => "softmax",
            Pass::SoftmaxBackward => "softmax-backward",
            Pass::SoftmaxBackwardInPlace => "softmax-backward-in-place",
            Pass::LogSoftmaxBackward => "log-softmax-backward",
            Pass::CrossEntropyGrad => "ce-loss-and-grad",
            Pass::CrossEntropyGradInPlace => "ce-loss-and-grad-in-place",
            Pass::CrossEntropyLoss => "ce-loss",
        }
    }

    /// f32 bytes read and written once per element: a backward pass reads y
    /// and g and writes dx; cross-entropy reads the logits and writes the
    /// gradient (the loss alone only reads).
    pub fn bytes_per_element(self) -> u64 {
        match self {
            Pass::SoftmaxBackward | Pass::SoftmaxBackwardInPlace | Pass::LogSoftmaxBackward => 12,
            Pass::Forward | Pass::CrossEntropyGrad | Pass::CrossEntropyGradInPlace => 8,
            Pass::CrossEntropyLoss => 4,
        }
    }

    /// Throughput wanted as a multiple of the forward softmax's (same shape and threads).
    pub fn target(self) -> Option<f64> {
        match self {
            Pass::Forward | Pass::CrossEntropyLoss => None,
            Pass::CrossEntropyGrad | Pass::CrossEntropyGradInPlace => Some(0.9),
            _ => Some(0.8),
        }
    }

    fn writes_output(self) -> bool {
        self != Pass::CrossEntropyLoss
    }

    fn is_cross_entropy(self) -> bool {
        matches!(
            self,
            Pass::CrossEntropyGrad | Pass::CrossEntropyGradInPlace | Pass::CrossEntropyLoss
        )
    }
}

pub struct Training {
    pub rows: usize,
    pub cols: usize,
    x: Vec<f32>,
    p: Vec<f32>,
    l: Vec<f32>,
    g: Vec<f32>,
    labels: Vec<i64>,
    out: Vec<f32>,
    losses: Vec<f32>,
}

/// Uniform in ±range, reproducible: xorshift64* seeded per row, rows in parallel.
pub(crate) fn uniform(rows: usize, cols: usize, seed: u64, range: f32) -> Vec<f32> {
    let mut values = vec![0.0f32; rows * cols];
    values
        .par_chunks_mut(cols)
        .enumerate()
        .for_each(|(row, values)| {
            let mut state = mix(seed ^ mix(row as u64)) | 1;
            for v in values {
                *v = uniform_f32(xorshift64_star(&mut state), range);
            }
        });
    values
}

fn whole_rows(v: &[f32], cols: usize) -> Rows<'_, f32> {
    Rows::contiguous(v, cols).expect("whole rows")
}

fn whole_rows_mut(v: &mut [f32], cols: usize) -> RowsMut<'_, f32> {
    RowsMut::contiguous(v, cols).expect("whole rows")
}

pub(crate) fn scalar_softmax() -> Softmax {
    Softmax::new()
        .with_isa(Isa::Scalar)
        .expect("the scalar ISA is always available")
        .with_algorithm(Algorithm::ThreePass)
        .with_parallelism(Parallelism::Serial)
}

/// max |got − want| / max |want| over a row (1 if the row is all zeros); infinite on NaN.
pub(crate) fn row_error(got: &[f32], want: &[f32]) -> f64 {
    let scale = want.iter().fold(0.0f64, |m, &w| m.max((w as f64).abs()));
    let scale = if scale > 0.0 { scale } else { 1.0 };
    let mut worst = 0.0f64;
    for (&g, &w) in got.iter().zip(want) {
        let error = (g as f64 - w as f64).abs() / scale;
        if error.is_nan() {
            return f64::INFINITY;
        }
        worst = worst.max(error);
    }
    worst
}

fn loss_error(got: f64, want: f64) -> f64 {
    let error = (got - want).abs() / want.abs().max(1.0);
    if error.is_nan() {
        f64::INFINITY
    } else {
        error
    }
}

impl Training {
    /// Every buffer written before it is timed, so page faults are not.
    pub fn new(rows: usize, cols: usize) -> Self {
        let x = uniform(rows, cols, 1, 10.0);
        let g = uniform(rows, cols, 2, 1.0);
        let labels = (0..rows)
            .map(|r| (mix(3 ^ mix(r as u64)) % cols as u64) as i64)
            .collect();
        let best = Softmax::new().with_parallelism(Parallelism::Auto);
        let mut p = vec![0.0f32; rows * cols];
        let mut l = vec![0.0f32; rows * cols];
        let logits = whole_rows(&x, cols);
        best.softmax_rows(logits, whole_rows_mut(&mut p, cols))
            .unwrap();
        best.log_softmax_rows(logits, whole_rows_mut(&mut l, cols))
            .unwrap();
        Self {
            rows,
            cols,
            x,
            p,
            l,
            g,
            labels,
            out: vec![f32::NAN; rows * cols],
            losses: vec![f32::NAN; rows],
        }
    }

    /// Puts an in-place pass's input into the output buffer; nothing otherwise.
    pub fn reset(&mut self, pass: Pass) {
        match pass {
            Pass::SoftmaxBackwardInPlace => self.out.copy_from_slice(&self.g),
            Pass::CrossEntropyGradInPlace => self.out.copy_from_slice(&self.x),
            _ => {}
        }
    }

    /// One call of `pass` on the whole batch (after `reset` for in-place
    /// passes); the loss for cross-entropy, else 0.
    pub fn call(
        &mut self,
        pass: Pass,
        softmax: &Softmax,
        cross_entropy: &CrossEntropy<'_>,
    ) -> Result<f32, softmax::Error> {
        let cols = self.cols;
        let out = RowsMut::contiguous(self.out.as_mut_slice(), cols)?;
        fn rows(v: &[f32], cols: usize) -> Result<Rows<'_, f32>, softmax::Error> {
            Rows::contiguous(v, cols)
        }
        let losses = Some(self.losses.as_mut_slice());
        let labels = self.labels.as_slice();
        let no_loss = |()| 0.0;
        match pass {
            Pass::Forward => softmax.softmax_rows(rows(&self.x, cols)?, out).map(no_loss),
            Pass::SoftmaxBackward => softmax
                .softmax_backward_rows(rows(&self.p, cols)?, rows(&self.g, cols)?, out)
                .map(no_loss),
            Pass::SoftmaxBackwardInPlace => softmax
                .softmax_backward_rows_in_place(rows(&self.p, cols)?, out)
                .map(no_loss),
            Pass::LogSoftmaxBackward => softmax
                .log_softmax_backward_rows(rows(&self.l, cols)?, rows(&self.g, cols)?, out)
                .map(no_loss),
            Pass::CrossEntropyGrad => {
                cross_entropy.loss_and_grad(rows(&self.x, cols)?, labels, out, losses)
            }
            Pass::CrossEntropyGradInPlace => {
                cross_entropy.loss_and_grad_in_place(out, labels, losses)
            }
            Pass::CrossEntropyLoss => cross_entropy.loss(rows(&self.x, cols)?, labels, losses),
        }
    }

    /// Rows compared with the scalar ISA: the first two and the last two.
    fn check_rows(&self) -> Vec<usize> {
        let mut rows: Vec<usize> = [0, 1, self.rows.saturating_sub(2), self.rows - 1]
            .into_iter()
            .filter(|&r| r < self.rows)
            .collect();
        rows.dedup();
        rows
    }

    /// The scalar ISA's output row (None for the loss alone) and row loss
    /// (None outside cross-entropy) of `pass` on row `r`. Cross-entropy's mean
    /// over the batch is the sum over one row divided by the row count.
    fn scalar_row(&self, pass: Pass, r: usize) -> (Option<Vec<f32>>, Option<f32>) {
        let cols = self.cols;
        let span = r * cols..(r + 1) * cols;
        let [x, p, l, g] = [&self.x, &self.p, &self.l, &self.g].map(|v| &v[span.clone()]);
        let mut out = vec![0.0f32; cols];
        let scalar = scalar_softmax();
        match pass {
            Pass::Forward => {
                scalar.softmax_rows(whole_rows(x, cols), whole_rows_mut(&mut out, cols))
            }
            Pass::SoftmaxBackward | Pass::SoftmaxBackwardInPlace => scalar.softmax_backward_rows(
                whole_rows(p, cols),
                whole_rows(g, cols),
                whole_rows_mut(&mut out, cols),
            ),
            Pass::LogSoftmaxBackward => scalar.log_softmax_backward_rows(
                whole_rows(l, cols),
                whole_rows(g, cols),
                whole_rows_mut(&mut out, cols),
            ),
            _ => {
                let ce = CrossEntropy::new()
                    .with_isa(Isa::Scalar)
                    .expect("the scalar ISA is always available")
                    .with_parallelism(Parallelism::Serial)
                    .with_reduction(Reduction::Sum);
                let labels = &self.labels[r..r + 1];
                let loss = match pass {
                    Pass::CrossEntropyLoss => ce.loss(whole_rows(x, cols), labels, None),
                    _ => ce.loss_and_grad(
                        whole_rows(x, cols),
                        labels,
                        whole_rows_mut(&mut out, cols),
                        None,
                    ),
                }
                .unwrap();
                out.iter_mut().for_each(|v| *v /= self.rows as f32);
                let out = pass.writes_output().then_some(out);
                return (out, Some(loss));
            }
        }
        .unwrap();
        (Some(out), None)
    }

    /// Runs `pass` once over an output and row losses poisoned with NaN, then
    /// checks that every output and row loss was written, that the returned
    /// loss is the mean of the row losses, and the check rows against the
    /// scalar ISA. Returns the largest error (see TRAINING_TOLERANCE),
    /// infinite if anything is NaN.
    pub fn check(
        &mut self,
        pass: Pass,
        softmax: &Softmax,
        cross_entropy: &CrossEntropy<'_>,
    ) -> f64 {
        self.out.fill(f32::NAN);
        self.losses.fill(f32::NAN);
        self.reset(pass);
        let loss = self
            .call(pass, softmax, cross_entropy)
            .unwrap_or_else(|e| panic!("{} refused a valid call: {e}", pass.name()));
        let unwritten = |v: &[f32]| v.par_iter().any(|v| v.is_nan());
        if pass.writes_output() && unwritten(&self.out) {
            return f64::INFINITY;
        }
        let mut worst = 0.0f64;
        if pass.is_cross_entropy() {
            if unwritten(&self.losses) {
                return f64::INFINITY;
            }
            let sum: f64 = self.losses.iter().map(|&l| l as f64).sum();
            worst = loss_error(loss as f64, sum / self.rows as f64);
        }
        for r in self.check_rows() {
            let (want, want_loss) = self.scalar_row(pass, r);
            if let Some(want) = want {
                let got = &self.out[r * self.cols..(r + 1) * self.cols];
                worst = worst.max(row_error(got, &want));
            }
            if let Some(want_loss) = want_loss {
                worst = worst.max(loss_error(self.losses[r] as f64, want_loss as f64));
            }
        }
        worst
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn training_passes_agree_with_the_scalar_isa() {
        // Rows of 37: a masked tail on every ISA; 3 rows: the check rows overlap.
        let mut work = Training::new(3, 37);
        for isa in Isa::available() {
            let softmax = Softmax::new().with_isa(isa).unwrap();
            let cross_entropy = CrossEntropy::new().with_isa(isa).unwrap();
            for pass in Pass::ALL {
                let error = work.check(pass, &softmax, &cross_entropy);
                assert!(
                    error <= TRAINING_TOLERANCE,
                    "{} on {isa}: {error:e}",
                    pass.name()
                );
            }
        }
    }
}
