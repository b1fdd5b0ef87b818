//! The report's measurements, table by table: the configurations of each, the
//! buffers they run on, each checked once and timed, and the ratios against
//! the yardsticks measured beside them.

use crate::attention::{Attention, Variant};
use crate::baselines::{copy_scale, naive_softmax};
use crate::record::{Op, Record, Section};
use crate::sampling::{self, Case, SamplingRow};
use crate::timing::{
    measure, measure_whole_calls, measure_whole_calls_alternated, seconds_of, Measurement, Slot,
    Timed,
};
use crate::training::{Pass, Training};
use crate::workload::{
    logits, max_error, reference_softmax, scalar_reference, Dtype, Pair, Shape, Typed,
};
use rayon::ThreadPool;
use softmax::half::{bf16, f16};
use softmax::{Algorithm, CrossEntropy, Element, Isa, Parallelism, Rows, RowsMut, Softmax};
use std::sync::Arc;

/// A thread count and its pool (none for 1: `Parallelism::Serial`).
pub type Pool = (usize, Option<Arc<ThreadPool>>);

pub(crate) const COPY_SCALE_FACTOR: f32 = 0.75;

/// The operations measured for one (shape, thread count), yardsticks first.
pub fn ops(isas: &[Isa], algorithms: &[Algorithm]) -> Vec<Op> {
    let mut ops = vec![Op::Naive, Op::CopyScale];
    for &isa in isas {
        ops.extend(algorithms.iter().map(|&a| Op::Softmax(isa, a)));
        if algorithms.contains(&Algorithm::Auto) {
            ops.push(Op::LogSoftmax(isa, Algorithm::Auto));
            ops.push(Op::LogSumExp(isa, Algorithm::Auto));
        }
    }
    ops
}

/// The crate runs batches this small on the calling thread whatever the pool,
/// so a multi-thread measurement would only repeat the 1-thread one.
fn runs_serially(shape: Shape) -> bool {
    shape.rows < 2 || shape.elements() < softmax::PARALLEL_MIN_ELEMENTS
}

/// The thread counts of `threads` that `shape` is measured with.
pub fn thread_counts(threads: &[usize], shape: Shape) -> Vec<usize> {
    let serial = runs_serially(shape);
    threads
        .iter()
        .copied()
        .filter(|&t| t == 1 || !serial)
        .collect()
}

/// 1 thread: `Parallelism::Serial`; n: the pool of n threads.
fn parallelism(pool: &Option<Arc<ThreadPool>>) -> Parallelism {
    match pool {
        Some(pool) => Parallelism::Pool(pool.clone()),
        None => Parallelism::Serial,
    }
}

/// The detected ISA, `Algorithm::Auto`, on `pool`.
pub(crate) fn best_softmax(pool: &Option<Arc<ThreadPool>>) -> Softmax {
    Softmax::new()
        .with_isa(Isa::detect())
        .expect("the detected ISA is available")
        .with_algorithm(Algorithm::Auto)
        .with_parallelism(parallelism(pool))
}

/// One call touches x and y, f32 each. Over half the LLC does not stay resident
/// (other data, associativity, AMD's victim L3), so treat it as memory.
pub fn out_of_cache(shape: Shape, llc_bytes: usize) -> bool {
    shape.elements() * 8 > llc_bytes / 2
}

/// Out of cache, rotate through sets totalling ≥ 2 × LLC so a set is evicted
/// before it comes round again: more sets when the element types are narrower.
pub(crate) fn buffer_sets(out_of_cache: bool, footprint: usize, llc_bytes: usize) -> usize {
    match out_of_cache {
        true => (2 * llc_bytes).div_ceil(footprint).max(1),
        false => 1,
    }
}

// ---------------------------------------------------------------- the f32 table

/// Runs a yardstick over whole rows, on one thread or shared like the crate
/// shares a batch: on a pool of T threads, the calling thread takes one of T
/// equal parts (whole rows) and T − 1 of the pool's workers the others.
pub(crate) fn yardstick(op: Op, x: &[f32], y: &mut [f32], cols: usize, pool: Option<&ThreadPool>) {
    let block = |x: &[f32], y: &mut [f32]| match op {
        Op::Naive => x
            .chunks_exact(cols)
            .zip(y.chunks_exact_mut(cols))
            .for_each(|(x, y)| naive_softmax(x, y)),
        _ => copy_scale(COPY_SCALE_FACTOR, Some(x), y),
    };
    match pool {
        None => block(x, y),
        Some(pool) => {
            let rows = x.len() / cols;
            let part = rows.div_ceil(pool.current_num_threads()).max(1) * cols;
            let mut parts = x.chunks(part).zip(y.chunks_mut(part));
            let first = parts.next();
            pool.in_place_scope(|s| {
                for (x, y) in parts {
                    s.spawn(move |_| block(x, y));
                }
                if let Some((x, y)) = first {
                    block(x, y);
                }
            });
        }
    }
}

/// f32 inputs and outputs for one shape. Out-of-cache shapes get several
/// identical buffer sets, used in turn, so that every call meets cold memory.
pub struct Workload {
    pub shape: Shape,
    x: Vec<Vec<f32>>,
    y: Vec<Vec<f32>>,
    lse: Vec<Vec<f32>>,
    pub out_of_cache: bool,
}

impl Workload {
    pub fn new(shape: Shape, llc_bytes: usize) -> Self {
        let out_of_cache = out_of_cache(shape, llc_bytes);
        let sets = buffer_sets(out_of_cache, shape.elements() * 8, llc_bytes);
        let logits = logits(shape.elements());
        // Written, not just allocated, so page faults are not timed.
        let y = (0..sets)
            .map(|_| vec![f32::NAN; shape.elements()])
            .collect();
        Self {
            shape,
            x: vec![logits; sets],
            y,
            lse: vec![vec![f32::NAN; shape.rows]; sets],
            out_of_cache,
        }
    }

    pub fn sets(&self) -> usize {
        self.x.len()
    }

    /// One call of `op` on `count` rows from `at`.
    fn run(
        &mut self,
        op: Op,
        softmax: &Softmax,
        at: Slot,
        count: usize,
        pool: Option<&ThreadPool>,
    ) {
        let cols = self.shape.cols;
        let elements = at.row * cols..(at.row + count) * cols;
        let x = &self.x[at.set][elements.clone()];
        let y = &mut self.y[at.set][elements];
        let lse = &mut self.lse[at.set][at.row..at.row + count];
        let rows = || Rows::contiguous(x, cols).expect("whole rows");
        let result = match op {
            Op::Naive | Op::CopyScale => {
                yardstick(op, x, y, cols, pool);
                Ok(())
            }
            Op::Softmax(..) => softmax.softmax_rows(rows(), RowsMut::contiguous(y, cols).unwrap()),
            Op::LogSoftmax(..) => {
                softmax.log_softmax_rows(rows(), RowsMut::contiguous(y, cols).unwrap())
            }
            Op::LogSumExp(..) => softmax.logsumexp_rows(rows(), lse),
            Op::Training(_) | Op::Sampling(_) | Op::Attention(_) | Op::OnnxRuntime | Op::Candle => {
                unreachable!("those tables have their own workloads")
            }
        };
        result.unwrap_or_else(|e| panic!("{} refused a valid call: {e}", op.name()));
    }
}

/// The crate's scalar ISA (three-pass, one thread) on a workload's logits.
pub struct Reference {
    softmax: Vec<f32>,
    log_softmax: Vec<f32>,
    logsumexp: Vec<f32>,
}

impl Reference {
    pub fn new(work: &Workload) -> Self {
        let scalar = scalar_reference();
        let cols = work.shape.cols;
        let x = || Rows::contiguous(work.x[0].as_slice(), cols).unwrap();
        let mut softmax = vec![0.0; work.shape.elements()];
        let mut log_softmax = vec![0.0; work.shape.elements()];
        let mut logsumexp = vec![0.0; work.shape.rows];
        scalar
            .softmax_rows(x(), RowsMut::contiguous(&mut softmax, cols).unwrap())
            .unwrap();
        scalar
            .log_softmax_rows(x(), RowsMut::contiguous(&mut log_softmax, cols).unwrap())
            .unwrap();
        scalar.logsumexp_rows(x(), &mut logsumexp).unwrap();
        Self {
            softmax,
            log_softmax,
            logsumexp,
        }
    }
}

/// An op of the f32 table on its workload.
struct OpRun<'a> {
    work: &'a mut Workload,
    reference: &'a Reference,
    op: Op,
    options: &'a Softmax,
    pool: Option<&'a ThreadPool>,
}

impl Timed for OpRun<'_> {
    fn shape(&self) -> Shape {
        self.work.shape
    }

    fn sets(&self) -> usize {
        self.work.sets()
    }

    fn run(&mut self, at: Slot, count: usize) {
        self.work.run(self.op, self.options, at, count, self.pool)
    }

    fn checked_call(&mut self, count: usize) -> (f64, f64) {
        let (op, reference) = (self.op, self.reference);
        let work = &mut *self.work;
        let elements = 0..count * work.shape.cols;
        work.y[0][elements.clone()].fill(f32::NAN);
        work.lse[0][..count].fill(f32::NAN);
        let one_call = seconds_of(|| work.run(op, self.options, Slot::START, count, self.pool));
        let y = &work.y[0][elements.clone()];
        let error = match op {
            Op::CopyScale => {
                let x = &work.x[0][elements];
                let want: Vec<f32> = x.iter().map(|&v| COPY_SCALE_FACTOR * v).collect();
                max_error(y, &want)
            }
            Op::Naive | Op::Softmax(..) => max_error(y, &reference.softmax[elements]),
            Op::LogSoftmax(..) => max_error(y, &reference.log_softmax[elements]),
            Op::LogSumExp(..) => max_error(&work.lse[0][..count], &reference.logsumexp[..count]),
            Op::Training(_) | Op::Sampling(_) | Op::Attention(_) | Op::OnnxRuntime | Op::Candle => {
                unreachable!("those tables have their own workloads")
            }
        };
        (one_call, error)
    }
}

/// Every op on one shape with one thread count, yardsticks first; the ratios
/// need both yardsticks, so they are filled in once the group is complete.
pub fn measure_group(
    work: &mut Workload,
    reference: &Reference,
    ops: &[Op],
    (threads, pool): Pool,
    (seconds, samples): (f64, usize),
) -> Vec<Record> {
    let mut group: Vec<Record> = Vec::new();
    for &op in ops {
        let (isa, algorithm) = match op {
            Op::Softmax(i, a) | Op::LogSoftmax(i, a) | Op::LogSumExp(i, a) => (i, a),
            Op::Naive | Op::CopyScale => (Isa::Scalar, Algorithm::Auto),
            Op::Training(_) | Op::Sampling(_) | Op::Attention(_) | Op::OnnxRuntime | Op::Candle => {
                unreachable!("those tables have their own workloads")
            }
        };
        let options = Softmax::new()
            .with_isa(isa)
            .expect("ISAs were checked when parsed")
            .with_algorithm(algorithm)
            .with_parallelism(parallelism(&pool));
        let (shape, out_of_cache, buffer_sets) = (work.shape, work.out_of_cache, work.sets());
        let mut job = OpRun {
            work,
            reference,
            op,
            options: &options,
            pool: pool.as_deref(),
        };
        let m = measure(&mut job, seconds, samples);
        group.push(Record {
            out_of_cache,
            buffer_sets,
            ..Record::new(Section::Main, shape, op, threads, m)
        });
    }
    fill_yardstick_ratios(&mut group);
    group
}

/// ×naive and ×copy of every record of one (shape, threads) group, from the
/// group's naive and copy-scale records (NaN without them).
pub(crate) fn fill_yardstick_ratios(group: &mut [Record]) {
    let rate_of = |wanted: Op| {
        let r = group.iter().find(|r| r.op == wanted);
        r.map_or(f64::NAN, Record::elements_per_s)
    };
    let (naive_rate, copy_rate) = (rate_of(Op::Naive), rate_of(Op::CopyScale));
    for record in group {
        record.vs_naive = record.elements_per_s() / naive_rate;
        record.vs_copy = record.elements_per_s() / copy_rate;
    }
}

// ---------------------------------------------------------------- half precision

/// Softmax of a half-precision table pair; `want` is the scalar ISA's softmax
/// of the input as stored (rounded to the input type), in f32.
struct TypedRun<'a, I, O> {
    work: &'a mut Typed<I, O>,
    want: &'a [f32],
    options: &'a Softmax,
}

impl<I: Element, O: Element> Timed for TypedRun<'_, I, O> {
    fn shape(&self) -> Shape {
        self.work.shape
    }

    fn sets(&self) -> usize {
        self.work.sets()
    }

    fn run(&mut self, at: Slot, count: usize) {
        let result = self.work.softmax(self.options, (at.set, at.row), count);
        result.unwrap_or_else(|e| panic!("softmax refused a valid call: {e}"));
    }

    fn checked_call(&mut self, count: usize) -> (f64, f64) {
        let elements = 0..count * self.work.shape.cols;
        self.work.y[0][elements].fill(O::from_f32(f32::NAN));
        let one_call = seconds_of(|| self.run(Slot::START, count));
        (one_call, self.work.error(count, self.want))
    }
}

/// The half-precision table for one shape: softmax, auto, detected ISA, every
/// element pair with every thread count, then each throughput ÷ f32→f32's with
/// the same thread count. Rows come out by thread count, then pair.
pub fn measure_half_shape(
    shape: Shape,
    pairs: &[Pair],
    pools: &[Pool],
    llc_bytes: usize,
    (seconds, samples): (f64, usize),
) -> Vec<Record> {
    let logits = logits(shape.elements());
    let mut wants: Vec<(Dtype, Vec<f32>)> = Vec::new();
    let mut records = Vec::new();
    for &pair in pairs {
        if !wants.iter().any(|(d, _)| *d == pair.input) {
            let want = reference_softmax(pair.input, &logits, shape.cols);
            wants.push((pair.input, want));
        }
        let want = &wants.iter().find(|(d, _)| *d == pair.input).unwrap().1;
        let job = HalfJob {
            shape,
            logits: &logits,
            want,
            pools,
            llc_bytes,
            seconds,
            samples,
        };
        records.extend(job.measure(pair));
    }
    for i in 0..records.len() {
        let baseline = records
            .iter()
            .find(|b| b.threads == records[i].threads && b.elements == Pair::F32);
        records[i].vs_f32 =
            records[i].elements_per_s() / baseline.map_or(f64::NAN, Record::elements_per_s);
    }
    records.sort_by_key(|r| pools.iter().position(|(n, _)| *n == r.threads));
    records
}

/// One element pair of the half-precision table on one shape.
struct HalfJob<'a> {
    shape: Shape,
    logits: &'a [f32],
    want: &'a [f32],
    pools: &'a [Pool],
    llc_bytes: usize,
    seconds: f64,
    samples: usize,
}

impl HalfJob<'_> {
    /// Monomorphises on the pair: the API is generic over its element types.
    fn measure(&self, pair: Pair) -> Vec<Record> {
        match pair.input {
            Dtype::F32 => self.measure_from::<f32>(pair.output),
            Dtype::F16 => self.measure_from::<f16>(pair.output),
            Dtype::Bf16 => self.measure_from::<bf16>(pair.output),
        }
    }

    fn measure_from<I: Element>(&self, output: Dtype) -> Vec<Record> {
        match output {
            Dtype::F32 => self.measure_typed::<I, f32>(),
            Dtype::F16 => self.measure_typed::<I, f16>(),
            Dtype::Bf16 => self.measure_typed::<I, bf16>(),
        }
    }

    fn measure_typed<I: Element, O: Element>(&self) -> Vec<Record> {
        // In or out of cache as the f32 table has it, so every pair of a shape
        // is on the same side; a half-precision pair gets more sets instead.
        let elements = Pair {
            input: Dtype::of::<I>(),
            output: Dtype::of::<O>(),
        };
        let out_of_cache = out_of_cache(self.shape, self.llc_bytes);
        let footprint = self.shape.elements() * (elements.input.bytes() + elements.output.bytes());
        let sets = buffer_sets(out_of_cache, footprint, self.llc_bytes);
        let mut work = Typed::<I, O>::new(self.shape, self.logits, sets);
        let op = Op::Softmax(Isa::detect(), Algorithm::Auto);
        let mut records = Vec::new();
        for (threads, pool) in self.pools {
            let options = best_softmax(pool);
            let mut job = TypedRun {
                work: &mut work,
                want: self.want,
                options: &options,
            };
            let m = measure(&mut job, self.seconds, self.samples);
            records.push(Record {
                out_of_cache,
                buffer_sets: sets,
                elements,
                ..Record::new(Section::HalfPrecision, self.shape, op, *threads, m)
            });
        }
        records
    }
}

// ---------------------------------------------------------------- training

/// Checks `pass` once (which also warms it up) and times whole-batch calls.
/// Only the calls are timed, not the copy that hands an in-place pass its input.
fn measure_training(
    work: &mut Training,
    pass: Pass,
    (softmax, cross_entropy): (&Softmax, &CrossEntropy<'_>),
    seconds: f64,
    samples: usize,
) -> Measurement {
    let error = work.check(pass, softmax, cross_entropy);
    let timed_call = || {
        work.reset(pass);
        seconds_of(|| {
            let result = work.call(pass, softmax, cross_entropy);
            result.unwrap_or_else(|e| panic!("{} refused a valid call: {e}", pass.name()));
        })
    };
    let (seconds_per_call, calls_per_sample) = measure_whole_calls(timed_call, seconds, samples);
    Measurement {
        block_rows: work.rows,
        error,
        seconds_per_call,
        samples,
        calls_per_sample,
    }
}

/// The training table: every pass with every thread count, detected ISA,
/// then each throughput ÷ the forward softmax's with the same thread count.
pub fn measure_training_shape(
    shape: Shape,
    pools: &[Pool],
    llc_bytes: usize,
    (seconds, samples): (f64, usize),
) -> Vec<Record> {
    let mut work = Training::new(shape.rows, shape.cols);
    let mut records = Vec::new();
    for (threads, pool) in pools {
        let softmax = best_softmax(pool);
        let cross_entropy = CrossEntropy::new()
            .with_isa(Isa::detect())
            .expect("the detected ISA is available")
            .with_parallelism(parallelism(pool));
        let mut group: Vec<Record> = Pass::ALL
            .iter()
            .map(|&pass| {
                let options = (&softmax, &cross_entropy);
                let m = measure_training(&mut work, pass, options, seconds, samples);
                Record {
                    out_of_cache: out_of_cache(shape, llc_bytes),
                    ..Record::new(Section::Training, shape, Op::Training(pass), *threads, m)
                }
            })
            .collect();
        let forward = group.iter().find(|r| r.op == Op::Training(Pass::Forward));
        let forward_rate = forward.map_or(f64::NAN, Record::elements_per_s);
        for record in &mut group {
            record.vs_forward = record.elements_per_s() / forward_rate;
        }
        records.extend(group);
    }
    records
}

// ---------------------------------------------------------------- attention

/// The attention table for one variant: with every thread count, detected
/// ISA, the variant and the forward softmax of the same rows are checked
/// once (which also warms them up), then timed in turns, half the time each
/// (the pair is one configuration of the budget); the variant's throughput ÷
/// the softmax's.
pub fn measure_attention_variant(
    variant: Variant,
    pools: &[Pool],
    llc_bytes: usize,
    (seconds, samples): (f64, usize),
) -> Vec<Record> {
    let mut work = Attention::new(variant);
    let shape = Shape::new(work.rows(), work.keys());
    let mut records = Vec::new();
    for (threads, pool) in pools {
        let softmax = best_softmax(pool);
        let attention = variant.options(Isa::detect(), parallelism(pool));
        let attention = attention.expect("the detected ISA is available");
        let error = work.check(&attention, &softmax);
        let timed_call = |which: usize| {
            seconds_of(|| {
                let result = match which {
                    0 => work.call_softmax(&softmax),
                    _ => work.call(&attention),
                };
                result.unwrap_or_else(|e| panic!("{} refused a valid call: {e}", variant.name()));
            })
        };
        let [(forward_seconds, forward_calls), (seconds_per_call, calls_per_sample)] =
            measure_whole_calls_alternated(timed_call, seconds / 2.0, samples);
        let m = |seconds_per_call, calls_per_sample| Measurement {
            block_rows: shape.rows,
            error,
            seconds_per_call,
            samples,
            calls_per_sample,
        };
        records.push(Record {
            out_of_cache: out_of_cache(shape, llc_bytes),
            vs_forward: forward_seconds / seconds_per_call,
            forward: Some(m(forward_seconds, forward_calls)),
            ..Record::new(
                Section::Attention,
                shape,
                Op::Attention(variant),
                *threads,
                m(seconds_per_call, calls_per_sample),
            )
        });
    }
    records
}

// ---------------------------------------------------------------- sampling

/// Checks every case (which also warms it up), then times them interleaved;
/// each time ÷ the softmax's, and the full sort's ÷ each. With each record,
/// the number of tokens its case keeps.
pub fn measure_sampling_row(
    cols: usize,
    llc_bytes: usize,
    (seconds, samples): (f64, usize),
) -> Vec<(Record, Option<usize>)> {
    let mut work = SamplingRow::new(cols);
    let checks: Vec<sampling::Check> = Case::ALL.iter().map(|&c| work.check(c)).collect();
    let timings = sampling::time_interleaved(&mut work, &Case::ALL, seconds, samples);
    let shape = Shape::new(1, cols);
    let time_of = |wanted: Case| {
        let found = Case::ALL.iter().position(|&c| c == wanted);
        found.map_or(f64::NAN, |j| timings[j].seconds_per_call)
    };
    let (softmax_time, full_sort_time) = (time_of(Case::Softmax), time_of(Case::FullSort));
    Case::ALL
        .iter()
        .zip(checks.iter().zip(&timings))
        .map(|(&case, (check, timing))| {
            let m = Measurement {
                block_rows: 1,
                error: check.error,
                seconds_per_call: timing.seconds_per_call,
                samples: timing.samples,
                calls_per_sample: timing.calls_per_sample,
            };
            let record = Record {
                out_of_cache: out_of_cache(shape, llc_bytes),
                vs_forward: softmax_time / timing.seconds_per_call,
                vs_full_sort: full_sort_time / timing.seconds_per_call,
                ..Record::new(Section::Sampling, shape, Op::Sampling(case), 1, m)
            };
            (record, check.kept)
        })
        .collect()
}
