//! The side-by-side table: this crate's softmax against ONNX Runtime's CPU
//! softmax, the naive loop and copy-scale, on the same buffers (ONNX
//! Runtime's bound tensors), alternated sample by sample.
//!
//! ```text
//! per (shape, threads)   ours: Softmax::softmax_rows, Algorithm::Auto, the detected ISA,
//!                        Parallelism::Serial (1) or a rayon pool of n;
//!                        ONNX Runtime: intra-op threads n, its defaults otherwise
//! round r = 1..R         each contestant in turn (the order rotating per round) runs
//!                        one sample: calls filling ~seconds/R, mean time per call;
//!                        a pause before each sample lets the previous contestant's
//!                        threads stop spinning: ONNX Runtime's intra-op workers spin
//!                        ~60 ms after a call (measured here), rayon's far less, and
//!                        on a small machine a spinning peer takes the cores of the
//!                        one being timed
//! ×ORT                   median over rounds of ORT's time / the contestant's time
//!                        in the same round (> 1: faster than ONNX Runtime)
//! check                  each contestant once on set 0, outputs poisoned first,
//!                        against the scalar ISA: |Δ| ≤ 1e-6·max(1,|ref|)
//! ```

#[cfg(feature = "candle")]
pub mod candle;
pub mod onnxruntime;

use crate::measure::{
    best_softmax, buffer_sets, fill_yardstick_ratios, out_of_cache, yardstick, Pool,
    COPY_SCALE_FACTOR,
};
use crate::record::{Op, Record, Section};
use crate::timing::{median, seconds_of, Measurement};
use crate::workload::{logits, max_error, reference_softmax, Dtype, Shape};
use onnxruntime::{OrtSoftmax, Runtime};
use softmax::{Isa, Rows, RowsMut, Softmax};
use std::time::Duration;

/// The pause before each sample: after ONNX Runtime's, and after the others'.
const QUIET_AFTER_ORT: Duration = Duration::from_millis(100);
const QUIET: Duration = Duration::from_millis(10);

/// The contestants, ONNX Runtime second so that ours is measured beside it
/// (candle too, when the report is built with `--features candle`).
pub fn contestants() -> Vec<Op> {
    let mut ops = vec![
        Op::Softmax(Isa::detect(), softmax::Algorithm::Auto),
        Op::OnnxRuntime,
        Op::Naive,
        Op::CopyScale,
    ];
    if cfg!(feature = "candle") {
        ops.push(Op::Candle);
    }
    ops
}

/// The contestants on one shape and thread count: their records, ×ORT filled in.
pub fn measure_peers(
    rt: &Runtime,
    shape: Shape,
    (threads, pool): Pool,
    llc_bytes: usize,
    (seconds, rounds): (f64, usize),
) -> Result<Vec<Record>, String> {
    let outside = out_of_cache(shape, llc_bytes);
    let sets = buffer_sets(outside, shape.elements() * 8, llc_bytes);
    let x = logits(shape.elements());
    let want = reference_softmax(Dtype::F32, &x, shape.cols);
    let mut ort = OrtSoftmax::new(rt, shape, threads, &x, sets).map_err(|e| e.to_string())?;
    let ours = best_softmax(&pool);
    let ops = contestants();
    #[cfg(feature = "candle")]
    let candle = candle::CandleSoftmax::new(shape, &x, sets, pool.clone())?;
    // `count` calls of `op`, walking through the sets from `*next`: their seconds.
    let calls_of = |op: Op, ort: &mut OrtSoftmax, count: usize, next: &mut usize| {
        if op == Op::OnnxRuntime {
            return seconds_of(|| {
                for _ in 0..count {
                    ort.run(*next % sets);
                    *next += 1;
                }
            });
        }
        #[cfg(feature = "candle")]
        if op == Op::Candle {
            return seconds_of(|| {
                for _ in 0..count {
                    drop(candle.run(*next % sets));
                    *next += 1;
                }
            });
        }
        let mut buffers = ort.buffers();
        seconds_of(|| {
            for _ in 0..count {
                let (x, y) = &mut buffers[*next % sets];
                run_here(op, &ours, x, y, shape.cols, pool.as_deref());
                *next += 1;
            }
        })
    };

    // The check, which is also each contestant's first call (the warm-up).
    let mut errors = Vec::new();
    let mut one_call = Vec::new();
    for &op in &ops {
        ort.buffers()[0].1.fill(f32::NAN);
        one_call.push(calls_of(op, &mut ort, 1, &mut 0));
        let (x, y) = &ort.buffers()[0];
        errors.push(match op {
            Op::CopyScale => {
                let scaled: Vec<f32> = x.iter().map(|&v| COPY_SCALE_FACTOR * v).collect();
                max_error(y, &scaled)
            }
            #[cfg(feature = "candle")]
            Op::Candle => max_error(&candle.output(0), &want),
            _ => max_error(y, &want),
        });
    }

    let calls: Vec<usize> = one_call
        .iter()
        .map(|&t| ((seconds / rounds as f64 / t) as usize).max(1))
        .collect();
    let mut per_call = vec![Vec::with_capacity(rounds); ops.len()];
    let mut next = 0usize;
    let mut previous = None;
    for round in 0..rounds {
        for turn in 0..ops.len() {
            let c = (round + turn) % ops.len();
            std::thread::sleep(match previous {
                Some(Op::OnnxRuntime) => QUIET_AFTER_ORT,
                _ => QUIET,
            });
            previous = Some(ops[c]);
            let sample = calls_of(ops[c], &mut ort, calls[c], &mut next);
            per_call[c].push(sample / calls[c] as f64);
        }
    }

    let ort_index = ops.iter().position(|&op| op == Op::OnnxRuntime).unwrap();
    let mut records: Vec<Record> = ops
        .iter()
        .enumerate()
        .map(|(c, &op)| {
            let mut ratios: Vec<f64> = (0..rounds)
                .map(|r| per_call[ort_index][r] / per_call[c][r])
                .collect();
            let m = Measurement {
                block_rows: shape.rows,
                error: errors[c],
                seconds_per_call: median(&mut per_call[c].clone()),
                samples: rounds,
                calls_per_sample: calls[c],
            };
            Record {
                out_of_cache: outside,
                buffer_sets: sets,
                vs_ort: median(&mut ratios),
                ..Record::new(Section::Peers, shape, op, threads, m)
            }
        })
        .collect();
    fill_yardstick_ratios(&mut records);
    Ok(records)
}

/// One call of a contestant other than ONNX Runtime on the whole batch.
fn run_here(
    op: Op,
    ours: &Softmax,
    x: &[f32],
    y: &mut [f32],
    cols: usize,
    pool: Option<&rayon::ThreadPool>,
) {
    match op {
        Op::Softmax(..) => {
            let result = ours.softmax_rows(
                Rows::contiguous(x, cols).expect("whole rows"),
                RowsMut::contiguous(y, cols).expect("whole rows"),
            );
            result.unwrap_or_else(|e| panic!("softmax refused a valid call: {e}"));
        }
        _ => yardstick(op, x, y, cols, pool),
    }
}
