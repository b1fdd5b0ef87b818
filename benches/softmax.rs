//! Criterion benches: every public operation × forced ISA × algorithm × row
//! length, each group with two yardsticks beside the crate:
//! - `naive`: the operation as first written (plain loops, libm `f32::exp`), and
//! - `copy-scale`: y = c·x on the best ISA, the same bytes with no arithmetic,
//!   i.e. what the caches or the memory bus allow.
//!
//! Row lengths 128, 1024 and 32000 are single rows that stay in cache. The
//! out-of-cache case is a 512×32000 batch (64 MiB in, 64 MiB out): each
//! iteration takes the next block of rows, walking through the whole batch, so
//! every iteration meets memory that 128 MiB of other traffic has evicted.
//! Blocks rather than the whole batch keep the scalar ISA (tens of ms per
//! block) inside the time budget; `threads/` times whole batches.
//!
//! Every bench checks its answer once against the crate's scalar ISA
//! (three-pass) before it is timed. Groups report elements/s; the `bytes/`
//! groups repeat the `auto` rows with bytes/s (read + written once).
//!
//! `cargo bench --bench softmax -- softmax/1024` runs one group.

use criterion::{criterion_group, criterion_main, BenchmarkGroup, Criterion, Throughput};
use criterion::{measurement::WallTime, SamplingMode};
use softmax::{Algorithm, Isa, Parallelism, Rows, RowsMut, Softmax};
use std::hint::black_box;
use std::time::Duration;

#[allow(dead_code)]
#[path = "../src/bin/report/baselines.rs"]
mod baselines;
use baselines::*;

const IN_CACHE_COLS: [usize; 3] = [128, 1024, 32000];
/// 64 MiB of logits and 64 MiB of output: beyond any last-level cache this crate targets.
const OUT_OF_CACHE: (usize, usize) = (512, 32000);
/// Rows per iteration of the out-of-cache benches (1 MiB in, 1 MiB out).
const BLOCK_ROWS: usize = 8;
const ALGORITHMS: [Algorithm; 4] = [
    Algorithm::ThreePass,
    Algorithm::TwoPass,
    Algorithm::Online,
    Algorithm::Auto,
];
/// |Δ| ≤ TOLERANCE · max(1, |reference|) for the crate on every ISA.
const TOLERANCE: f32 = 1e-6;
/// The naive loops sum in f32, whose error grows with the row length.
const NAIVE_TOLERANCE: f32 = 1e-4;
/// Negation: exact, and repeating it in place never drifts into subnormals.
const SCALE: f32 = -1.0;

#[derive(Clone, Copy, Debug, PartialEq)]
enum Operation {
    Softmax,
    SoftmaxInPlace,
    LogSoftmax,
    LogSumExp,
}

impl Operation {
    const ALL: [Operation; 4] = [
        Operation::Softmax,
        Operation::SoftmaxInPlace,
        Operation::LogSoftmax,
        Operation::LogSumExp,
    ];

    fn name(self) -> &'static str {
        match self {
            Operation::Softmax => "softmax",
            Operation::SoftmaxInPlace => "softmax_in_place",
            Operation::LogSoftmax => "log_softmax",
            Operation::LogSumExp => "logsumexp",
        }
    }

    /// Bytes read and written once per element (logsumexp only reads).
    fn bytes_per_element(self) -> u64 {
        match self {
            Operation::LogSumExp => 4,
            _ => 8,
        }
    }
}

#[derive(Clone, Copy, Debug)]
enum Subject {
    Naive,
    CopyScale,
    Crate(Isa, Algorithm),
}

impl Subject {
    fn name(self) -> String {
        match self {
            Subject::Naive => "naive".into(),
            Subject::CopyScale => format!("copy-scale/{}", Isa::detect()),
            Subject::Crate(isa, algorithm) => format!("{isa}/{}", algorithm.name()),
        }
    }
}

// ------------------------------------------------------------------ yardsticks

// ------------------------------------------------------------------ workloads

/// Logits, an output buffer and one logsumexp per row. In-place benches work
/// on `y`, filled with the logits first.
struct Workload {
    rows: usize,
    cols: usize,
    block_rows: usize,
    x: Vec<f32>,
    y: Vec<f32>,
    lse: Vec<f32>,
    next_block: usize,
}

impl Workload {
    fn new(rows: usize, cols: usize, block_rows: usize) -> Self {
        // xorshift64*: reproducible logits uniform in ±10, no dependency.
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let x: Vec<f32> = (0..rows * cols)
            .map(|_| {
                state ^= state >> 12;
                state ^= state << 25;
                state ^= state >> 27;
                let bits = state.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 40;
                (bits as f32 / (1u32 << 24) as f32 * 2.0 - 1.0) * 10.0
            })
            .collect();
        Self {
            rows,
            cols,
            block_rows,
            y: x.clone(),
            x,
            lse: vec![0.0; rows],
            next_block: 0,
        }
    }

    fn label(&self) -> String {
        match self.rows {
            1 => format!("{}", self.cols),
            rows => format!("{rows}x{}-blocks-of-{}", self.cols, self.block_rows),
        }
    }

    fn elements_per_call(&self) -> u64 {
        (self.block_rows * self.cols) as u64
    }

    /// Runs `subject` on the next block of rows (the first block when `first`).
    fn call(&mut self, op: Operation, subject: Subject, options: &Softmax, first: bool) {
        let blocks = self.rows / self.block_rows;
        let block = if first { 0 } else { self.next_block % blocks };
        self.next_block = block + 1;
        let (cols, count) = (self.cols, self.block_rows);
        let span = block * count * cols..(block + 1) * count * cols;
        let x = black_box(&self.x[span.clone()]);
        let y = &mut self.y[span];
        let lse = &mut self.lse[block * count..(block + 1) * count];
        match subject {
            Subject::Naive => run_naive(op, x, y, lse, cols),
            Subject::CopyScale => {
                let x = (op != Operation::SoftmaxInPlace).then_some(x);
                copy_scale(SCALE, x, y);
            }
            Subject::Crate(..) => run_crate(op, options, x, y, lse, cols).unwrap(),
        }
        black_box((&self.y, &self.lse));
    }
}

fn run_naive(op: Operation, x: &[f32], y: &mut [f32], lse: &mut [f32], cols: usize) {
    let rows = x.chunks_exact(cols).zip(y.chunks_exact_mut(cols));
    for ((x, y), lse) in rows.zip(lse) {
        match op {
            Operation::Softmax => naive_softmax(x, y),
            Operation::SoftmaxInPlace => naive_softmax_in_place(y),
            Operation::LogSoftmax => naive_log_softmax(x, y),
            Operation::LogSumExp => *lse = naive_logsumexp(x),
        }
    }
}

/// A single row goes through the row API, a block through the batch API.
fn run_crate(
    op: Operation,
    sm: &Softmax,
    x: &[f32],
    y: &mut [f32],
    lse: &mut [f32],
    cols: usize,
) -> Result<(), softmax::Error> {
    if x.len() == cols {
        return match op {
            Operation::Softmax => sm.softmax(x, y),
            Operation::SoftmaxInPlace => sm.softmax_in_place(y),
            Operation::LogSoftmax => sm.log_softmax(x, y),
            Operation::LogSumExp => sm.logsumexp(x).map(|v| lse[0] = v),
        };
    }
    let rows = Rows::contiguous(x, cols)?;
    match op {
        Operation::Softmax => sm.softmax_rows(rows, RowsMut::contiguous(y, cols)?),
        Operation::SoftmaxInPlace => sm.softmax_rows_in_place(RowsMut::contiguous(y, cols)?),
        Operation::LogSoftmax => sm.log_softmax_rows(rows, RowsMut::contiguous(y, cols)?),
        Operation::LogSumExp => sm.logsumexp_rows(rows, lse),
    }
}

fn options(subject: Subject, parallelism: Parallelism) -> Softmax {
    let (isa, algorithm) = match subject {
        Subject::Crate(isa, algorithm) => (isa, algorithm),
        _ => (Isa::detect(), Algorithm::Auto),
    };
    Softmax::new()
        .isa(isa)
        .expect("only available ISAs are benched")
        .algorithm(algorithm)
        .parallelism(parallelism)
}

/// Runs `subject` once on the first block from fresh logits and compares it
/// with the scalar ISA; panics (naming the ISA) if it is off.
fn check(work: &mut Workload, op: Operation, subject: Subject, options: &Softmax) {
    let span = 0..work.block_rows * work.cols;
    work.y[span.clone()].copy_from_slice(&work.x[span.clone()]);
    work.call(op, subject, options, true);

    let scalar = Softmax::new()
        .isa(Isa::Scalar)
        .unwrap()
        .algorithm(Algorithm::ThreePass)
        .parallelism(Parallelism::Serial);
    let x = &work.x[span.clone()];
    let mut want = x.to_vec();
    let mut want_lse = vec![0.0; work.block_rows];
    let (got, want): (&[f32], &[f32]) = match subject {
        Subject::CopyScale => {
            want.iter_mut().for_each(|v| *v *= SCALE);
            (&work.y[span], &want)
        }
        _ if op == Operation::LogSumExp => {
            run_crate(op, &scalar, x, &mut want, &mut want_lse, work.cols).unwrap();
            (&work.lse[..work.block_rows], &want_lse)
        }
        _ => {
            run_crate(op, &scalar, x, &mut want, &mut want_lse, work.cols).unwrap();
            (&work.y[span], &want)
        }
    };
    let tolerance = match subject {
        Subject::Naive => NAIVE_TOLERANCE,
        Subject::CopyScale => 0.0,
        Subject::Crate(..) => TOLERANCE,
    };
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let error = (g - w).abs() / w.abs().max(1.0);
        assert!(
            error <= tolerance,
            "{} {} on {}: element {i} is {g}, the scalar ISA gives {w} (|Δ| {error:e} > {tolerance:e})",
            op.name(),
            subject.name(),
            work.label()
        );
    }
    // In-place benches start from logits again.
    if op == Operation::SoftmaxInPlace {
        work.y.copy_from_slice(&work.x);
    }
}

fn subjects() -> Vec<Subject> {
    let mut subjects = vec![Subject::Naive, Subject::CopyScale];
    for isa in Isa::available() {
        subjects.extend(ALGORITHMS.map(|a| Subject::Crate(isa, a)));
    }
    subjects
}

fn bench_subject(
    group: &mut BenchmarkGroup<'_, WallTime>,
    work: &mut Workload,
    op: Operation,
    subject: Subject,
) {
    let options = options(subject, Parallelism::Serial);
    check(work, op, subject, &options);
    group.bench_function(subject.name(), |b| {
        b.iter(|| work.call(op, subject, &options, false))
    });
}

fn workloads() -> Vec<Workload> {
    let mut all: Vec<Workload> = IN_CACHE_COLS
        .iter()
        .map(|&cols| Workload::new(1, cols, 1))
        .collect();
    all.push(Workload::new(OUT_OF_CACHE.0, OUT_OF_CACHE.1, BLOCK_ROWS));
    all
}

/// Every operation × every available ISA × every algorithm × every row length, in elements/s.
fn by_elements(c: &mut Criterion) {
    for mut work in workloads() {
        for op in Operation::ALL {
            let mut group = c.benchmark_group(format!("{}/{}", op.name(), work.label()));
            group.throughput(Throughput::Elements(work.elements_per_call()));
            if work.rows > 1 {
                // Blocks of the scalar ISA take tens of ms: fixed iterations per sample.
                group.sampling_mode(SamplingMode::Flat);
            }
            for subject in subjects() {
                bench_subject(&mut group, &mut work, op, subject);
            }
            group.finish();
        }
    }
}

/// Softmax with `Algorithm::Auto` on every ISA, in bytes/s (8 per element).
fn by_bytes(c: &mut Criterion) {
    let op = Operation::Softmax;
    for mut work in workloads() {
        let mut group = c.benchmark_group(format!("bytes/{}/{}", op.name(), work.label()));
        group.throughput(Throughput::Bytes(
            work.elements_per_call() * op.bytes_per_element(),
        ));
        if work.rows > 1 {
            group.sampling_mode(SamplingMode::Flat);
        }
        let mut subjects = vec![Subject::Naive, Subject::CopyScale];
        subjects.extend(
            Isa::available()
                .into_iter()
                .map(|isa| Subject::Crate(isa, Algorithm::Auto)),
        );
        for subject in subjects {
            bench_subject(&mut group, &mut work, op, subject);
        }
        group.finish();
    }
}

/// Whole 512×32000 batches, best ISA, `Algorithm::Auto`: one thread against
/// rayon's global pool (`Parallelism::Auto`), beside the serial yardsticks.
fn by_threads(c: &mut Criterion) {
    let (rows, cols) = OUT_OF_CACHE;
    let mut work = Workload::new(rows, cols, rows);
    let op = Operation::Softmax;
    let mut group = c.benchmark_group(format!("threads/{}/{rows}x{cols}", op.name()));
    group.throughput(Throughput::Elements(work.elements_per_call()));
    group.sampling_mode(SamplingMode::Flat);
    group.sample_size(10);
    for subject in [Subject::Naive, Subject::CopyScale] {
        bench_subject(&mut group, &mut work, op, subject);
    }
    let best = Subject::Crate(Isa::detect(), Algorithm::Auto);
    let threads = rayon::current_num_threads();
    for (name, parallelism) in [
        ("1-thread".to_string(), Parallelism::Serial),
        (format!("{threads}-threads"), Parallelism::Auto),
    ] {
        let options = options(best, parallelism);
        check(&mut work, op, best, &options);
        let id = format!("{}/{name}", best.name());
        group.bench_function(id, |b| b.iter(|| work.call(op, best, &options, false)));
    }
    group.finish();
}

fn config() -> Criterion {
    // Short: ~180 benches; the suite should finish in a few minutes.
    Criterion::default()
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1))
        .sample_size(20)
}

criterion_group! {
    name = benches;
    config = config();
    targets = by_elements, by_bytes, by_threads
}
criterion_main!(benches);
