//! The report's flags (clap), and the configuration they resolve to once
//! `--quick` and the defaults are applied.

use clap::Parser;
use softmax::{Algorithm, Isa};
use softmax_report::attention::Variant;
use softmax_report::sampling::{QUICK_SAMPLING_COLS, SAMPLING_COLS};
use softmax_report::workload::{
    Dtype, Pair, Shape, HALF_SHAPES, QUICK_SHAPES, SMALL_TRAINING_SHAPE, STANDARD_SHAPES,
    TRAINING_SHAPE,
};
use std::path::PathBuf;

const DEFAULT_SAMPLES: usize = 5;
pub const ALL_ALGORITHMS: [Algorithm; 3] =
    [Algorithm::ThreePass, Algorithm::Online, Algorithm::Auto];
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

const EXIT_CODES: &str = "\
Exits 1 if any configuration differs from the scalar ISA by more than
1e-6 · max(1, |reference|) (half-precision outputs: 2^-10 for f16, 2^-7 for
bf16, · max(|reference|, 2^-14); training passes and attention variants:
1e-5 · the row's largest |reference|; samplers: a kept set other than a full sort's, a token outside
it, a frequency more than 5 standard errors off, or a token other than the
scalar ISA's where they must agree), 2 on a bad flag or an unwritable output
directory.";

/// How fast is each ISA × algorithm of the softmax crate, compared with the
/// softmax people first write and with the memory bus?
#[derive(Parser, Debug)]
// A flag given twice keeps its last value, as it did before clap.
#[command(
    name = "report",
    verbatim_doc_comment,
    after_help = EXIT_CODES,
    args_override_self = true
)]
struct Flags {
    /// Shapes ROWSxCOLS, e.g. 1x1024,64x1024 (default: the
    /// standard eight)
    #[arg(long, verbatim_doc_comment, value_name = "LIST", value_parser = shapes)]
    shapes: Option<List<Shape>>,
    /// ISAs to measure, e.g. avx2,scalar (default: every
    /// available one)
    #[arg(long, verbatim_doc_comment, alias = "isas", value_name = "LIST", value_parser = isas)]
    isa: Option<List<Isa>>,
    /// Softmax algorithms: three-pass,online,auto
    /// (default: all; log-softmax and logsumexp are
    /// measured with auto when it is listed)
    #[arg(long, verbatim_doc_comment, alias = "algorithm", value_name = "LIST", value_parser = algorithms)]
    algorithms: Option<List<Algorithm>>,
    /// Thread counts, e.g. 1,2; 1 is Parallelism::Serial,
    /// n > 1 a rayon pool of n threads (default: 1 and all
    /// cores)
    #[arg(long, verbatim_doc_comment, value_name = "LIST", value_parser = thread_counts)]
    threads: Option<List<usize>>,
    /// Measuring time per configuration, e.g. 0.2 (default:
    /// 30 s spread over the configurations); a
    /// configuration too slow for whole-batch calls times
    /// blocks of rows
    #[arg(long, verbatim_doc_comment, value_name = "S", value_parser = positive_seconds)]
    seconds: Option<f64>,
    /// Timed samples per configuration; the median is kept
    /// [default: 5]
    #[arg(long, verbatim_doc_comment, value_name = "N", value_parser = samples)]
    samples: Option<usize>,
    /// Element pairs IN-OUT of the half-precision table,
    /// e.g. f32,f16,bf16,f32-f16,f16-f32 (softmax, auto,
    /// detected ISA; a single type is the same in and out;
    /// default: those five; none: no table); f32-f32 is
    /// always measured, as the yardstick. Its shapes: those
    /// of --shapes if given, else the standard 1x1024,
    /// 1x32000, 64x1024 and 512x32000
    #[arg(long, verbatim_doc_comment, value_name = "LIST", value_parser = pairs)]
    elements: Option<List<Pair>>,
    /// The training table's shape (f32; default 512x128256,
    /// with --quick 64x4096; none: no table): forward
    /// softmax, softmax and log-softmax backward, cross-
    /// entropy loss and gradient, loss alone
    #[arg(long, verbatim_doc_comment, value_name = "SHAPE", value_parser = training_shape)]
    training: Option<List<Shape>>,
    /// The attention table: default (AttentionSoftmax, f32,
    /// scale 0.125: prefill 32x512x512 causal, with an f16
    /// mask, with soft-cap and mask; decode 32x1x4096 with
    /// a padding mask; ALiBi and sinks 32x64x1024; each
    /// against softmax_rows of the same rows) or none
    #[arg(long, verbatim_doc_comment, value_name = "WHICH", value_parser = attention_variants)]
    attention: Option<List<Variant>>,
    /// Row lengths of the sampling table, e.g. 128256,32000
    /// (f32, one row, one thread; default 128256, with
    /// --quick 32000; none: no table): Sampler with top-k
    /// 50 + top-p 0.9, no truncation, min-p, top-p, against
    /// the forward softmax and a full-sort sampler
    #[arg(long, verbatim_doc_comment, value_name = "LIST", value_parser = row_lengths)]
    sampling: Option<List<usize>>,
    /// Peers of the side-by-side table, on the shapes of
    /// --shapes: onnxruntime (default; its library from
    /// ORT_DYLIB_PATH or the onnxruntime Python package;
    /// without it the table is left out) or none
    #[arg(long, verbatim_doc_comment, value_name = "LIST", value_parser = peers)]
    peers: Option<List<Peer>>,
    /// Where results.csv, results.json and throughput.svg
    /// go
    #[arg(
        long,
        verbatim_doc_comment,
        value_name = "DIR",
        default_value = "report-out"
    )]
    out: PathBuf,
    /// A few seconds: two small shapes, short samples
    #[arg(long, verbatim_doc_comment)]
    quick: bool,
}

/// A library the side-by-side table runs beside this crate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Peer {
    OnnxRuntime,
}

/// A comma-separated flag value, without repeats (empty for `none`).
#[derive(Clone, Debug)]
struct List<T>(Vec<T>);

/// What the report measures.
#[derive(Debug)]
pub struct Config {
    pub shapes: Vec<Shape>,
    pub isas: Vec<Isa>,
    pub algorithms: Vec<Algorithm>,
    pub threads: Vec<usize>,
    /// None: derived from the time budget and the number of configurations.
    pub seconds: Option<f64>,
    pub samples: usize,
    pub out: PathBuf,
    /// The half-precision table: its element pairs (f32→f32 among them, or
    /// none) and its shapes.
    pub pairs: Vec<Pair>,
    pub half_shapes: Vec<Shape>,
    /// The training table's shape, or none.
    pub training: Option<Shape>,
    /// The attention table's variants (none: no table).
    pub attention: Vec<Variant>,
    /// The sampling table's row lengths (none: no table).
    pub sampling: Vec<usize>,
    /// The side-by-side table's peers (none: no table).
    pub peers: Vec<Peer>,
}

impl Config {
    /// From the command line; exits with --help's text or a flag error (status 2).
    pub fn from_args() -> Config {
        Flags::parse().resolve()
    }

    #[cfg(test)]
    fn try_from(args: &str) -> Result<Config, clap::Error> {
        let args = std::iter::once("report").chain(args.split_whitespace());
        Flags::try_parse_from(args).map(Flags::resolve)
    }
}

impl Flags {
    /// Defaults for what was not given; --quick only changes what was not
    /// given explicitly.
    fn resolve(self) -> Config {
        let quick = self.quick;
        let shapes_given = self.shapes.is_some();
        let cores = crate::machine::cores();
        let shapes = match self.shapes {
            Some(List(shapes)) => shapes,
            None if quick => QUICK_SHAPES.to_vec(),
            None => STANDARD_SHAPES.to_vec(),
        };
        let mut threads = match self.threads {
            Some(List(threads)) => threads,
            None if cores > 1 => vec![1, cores],
            None => vec![1],
        };
        threads.dedup();
        let mut pairs = self.elements.map_or(ALL_PAIRS.to_vec(), |List(p)| p);
        if !pairs.is_empty() && !pairs.contains(&Pair::F32) {
            pairs.insert(0, Pair::F32);
        }
        let half_shapes = match (pairs.is_empty(), shapes_given) {
            (true, _) => Vec::new(),
            (false, true) => shapes.clone(),
            (false, false) => shapes
                .iter()
                .copied()
                .filter(|s| HALF_SHAPES.contains(s))
                .collect(),
        };
        Config {
            shapes,
            isas: self.isa.map_or_else(Isa::available, |List(i)| i),
            algorithms: self.algorithms.map_or(ALL_ALGORITHMS.to_vec(), |List(a)| a),
            threads,
            seconds: self.seconds.or(quick.then_some(0.01)),
            samples: self
                .samples
                .unwrap_or(if quick { 3 } else { DEFAULT_SAMPLES }),
            out: self.out,
            pairs,
            half_shapes,
            training: match self.training {
                Some(List(shape)) => shape.first().copied(),
                None if quick => Some(SMALL_TRAINING_SHAPE),
                None => Some(TRAINING_SHAPE),
            },
            attention: self.attention.map_or(Variant::ALL.to_vec(), |List(v)| v),
            sampling: match self.sampling {
                Some(List(cols)) => cols,
                None if quick => vec![QUICK_SAMPLING_COLS],
                None => vec![SAMPLING_COLS],
            },
            peers: self.peers.map_or(vec![Peer::OnnxRuntime], |List(p)| p),
        }
    }
}

// The value parsers: clap reports their errors with the flag's name.

fn peers(text: &str) -> Result<List<Peer>, String> {
    none_or_list(text, |name| {
        match name.trim().to_ascii_lowercase().as_str() {
            "onnxruntime" | "ort" => Ok(Peer::OnnxRuntime),
            other => Err(format!(
                "unknown peer {other:?}: expected onnxruntime or none"
            )),
        }
    })
}

fn shapes(text: &str) -> Result<List<Shape>, String> {
    list(text, Shape::parse)
}

fn isas(text: &str) -> Result<List<Isa>, String> {
    list(text, parse_isa)
}

fn algorithms(text: &str) -> Result<List<Algorithm>, String> {
    list(text, parse_algorithm)
}

fn thread_counts(text: &str) -> Result<List<usize>, String> {
    list(text, |t| at_least_one(t, "thread count"))
}

fn samples(text: &str) -> Result<usize, String> {
    at_least_one(text, "--samples")
}

fn pairs(text: &str) -> Result<List<Pair>, String> {
    none_or_list(text, Pair::parse)
}

fn training_shape(text: &str) -> Result<List<Shape>, String> {
    none_or_one(text, Shape::parse)
}

/// `default` (every variant) or `none`: the variants are a fixed set, like
/// the training passes, so that runs compare.
fn attention_variants(text: &str) -> Result<List<Variant>, String> {
    match text.trim() {
        "default" => Ok(List(Variant::ALL.to_vec())),
        "none" => Ok(List(Vec::new())),
        other => Err(format!(
            "unknown attention table {other:?}: expected default or none"
        )),
    }
}

fn row_lengths(text: &str) -> Result<List<usize>, String> {
    none_or_list(text, |c| at_least_one(c, "row length"))
}

/// "a,b,c": each item parsed, repeats dropped; an empty list is an error.
fn list<T: PartialEq>(
    text: &str,
    parse: impl Fn(&str) -> Result<T, String>,
) -> Result<List<T>, String> {
    let mut items = Vec::new();
    for item in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let item = parse(item)?;
        if !items.contains(&item) {
            items.push(item);
        }
    }
    match items.is_empty() {
        true => Err(format!("empty list {text:?}")),
        false => Ok(List(items)),
    }
}

/// `none` (no table), or a list.
fn none_or_list<T: PartialEq>(
    text: &str,
    parse: impl Fn(&str) -> Result<T, String>,
) -> Result<List<T>, String> {
    match text.trim() {
        "none" => Ok(List(Vec::new())),
        text => list(text, parse),
    }
}

/// `none` (no table), or one item.
fn none_or_one<T>(
    text: &str,
    parse: impl Fn(&str) -> Result<T, String>,
) -> Result<List<T>, String> {
    match text.trim() {
        "none" => Ok(List(Vec::new())),
        text => parse(text).map(|item| List(vec![item])),
    }
}

fn at_least_one(text: &str, what: &str) -> Result<usize, String> {
    match text.trim().parse::<usize>() {
        Ok(n) if n >= 1 => Ok(n),
        _ => Err(format!("bad {what} {text:?}: expected an integer ≥ 1")),
    }
}

fn positive_seconds(text: &str) -> Result<f64, String> {
    match text.trim().parse::<f64>() {
        Ok(s) if s > 0.0 && s.is_finite() => Ok(s),
        _ => Err(format!("bad --seconds {text:?}: expected a number > 0")),
    }
}

fn parse_isa(name: &str) -> Result<Isa, String> {
    let available = || crate::machine::isa_names(&Isa::available());
    let isa = Isa::ALL
        .into_iter()
        .find(|i| i.name() == name.to_ascii_lowercase())
        .ok_or_else(|| format!("unknown ISA {name:?}; available: {}", available()))?;
    match isa.is_available() {
        true => Ok(isa),
        false => Err(format!(
            "{isa} is not available on this CPU; available: {}",
            available()
        )),
    }
}

fn parse_algorithm(name: &str) -> Result<Algorithm, String> {
    ALL_ALGORITHMS
        .into_iter()
        .find(|a| a.name() == name.to_ascii_lowercase())
        .ok_or_else(|| format!("unknown algorithm {name:?}; expected three-pass, online or auto"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::error::ErrorKind;

    #[test]
    fn flags_parse() {
        let c = Config::try_from(
            "--shapes 2x8,1×4 --algorithms=online,auto --threads 1,3 --seconds 0.5 --out x",
        )
        .unwrap();
        assert_eq!(c.shapes, [Shape::new(2, 8), Shape::new(1, 4)]);
        assert_eq!(c.algorithms, [Algorithm::Online, Algorithm::Auto]);
        assert_eq!(c.threads, [1, 3]);
        assert_eq!(c.seconds, Some(0.5));
        assert_eq!(c.out, PathBuf::from("x"));
        let kind = |args| Config::try_from(args).unwrap_err().kind();
        assert_eq!(kind("--help"), ErrorKind::DisplayHelp);
        assert_eq!(kind("--shapes 0x4"), ErrorKind::ValueValidation);
        assert_eq!(kind("--seconds"), ErrorKind::InvalidValue);
        assert_eq!(kind("--bogus"), ErrorKind::UnknownArgument);
        assert!(Config::try_from("--isas scalar --algorithm auto").is_ok());
        let c = Config::try_from("--samples 2 --samples 4 --quick --quick").unwrap();
        assert_eq!(c.samples, 4);
    }

    #[test]
    fn quick_keeps_explicit_flags() {
        let c = Config::try_from("--quick --seconds 1").unwrap();
        assert_eq!(c.seconds, Some(1.0));
        assert_eq!(c.shapes.len(), QUICK_SHAPES.len());
    }

    #[test]
    fn elements_flag() {
        let c = Config::try_from("--elements bf16,f16-f32").unwrap();
        let bf16 = Pair::same(Dtype::Bf16);
        let f16_f32 = Pair {
            input: Dtype::F16,
            output: Dtype::F32,
        };
        // f32→f32, the yardstick, joins the list.
        assert_eq!(c.pairs, [Pair::F32, bf16, f16_f32]);
        assert_eq!(c.half_shapes.len(), HALF_SHAPES.len());
        let c = Config::try_from("--shapes 2x8 --elements none").unwrap();
        assert!(c.pairs.is_empty() && c.half_shapes.is_empty());
        let c = Config::try_from("--shapes 2x8").unwrap();
        assert_eq!(c.half_shapes, [Shape::new(2, 8)]);
        assert!(Config::try_from("--elements f64").is_err());
    }

    #[test]
    fn training_flag() {
        let shape = |args| Config::try_from(args).unwrap().training;
        assert_eq!(shape(""), Some(TRAINING_SHAPE));
        assert_eq!(shape("--quick"), Some(SMALL_TRAINING_SHAPE));
        assert_eq!(shape("--quick --training none"), None);
        assert_eq!(shape("--training 8x100"), Some(Shape::new(8, 100)));
        assert!(Config::try_from("--training 0x4").is_err());
    }

    #[test]
    fn attention_flag() {
        let variants = |args| Config::try_from(args).unwrap().attention;
        assert_eq!(variants(""), Variant::ALL);
        assert_eq!(variants("--quick"), Variant::ALL);
        assert_eq!(variants("--quick --attention none"), []);
        assert_eq!(
            variants("--attention none --attention default"),
            Variant::ALL
        );
        assert!(Config::try_from("--attention causal").is_err());
    }

    #[test]
    fn sampling_flag() {
        let cols = |args| Config::try_from(args).unwrap().sampling;
        assert_eq!(cols(""), vec![SAMPLING_COLS]);
        assert_eq!(cols("--quick"), vec![QUICK_SAMPLING_COLS]);
        assert_eq!(cols("--quick --sampling none"), Vec::<usize>::new());
        assert_eq!(cols("--sampling 32000,128256"), vec![32000, 128256]);
        assert!(Config::try_from("--sampling 0").is_err());
        assert!(Config::try_from("--sampling x").is_err());
    }
}
