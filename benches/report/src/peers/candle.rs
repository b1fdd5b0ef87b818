//! candle's CPU softmax, `candle_nn::ops::softmax_last_dim` (the report built
//! with `--features candle`): a scalar loop per row (libm's exp), rows spread
//! over rayon. Its output is a new tensor per call, as candle's API has it, so
//! that allocation is part of its time; its inputs are candle tensors holding
//! the same logits (candle owns its storage, so they cannot be the others'
//! buffers).

use crate::workload::Shape;
use candle_core::{Device, Tensor};
use rayon::ThreadPool;
use std::sync::Arc;

pub struct CandleSoftmax {
    /// One input per buffer set.
    x: Vec<Tensor>,
    /// candle's rayon loop runs in this pool (one thread for 1).
    pool: Arc<ThreadPool>,
}

impl CandleSoftmax {
    pub fn new(
        shape: Shape,
        logits: &[f32],
        sets: usize,
        pool: Option<Arc<ThreadPool>>,
    ) -> Result<Self, String> {
        let dims = (shape.rows, shape.cols);
        let x = (0..sets)
            .map(|_| Tensor::from_slice(logits, dims, &Device::Cpu))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| e.to_string())?;
        let pool = match pool {
            Some(pool) => pool,
            None => {
                let one = rayon::ThreadPoolBuilder::new().num_threads(1).build();
                Arc::new(one.map_err(|e| e.to_string())?)
            }
        };
        Ok(CandleSoftmax { x, pool })
    }

    /// One softmax of set `set`; its output.
    pub fn run(&self, set: usize) -> Tensor {
        let y = self
            .pool
            .install(|| candle_nn::ops::softmax_last_dim(&self.x[set]));
        y.unwrap_or_else(|e| panic!("candle refused a valid call: {e}"))
    }

    /// Set `set`'s softmax, flattened, for the check.
    pub fn output(&self, set: usize) -> Vec<f32> {
        let y = self.run(set).flatten_all().and_then(|y| y.to_vec1::<f32>());
        y.unwrap_or_else(|e| panic!("candle's output: {e}"))
    }
}
