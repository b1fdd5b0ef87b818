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
//! A second table, "half precision", measures softmax (`Algorithm::Auto`, the
//! detected ISA) with f16 and bf16 storage beside f32 on a few of those shapes
//! (single rows, a small batch, the out-of-cache batch), and gives each pair of
//! element types its throughput as a multiple of f32→f32's in the same run.
//!
//! A third table, "training", measures on one f32 batch (by default 512×128256:
//! 263 MB per tensor) the backward passes of softmax and log-softmax and
//! cross-entropy from logits (loss and gradient, out of place and in place; the
//! loss alone) beside the forward softmax, and gives each its throughput as a
//! multiple of the forward softmax's in the same run.
//!
//! A fourth table, "sampling", draws one token from one f32 row of LLM-like
//! logits (by default 128256 wide; the library's `sampling` module) with `Sampler` in the
//! configurations engines use, one thread, and gives each its median time as a
//! multiple of the forward softmax of the same row, and the full-sort sampler
//! engines write as a multiple of each, all measured in the same run.
//!
//! Every configuration is checked once against the crate's scalar ISA before it
//! is timed (half-precision outputs within one unit in the last place of their
//! type; training passes on a few rows). Results go to stdout as tables, progress to stderr, and files to
//! `report-out/`: results.csv, results.json and throughput.svg.
//!
//! The report is the binary of the softmax-report crate, whose library it shares
//! with the criterion benches. Only std, rayon, pulp and half are used: flags,
//! CSV, JSON and SVG are by hand.

#![forbid(unsafe_code)]

mod svg;

use rayon::prelude::*;
use rayon::ThreadPool;
use softmax::half::{bf16, f16};
use softmax::{Algorithm, Element, Isa, Parallelism, Rows, RowsMut, Softmax};
use softmax_report::baselines::{copy_scale, naive_softmax};
use softmax_report::sampling::{self, Case, SamplingRow, QUICK_SAMPLING_COLS, SAMPLING_COLS};
use softmax_report::training::{Pass, Training, TRAINING_TOLERANCE};
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
/// The training table's batch: 512 rows of a 128256-token vocabulary, f32
/// (263 MB per tensor; its passes touch two or three of them).
const TRAINING_SHAPE: Shape = Shape {
    rows: 512,
    cols: 128256,
};
const QUICK_TRAINING_SHAPE: Shape = Shape {
    rows: 64,
    cols: 4096,
};
/// The standard shapes the half-precision table measures: single rows and a
/// small batch in cache, and the batch that spills the cache.
const HALF_SHAPES: [(usize, usize); 4] = [(1, 1024), (1, 32000), (64, 1024), (512, 32000)];
/// Element pairs (input→output) of the half-precision table; f32→f32 is its yardstick.
const ALL_PAIRS: [Pair; 5] = [
    Pair::F32,
    Pair::same(Dtype::F16),
    Pair::same(Dtype::Bf16),
    Pair {
        input: Dtype::F32,
        output: Dtype::F16,
    },
    Pair {
        input: Dtype::F16,
        output: Dtype::F32,
    },
];
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
/// Half-precision outputs: |Δ| ≤ 2^-p · max(|reference|, HALF_FLOOR) with p the
/// type's stored mantissa bits (one unit in the last place). Below the floor the
/// bound is absolute: 2^-24 for f16, its subnormal spacing, and 2^-21 for bf16.
const HALF_FLOOR: f64 = 1.0 / (1 << 14) as f64;
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
  --elements f32,f16,bf16,f32-f16,f16-f32
                            element pairs IN-OUT of the half-precision table
                            (softmax, auto, detected ISA; a single type is the
                            same in and out; default: those five; none: no
                            table); f32-f32 is always measured, as the yardstick.
                            Its shapes: those of --shapes if given, else the
                            standard 1x1024, 1x32000, 64x1024 and 512x32000
  --training 512x128256     the training table's shape (f32; default 512x128256,
                            with --quick 64x4096; none: no table): forward
                            softmax, softmax and log-softmax backward,
                            cross-entropy loss and gradient, loss alone
  --sampling 128256,32000   row lengths of the sampling table (f32, one row, one
                            thread; default 128256, with --quick 32000; none: no
                            table): Sampler with top-k 50 + top-p 0.9, no
                            truncation, min-p, top-p, against the forward softmax
                            and a full-sort sampler
  --out DIR                 where results.csv, results.json and throughput.svg
                            go (default: report-out)
  --quick                   a few seconds: two small shapes, short samples
  --help                    this text

Exits 1 if any configuration differs from the scalar ISA by more than
1e-6 · max(1, |reference|) (half-precision outputs: 2^-10 for f16, 2^-7 for
bf16, · max(|reference|, 2^-14); training passes: 1e-5 · the row's largest
|reference|; samplers: a kept set other than a full sort's, a token outside
it, a frequency more than 5 standard errors off, or a token other than the
scalar ISA's where they must agree), 2 on a bad flag or an unwritable output
directory.";

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

/// An element type of the API.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Dtype {
    F32,
    F16,
    Bf16,
}

impl Dtype {
    fn name(self) -> &'static str {
        match self {
            Dtype::F32 => "f32",
            Dtype::F16 => "f16",
            Dtype::Bf16 => "bf16",
        }
    }

    fn parse(name: &str) -> Result<Dtype, String> {
        [Dtype::F32, Dtype::F16, Dtype::Bf16]
            .into_iter()
            .find(|d| d.name() == name.trim().to_ascii_lowercase())
            .ok_or_else(|| format!("unknown element type {name:?}; expected f32, f16 or bf16"))
    }

    fn bytes(self) -> usize {
        match self {
            Dtype::F32 => 4,
            Dtype::F16 | Dtype::Bf16 => 2,
        }
    }

    /// `v` stored as this type and widened back: what the kernels read.
    fn round(self, v: f32) -> f32 {
        match self {
            Dtype::F32 => v,
            Dtype::F16 => f16::from_f32(v).to_f32(),
            Dtype::Bf16 => bf16::from_f32(v).to_f32(),
        }
    }

    /// An output of this type passes if |Δ| / error_scale(reference) ≤ tolerance.
    fn error_scale(self, reference: f64) -> f64 {
        match self {
            Dtype::F32 => reference.abs().max(1.0),
            Dtype::F16 | Dtype::Bf16 => reference.abs().max(HALF_FLOOR),
        }
    }

    /// One unit in the last place for half precision (10 and 7 stored mantissa bits).
    fn tolerance(self) -> f64 {
        match self {
            Dtype::F32 => TOLERANCE,
            Dtype::F16 => 1.0 / (1 << 10) as f64,
            Dtype::Bf16 => 1.0 / (1 << 7) as f64,
        }
    }
}

/// The element types the report stores, with the report's name for each.
trait Storage: Element {
    const DTYPE: Dtype;
}

impl Storage for f32 {
    const DTYPE: Dtype = Dtype::F32;
}

impl Storage for f16 {
    const DTYPE: Dtype = Dtype::F16;
}

impl Storage for bf16 {
    const DTYPE: Dtype = Dtype::Bf16;
}

/// Input and output element types of a call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Pair {
    input: Dtype,
    output: Dtype,
}

impl Pair {
    const F32: Pair = Pair::same(Dtype::F32);

    const fn same(dtype: Dtype) -> Pair {
        Pair {
            input: dtype,
            output: dtype,
        }
    }

    /// "f16" (same in and out) or "f32-f16" (in-out).
    fn parse(text: &str) -> Result<Pair, String> {
        match text.split_once(['-', '→']) {
            Some((input, output)) => Ok(Pair {
                input: Dtype::parse(input)?,
                output: Dtype::parse(output)?,
            }),
            None => Dtype::parse(text).map(Pair::same),
        }
    }
}

impl fmt::Display for Pair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(&format!("{}→{}", self.input.name(), self.output.name()))
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
    /// The half-precision table: its element pairs (f32→f32 among them, or
    /// none) and its shapes.
    pairs: Vec<Pair>,
    half_shapes: Vec<Shape>,
    /// The training table's shape, or none.
    training: Option<Shape>,
    /// The sampling table's row lengths (none: no table).
    sampling: Vec<usize>,
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
        pairs: ALL_PAIRS.to_vec(),
        half_shapes: Vec::new(),
        training: Some(TRAINING_SHAPE),
        sampling: vec![SAMPLING_COLS],
    };
    let (mut quick, mut shapes_given, mut seconds_given, mut samples_given) =
        (false, false, false, false);
    let (mut training_given, mut sampling_given) = (false, false);
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
            "--elements" => {
                config.pairs = match value()?.trim() {
                    "none" => Vec::new(),
                    pairs => list(pairs, Pair::parse)?,
                }
            }
            "--training" => {
                config.training = match value()?.trim() {
                    "none" => None,
                    shape => Some(Shape::parse(shape)?),
                };
                training_given = true;
            }
            "--sampling" => {
                config.sampling = match value()?.trim() {
                    "none" => Vec::new(),
                    cols => list(cols, |c| match c.parse::<usize>() {
                        Ok(n) if n >= 1 => Ok(n),
                        _ => Err(format!("bad row length {c:?}: expected an integer ≥ 1")),
                    })?,
                };
                sampling_given = true;
            }
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
        if !training_given {
            config.training = Some(QUICK_TRAINING_SHAPE);
        }
        if !sampling_given {
            config.sampling = vec![QUICK_SAMPLING_COLS];
        }
    }
    config.threads.dedup();
    if !config.pairs.is_empty() && !config.pairs.contains(&Pair::F32) {
        config.pairs.insert(0, Pair::F32);
    }
    config.half_shapes = match (config.pairs.is_empty(), shapes_given) {
        (true, _) => Vec::new(),
        (false, true) => config.shapes.clone(),
        (false, false) => config
            .shapes
            .iter()
            .copied()
            .filter(|s| HALF_SHAPES.contains(&(s.rows, s.cols)))
            .collect(),
    };
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
    /// A pass of the training table, on the detected ISA.
    Training(Pass),
    /// A case of the sampling table, on the detected ISA.
    Sampling(Case),
}

impl Op {
    fn name(self) -> &'static str {
        match self {
            Op::Naive => "naive",
            Op::CopyScale => "copy-scale",
            Op::Softmax(..) => "softmax",
            Op::LogSoftmax(..) => "log-softmax",
            Op::LogSumExp(..) => "logsumexp",
            Op::Training(pass) => pass.name(),
            Op::Sampling(case) => case.name(),
        }
    }

    fn isa(self) -> String {
        match self {
            Op::Naive => "scalar".into(),
            Op::CopyScale | Op::Training(_) | Op::Sampling(_) => format!("{}", Isa::detect()),
            Op::Softmax(isa, _) | Op::LogSoftmax(isa, _) | Op::LogSumExp(isa, _) => isa.to_string(),
        }
    }

    fn algorithm(self) -> &'static str {
        match self {
            Op::Naive => "3-loop",
            Op::CopyScale => "y=c·x",
            Op::Softmax(_, a) | Op::LogSoftmax(_, a) | Op::LogSumExp(_, a) => a.name(),
            Op::Training(Pass::Forward) => Algorithm::Auto.name(),
            Op::Training(_) => "-",
            Op::Sampling(case) => case.method(),
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

/// One call touches x and y, f32 each. Over half the LLC does not stay resident
/// (other data, associativity, AMD's victim L3), so treat it as memory.
fn out_of_cache(shape: Shape, llc_bytes: usize) -> bool {
    shape.elements() * 8 > llc_bytes / 2
}

/// Out of cache, rotate through sets totalling ≥ 2 × LLC so a set is evicted
/// before it comes round again: more sets when the element types are narrower.
fn buffer_sets(out_of_cache: bool, footprint: usize, llc_bytes: usize) -> usize {
    match out_of_cache {
        true => (2 * llc_bytes).div_ceil(footprint).max(1),
        false => 1,
    }
}

/// Logits uniform in ±LOGIT_RANGE, the same for every shape of this many elements.
fn logits(count: usize) -> Vec<f32> {
    let mut rng = 0x9e37_79b9_7f4a_7c15u64;
    (0..count)
        .map(|_| {
            // xorshift64*: reproducible, and no dependency for random numbers.
            rng ^= rng >> 12;
            rng ^= rng << 25;
            rng ^= rng >> 27;
            let unit = (rng.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 40) as f32 / (1 << 24) as f32;
            (2.0 * unit - 1.0) * LOGIT_RANGE
        })
        .collect()
}

impl Workload {
    fn new(shape: Shape, llc_bytes: usize) -> Self {
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
            Op::Training(_) | Op::Sampling(_) => {
                unreachable!("those tables have their own workloads")
            }
        };
        result.unwrap_or_else(|e| panic!("{} refused a valid call: {e}", op.name()));
    }
}

/// Half-precision inputs and outputs for one shape and element pair: softmax
/// only, so no logsumexp buffers. The sets are sized by this pair's bytes.
struct Typed<I, O> {
    shape: Shape,
    x: Vec<Vec<I>>,
    y: Vec<Vec<O>>,
    out_of_cache: bool,
}

impl<I: Storage, O: Storage> Typed<I, O> {
    fn new(shape: Shape, logits: &[f32], llc_bytes: usize) -> Self {
        // In or out of cache as the f32 table has it, so every pair of a shape
        // is on the same side; a half-precision pair gets more sets instead.
        let out_of_cache = out_of_cache(shape, llc_bytes);
        let footprint = shape.elements() * (I::DTYPE.bytes() + O::DTYPE.bytes());
        let sets = buffer_sets(out_of_cache, footprint, llc_bytes);
        let x: Vec<I> = logits.iter().map(|&v| I::from_f32(v)).collect();
        Self {
            shape,
            x: vec![x; sets],
            y: vec![vec![O::from_f32(f32::NAN); shape.elements()]; sets],
            out_of_cache,
        }
    }

    fn sets(&self) -> usize {
        self.x.len()
    }
}

/// What `measure` times: calls on blocks of rows of one shape, in buffer sets.
trait Timed {
    fn shape(&self) -> Shape;
    fn sets(&self) -> usize;

    /// One call on `count` rows from `at`.
    fn run(&mut self, at: Slot, count: usize);

    /// One call on the first `count` rows of set 0, with their outputs poisoned
    /// with NaN first so a skipped element cannot pass: its seconds, and its
    /// error against the scalar ISA.
    fn checked_call(&mut self, count: usize) -> (f64, f64);

    /// Where the `call`-th call of `block` rows works: consecutive blocks of
    /// one set, then the next set, so memory is cold again when a block comes round.
    fn slot(&self, block: usize, call: usize) -> Slot {
        let blocks = self.shape().rows / block;
        let index = call % (blocks * self.sets());
        Slot {
            set: index / blocks,
            row: index % blocks * block,
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
        let start = Slot { set: 0, row: 0 };
        let one_call = seconds_of(|| work.run(op, self.options, start, count, self.pool));
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
            Op::LogSumExp(..) => max_error(&work.lse[0][..count], &reference.logsumexp[..count]),
            Op::Training(_) | Op::Sampling(_) => {
                unreachable!("those tables have their own workloads")
            }
        };
        (one_call, error)
    }
}

/// Softmax of a half-precision table pair; `want` is the scalar ISA's softmax
/// of the input as stored (rounded to the input type), in f32.
struct TypedRun<'a, I, O> {
    work: &'a mut Typed<I, O>,
    want: &'a [f32],
    options: &'a Softmax,
}

impl<I: Storage, O: Storage> Timed for TypedRun<'_, I, O> {
    fn shape(&self) -> Shape {
        self.work.shape
    }

    fn sets(&self) -> usize {
        self.work.sets()
    }

    fn run(&mut self, at: Slot, count: usize) {
        let cols = self.work.shape.cols;
        let elements = at.row * cols..(at.row + count) * cols;
        let x = Rows::contiguous(&self.work.x[at.set][elements.clone()], cols).expect("whole rows");
        let y = RowsMut::contiguous(&mut self.work.y[at.set][elements], cols).expect("whole rows");
        let result = self.options.softmax_rows(x, y);
        result.unwrap_or_else(|e| panic!("softmax refused a valid call: {e}"));
    }

    fn checked_call(&mut self, count: usize) -> (f64, f64) {
        let elements = 0..count * self.work.shape.cols;
        self.work.y[0][elements.clone()].fill(O::from_f32(f32::NAN));
        let one_call = seconds_of(|| self.run(Slot { set: 0, row: 0 }, count));
        let error = max_error(&self.work.y[0][elements.clone()], &self.want[elements]);
        (one_call, error)
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

/// The scalar ISA's softmax of `logits` stored as `input` (what the kernels read), in f32.
fn reference_softmax(input: Dtype, logits: &[f32], cols: usize) -> Vec<f32> {
    let scalar = Softmax::new()
        .isa(Isa::Scalar)
        .expect("the scalar ISA is always available")
        .algorithm(Algorithm::ThreePass)
        .parallelism(Parallelism::Serial);
    let x: Vec<f32> = logits.iter().map(|&v| input.round(v)).collect();
    let mut y = vec![0.0; x.len()];
    scalar
        .softmax_rows(
            Rows::contiguous(x.as_slice(), cols).unwrap(),
            RowsMut::contiguous(&mut y, cols).unwrap(),
        )
        .unwrap();
    y
}

/// max |got − want| / max(1, |want|) for f32 outputs, / max(|want|, 2^-14) for
/// half-precision ones (then compared with one unit in their last place);
/// infinite if anything is NaN.
fn max_error<O: Storage>(got: &[O], want: &[f32]) -> f64 {
    let mut worst = 0.0f64;
    for (&g, &w) in got.iter().zip(want) {
        let err = (g.to_f32() as f64 - w as f64).abs() / O::DTYPE.error_scale(w as f64);
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

/// Checks `job` once and times it for about `seconds`.
///
/// A slow configuration on a big batch (the scalar ISA on 512×32000 takes
/// seconds per call) cannot afford even a few whole-batch calls, so a probe
/// call sizes the work first: whole batches when they fit, else blocks of
/// rows sized to one sample. Consecutive calls walk through the batch (and the
/// buffer sets), so blocks of an out-of-cache shape still meet cold memory.
/// The median sample is kept, which shrugs off one disturbed by another process.
fn measure(job: &mut impl Timed, seconds: f64, samples: usize) -> Measurement {
    let Shape { rows, cols } = job.shape();
    let start = Slot { set: 0, row: 0 };

    // The probe doubles as the warm-up (code, pool threads, page tables).
    let probe_rows = rows.min(PROBE_ELEMENTS.div_ceil(cols));
    let per_row = seconds_of(|| job.run(start, probe_rows)) / probe_rows as f64;
    let block_rows = match per_row * rows as f64 <= seconds / MIN_SAMPLES as f64 {
        true => rows,
        false => ((seconds / samples as f64 / per_row) as usize).clamp(probe_rows, rows),
    };

    // The check: one block, which also times one call.
    let (one_call, error) = job.checked_call(block_rows);

    // Slow whole-batch calls get fewer samples (down to MIN_SAMPLES) rather than overrun.
    let samples = ((seconds / one_call) as usize).clamp(MIN_SAMPLES.min(samples), samples);
    let calls_per_sample = ((seconds / samples as f64 / one_call) as usize).max(1);
    let mut call = 1;
    let mut per_call: Vec<f64> = (0..samples)
        .map(|_| {
            let sample = seconds_of(|| {
                for _ in 0..calls_per_sample {
                    let at = job.slot(block_rows, call);
                    job.run(at, block_rows);
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
            Op::Training(_) | Op::Sampling(_) => {
                unreachable!("those tables have their own workloads")
            }
        };
        let options = Softmax::new()
            .isa(isa)
            .expect("ISAs were checked when parsed")
            .algorithm(algorithm)
            .parallelism(parallelism(&pool));
        let (shape, out_of_cache, buffer_sets) = (work.shape, work.out_of_cache, work.sets());
        let mut job = OpRun {
            work,
            reference,
            op,
            options: &options,
            pool: pool.as_deref(),
        };
        group.push(Record {
            shape,
            op,
            threads,
            out_of_cache,
            buffer_sets,
            m: measure(&mut job, seconds, samples),
            vs_naive: f64::NAN,
            vs_copy: f64::NAN,
            section: Section::Main,
            elements: Pair::F32,
            vs_f32: f64::NAN,
            vs_forward: f64::NAN,
            vs_full_sort: f64::NAN,
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

/// 1 thread: `Parallelism::Serial`; n: the pool of n threads.
fn parallelism(pool: &Option<Arc<ThreadPool>>) -> Parallelism {
    match pool {
        Some(pool) => Parallelism::Pool(pool.clone()),
        None => Parallelism::Serial,
    }
}

/// The half-precision table for one shape: softmax, auto, detected ISA, every
/// element pair with every thread count, then each throughput ÷ f32→f32's with
/// the same thread count. Rows come out by thread count, then pair.
fn measure_half_shape(
    shape: Shape,
    pairs: &[Pair],
    pools: &[(usize, Option<Arc<ThreadPool>>)],
    llc_bytes: usize,
    (seconds, samples): (f64, usize),
) -> Vec<Record> {
    let logits = logits(shape.elements());
    let mut wants: Vec<(Dtype, Vec<f32>)> = Vec::new();
    let mut records = Vec::new();
    for &pair in pairs {
        if !wants.iter().any(|(d, _)| *d == pair.input) {
            wants.push((
                pair.input,
                reference_softmax(pair.input, &logits, shape.cols),
            ));
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
    pools: &'a [(usize, Option<Arc<ThreadPool>>)],
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

    fn measure_from<I: Storage>(&self, output: Dtype) -> Vec<Record> {
        match output {
            Dtype::F32 => self.measure_typed::<I, f32>(),
            Dtype::F16 => self.measure_typed::<I, f16>(),
            Dtype::Bf16 => self.measure_typed::<I, bf16>(),
        }
    }

    fn measure_typed<I: Storage, O: Storage>(&self) -> Vec<Record> {
        let mut work = Typed::<I, O>::new(self.shape, self.logits, self.llc_bytes);
        let op = Op::Softmax(Isa::detect(), Algorithm::Auto);
        let mut records = Vec::new();
        for (threads, pool) in self.pools {
            let options = Softmax::new()
                .isa(Isa::detect())
                .expect("the detected ISA is available")
                .algorithm(Algorithm::Auto)
                .parallelism(parallelism(pool));
            let (out_of_cache, buffer_sets) = (work.out_of_cache, work.sets());
            let mut job = TypedRun {
                work: &mut work,
                want: self.want,
                options: &options,
            };
            records.push(Record {
                shape: self.shape,
                op,
                threads: *threads,
                out_of_cache,
                buffer_sets,
                m: measure(&mut job, self.seconds, self.samples),
                vs_naive: f64::NAN,
                vs_copy: f64::NAN,
                section: Section::HalfPrecision,
                elements: Pair {
                    input: I::DTYPE,
                    output: O::DTYPE,
                },
                vs_f32: f64::NAN,
                vs_forward: f64::NAN,
                vs_full_sort: f64::NAN,
            });
        }
        records
    }
}

// ---------------------------------------------------------------- training

/// Checks `pass` once (which also warms it up) and times whole-batch calls:
/// `samples` samples of as many calls as fill about `seconds`, at least one.
/// Only the calls are timed, not the copy that hands an in-place pass its input.
fn measure_training(
    work: &mut Training,
    pass: Pass,
    (softmax, cross_entropy): (&Softmax, &softmax::CrossEntropy<'_>),
    seconds: f64,
    samples: usize,
) -> Measurement {
    let error = work.check(pass, softmax, cross_entropy);
    let timed_call = |work: &mut Training| {
        work.reset(pass);
        seconds_of(|| {
            let result = work.call(pass, softmax, cross_entropy);
            result.unwrap_or_else(|e| panic!("{} refused a valid call: {e}", pass.name()));
        })
    };
    let one_call = timed_call(work);
    let calls_per_sample = ((seconds / samples as f64 / one_call) as usize).max(1);
    let mut per_call: Vec<f64> = (0..samples)
        .map(|_| {
            let sample: f64 = (0..calls_per_sample).map(|_| timed_call(work)).sum();
            sample / calls_per_sample as f64
        })
        .collect();
    per_call.sort_by(f64::total_cmp);
    Measurement {
        block_rows: work.rows,
        error,
        seconds_per_call: per_call[per_call.len() / 2],
        samples,
        calls_per_sample,
    }
}

/// The training table: every pass with every thread count, detected ISA,
/// then each throughput ÷ the forward softmax's with the same thread count.
fn measure_training_shape(
    shape: Shape,
    pools: &[(usize, Option<Arc<ThreadPool>>)],
    llc_bytes: usize,
    (seconds, samples): (f64, usize),
) -> Vec<Record> {
    let mut work = Training::new(shape.rows, shape.cols);
    let mut records = Vec::new();
    for (threads, pool) in pools {
        let softmax = Softmax::new()
            .isa(Isa::detect())
            .expect("the detected ISA is available")
            .algorithm(Algorithm::Auto)
            .parallelism(parallelism(pool));
        let cross_entropy = softmax::CrossEntropy::new()
            .isa(Isa::detect())
            .expect("the detected ISA is available")
            .parallelism(parallelism(pool));
        let mut group: Vec<Record> = Pass::ALL
            .iter()
            .map(|&pass| Record {
                shape,
                op: Op::Training(pass),
                threads: *threads,
                out_of_cache: out_of_cache(shape, llc_bytes),
                buffer_sets: 1,
                m: measure_training(
                    &mut work,
                    pass,
                    (&softmax, &cross_entropy),
                    seconds,
                    samples,
                ),
                vs_naive: f64::NAN,
                vs_copy: f64::NAN,
                section: Section::Training,
                elements: Pair::F32,
                vs_f32: f64::NAN,
                vs_forward: f64::NAN,
                vs_full_sort: f64::NAN,
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

// ---------------------------------------------------------------- results

/// Which table a record belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Section {
    /// Every ISA × algorithm × op, f32 in and out.
    Main,
    /// Softmax, auto, detected ISA, by element types.
    HalfPrecision,
    /// Backward passes and cross-entropy beside the forward softmax, f32.
    Training,
    /// Samplers on one f32 row beside its forward softmax and a full sort.
    Sampling,
}

impl Section {
    fn name(self) -> &'static str {
        match self {
            Section::Main => "main",
            Section::HalfPrecision => "half-precision",
            Section::Training => "training",
            Section::Sampling => "sampling",
        }
    }
}

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
    section: Section,
    elements: Pair,
    /// Half-precision table: throughput ÷ f32→f32's, same shape and threads.
    vs_f32: f64,
    /// Training and sampling tables: throughput ÷ the forward softmax's, same
    /// shape and threads (for a sampler, the softmax's time ÷ its time).
    vs_forward: f64,
    /// Sampling table: the full-sort sampler's time ÷ this one's.
    vs_full_sort: f64,
}

impl Record {
    fn elements_per_s(&self) -> f64 {
        (self.m.block_rows * self.shape.cols) as f64 / self.m.seconds_per_call
    }
    fn gelem(&self) -> f64 {
        self.elements_per_s() / 1e9
    }
    /// Bytes each element costs when read and written once: logsumexp only reads.
    fn bytes_per_element(&self) -> f64 {
        let (input, output) = (self.elements.input.bytes(), self.elements.output.bytes());
        match self.op {
            Op::LogSumExp(..) => input as f64,
            Op::Training(pass) => pass.bytes_per_element() as f64,
            Op::Sampling(case) => case.bytes_per_element() as f64,
            _ => (input + output) as f64,
        }
    }
    fn gbytes(&self) -> f64 {
        self.elements_per_s() * self.bytes_per_element() / 1e9
    }
    fn tolerance(&self) -> f64 {
        match self.section {
            Section::Training => TRAINING_TOLERANCE,
            Section::Sampling => match self.op {
                Op::Sampling(case) => case.tolerance(),
                _ => unreachable!("the sampling table holds sampling cases"),
            },
            _ => self.elements.output.tolerance(),
        }
    }
    fn ok(&self) -> bool {
        // Copy-scale must be exact; everything else within the tolerance.
        match self.op {
            Op::CopyScale => self.m.error == 0.0,
            _ => self.m.error <= self.tolerance(),
        }
    }
}

const TABLE_HEADER: &str =
    "shape        rows/call  op           algorithm   isa     thr   Gelem/s     GB/s  ×naive   ×copy    max|Δ|";

fn error_text(error: f64) -> String {
    match error {
        0.0 => "0".to_string(),
        e if e.is_finite() => format!("{e:.1e}"),
        _ => "NaN".to_string(),
    }
}

fn table_row(r: &Record) -> String {
    match r.section {
        Section::HalfPrecision => return half_row(r),
        Section::Training => return training_row(r),
        Section::Sampling => return sampling_row(r, None),
        Section::Main => {}
    }
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
        error_text(r.m.error),
        if r.ok() { "✓" } else { "✗" }
    )
}

const HALF_TABLE_HEADER: &str =
    "shape        cache  thr  in→out     sets   Gelem/s     GB/s    ×f32  target        max|Δ|";

/// The issue's targets for f16→f16 and bf16→bf16 against f32→f32: in cache the
/// conversions must cost little, out of cache half the bytes must show.
fn half_target(r: &Record) -> Option<f64> {
    let same_half = r.elements.input == r.elements.output && r.elements.input != Dtype::F32;
    same_half.then_some(if r.out_of_cache { 1.6 } else { 0.9 })
}

fn half_row(r: &Record) -> String {
    let target = match half_target(r) {
        Some(t) if r.vs_f32 >= t => format!("≥{t:.1} met"),
        Some(t) => format!("≥{t:.1} missed"),
        None => String::new(),
    };
    format!(
        "{:<12} {:<5} {:>4}  {:<10} {:>4} {:>9.3} {:>8.2} {:>7.2}  {:<11} {:>8} {}",
        r.shape,
        if r.out_of_cache { "out" } else { "in" },
        r.threads,
        r.elements,
        r.buffer_sets,
        r.gelem(),
        r.gbytes(),
        r.vs_f32,
        target,
        error_text(r.m.error),
        if r.ok() { "✓" } else { "✗" }
    )
}

/// What the half-precision table measured and how to read it.
fn print_half_header(config: &Config) {
    println!(
        "half precision: softmax, auto on {} (the detected ISA), by element types in→out",
        Isa::detect()
    );
    println!("  input      the same logits as above, rounded to the input type; arithmetic is f32");
    println!(
        "  ×f32       Gelem/s ÷ f32→f32's on the same shape and threads in this run; \
         target (f16→f16, bf16→bf16): ≥ 0.9 in cache, ≥ 1.6 out of cache"
    );
    println!(
        "  GB/s       bytes of the input and output types, each element read and written once"
    );
    println!(
        "  cache      out: buffer sets totalling ≥ 2 × LLC rotated (more sets for narrower types), as above"
    );
    println!(
        "  check      output widened to f32 vs the scalar ISA's softmax of the input as stored: \
         max|Δ| is |Δ|/max(1,|ref|) ≤ {TOLERANCE:e} for f32 out, |Δ|/max(|ref|,2^-14) ≤ 2^-10 for f16 out, ≤ 2^-7 for bf16 out"
    );
    if config.threads.iter().any(|&t| t > 1) {
        println!("  threads    1 = Parallelism::Serial, n = rayon pool of n, as above");
    }
}

const TRAINING_TABLE_HEADER: &str =
    "shape        cache  thr  op                           Gelem/s     GB/s  ×forward  target        max|Δ|";

fn training_row(r: &Record) -> String {
    let target = match r.op {
        Op::Training(pass) => pass.target(),
        _ => None,
    };
    let target = match target {
        Some(t) if r.vs_forward >= t => format!("≥{t:.1} met"),
        Some(t) => format!("≥{t:.1} missed"),
        None => String::new(),
    };
    format!(
        "{:<12} {:<5} {:>4}  {:<26} {:>9.3} {:>8.2} {:>9.2}  {:<11} {:>8} {}",
        r.shape,
        if r.out_of_cache { "out" } else { "in" },
        r.threads,
        r.op.name(),
        r.gelem(),
        r.gbytes(),
        r.vs_forward,
        target,
        error_text(r.m.error),
        if r.ok() { "✓" } else { "✗" }
    )
}

/// What the training table measured and how to read it.
fn print_training_header(shape: Shape) {
    println!(
        "training: f32 {shape} ({:.0} MB per tensor), {} (the detected ISA), whole batches",
        shape.elements() as f64 * 4e-6,
        Isa::detect()
    );
    println!(
        "  passes     softmax: softmax_rows, out of place, auto (the yardstick); softmax-backward,"
    );
    println!(
        "             log-softmax-backward: dx from the forward output y and an upstream g (±1);"
    );
    println!(
        "             ce-*: CrossEntropy (mean over rows, one class label per row): loss_and_grad"
    );
    println!("             into a gradient buffer, loss_and_grad_in_place, loss alone");
    println!(
        "  ×forward   Gelem/s ÷ the forward softmax's on the same shape and threads in this run; \
         target (backward, loss and gradient): ≥ 0.8"
    );
    println!("  GB/s       f32 tensors read and written once: backward 12 B/element, softmax and ce gradient 8, ce loss 4");
    println!("  timing     median of the samples; in-place passes get their input copied back before each call, untimed");
    println!(
        "  check      every output and row loss written; the returned loss is the mean of the row losses; \
         the first two and last two rows vs the scalar ISA: max|Δ| is |Δ| / the row's largest |ref| \
         (row losses: / max(1,|ref|)) ≤ {TRAINING_TOLERANCE:e}"
    );
}

// ---------------------------------------------------------------- sampling

/// Checks every case (which also warms it up), then times them interleaved;
/// each time ÷ the softmax's, and the full sort's ÷ each. With each record,
/// the number of tokens its case keeps.
fn measure_sampling_row(
    cols: usize,
    llc_bytes: usize,
    (seconds, samples): (f64, usize),
) -> Vec<(Record, Option<usize>)> {
    let mut work = SamplingRow::new(cols);
    let checks: Vec<sampling::Check> = Case::ALL.iter().map(|&c| work.check(c)).collect();
    let timings = sampling::time_interleaved(&mut work, &Case::ALL, seconds, samples);
    let shape = Shape { rows: 1, cols };
    let time_of = |wanted: Case| {
        let found = Case::ALL.iter().position(|&c| c == wanted);
        found.map_or(f64::NAN, |j| timings[j].seconds_per_call)
    };
    let (softmax_time, full_sort_time) = (time_of(Case::Softmax), time_of(Case::FullSort));
    Case::ALL
        .iter()
        .zip(checks.iter().zip(&timings))
        .map(|(&case, (check, timing))| {
            let record = Record {
                shape,
                op: Op::Sampling(case),
                threads: 1,
                out_of_cache: out_of_cache(shape, llc_bytes),
                buffer_sets: 1,
                m: Measurement {
                    block_rows: 1,
                    error: check.error,
                    seconds_per_call: timing.seconds_per_call,
                    samples: timing.samples,
                    calls_per_sample: timing.calls_per_sample,
                },
                vs_naive: f64::NAN,
                vs_copy: f64::NAN,
                section: Section::Sampling,
                elements: Pair::F32,
                vs_f32: f64::NAN,
                vs_forward: softmax_time / timing.seconds_per_call,
                vs_full_sort: full_sort_time / timing.seconds_per_call,
            };
            (record, check.kept)
        })
        .collect()
}

const SAMPLING_TABLE_HEADER: &str =
    "shape        sampler                    kept    µs/call   Gelem/s  ×softmax  target     ×full-sort  target        check";

/// One row of the sampling table; `kept`: tokens the case keeps, when known.
fn sampling_row(r: &Record, kept: Option<usize>) -> String {
    let (time_target, speedup_target) = match r.op {
        Op::Sampling(case) => (
            sampling::time_target(case, 1.0 / r.vs_forward),
            sampling::speedup_target(case, r.vs_full_sort),
        ),
        _ => (String::new(), String::new()),
    };
    format!(
        "{:<12} {:<24} {:>6} {:>10.2} {:>9.3} {:>9.3}  {:<9} {:>11.1}  {:<9} {:>9} {}",
        r.shape,
        r.op.name(),
        kept.map_or("-".into(), |k| k.to_string()),
        r.m.seconds_per_call * 1e6,
        r.gelem(),
        1.0 / r.vs_forward,
        time_target,
        r.vs_full_sort,
        speedup_target,
        match r.op {
            Op::Sampling(Case::Softmax | Case::FullSort) => error_text(r.m.error),
            _ if r.m.error.is_finite() => format!("z {:.1}", r.m.error),
            _ => "mismatch".into(),
        },
        if r.ok() { "✓" } else { "✗" }
    )
}

/// What the sampling table measured and how to read it.
fn print_sampling_header(cols: &[usize], samples: usize) {
    use sampling::{MIN_P, PEAKS, TOP_K, TOP_P};
    let peaks: Vec<String> = PEAKS.iter().map(|p| p.to_string()).collect();
    let cols: Vec<String> = cols.iter().map(|c| c.to_string()).collect();
    println!(
        "sampling: one f32 row of {} tokens, one thread, {} (the detected ISA), t = {}",
        cols.join(" and "),
        Isa::detect(),
        sampling::TEMPERATURE
    );
    println!(
        "  logits     N(0, {}²), seeded, with {} peaked tokens at {}",
        sampling::LOGIT_SIGMA,
        PEAKS.len(),
        peaks.join(", ")
    );
    println!("  cases      softmax: Softmax::softmax, out of place, auto (the yardstick)");
    println!(
        "             Sampler::sample: top-k {TOP_K} + top-p {TOP_P} (inverse CDF, Gumbel-max), \
         no truncation (both), min-p {MIN_P} alone, top-p {TOP_P} alone"
    );
    println!(
        "             full-sort-reference: x/t, sort every (value, index) pair, top-k {TOP_K}, \
         softmax over them, top-p {TOP_P} cut, one uniform (f32, scratch reused)"
    );
    println!("  kept       tokens the case keeps: finite truncated_logprobs (the full sort: its own set)");
    println!(
        "  ×softmax   median time per call ÷ the softmax's on the same row in this run \
         (lower is faster); target for top-k+top-p/inverse-cdf: ≤ {}",
        sampling::MAX_TIME_VS_SOFTMAX
    );
    println!(
        "  ×full-sort the full sort's median time ÷ this one's (higher is faster); \
         target for top-k+top-p/inverse-cdf: ≥ {}",
        sampling::MIN_SPEEDUP_VS_FULL_SORT
    );
    println!(
        "  timing     {samples} samples per case, the cases interleaved sample by sample; \
         each call draws at the next step"
    );
    println!(
        "  check      softmax: max|Δ| vs the scalar ISA ≤ {:e}·max(1,|ref|)",
        sampling::SOFTMAX_TOLERANCE
    );
    println!(
        "             samplers: the kept set is the one a full sort in f64 finds; {} draws, all \
         inside it; z: the largest |count − N·p| in standard errors (tokens with p ≥ 1%, the rest \
         pooled) ≤ {}; the scalar ISA's tokens where the draw does not depend on the ISA",
        sampling::DRAWS,
        sampling::Z_LIMIT
    );
    println!(
        "             full sort: the crate's kept set, max|Δp| vs exp(truncated_logprobs) ≤ {:e}",
        sampling::REFERENCE_TOLERANCE
    );
}

const CSV_HEADER: &str = "shape,rows,cols,op,algorithm,isa,threads,out_of_cache,buffer_sets,\
rows_per_call,seconds_per_call,gelem_per_s,gbytes_per_s,vs_naive,vs_copy_scale,max_error,ok,samples,calls_per_sample,\
section,in_type,out_type,vs_f32,tolerance,vs_forward,time_vs_forward,vs_full_sort";

fn csv_row(r: &Record) -> String {
    format!(
        "{},{},{},{},{},{},{},{},{},{},{:e},{:.6},{:.6},{:.4},{:.4},{:e},{},{},{},{},{},{},{:.4},{:e},{:.4},{:.4},{:.4}",
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
        r.m.calls_per_sample,
        r.section.name(),
        r.elements.input.name(),
        r.elements.output.name(),
        r.vs_f32,
        r.tolerance(),
        r.vs_forward,
        1.0 / r.vs_forward,
        r.vs_full_sort
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
    let _ = writeln!(out, "    \"threads\": [{}],", threads.join(", "));
    let pairs = config
        .pairs
        .iter()
        .map(|p| format!("{}-{}", p.input.name(), p.output.name()))
        .collect();
    let _ = writeln!(out, "    \"half_precision_pairs\": {},", strings(pairs));
    let shapes = config.half_shapes.iter().map(|s| s.to_string()).collect();
    let _ = writeln!(out, "    \"half_precision_shapes\": {},", strings(shapes));
    let training = config
        .training
        .map_or("null".into(), |s| json_string(&s.to_string()));
    let _ = writeln!(out, "    \"training_shape\": {training},");
    let sampling = config
        .sampling
        .iter()
        .map(|c| c.to_string())
        .collect::<Vec<_>>();
    let _ = writeln!(out, "    \"sampling_cols\": [{}]", sampling.join(", "));
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
            ("section", json_string(r.section.name())),
            ("in_type", json_string(r.elements.input.name())),
            ("out_type", json_string(r.elements.output.name())),
            ("vs_f32", json_number(r.vs_f32)),
            ("tolerance", json_number(r.tolerance())),
            ("vs_forward", json_number(r.vs_forward)),
            ("time_vs_forward", json_number(1.0 / r.vs_forward)),
            ("vs_full_sort", json_number(r.vs_full_sort)),
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
    // The f32 table only: the half-precision one repeats auto on other element types.
    let records: Vec<&Record> = records
        .iter()
        .filter(|r| r.section == Section::Main)
        .collect();
    let charted = |op: Op| matches!(op, Op::Naive | Op::CopyScale | Op::Softmax(..));
    let mut panels = Vec::new();
    for &threads in &config.threads {
        let here: Vec<&Record> = records
            .iter()
            .copied()
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
    let half_configurations: usize = config
        .half_shapes
        .iter()
        .map(|&s| thread_counts(&config, s).len() * config.pairs.len())
        .sum();
    let training_configurations = config
        .training
        .map_or(0, |s| thread_counts(&config, s).len() * Pass::ALL.len());
    let sampling_configurations = config.sampling.len() * Case::ALL.len();
    let configurations: usize = config
        .shapes
        .iter()
        .map(|&s| thread_counts(&config, s).len() * ops.len())
        .sum::<usize>()
        + half_configurations
        + training_configurations
        + sampling_configurations;
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
    let pools_for = |shape: Shape| -> Vec<(usize, Option<Arc<ThreadPool>>)> {
        let pool = |threads| pools.iter().find(|(n, _)| *n == threads).unwrap().clone();
        thread_counts(&config, shape)
            .into_iter()
            .map(pool)
            .collect()
    };

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
        for (threads, pool) in pools_for(shape) {
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

    // After the summary, which covers the f32 table only; the records join the files.
    if !config.half_shapes.is_empty() {
        print_half_header(&config);
        println!();
        println!("{HALF_TABLE_HEADER}");
    }
    for (index, &shape) in config.half_shapes.iter().enumerate() {
        let pools = pools_for(shape);
        let cache_note = match out_of_cache(shape, llc_bytes) {
            true => "out of cache",
            false => "in cache",
        };
        eprintln!(
            "[half {}/{}] {shape} ({cache_note}): {} configurations; {done}/{configurations} done, {:.1} s elapsed",
            index + 1,
            config.half_shapes.len(),
            pools.len() * config.pairs.len(),
            started.elapsed().as_secs_f64()
        );
        let group = measure_half_shape(
            shape,
            &config.pairs,
            &pools,
            llc_bytes,
            (seconds, config.samples),
        );
        done += group.len();
        for record in group {
            println!("{}", half_row(&record));
            records.push(record);
        }
        println!();
    }

    if let Some(shape) = config.training {
        let pools = pools_for(shape);
        print_training_header(shape);
        println!();
        println!("{TRAINING_TABLE_HEADER}");
        eprintln!(
            "[training] {shape}: {} configurations; {done}/{configurations} done, {:.1} s elapsed",
            pools.len() * Pass::ALL.len(),
            started.elapsed().as_secs_f64()
        );
        let group = measure_training_shape(shape, &pools, llc_bytes, (seconds, config.samples));
        done += group.len();
        for record in group {
            println!("{}", training_row(&record));
            records.push(record);
        }
        println!();
    }

    if !config.sampling.is_empty() {
        print_sampling_header(&config.sampling, config.samples);
        println!();
        println!("{SAMPLING_TABLE_HEADER}");
    }
    for &cols in &config.sampling {
        eprintln!(
            "[sampling] 1x{cols}: {} configurations; {done}/{configurations} done, {:.1} s elapsed",
            Case::ALL.len(),
            started.elapsed().as_secs_f64()
        );
        let group = measure_sampling_row(cols, llc_bytes, (seconds, config.samples));
        done += group.len();
        for (record, kept) in group {
            println!("{}", sampling_row(&record, kept));
            records.push(record);
        }
        println!();
    }

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
    fn elements_flag() {
        let c = parse_args(args("--elements bf16,f16-f32"))
            .unwrap()
            .unwrap();
        let bf16 = Pair::same(Dtype::Bf16);
        let f16_f32 = Pair {
            input: Dtype::F16,
            output: Dtype::F32,
        };
        // f32→f32, the yardstick, joins the list.
        assert_eq!(c.pairs, [Pair::F32, bf16, f16_f32]);
        assert_eq!(c.half_shapes.len(), HALF_SHAPES.len());
        let c = parse_args(args("--shapes 2x8 --elements none"))
            .unwrap()
            .unwrap();
        assert!(c.pairs.is_empty() && c.half_shapes.is_empty());
        let c = parse_args(args("--shapes 2x8")).unwrap().unwrap();
        assert_eq!(c.half_shapes, [Shape { rows: 2, cols: 8 }]);
        assert_eq!(f16_f32.to_string(), "f16→f32");
        assert!(parse_args(args("--elements f64")).is_err());
    }

    #[test]
    fn training_flag() {
        let shape = |text: &str| parse_args(args(text)).unwrap().unwrap().training;
        assert_eq!(shape(""), Some(TRAINING_SHAPE));
        assert_eq!(shape("--quick"), Some(QUICK_TRAINING_SHAPE));
        assert_eq!(shape("--quick --training none"), None);
        assert_eq!(
            shape("--training 8x100"),
            Some(Shape { rows: 8, cols: 100 })
        );
        assert!(parse_args(args("--training 0x4")).is_err());
    }

    #[test]
    fn sampling_flag() {
        let cols = |text: &str| parse_args(args(text)).unwrap().unwrap().sampling;
        assert_eq!(cols(""), vec![SAMPLING_COLS]);
        assert_eq!(cols("--quick"), vec![QUICK_SAMPLING_COLS]);
        assert_eq!(cols("--quick --sampling none"), Vec::<usize>::new());
        assert_eq!(cols("--sampling 32000,128256"), vec![32000, 128256]);
        assert!(parse_args(args("--sampling 0")).is_err());
        assert!(parse_args(args("--sampling x")).is_err());
    }

    #[test]
    fn sampling_cases_pass_their_checks_on_a_small_row() {
        let mut work = SamplingRow::new(3000);
        for case in Case::ALL {
            let check = work.check(case);
            assert!(
                check.error <= case.tolerance(),
                "{} on 3000: {check:?}",
                case.name()
            );
        }
    }

    #[test]
    fn sampling_logits_have_the_peaks_and_spread_wanted() {
        let x = sampling::realistic_logits(SAMPLING_COLS, sampling::SEED);
        for peak in sampling::PEAKS {
            assert_eq!(x.iter().filter(|&&v| v == peak).count(), 1);
        }
        let n = x.len() as f64;
        let mean = x.iter().map(|&v| v as f64).sum::<f64>() / n;
        let var = x.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / n;
        assert!(
            mean.abs() < 0.05 && (var.sqrt() - 2.0).abs() < 0.05,
            "{mean} {var}"
        );
    }
    #[test]
    fn training_passes_agree_with_the_scalar_isa() {
        // Rows of 37: a masked tail on every ISA; 3 rows: the check rows overlap.
        let mut work = Training::new(3, 37);
        for isa in Isa::available() {
            let softmax = Softmax::new().isa(isa).unwrap();
            let cross_entropy = softmax::CrossEntropy::new().isa(isa).unwrap();
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

    #[test]
    fn one_rounding_is_within_the_half_tolerances() {
        for dtype in [Dtype::F16, Dtype::Bf16] {
            for &v in &[1.0f32, 0.3, 1e-3, 7e-5, 3e-6, 1e-9, 0.0] {
                let err = (dtype.round(v) as f64 - v as f64).abs() / dtype.error_scale(v as f64);
                assert!(
                    err <= dtype.tolerance() / 2.0,
                    "{} {v}: {err:e}",
                    dtype.name()
                );
            }
        }
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
