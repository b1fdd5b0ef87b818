//! `cargo run --release --bin report`: how fast is each ISA × algorithm of this
//! crate, compared with the softmax people first write and with the memory bus?
//!
//! For a standard set of shapes it measures softmax (every algorithm),
//! log-softmax and logsumexp (`Algorithm::Auto`) on every available ISA, with
//! one thread and with a rayon pool of all cores, beside two yardsticks
//! measured in the same run:
//! - a naive scalar softmax (three plain loops, `f32::exp`, a division), and
//! - copy-scale `y = c·x` on the best ISA: the same bytes read and written as
//!   softmax with no arithmetic to speak of, i.e. what the memory system allows.
//!
//! Every configuration is checked once against the crate's scalar ISA before it
//! is timed. Results go to stdout as a table, progress to stderr, and files to
//! `report-out/`: results.csv, results.json and throughput.svg.
//!
//! Only std, rayon and pulp (dependencies of the crate itself) are used, so the
//! report builds without dev-dependencies: flags, CSV, JSON and SVG are by hand.

#[allow(dead_code)]
mod baselines;
mod svg;

use baselines::{copy_scale, naive_softmax};
use rayon::prelude::*;
use rayon::ThreadPool;
use softmax::{Algorithm, Isa, Parallelism, Rows, RowsMut, Softmax};
use std::fmt::{self, Write as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

/// Single rows (latency), small batches, a tall-thin batch, and batches that
/// spill the last-level cache. 32000 and 128256 are LLM vocabulary sizes.
const STANDARD_SHAPES: [(usize, usize); 8] = [
    (1, 1024),
    (1, 32000),
    (1, 128256),
    (64, 1024),
    (256, 4096),
    (4096, 128),
    (512, 32000),
    (2048, 2048),
];
const QUICK_SHAPES: [(usize, usize); 2] = [(1, 1024), (64, 1024)];
const ALL_ALGORITHMS: [Algorithm; 4] = [
    Algorithm::ThreePass,
    Algorithm::TwoPass,
    Algorithm::Online,
    Algorithm::Auto,
];

/// Measuring time the default run spreads over its configurations. Probes,
/// checks and the scalar reference come on top (about a third more), which
/// keeps the whole default run under a minute on a 2-core machine.
const DEFAULT_BUDGET_S: f64 = 30.0;
const DEFAULT_SAMPLES: usize = 5;
/// |Δ| ≤ TOLERANCE · max(1, |reference|): absolute for probabilities (≤ 1),
/// relative for log-probabilities and logsumexp, whose magnitude grows with ln n.
const TOLERANCE: f64 = 1e-6;
/// Logits are uniform in ±LOGIT_RANGE: a spread like real LLM logits, no special values.
const LOGIT_RANGE: f32 = 10.0;
/// Cores kept busy by other processes above which the header warns.
const BUSY_WARNING: f64 = 0.25;
/// Used when the last-level cache size cannot be read.
const ASSUMED_LLC_BYTES: usize = 32 << 20;

const USAGE: &str = "\
usage: cargo run --release --bin report -- [flags]

  --shapes 1x1024,64x1024   shapes ROWSxCOLS (default: the standard eight)
  --isa avx2,scalar         ISAs to measure (default: every available one)
  --algorithms three-pass,two-pass,online,auto
                            softmax algorithms (default: all; log-softmax and
                            logsumexp are measured with auto when it is listed)
  --threads 1,2             thread counts; 1 is Parallelism::Serial, n > 1 a
                            rayon pool of n threads (default: 1 and all cores)
  --seconds 0.2             measuring time per configuration (default: 30 s
                            spread over the configurations); a configuration
                            too slow for whole-batch calls times blocks of rows
  --samples 5               timed samples per configuration; the median is kept
  --out DIR                 where results.csv, results.json and throughput.svg
                            go (default: report-out)
  --quick                   a few seconds: two small shapes, short samples
  --help                    this text

Exits 1 if any configuration differs from the scalar ISA by more than
1e-6 · max(1, |reference|), 2 on a bad flag or an unwritable output directory.";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Shape {
    rows: usize,
    cols: usize,
}

impl Shape {
    fn elements(self) -> usize {
        self.rows * self.cols
    }

    fn parse(text: &str) -> Result<Shape, String> {
        let bad = || format!("bad shape {text:?}: expected ROWSxCOLS, e.g. 64x1024");
        let (rows, cols) = text.split_once(['x', 'X', '×']).ok_or_else(bad)?;
        let rows: usize = rows.trim().parse().map_err(|_| bad())?;
        let cols: usize = cols.trim().parse().map_err(|_| bad())?;
        if rows == 0 || cols == 0 || rows.checked_mul(cols).is_none() {
            return Err(format!("bad shape {text:?}: rows and cols must be ≥ 1"));
        }
        Ok(Shape { rows, cols })
    }
}

impl fmt::Display for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Through `pad` so table columns can align it.
        f.pad(&format!("{}x{}", self.rows, self.cols))
    }
}

struct Config {
    shapes: Vec<Shape>,
    isas: Vec<Isa>,
    algorithms: Vec<Algorithm>,
    threads: Vec<usize>,
    /// None: derived from DEFAULT_BUDGET_S and the number of configurations.
    seconds: Option<f64>,
    samples: usize,
    out: PathBuf,
}

/// Parses the flags by hand (no clap: the report may only use the crate's dependencies).
/// `Ok(None)` means --help.
fn parse_args(args: impl IntoIterator<Item = String>) -> Result<Option<Config>, String> {
    let cores = cores();
    let mut config = Config {
        shapes: STANDARD_SHAPES
            .iter()
            .map(|&(rows, cols)| Shape { rows, cols })
            .collect(),
        isas: Isa::available(),
        algorithms: ALL_ALGORITHMS.to_vec(),
        threads: if cores > 1 { vec![1, cores] } else { vec![1] },
        seconds: None,
        samples: DEFAULT_SAMPLES,
        out: PathBuf::from("report-out"),
    };
    let (mut quick, mut shapes_given, mut seconds_given, mut samples_given) =
        (false, false, false, false);
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        // Both "--flag value" and "--flag=value".
        let (flag, inline) = match arg.split_once('=') {
            Some((flag, value)) => (flag.to_string(), Some(value.to_string())),
            None => (arg.clone(), None),
        };
        let mut value = || {
            inline
                .clone()
                .or_else(|| args.next())
                .ok_or_else(|| format!("{flag} needs a value"))
        };
        match flag.as_str() {
            "--help" | "-h" => return Ok(None),
            "--quick" => quick = true,
            "--shapes" => {
                config.shapes = list(&value()?, Shape::parse)?;
                shapes_given = true;
            }
            "--isa" | "--isas" => config.isas = list(&value()?, parse_isa)?,
            "--algorithms" | "--algorithm" => config.algorithms = list(&value()?, parse_algorithm)?,
            "--threads" => {
                config.threads = list(&value()?, |t| match t.parse::<usize>() {
                    Ok(n) if n >= 1 => Ok(n),
                    _ => Err(format!("bad thread count {t:?}: expected an integer ≥ 1")),
                })?
            }
            "--seconds" => {
                let v = value()?;
                match v.parse::<f64>() {
                    Ok(s) if s > 0.0 && s.is_finite() => config.seconds = Some(s),
                    _ => return Err(format!("bad --seconds {v:?}: expected a number > 0")),
                }
                seconds_given = true;
            }
            "--samples" => {
                let v = value()?;
                match v.parse::<usize>() {
                    Ok(n) if n >= 1 => config.samples = n,
                    _ => return Err(format!("bad --samples {v:?}: expected an integer ≥ 1")),
                }
                samples_given = true;
            }
            "--out" => config.out = PathBuf::from(value()?),
            _ => return Err(format!("unknown flag {arg:?}")),
        }
    }
    // --quick only changes what was not given explicitly.
    if quick {
        if !shapes_given {
            config.shapes = QUICK_SHAPES
                .iter()
                .map(|&(rows, cols)| Shape { rows, cols })
                .collect();
        }
        if !seconds_given {
            config.seconds = Some(0.01);
        }
        if !samples_given {
            config.samples = 3;
        }
    }
    config.threads.dedup();
    Ok(Some(config))
}

fn list<T: PartialEq>(
    text: &str,
    parse: impl Fn(&str) -> Result<T, String>,
) -> Result<Vec<T>, String> {
    let mut items = Vec::new();
    for item in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let item = parse(item)?;
        if !items.contains(&item) {
            items.push(item);
        }
    }
    match items.is_empty() {
        true => Err(format!("empty list {text:?}")),
        false => Ok(items),
    }
}

fn parse_isa(name: &str) -> Result<Isa, String> {
    let names = || {
        Isa::available()
            .iter()
            .map(|i| i.name())
            .collect::<Vec<_>>()
    };
    let isa = Isa::ALL
        .into_iter()
        .find(|i| i.name() == name.to_ascii_lowercase())
        .ok_or_else(|| format!("unknown ISA {name:?}; available: {}", names().join(", ")))?;
    match isa.is_available() {
        true => Ok(isa),
        false => Err(format!(
            "{isa} is not available on this CPU; available: {}",
            names().join(", ")
        )),
    }
}

fn parse_algorithm(name: &str) -> Result<Algorithm, String> {
    ALL_ALGORITHMS
        .into_iter()
        .find(|a| a.name() == name.to_ascii_lowercase())
        .ok_or_else(|| {
            format!("unknown algorithm {name:?}; expected three-pass, two-pass, online or auto")
        })
}

// ---------------------------------------------------------------- machine facts

fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// /proc/cpuinfo's "model name" on Linux, sysctl's brand string on macOS.
fn cpu_model() -> String {
    if let Ok(info) = std::fs::read_to_string("/proc/cpuinfo") {
        let model = info
            .lines()
            .find_map(|l| l.strip_prefix("model name")?.split_once(':'))
            .map(|(_, v)| v.trim().to_string());
        if let Some(model) = model.filter(|m| !m.is_empty()) {
            return model;
        }
    }
    sysctl("machdep.cpu.brand_string").unwrap_or_else(|| "unknown".into())
}

fn sysctl(name: &str) -> Option<String> {
    let out = std::process::Command::new("sysctl")
        .args(["-n", name])
        .output()
        .ok()?;
    let text = String::from_utf8(out.stdout).ok()?.trim().to_string();
    (out.status.success() && !text.is_empty()).then_some(text)
}

/// How many cores other processes kept busy over a short window (Linux
/// /proc/stat), to flag runs disturbed by other work. Sampled while the report
/// itself is idle; unlike the load average it does not lag by a minute.
fn busy_cores() -> Option<f64> {
    fn ticks() -> Option<(u64, u64)> {
        let stat = std::fs::read_to_string("/proc/stat").ok()?;
        let fields: Vec<u64> = stat
            .lines()
            .next()?
            .split_whitespace()
            .skip(1)
            .filter_map(|f| f.parse().ok())
            .collect();
        // user nice system idle iowait ...: idle and iowait are the idle ticks.
        let idle = fields.get(3)? + fields.get(4).copied().unwrap_or(0);
        Some((fields.iter().sum(), idle))
    }
    let (total0, idle0) = ticks()?;
    std::thread::sleep(std::time::Duration::from_millis(300));
    let (total1, idle1) = ticks()?;
    let total = total1.checked_sub(total0).filter(|&t| t > 0)? as f64;
    let busy = total - idle1.saturating_sub(idle0) as f64;
    Some(busy / total * cores() as f64)
}

/// The largest data or unified cache of CPU 0, and where that figure came from.
fn last_level_cache() -> (usize, &'static str) {
    let mut best = 0usize;
    for index in 0..8 {
        let dir = format!("/sys/devices/system/cpu/cpu0/cache/index{index}");
        let read = |f: &str| std::fs::read_to_string(format!("{dir}/{f}")).ok();
        let (Some(kind), Some(size)) = (read("type"), read("size")) else {
            continue;
        };
        if kind.trim() == "Instruction" {
            continue;
        }
        let size = size.trim();
        let (digits, unit) = size.split_at(size.trim_end_matches(char::is_alphabetic).len());
        let scale = match unit {
            "K" => 1 << 10,
            "M" => 1 << 20,
            "G" => 1 << 30,
            _ => 1,
        };
        best = best.max(digits.parse::<usize>().unwrap_or(0) * scale);
    }
    if best > 0 {
        return (best, "sysfs");
    }
    for name in ["hw.l3cachesize", "hw.l2cachesize"] {
        if let Some(bytes) = sysctl(name).and_then(|s| s.parse().ok()).filter(|&b| b > 0) {
            return (bytes, "sysctl");
        }
    }
    (ASSUMED_LLC_BYTES, "assumed")
}

// ---------------------------------------------------------------- what is measured

#[derive(Clone, Copy, Debug, PartialEq)]
enum Op {
    Naive,
    CopyScale,
    Softmax(Isa, Algorithm),
    LogSoftmax(Isa, Algorithm),
    LogSumExp(Isa, Algorithm),
}

impl Op {
    fn name(self) -> &'static str {
        match self {
            Op::Naive => "naive",
            Op::CopyScale => "copy-scale",
            Op::Softmax(..) => "softmax",
            Op::LogSoftmax(..) => "log-softmax",
            Op::LogSumExp(..) => "logsumexp",
        }
    }

    fn isa(self) -> String {
        match self {
            Op::Naive => "scalar".into(),
            Op::CopyScale => format!("{}", Isa::detect()),
            Op::Softmax(isa, _) | Op::LogSoftmax(isa, _) | Op::LogSumExp(isa, _) => isa.to_string(),
        }
    }

    fn algorithm(self) -> &'static str {
        match self {
            Op::Naive => "3-loop",
            Op::CopyScale => "y=c·x",
            Op::Softmax(_, a) | Op::LogSoftmax(_, a) | Op::LogSumExp(_, a) => a.name(),
        }
    }

    /// Bytes each element costs when read and written once: logsumexp only reads.
    fn bytes_per_element(self) -> f64 {
        match self {
            Op::LogSumExp(..) => 4.0,
            _ => 8.0,
        }
    }
}

/// The operations measured for one (shape, thread count), yardsticks first.
fn ops(config: &Config) -> Vec<Op> {
    let mut ops = vec![Op::Naive, Op::CopyScale];
    for &isa in &config.isas {
        ops.extend(config.algorithms.iter().map(|&a| Op::Softmax(isa, a)));
        if config.algorithms.contains(&Algorithm::Auto) {
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

fn thread_counts(config: &Config, shape: Shape) -> Vec<usize> {
    let serial = runs_serially(shape);
    config
        .threads
        .iter()
        .copied()
        .filter(|&t| t == 1 || !serial)
        .collect()
}

// ---------------------------------------------------------------- the yardsticks

const COPY_SCALE_FACTOR: f32 = 0.75;

/// Runs a yardstick over whole rows, on one thread or split like the crate
/// splits a batch (tasks of at least TASK_MIN_ELEMENTS, whole rows).
fn yardstick(op: Op, x: &[f32], y: &mut [f32], cols: usize, pool: Option<&ThreadPool>) {
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
            let task = softmax::TASK_MIN_ELEMENTS.div_ceil(cols) * cols;
            pool.install(|| {
                x.par_chunks(task)
                    .zip(y.par_chunks_mut(task))
                    .for_each(|(x, y)| block(x, y))
            })
        }
    }
}

// ---------------------------------------------------------------- buffers and checks

/// Inputs and outputs for one shape. Out-of-cache shapes get several identical
/// buffer sets, used in turn, so that every call meets cold memory.
struct Workload {
    shape: Shape,
    x: Vec<Vec<f32>>,
    y: Vec<Vec<f32>>,
    lse: Vec<Vec<f32>>,
    out_of_cache: bool,
}

impl Workload {
    fn new(shape: Shape, llc_bytes: usize) -> Self {
        // One call touches x and y. Over half the LLC does not stay resident
        // (other data, associativity, AMD's victim L3), so treat it as memory;
        // then rotate through sets totalling ≥ 2 × LLC so a set is evicted
        // before it comes round again.
        let footprint = shape.elements() * 8;
        let out_of_cache = footprint > llc_bytes / 2;
        let sets = match out_of_cache {
            true => (2 * llc_bytes).div_ceil(footprint).max(1),
            false => 1,
        };
        let mut rng = 0x9e37_79b9_7f4a_7c15u64;
        let logits: Vec<f32> = (0..shape.elements())
            .map(|_| {
                // xorshift64*: reproducible, and no dependency for random numbers.
                rng ^= rng >> 12;
                rng ^= rng << 25;
                rng ^= rng >> 27;
                let unit =
                    (rng.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 40) as f32 / (1 << 24) as f32;
                (2.0 * unit - 1.0) * LOGIT_RANGE
            })
            .collect();
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

    fn sets(&self) -> usize {
        self.x.len()
    }

    /// One call of `op` on `count` rows from `first` of buffer set `set`.
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
        };
        result.unwrap_or_else(|e| panic!("{} refused a valid call: {e}", op.name()));
    }

    /// Where the `call`-th call of `block` rows works: consecutive blocks of
    /// one set, then the next set, so memory is cold again when a block comes round.
    fn slot(&self, block: usize, call: usize) -> Slot {
        let blocks = self.shape.rows / block;
        let index = call % (blocks * self.sets());
        Slot {
            set: index / blocks,
            row: index % blocks * block,
        }
    }
}

#[derive(Clone, Copy)]
struct Slot {
    set: usize,
    row: usize,
}

/// The crate's scalar ISA (three-pass, one thread): what every row is checked against.
struct Reference {
    softmax: Vec<f32>,
    log_softmax: Vec<f32>,
    logsumexp: Vec<f32>,
}

impl Reference {
    fn new(work: &Workload) -> Self {
        let scalar = Softmax::new()
            .isa(Isa::Scalar)
            .expect("the scalar ISA is always available")
            .algorithm(Algorithm::ThreePass)
            .parallelism(Parallelism::Serial);
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

/// max |got − want| / max(1, |want|); infinite if anything is NaN.
fn max_error(got: &[f32], want: &[f32]) -> f64 {
    let mut worst = 0.0f64;
    for (&g, &w) in got.iter().zip(want) {
        let err = (g as f64 - w as f64).abs() / (w as f64).abs().max(1.0);
        if err.is_nan() {
            return f64::INFINITY;
        }
        worst = worst.max(err);
    }
    worst
}

// ---------------------------------------------------------------- timing

/// The probe call covers at least this many elements (whole rows).
const PROBE_ELEMENTS: usize = 1 << 16;
/// A configuration keeps whole-batch calls only if this many of them fit in its time.
const MIN_SAMPLES: usize = 3;

struct Measurement {
    /// Rows each timed call covers: the whole batch, or a block of it when one
    /// whole-batch call would not fit in the configuration's time.
    block_rows: usize,
    /// Against the reference, on the first block of set 0.
    error: f64,
    /// Median over samples of the mean seconds per call within a sample.
    seconds_per_call: f64,
    samples: usize,
    calls_per_sample: usize,
}

fn seconds_of(f: impl FnOnce()) -> f64 {
    let start = Instant::now();
    f();
    start.elapsed().as_secs_f64().max(1e-9)
}

/// Checks `op` once and times it for about `seconds`.
///
/// A slow configuration on a big batch (the scalar ISA on 512×32000 takes
/// seconds per call) cannot afford even a few whole-batch calls, so a probe
/// call sizes the work first: whole batches when they fit, else blocks of
/// rows sized to one sample. Consecutive calls walk through the batch (and the
/// buffer sets), so blocks of an out-of-cache shape still meet cold memory.
/// The median sample is kept, which shrugs off one disturbed by another process.
fn measure(
    work: &mut Workload,
    reference: &Reference,
    (op, options, pool): (Op, &Softmax, Option<&ThreadPool>),
    seconds: f64,
    samples: usize,
) -> Measurement {
    let Shape { rows, cols } = work.shape;
    let start = Slot { set: 0, row: 0 };

    // The probe doubles as the warm-up (code, pool threads, page tables).
    let probe_rows = rows.min(PROBE_ELEMENTS.div_ceil(cols));
    let per_row = seconds_of(|| work.run(op, options, start, probe_rows, pool)) / probe_rows as f64;
    let block_rows = match per_row * rows as f64 <= seconds / MIN_SAMPLES as f64 {
        true => rows,
        false => ((seconds / samples as f64 / per_row) as usize).clamp(probe_rows, rows),
    };

    // The check: one block on NaN-poisoned output, so a skipped element cannot pass.
    let elements = 0..block_rows * cols;
    work.y[0][elements.clone()].fill(f32::NAN);
    work.lse[0][..block_rows].fill(f32::NAN);
    let one_call = seconds_of(|| work.run(op, options, start, block_rows, pool));
    let error = match op {
        Op::CopyScale => {
            let x = &work.x[0][elements.clone()];
            let want: Vec<f32> = x.iter().map(|&v| COPY_SCALE_FACTOR * v).collect();
            max_error(&work.y[0][elements], &want)
        }
        Op::Naive | Op::Softmax(..) => {
            max_error(&work.y[0][elements.clone()], &reference.softmax[elements])
        }
        Op::LogSoftmax(..) => max_error(
            &work.y[0][elements.clone()],
            &reference.log_softmax[elements],
        ),
        Op::LogSumExp(..) => max_error(
            &work.lse[0][..block_rows],
            &reference.logsumexp[..block_rows],
        ),
    };

    // Slow whole-batch calls get fewer samples (down to MIN_SAMPLES) rather than overrun.
    let samples = ((seconds / one_call) as usize).clamp(MIN_SAMPLES.min(samples), samples);
    let calls_per_sample = ((seconds / samples as f64 / one_call) as usize).max(1);
    let mut call = 1;
    let mut per_call: Vec<f64> = (0..samples)
        .map(|_| {
            let sample = seconds_of(|| {
                for _ in 0..calls_per_sample {
                    let at = work.slot(block_rows, call);
                    work.run(op, options, at, block_rows, pool);
                    call += 1;
                }
            });
            sample / calls_per_sample as f64
        })
        .collect();
    per_call.sort_by(f64::total_cmp);
    Measurement {
        block_rows,
        error,
        seconds_per_call: per_call[per_call.len() / 2],
        samples,
        calls_per_sample,
    }
}

/// Every op on one shape with one thread count, yardsticks first; the ratios
/// need both yardsticks, so they are filled in once the group is complete.
fn measure_group(
    work: &mut Workload,
    reference: &Reference,
    ops: &[Op],
    (threads, pool): (usize, Option<Arc<ThreadPool>>),
    seconds: f64,
    samples: usize,
) -> Vec<Record> {
    let mut group: Vec<Record> = Vec::new();
    for &op in ops {
        let (isa, algorithm) = match op {
            Op::Softmax(i, a) | Op::LogSoftmax(i, a) | Op::LogSumExp(i, a) => (i, a),
            Op::Naive | Op::CopyScale => (Isa::Scalar, Algorithm::Auto),
        };
        let parallelism = match &pool {
            Some(pool) => Parallelism::Pool(pool.clone()),
            None => Parallelism::Serial,
        };
        let options = Softmax::new()
            .isa(isa)
            .expect("ISAs were checked when parsed")
            .algorithm(algorithm)
            .parallelism(parallelism);
        let job = (op, &options, pool.as_deref());
        group.push(Record {
            shape: work.shape,
            op,
            threads,
            out_of_cache: work.out_of_cache,
            buffer_sets: work.sets(),
            m: measure(work, reference, job, seconds, samples),
            vs_naive: f64::NAN,
            vs_copy: f64::NAN,
        });
    }
    let rate_of = |wanted: Op| {
        let r = group.iter().find(|r| r.op == wanted);
        r.map_or(f64::NAN, Record::elements_per_s)
    };
    let (naive_rate, copy_rate) = (rate_of(Op::Naive), rate_of(Op::CopyScale));
    for record in &mut group {
        record.vs_naive = record.elements_per_s() / naive_rate;
        record.vs_copy = record.elements_per_s() / copy_rate;
    }
    group
}

// ---------------------------------------------------------------- results

struct Record {
    shape: Shape,
    op: Op,
    threads: usize,
    out_of_cache: bool,
    buffer_sets: usize,
    m: Measurement,
    /// Throughput relative to the naive loop and to copy-scale, same shape and threads.
    vs_naive: f64,
    vs_copy: f64,
}

impl Record {
    fn elements_per_s(&self) -> f64 {
        (self.m.block_rows * self.shape.cols) as f64 / self.m.seconds_per_call
    }
    fn gelem(&self) -> f64 {
        self.elements_per_s() / 1e9
    }
    fn gbytes(&self) -> f64 {
        self.elements_per_s() * self.op.bytes_per_element() / 1e9
    }
    fn ok(&self) -> bool {
        // Copy-scale must be exact; everything else within the tolerance.
        match self.op {
            Op::CopyScale => self.m.error == 0.0,
            _ => self.m.error <= TOLERANCE,
        }
    }
}

const TABLE_HEADER: &str =
    "shape        rows/call  op           algorithm   isa     thr   Gelem/s     GB/s  ×naive   ×copy    max|Δ|";

fn table_row(r: &Record) -> String {
    let err = match r.m.error {
        0.0 => "0".to_string(),
        e if e.is_finite() => format!("{e:.1e}"),
        _ => "NaN".to_string(),
    };
    format!(
        "{:<12} {:>9}  {:<12} {:<11} {:<7} {:>3} {:>9.3} {:>8.2} {:>7.2} {:>7.2} {:>9} {}",
        r.shape,
        r.m.block_rows,
        r.op.name(),
        r.op.algorithm(),
        r.op.isa(),
        r.threads,
        r.gelem(),
        r.gbytes(),
        r.vs_naive,
        r.vs_copy,
        err,
        if r.ok() { "✓" } else { "✗" }
    )
}

const CSV_HEADER: &str = "shape,rows,cols,op,algorithm,isa,threads,out_of_cache,buffer_sets,\
rows_per_call,seconds_per_call,gelem_per_s,gbytes_per_s,vs_naive,vs_copy_scale,max_error,ok,samples,calls_per_sample";

fn csv_row(r: &Record) -> String {
    format!(
        "{},{},{},{},{},{},{},{},{},{},{:e},{:.6},{:.6},{:.4},{:.4},{:e},{},{},{}",
        r.shape,
        r.shape.rows,
        r.shape.cols,
        r.op.name(),
        r.op.algorithm(),
        r.op.isa(),
        r.threads,
        r.out_of_cache,
        r.buffer_sets,
        r.m.block_rows,
        r.m.seconds_per_call,
        r.gelem(),
        r.gbytes(),
        r.vs_naive,
        r.vs_copy,
        r.m.error,
        r.ok(),
        r.m.samples,
        r.m.calls_per_sample
    )
}

fn json_string(text: &str) -> String {
    let mut out = String::from("\"");
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// JSON has no NaN or infinity.
fn json_number(v: f64) -> String {
    match v.is_finite() {
        true => format!("{v}"),
        false => "null".into(),
    }
}

struct Machine {
    cpu: String,
    cores: usize,
    llc_bytes: usize,
    llc_source: &'static str,
    busy_before: Option<f64>,
    busy_after: Option<f64>,
}

fn json_document(machine: &Machine, config: &Config, seconds: f64, records: &[Record]) -> String {
    let strings = |items: Vec<String>| {
        let quoted: Vec<String> = items.iter().map(|s| json_string(s)).collect();
        format!("[{}]", quoted.join(", "))
    };
    let mut out = String::from("{\n");
    let _ = writeln!(out, "  \"machine\": {{");
    let _ = writeln!(out, "    \"cpu\": {},", json_string(&machine.cpu));
    let _ = writeln!(out, "    \"cores\": {},", machine.cores);
    let busy = |b: Option<f64>| b.map_or("null".into(), json_number);
    let _ = writeln!(
        out,
        "    \"busy_cores_before\": {},",
        busy(machine.busy_before)
    );
    let _ = writeln!(
        out,
        "    \"busy_cores_after\": {},",
        busy(machine.busy_after)
    );
    let _ = writeln!(out, "    \"llc_bytes\": {},", machine.llc_bytes);
    let _ = writeln!(
        out,
        "    \"llc_source\": {},",
        json_string(machine.llc_source)
    );
    let _ = writeln!(
        out,
        "    \"isa_detected\": {},",
        json_string(Isa::detect().name())
    );
    let available = Isa::available()
        .iter()
        .map(|i| i.name().to_string())
        .collect();
    let _ = writeln!(out, "    \"isas_available\": {},", strings(available));
    let _ = writeln!(
        out,
        "    \"profile\": {},",
        json_string(softmax::build_info::PROFILE)
    );
    let _ = writeln!(
        out,
        "    \"target\": {},",
        json_string(softmax::build_info::TARGET)
    );
    let _ = writeln!(
        out,
        "    \"target_features\": {}",
        json_string(softmax::build_info::TARGET_FEATURES)
    );
    let _ = writeln!(out, "  }},");
    let _ = writeln!(out, "  \"settings\": {{");
    let _ = writeln!(
        out,
        "    \"seconds_per_configuration\": {},",
        json_number(seconds)
    );
    let _ = writeln!(out, "    \"samples\": {},", config.samples);
    let _ = writeln!(out, "    \"tolerance\": {},", json_number(TOLERANCE));
    let _ = writeln!(
        out,
        "    \"logit_range\": {},",
        json_number(LOGIT_RANGE as f64)
    );
    let threads = config
        .threads
        .iter()
        .map(|t| t.to_string())
        .collect::<Vec<_>>();
    let _ = writeln!(out, "    \"threads\": [{}]", threads.join(", "));
    let _ = writeln!(out, "  }},");
    let _ = writeln!(out, "  \"results\": [");
    for (i, r) in records.iter().enumerate() {
        let fields = [
            ("shape", json_string(&r.shape.to_string())),
            ("rows", r.shape.rows.to_string()),
            ("cols", r.shape.cols.to_string()),
            ("op", json_string(r.op.name())),
            ("algorithm", json_string(r.op.algorithm())),
            ("isa", json_string(&r.op.isa())),
            ("threads", r.threads.to_string()),
            ("out_of_cache", r.out_of_cache.to_string()),
            ("buffer_sets", r.buffer_sets.to_string()),
            ("rows_per_call", r.m.block_rows.to_string()),
            ("seconds_per_call", json_number(r.m.seconds_per_call)),
            ("gelem_per_s", json_number(r.gelem())),
            ("gbytes_per_s", json_number(r.gbytes())),
            ("vs_naive", json_number(r.vs_naive)),
            ("vs_copy_scale", json_number(r.vs_copy)),
            ("max_error", json_number(r.m.error)),
            ("ok", r.ok().to_string()),
            ("samples", r.m.samples.to_string()),
            ("calls_per_sample", r.m.calls_per_sample.to_string()),
        ];
        let body: Vec<String> = fields
            .iter()
            .map(|(k, v)| format!("{}: {v}", json_string(k)))
            .collect();
        let comma = if i + 1 < records.len() { "," } else { "" };
        let _ = writeln!(out, "    {{{}}}{comma}", body.join(", "));
    }
    out.push_str("  ]\n}\n");
    out
}

/// Softmax G elements/s against row length, one panel per thread count.
fn chart(records: &[Record], config: &Config) -> String {
    const ALGORITHM_COLORS: [(&str, &str); 4] = [
        ("three-pass", "#1f77b4"),
        ("two-pass", "#ff7f0e"),
        ("online", "#2ca02c"),
        ("auto", "#d62728"),
    ];
    let color = |op: Op| match op {
        Op::Naive => "#7f7f7f",
        Op::CopyScale => "#000000",
        _ => ALGORITHM_COLORS
            .iter()
            .find(|(name, _)| *name == op.algorithm())
            .map_or("#9467bd", |(_, c)| c),
    };
    // Line style tells the ISA apart; colour tells the algorithm.
    let dash = |op: Op| match op {
        Op::Naive => "2,3",
        Op::CopyScale => "",
        Op::Softmax(Isa::Scalar, _) => "5,4",
        Op::Softmax(Isa::Avx512, _) => "10,3,2,3",
        _ => "",
    };
    let charted = |op: Op| matches!(op, Op::Naive | Op::CopyScale | Op::Softmax(..));
    let mut panels = Vec::new();
    for &threads in &config.threads {
        let here: Vec<&Record> = records
            .iter()
            .filter(|r| r.threads == threads && charted(r.op))
            .collect();
        if here.is_empty() {
            continue;
        }
        let mut series: Vec<svg::Series> = Vec::new();
        for r in &here {
            let label = match r.op {
                Op::Softmax(isa, a) => format!("{isa} {}", a.name()),
                Op::Naive => "naive scalar softmax".into(),
                _ => format!("copy-scale ({})", r.op.isa()),
            };
            // One line per (ISA, algorithm) through the in-cache shapes; where two
            // in-cache shapes share a row length the larger batch is on the line.
            let on_line = !r.out_of_cache
                && !here.iter().any(|o| {
                    o.op == r.op
                        && !o.out_of_cache
                        && o.shape.cols == r.shape.cols
                        && o.shape.rows > r.shape.rows
                });
            let point = svg::Point {
                x: r.shape.cols as f64,
                y: r.gelem(),
                on_line,
            };
            match series.iter_mut().find(|s| s.label == label) {
                Some(s) => s.points.push(point),
                None => series.push(svg::Series {
                    label,
                    color: color(r.op),
                    dash: dash(r.op),
                    points: vec![point],
                }),
            }
        }
        panels.push(svg::Panel {
            title: match threads {
                1 => "1 thread".into(),
                n => format!("{n} threads (rayon pool)"),
            },
            series,
        });
    }
    svg::render(&svg::Chart {
        title: format!("softmax throughput, {}", cpu_model()),
        x_label: "row length (elements, log scale)".into(),
        y_label: "G elements/s (log scale)".into(),
        x_ticks: {
            let mut cols: Vec<f64> = records.iter().map(|r| r.shape.cols as f64).collect();
            cols.sort_by(f64::total_cmp);
            cols.dedup();
            cols
        },
        notes: vec![
            "Filled markers on lines: in-cache shapes (the largest batch per row length).".into(),
            "Hollow markers: out-of-cache shapes and smaller batches of a row length already on the line.".into(),
            "Colour: algorithm; dashes: ISA (scalar dashed, AVX-512 dash-dot); grey: naive loop; black: copy-scale.".into(),
        ],
        panels,
    })
}

/// One line per (shape, threads): the fastest softmax configuration and what
/// `Algorithm::Auto` on the detected ISA gets, the numbers a README quotes.
fn print_summary(records: &[Record]) {
    println!("fastest softmax per shape, and auto on the detected ISA (Gelem/s, ×naive, ×copy)");
    let mut keys: Vec<(Shape, usize)> = Vec::new();
    for r in records {
        if !keys.contains(&(r.shape, r.threads)) {
            keys.push((r.shape, r.threads));
        }
    }
    let numbers =
        |r: &Record| format!("{:>7.3} {:>6.2}× {:>5.2}", r.gelem(), r.vs_naive, r.vs_copy);
    for (shape, threads) in keys {
        let softmax = || {
            records
                .iter()
                .filter(move |r| r.shape == shape && r.threads == threads)
                .filter(|r| matches!(r.op, Op::Softmax(..)))
        };
        let Some(best) = softmax().max_by(|a, b| a.gelem().total_cmp(&b.gelem())) else {
            continue;
        };
        let auto = softmax().find(|r| r.op == Op::Softmax(Isa::detect(), Algorithm::Auto));
        let best_name = format!("{} {}", best.op.isa(), best.op.algorithm());
        println!(
            "  {shape:<12} {threads:>2} thr   best {best_name:<18} {}   {} auto {}",
            numbers(best),
            Isa::detect(),
            auto.map_or("-".into(), numbers)
        );
    }
    println!();
}

/// What was measured, where and how: everything needed to read the table.
fn print_header(machine: &Machine, config: &Config, seconds: f64) {
    let llc_source = machine.llc_source;
    let llc_bytes = machine.llc_bytes;
    let names = |isas: &[Isa]| isas.iter().map(|i| i.name()).collect::<Vec<_>>().join(", ");
    println!("softmax report");
    println!(
        "  cpu        {} ({} logical cores)",
        machine.cpu, machine.cores
    );
    println!(
        "  llc        {} MiB ({llc_source})",
        llc_bytes as f64 / (1 << 20) as f64
    );
    println!(
        "  isa        detected {}; available {}; measured {}",
        Isa::detect(),
        names(&Isa::available()),
        names(&config.isas)
    );
    println!(
        "  build      {} profile, {}; compile-time features {}",
        softmax::build_info::PROFILE,
        softmax::build_info::TARGET,
        softmax::build_info::TARGET_FEATURES
    );
    println!(
        "  timing     median of up to {} samples over ~{seconds:.3} s per configuration; threads {} \
         (1 = Parallelism::Serial, n = rayon pool of n)",
        config.samples,
        config
            .threads
            .iter()
            .map(|t| t.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!("  input      logits uniform in ±{LOGIT_RANGE}; GB/s counts each element read and written once");
    println!(
        "  check      every row vs the scalar ISA, three-pass: |Δ| ≤ {TOLERANCE:e}·max(1,|ref|)"
    );
    println!("  rows/call  the whole batch, unless one call would not fit the time (slow ISAs on big shapes): then blocks of rows, walked through the batch");
    println!("  ×naive     throughput / naive scalar softmax; ×copy: / copy-scale y = c·x (same shape, threads)");
    if config.threads.iter().any(|&t| t > 1) {
        println!(
            "  note       shapes under {} elements or with one row run on one thread whatever the pool, \
             so they are measured with 1 thread only",
            softmax::PARALLEL_MIN_ELEMENTS
        );
    }
    if let Some(busy) = machine.busy_before {
        println!(
            "  other work {busy:.2} of {} cores busy just before the run{}",
            machine.cores,
            if busy > BUSY_WARNING {
                " — expect low, noisy numbers"
            } else {
                ""
            }
        );
    }
}

fn write_outputs(dir: &Path, files: &[(&str, String)]) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    for (name, text) in files {
        let path = dir.join(name);
        std::fs::write(&path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    }
    Ok(())
}

// ---------------------------------------------------------------- main

fn main() {
    let config = match parse_args(std::env::args().skip(1)) {
        Ok(Some(config)) => config,
        Ok(None) => {
            println!("{USAGE}");
            return;
        }
        Err(message) => {
            eprintln!("report: {message}\n\n{USAGE}");
            std::process::exit(2);
        }
    };
    let started = Instant::now();
    let busy_before = busy_cores();
    let (llc_bytes, llc_source) = last_level_cache();
    let mut machine = Machine {
        cpu: cpu_model(),
        cores: cores(),
        llc_bytes,
        llc_source,
        busy_before,
        busy_after: None,
    };
    let ops = ops(&config);
    let configurations: usize = config
        .shapes
        .iter()
        .map(|&s| thread_counts(&config, s).len() * ops.len())
        .sum();
    let seconds = config
        .seconds
        .unwrap_or((DEFAULT_BUDGET_S / configurations as f64).clamp(0.02, 0.3));
    let pools: Vec<(usize, Option<Arc<ThreadPool>>)> = config
        .threads
        .iter()
        .map(|&n| {
            let pool = (n > 1).then(|| {
                let pool = rayon::ThreadPoolBuilder::new().num_threads(n).build();
                Arc::new(pool.expect("a rayon pool"))
            });
            (n, pool)
        })
        .collect();

    print_header(&machine, &config, seconds);
    println!();
    println!("{TABLE_HEADER}");

    let mut records: Vec<Record> = Vec::new();
    let mut done = 0;
    for (index, &shape) in config.shapes.iter().enumerate() {
        let mut work = Workload::new(shape, llc_bytes);
        let reference = Reference::new(&work);
        let cache_note = match work.out_of_cache {
            true => format!("out of cache, {} buffer set(s) rotated", work.sets()),
            false => "in cache".to_string(),
        };
        eprintln!(
            "[{}/{}] {shape} ({cache_note}): {} configurations; {done}/{configurations} done, {:.1} s elapsed",
            index + 1,
            config.shapes.len(),
            thread_counts(&config, shape).len() * ops.len(),
            started.elapsed().as_secs_f64()
        );
        for threads in thread_counts(&config, shape) {
            let pool = pools
                .iter()
                .find(|(n, _)| *n == threads)
                .and_then(|(_, p)| p.clone());
            let group = measure_group(
                &mut work,
                &reference,
                &ops,
                (threads, pool),
                seconds,
                config.samples,
            );
            done += group.len();
            for record in group {
                println!("{}", table_row(&record));
                records.push(record);
            }
        }
        println!();
    }

    print_summary(&records);
    machine.busy_after = busy_cores();
    let failed: Vec<&Record> = records.iter().filter(|r| !r.ok()).collect();
    let mut csv = format!("{CSV_HEADER}\n");
    for r in &records {
        csv.push_str(&csv_row(r));
        csv.push('\n');
    }
    let files = [
        ("results.csv", csv),
        (
            "results.json",
            json_document(&machine, &config, seconds, &records),
        ),
        ("throughput.svg", chart(&records, &config)),
    ];
    if let Err(message) = write_outputs(&config.out, &files) {
        eprintln!("report: {message}");
        std::process::exit(2);
    }
    let elapsed = started.elapsed().as_secs_f64();
    eprintln!("done: {} configurations in {elapsed:.1} s", records.len());
    println!(
        "wrote {0}/results.csv, {0}/results.json, {0}/throughput.svg in {elapsed:.1} s",
        config.out.display()
    );
    if let Some(busy) = machine.busy_after {
        println!(
            "other work: {busy:.2} of {} cores busy just after the run",
            machine.cores
        );
    }
    if failed.is_empty() {
        println!(
            "✓ all {} configurations agree with the scalar ISA",
            records.len()
        );
    } else {
        println!(
            "✗ {} of {} configurations differ from the scalar ISA:",
            failed.len(),
            records.len()
        );
        for r in &failed {
            println!("  {}", table_row(r));
        }
        std::process::exit(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(text: &str) -> Vec<String> {
        text.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn flags_parse() {
        let c = parse_args(args(
            "--shapes 2x8,1×4 --algorithms=online,auto --threads 1,3 --seconds 0.5 --out x",
        ))
        .unwrap()
        .unwrap();
        assert_eq!(
            c.shapes,
            [Shape { rows: 2, cols: 8 }, Shape { rows: 1, cols: 4 }]
        );
        assert_eq!(c.algorithms, [Algorithm::Online, Algorithm::Auto]);
        assert_eq!(c.threads, [1, 3]);
        assert_eq!(c.seconds, Some(0.5));
        assert_eq!(c.out, PathBuf::from("x"));
        assert!(parse_args(args("--help")).unwrap().is_none());
        assert!(parse_args(args("--shapes 0x4")).is_err());
        assert!(parse_args(args("--seconds")).is_err());
        assert!(parse_args(args("--bogus")).is_err());
    }

    #[test]
    fn quick_keeps_explicit_flags() {
        let c = parse_args(args("--quick --seconds 1")).unwrap().unwrap();
        assert_eq!(c.seconds, Some(1.0));
        assert_eq!(c.shapes.len(), QUICK_SHAPES.len());
    }

    #[test]
    fn naive_softmax_sums_to_one() {
        let x = [1.0f32, 2.0, 3.0, -1.0];
        let mut y = [0.0f32; 4];
        naive_softmax(&x, &mut y);
        assert!((y.iter().sum::<f32>() - 1.0).abs() < 1e-6);
    }

    #[test]
    fn json_escapes() {
        assert_eq!(json_string("a\"b\\c\n"), r#""a\"b\\c\u000a""#);
        assert_eq!(json_number(f64::NAN), "null");
    }
}
