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
//! The `dtype/` groups compare element types: softmax, `Algorithm::Auto`, best
//! ISA, with f32, f16 and bf16 in and out, on single rows 1×1024 and 1×32000
//! and on whole 512×32000 batches with one thread and with rayon's global pool.
//! A half-precision batch is half the bytes, so it gets two buffer sets used
//! in turn: every iteration still meets memory 128 MiB of traffic has evicted.
//!
//! The `training/` groups time whole batches, best ISA, one thread and rayon's
//! global pool: the forward softmax (out of place, `Algorithm::Auto`) as the
//! yardstick, `softmax_backward_rows` (out of place and in place),
//! `log_softmax_backward_rows`, and `CrossEntropy` (mean over rows, class
//! labels): `loss_and_grad` into a gradient buffer, `loss_and_grad_in_place`
//! and `loss` alone, on 64×4096 (1 MiB per tensor, in cache) and 512×128256
//! (263 MB per tensor). In-place passes get their input copied back before
//! each call, outside the timed region. Each pass is checked first on the
//! first two and last two rows against the scalar ISA, within 1e-5 of the
//! row's largest |reference| (gradients are ~1/cols), and every output and
//! row loss must have been written.
//!
//! The `sampling/` group draws one token from one 128256-token f32 row of
//! LLM-like logits (N(0, 2²) with a few peaked tokens), best ISA, one thread:
//! the forward softmax of the row (out of place, `Algorithm::Auto`) as the
//! yardstick; `Sampler` with top-k 50 + top-p 0.9 at t = 0.8 by inverse CDF
//! and by Gumbel-max, with no truncation (both draws), min-p 0.05 alone and
//! top-p 0.9 alone; and the full-sort sampler engines write (sort every
//! (value, index) pair, top-k, softmax, top-p, one uniform). Each is checked
//! first: the softmax against the scalar ISA; each sampler's kept set
//! (`truncated_logprobs`) against a full sort in f64, and its draws inside it
//! and as frequent as its probabilities say; the full sort's kept set and
//! probabilities against the crate's (the library's `sampling` module).
//!
//! Every bench checks its answer once against the crate's scalar ISA
//! (three-pass) before it is timed; half-precision outputs, widened, against the
//! scalar ISA's f32 softmax of the widened input, within one unit in their last
//! place. Groups report elements/s; the `bytes/` groups repeat the `auto` rows
//! with bytes/s (read + written once).
//!
//! `cargo bench --bench softmax -- softmax/1024` runs one group;
//! `cargo bench --bench softmax -- training` the training ones;
//! `cargo bench --bench softmax -- sampling` the sampling one.

#![forbid(unsafe_code)]

use criterion::{criterion_group, criterion_main, BenchmarkGroup, Criterion, Throughput};
use criterion::{measurement::WallTime, SamplingMode};
use softmax::half::{bf16, f16};
use softmax::{Algorithm, CrossEntropy, Element, Isa, Parallelism, Rows, RowsMut, Softmax};
use softmax_report::baselines::*;
use softmax_report::sampling::{Case, SamplingRow, SAMPLING_COLS};
use softmax_report::training::{Pass, Training, TRAINING_TOLERANCE};
use softmax_report::workload::{
    logits, reference_softmax, scalar_reference, Dtype, Shape, Typed, LLM_BATCH,
    SMALL_TRAINING_SHAPE, TRAINING_SHAPE,
};
use std::hint::black_box;
use std::time::{Duration, Instant};

const IN_CACHE_COLS: [usize; 3] = [128, 1024, 32000];
/// 64 MiB of logits and 64 MiB of output: beyond any last-level cache this crate targets.
const OUT_OF_CACHE: Shape = LLM_BATCH;
/// Rows per iteration of the out-of-cache benches (1 MiB in, 1 MiB out).
const BLOCK_ROWS: usize = 8;
const ALGORITHMS: [Algorithm; 3] = [Algorithm::ThreePass, Algorithm::Online, Algorithm::Auto];
/// |Δ| ≤ TOLERANCE · max(1, |reference|) for the crate on every ISA.
const TOLERANCE: f32 = softmax_report::workload::TOLERANCE as f32;
/// The naive loops sum in f32, whose error grows with the row length.
const NAIVE_TOLERANCE: f32 = 1e-4;
/// Negation: exact, and repeating it in place never drifts into subnormals.
const SCALE: f32 = -1.0;
/// Single rows of the `dtype/` groups; the batch is OUT_OF_CACHE.
const DTYPE_COLS: [usize; 2] = [1024, 32000];
/// Batches of the `training/` groups: in cache, and 512 rows of a 128256-token
/// vocabulary (263 MB per f32 tensor).
const TRAINING_SHAPES: [Shape; 2] = [SMALL_TRAINING_SHAPE, TRAINING_SHAPE];

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
        let x = logits(rows * cols);
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
        .with_isa(isa)
        .expect("only available ISAs are benched")
        .with_algorithm(algorithm)
        .with_parallelism(parallelism)
}

/// Runs `subject` once on the first block from fresh logits and compares it
/// with the scalar ISA; panics (naming the ISA) if it is off.
fn check(work: &mut Workload, op: Operation, subject: Subject, options: &Softmax) {
    let span = 0..work.block_rows * work.cols;
    work.y[span.clone()].copy_from_slice(&work.x[span.clone()]);
    work.call(op, subject, options, true);

    let scalar = scalar_reference();
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
    all.push(Workload::new(
        OUT_OF_CACHE.rows,
        OUT_OF_CACHE.cols,
        BLOCK_ROWS,
    ));
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
    let Shape { rows, cols } = OUT_OF_CACHE;
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

// ------------------------------------------------------------------ element types

/// Logits stored as `T` (the same logits as `Workload`, rounded) and a `T`
/// output. Out of cache, as many buffer sets as make the bytes of the f32
/// batch, used in turn.
struct DtypeWork<T> {
    work: Typed<T, T>,
    next_set: usize,
}

impl<T: Element> DtypeWork<T> {
    fn new(shape: Shape) -> Self {
        let sets = match shape.rows {
            1 => 1,
            _ => size_of::<f32>().div_ceil(size_of::<T>()),
        };
        let work = Typed::new(shape, &logits(shape.elements()), sets);
        Self { work, next_set: 0 }
    }

    /// Softmax of the next buffer set (set 0 when `first`): a single row through
    /// the row API, a batch through the batch API.
    fn call(&mut self, options: &Softmax, first: bool) {
        let set = if first {
            0
        } else {
            self.next_set % self.work.sets()
        };
        self.next_set = set + 1;
        let Shape { rows, cols } = self.work.shape;
        let (x, y) = (black_box(&self.work.x[set]), &mut self.work.y[set]);
        match rows {
            1 => options.softmax(x, y),
            _ => options.softmax_rows(
                Rows::contiguous(x, cols).unwrap(),
                RowsMut::contiguous(y, cols).unwrap(),
            ),
        }
        .unwrap();
        black_box(&self.work.y);
    }

    /// Runs once on set 0 over NaN and compares, widened, with the scalar ISA's
    /// f32 softmax of the widened input, within one unit in the last place of
    /// `T`; panics (naming the type and ISA) if off.
    fn check(&mut self, options: &Softmax, name: &str) {
        self.work.y[0].fill(T::from_f32(f32::NAN));
        self.call(options, true);
        let dtype = Dtype::of::<T>();
        let Shape { rows, cols } = self.work.shape;
        let want = reference_softmax(dtype, &logits(rows * cols), cols);
        let error = self.work.error(rows, &want);
        assert!(
            error <= dtype.tolerance(),
            "softmax {name} ({}, auto) on {rows}x{cols}: max|Δ| {error:e} against the scalar ISA > {:e}",
            options.isa(),
            dtype.tolerance()
        );
    }
}

/// Benches `T` in `group` once per parallelism, subject `T` or `T/suffix`.
fn bench_dtype<T: Element>(
    group: &mut BenchmarkGroup<'_, WallTime>,
    shape: Shape,
    parallelisms: &[(String, Parallelism)],
) {
    let mut work = DtypeWork::<T>::new(shape);
    for (suffix, parallelism) in parallelisms {
        let options = options(
            Subject::Crate(Isa::detect(), Algorithm::Auto),
            parallelism.clone(),
        );
        let name = match suffix.as_str() {
            "" => T::NAME.to_string(),
            suffix => format!("{}/{suffix}", T::NAME),
        };
        work.check(&options, &name);
        group.bench_function(name, |b| b.iter(|| work.call(&options, false)));
    }
}

/// Softmax, best ISA, `Algorithm::Auto`, by element type (the same type in and
/// out): single rows in cache, then whole 512×32000 batches with one thread
/// and with rayon's global pool (`Parallelism::Auto`).
fn by_dtype(c: &mut Criterion) {
    for cols in DTYPE_COLS {
        let mut group = c.benchmark_group(format!("dtype/softmax/1x{cols}"));
        group.throughput(Throughput::Elements(cols as u64));
        let serial = [(String::new(), Parallelism::Serial)];
        let row = Shape::new(1, cols);
        bench_dtype::<f32>(&mut group, row, &serial);
        bench_dtype::<f16>(&mut group, row, &serial);
        bench_dtype::<bf16>(&mut group, row, &serial);
        group.finish();
    }
    let mut group = c.benchmark_group(format!("dtype/softmax/{OUT_OF_CACHE}"));
    group.throughput(Throughput::Elements(OUT_OF_CACHE.elements() as u64));
    group.sampling_mode(SamplingMode::Flat);
    group.sample_size(10);
    let threads = rayon::current_num_threads();
    let parallelisms = [
        ("1-thread".to_string(), Parallelism::Serial),
        (format!("{threads}-threads"), Parallelism::Auto),
    ];
    bench_dtype::<f32>(&mut group, OUT_OF_CACHE, &parallelisms);
    bench_dtype::<f16>(&mut group, OUT_OF_CACHE, &parallelisms);
    bench_dtype::<bf16>(&mut group, OUT_OF_CACHE, &parallelisms);
    group.finish();
}

// ------------------------------------------------------------------ training

/// Every training pass on whole batches, best ISA, one thread and rayon's
/// global pool; elements/s, so each pass reads against `softmax` in its group.
fn by_training(c: &mut Criterion) {
    let threads = rayon::current_num_threads();
    for Shape { rows, cols } in TRAINING_SHAPES {
        let mut work = Training::new(rows, cols);
        let mut group = c.benchmark_group(format!("training/{rows}x{cols}"));
        group.throughput(Throughput::Elements((rows * cols) as u64));
        if rows * cols > 1 << 20 {
            // About 0.1 s a call on one thread: fixed iterations per sample.
            group.sampling_mode(SamplingMode::Flat);
            group.sample_size(10);
        }
        for (name, parallelism) in [
            ("1-thread".to_string(), Parallelism::Serial),
            (format!("{threads}-threads"), Parallelism::Auto),
        ] {
            let best = Subject::Crate(Isa::detect(), Algorithm::Auto);
            let softmax = options(best, parallelism.clone());
            let cross_entropy = CrossEntropy::new()
                .with_isa(Isa::detect())
                .expect("the detected ISA is available")
                .with_parallelism(parallelism);
            for pass in Pass::ALL {
                let error = work.check(pass, &softmax, &cross_entropy);
                assert!(
                    error <= TRAINING_TOLERANCE,
                    "{} ({}) on {rows}x{cols}, {name}: |Δ| {error:e} against the scalar ISA > {TRAINING_TOLERANCE:e}",
                    pass.name(),
                    softmax.isa()
                );
                group.bench_function(format!("{}/{name}", pass.name()), |b| {
                    b.iter_custom(|iters| {
                        let mut timed = Duration::ZERO;
                        for _ in 0..iters {
                            work.reset(pass);
                            let start = Instant::now();
                            black_box(work.call(pass, &softmax, &cross_entropy).unwrap());
                            timed += start.elapsed();
                        }
                        timed
                    })
                });
            }
        }
        group.finish();
    }
}

// ------------------------------------------------------------------ sampling

/// One token from one 128256-token row, every sampling case beside the
/// forward softmax of the row and the full-sort sampler; each call draws at
/// the next step.
fn by_sampling(c: &mut Criterion) {
    let cols = SAMPLING_COLS;
    let mut work = SamplingRow::new(cols);
    let mut group = c.benchmark_group(format!("sampling/1x{cols}"));
    group.throughput(Throughput::Elements(cols as u64));
    for case in Case::ALL {
        let check = work.check(case);
        assert!(
            check.error <= case.tolerance(),
            "{} ({}) on 1x{cols}: {check:?}, more than {:e}",
            case.name(),
            Isa::detect(),
            case.tolerance()
        );
        group.bench_function(case.name(), |b| b.iter(|| black_box(work.call(case))));
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
    targets = by_elements, by_bytes, by_threads, by_dtype, by_training, by_sampling
}
criterion_main!(benches);
