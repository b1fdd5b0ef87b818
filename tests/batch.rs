//! Batches of rows, on every available ISA and algorithm:
//!
//! - results are bitwise identical whatever the thread count (serial, rayon
//!   pools of 1, 2 and 3 threads, and the global pool), and on a pool whose
//!   workers are all busy (the calling thread then runs every share);
//! - each batch row equals the single-row call bitwise;
//! - in place equals out of place bitwise;
//! - the padding between rows (stride > cols) and past the last row is never
//!   written, and an out-of-place input is never written.

use crate::common;

use common::inputs::SENTINEL;
use common::{Rng, Values, ALGORITHMS};
use softmax::{Algorithm, Isa, Parallelism, Rows, RowsMut, Softmax};
use std::sync::Arc;

/// Operations on a batch.
#[derive(Clone, Copy, Debug)]
enum BatchOp {
    Softmax,
    SoftmaxInPlace,
    LogSoftmax,
    LogSoftmaxInPlace,
    LogSumExp,
}

const BATCH_OPS: [BatchOp; 5] = [
    BatchOp::Softmax,
    BatchOp::SoftmaxInPlace,
    BatchOp::LogSoftmax,
    BatchOp::LogSoftmaxInPlace,
    BatchOp::LogSumExp,
];

/// A batch: `rows` rows of `cols` values, `stride` apart, with sentinel padding
/// between rows and `tail` sentinels after the last row.
#[derive(Clone)]
struct Batch {
    data: Vec<f32>,
    rows: usize,
    cols: usize,
    stride: usize,
}

impl Batch {
    /// Random rows, with a few special ones (NaN, +inf, all −inf, partly −inf,
    /// huge) mixed in, so that a special row cannot leak into its neighbours.
    fn new(rows: usize, cols: usize, stride: usize, tail: usize, seed: u64) -> Self {
        let len = if rows == 0 {
            0
        } else {
            (rows - 1) * stride + cols
        } + tail;
        let mut data = vec![SENTINEL; len];
        let mut rng = Rng::new(seed);
        for r in 0..rows {
            let values = match r % 11 {
                3 => Values::Masked30,
                5 => Values::Huge,
                7 => Values::NearCutoff,
                _ => Values::Normal30,
            };
            let mut row = values.generate(&mut rng, cols, 1.0);
            if cols > 0 {
                match r % 13 {
                    4 => row[rng.below(cols)] = f32::NAN,
                    6 => row[rng.below(cols)] = f32::INFINITY,
                    8 => row.fill(f32::NEG_INFINITY),
                    _ => {}
                }
            }
            data[r * stride..r * stride + cols].copy_from_slice(&row);
        }
        Batch {
            data,
            rows,
            cols,
            stride,
        }
    }

    fn row(&self, r: usize) -> &[f32] {
        &self.data[r * self.stride..r * self.stride + self.cols]
    }

    fn view(&self) -> Rows<'_, f32> {
        Rows::new(&self.data, self.rows, self.cols, self.stride).unwrap()
    }

    /// Whether `i` lies inside a row (not padding, not tail).
    fn in_row(&self, i: usize) -> bool {
        i / self.stride < self.rows && i % self.stride < self.cols
    }
}

/// Runs `op` on `batch` with `sm`; returns the whole output buffer (padding
/// included), or the logsumexp values followed by two guard values.
fn run(sm: &Softmax, op: BatchOp, batch: &Batch) -> Vec<f32> {
    let (rows, cols, stride) = (batch.rows, batch.cols, batch.stride);
    let mut out = match op {
        BatchOp::SoftmaxInPlace | BatchOp::LogSoftmaxInPlace => batch.data.clone(),
        BatchOp::LogSumExp => vec![SENTINEL; rows + 2],
        _ => vec![SENTINEL; batch.data.len()],
    };
    fn view(out: &mut [f32], rows: usize, cols: usize, stride: usize) -> RowsMut<'_, f32> {
        RowsMut::new(out, rows, cols, stride).unwrap()
    }
    match op {
        BatchOp::Softmax => sm.softmax_rows(batch.view(), view(&mut out, rows, cols, stride)),
        BatchOp::SoftmaxInPlace => sm.softmax_rows_in_place(view(&mut out, rows, cols, stride)),
        BatchOp::LogSoftmax => {
            sm.log_softmax_rows(batch.view(), view(&mut out, rows, cols, stride))
        }
        BatchOp::LogSoftmaxInPlace => {
            sm.log_softmax_rows_in_place(view(&mut out, rows, cols, stride))
        }
        BatchOp::LogSumExp => sm.logsumexp_rows(batch.view(), &mut out),
    }
    .unwrap_or_else(|e| panic!("{op:?}: a valid batch call failed: {e}"));
    out
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

fn first_difference(a: &[f32], b: &[f32]) -> Option<usize> {
    (0..a.len().max(b.len()))
        .find(|&i| a.get(i).map(|v| v.to_bits()) != b.get(i).map(|v| v.to_bits()))
}

fn options(isa: Isa, algorithm: Algorithm) -> Softmax {
    Softmax::new()
        .with_isa(isa)
        .unwrap()
        .with_algorithm(algorithm)
}

fn pool(threads: usize) -> Arc<rayon::ThreadPool> {
    Arc::new(
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap(),
    )
}

#[test]
fn results_do_not_depend_on_the_thread_count() {
    // 600 × 1000 = 600 000 elements: over twice PARALLEL_MIN_ELEMENTS, many tasks.
    let batch = Batch::new(600, 1000, 1003, 5, 30);
    assert!(batch.rows * batch.cols >= 2 * softmax::PARALLEL_MIN_ELEMENTS);
    let pools = [pool(1), pool(2), pool(3)];
    common::for_each_isa("results_do_not_depend_on_the_thread_count", |isa| {
        for algorithm in ALGORITHMS {
            let sm = options(isa, algorithm);
            for op in BATCH_OPS {
                let serial = run(
                    &sm.clone().with_parallelism(Parallelism::Serial),
                    op,
                    &batch,
                );
                let mut variants: Vec<(String, Parallelism)> = pools
                    .iter()
                    .map(|p| {
                        (
                            format!("pool of {}", p.current_num_threads()),
                            Parallelism::Pool(p.clone()),
                        )
                    })
                    .collect();
                variants.push(("Auto (global pool)".into(), Parallelism::Auto));
                for (name, parallelism) in variants {
                    let got = run(&sm.clone().with_parallelism(parallelism), op, &batch);
                    if let Some(i) = first_difference(&serial, &got) {
                        panic!(
                            "[isa {isa} | algorithm {} | op {op:?}] 300×1000 stride 1003: {name} \
                             differs from Serial at buffer index {i} (row {}, col {}): {:e} \
                             ({:#010x}) vs {:e} ({:#010x})",
                            algorithm.name(),
                            i / batch.stride,
                            i % batch.stride,
                            got[i],
                            got[i].to_bits(),
                            serial[i],
                            serial[i].to_bits()
                        );
                    }
                }
            }
        }
    });
}

#[test]
fn a_batch_on_a_busy_pool_runs_on_the_calling_thread() {
    // Every worker of the pool waits at a gate, so no worker can take a
    // share and the calling thread runs them all. The call returns only once
    // a worker has run the task it offered (empty by then), so the gate
    // opens from another thread after a while.
    let batch = Batch::new(600, 1000, 1003, 5, 30);
    let busy = pool(2);
    let sm = Softmax::new().with_parallelism(Parallelism::Serial);
    let serial = run(&sm, BatchOp::Softmax, &batch);
    let gate = Arc::new((std::sync::Mutex::new(false), std::sync::Condvar::new()));
    for _ in 0..busy.current_num_threads() {
        let gate = gate.clone();
        busy.spawn(move || {
            let (open, opened) = &*gate;
            let mut open = open.lock().unwrap();
            while !*open {
                open = opened.wait(open).unwrap();
            }
        });
    }
    let opener = {
        let gate = gate.clone();
        std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(300));
            *gate.0.lock().unwrap() = true;
            gate.1.notify_all();
        })
    };
    let started = std::time::Instant::now();
    let got = run(
        &sm.clone().with_parallelism(Parallelism::Pool(busy)),
        BatchOp::Softmax,
        &batch,
    );
    let took = started.elapsed();
    opener.join().unwrap();
    assert!(
        first_difference(&serial, &got).is_none(),
        "a batch on a busy pool differs from Serial"
    );
    eprintln!("busy pool: the batch took {took:?} while the workers waited");
}

/// Shapes: single row, tiny, odd strides, rows across online blocks, and large.
const SHAPES: [(usize, usize, usize); 7] = [
    (1, 1, 1),
    (3, 5, 7),
    (7, 17, 32),
    (50, 193, 200),
    (2, 2049, 4200),
    (300, 1000, 1003),
    (40, 64, 64),
];

#[test]
fn batch_rows_equal_single_row_calls() {
    common::for_each_isa("batch_rows_equal_single_row_calls", |isa| {
        for algorithm in ALGORITHMS {
            for (rows, cols, stride) in SHAPES {
                let batch = Batch::new(rows, cols, stride, 3, 31);
                let sm = options(isa, algorithm);
                let ctx = |op: BatchOp, r: usize| {
                    format!(
                        "[isa {isa} | algorithm {} | op {op:?}] {rows}×{cols} stride {stride}, row {r}",
                        algorithm.name()
                    )
                };
                for op in BATCH_OPS {
                    let out = run(&sm, op, &batch);
                    for r in 0..rows {
                        let x = batch.row(r);
                        let single = match op {
                            BatchOp::LogSumExp => {
                                let want = sm.logsumexp(x).unwrap();
                                assert_eq!(
                                    out[r].to_bits(),
                                    want.to_bits(),
                                    "{}: {} vs single {want}",
                                    ctx(op, r),
                                    out[r]
                                );
                                continue;
                            }
                            BatchOp::Softmax | BatchOp::SoftmaxInPlace => {
                                let mut y = vec![0.0; cols];
                                sm.softmax(x, &mut y).unwrap();
                                y
                            }
                            BatchOp::LogSoftmax | BatchOp::LogSoftmaxInPlace => {
                                let mut y = vec![0.0; cols];
                                sm.log_softmax(x, &mut y).unwrap();
                                y
                            }
                        };
                        let got = &out[r * stride..r * stride + cols];
                        if let Some(i) = first_difference(got, &single) {
                            panic!(
                                "{}, col {i}: x = {:e}, batch {:e} ({:#010x}) vs single-row {:e} ({:#010x})",
                                ctx(op, r),
                                x[i],
                                got[i],
                                got[i].to_bits(),
                                single[i],
                                single[i].to_bits()
                            );
                        }
                    }
                }
            }
        }
    });
}

#[test]
fn in_place_equals_out_of_place() {
    common::for_each_isa("in_place_equals_out_of_place", |isa| {
        for algorithm in ALGORITHMS {
            for (rows, cols, stride) in SHAPES {
                let batch = Batch::new(rows, cols, stride, 0, 32);
                let sm = options(isa, algorithm);
                for (a, b) in [
                    (BatchOp::Softmax, BatchOp::SoftmaxInPlace),
                    (BatchOp::LogSoftmax, BatchOp::LogSoftmaxInPlace),
                ] {
                    let (out, inplace) = (run(&sm, a, &batch), run(&sm, b, &batch));
                    let diff = (0..out.len())
                        .filter(|&i| batch.in_row(i))
                        .find(|&i| out[i].to_bits() != inplace[i].to_bits());
                    if let Some(i) = diff {
                        panic!(
                            "[isa {isa} | algorithm {} | op {b:?}] {rows}×{cols} stride {stride}: \
                             row {} col {}: in place {:e} ({:#010x}) vs out of place {:e} ({:#010x})",
                            algorithm.name(),
                            i / stride,
                            i % stride,
                            inplace[i],
                            inplace[i].to_bits(),
                            out[i],
                            out[i].to_bits()
                        );
                    }
                }
            }
        }
    });
}

#[test]
fn padding_and_input_are_never_written() {
    common::for_each_isa("padding_and_input_are_never_written", |isa| {
        for algorithm in ALGORITHMS {
            for (rows, cols, stride) in SHAPES {
                let batch = Batch::new(rows, cols, stride, 9, 33);
                let before = bits(&batch.data);
                for parallelism in [Parallelism::Serial, Parallelism::Auto] {
                    let sm = options(isa, algorithm).with_parallelism(parallelism.clone());
                    for op in BATCH_OPS {
                        let out = run(&sm, op, &batch);
                        let ctx = format!(
                            "[isa {isa} | algorithm {} | op {op:?} | {parallelism:?}] {rows}×{cols} stride {stride}",
                            algorithm.name()
                        );
                        assert_eq!(bits(&batch.data), before, "{ctx}: the input was written");
                        let written = match op {
                            BatchOp::LogSumExp => {
                                (rows..out.len()).find(|&i| out[i].to_bits() != SENTINEL.to_bits())
                            }
                            _ => (0..out.len())
                                .filter(|&i| !batch.in_row(i))
                                .find(|&i| out[i].to_bits() != SENTINEL.to_bits()),
                        };
                        if let Some(i) = written {
                            panic!(
                                "{ctx}: wrote {:e} at buffer index {i} (row {}, col {}), outside every row",
                                out[i],
                                i / stride,
                                i % stride
                            );
                        }
                    }
                }
            }
        }
    });
}

/// Input and output with different strides (padded in, dense out).
#[test]
fn input_and_output_strides_may_differ() {
    common::for_each_isa("input_and_output_strides_may_differ", |isa| {
        let batch = Batch::new(20, 100, 131, 0, 34);
        for algorithm in ALGORITHMS {
            let sm = options(isa, algorithm);
            let mut dense = vec![0.0f32; 20 * 100];
            sm.softmax_rows(batch.view(), RowsMut::contiguous(&mut dense, 100).unwrap())
                .unwrap();
            for r in 0..20 {
                let mut single = vec![0.0f32; 100];
                sm.softmax(batch.row(r), &mut single).unwrap();
                assert_eq!(
                    bits(&dense[r * 100..(r + 1) * 100]),
                    bits(&single),
                    "[isa {isa} | algorithm {} | op softmax_rows] stride 131 → 100, row {r}",
                    algorithm.name()
                );
            }
        }
    });
}

#[test]
fn empty_batches() {
    common::for_each_isa("empty_batches", |isa| {
        for algorithm in ALGORITHMS {
            let sm = options(isa, algorithm);
            let ctx = format!("[isa {isa} | algorithm {}]", algorithm.name());
            let none: [f32; 0] = [];
            let mut out = [SENTINEL; 2];
            sm.logsumexp_rows(Rows::new(&none, 0, 5, 5).unwrap(), &mut out)
                .unwrap();
            assert_eq!(
                bits(&out),
                bits(&[SENTINEL; 2]),
                "{ctx}: zero rows wrote a logsumexp"
            );
            let mut y: [f32; 0] = [];
            sm.softmax_rows(
                Rows::contiguous(&none, 4).unwrap(),
                RowsMut::contiguous(&mut y, 4).unwrap(),
            )
            .unwrap_or_else(|e| panic!("{ctx}: zero rows: {e}"));
            sm.softmax_rows_in_place(RowsMut::contiguous(&mut y, 0).unwrap())
                .unwrap_or_else(|e| panic!("{ctx}: zero columns: {e}"));
        }
    });
}
