//! The report's flags, parsed by hand, and the configuration they resolve to
//! once `--quick` and the defaults are applied.

use softmax::{Algorithm, Isa};
use softmax_report::sampling::{QUICK_SAMPLING_COLS, SAMPLING_COLS};
use softmax_report::workload::{
    Dtype, Pair, Shape, HALF_SHAPES, QUICK_SHAPES, SMALL_TRAINING_SHAPE, STANDARD_SHAPES,
    TRAINING_SHAPE,
};
use std::path::PathBuf;

const DEFAULT_SAMPLES: usize = 5;
pub const ALL_ALGORITHMS: [Algorithm; 4] = [
    Algorithm::ThreePass,
    Algorithm::TwoPass,
    Algorithm::Online,
    Algorithm::Auto,
];
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
    /// The sampling table's row lengths (none: no table).
    pub sampling: Vec<usize>,
}

impl Config {
    /// From the command line; exits with --help's text or a flag error (status 2).
    pub fn from_args() -> Config {
        match parse_args(std::env::args().skip(1)) {
            Ok(Some(config)) => config,
            Ok(None) => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            Err(message) => {
                eprintln!("report: {message}\n\n{USAGE}");
                std::process::exit(2);
            }
        }
    }
}

/// `Ok(None)` means --help.
fn parse_args(args: impl IntoIterator<Item = String>) -> Result<Option<Config>, String> {
    let cores = crate::machine::cores();
    let mut config = Config {
        shapes: STANDARD_SHAPES.to_vec(),
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
            config.shapes = QUICK_SHAPES.to_vec();
        }
        if !seconds_given {
            config.seconds = Some(0.01);
        }
        if !samples_given {
            config.samples = 3;
        }
        if !training_given {
            config.training = Some(SMALL_TRAINING_SHAPE);
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
            .filter(|s| HALF_SHAPES.contains(s))
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
        .ok_or_else(|| {
            format!("unknown algorithm {name:?}; expected three-pass, two-pass, online or auto")
        })
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
        assert_eq!(c.shapes, [Shape::new(2, 8), Shape::new(1, 4)]);
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
        assert_eq!(shape("--quick"), Some(SMALL_TRAINING_SHAPE));
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
}
